"""The sweep's parent MLflow run, kept by the Tune driver.

:meth:`SweepTracker.start` runs the preflight, creates (or, for ``--resume``, reopens) the
parent run (tag ``tti_ray.role=sweep``) and logs the search space. Each time the trial table
changes its outputs, :meth:`update` hands a snapshot to a background thread that uploads
``trials.csv``, ``pareto.csv``/``pareto.json``, ``hypervolume.json`` and ``front.png`` to the
parent, logs ``sweep/hypervolume`` against the number of ended trials, and makes every ended
trial's child run agree with the table (``tti_ray.status``: early-stopped trials are killed
by the scheduler before they can say so themselves; ``tti_ray.checkpoint``: the Tune checkpoint
URI; ``tti_ray.feasible``: whether the trial meets the search space's constraints). Uploads
never block the Tune loop. :meth:`finish` does a last sync, replays the spools
trial processes left behind, and ends the parent run.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from tti_ray.tracking.client import ResilientClient, _execute, _short, replay_dir, warn
from tti_ray.tracking.config import (
    TrackingConfig,
    TrackingError,
    load_state,
    preflight,
    save_state,
)
from tti_ray.tracking.redact import flatten, param_value, redact_mapping, redact_text, redact_tree
from tti_ray.tracking.runs import ROLE, RUN_STATUS, STATUS, TERMINAL, provenance_tags
from tti_ray.trials import TrialStatus

FEASIBLE = "tti_ray.feasible"  # "true" / "false": every constraint of the search space met
OUTPUTS = ("trials.csv", "pareto.csv", "pareto.json", "hypervolume.json", "front.png")
FINISH_REPLAY_S = 60.0


class SweepTracker:
    def __init__(self, tc: TrackingConfig, exp_dir: Path, experiment_id: str, parent_run_id: str,
                 searched: list[str], objectives: list[str], client: ResilientClient) -> None:
        self.tc, self.exp_dir = tc, Path(exp_dir)
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.searched, self.objectives = searched, objectives
        self.client = client
        self.stage = self.exp_dir / "tracking"
        self._synced: dict[str, tuple[str, str, str]] = {}  # trial_id -> (status, ckpt, feasible)
        self._n_logged = -1
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="tti-mlflow", daemon=True)
        self._thread.start()

    # -- start -----------------------------------------------------------------------------------
    @classmethod
    def start(cls, tc: TrackingConfig, exp_dir: Path, space: Any, resume: bool) -> SweepTracker:
        """Preflight + parent run. Raises :class:`TrackingError` (exit 2) before Ray starts."""
        experiment_id = preflight(tc)
        client = ResilientClient(tc.tracking_uri, exp_dir)
        state = load_state(exp_dir) if resume else None
        parent = None
        if state and state.get("tracking", {}).get("tracking_uri") == tc.tracking_uri and (
                state.get("experiment_id") == experiment_id):
            parent = state.get("parent_run_id")
        searched, objectives = list(space.parameters), list(space.metrics)
        tags = {ROLE: "sweep", STATUS: TrialStatus.RUNNING.value, "tti_ray.searched": ",".join(searched),
                "tti_ray.objectives": ",".join(f"{o.metric}:{o.mode}" for o in space.objectives),
                "tti_ray.exp_dir": str(exp_dir), "mlflow.source.name": "tti_ray.sweep",
                **provenance_tags()}
        try:  # synchronously: trials must get a real parent id
            if parent:
                _execute(client.client, "update_run", {"run_id": parent, "status": "RUNNING"})
            else:
                parent = _execute(client.client, "create_run",
                                  {"experiment_id": experiment_id, "run_name": space.name,
                                   "tags": {ROLE: "sweep"}})
        except Exception as e:  # noqa: BLE001
            raise TrackingError(f"{tc.uri_label()}: could not open the sweep's parent run "
                                f"({_short(e)})") from None
        save_state(exp_dir, {"tracking": tc.to_dict(), "experiment_id": experiment_id,
                             "parent_run_id": parent})
        self = cls(tc, exp_dir, experiment_id, parent, searched, objectives, client)
        self.stage.mkdir(parents=True, exist_ok=True)
        spec = space.model_dump(mode="json")
        client.log_batch(parent, params=sweep_params(spec), tags=redact_mapping(tags))
        staged = self.stage / "search_space.yaml"
        staged.write_text(yaml.safe_dump(redact_tree(spec), sort_keys=False))
        client.log_artifact(parent, staged)
        return self

    def trial_meta(self) -> dict[str, Any]:
        """What each trial process needs to open its child run (no credentials)."""
        return {"tracking_uri": self.tc.tracking_uri, "experiment_id": self.experiment_id,
                "experiment_name": self.tc.experiment_name, "parent_run_id": self.parent_run_id,
                "searched": self.searched, "objectives": self.objectives}

    def describe(self) -> dict[str, Any]:
        return {"tracking_uri": self.tc.tracking_uri, "experiment": self.tc.experiment_name,
                "parent_run_id": self.parent_run_id}

    # -- updates ---------------------------------------------------------------------------------
    def update(self, df: Any) -> None:
        """Called by the trial table when outputs change (Tune driver thread): never blocks."""
        self._queue.put(df.copy())

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            while not self._queue.empty():  # coalesce: only the newest table matters
                nxt = self._queue.get()
                if nxt is None:
                    self._sync(item)
                    return
                item = nxt
            self._sync(item)

    def _sync(self, df: Any) -> None:
        try:
            self._sync_children(df)
            self._log_outputs(df)
        except Exception as e:  # noqa: BLE001 - tracking never stops a sweep
            warn(f"sweep tracking update failed: {_short(e)}")

    def _log_outputs(self, df: Any) -> None:
        for name in OUTPUTS:
            src = self.exp_dir / name
            if not src.exists():
                continue
            if src.suffix == ".png":
                self.client.log_artifact(self.parent_run_id, src)
                continue
            staged = self.stage / name
            staged.write_text(redact_text(src.read_text()))
            self.client.log_artifact(self.parent_run_id, staged)
        ended = int(df["status"].isin(TERMINAL).sum()) if len(df) else 0
        if ended == self._n_logged:
            return
        self._n_logged = ended
        metrics = [["sweep/trials_ended", ended, _now_ms(), ended],
                   ["sweep/trials_finished", int((df["status"] == TrialStatus.FINISHED).sum()), _now_ms(),
                    ended]]
        try:
            hv = json.loads((self.exp_dir / "hypervolume.json").read_text()).get("hypervolume")
        except (OSError, json.JSONDecodeError):
            hv = None
        if isinstance(hv, (int, float)):
            metrics.append(["sweep/hypervolume", float(hv), _now_ms(), ended])
        self.client.log_batch(self.parent_run_id, metrics=metrics)

    def _sync_children(self, df: Any) -> None:
        todo = {}
        for row in df.to_dict("records"):
            st, ck = row.get("status"), str(row.get("checkpoint") or "")
            feas = row.get("feasible")
            feas = "" if feas is None or feas != feas else str(bool(feas)).lower()
            if st in TERMINAL and self._synced.get(row["trial_id"]) != (st, ck, feas):
                todo[row["trial_id"]] = (st, ck, feas)
        if not todo or self.client.offline:
            return
        try:
            children = self.client.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
                max_results=5000,
            )
        except Exception:  # noqa: BLE001 - try again at the next update
            return
        by_trial = {r.data.tags.get("tti_ray.trial_id"): r for r in children}
        for trial_id, (st, ck, feas) in todo.items():
            run = by_trial.get(trial_id)
            if run is None:
                continue  # its creation may still sit in the trial's spool
            tags = {}
            if run.data.tags.get(STATUS) != st:
                tags[STATUS] = st
            if ck and run.data.tags.get("tti_ray.checkpoint") != ck:
                tags["tti_ray.checkpoint"] = ck
            if feas and run.data.tags.get(FEASIBLE) != feas:
                tags[FEASIBLE] = feas
            self.client.log_batch(run.info.run_id, tags=redact_mapping(tags))
            if run.info.status != RUN_STATUS[st]:
                self.client.set_terminated(run.info.run_id, RUN_STATUS[st])
            self._synced[trial_id] = (st, ck, feas)

    # -- end -------------------------------------------------------------------------------------
    def finish(self, df: Any, status: str = "FINISHED") -> None:
        """Final outputs, trial spools replayed, parent ended (bounded wait if the store is away)."""
        self._queue.put(None)
        self._thread.join(timeout=120)
        self.client.flush(timeout=FINISH_REPLAY_S if self.client.offline else 0)
        try:  # what trial processes (or an earlier driver) left spooled
            _, pending = replay_dir(self.exp_dir, client=self.client.client)
        except Exception as e:  # noqa: BLE001
            warn(f"replay of spooled tracking calls failed: {_short(e)}")
            pending = [self.exp_dir]
        self._sync(df)
        if status != "FINISHED":
            self._kill_running_children()
        tag = "finished" if status == "FINISHED" else "interrupted"
        self.client.log_batch(self.parent_run_id, tags={STATUS: tag})
        self.client.set_terminated(self.parent_run_id, status)
        _ACTIVE.pop(str(self.exp_dir), None)
        done = self.client.flush(timeout=FINISH_REPLAY_S if self.client.offline else 0)
        if not done or pending:
            warn(f"tracking store {self.tc.tracking_uri} did not take every call; the local "
                 f"files in {self.exp_dir} are complete, and `python -m tti_ray.tracking replay "
                 f"{self.exp_dir}` uploads the rest when it is back")

    def log_trial_metrics(self, trial_id: str, metrics: dict[str, float]) -> None:
        """Add metrics computed after a trial ended (its SAE evaluation) to the trial's child
        run; a run that cannot be found is a warning (the trial table keeps the numbers)."""
        try:
            runs = self.client.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and "
                              f"tags.`tti_ray.trial_id` = '{trial_id}'",
                max_results=1,
            )
        except Exception as e:  # noqa: BLE001 - the trial table keeps the numbers regardless
            print(f"[tti_ray.sweep] MLflow: could not find the run of {trial_id} ({e})",
                  file=sys.stderr)
            return
        if runs:
            self.client.log_batch(runs[0].info.run_id,
                                  metrics=[[k, v, _now_ms(), 0] for k, v in metrics.items()])

    def _kill_running_children(self) -> None:
        """An interrupted sweep: trials that were running end KILLED, not RUNNING forever."""
        try:
            children = self.client.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and "
                              "attributes.status = 'RUNNING'",
                max_results=5000,
            )
        except Exception as e:  # noqa: BLE001 - the local files are complete regardless
            warn(f"could not mark the running trials' MLflow runs KILLED: {_short(e)}")
            return
        for run in children:
            self.client.log_batch(run.info.run_id, tags={STATUS: "interrupted"})
            self.client.set_terminated(run.info.run_id, "KILLED")

    def close(self, status: str = "KILLED") -> None:
        """The driver is going down (Ctrl-C, crash): end the parent without waiting."""
        self._queue.put(None)
        self._thread.join(timeout=10)
        _ACTIVE.pop(str(self.exp_dir), None)
        self.client.log_batch(self.parent_run_id, tags={STATUS: "interrupted"})
        self.client.set_terminated(self.parent_run_id, status)


def sweep_params(spec: dict[str, Any]) -> dict[str, str]:
    """Parent params: the search space without its base run config (children carry that)."""
    out: dict[str, Any] = {}
    for k, v in spec.items():
        if k == "base":
            continue
        if k == "parameters":
            out.update({f"parameters.{p}": param_value(d) for p, d in v.items()})
        elif k == "objectives":
            out["objectives"] = ",".join(f"{o['metric']}:{o['mode']}" for o in v)
        elif isinstance(v, dict):
            out.update({f"{k}.{kk}": param_value(vv) for kk, vv in flatten(v).items()})
        else:
            out[k] = param_value(v)
    return redact_mapping(out)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


_ACTIVE: dict[str, SweepTracker] = {}  # exp dir -> live tracker of this driver process


def start_sweep_tracking(tc: TrackingConfig | None, exp_dir: Path, space: Any,
                         resume: bool) -> SweepTracker | None:
    """Preflight + parent run (None without tracking); registered for :func:`update_sweep_tracking`."""
    if tc is None:
        return None
    tracker = SweepTracker.start(tc, exp_dir, space, resume)
    _ACTIVE[str(Path(exp_dir))] = tracker
    return tracker


def update_sweep_tracking(exp_dir: Path, df: Any) -> None:
    """The trial table's hook. Looked up by directory, not captured: Tune pickles its callbacks
    (and a resumed sweep unpickles them), and a live tracker holds a thread."""
    tracker = _ACTIVE.get(str(Path(exp_dir)))
    if tracker is not None:
        tracker.update(df)
