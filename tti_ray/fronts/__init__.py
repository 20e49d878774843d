"""Pareto fronts, hypervolume and multi-seed statistics: the pure core that the sweep (its output
files, MO-ASHA) and the user-facing ``analysis`` CLIs (top-level ``analysis/``) share.

* :mod:`~tti_ray.fronts.dominance`: objectives, dominance, non-dominated sorting, MO-ASHA ranking.
* :mod:`~tti_ray.fronts.hypervolume`: exact hypervolume, the reference-point rule, history.
* :mod:`~tti_ray.fronts.stats`: multi-seed mean/std/CI, Welch's t-test, Cohen's d.
* :mod:`~tti_ray.fronts.tables`: the same over a ``trials.csv`` DataFrame (pandas).
* :mod:`~tti_ray.fronts.effects`: configurations vs the baseline, a grid's main effects (pandas).
* :mod:`~tti_ray.fronts.figures`: front and hypervolume PNGs (matplotlib).

The first three need only numpy at import (the sweep scheduler uses them inside Ray workers);
the names of ``tables``, ``effects`` and ``figures`` are imported on first access, so ``import
tti_ray.fronts`` does not pull in pandas or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

from tti_ray.fronts.dominance import (
    Objective,
    crowding_distance,
    dominates,
    front_ranks,
    non_dominated_mask,
    non_dominated_sort,
    parse_objectives,
    rank_order,
    select_top,
    to_minimization,
)
from tti_ray.fronts.hypervolume import (
    describe_reference_rule,
    hypervolume,
    hypervolume_history,
    reference_point,
)
from tti_ray.fronts.stats import Aggregate, WelchResult, aggregate, cohens_d, holm, welch_t_test

_LAZY = {
    "aggregate_by_config": "tables",
    "finished_trials": "tables",
    "hypervolume_report": "tables",
    "pareto_json": "tables",
    "pareto_table": "tables",
    "searched_parameters": "tables",
    "summary_vs_baseline": "effects",
    "plot_front": "figures",
    "plot_hypervolume_history": "figures",
}

__all__ = [
    "Aggregate",
    "Objective",
    "WelchResult",
    "aggregate",
    "cohens_d",
    "crowding_distance",
    "describe_reference_rule",
    "dominates",
    "front_ranks",
    "holm",
    "hypervolume",
    "hypervolume_history",
    "non_dominated_mask",
    "non_dominated_sort",
    "parse_objectives",
    "rank_order",
    "reference_point",
    "select_top",
    "to_minimization",
    "welch_t_test",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tti_ray.fronts.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tti_ray.fronts' has no attribute {name!r}")
