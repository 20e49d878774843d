"""Comparisons over a trials table: each configuration against the baseline over its seeds
(:func:`summary_vs_baseline`: mean, std, 95% CI, Welch's t-test, Holm-adjusted p, Cohen's d) and
the main effects of a factorial grid (:func:`main_effects`). The statistics are
:mod:`tti_ray.fronts.stats`; the table conventions (columns, statuses) :mod:`tti_ray.fronts.tables`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tti_ray.cli import UserError
from tti_ray.fronts.dominance import Objective
from tti_ray.fronts.stats import aggregate, holm, welch_t_test
from tti_ray.fronts.tables import (
    CONFIG_ID,
    FINISHED,
    STATUS,
    _check_status,
    _require,
    searched_parameters,
)

SUMMARY_COLUMNS = [
    CONFIG_ID, "metric", "is_baseline", "n", "mean", "std", "ci95", "baseline_n", "baseline_mean",
    "diff", "diff_pct", "t", "dof", "p_value", "p_holm", "cohens_d",
]  # fmt: skip


def summary_vs_baseline(
    df: pd.DataFrame,
    metrics: Sequence[str | Objective] | str,
    baseline_config_id: Any,
    *,
    params: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Each configuration vs the baseline configuration, per metric, over finished trials.

    One row per (config, metric): seed ``n``, ``mean``, ``std``, ``ci95`` (half-width), the
    baseline's ``n`` and mean, ``diff`` = mean - baseline mean, ``diff_pct`` = 100 * diff /
    |baseline mean| (seed 001's "Δ%"; NaN for a zero baseline mean), Welch's ``t``, ``dof``,
    two-sided ``p_value``, ``p_holm`` (Holm-adjusted over the configurations of that metric) and
    pooled ``cohens_d`` (conventions in :mod:`tti_ray.fronts.stats`: NaN where a side has
    fewer than two finite seeds), then the searched parameters. The baseline's own rows have
    ``is_baseline`` True and NaN tests. ``config_id`` s are matched as strings.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    names = [m.metric if isinstance(m, Objective) else m for m in metrics]
    if not names:
        raise UserError("no metrics given")
    _check_status(df)
    _require(df, [CONFIG_ID, *names])
    params = searched_parameters(df) if params is None else list(params)
    _require(df, params)
    fin = df[df[STATUS].astype(str) == FINISHED]
    key = fin[CONFIG_ID].astype(str)
    base_key = str(baseline_config_id)
    if base_key not in set(df[CONFIG_ID].astype(str)):
        raise UserError(
            f"baseline config_id {baseline_config_id!r} not in the table "
            f"(config_ids: {sorted(set(df[CONFIG_ID].astype(str)))})"
        )
    rows: list[dict[str, Any]] = []
    for m in names:
        vals = pd.to_numeric(fin[m], errors="coerce")
        base = vals[key == base_key].to_numpy(np.float64)
        b = aggregate(base)
        first = len(rows)
        for cid, g in fin.groupby(CONFIG_ID, sort=False):
            x = vals.loc[g.index].to_numpy(np.float64)
            a = aggregate(x)
            is_base = str(cid) == base_key
            w = welch_t_test(x, base)
            row = {
                CONFIG_ID: cid, "metric": m, "is_baseline": is_base, "n": a.n, "mean": a.mean,
                "std": a.std, "ci95": a.ci_half, "baseline_n": b.n, "baseline_mean": b.mean,
                "diff": w.diff, "t": w.statistic, "dof": w.dof, "p_value": w.pvalue,
                "cohens_d": w.cohens_d,
            }  # fmt: skip
            row["diff_pct"] = _pct(w.diff, b.mean)
            if is_base:
                row.update(
                    diff=0.0 if b.n else np.nan,
                    diff_pct=0.0 if b.n else np.nan,
                    t=np.nan,
                    dof=np.nan,
                    p_value=np.nan,
                    cohens_d=np.nan,
                )
            row.update({c: g[c].iloc[0] for c in params})
            rows.append(row)
        adj = holm([r["p_value"] for r in rows[first:]])
        for r, p in zip(rows[first:], adj, strict=True):
            r["p_holm"] = p
    return pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, *params])


def _pct(diff: float, ref: float) -> float:
    """100 * diff / |ref|; NaN when ``ref`` is 0 or not finite."""
    if not math.isfinite(ref) or ref == 0:
        return math.nan
    return 100.0 * diff / abs(ref)


EFFECT_COLUMNS = [
    "parameter", "level", "reference_level", "metric", "n", "mean", "std", "reference_n",
    "reference_mean", "diff", "diff_pct", "t", "dof", "p_value", "p_holm", "cohens_d",
]  # fmt: skip


def main_effects(
    df: pd.DataFrame,
    metrics: Sequence[str | Objective] | str,
    params: Sequence[str],
    reference: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Marginal (main) effect of each searched parameter in a factorial/grid sweep.

    For parameter ``p`` with levels ``v_0 .. v_k`` (``v_0`` = ``reference[p]``, e.g. the baseline's
    value, else the first level in table order; a sweep passes the baseline's value, else the
    first value its file lists), each other level ``v`` gets one row per metric:
    every finished trial with ``p == v`` (pooled over all other parameters and seeds) against
    every finished trial with ``p == v_0``: ``n``/``mean``/``std`` of each side, ``diff``
    = mean(v) - mean(v_0), ``diff_pct`` = 100 * diff / |mean(v_0)|, Welch's ``t``, ``dof``,
    two-sided ``p_value``, pooled ``cohens_d``, and ``p_holm`` (Holm over all rows of that
    metric). In a balanced full factorial this is the classical main-effect contrast; the other
    factors stay in the variance, so the test is conservative next to an ANOVA. Parameters with a
    single level give no rows. Levels are compared as they appear in the table (no rounding).
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    names = [m.metric if isinstance(m, Objective) else m for m in metrics]
    _check_status(df)
    _require(df, [*names, *params])
    fin = df[df[STATUS].astype(str) == FINISHED]
    # per parameter: (reference level, its rows, [(other level, its rows)]), shared by all metrics
    contrasts = []
    for p in params:
        levels = list(dict.fromkeys(fin[p].tolist()))
        if len(levels) < 2:
            continue
        ref = reference[p] if reference is not None and p in reference else levels[0]
        ref_mask = _level_mask(fin[p], ref)
        if not ref_mask.any():
            continue
        others = [(v, m) for v in levels if not (m := _level_mask(fin[p], v)).equals(ref_mask)]
        contrasts.append((p, ref, ref_mask, others))
    rows: list[dict[str, Any]] = []
    for m in names:
        vals = pd.to_numeric(fin[m], errors="coerce")
        first = len(rows)
        for p, ref, ref_mask, others in contrasts:
            base = vals[ref_mask].to_numpy(np.float64)
            b = aggregate(base)
            for v, mask in others:
                x = vals[mask].to_numpy(np.float64)
                a = aggregate(x)
                w = welch_t_test(x, base)
                rows.append({
                    "parameter": p, "level": v, "reference_level": ref, "metric": m, "n": a.n,
                    "mean": a.mean, "std": a.std, "reference_n": b.n, "reference_mean": b.mean,
                    "diff": w.diff, "diff_pct": _pct(w.diff, b.mean), "t": w.statistic,
                    "dof": w.dof, "p_value": w.pvalue, "cohens_d": w.cohens_d,
                })  # fmt: skip
        adj = holm([r["p_value"] for r in rows[first:]])
        for r, q in zip(rows[first:], adj, strict=True):
            r["p_holm"] = q
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def _level_mask(col: pd.Series, value: Any) -> pd.Series:
    """Rows whose value equals ``value`` (numbers compared as floats, anything else as strings)."""
    try:
        return pd.to_numeric(col, errors="raise").astype(float) == float(value)
    except (TypeError, ValueError):
        return col.astype(str) == str(value)

