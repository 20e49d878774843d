"""Multi-objective asynchronous successive halving (MO-ASHA) as a Ray Tune scheduler.

After Schmucker et al. (2021), "Multi-objective multi-fidelity hyperparameter optimization with
application to fairness", and Syne Tune's ``MOASHA``: rungs sit at ``grace_steps · η^k`` training
steps (below the run's total). When a trial first reports at or past a rung, its objective vector
there is recorded; among all vectors recorded at that rung, the top ``max(1, ⌊n / η⌋)`` are
chosen by non-dominated sorting with crowding-distance tie-break (NSGA-II ranking); a trial
outside them is stopped. Like ASHA, decisions are asynchronous: early trials are judged against
the few results known when they reach the rung.

Stopped trials are recorded (``stopped``) and persisted to ``<exp dir>/early_stopped.json``; their
last result keeps ``status: running``, which the searcher tells Optuna as ``PRUNED`` (never as a
complete result) and the trial table reports as ``early_stopped``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from tti_ray.fronts.dominance import select_top
from tti_ray.io import atomic_write_text


class MOASHAScheduler(FIFOScheduler):
    def __init__(
        self,
        metrics: list[str],
        modes: list[str],
        max_steps: int,
        grace_steps: int = 100,
        reduction_factor: float = 3.0,
        state_file: str | Path | None = None,
        time_attr: str = "step",
    ) -> None:
        super().__init__()
        self.metrics, self.modes = list(metrics), list(modes)
        self.eta, self.time_attr = reduction_factor, time_attr
        self.rungs: list[int] = []
        r = grace_steps
        while r < max_steps:
            self.rungs.append(int(r))
            r = int(math.ceil(r * reduction_factor))
        self.recorded: dict[int, dict[str, list[float]]] = {r: {} for r in self.rungs}
        self.stopped: set[str] = set()
        self.state_file = Path(state_file) if state_file else None
        if self.state_file and self.state_file.exists():
            self.stopped = set(json.loads(self.state_file.read_text()))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        step = result.get(self.time_attr)
        values = [result.get(m) for m in self.metrics]
        if step is None or not all(isinstance(v, (int, float)) for v in values):
            return TrialScheduler.CONTINUE
        decision = TrialScheduler.CONTINUE
        for rung in self.rungs:
            if step < rung or trial.trial_id in self.recorded[rung]:
                continue
            self.recorded[rung][trial.trial_id] = [float(v) for v in values]
            if not self._in_top(rung, trial.trial_id):
                decision = TrialScheduler.STOP
                break
        if decision == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
            self._persist()
        return decision

    def _in_top(self, rung: int, trial_id: str) -> bool:
        ids = list(self.recorded[rung])
        pts = np.asarray([self.recorded[rung][i] for i in ids], dtype=float)
        pts = np.where(np.isfinite(pts), pts, np.where(np.asarray(self.modes) == "min", 1e300,
                                                       -1e300))
        n_keep = max(1, int(len(ids) / self.eta))
        keep = {ids[i] for i in select_top(pts, self.modes, n_keep)}
        return trial_id in keep

    def _persist(self) -> None:
        if self.state_file is None:
            return
        atomic_write_text(self.state_file, json.dumps(sorted(self.stopped)))

    def debug_string(self) -> str:
        return f"MO-ASHA: rungs {self.rungs}, η={self.eta}, stopped {len(self.stopped)}"
