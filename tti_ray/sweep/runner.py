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
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tti_ray.cli import UsageError
from tti_ray.io import atomic_write_text
from tti_ray.lock import DirLock
from tti_ray.sweep.preflight import (
    check_data,
    check_resources,
    check_storage,
    check_writable,
    init_ray,
    is_uri,
    local_nodes,
    local_where,
    ray_nodes,
)
from tti_ray.sweep.preflight import token_auth_like_auto as _token_auth_like_auto  # noqa: F401
from tti_ray.sweep.resume import check_restorable, write_meta
from tti_ray.sweep.signals import Interrupts
from tti_ray.sweep.space import SearchSpace
from tti_ray.trials import TERMINAL, TrialStatus

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
    check_resources: bool = True  # False: --skip-resource-check (autoscaling clusters)
    origin: dict[str, Any] | None = None  # how the space was made (file, --set, --preset)

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


def preflight(plan: SweepPlan, num_cpus: int | None = None) -> None:
    """Everything that can be checked before the experiment directory is touched."""
    check_writable(plan.exp_dir)
    check_storage(plan.storage)
    check_data(plan.space)
    if plan.check_resources and not plan.address:
        check_resources(plan.space, local_nodes(num_cpus), local_where(num_cpus),
                        (plan.origin or {}).get("sets", ()))


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


def write_outputs(space: SearchSpace, exp_dir: Path, df: pd.DataFrame) -> dict[str, Any]:
    """pareto.csv/json, hypervolume.json, front.png from the trials table."""
    from tti_ray.fronts.figures import plot_front
    from tti_ray.fronts.tables import hypervolume_report, pareto_json, pareto_table

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
    from tti_ray.fronts.tables import main_effects, summary_vs_baseline
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

    done = df[(df["status"] == TrialStatus.FINISHED) & df["toy/phase"].notna()] if "toy/phase" in df else []
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
        done = df[df["status"].isin(TERMINAL)]
        last = done.sort_values("completed_at").iloc[-1] if len(done) else None
        if last is None:
            return
        vals = "  ".join(
            f"{m}={last.get(m):.4g}" if isinstance(last.get(m), float) else f"{m}=–"
            for m in self.space.metrics
        )
        if self.space.constraints and last["status"] == TrialStatus.FINISHED:
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
    """Start or resume the sweep and block until it ends; return the outputs. A SIGINT or
    SIGTERM ends it early: tables written as they are, MLflow runs KILLED, then
    :class:`~tti_ray.sweep.signals.SweepInterrupted`."""
    exp_dir = plan.exp_dir
    preflight(plan, num_cpus)  # data, storage, directory, resources: before anything exists
    created = not exp_dir.exists()
    exp_dir.mkdir(parents=True, exist_ok=True)
    lock = DirLock(exp_dir, flag="--out")
    try:  # held until this function returns; the kernel drops it if the driver dies
        lock.acquire()
        if lock.stale:
            print(f"[tti_ray.sweep] note: took over the lock that a dead process left "
                  f"({lock.stale})", file=sys.stderr)
        with Interrupts() as irq:
            try:
                tracker = _start(plan, num_cpus, irq)
            except BaseException:
                if created:  # a failed start leaves nothing behind
                    shutil.rmtree(exp_dir, ignore_errors=True)
                raise
            return _run(plan, tracker, irq)
    finally:
        lock.release()


def _start(plan: SweepPlan, num_cpus: int | None, irq: Interrupts) -> Any:
    """Under the lock: what the directory holds, Ray, the cluster's resources, tracking."""
    from tti_ray.tracking import start_sweep_tracking

    space, exp_dir = plan.space, plan.exp_dir
    if plan.resume:
        check_restorable(f"{plan.storage}/{TUNE_NAME}", exp_dir, space)
    elif (exp_dir / "trials_state.json").exists():
        raise UsageError(
            f"--out: {exp_dir} already holds a sweep; pass --resume to continue it or choose "
            "another --out"
        )
    if not plan.resume:  # under the lock: a live sweep into this --out is named first
        from tti_ray.sweep.searcher import check_new_study

        check_new_study(plan.study_url, space.name)
    tracker = start_sweep_tracking(plan.tracking, exp_dir, space, plan.resume)  # preflight
    try:
        init_ray(plan.address, num_cpus)
        irq.reinstall()
        if plan.check_resources:
            where = f"the Ray cluster at {plan.address}" if plan.address else local_where(num_cpus)
            check_resources(space, ray_nodes(), where, (plan.origin or {}).get("sets", ()))
    except BaseException:
        if tracker:
            tracker.close("FAILED")
        raise
    (exp_dir / "search_space.yaml").write_text(
        yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False)
    )
    if not plan.resume:
        write_meta(exp_dir, space, plan.origin)
    return tracker


def _run(plan: SweepPlan, tracker: Any, irq: Interrupts) -> dict[str, Any]:
    from ray import tune

    from tti_ray.sweep.scheduler import MOASHAScheduler
    from tti_ray.sweep.searcher import make_searcher
    from tti_ray.sweep.table import TrialTable
    from tti_ray.sweep.trainable import run_trial
    from tti_ray.tracking import update_sweep_tracking

    space, exp_dir, resuming = plan.space, plan.exp_dir, plan.resume
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
    if sae_trigger is not None and plan.wait_sae and irq.signum is None:
        sae_trigger.wait()
    table.load()
    df = table.frame()
    out = write_outputs(space, exp_dir, df)
    if out.get("hypervolume"):
        from tti_ray.sweep.searcher import set_study_reference

        set_study_reference(plan.study_url, space.name, out["hypervolume"])
    if tracker:
        tracker.finish(df, status="KILLED" if irq.signum else "FINISHED")
    irq.raise_if_interrupted()
    n_finished = int((df["status"] == TrialStatus.FINISHED).sum()) if len(df) else 0
    return {"trials": df, "parameters": list(space.parameters), "objectives": space.metrics,
            "n_finished": n_finished, **out}
