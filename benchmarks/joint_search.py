"""Joint search where it pays (issue #21): four interventions at once, under the calibrated
objective and the dead-fraction constraint, searched by the product's Ray Tune searchers and by
the peers a user could pick instead, against the seed's one-at-a-time grid.

The problem (fixed in ``benchmarks/spaces/joint4_table.yaml`` before its table was measured):
TopK k × anti-poly λ × L1 λ × orthogonality λ, each off or at one of the seed's three
strengths, 4⁴ = 256 cells on the reduced ``efficiency`` model (1 layer, d_model 64, 200 steps),
each trained once with seed 0 (a single training seed per cell: cell-to-cell noise is not
averaged out). Objectives: validation perplexity and calibrated polysemanticity (both min).
Constraint: dead fraction ≤ 0.10. Reference point: per objective, the worst final value over the
feasible cells + 10% of their range. The table (``benchmarks/data/joint4_table.csv``) holds every
cell's learning curve (every 50 steps) of both objectives, the dead fraction and the other
reported metrics.

Contenders, all replayed against that table (``benchmarks/replay.py``; 2 concurrent trials and
a clock in training steps, except plain Optuna, which runs one trial at a time):

- ``one_at_a_time``: the seed's design, baseline + 3 strengths × 4 methods = 13 configurations
  (``joint4_one_at_a_time.yaml``). Its final hypervolume is the bar.
- ``factorial``: the 2⁴ full-factorial grid, each knob off or at its middle strength.
- the product's searchers over ``joint4_search.yaml`` (the four levels as choices, the constraint
  given to the samplers that can use it): ``random``, ``tpe`` (the default), ``nsga2``, ``gp``,
  and ``tpe+mo_asha`` (the product's MO-ASHA, grace 50 steps, η = 3, up to 3 × the trial budget
  started, judged by steps);
- plain Optuna (``optuna:*``): the same samplers through ``study.optimize``, no Ray;
- Syne Tune 0.16 (``syne_tune:moasha``: its MOASHA, grace 50, η = 3, 3 × the budget started;
  ``syne_tune:morea``: its multi-objective regularized evolution) through Syne Tune's own
  simulator (``benchmarks/peers.py``). Syne Tune's multi-objective schedulers take no
  constraints.

Every contender is judged by the same rule: a trial counts towards the front when it finished
every step and is feasible. The trial budget of the searchers is the one-at-a-time grid's 13;
the searchers and Syne Tune's evolution run ``--reps`` seeds (default 20); the grids' cells are
fixed and only the factorial's order varies with the seed.

Targets (issue #21, stated in the table space before it was built):

1. the default searcher (TPE) reaches the one-at-a-time grid's final hypervolume within ≤ 50% of
   its trials (median over reps of the trials it needs ≤ 6.5, half of 13; a rep that never
   reaches it counts as +inf);
2. TPE exceeds that hypervolume by ≥ 20% at equal trials (median hypervolume after 13 trials ≥
   1.2 × the grid's);
3. TPE + MO-ASHA reaches it with ≤ 50% of the grid's training steps (median over reps);
4. our MO-ASHA at least matches Syne Tune's MOASHA at equal steps: its median hypervolume is at
   least Syne Tune's at half and at all of the grid's training steps.

Also reported: which cells form the table's feasible front and whether any combination of
interventions dominates every single-method configuration (named), and the wall-clock overhead
per trial of Ray Tune (``tune.Tuner`` with the product's searcher and a trainable that reports
the table's curve), plain Optuna and Syne Tune on the same replay (slope of wall time against
trials, 13 and 39 trials, fixed costs apart).

    python -m benchmarks.joint_search [--reps 20] [--out benchmarks/results]
    python -m benchmarks.joint_search --concurrency-check  # TPE/GP at 1 vs 2 trials at a time
    python -m benchmarks.joint_search --build-table   # the 256-cell sweep (about 105 min on
                                                      # 2 cores; resumable), then the replay
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import REPO, environment
from benchmarks.replay import (
    Table,
    band,
    curves,
    first_reach,
    hv_at_steps,
    hv_at_trials,
    ray_tune_replay,
    simulate,
)
from benchmarks.replay import write_table as replay_write_table
from tti_ray.fronts.hypervolume import hypervolume
from tti_ray.sweep.space import load_search_space

SPACES = REPO / "benchmarks" / "spaces"
TABLE_SPACE = SPACES / "joint4_table.yaml"
SEARCH_SPACE = SPACES / "joint4_search.yaml"
TABLE_CSV = REPO / "benchmarks" / "data" / "joint4_table.csv"
SWEEP_DIR = REPO / "benchmarks" / "data" / "joint4_sweep"
KNOBS = {"interventions.topk.k": ("topk", 1.0), "interventions.anti_poly.coef": ("anti_poly", 0.0),
         "interventions.l1_act.coef": ("l1", 0.0),
         "interventions.orthogonality.coef": ("orth", 0.0)}  # column: (short name, off value)
OBJ = ("val/perplexity", "val/polysemanticity_calibrated/mean")
MODES = ("min", "min")
DEAD = ("val/dead_fraction/mean", 0.10)
EXTRA = ("val/polysemanticity/mean", "val/polysemanticity_live/mean",
         "val/monosemantic_fraction/mean", "val/mean_abs_cosine/mlp_out/mean",
         "val/effective_dim/mean")
MOASHA = "scheduler={type: mo_asha, grace_steps: 50, reduction_factor: 3}"
NO_CONSTRAINTS = "constraints=[]"  # random search cannot use them (the space refuses)

# name: (runner, space file, --set overrides, started-trial multiplier of the budget; None for a
# grid: its own size)
CONTENDERS: dict[str, tuple[str, Path, list[str], int | None]] = {
    "one_at_a_time": ("product", SPACES / "joint4_one_at_a_time.yaml", [], None),
    "factorial": ("product", SPACES / "joint4_factorial.yaml", [], None),
    "random": ("product", SEARCH_SPACE, ["searcher.type=random", NO_CONSTRAINTS], 1),
    "tpe": ("product", SEARCH_SPACE, ["searcher.type=tpe"], 1),
    "nsga2": ("product", SEARCH_SPACE, ["searcher.type=nsga2"], 1),
    "gp": ("product", SEARCH_SPACE, ["searcher.type=gp"], 1),
    "tpe+mo_asha": ("product", SEARCH_SPACE, ["searcher.type=tpe", MOASHA], 3),
    "optuna:random": ("optuna", SEARCH_SPACE, ["searcher.type=random", NO_CONSTRAINTS], 1),
    "optuna:tpe": ("optuna", SEARCH_SPACE, ["searcher.type=tpe"], 1),
    "optuna:nsga2": ("optuna", SEARCH_SPACE, ["searcher.type=nsga2"], 1),
    "optuna:gp": ("optuna", SEARCH_SPACE, ["searcher.type=gp"], 1),
    "syne_tune:moasha": ("syne_tune", SEARCH_SPACE, [], 3),
    "syne_tune:morea": ("syne_tune", SEARCH_SPACE, [], 1),
}
EPS = 1e-9


def load_table(csv: Path = TABLE_CSV) -> Table:
    return Table(pd.read_csv(csv), tuple(KNOBS), OBJ, MODES, DEAD)


def build_table(sweep_dir: Path = SWEEP_DIR, csv: Path = TABLE_CSV) -> pd.DataFrame:
    """Run (or continue, with ``--resume``) the 256-cell sweep, then write the table CSV."""
    args = [sys.executable, "-m", "tti_ray.sweep", str(TABLE_SPACE), "--out", str(sweep_dir)]
    if (sweep_dir / "trials.csv").exists():
        args.append("--resume")
    r = subprocess.run(args, check=False, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"table sweep failed (exit {r.returncode}); rerun to continue it")
    return write_table(sweep_dir, csv)


def write_table(sweep_dir: Path, csv: Path = TABLE_CSV) -> pd.DataFrame:
    return replay_write_table(sweep_dir, list(KNOBS), [*OBJ, DEAD[0]], EXTRA, 256, csv)


# ---------------------------------------------------------------------------------- contenders
def run_contender(name: str, table: Table, seed: int, budget: int, work: Path) -> list[dict]:
    """One replay of contender ``name`` with searcher seed ``seed``: the ended trials."""
    from benchmarks.peers import optuna_replay, syne_tune_replay

    runner, space_file, sets, mult = CONTENDERS[name]
    extra = [f"searcher.seed={seed}"] + ([] if mult is None else [f"budget.trials={budget}"])
    space = load_search_space(space_file, [*sets, *extra])
    n = space.n_configs() if mult is None else budget * mult
    tag = f"{name.replace(':', '_').replace('+', '_')}-{seed}"
    if runner == "product":
        return simulate(space, table, n, db=work / f"{tag}.db")
    if runner == "optuna":
        return optuna_replay(space, table, n)
    kind = name.split(":", 1)[1]
    return syne_tune_replay(kind, space, table, n, seed=seed, work=work / tag)


def concurrency_effect(table: Table, reps: int, work: Path,
                       kinds: Sequence[str] = ("tpe", "gp")) -> dict[str, Any]:
    """Isolate why plain Optuna's model-based samplers beat the product's: replay the product's
    searcher one trial at a time (``concurrency=1``) beside its usual 2 and beside plain Optuna's
    ``study.optimize``, same seeds. Reports the median hypervolume / the bar after the budget's
    trials and in how many reps the product at concurrency 1 proposes exactly plain Optuna's
    cells, in the same order."""
    from benchmarks.peers import optuna_replay

    ref = table.reference_point()
    budget = len(load_search_space(CONTENDERS["one_at_a_time"][1]).grid_points())
    bar = curves(run_contender("one_at_a_time", table, 0, budget, work), table, ref)
    bar_hv = bar["hypervolume"][-1]
    out: dict[str, Any] = {"budget": budget, "reps": reps}
    for kind in kinds:
        hv: dict[str, list[float]] = {"product_concurrency_2": [], "product_concurrency_1": [],
                                      "plain_optuna": []}
        same = 0
        for rep in range(reps):
            space = load_search_space(SEARCH_SPACE, [f"searcher.type={kind}",
                                                     f"searcher.seed={rep}",
                                                     f"budget.trials={budget}"])
            runs = {f"product_concurrency_{c}":
                    simulate(space, table, budget, concurrency=c,
                             db=work / f"conc{c}-{kind}-{rep}.db") for c in (2, 1)}
            runs["plain_optuna"] = optuna_replay(space, table, budget)
            for name, ended in runs.items():
                hv[name].append(curves(ended, table, ref)["hypervolume"][-1] / bar_hv)
            cells = {n: [table.cell_of(e) for e in ended] for n, ended in runs.items()}
            same += cells["product_concurrency_1"] == cells["plain_optuna"]
        out[kind] = {**{f"{n}_hv_over_bar_median": float(np.median(v)) for n, v in hv.items()},
                     "reps_where_concurrency_1_proposes_plain_optunas_cells": same}
    return out


def summarise(runs: list[dict[str, list[float]]], bar_hv: float, bar_steps: int,
              budget: int) -> dict[str, Any]:
    """Per contender: the medians (and shares of reps) that the targets read."""
    half_trials = budget // 2
    reach = [first_reach(r, bar_hv) for r in runs]
    trials_to = [t for t, _ in reach]
    frac = [None if s is None else s / bar_steps for _, s in reach]

    def med(xs: Sequence[float | None]) -> float | None:
        v = float(np.median([math.inf if x is None else x for x in xs]))
        return None if math.isinf(v) else v

    at_budget = [hv_at_trials(r, budget) / bar_hv for r in runs]
    at_half = [hv_at_trials(r, half_trials) / bar_hv for r in runs]
    st_half = [hv_at_steps(r, bar_steps / 2) / bar_hv for r in runs]
    st_full = [hv_at_steps(r, bar_steps) / bar_hv for r in runs]
    final = [r["hypervolume"][-1] / bar_hv for r in runs]
    return {
        f"hv_over_bar_after_{budget}_trials": {
            "median": float(np.median(at_budget)),
            "share_of_reps_ge_1.2": float(np.mean(np.array(at_budget) >= 1.2 - EPS))},
        f"hv_over_bar_after_{half_trials}_trials": {
            "median": float(np.median(at_half)),
            "share_of_reps_ge_1": float(np.mean(np.array(at_half) >= 1 - EPS))},
        "trials_to_reach_bar": {"median": med(trials_to), "per_rep": trials_to},
        "hv_over_bar_at_half_bar_steps": {"median": float(np.median(st_half))},
        "hv_over_bar_at_bar_steps": {"median": float(np.median(st_full))},
        "steps_fraction_to_reach_bar": {
            "median": med(frac), "per_rep": [None if f is None else round(f, 4) for f in frac]},
        "final_hv_over_bar": {"median": float(np.median(final)),
                              "trials": int(np.median([len(r["hypervolume"]) for r in runs])),
                              "steps": int(np.median([r["steps"][-1] for r in runs]))},
    }  # fmt: skip


def targets(summary: dict[str, dict], budget: int) -> dict[str, Any]:
    tpe = summary["tpe"]
    asha = summary["tpe+mo_asha"]
    st = summary["syne_tune:moasha"]
    t_reach = tpe["trials_to_reach_bar"]["median"]
    f_reach = asha["steps_fraction_to_reach_bar"]["median"]
    ours = [asha["hv_over_bar_at_half_bar_steps"]["median"], asha["hv_over_bar_at_bar_steps"]["median"]]
    theirs = [st["hv_over_bar_at_half_bar_steps"]["median"], st["hv_over_bar_at_bar_steps"]["median"]]
    return {
        "1 tpe reaches the one-at-a-time grid's hv within <= 50% of its trials": {
            "median_trials": t_reach, "limit": budget / 2,
            "met": t_reach is not None and t_reach <= budget / 2},
        "2 tpe exceeds it by >= 20% at equal trials": {
            "median_hv_over_bar": tpe[f"hv_over_bar_after_{budget}_trials"]["median"],
            "met": tpe[f"hv_over_bar_after_{budget}_trials"]["median"] >= 1.2 - EPS},
        "3 tpe+mo_asha reaches it with <= 50% of the grid's steps": {
            "median_steps_fraction": f_reach, "met": f_reach is not None and f_reach <= 0.5},
        "4 our mo_asha matches syne tune's moasha at equal steps": {
            "ours_at_half_and_full_bar_steps": ours, "syne_tune_at_half_and_full": theirs,
            "met": all(o >= t - EPS for o, t in zip(ours, theirs))},
    }  # fmt: skip


# ----------------------------------------------------------------------------- the landscape
def cell_name(table: Table, cell: tuple[float, ...]) -> str:
    on = [f"{KNOBS[p][0]}={v:g}" for p, v in zip(table.params, cell) if v != KNOBS[p][1]]
    return " + ".join(on) or "baseline"


def n_on(table: Table, cell: tuple[float, ...]) -> int:
    return sum(v != KNOBS[p][1] for p, v in zip(table.params, cell))


def landscape(table: Table, ref: np.ndarray) -> dict[str, Any]:
    """The table's feasible front; whether any combination of interventions dominates every
    single-method configuration (the one-at-a-time grid's 13), and which single-method
    configurations some combination dominates."""
    from tti_ray.fronts.dominance import dominates, non_dominated_mask

    feas = {c: np.array([table.curves[c][-1][m] for m in OBJ]) for c in table.curves
            if table.counts(c)}
    single = {c: v for c, v in feas.items() if n_on(table, c) <= 1}
    combos = {c: v for c, v in feas.items() if n_on(table, c) >= 2}
    on_front = non_dominated_mask(np.array(list(feas.values())), MODES)
    front = sorted((c for c, keep in zip(feas, on_front) if keep), key=lambda c: feas[c][0])

    def hv(cells: Sequence[tuple[float, ...]]) -> float:
        return hypervolume(np.array([feas[c] for c in cells]) if cells else np.zeros((0, 2)),
                           MODES, ref)

    dominated_by = {cell_name(table, s): [cell_name(table, c) for c, w in combos.items()
                                          if dominates(w, v, MODES)]
                    for s, v in single.items()}
    all_single = [cell_name(table, c) for c, w in combos.items()
                  if all(dominates(w, v, MODES) for v in single.values())]
    one_at_a_time_hv = hv(list(single))
    return {
        "cells": len(table.curves),
        "feasible": len(feas),
        "not_finished": sorted(cell_name(table, c) for c in table.curves
                               if table.final_status(c) != "finished"),
        "infeasible_dead_fraction_gt_0.10": sum(
            1 for c in table.curves if table.final_status(c) == "finished"
            and not table.feasible(table.curves[c][-1])),
        "single_method_feasible": len(single),
        "front": [{"cell": cell_name(table, c), "interventions_on": n_on(table, c),
                   **{m: float(feas[c][i]) for i, m in enumerate(OBJ)},
                   DEAD[0]: table.curves[c][-1][DEAD[0]]} for c in front],
        "front_hv_over_one_at_a_time": hv(front) / one_at_a_time_hv,
        "combinations_dominating_every_single_method_config": all_single,
        "single_method_configs_dominated_by_a_combination": {
            k: v for k, v in dominated_by.items() if v},
    }


# ------------------------------------------------------------------------------------ overhead
def overhead(table: Table, work: Path, sizes: tuple[int, int] = (13, 39),
             reps: int = 3) -> dict[str, Any]:
    """Wall seconds per trial of the same replay (TPE over the 4-D space; Syne Tune's MOREA,
    its closest single-fidelity searcher, and its MOASHA) in Ray Tune, the product's event
    simulation, plain Optuna and Syne Tune: the slope of wall time between ``sizes`` trials
    (median over ``reps``), and the fixed cost (intercept) apart. Ray's own start-up
    (``ray.init``) is excluded and reported apart."""
    import ray

    from benchmarks.peers import optuna_replay, syne_tune_replay

    def space(n: int, *sets: str) -> Any:
        return load_search_space(SEARCH_SPACE, [*sets, f"budget.trials={n}"])

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray_start = time.perf_counter() - t0
    runs: dict[str, Callable[[int, int], Any]] = {
        "ray_tune:tpe": lambda n, i: ray_tune_replay(space(n), table, n,
                                                     storage=work / f"rt-{n}-{i}"),
        "ray_tune:tpe+mo_asha": lambda n, i: ray_tune_replay(
            space(n, MOASHA), table, n, storage=work / f"rta-{n}-{i}"),
        "product_simulation:tpe": lambda n, i: simulate(space(n), table, n,
                                                        db=work / f"sim-{n}-{i}.db"),
        "optuna:tpe": lambda n, i: optuna_replay(space(n), table, n),
        "optuna:tpe(sqlite)": lambda n, i: optuna_replay(
            space(n), table, n, storage=f"sqlite:///{work / f'o-{n}-{i}.db'}"),
        "syne_tune:morea": lambda n, i: syne_tune_replay("morea", space(n), table, n, seed=i,
                                                         work=work / f"stm-{n}-{i}"),
        "syne_tune:moasha": lambda n, i: syne_tune_replay("moasha", space(n), table, n, seed=i,
                                                          work=work / f"sta-{n}-{i}"),
    }
    out: dict[str, Any] = {"ray_init_s": ray_start, "sizes": list(sizes), "reps": reps}
    try:
        for name, fn in runs.items():
            walls: dict[int, list[float]] = {n: [] for n in sizes}
            fn(sizes[0], reps)  # warm-up (imports, first compilations), not timed
            for i in range(reps):
                for n in sizes:
                    t = time.perf_counter()
                    ended = fn(n, i)
                    walls[n].append(time.perf_counter() - t)
                    if len(ended) != n:
                        raise RuntimeError(f"{name}: {len(ended)} of {n} trials ended")
            med = {n: float(np.median(w)) for n, w in walls.items()}
            a, b = sizes
            slope = (med[b] - med[a]) / (b - a)
            out[name] = {"s_per_trial": slope, "fixed_s": med[a] - slope * a,
                         "median_wall_s": {str(n): v for n, v in med.items()}}
            print(f"overhead {name}: {slope * 1e3:.1f} ms/trial", flush=True)
    finally:
        ray.shutdown()
    return out


# -------------------------------------------------------------------------------------- report
def plot(res: dict, table: Table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(18, 5.2))
    bar, budget = res["bar"]["hypervolume"], res["budget"]
    styles = {"product": "-", "optuna": "--", "syne_tune": ":"}
    colours = plt.get_cmap("tab20")
    for j, (name, s) in enumerate(res["contenders"].items()):
        ls, col = styles[CONTENDERS[name][0]], colours(j % 20)
        med = s["hv_vs_trials"]["median"]
        if CONTENDERS[name][3] in (None, 1):
            x = np.arange(1, len(med) + 1)
            a.plot(x, np.array(med) / bar, ls=ls, lw=2, label=name, color=col)
            if name in ("tpe", "one_at_a_time"):
                a.fill_between(x, np.array(s["hv_vs_trials"]["q25"]) / bar,
                               np.array(s["hv_vs_trials"]["q75"]) / bar, alpha=0.15,
                               color=col)
        grid = np.linspace(0, 2 * res["bar"]["steps"], 81)
        m = [np.median([hv_at_steps(r, g) for r in s["runs"]]) / bar for g in grid]
        b.plot(grid / res["bar"]["steps"], m, ls=ls, lw=2, label=name, color=col)
    for ax in (a, b):
        ax.axhline(1.0, color="k", lw=1)
        ax.axhline(1.2, color="grey", lw=1, ls="--")
    a.axvline(budget / 2, color="grey", ls=":", lw=1)
    b.axvline(0.5, color="grey", ls=":", lw=1)
    a.set(xlabel="trials", ylabel="hypervolume / one-at-a-time grid's",
          title=f"vs trials (median; IQR for tpe, grid; {res['reps']} seeds)", xlim=(1, 16))
    b.set(xlabel="training steps / one-at-a-time grid's total", ylabel="median hv / grid's",
          title="vs training steps (all contenders)")
    a.legend(fontsize=7, ncol=2)
    b.legend(fontsize=7, ncol=2)
    cells = [cl for cl in table.curves if table.final_status(cl) == "finished"]
    pts = np.array([[table.curves[cl][-1][m] for m in OBJ] for cl in cells])
    feas = np.array([table.counts(cl) for cl in cells])
    k = np.array([n_on(table, cl) for cl in cells])
    sc = c.scatter(pts[feas, 0], pts[feas, 1], c=k[feas], cmap="viridis", s=18,
                   label="feasible cell (colour: interventions on)")
    c.scatter(pts[~feas, 0], pts[~feas, 1], marker="x", c="lightgrey", s=14,
              label="dead fraction > 0.10")
    oat = np.array([k_ <= 1 for k_ in k])
    c.scatter(pts[feas & oat, 0], pts[feas & oat, 1], facecolors="none", edgecolors="r", s=60,
              label="one-at-a-time cells")
    fr = res["landscape"]["front"]
    c.plot([f[OBJ[0]] for f in fr], [f[OBJ[1]] for f in fr], "k-", lw=1, label="table's front")
    fig.colorbar(sc, ax=c, label="interventions on")
    c.set(xlabel="val perplexity", ylabel="calibrated polysemanticity",
          title=f"the {len(table.curves)} cells (final, step {table.max_steps})",
          xscale="log")
    c.legend(fontsize=7)
    fig.suptitle("joint_search: TopK × anti-poly × L1 × orthogonality, calibrated objective, "
                 "dead fraction ≤ 0.10")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_benchmark(table: Table, reps: int, work: Path,
                  names: Sequence[str] | None = None) -> dict[str, Any]:
    """Replay every contender ``reps`` times; summarise against the one-at-a-time grid."""
    ref = table.reference_point()
    budget = len(load_search_space(CONTENDERS["one_at_a_time"][1]).grid_points())
    res: dict[str, Any] = {
        "problem": str(TABLE_SPACE.relative_to(REPO)),
        "table": {"cells": len(table.curves), "max_steps": table.max_steps,
                  "levels": {p: table.values[p].tolist() for p in table.params}},
        "objectives": list(OBJ), "constraint": f"{DEAD[0]} <= {DEAD[1]}",
        "reference_point": dict(zip(OBJ, ref.tolist())),
        "reference_rule": "per objective: worst final value over the feasible cells + 10% "
                          "of their range",
        "counting_rule": "a trial counts when it finished every step and is feasible",
        "budget": budget, "reps": reps, "contenders": {},
    }  # fmt: skip
    for name in names or CONTENDERS:
        t0 = time.perf_counter()
        runs, statuses = [], {}
        for rep in range(reps):
            ended = run_contender(name, table, rep, budget, work)
            for e in ended:
                statuses[e["status"]] = statuses.get(e["status"], 0) + 1
            runs.append(curves(ended, table, ref))
        res["contenders"][name] = {
            "runner": CONTENDERS[name][0], "runs": runs, "status_counts": statuses,
            "hv_vs_trials": band([r["hypervolume"] for r in runs]),
            "wall_s_per_rep": (time.perf_counter() - t0) / reps}
        print(f"{name}: {reps} reps, {statuses}, {res['contenders'][name]['wall_s_per_rep']:.2f}"
              " s/rep", flush=True)
    bar = res["contenders"]["one_at_a_time"]["runs"][0]
    res["bar"] = {"hypervolume": bar["hypervolume"][-1], "steps": bar["steps"][-1],
                  "trials": len(bar["hypervolume"])}
    res["summary"] = {n: summarise(s["runs"], bar["hypervolume"][-1], bar["steps"][-1], budget)
                      for n, s in res["contenders"].items()}

    def rank(key: str) -> list[list[Any]]:  # never-reached (None) last
        vals = [(n, s[key]["median"]) for n, s in res["summary"].items()]
        return [[n, v] for n, v in sorted(vals, key=lambda nv: (nv[1] is None, nv[1] or 0))]

    res["ranking"] = {"fewest_trials_to_reach_bar (median)": rank("trials_to_reach_bar"),
                      "least_steps_to_reach_bar (median fraction of the grid's)":
                          rank("steps_fraction_to_reach_bar")}
    if all(n in res["summary"] for n in ("tpe", "tpe+mo_asha", "syne_tune:moasha")):
        res["targets"] = targets(res["summary"], budget)
    res["landscape"] = landscape(table, ref)
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--table", type=Path, default=TABLE_CSV)
    p.add_argument("--build-table", action="store_true",
                   help=f"run (or continue) the table sweep into {SWEEP_DIR.relative_to(REPO)}")
    p.add_argument("--from-sweep", type=Path, default=None,
                   help="write the table CSV from a finished table sweep directory first")
    p.add_argument("--no-overhead", action="store_true", help="skip the overhead measurement")
    p.add_argument("--concurrency-check", action="store_true",
                   help="only replay TPE and GP at concurrency 1 and 2 beside plain Optuna "
                        "(writes joint_search_concurrency.json)")
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.build_table:
        build_table(csv=args.table)
    elif args.from_sweep:
        write_table(args.from_sweep, args.table)
    if not args.table.exists():
        raise SystemExit(f"{args.table}: no table; build it with --build-table")
    table = load_table(args.table)
    t0 = time.time()
    if args.concurrency_check:
        with tempfile.TemporaryDirectory(prefix="tti_joint_") as tmp:
            res = concurrency_effect(table, args.reps, args.work or Path(tmp))
        res["wall_s"] = time.time() - t0
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "joint_search_concurrency.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    with tempfile.TemporaryDirectory(prefix="tti_joint_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        res = run_benchmark(table, args.reps, work)
        if not args.no_overhead:
            res["overhead_per_trial"] = overhead(table, work / "overhead")
    res["wall_s"] = time.time() - t0
    res["environment"] = environment()
    args.out.mkdir(parents=True, exist_ok=True)
    plot(res, table, args.out / "joint_search.png")
    (args.out / "joint_search.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({"summary": {n: {k: v["median"] for k, v in s.items()}
                                  for n, s in res["summary"].items()},
                      "targets": res.get("targets"), "ranking": res["ranking"],
                      "landscape": {k: v for k, v in res["landscape"].items() if k != "front"}},
                     indent=1, default=str))


if __name__ == "__main__":
    main()
