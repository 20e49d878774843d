"""The Tune trial: one call of :func:`tti_ray.train.train_run`.

* 1 worker: ``train_run`` runs directly inside the Tune trial process (a nested 1-worker
  ``TorchTrainer`` would cost ≈18 s per trial on 2 CPUs for nothing).
* N > 1 workers: the trial builds a Ray Train ``TorchTrainer`` (gloo on CPU, nccl on GPU) whose
  workers call the same ``train_run``; ``TuneReportCallback`` forwards rank 0's metrics to Tune,
  and Train's ``FailureConfig`` restarts a killed worker group from the last checkpoint.

Checkpoints are handed to Ray at every checkpoint step, so a trial restarted by Tune (after a
worker crash, a lost node, or ``--resume`` of the sweep) continues from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import ray.tune as tune

from tti_ray.config import load_config
from tti_ray.io import atomic_write_text
from tti_ray.sweep.sae_trigger import evaluate_trial_checkpoint
from tti_ray.sweep.searcher import SEED_KEY
from tti_ray.tracking import attach_worker, track_trial
from tti_ray.tracking.client import LOCAL_PREFIX
from tti_ray.train import DistInfo, train_run
from tti_ray.trials import TrialStatus, config_id

CHECKPOINT_KEY = "checkpoint_path"  # what TuneReportCallback adds for Train checkpoints


def trial_run_config(config: dict[str, Any]) -> Any:
    """The RunConfig of this trial: base + searched values + seed."""
    meta = config["__tti__"]
    params = {k: config[k] for k in meta["parameters"] if k in config}
    seed = meta["base_seed"] + int(config.get(SEED_KEY, 0))
    cfg = load_config(raw=meta["base"], overrides={**params, "train.seed": seed})
    if meta.get("threads"):
        cfg.train.threads = meta["threads"]
    return cfg


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class TuneReporter:
    """Reporter for a 1-worker trial: ``tune.report`` with the checkpoint directory (and the
    trial's MLflow run id, which the searcher records on the Optuna trial)."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.extra = {k: v for k, v in (extra or {}).items() if v is not None}

    def report(self, metrics: dict[str, Any], *, step: int, checkpoint: Path | None = None) -> None:
        ckpt = tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        tune.report({**_clean(metrics), **self.extra, "node_id": _node_id()}, checkpoint=ckpt)


def _restore_into(ckpt: Any, out_dir: Path) -> bool:
    """Copy a Ray checkpoint into ``out_dir/checkpoint``; True if there was one."""
    if ckpt is None:
        return False
    dest = out_dir / "checkpoint"
    with ckpt.as_directory() as d:
        if Path(d).resolve() != dest.resolve():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(d, dest)
    return True


def _final_if_done(cfg: Any, out_dir: Path) -> dict[str, Any] | None:
    """A trial restarted after it already finished (driver killed before Tune saw the end):
    report its final metrics again instead of training."""
    final = out_dir / "metrics.json"
    state = out_dir / "checkpoint" / "train_state.json"
    if final.exists() and state.exists():
        if json.loads(state.read_text()).get("step", 0) >= cfg.train.steps:
            return json.loads(final.read_text())
    return None


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable."""

    meta = config["__tti__"]
    cfg = trial_run_config(config)
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    out_dir = Path(meta["runs_dir"]) / trial_id if meta.get("runs_dir") else Path(
        ctx.get_trial_dir()
    ) / "run"
    out_dir.mkdir(parents=True, exist_ok=True)
    cid = config_id({k: config.get(k) for k in meta["parameters"]})

    with track_trial(meta.get("tracking"), cfg, trial_id=trial_id, config_id=cid,
                     out_dir=out_dir) as run:  # the trial's child MLflow run
        if meta["workers"] == 1:
            resume = _restore_into(tune.get_checkpoint(), out_dir)
            done = _final_if_done(cfg, out_dir) if resume else None
            if done is not None:
                _log_start(out_dir, "replay")
                tune.report({**_clean(done), "node_id": _node_id()})
                return
            _log_start(out_dir, "resume" if resume else "train")
            reporter = run.wrap(TuneReporter({"mlflow_run_id": _mlflow_id(run)}))
            final = train_run(cfg, reporter, out_dir, resume=resume)
            if meta.get("sae_inline") and final.get("status") == TrialStatus.FINISHED:
                _evaluate_inline(meta["sae_inline"], out_dir, final, reporter)
            return
        _log_start(out_dir, "train-ddp")
        _run_ddp(cfg, meta, out_dir, trial_id, run.worker_info(meta.get("tracking")))


def _mlflow_id(run: Any) -> str | None:
    """The trial's MLflow run id, unless tracking is off or the run exists only in the spool."""

    rid = getattr(run, "run_id", None)
    return rid if isinstance(rid, str) and not rid.startswith(LOCAL_PREFIX) else None


def _evaluate_inline(sae_cfg: dict[str, Any], out_dir: Path, final: dict[str, Any],
                     reporter: Any) -> None:
    """SAE metrics are objectives: evaluate the final checkpoint before the trial ends, so the
    searcher is told them with the rest (a failure is retried once, then the trial fails)."""

    for attempt in (1, 2):
        try:
            sae = evaluate_trial_checkpoint(out_dir / "checkpoint", sae_cfg,
                                            str(out_dir / "sae_eval"))
            break
        except Exception:  # noqa: BLE001
            if attempt == 2:
                raise
    merged = {**final, **sae}
    atomic_write_text(out_dir / "metrics.json", json.dumps(merged, indent=1, default=str))
    reporter.report(merged, step=int(final.get("step", 0)), checkpoint=None)


def _log_start(out_dir: Path, kind: str) -> None:
    """``starts.log``: one line per launch of this trial (train / resume / replay of a
    finished trial whose end Tune had not yet recorded when the driver died)."""
    with (out_dir / "starts.log").open("a") as f:
        f.write(f"{kind} {os.getpid()}\n")


# -- data-parallel trials -------------------------------------------------------------------------
class TrainReporter:
    """Reporter for Train workers: every rank calls ``ray.train.report`` (a collective);
    only rank 0 passes a checkpoint."""

    def report(self, metrics: dict[str, Any], *, step: int, checkpoint: Path | None = None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        ray.train.report({**_clean(metrics), "node_id": _node_id()}, checkpoint=ckpt)


def _ddp_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch


    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    cfg = load_config(raw=loop_config["run_config"])
    out_dir = Path(loop_config["out_dir"]) / (f"rank{rank}" if rank else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = _restore_into(ray.train.get_checkpoint(), out_dir)
    device = ray.train.torch.get_device()
    di = DistInfo(rank=rank, world=ctx.get_world_size(), device=device)
    run = attach_worker(loop_config.get("tracking"), out_dir, rank)  # rank 0 logs to MLflow
    train_run(cfg, run.wrap(TrainReporter(), rank), out_dir, resume=resume, dist_info=di)


def _run_ddp(cfg: Any, meta: dict[str, Any], out_dir: Path, trial_id: str,
             tracking: dict[str, Any] | None = None) -> None:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = meta["gpus_per_worker"] > 0
    resources = {"CPU": meta["cpus_per_worker"], **meta.get("custom", {})}
    if use_gpu:
        resources["GPU"] = meta["gpus_per_worker"]
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config={"run_config": cfg.to_dict(), "out_dir": str(out_dir),
                           "tracking": tracking},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=meta["workers"], use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"ddp_{trial_id}",
            storage_path=meta["train_storage"],
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=meta["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    trainer.fit()
