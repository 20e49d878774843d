"""Tabular replay, shared by the searcher benchmarks (``sweep_efficiency``, ``joint_search``).

A *table* holds one learning curve per cell of a grid of configurations, measured once by a real
sweep (``python -m tti_ray.sweep <table space>``): the objectives and the constrained metric at
every evaluation step. A replay runs a searcher against the table instead of training: each
suggestion is snapped to its cell (per parameter, the nearest table value; on a log scale for
the parameters named in ``log_params``), and the cell's curve is fed back as the trial's results,
in the order a sweep with ``concurrency`` parallel trials would see them (an event simulation
whose clock counts training steps). This is the tabular-benchmark method of HPOBench, LCBench
and Syne Tune's blackbox repository.

Which trials count. A trial counts towards the front only if it *finished* (ran every step; not
early-stopped, not diverged), its objectives are finite, and its final value of the constrained
metric is within the bound: the same rule for every contender, whatever the searcher itself saw.
Compute is the training steps of ended trials, in completion order; an early-stopped trial counts
the steps it ran.

This module holds the table, the replay with the product's own searcher and scheduler
(:func:`simulate`), and the curve helpers; ``benchmarks/peers.py`` replays the same table with
plain Optuna and Syne Tune.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from tti_ray.fronts.hypervolume import hypervolume_history, reference_point

Cell = tuple[float, ...]


@dataclass
class Table:
    """Learning curves per cell. ``df`` has one row per (cell, eval step): the ``params``
    columns, ``step``, optionally ``status`` (the sweep trial's final status), the
    ``objectives`` and, when ``constraint`` = (metric, max) is given, that metric."""

    df: pd.DataFrame
    params: tuple[str, ...]
    objectives: tuple[str, ...]
    modes: tuple[str, ...]
    constraint: tuple[str, float] | None = None
    log_params: tuple[str, ...] = ()
    values: dict[str, np.ndarray] = field(init=False)
    curves: dict[Cell, list[dict[str, float]]] = field(init=False)
    status: dict[Cell, str] = field(init=False)

    def __post_init__(self) -> None:
        self.params, self.objectives, self.modes = (tuple(self.params), tuple(self.objectives),
                                                    tuple(self.modes))
        metrics = self.metrics
        missing = [c for c in (*self.params, "step", *metrics) if c not in self.df.columns]
        if missing:
            raise ValueError(f"table lacks columns {missing}")
        self.values = {p: np.sort(self.df[p].unique().astype(float)) for p in self.params}
        for p in self.log_params:
            if (self.values[p] <= 0).any():
                raise ValueError(f"{p}: a log-scale parameter needs positive values")
        self.curves, self.status = {}, {}
        for key, g in self.df.groupby(list(self.params)):
            cell = tuple(float(v) for v in (key if isinstance(key, tuple) else (key,)))
            g = g.sort_values("step")
            self.curves[cell] = [{"step": int(r["step"]), **{m: float(r[m]) for m in metrics}}
                                 for _, r in g.iterrows()]
            self.status[cell] = str(g["status"].iloc[-1]) if "status" in g else "finished"

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.objectives + ((self.constraint[0],) if self.constraint else ())

    @property
    def max_steps(self) -> int:
        return max(c[-1]["step"] for c in self.curves.values())

    def cell_of(self, config: Mapping[str, Any]) -> Cell:
        """The table cell nearest to ``config``, parameter by parameter."""
        out = []
        for p in self.params:
            vals, x = self.values[p], float(config[p])
            if p in self.log_params:
                i = int(np.argmin(np.abs(np.log10(vals) - math.log10(max(x, 1e-300)))))
            else:
                i = int(np.argmin(np.abs(vals - x)))
            out.append(float(vals[i]))
        return tuple(out)

    def final_status(self, cell: Cell) -> str:
        """The status a trial of ``cell`` ends with when it runs every step."""
        last = self.curves[cell][-1]
        if self.status[cell] != "finished":
            return self.status[cell]
        return "finished" if all(math.isfinite(last[m]) for m in self.objectives) else "diverged"

    def feasible(self, point: Mapping[str, float]) -> bool:
        """Whether a final ``point`` satisfies the constraint (True when there is none)."""
        if self.constraint is None:
            return True
        v = point.get(self.constraint[0], math.nan)
        return bool(math.isfinite(v) and v <= self.constraint[1])

    def counts(self, cell: Cell) -> bool:
        """Whether a trial of ``cell`` that runs every step enters the front."""
        return self.final_status(cell) == "finished" and self.feasible(self.curves[cell][-1])

    def finals(self) -> np.ndarray:
        """Final objective values of the cells that count, one row each."""
        return np.array([[self.curves[c][-1][m] for m in self.objectives]
                         for c in self.curves if self.counts(c)])

    def reference_point(self) -> np.ndarray:
        """Per objective: the worst final value over the cells that count + 10% of their range."""
        return reference_point(self.finals(), list(self.modes))

    def config(self, cell: Cell) -> dict[str, float]:
        return dict(zip(self.params, cell))

    def point(self, cell: Cell, step: int) -> dict[str, float]:
        """The cell's curve point at ``step``."""
        return next(p for p in self.curves[cell] if p["step"] == step)


def ended_record(table: Table, trial_id: str, cell: Cell, point: Mapping[str, float],
                 status: str, ended_at: float) -> dict[str, Any]:
    """One ended trial, the same for every contender: its cell, status, steps run, final values
    and whether it counts towards the front."""
    counts = status == "finished" and table.feasible(point)
    return {"trial_id": trial_id, **table.config(cell), "status": status,
            "steps": int(point["step"]), **{m: float(point[m]) for m in table.metrics},
            "counts": counts, "ended_at": float(ended_at)}


# ------------------------------------------------------------------ the product's own searcher
def simulate(space: Any, table: Table, n_trials: int, *, concurrency: int = 2,
             db: Path) -> list[dict]:
    """Replay one sweep of ``space`` against ``table`` with the product's searcher
    (``make_searcher``: the status-aware Optuna searcher, its samplers, its constraint handling)
    and, when the space has one, its MO-ASHA scheduler. Returns the ended trials in completion
    order (:func:`ended_record`)."""
    from ray.tune.schedulers import TrialScheduler

    from tti_ray.sweep.scheduler import MOASHAScheduler
    from tti_ray.sweep.searcher import make_searcher

    searcher = make_searcher(space, f"sqlite:///{db}")
    objectives = list(table.objectives)
    sched = None
    if space.scheduler is not None and space.scheduler.type == "mo_asha":
        sched = MOASHAScheduler(objectives, list(table.modes), table.max_steps,
                                space.scheduler.grace_steps, space.scheduler.reduction_factor)
    running: list[dict] = []
    ended: list[dict] = []
    started = 0

    def start(now: float) -> None:
        nonlocal started
        while len(running) < concurrency and started < n_trials:
            tid = f"t{started:04d}"
            cfg = searcher.suggest(tid)
            if not isinstance(cfg, dict):
                return
            started += 1
            cell = table.cell_of(cfg)
            running.append({"trial_id": tid, "cell": cell, "start": now, "i": 0,
                            "curve": table.curves[cell]})

    start(0)
    while running:
        tr = min(running, key=lambda r: (r["start"] + r["curve"][r["i"]]["step"], r["trial_id"]))
        point = tr["curve"][tr["i"]]
        now = tr["start"] + point["step"]
        last = tr["i"] == len(tr["curve"]) - 1
        status = table.final_status(tr["cell"]) if last else "running"
        result = {**point, "status": status}
        stop = False
        if sched is not None and not last:
            stop = sched.on_trial_result(None, SimpleNamespace(trial_id=tr["trial_id"]),
                                         result) == TrialScheduler.STOP
        if last or stop:
            searcher.on_trial_complete(tr["trial_id"], result)
            ended.append(ended_record(table, tr["trial_id"], tr["cell"], point,
                                      "early_stopped" if stop else status, now))
            running.remove(tr)
            start(now)
        else:
            tr["i"] += 1
    return ended


# -------------------------------------------------------------------------- curves and summary
def curves(ended: Sequence[Mapping[str, Any]], table: Table,
           ref: np.ndarray) -> dict[str, list[float]]:
    """Hypervolume of the trials that count, and cumulative steps, after each ended trial."""
    nan = [math.nan] * len(table.objectives)  # a trial that does not count adds nothing
    pts = [[e[o] for o in table.objectives] if e["counts"] else nan for e in ended]
    hv = hypervolume_history(np.array(pts).reshape(len(pts), len(nan)), list(table.modes), ref)
    return {"hypervolume": hv, "steps": np.cumsum([e["steps"] for e in ended]).tolist()}


def hv_at_trials(c: Mapping[str, list[float]], n: int) -> float:
    """Hypervolume after ``n`` ended trials (the last value if fewer ended)."""
    h = c["hypervolume"]
    return h[min(n, len(h)) - 1] if h and n > 0 else 0.0


def hv_at_steps(c: Mapping[str, list[float]], budget: float) -> float:
    """Best hypervolume reached with at most ``budget`` steps spent (0 before anything ended)."""
    return max([h for h, s in zip(c["hypervolume"], c["steps"]) if s <= budget] or [0.0])


def first_reach(c: Mapping[str, list[float]], target: float) -> tuple[int | None, int | None]:
    """(trials, steps) at which the hypervolume first reaches ``target`` (None, None if never)."""
    for i, (h, s) in enumerate(zip(c["hypervolume"], c["steps"])):
        if h >= target * (1 - 1e-9):
            return i + 1, s
    return None, None


def band(runs: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Quartiles per index over runs of unequal length (a short run holds its last value)."""
    n = max(len(r) for r in runs)
    a = np.array([list(r) + [r[-1]] * (n - len(r)) for r in runs])
    q = np.percentile(a, [25, 50, 75], axis=0)
    return {"q25": q[0].tolist(), "median": q[1].tolist(), "q75": q[2].tolist()}


def table_from_experiment(exp: Path, params: Sequence[str], metrics: Sequence[str],
                          extra: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (cell, eval step) from a finished table sweep's ``trials.csv`` and each
    trial's ``metrics.jsonl``; an eval row counts when it has every metric in ``metrics``
    (``extra`` metrics are copied when present)."""
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    rows = []
    for _, t in trials.iterrows():
        f = exp / "runs" / str(t["trial_id"]) / "metrics.jsonl"
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if all(m in rec for m in metrics):
                rows.append({**{p: t[p] for p in params}, "step": int(rec["step"]),
                             "status": t["status"],
                             **{m: rec.get(m, math.nan) for m in (*metrics, *extra)}})
    columns = [*params, "step", "status", *metrics, *extra]
    return (pd.DataFrame(rows, columns=columns).drop_duplicates([*params, "step"], keep="last")
            .sort_values([*params, "step"]).reset_index(drop=True))


def write_table(exp: Path, params: Sequence[str], metrics: Sequence[str], extra: Sequence[str],
                n_cells: int, csv: Path) -> pd.DataFrame:
    """Write the table of a finished table sweep in ``exp`` to ``csv``; a directory that holds no
    sweep, or a sweep that has not measured all ``n_cells`` cells, writes nothing."""
    if not (exp / "trials.csv").exists():
        raise SystemExit(f"{exp}: no table sweep here (no trials.csv); run --build-table")
    df = table_from_experiment(exp, params, metrics, extra)
    cells = df.groupby(list(params)).ngroups
    if cells != n_cells:
        raise SystemExit(f"{exp}: {cells} of {n_cells} cells measured; rerun --build-table")
    csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv, index=False)
    print(f"table: {len(df)} rows, {cells} cells -> {csv}")
    return df


# ------------------------------------------------------------------ the same replay on Ray Tune
def _table_trial(config: dict[str, Any], table: Table) -> None:
    from ray import tune

    cell = table.cell_of(config)
    curve = table.curves[cell]
    for i, point in enumerate(curve):
        status = table.final_status(cell) if i == len(curve) - 1 else "running"
        tune.report({**point, "status": status})


def ray_tune_replay(space: Any, table: Table, n_trials: int, *, storage: Path,
                    concurrency: int = 2) -> list[dict]:
    """The replay run by Ray Tune itself (``tune.Tuner``, a function trainable that reports the
    cell's curve instead of training, the product's searcher and MO-ASHA scheduler): the same
    searcher decisions as :func:`simulate` but Ray's trial actors, result plumbing and event
    loop, so that its wall time is Ray Tune's overhead. Needs a running Ray
    (``ray.init``). Returns the ended trials in Ray's completion order."""
    from ray import tune

    from tti_ray.sweep.scheduler import MOASHAScheduler
    from tti_ray.sweep.searcher import make_searcher

    sched = None
    if space.scheduler is not None and space.scheduler.type == "mo_asha":
        sched = MOASHAScheduler(list(table.objectives), list(table.modes), table.max_steps,
                                space.scheduler.grace_steps, space.scheduler.reduction_factor)
    storage.mkdir(parents=True, exist_ok=True)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_table_trial, table=table), {"cpu": 0.5}),
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(space, f"sqlite:///{storage / 'optuna.db'}"),
            scheduler=sched, num_samples=n_trials, max_concurrent_trials=concurrency,
            reuse_actors=True),
        run_config=tune.RunConfig(name="replay", storage_path=str(storage), verbose=0),
    )
    grid = tuner.fit()
    ended = []
    for r in grid:
        if r.metrics is None or "step" not in r.metrics:
            continue
        cell = table.cell_of(r.config)
        point = table.point(cell, int(r.metrics["step"]))
        stopped = point["step"] < table.max_steps
        ended.append(ended_record(table, str(r.metrics.get("trial_id", len(ended))), cell,
                                  point, "early_stopped" if stopped else
                                  table.final_status(cell),
                                  float(r.metrics.get("timestamp", len(ended)))))
    return sorted(ended, key=lambda e: (e["ended_at"], e["trial_id"]))
