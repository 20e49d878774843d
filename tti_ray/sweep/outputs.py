"""The sweep's output files, rewritten from the trial table whenever a trial ends: ``pareto.csv``,
``pareto.json``, ``hypervolume.json``, ``front.png`` (+ ``summary.csv`` with a multi-seed
baseline, ``effects.csv`` for a factorial grid, ``phase_diagram.png`` for a 2-parameter toy
superposition sweep). The numbers come from :mod:`tti_ray.fronts`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from tti_ray.fronts.effects import main_effects, summary_vs_baseline
from tti_ray.fronts.figures import plot_front
from tti_ray.fronts.tables import hypervolume_report, pareto_json, pareto_table
from tti_ray.io import atomic_write_text
from tti_ray.sweep.space import SearchSpace
from tti_ray.toy.superposition import phase_diagram
from tti_ray.trials import TrialStatus, config_id


def write_outputs(space: SearchSpace, exp_dir: Path, df: pd.DataFrame) -> dict[str, Any]:
    """pareto.csv/json, hypervolume.json, front.png from the trials table."""
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
    done = (df[(df["status"] == TrialStatus.FINISHED) & df["toy/phase"].notna()]
            if "toy/phase" in df else [])
    if len(done):
        x, y = (p.removeprefix("toy.") for p in params)
        records = [{x: r[params[0]], y: r[params[1]], "toy/phase": r["toy/phase"]}
                   for _, r in done.iterrows()]
        phase_diagram(records, out, x=x, y=y, title=f"{name}: phase of the last feature")
