"""Run (or resume) a sweep: Ray Tune + Optuna over ``train_run`` trials.

Experiment directory (``--out``, default ``experiments/<name>``)::

    search_space.yaml   the resolved search space (after --set / --preset)
    optuna.db           the Optuna study (unless study_storage names another SQLAlchemy URL)
    tune/               Ray Tune's experiment state, trial dirs and checkpoints
                        (or under --storage, e.g. s3://bucket/prefix)
    runs/<trial_id>/    each trial's train_run directory (local storage only)
    trials.csv, trials_state.json, pareto.csv, pareto.json, hypervolume.json, front.png
    (+ summary.csv with a multi-seed baseline, effects.csv for a factorial grid)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tti_ray.cli import UsageError
from tti_ray.io import atomic_write_text
from tti_ray.sweep.space import SearchSpace

TUNE_NAME = "tune"


@dataclass
class SweepPlan:
    space: SearchSpace
    exp_dir: Path
    storage: str  # Tune storage_path (local dir or URI)
    study_url: str
    address: str | None
    resume: bool
    runs_dir: Path | None
    threads: int | None
    wait_sae: bool = True
    tracking: Any = None  # tti_ray.tracking.TrackingConfig, or None for --no-tracking

    def describe(self) -> dict[str, Any]:
        s = self.space
        cfg = s.run_config({k: p.extremes()[0] for k, p in s.parameters.items()})
        return {
            "name": s.name,
            "experiment_dir": str(self.exp_dir),
            "tune_storage": f"{self.storage}/{TUNE_NAME}",
            "optuna_study": {"name": s.name, "storage": self.study_url},
            "ray_address": self.address or "local (started by this command)",
            "resume": self.resume,
            "searcher": s.searcher.model_dump(),
            "scheduler": s.scheduler.model_dump(),
            "objectives": [o.model_dump() for o in s.objectives],
            "constraints": [c.describe() for c in s.constraints],
            "parameters": {k: p.model_dump(exclude_none=True) for k, p in s.parameters.items()},
            "configurations": s.n_configs(),
            "seeds_per_config": s.budget.seeds_per_config,
            "trials": s.n_trials(),
            "concurrency": s.concurrency,
            "resources_per_trial": s.resources.model_dump(),
            "base_run_config": cfg.to_dict(),
            "tracking": self.tracking.to_dict() if self.tracking else None,
        }


def is_uri(path: str) -> bool:
    return "://" in path


def check_writable(exp_dir: Path) -> None:
    """Fail before any trial starts if the experiment directory cannot be written (probed in
    the nearest existing ancestor, so a failed check creates nothing)."""
    probe_dir = exp_dir
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UsageError(f"--out: {probe_dir} is not a directory")
    try:
        probe = probe_dir / f".tti_ray_write_probe_{uuid.uuid4().hex}"
        with probe.open("wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise UsageError(
            f"--out: experiment directory {exp_dir} is not writable ({e.strerror})"
        ) from None
    free = shutil.disk_usage(probe_dir).free
    if free < 50 * 2**20:
        raise UsageError(f"--out: only {free // 2**20} MiB free at {exp_dir} (need ≥ 50 MiB)")


def check_storage(storage: str) -> None:
    """An ``s3://`` Tune storage must exist and take writes with the credentials at hand."""
    if storage.startswith("s3://"):
        from tti_ray.tracking.config import check_s3

        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        if endpoint and not os.environ.get("AWS_ENDPOINT_URL"):
            os.environ["AWS_ENDPOINT_URL"] = endpoint  # pyarrow (Tune) reads this one
        check_s3(storage, f"--storage {storage}")
    elif is_uri(storage) and not storage.startswith(("gs://", "file://", "hdfs://")):
        raise UsageError(f"--storage {storage}: unsupported scheme (local path, s3://, gs://)")


def check_data(space: SearchSpace) -> None:
    """Tokenize (or find cached) the base run's data on the driver: a dataset or tokenizer
    that cannot be loaded is an error before any trial starts, and local trials start warm."""
    from tti_ray.data import DataError, load_tokens

    cfg = space.run_config({})
    if cfg.workload != "lm":
        return
    try:
        load_tokens(cfg.data)
    except DataError as e:
        raise DataError(f"base.{e}") from None


def preflight(plan: SweepPlan) -> None:
    if not plan.resume:
        from tti_ray.sweep.searcher import check_new_study

        check_new_study(plan.study_url, plan.space.name)
    check_data(plan.space)
    if is_uri(plan.storage):
        check_storage(plan.storage)
    check_writable(plan.exp_dir)


def plan_sweep(
    space: SearchSpace,
    out: Path | None,
    *,
    storage: str | None = None,
    address: str | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    artifact_store: str | None = None,
    track: bool = True,
) -> SweepPlan:
    from tti_ray.tracking import resolve_tracking

    exp_dir = (out or Path("experiments") / space.name).absolute()
    store = storage or str(exp_dir)
    if not is_uri(store):
        store = str(Path(store).absolute())
    study_url = space.study_storage or f"sqlite:///{exp_dir / 'optuna.db'}"
    threads = max(1, int(space.resources.cpus_per_worker))
    return SweepPlan(
        space, exp_dir, store, study_url, address, resume,
        runs_dir=None if is_uri(store) else exp_dir / "runs", threads=threads,
        tracking=resolve_tracking(exp_dir=exp_dir, experiment_name=space.name,
                                  tracking_uri=tracking_uri, artifact_store=artifact_store,
                                  enabled=track, resume=resume),
    )


def tune_state_exists(plan: SweepPlan) -> bool:
    from ray.tune import Tuner

    return Tuner.can_restore(f"{plan.storage}/{TUNE_NAME}")


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # save Tune's experiment state at least every 5 s (Ray's default backs off to ≥ 10 s)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    # intermediate results may lack an objective (checkpoint-only steps, SAE metrics that come
    # at the end): objectives are checked against reported metric names at load time instead
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
    if address:
        _token_auth_like_auto()
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


def _token_auth_like_auto() -> None:
    """Ray ≥ 2.5x turns token authentication on for ``ray start`` and ``--address auto`` when a
    token exists (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``), but never
    for an explicit ``host:port``: the connection is then refused. Do what ``auto`` does (a token
    sent to a cluster without authentication is ignored); an explicit ``RAY_AUTH_MODE`` wins."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").exists()):
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray caches its config at import: re-read it, as Ray's own auto path does
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):
            pass


def write_outputs(space: SearchSpace, exp_dir: Path, df: pd.DataFrame) -> dict[str, Any]:
    """pareto.csv/json, hypervolume.json, front.png from the trials table."""
    from tti_ray.analysis.plots import plot_front
    from tti_ray.analysis.tables import hypervolume_report, pareto_json, pareto_table

    objs = [(o.metric, o.mode) for o in space.objectives]
    spec = ",".join(f"{m}:{d}" for m, d in objs)
    if df.empty or not all(m in df.columns for m, _ in objs):
        return {}
    params = list(space.parameters)
    table = pareto_table(df, spec, params=params)
    hv = hypervolume_report(df, spec)
    hv["constraints"] = [c.describe() for c in space.constraints]
    atomic_write_text(exp_dir / "pareto.csv", table.to_csv(index=False))
    pj = pareto_json(table, spec, hv["reference_point"], hv["hypervolume"])
    pj["constraints"] = hv["constraints"]
    atomic_write_text(exp_dir / "pareto.json", json.dumps(pj, indent=1, allow_nan=False))
    atomic_write_text(exp_dir / "hypervolume.json", json.dumps(hv, indent=1, allow_nan=False))
    from tti_ray.analysis.tables import main_effects, summary_vs_baseline
    from tti_ray.sweep.space import config_id

    metrics = [m for m in [*space.metrics, *space.report_metrics] if m in df.columns]
    base_id = config_id(space.baseline) if space.baseline is not None else None
    # the baseline configuration may not have started yet while the sweep is live
    if base_id is not None and space.budget.seeds_per_config > 1 and (
            base_id in set(df["config_id"].astype(str))):
        summary = summary_vs_baseline(df, metrics, base_id, params=params)
        atomic_write_text(exp_dir / "summary.csv", summary.to_csv(index=False))
    effects = None
    if space.searcher.type == "grid" and space.configurations is None and params:
        # reference level: the baseline's value, else the first value the file lists (not the
        # first trial to finish, which varies from run to run)
        ref = {q: space.parameters[q].values[0] for q in params if space.parameters[q].values}
        effects = main_effects(df, metrics, params, reference={**ref, **(space.baseline or {})})
        if not effects.empty:
            atomic_write_text(exp_dir / "effects.csv", effects.to_csv(index=False))
    if space.run_config({}).workload == "toy_superposition" and len(params) == 2:
        _phase_diagram(df, params, exp_dir / "phase_diagram.png", space.name)
    try:
        plot_front(df, spec, exp_dir / "front.png", title=f"{space.name}: Pareto front")
    except Exception as e:  # noqa: BLE001 - a plot must never kill a sweep
        print(f"[tti_ray.sweep] front plot failed: {e}", file=sys.stderr)
    return {"pareto": table, "hypervolume": hv, "effects": effects}


def _phase_diagram(df: pd.DataFrame, params: list[str], out: Path, name: str) -> None:
    from tti_ray.toy.superposition import phase_diagram

    done = df[(df["status"] == "finished") & df["toy/phase"].notna()] if "toy/phase" in df else []
    if len(done):
        x, y = (p.removeprefix("toy.") for p in params)
        records = [{x: r[params[0]], y: r[params[1]], "toy/phase": r["toy/phase"]}
                   for _, r in done.iterrows()]
        phase_diagram(records, out, x=x, y=y, title=f"{name}: phase of the last feature")


class _Progress:
    """One line per ended trial: the live view of a sweep that runs for hours."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, df: pd.DataFrame) -> None:
        done = df[df["status"].isin(["finished", "diverged", "early_stopped", "failed"])]
        last = done.sort_values("completed_at").iloc[-1] if len(done) else None
        if last is None:
            return
        vals = "  ".join(
            f"{m}={last.get(m):.4g}" if isinstance(last.get(m), float) else f"{m}=–"
            for m in self.space.metrics
        )
        if self.space.constraints and last["status"] == "finished":
            feas = last.get("feasible")
            vals += "  " + {True: "feasible", False: "INFEASIBLE"}.get(feas, "feasible: pending")
        counts = df["status"].value_counts().to_dict()
        summary = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        print(
            f"[tti_ray.sweep] {len(done)}/{self.space.n_trials()} ended | {last['trial_id']} "
            f"{last['status']} {vals} | {summary}",
            flush=True,
        )


def _log_to_child_run(tracker: Any, trial_id: str, metrics: dict[str, float]) -> None:
    """Add metrics computed after a trial ended (SAE evaluation) to its MLflow child run."""
    import time as _time

    try:
        runs = tracker.client.client.search_runs(
            [tracker.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{tracker.parent_run_id}' and "
                          f"tags.`tti_ray.trial_id` = '{trial_id}'",
            max_results=1,
        )
    except Exception as e:  # noqa: BLE001 - the trial table keeps the numbers regardless
        print(f"[tti_ray.sweep] MLflow: could not find the run of {trial_id} ({e})",
              file=sys.stderr)
        return
    if runs:
        ts = int(_time.time() * 1000)
        tracker.client.log_batch(runs[0].info.run_id,
                                 metrics=[[k, v, ts, 0] for k, v in metrics.items()])


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def run_sweep(plan: SweepPlan, num_cpus: int | None = None) -> dict[str, Any]:
    """Start or resume the sweep and block until it ends; return the outputs."""
    from ray import tune

    from tti_ray.sweep.scheduler import MOASHAScheduler
    from tti_ray.sweep.searcher import make_searcher
    from tti_ray.sweep.table import TrialTable
    from tti_ray.sweep.trainable import run_trial
    from tti_ray.tracking import start_sweep_tracking, update_sweep_tracking

    space, exp_dir = plan.space, plan.exp_dir
    preflight(plan)  # data, storage, experiment dir: fail before anything is created
    resuming = plan.resume
    if resuming and not tune_state_exists(plan):
        raise UsageError(f"--resume: no sweep to resume at {plan.storage}/{TUNE_NAME}")
    if not resuming and (exp_dir / "trials_state.json").exists():
        raise UsageError(
            f"--out: {exp_dir} already holds a sweep; pass --resume to continue it or choose "
            "another --out"
        )
    created = not exp_dir.exists()
    exp_dir.mkdir(parents=True, exist_ok=True)
    try:
        tracker = start_sweep_tracking(plan.tracking, exp_dir, space, resuming)  # preflight
    except UsageError:
        if created:  # a failed preflight leaves nothing behind
            shutil.rmtree(exp_dir, ignore_errors=True)
        raise
    (exp_dir / "search_space.yaml").write_text(
        yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False)
    )
    _init_ray(plan.address, num_cpus)

    base_cfg = space.run_config({})
    base_seed = base_cfg.train.seed
    max_steps = base_cfg.train.steps
    scheduler: Any = None
    stopped = None
    if space.scheduler.type == "mo_asha":
        scheduler = MOASHAScheduler(
            space.metrics, space.modes, max_steps,
            grace_steps=space.scheduler.grace_steps,
            reduction_factor=space.scheduler.reduction_factor,
            state_file=exp_dir / "early_stopped.json",
        )
        stopped = scheduler.stopped
    table = TrialTable(space, exp_dir, base_seed, stopped=stopped,
                       on_update=lambda df: (write_outputs(space, exp_dir, df), _Progress(space)(df),
                                             update_sweep_tracking(exp_dir, df)))

    sae_trigger = None
    if space.sae_eval is not None and space.sae_eval.enabled and not space.sae_inline:
        from tti_ray.sweep.sae_trigger import SAETrigger

        def _sae_done(trial_id: str, metrics: dict[str, float]) -> None:
            table.set_metrics(trial_id, metrics)
            if tracker is not None:
                _log_to_child_run(tracker, trial_id, metrics)

        sae_trigger = SAETrigger(space.sae_eval.config, space.sae_eval.cpus,
                                 space.sae_eval.gpus, exp_dir, plan.runs_dir, _sae_done)
    callbacks: list[Any] = [table] + ([sae_trigger] if sae_trigger else [])

    r = space.resources
    meta = {
        "base": space.base,
        "parameters": list(space.parameters),
        "base_seed": base_seed,
        "workers": r.workers,
        "cpus_per_worker": r.cpus_per_worker,
        "gpus_per_worker": r.gpus_per_worker,
        "custom": r.custom,
        "threads": plan.threads,
        "runs_dir": str(plan.runs_dir) if plan.runs_dir else None,
        "train_storage": f"{plan.storage}/ddp",
        "max_failures": space.max_failures,
        "tracking": tracker.trial_meta() if tracker else None,
        "sae_inline": space.sae_eval.config if space.sae_eval and space.sae_inline else None,
    }
    if r.workers == 1:
        res = {"cpu": r.cpus_per_worker, "gpu": r.gpus_per_worker, **r.custom}
    else:
        res = {"cpu": 0.01}  # the trial only drives a TorchTrainer whose workers hold resources
    trainable = tune.with_resources(run_trial, res)

    run_config = tune.RunConfig(
        name=TUNE_NAME,
        storage_path=plan.storage,
        failure_config=tune.FailureConfig(max_failures=space.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks,
        progress_reporter=tune.CLIReporter(
            metric_columns={"step": "step", **{m: m.split("/", 1)[-1] for m in space.metrics}},
            parameter_columns={k: k.split(".")[-2] + "." + k.split(".")[-1] if k.count(".") else k
                               for k in space.parameters},
            max_report_frequency=30,
            max_progress_rows=30,
        ),
        verbose=1,
    )
    if resuming:
        tuner = tune.Tuner.restore(
            f"{plan.storage}/{TUNE_NAME}", trainable=trainable, resume_errored=True,
            param_space={"__tti__": meta},
        )
        # Tune unpickles the old driver's callbacks; use this driver's fresh ones instead
        internal = getattr(tuner, "_local_tuner", None)
        if internal is not None:
            internal.get_run_config().callbacks = callbacks
        if sae_trigger is not None:
            sae_trigger.relaunch_missing(table.rows)
    else:
        searcher = make_searcher(space, plan.study_url, exp_dir=str(exp_dir),
                                 runs_dir=str(plan.runs_dir) if plan.runs_dir else None)
        tuner = tune.Tuner(
            trainable,
            param_space={"__tti__": meta},
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=space.n_trials(),
                max_concurrent_trials=space.concurrency,
                reuse_actors=r.workers == 1 and r.reuse_actors,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=run_config,
        )
    try:
        tuner.fit()
    except BaseException:
        if tracker:
            tracker.close()
        raise
    if sae_trigger is not None and plan.wait_sae:
        sae_trigger.wait()
    table.load()
    df = table.frame()
    out = write_outputs(space, exp_dir, df)
    if out.get("hypervolume"):
        from tti_ray.sweep.searcher import set_study_reference

        set_study_reference(plan.study_url, space.name, out["hypervolume"])
    if tracker:
        tracker.finish(df)
    n_finished = int((df["status"] == "finished").sum()) if len(df) else 0
    return {"trials": df, "parameters": list(space.parameters), "objectives": space.metrics,
            "n_finished": n_finished, **out}
