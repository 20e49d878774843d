"""Run (or resume) a sweep: Ray Tune + Optuna over ``train_run`` trials.

Experiment directory (``--out``, default ``experiments/<name>``)::

    search_space.yaml   the resolved search space (after --set / --preset)
    optuna.db           the Optuna study (unless study_storage names another SQLAlchemy URL)
    tune/               Ray Tune's experiment state, trial dirs and checkpoints
                        (or under --storage, e.g. s3://bucket/prefix)
    runs/<trial_id>/    each trial's train_run directory (local storage only)
    trials.csv, trials_state.json, pareto.csv, pareto.json, hypervolume.json, front.png
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
            "parameters": {k: p.model_dump(exclude_none=True) for k, p in s.parameters.items()},
            "configurations": s.n_configs(),
            "seeds_per_config": s.budget.seeds_per_config,
            "trials": s.n_trials(),
            "concurrency": s.concurrency,
            "resources_per_trial": s.resources.model_dump(),
            "base_run_config": cfg.to_dict(),
        }


def is_uri(path: str) -> bool:
    return "://" in path


def check_writable(exp_dir: Path) -> None:
    """Fail before any trial starts if the experiment directory cannot be written."""
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
        probe = exp_dir / f".write_probe_{uuid.uuid4().hex}"
        with probe.open("wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out: experiment directory {exp_dir} is not writable ({e.strerror})")
    free = shutil.disk_usage(exp_dir).free
    if free < 50 * 2**20:
        raise UsageError(f"--out: only {free // 2**20} MiB free at {exp_dir} (need ≥ 50 MiB)")


def plan_sweep(
    space: SearchSpace,
    out: Path | None,
    *,
    storage: str | None = None,
    address: str | None = None,
    resume: bool = False,
) -> SweepPlan:
    exp_dir = (out or Path("experiments") / space.name).absolute()
    store = storage or str(exp_dir)
    if not is_uri(store):
        store = str(Path(store).absolute())
    study_url = space.study_storage or f"sqlite:///{exp_dir / 'optuna.db'}"
    threads = max(1, int(space.resources.cpus_per_worker))
    return SweepPlan(
        space, exp_dir, store, study_url, address, resume,
        runs_dir=None if is_uri(store) else exp_dir / "runs", threads=threads,
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
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


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
    _atomic_text(exp_dir / "pareto.csv", table.to_csv(index=False))
    pj = pareto_json(table, spec, hv["reference_point"], hv["hypervolume"])
    _atomic_text(exp_dir / "pareto.json", json.dumps(pj, indent=1, allow_nan=False))
    _atomic_text(exp_dir / "hypervolume.json", json.dumps(hv, indent=1, allow_nan=False))
    try:
        plot_front(df, spec, exp_dir / "front.png", title=f"{space.name}: Pareto front")
    except Exception as e:  # noqa: BLE001 - a plot must never kill a sweep
        print(f"[tti_ray.sweep] front plot failed: {e}", file=sys.stderr)
    return {"pareto": table, "hypervolume": hv}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        counts = df["status"].value_counts().to_dict()
        summary = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        print(
            f"[tti_ray.sweep] {len(done)}/{self.space.n_trials()} ended | {last['trial_id']} "
            f"{last['status']} {vals} | {summary}",
            flush=True,
        )


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def run_sweep(plan: SweepPlan, num_cpus: int | None = None) -> dict[str, Any]:
    """Start or resume the sweep and block until it ends; return the outputs."""
    from ray import tune

    from tti_ray.sweep.scheduler import MOASHAScheduler
    from tti_ray.sweep.searcher import make_searcher
    from tti_ray.sweep.table import TrialTable
    from tti_ray.sweep.trainable import run_trial

    space, exp_dir = plan.space, plan.exp_dir
    check_writable(exp_dir)
    resuming = plan.resume
    if resuming and not tune_state_exists(plan):
        raise UsageError(f"--resume: no sweep to resume at {plan.storage}/{TUNE_NAME}")
    if not resuming and (exp_dir / "trials_state.json").exists():
        raise UsageError(
            f"--out: {exp_dir} already holds a sweep; pass --resume to continue it or choose "
            "another --out"
        )
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
                       on_update=lambda df: (write_outputs(space, exp_dir, df), _Progress(space)(df)))

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
        callbacks=[table],
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
    else:
        searcher = make_searcher(space, plan.study_url)
        tuner = tune.Tuner(
            trainable,
            param_space={"__tti__": meta},
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=space.n_trials(),
                max_concurrent_trials=space.concurrency,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=run_config,
        )
    tuner.fit()
    table.load()
    df = table.frame()
    out = write_outputs(space, exp_dir, df)
    n_finished = int((df["status"] == "finished").sum()) if len(df) else 0
    return {"trials": df, "parameters": list(space.parameters), "objectives": space.metrics,
            "n_finished": n_finished, **out}
