"""Run (or resume) a sweep: Ray Tune + Optuna over ``train_run`` trials.

The plan and its checks are in :mod:`~tti_ray.sweep.plan` / :mod:`~tti_ray.sweep.preflight`,
Ray start-up in :mod:`~tti_ray.sweep.ray_start`, the output files in
:mod:`~tti_ray.sweep.outputs`, the per-trial progress and MLflow mirror in
:mod:`~tti_ray.sweep.progress`; this module holds the run itself: lock, start, Tune, finish.

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

import shutil
import sys
from typing import Any

import yaml
from ray import tune

from tti_ray.cli import UsageError
from tti_ray.lock import DirLock
from tti_ray.sweep.outputs import write_outputs
from tti_ray.sweep.plan import TUNE_NAME, SweepPlan, plan_sweep, preflight  # noqa: F401
from tti_ray.sweep.preflight import check_resources
from tti_ray.sweep.progress import on_table_update
from tti_ray.sweep.ray_start import init_ray, local_where, ray_nodes
from tti_ray.sweep.resume import check_restorable, write_meta
from tti_ray.sweep.sae_trigger import SAETrigger
from tti_ray.sweep.scheduler import MOASHAScheduler
from tti_ray.sweep.searcher import check_new_study, make_searcher, set_study_reference
from tti_ray.sweep.signals import Interrupts
from tti_ray.sweep.table import TrialTable
from tti_ray.sweep.trainable import run_trial
from tti_ray.tracking import start_sweep_tracking
from tti_ray.trials import TrialStatus


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
    space, exp_dir = plan.space, plan.exp_dir
    if plan.resume:
        check_restorable(f"{plan.storage}/{TUNE_NAME}", exp_dir, space)
    elif (exp_dir / "trials_state.json").exists():
        raise UsageError(
            f"--out: {exp_dir} already holds a sweep; pass --resume to continue it or choose "
            "another --out"
        )
    if not plan.resume:  # under the lock: a live sweep into this --out is named first
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
                       on_update=on_table_update(space, exp_dir))

    sae_trigger = None
    if space.sae_eval is not None and space.sae_eval.enabled and not space.sae_inline:
        def _sae_done(trial_id: str, metrics: dict[str, float]) -> None:
            table.set_metrics(trial_id, metrics)
            if tracker is not None:
                tracker.log_trial_metrics(trial_id, metrics)

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
        set_study_reference(plan.study_url, space.name, out["hypervolume"])
    if tracker:
        tracker.finish(df, status="KILLED" if irq.signum else "FINISHED")
    irq.raise_if_interrupted()
    n_finished = int((df["status"] == TrialStatus.FINISHED).sum()) if len(df) else 0
    return {"trials": df, "parameters": list(space.parameters), "objectives": space.metrics,
            "n_finished": n_finished, **out}
