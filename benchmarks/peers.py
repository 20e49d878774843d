"""The peers a user could pick instead of tti-ray's Ray Tune searchers, replayed against the same
table (``benchmarks/replay.py``) so that every contender is judged by the same rule.

- **Plain Optuna** (:func:`optuna_replay`): ``optuna.create_study`` + ``study.optimize``, no
  Ray, one trial at a time, with the *same* sampler objects (``tti_ray.sweep.samplers.
  make_sampler``: same settings, same seeds) and the same constraint values, set with
  ``Trial.set_constraint`` before the trial is told, exactly as the product's searcher does.
  Each trial runs every step (Optuna's pruners are single-objective).
- **Syne Tune** (:func:`syne_tune_replay`): the table is wrapped as a Syne Tune ``Blackbox``
  (:class:`TableBlackbox`, a learning curve per configuration, fidelity = training step) and
  run through Syne Tune's own simulator: ``Tuner`` + ``UserBlackboxBackend`` +
  ``SimulatorCallback``, ``n_workers`` = the product's concurrency, time counted in training
  steps. Schedulers: ``MOASHA`` (multi-objective asynchronous successive halving over random
  search; its non-dominated-sort priority; the product's grace period and reduction factor)
  and ``MOREA`` (``MultiObjectiveRegularizedEvolution``, a multi-objective searcher, run to the
  full step count by a ``SingleFidelityScheduler``; population max(4, budget / 3), tournament
  of 3, so that it evolves within a budget of 13 rather than sampling at random until its
  default population of 100 is full). Syne Tune's multi-objective schedulers take
  no constraints; the constraint still decides, after the fact, which of their trials count.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.replay import Table, ended_record

SYNE_TUNE_KINDS = ("moasha", "morea")


# --------------------------------------------------------------------------------- plain Optuna
def optuna_replay(space: Any, table: Table, n_trials: int, *,
                  storage: str | None = None) -> list[dict]:
    """``study.optimize`` over ``space``'s parameters with ``space``'s sampler (no Ray, one trial
    at a time; in memory unless ``storage`` names an Optuna storage URL); returns the ended
    trials (:func:`benchmarks.replay.ended_record`)."""
    import optuna

    from tti_ray.sweep.constraints import constraint_values
    from tti_ray.sweep.samplers import make_sampler

    dists = {k: p.optuna_distribution() for k, p in space.parameters.items()}
    study = optuna.create_study(directions=[_direction(m) for m in table.modes],
                                sampler=make_sampler(space), storage=storage,
                                study_name=space.name)
    for point in space.first_points or []:
        study.enqueue_trial(point)
    ended: list[dict] = []
    clock = 0

    def objective(trial: optuna.Trial) -> list[float]:
        nonlocal clock
        cfg = {k: _suggest(trial, k, d) for k, d in dists.items()}
        cell = table.cell_of(cfg)
        point = table.curves[cell][-1]
        status = table.final_status(cell)
        clock += point["step"]
        ended.append(ended_record(table, f"t{trial.number:04d}", cell, point, status, clock))
        if space.constraints:
            values = constraint_values(space.constraints, point, None)
            for c, v in zip(space.constraints, values or [], strict=True):
                trial.set_constraint(c.describe(), v)
        if status != "finished":
            raise optuna.TrialPruned()  # a trial that did not finish is not a result
        return [point[m] for m in table.objectives]

    study.optimize(objective, n_trials=n_trials, catch=())
    return ended


def _direction(mode: str) -> str:
    return "minimize" if mode == "min" else "maximize"


def _suggest(trial: Any, name: str, d: Any) -> Any:
    import optuna.distributions as od

    if isinstance(d, od.CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, od.FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, log=d.log, step=d.step)
    return trial.suggest_int(name, d.low, d.high, log=d.log, step=d.step)


# ------------------------------------------------------------------------------------ Syne Tune
def config_space(space: Any) -> dict[str, Any]:
    """A Syne Tune configuration space with the same domains as ``space``'s parameters."""
    from syne_tune.config_space import choice, lograndint, loguniform, randint, uniform

    out: dict[str, Any] = {}
    for k, p in space.parameters.items():
        if p.values is not None:
            out[k] = choice(list(p.values))
        elif p.distribution == "loguniform":
            out[k] = loguniform(p.low, p.high)
        elif p.distribution == "uniform":
            out[k] = uniform(p.low, p.high)
        elif p.distribution == "logint":
            out[k] = lograndint(int(p.low), int(p.high))
        else:
            out[k] = randint(int(p.low), int(p.high))
    return out


def _blackbox_class() -> type:
    from syne_tune.blackbox_repository.blackbox import Blackbox

    class TableBlackbox(Blackbox):
        """A :class:`benchmarks.replay.Table` as a Syne Tune blackbox: a configuration snaps to
        its cell; fidelity ``step``; objectives = the table's metrics plus ``elapsed_steps``
        (the simulator's clock, in training steps). A non-finite value is reported as +inf for a
        ``min`` objective (-inf for ``max``): Syne Tune's sorts cannot take NaN."""

        def __init__(self, table: Table, cs: dict[str, Any]) -> None:
            from syne_tune.config_space import choice

            steps = sorted({p["step"] for c in table.curves.values() for p in c})
            super().__init__(configuration_space=cs, fidelity_space={"step": choice(steps)},
                             objectives_names=[*table.metrics, "elapsed_steps"])
            self.table, self.steps = table, np.array(steps)

        def _objective_function(self, configuration: dict[str, Any],
                                fidelity: dict | None = None, seed: int | None = None) -> Any:
            cell = self.table.cell_of(configuration)
            rows = []
            for p in self.table.curves[cell]:
                vals = []
                for i, m in enumerate(self.table.metrics):
                    v = p[m]
                    if not math.isfinite(v):
                        mode = self.table.modes[i] if i < len(self.table.modes) else "min"
                        v = math.inf if mode == "min" else -math.inf
                    vals.append(v)
                rows.append([*vals, float(p["step"])])
            a = np.array(rows)
            if fidelity is None:
                return a
            step = int(fidelity["step"])
            return dict(zip(self.objectives_names, a[list(self.steps).index(step)]))

        @property
        def fidelity_values(self) -> np.ndarray:
            return self.steps

    return TableBlackbox


def syne_tune_replay(kind: str, space: Any, table: Table, n_trials: int, *, seed: int,
                     work: Path, concurrency: int = 2, grace_steps: int = 50,
                     reduction_factor: float = 3) -> list[dict]:
    """Run Syne Tune's ``kind`` (``moasha`` | ``morea``) through its simulator against
    ``table`` for ``n_trials`` started trials (its stopping criterion stops once *more* than
    the given number started, hence ``n_trials - 1``; a trial past the budget is dropped); returns the ended trials in simulated completion
    order (:func:`benchmarks.replay.ended_record`)."""
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
    from syne_tune.optimizer.schedulers.multiobjective import (
        MultiObjectiveRegularizedEvolution,
    )
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
    from syne_tune.optimizer.schedulers.single_fidelity_scheduler import (
        SingleFidelityScheduler,
    )
    from syne_tune.tuner_callback import TunerCallback

    if kind not in SYNE_TUNE_KINDS:
        raise ValueError(f"syne_tune kind must be one of {SYNE_TUNE_KINDS}, got {kind!r}")
    if any(m != table.modes[0] for m in table.modes):
        raise ValueError("Syne Tune's multi-objective schedulers take one mode for all objectives")
    for name in ("syne_tune", "syne_tune.tuner", "syne_tune.backend"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ["SYNETUNE_FOLDER"] = str(work)
    np.random.seed(seed)  # MOASHA samples and assigns brackets with numpy's global generator
    cs = config_space(space)
    objectives = list(table.objectives)
    minimize = table.modes[0] == "min"
    if kind == "moasha":
        scheduler: Any = MOASHA(cs, metrics=objectives, do_minimize=minimize, time_attr="step",
                                max_t=table.max_steps, grace_period=grace_steps,
                                reduction_factor=reduction_factor, random_seed=seed)
    else:
        searcher = MultiObjectiveRegularizedEvolution(cs, random_seed=seed,
                                                      population_size=max(4, n_trials // 3),
                                                      sample_size=3)
        scheduler = SingleFidelityScheduler(cs, metrics=objectives, do_minimize=minimize,
                                            searcher=searcher, random_seed=seed)
    backend = UserBlackboxBackend(blackbox=_blackbox_class()(table, cs),
                                  elapsed_time_attr="elapsed_steps")
    ended: list[dict] = []
    last: dict[int, Mapping[str, Any]] = {}
    done: set[int] = set()
    max_steps = table.max_steps

    def close(trial_id: int, config: Mapping[str, Any], result: Mapping[str, Any],
              stopped: bool) -> None:
        if trial_id in done or trial_id >= n_trials:  # Syne Tune may start one past the budget
            return
        done.add(trial_id)
        cell = table.cell_of(config)
        step = int(result["step"])
        point = table.point(cell, step)
        status = table.final_status(cell) if step >= max_steps else (
            "early_stopped" if stopped else "failed")
        ended.append(ended_record(table, f"t{trial_id:04d}", cell, point, status,
                                  float(result.get("st_tuner_time", len(ended)))))

    class Record(TunerCallback):
        def on_trial_result(self, trial: Any, status: Any, result: dict, decision: str) -> None:
            last[trial.trial_id] = result
            if decision == "STOP" or int(result["step"]) >= max_steps:
                close(trial.trial_id, trial.config, result, stopped=True)

        def on_trial_complete(self, trial: Any, result: dict) -> None:
            close(trial.trial_id, trial.config, result, stopped=False)

    tuner = Tuner(trial_backend=backend, scheduler=scheduler,
                  stop_criterion=StoppingCriterion(max_num_trials_started=n_trials - 1),
                  n_workers=concurrency, sleep_time=0, results_update_interval=1e9,
                  print_update_interval=1e9, callbacks=[SimulatorCallback(), Record()],
                  tuner_name=f"tti-{kind}-{seed}", save_tuner=False,
                  wait_trial_completion_when_stopping=True, suffix_tuner_name=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its tables and banners, per run
        tuner.run()
    return sorted(ended, key=lambda e: (e["ended_at"], e["trial_id"]))
