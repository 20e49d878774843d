"""One MLflow run per training run: a sweep trial's child run, or a standalone run.

:func:`track_trial` (inside the Tune trial process) and :func:`track_run` (``python -m
tti_ray.train --tracking-uri``) open the run, log the flattened resolved config as params
(dotted keys, credentials withheld) and the redacted ``config.yaml``, hand out a reporter
wrapper that logs every report's numeric metrics with their ``step``, and at the end set
``tti_ray.status`` and log ``curves.png`` (metric curves) and ``checkpoint.json``.

The final checkpoint is logged as a **pointer**, not a copy: ``checkpoint.json`` holds the
local path, host and step, and the sweep driver adds the Tune checkpoint URI as tag
``tti_ray.checkpoint`` (checkpoints are large and Tune already persists them to its storage).

Only rank 0 logs in data-parallel runs: :meth:`RunTracker.wrap` with ``rank != 0`` returns
the inner reporter unchanged.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

import tti_ray
from tti_ray.cli import UsageError
from tti_ray.provenance import git_commit
from tti_ray.tracking.client import LOCAL_PREFIX, ResilientClient, warn
from tti_ray.tracking.config import (
    TrackingConfig,
    check_uri,
    load_state,
    preflight,
    resolve_tracking,
    save_state,
)
from tti_ray.tracking.redact import config_params, redact_mapping, redact_tree
from tti_ray.trials import TERMINAL, TrialStatus  # noqa: F401 - TERMINAL re-exported

ROLE, STATUS = "tti_ray.role", "tti_ray.status"
RUN_STATUS = {TrialStatus.FINISHED: "FINISHED", TrialStatus.DIVERGED: "FAILED",
              TrialStatus.EARLY_STOPPED: "KILLED", TrialStatus.FAILED: "FAILED",
              TrialStatus.RUNNING: "RUNNING"}
DEFAULT_OBJECTIVES = ("val/perplexity", "val/polysemanticity/mean")
TRIAL_FLUSH_S = 10.0
RUN_FLUSH_S = 30.0


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The loggable metrics of a report: numbers, not ``step``/flags/strings."""
    return {
        k: float(v) for k, v in metrics.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def provenance_tags() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    tags = {"tti_ray.version": tti_ray.__version__, "mlflow.source.type": "LOCAL",
            "mlflow.user": user}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


class RunTracker:
    """Logs one MLflow run from the training process (rank 0)."""

    def __init__(self, client: ResilientClient, run_id: str, out_dir: Path,
                 objectives: list[str] | tuple[str, ...] = DEFAULT_OBJECTIVES) -> None:
        self.client, self.run_id, self.out_dir = client, run_id, Path(out_dir)
        self.objectives = list(objectives)
        self.stage = self.out_dir / "tracking"

    # -- during training -------------------------------------------------------------------------
    def wrap(self, inner: Any, rank: int = 0) -> Any:
        return inner if rank != 0 else TrackingReporter(inner, self)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        ts = int(time.time() * 1000)
        rows = [[k, v, ts, int(step)] for k, v in numeric_metrics(metrics).items()]
        self.client.log_batch(self.run_id, metrics=rows)

    def worker_info(self, info: dict[str, Any] | None) -> dict[str, Any] | None:
        """What a data-parallel rank 0 worker needs to log into this run."""
        return None if info is None else {**info, "run_id": self.run_id}

    # -- start / end -----------------------------------------------------------------------------
    def log_start(self, cfg_dict: dict[str, Any], tags: dict[str, str]) -> None:
        self.stage.mkdir(parents=True, exist_ok=True)
        cfg_file = self.stage / "config.yaml"
        cfg_file.write_text(yaml.safe_dump(redact_tree(cfg_dict), sort_keys=False))
        self.client.log_batch(self.run_id, params=config_params(cfg_dict),
                              tags=redact_mapping(tags))
        self.client.log_artifact(self.run_id, cfg_file)

    def finish(self, status: str, flush_s: float) -> None:
        """Status tag, curves, checkpoint pointer, run end; then try to drain the spool."""
        tags = {STATUS: status}
        final = _read_json(self.out_dir / "metrics.json")
        for k in self.objectives:
            if isinstance(final.get(k), (int, float)):
                tags[f"tti_ray.final.{k}"] = repr(float(final[k]))
        self.client.log_batch(self.run_id, tags=tags)
        self.stage.mkdir(parents=True, exist_ok=True)
        try:
            png = plot_curves(self.out_dir / "metrics.jsonl", self.stage / "curves.png",
                              self.objectives)
        except Exception as e:  # noqa: BLE001 - a plot must never fail a run
            warn(f"curves.png not drawn: {e}")
            png = None
        if png is not None:
            self.client.log_artifact(self.run_id, png)
        ckpt = self.out_dir / "checkpoint"
        if (ckpt / "train_state.json").exists():
            pointer = {
                "path": str(ckpt.resolve()),
                "host": socket.gethostname(),
                "step": _read_json(ckpt / "train_state.json").get("step"),
            }
            (self.stage / "checkpoint.json").write_text(json.dumps(pointer, indent=1))
            self.client.log_artifact(self.run_id, self.stage / "checkpoint.json")
        self.client.set_terminated(self.run_id, RUN_STATUS[status])
        if not self.client.flush(timeout=flush_s):
            warn(f"{self.client.spool} still holds tracking calls for run {self.run_id}; they "
                 f"are replayed at the end of the sweep or by `python -m tti_ray.tracking replay "
                 f"{self.out_dir}`")


class TrackingReporter:
    """Reporter wrapper: log to MLflow first (a trial stopped by the scheduler during the inner
    report keeps its last metrics), then forward to the inner reporter (Tune / Train / none)."""

    def __init__(self, inner: Any, run: RunTracker) -> None:
        self.inner, self.run = inner, run

    def report(self, metrics: dict[str, Any], *, step: int, checkpoint: Path | None = None) -> None:
        try:
            self.run.log_metrics(metrics, step)
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            warn(f"could not log metrics at step {step}: {e}")
        if self.inner is not None:
            self.inner.report(metrics, step=step, checkpoint=checkpoint)


class NullRun:
    """No tracking: ``wrap`` is the identity."""

    run_id = None

    def wrap(self, inner: Any, rank: int = 0) -> Any:
        return inner

    def worker_info(self, info: dict[str, Any] | None) -> None:
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _final_status(out_dir: Path, error: BaseException | None) -> str:
    if error is not None:
        return TrialStatus.FAILED.value
    st = _read_json(out_dir / "metrics.json").get("status")
    return st if st in (TrialStatus.FINISHED, TrialStatus.DIVERGED) else TrialStatus.FAILED.value


# -- sweep trials ---------------------------------------------------------------------------------
def _find_child(client: ResilientClient, info: dict[str, Any], trial_id: str) -> str | None:
    """The child run of this trial from an earlier launch (restart, resumed sweep), if any."""
    try:
        runs = client.client.search_runs(
            [info["experiment_id"]],
            filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}' and "
                          f"tags.`tti_ray.trial_id` = '{trial_id}'",
            max_results=1,
        )
    except Exception:  # noqa: BLE001 - store away: a new run is created (and spooled)
        return None
    return runs[0].info.run_id if runs else None


@contextmanager
def track_trial(info: dict[str, Any] | None, cfg: Any, *, trial_id: str, config_id: str,
                out_dir: Path) -> Iterator[RunTracker | NullRun]:
    """The child MLflow run of one sweep trial (``info``: ``SweepTracker.trial_meta()``)."""
    if not info:
        yield NullRun()
        return
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    client = ResilientClient(info["tracking_uri"], out_dir)
    state = load_state(out_dir) or {}
    run_id = state.get("run_id") if state.get("parent_run_id") == info["parent_run_id"] else None
    if run_id is None or run_id.startswith(LOCAL_PREFIX):
        run_id = _find_child(client, info, trial_id) or run_id
    tags = {
        ROLE: "trial", "mlflow.parentRunId": info["parent_run_id"],
        "tti_ray.trial_id": trial_id, "tti_ray.config_id": config_id,
        STATUS: TrialStatus.RUNNING.value,
        "tti_ray.searched": ",".join(info.get("searched", [])),
        "tti_ray.objectives": ",".join(info.get("objectives", [])),
        "tti_ray.sweep": info.get("experiment_name", ""),
        "tti_ray.run_dir": str(out_dir.resolve()),
        "mlflow.source.name": "tti_ray.sweep", **provenance_tags(),
    }
    if run_id is None:
        run_id = client.create_run(info["experiment_id"], f"trial_{trial_id}",
                                   {ROLE: "trial", "mlflow.parentRunId": info["parent_run_id"],
                                    "tti_ray.trial_id": trial_id})
    else:
        client.update_run(run_id, "RUNNING")
    save_state(out_dir, {"tracking_uri": info["tracking_uri"], "run_id": run_id,
                         "parent_run_id": info["parent_run_id"]})
    run = RunTracker(client, run_id, out_dir, info.get("objectives") or DEFAULT_OBJECTIVES)
    run.log_start(cfg.to_dict(), tags)
    yield from _until_finished(run, out_dir, TRIAL_FLUSH_S)


def attach_worker(info: dict[str, Any] | None, out_dir: Path, rank: int) -> RunTracker | NullRun:
    """In a data-parallel worker: rank 0 logs metrics into the trial's run, others nothing."""
    if not info or rank != 0 or not info.get("run_id"):
        return NullRun()
    client = ResilientClient(info["tracking_uri"], out_dir)
    return RunTracker(client, info["run_id"], out_dir, info.get("objectives") or DEFAULT_OBJECTIVES)


# -- standalone runs ------------------------------------------------------------------------------
@contextmanager
def track_run(tracking_uri: str | None, artifact_store: str | None, cfg: Any, out_dir: Path,
              *, resume: bool = False) -> Iterator[RunTracker | NullRun]:
    """``python -m tti_ray.train --tracking-uri URI``: one run (role ``run``) in the MLflow
    experiment named after the config; ``--resume`` continues the same MLflow run."""
    if not tracking_uri:
        if artifact_store:

            raise UsageError("--artifact-store needs --tracking-uri")
        yield NullRun()
        return
    out_dir = Path(out_dir)
    check_uri(tracking_uri, f"--tracking-uri {tracking_uri}")
    tc = resolve_tracking(exp_dir=out_dir, experiment_name=cfg.name, tracking_uri=tracking_uri,
                          artifact_store=artifact_store)
    assert isinstance(tc, TrackingConfig)
    experiment_id = preflight(tc)
    out_dir.mkdir(parents=True, exist_ok=True)
    client = ResilientClient(tc.tracking_uri, out_dir)
    state = load_state(out_dir) or {}
    run_id = None
    if resume and state.get("tracking_uri") == tc.tracking_uri:
        run_id = state.get("run_id")
    if run_id:
        client.update_run(run_id, "RUNNING")
    else:
        run_id = client.create_run(experiment_id, cfg.name, {ROLE: "run"})
    save_state(out_dir, {"tracking_uri": tc.tracking_uri, "run_id": run_id,
                         "experiment_id": experiment_id})
    run = RunTracker(client, run_id, out_dir)
    run.log_start(cfg.to_dict(), {ROLE: "run", STATUS: TrialStatus.RUNNING.value,
                                  "tti_ray.run_dir": str(out_dir.resolve()),
                                  "mlflow.source.name": "tti_ray.train", **provenance_tags()})
    yield from _until_finished(run, out_dir, RUN_FLUSH_S)


def _until_finished(run: RunTracker, out_dir: Path, flush_s: float) -> Iterator[RunTracker]:
    """Yield ``run`` to the ``with`` body, then finish it with the run's final status (from
    ``out_dir``, or ``failed`` when the body raised); the body's exception propagates."""
    try:
        yield run
    except Exception as e:
        run.finish(_final_status(out_dir, e), flush_s)
        raise
    run.finish(_final_status(out_dir, None), flush_s)


# -- per-run plot ---------------------------------------------------------------------------------
def plot_curves(history: Path, out_png: Path, objectives: list[str]) -> Path | None:
    """``curves.png``: the objectives and train/loss against step, from ``metrics.jsonl``."""
    try:
        rows = [json.loads(ln) for ln in Path(history).read_text().splitlines() if ln.strip()]
    except (OSError, json.JSONDecodeError):
        return None
    names = [m for m in [*objectives, "train/loss"] if any(m in r for r in rows)]
    if not rows or not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        pts = [(r["step"], r[name]) for r in rows
               if isinstance(r.get(name), (int, float)) and "step" in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(out_png, dpi=80)
    finally:
        plt.close(fig)
    return out_png
