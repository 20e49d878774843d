"""SAE evaluation of finished trials, launched from the sweep driver without blocking the search.

When a trial ends ``finished`` (not diverged, not early-stopped), a Ray task with its own
resources (``sae_eval.cpus`` / ``sae_eval.gpus``) trains and evaluates SAEs on the trial's final
checkpoint (:func:`tti_ray.sae.evaluate_checkpoint`). Its ``sae/…`` metrics are merged into the
trial's row (``trials.csv``, ``pareto.csv``) and handed to ``on_metrics`` (the MLflow child run).
A failed evaluation is retried once, then recorded as ``sae/status = failed`` (with the error in
``sae_errors.json``) - it never fails the training trial. The sweep's end waits for outstanding
evaluations unless ``--no-wait-sae``.

When an objective is an ``sae/…`` metric, the evaluation must exist before Optuna is told the
result, so the trial runs it itself right after training (see ``trainable.run_trial``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.tune import Callback

from tti_ray.trials import TrialStatus

MAX_TRIES = 2


def evaluate_trial_checkpoint(checkpoint: Any, sae_cfg: dict[str, Any], out_dir: str | None,
                              threads: int | None = None) -> dict[str, float]:
    """Evaluate one trial's final checkpoint (a Ray ``Checkpoint`` or a local directory)."""
    import torch

    from tti_ray.sae import evaluate_checkpoint
    from tti_ray.train import load_model

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not hasattr(checkpoint, "as_directory"):  # a local path
        run = load_model(checkpoint, device=device)
        return evaluate_checkpoint(run, sae_cfg, out_dir, progress=False)
    with checkpoint.as_directory() as d:  # a Ray checkpoint, possibly in s3://
        run = load_model(d, device=device)
        return evaluate_checkpoint(run, sae_cfg, out_dir, progress=False)


@ray.remote(max_retries=0)
def _sae_task(checkpoint: Any, sae_cfg: dict[str, Any], out_dir: str | None,
              threads: int | None) -> dict[str, float]:
    return evaluate_trial_checkpoint(checkpoint, sae_cfg, out_dir, threads)


class SAETrigger(Callback):
    def __init__(self, sae_cfg: dict[str, Any], cpus: float, gpus: float, exp_dir: Path,
                 runs_dir: Path | None, on_metrics: Callable[[str, dict[str, float]], None]):
        self.sae_cfg, self.cpus, self.gpus = sae_cfg, cpus, gpus
        self.exp_dir, self.runs_dir, self.on_metrics = Path(exp_dir), runs_dir, on_metrics
        self._pending: dict[Any, tuple[str, Any, int]] = {}  # ref -> (trial id, ckpt, try)
        self.done: set[str] = set()
        self.errors: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state: object refs and the driver's hooks
        # (MLflow client threads) do not outlive the driver; --resume builds a fresh trigger
        return {**self.__dict__, "_pending": {}, "on_metrics": None}

    def launch(self, trial_id: str, checkpoint: Any, attempt: int = 1) -> None:
        out = str(self.runs_dir / trial_id / "sae_eval") if self.runs_dir else None
        threads = max(1, int(self.cpus))
        ref = _sae_task.options(num_cpus=self.cpus, num_gpus=self.gpus).remote(
            checkpoint, self.sae_cfg, out, threads
        )
        self._pending[ref] = (trial_id, checkpoint, attempt)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get("status") == TrialStatus.FINISHED and trial.checkpoint is not None:
            if any(k.startswith("sae/") for k in last):
                return  # evaluated inside the trial (an sae/ objective)
            self.launch(trial.trial_id, trial.checkpoint)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.poll(timeout=0)

    def poll(self, timeout: float | None) -> None:
        if not self._pending:
            return
        ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=timeout)
        for ref in ready:
            trial_id, ckpt, attempt = self._pending.pop(ref)
            try:
                metrics = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - any failure: retry once, then record
                if attempt < MAX_TRIES:
                    self.launch(trial_id, ckpt, attempt + 1)
                    continue
                self.errors[trial_id] = f"{type(e).__name__}: {str(e).splitlines()[-1][:500]}"
                self._write_errors()
                print(f"[tti_ray.sweep] SAE evaluation of {trial_id} failed twice: "
                      f"{self.errors[trial_id]}", file=sys.stderr, flush=True)
                metrics = {"sae/failed": 1.0}
            self.done.add(trial_id)
            self.on_metrics(trial_id, metrics)

    def wait(self) -> None:
        """Block until every launched evaluation (and its retry) has ended."""
        if self._pending:
            print(f"[tti_ray.sweep] waiting for {len(self._pending)} SAE evaluation(s)…",
                  flush=True)
        while self._pending:
            self.poll(timeout=None)

    def relaunch_missing(self, rows: dict[str, dict[str, Any]]) -> None:
        """After ``--resume``: evaluate finished trials that have no ``sae/`` metrics yet."""
        for tid, row in rows.items():
            has = any(k.startswith("sae/") for k in row.get("metrics", {}))
            if row.get("status") == TrialStatus.FINISHED and not has and row.get("checkpoint"):
                from ray.train import Checkpoint

                self.launch(tid, Checkpoint(row["checkpoint"]))

    def _write_errors(self) -> None:
        (self.exp_dir / "sae_errors.json").write_text(json.dumps(self.errors, indent=1))
