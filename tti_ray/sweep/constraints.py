"""Constraints of a search space: which trials count, and what Optuna is told about them.

A constraint bounds one metric a trial reports, absolutely (``max``/``min``) or relative to the
``baseline`` configuration (``max_ratio_to_baseline``/``min_ratio_to_baseline``: the metric's
bound is the ratio times the baseline's value, its seed mean with several seeds). Each
constraint gives a value c in Optuna's convention (feasible iff every c ≤ 0), which the
searcher stores on the Optuna trial with ``Trial.set_constraint`` before telling it. Optuna 5's
TPE, NSGA-II and GP samplers read those values (``FrozenTrial.constraints``) to keep sampling
out of infeasible regions; ``set_constraint`` is what Optuna 5 recommends in place of the
deprecated ``constraints_func`` argument, and it works for trials told from outside, as here.

    max: v − max        min: min − v        max_ratio_to_baseline: v − r·b        min_…: r·b − v

A trial whose metric is missing or not finite gets c = +inf (infeasible). A relative constraint
is undecidable until the baseline has finished: its value is ``None`` until then (the trial's
``feasible`` cell in trials.csv stays empty, and the searcher holds the trial back from Optuna
until the baseline ends). If the baseline ends without finishing, every relative constraint
is violated (+inf): the budget it states cannot be met by an unmeasured reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from pydantic import Field, model_validator

from tti_ray.config.schema import Section
from tti_ray.trials import TERMINAL, TrialStatus

INF = float("inf")


class Constraint(Section):
    """One bound on a reported metric: exactly one of ``max``, ``min``,
    ``max_ratio_to_baseline``, ``min_ratio_to_baseline`` (see :mod:`tti_ray.sweep.constraints`)."""

    metric: str
    max: float | None = None
    min: float | None = None
    max_ratio_to_baseline: float | None = Field(None, gt=0)
    min_ratio_to_baseline: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_bound(self) -> Constraint:
        given = [k for k in ("max", "min", "max_ratio_to_baseline", "min_ratio_to_baseline")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of max, min, max_ratio_to_baseline, "
                             f"min_ratio_to_baseline (got {given or 'none'})")
        v = getattr(self, given[0])
        if not math.isfinite(v):
            raise ValueError(f"{given[0]}: must be finite, got {v}")
        return self

    @property
    def relative(self) -> bool:
        return self.max_ratio_to_baseline is not None or self.min_ratio_to_baseline is not None

    @property
    def upper(self) -> bool:
        """An upper bound (``max``/``max_ratio_to_baseline``)."""
        return self.max is not None or self.max_ratio_to_baseline is not None

    @property
    def bound(self) -> float | None:
        return self.max if self.max is not None else self.min

    @property
    def ratio(self) -> float:
        r = self.max_ratio_to_baseline or self.min_ratio_to_baseline
        assert r is not None
        return r

    def describe(self) -> str:
        op = "<=" if self.upper else ">="
        rhs = f"{self.ratio} x baseline" if self.relative else f"{self.bound}"
        return f"{self.metric} {op} {rhs}"


#: searchers whose Optuna samplers read trials' constraint values (``FrozenTrial.constraints``)
CONSTRAINED_SEARCHERS = ("tpe", "nsga2", "gp")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def constraint_values(
    constraints: Sequence[Any],
    metrics: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
) -> list[float] | None:
    """Optuna-convention values (≤ 0 feasible) of ``constraints`` (``space.constraints``) for a
    trial's ``metrics``. ``baseline``: the baseline's metrics, ``None`` while it has not ended
    (then ``None`` if any constraint is relative), ``{}`` if it ended unfinished."""
    out: list[float] = []
    for c in constraints:
        v = metrics.get(c.metric)
        if c.relative:
            if baseline is None:
                return None
            b = baseline.get(c.metric)
            bound = c.ratio * float(b) if _finite(b) else None
        else:
            bound = c.bound
        if bound is None or not _finite(v):
            out.append(INF)
        else:
            out.append(float(v) - bound if c.upper else bound - float(v))
    return out


def feasible(values: Sequence[float] | None) -> bool | None:
    return None if values is None else all(v <= 0 for v in values)


def baseline_metrics(
    df: pd.DataFrame, baseline_config_id: str | None, metrics: Sequence[str]
) -> dict[str, float] | None:
    """The baseline's metric means over its finished trials in a trials table; ``None`` while
    any of its trials is still to end, ``{}`` if none finished."""
    if baseline_config_id is None or "config_id" not in df.columns:
        return None
    rows = df[df["config_id"].astype(str) == baseline_config_id]
    terminal = rows["status"].isin(TERMINAL)
    if rows.empty or not terminal.all():
        return None
    fin = rows[rows["status"] == TrialStatus.FINISHED]
    if fin.empty:
        return {}
    return {m: float(pd.to_numeric(fin[m], errors="coerce").mean())
            for m in metrics if m in fin.columns}


def feasible_column(
    df: pd.DataFrame, constraints: Sequence[Any], baseline_config_id: str | None
) -> list[bool | None]:
    """trials.csv's ``feasible`` column: True/False for every trial that reported metrics (all
    True without constraints), None (empty) for one with none yet or awaiting the baseline."""
    if df.empty:
        return []
    needs_base = any(c.relative for c in constraints)
    metrics = [c.metric for c in constraints]
    base = baseline_metrics(df, baseline_config_id, metrics) if needs_base else None
    out: list[bool | None] = []
    for rec in df.to_dict("records"):
        if rec.get("status") in (TrialStatus.PENDING,) or not any(
                _finite(rec.get(c)) for c in df.columns if "/" in str(c)):
            out.append(None)
            continue
        out.append(feasible(constraint_values(constraints, rec, base)))
    return out
