"""Hypervolume vs trials (and vs training steps) for grid, random, TPE, NSGA-II and TPE + MO-ASHA
early stopping, at equal budgets, on a reduced tiny model (``benchmarks/spaces/efficiency.yaml``).

Each searcher runs a real sweep (``python -m tti_ray.sweep``, local Ray): the grid over its 4×4
points, the others over the continuous box those points sample (``efficiency_continuous.yaml``);
the hypervolume of every run is computed against ONE reference point (per objective: the worst value
seen by any searcher + 10% of the range) so the curves are comparable. Compute is counted in
training steps (an early-stopped trial counts the steps it ran).

Targets (issue 4): TPE at half the budget reaches the grid's full-budget hypervolume; MO-ASHA
reaches it with ≤ 50% of the grid's compute.

    python benchmarks/sweep_efficiency.py [--budget 16] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tti_ray.analysis.hypervolume import hypervolume, reference_point
from tti_ray.analysis.plots import plot_hypervolume_history

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "benchmarks" / "spaces"
OBJ = ["val/perplexity", "val/polysemanticity/mean"]
MODES = ["min", "min"]

# name: (space file, --set overrides, budget multiplier). The grid runs its 16 points; the
# searchers get the continuous box the grid samples. MO-ASHA stops most trials early, so it gets
# twice the trials and is judged by the training steps it spends (its "compute").
SEARCHERS = {
    "grid": ("efficiency.yaml", [], 1),
    "random": ("efficiency_continuous.yaml", ["searcher.type=random"], 1),
    "tpe": ("efficiency_continuous.yaml", ["searcher.type=tpe"], 1),
    "nsga2": ("efficiency_continuous.yaml", ["searcher.type=nsga2"], 1),
    "tpe+mo_asha": ("efficiency_continuous.yaml",
                    ["searcher.type=tpe",
                     "scheduler={type: mo_asha, grace_steps: 30, reduction_factor: 3}"], 2),
}


def run(name: str, space: str, sets: list[str], budget: int, work: Path) -> pd.DataFrame:
    out = work / name.replace("+", "_")
    args = [sys.executable, "-m", "tti_ray.sweep", str(SPACES / space), "--out", str(out),
            "--num-cpus", "2", "--no-tracking", "--set", f"budget.trials={budget}"]
    for s in sets:
        args += ["--set", s]
    t0 = time.time()
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
    df = pd.read_csv(out / "trials.csv").sort_values("completed_at")
    df.attrs["wall_s"] = time.time() - t0
    return df


def curves(df: pd.DataFrame, ref: np.ndarray) -> dict[str, list[float]]:
    hv, steps, pts = [], [], []
    total = 0
    for _, row in df.iterrows():
        total += int(row["steps"])
        if row["status"] == "finished":
            pts.append([row[m] for m in OBJ])
        hv.append(hypervolume(np.array(pts) if pts else np.zeros((0, 2)), MODES, ref))
        steps.append(total)
    return {"hypervolume": hv, "steps": steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=int, default=16)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=Path("/tmp/tti_sweep_efficiency"))
    args = p.parse_args()
    frames = {n: run(n, sp, s, args.budget * mult, args.work)
              for n, (sp, s, mult) in SEARCHERS.items()}
    allpts = np.concatenate([f[f["status"] == "finished"][OBJ].to_numpy() for f in frames.values()])
    ref = reference_point(allpts, MODES)
    res: dict = {"reference_point": dict(zip(OBJ, ref.tolist())), "budget": args.budget,
                 "reference_rule": "per objective: worst over all searchers + 10% of range",
                 "loadavg": os.getloadavg(), "searchers": {}}
    for name, df in frames.items():
        c = curves(df, ref)
        res["searchers"][name] = {**c, "wall_s": df.attrs["wall_s"],
                                  "status_counts": df["status"].value_counts().to_dict()}
    grid = res["searchers"]["grid"]
    g_hv, g_steps = grid["hypervolume"][-1], grid["steps"][-1]

    def first_reach(name: str) -> dict:
        s = res["searchers"][name]
        for i, (h, st) in enumerate(zip(s["hypervolume"], s["steps"])):
            if h >= g_hv * (1 - 1e-9):
                return {"trials": i + 1, "steps": st, "fraction_of_grid_steps": st / g_steps}
        return {"trials": None, "steps": None, "fraction_of_grid_steps": None}

    res["grid_final_hypervolume"] = g_hv
    half = args.budget // 2
    res["hv_over_grid_at_half_grid_compute"] = {
        n: max([h for h, st in zip(s["hypervolume"], s["steps"]) if st <= g_steps / 2] or [0.0])
        / g_hv for n, s in res["searchers"].items()}
    res["hv_over_grid_after_half_budget_trials"] = {
        n: s["hypervolume"][min(half, len(s["hypervolume"])) - 1] / g_hv
        for n, s in res["searchers"].items()}
    res["reach_grid_hv"] = {n: first_reach(n) for n in SEARCHERS if n != "grid"}
    tpe = res["reach_grid_hv"]["tpe"]
    res["targets"] = {
        "tpe_reaches_grid_hv_within_half_budget": tpe["trials"] is not None
        and tpe["trials"] <= args.budget // 2,
        "mo_asha_reaches_grid_hv_with_le_50pct_compute": (
            res["reach_grid_hv"]["tpe+mo_asha"]["fraction_of_grid_steps"] or 9) <= 0.5,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_efficiency.json").write_text(json.dumps(res, indent=1, default=str))
    plot_hypervolume_history({n: s["hypervolume"] for n, s in res["searchers"].items()},
                             args.out / "sweep_efficiency.png",
                             title="hypervolume vs trials (equal budgets)")
    print(json.dumps({"reach_grid_hv": res["reach_grid_hv"], "targets": res["targets"]}, indent=1))


if __name__ == "__main__":
    main()
