"""Pareto tables, hypervolume reports and baseline comparisons over a ``trials.csv`` DataFrame.

**The trials.csv format** (written by the sweep, read by ``analysis``): one row per trial with
``trial_id``, ``config_id``, ``status`` (one of :data:`STATUSES`), ``seed``, one column per
searched parameter named by its dotted config path (``interventions.anti_poly.coef``), one column
per metric named exactly as the metric (``val/perplexity``), and ``checkpoint``. Optional:
``completed_at`` or ``trial_index`` (completion order for the hypervolume history) and ``method``
(a label the front plot colours by). Searched parameters are recognised as the columns whose
name contains a ``.`` and no ``/`` (metric names have slashes, config paths have dots), unless
given explicitly with ``params=``.

Only ``finished`` trials with every objective finite enter a front or a hypervolume: diverged,
early-stopped, failed, running and pending trials are counted but never on the front. With a
``feasible`` column (a sweep with ``constraints``), a finished trial must also be feasible: rows
with ``feasible`` false (a constraint violated) or empty (not decidable yet, e.g. a
relative constraint whose baseline has not finished) are counted as infeasible and left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tti_ray.cli import UserError
from tti_ray.fronts.dominance import Objective, front_ranks, parse_objectives
from tti_ray.fronts.hypervolume import (
    DEFAULT_MARGIN,
    DEFAULT_RULE,
    describe_reference_rule,
    hypervolume,
    hypervolume_history,
    reference_point,
)
from tti_ray.fronts.stats import aggregate
from tti_ray.trials import STATUSES, TERMINAL, TrialStatus

TRIAL_ID, CONFIG_ID, STATUS, SEED, CHECKPOINT = (
    "trial_id",
    "config_id",
    "status",
    "seed",
    "checkpoint",
)
METHOD = "method"
FEASIBLE = "feasible"
FINISHED = TrialStatus.FINISHED.value
ORDER_COLUMNS = ("completed_at", "trial_index")  # first one present gives the completion order
RESERVED = (TRIAL_ID, CONFIG_ID, STATUS, SEED, CHECKPOINT, METHOD, FEASIBLE, *ORDER_COLUMNS)

ObjectivesLike = str | Iterable[str | Objective]
ELIGIBLE = ("finished trials with every objective finite and, where trials.csv has a 'feasible' "
            "column, feasible (every constraint met); infeasible trials are counted, not used")


def _require(df: pd.DataFrame, cols: Iterable[str], what: str = "trials table") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise UserError(f"{what} has no column(s) {missing}; columns are {list(df.columns)}")


def _check_status(df: pd.DataFrame) -> None:
    _require(df, [STATUS])
    bad = sorted(set(df[STATUS].dropna().astype(str)) - set(STATUSES))
    if bad or df[STATUS].isna().any():
        raise UserError(
            f"unknown trial status(es) {bad or ['<missing>']}; expected one of {STATUSES}"
        )


def searched_parameters(df: pd.DataFrame) -> list[str]:
    """The searched-parameter columns: dotted config paths (a ``.`` and no ``/``), table order."""
    return [
        c
        for c in df.columns
        if isinstance(c, str) and "." in c and "/" not in c and c not in RESERVED
    ]


def feasible_mask(df: pd.DataFrame) -> np.ndarray:
    """Per row: feasible (True when there is no ``feasible`` column; else the column read as a
    boolean, with empty/unknown values False)."""
    if FEASIBLE not in df.columns:
        return np.ones(len(df), bool)
    col = df[FEASIBLE]
    return col.map(lambda v: v is True or str(v).strip().lower() in ("true", "1", "1.0")
                   ).to_numpy(bool)


def finished_trials(
    df: pd.DataFrame, objectives: ObjectivesLike, *, feasible_only: bool = True
) -> pd.DataFrame:
    """The rows that can be on a front: ``status == finished``, every objective finite and
    (``feasible_only``, see :func:`feasible_mask`) feasible."""
    objs = parse_objectives(objectives)
    _check_status(df)
    metrics = [o.metric for o in objs]
    _require(df, metrics)
    vals = df[metrics].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    keep = (df[STATUS].astype(str) == FINISHED).to_numpy() & np.isfinite(vals).all(1)
    if feasible_only:
        keep &= feasible_mask(df)
    return df.loc[keep]


def n_infeasible(df: pd.DataFrame) -> int:
    """Finished trials left out of fronts and hypervolumes because they are not feasible."""
    if FEASIBLE not in df.columns or STATUS not in df.columns:
        return 0
    fin = (df[STATUS].astype(str) == FINISHED).to_numpy()
    return int((fin & ~feasible_mask(df)).sum())


def _points(df: pd.DataFrame, objs: Sequence[Objective]) -> np.ndarray:
    cols = df[[o.metric for o in objs]].apply(pd.to_numeric, errors="coerce")
    return cols.to_numpy(np.float64, copy=True)


def _completion_order(df: pd.DataFrame) -> pd.DataFrame:
    for col in ORDER_COLUMNS:
        if col in df.columns:
            return df.sort_values(col, kind="stable", na_position="last")
    return df


def aggregate_by_config(
    df: pd.DataFrame,
    metrics: Sequence[str],
    *,
    params: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per ``config_id`` (first-appearance order) over the rows given.

    Columns: ``config_id``; per metric ``<metric>`` (mean over seeds), ``<metric>_std`` (ddof=1)
    and ``<metric>_ci95`` (half-width of the Student-t CI; NaN for one seed); ``n_seeds`` (rows
    in the group); ``trial_ids`` (list); the searched parameters and ``method`` (first value in
    the group). Non-finite metric values are left out of that metric's statistics.
    """
    _require(df, [CONFIG_ID, TRIAL_ID, *metrics])
    params = searched_parameters(df) if params is None else list(params)
    _require(df, params)
    extra = [METHOD] if METHOD in df.columns else []
    rows: list[dict[str, Any]] = []
    for cid, g in df.groupby(CONFIG_ID, sort=False, dropna=False):
        row: dict[str, Any] = {CONFIG_ID: cid}
        for m in metrics:
            a = aggregate(pd.to_numeric(g[m], errors="coerce").to_numpy(np.float64), confidence)
            row[m], row[f"{m}_std"], row[f"{m}_ci95"] = a.mean, a.std, a.ci_half
        row["n_seeds"] = len(g)
        row["trial_ids"] = list(g[TRIAL_ID])
        for c in (*params, *extra):
            row[c] = g[c].iloc[0]
        rows.append(row)
    cols = [CONFIG_ID, *(f"{m}{s}" for m in metrics for s in ("", "_std", "_ci95"))]
    cols += ["n_seeds", "trial_ids", *params, *extra]
    return pd.DataFrame(rows, columns=cols)


def is_multi_seed(df: pd.DataFrame) -> bool:
    """True iff some ``config_id`` has more than one trial row (any status): the sweep's design,
    not how many seeds happen to have finished, decides the table's shape."""
    return CONFIG_ID in df.columns and bool(df[CONFIG_ID].dropna().duplicated().any())


def pareto_table(
    df: pd.DataFrame,
    objectives: ObjectivesLike,
    *,
    params: Sequence[str] | None = None,
    multi_seed: bool | None = None,
    all_fronts: bool = False,
) -> pd.DataFrame:
    """The Pareto front of a trials table, best first.

    Single seed per configuration (``multi_seed=None`` decides with :func:`is_multi_seed`): the
    non-dominated finished trials with all their columns plus ``rank`` (front index, 0).
    Several seeds: the finished trials are aggregated per ``config_id``
    (:func:`aggregate_by_config`; a configuration with a diverged seed is aggregated over its
    finished seeds, and ``n_seeds`` says how many) and the non-dominated configurations by their
    seed means are returned, plus ``rank``. ``all_fronts=True`` returns every eligible row with
    its front index. Rows are sorted by rank, then by the first objective (best first).
    Duplicated points are all kept (see :mod:`tti_ray.fronts.dominance`). Infeasible trials are
    never on it (:func:`finished_trials`); with several seeds, neither is a configuration with
    an infeasible finished seed.
    """
    objs = parse_objectives(objectives)
    metrics = [o.metric for o in objs]
    fin = finished_trials(df, objs)
    multi = is_multi_seed(df) if multi_seed is None else multi_seed
    if multi and FEASIBLE in df.columns:
        # a configuration is feasible only if every finished seed is
        every = finished_trials(df, objs, feasible_only=False)
        bad = set(every.loc[~feasible_mask(every), CONFIG_ID])
        fin = fin[~fin[CONFIG_ID].isin(bad)]
    table = aggregate_by_config(fin, metrics, params=params) if multi else fin.copy()
    table["rank"] = front_ranks(_points(table, objs), objs) if len(table) else np.zeros(0, int)
    if not all_fronts:
        table = table[table["rank"] == 0]
    first = objs[0]
    table = table.sort_values(
        ["rank", first.metric], ascending=[True, first.mode == "min"], kind="stable"
    )
    return table.reset_index(drop=True)


def jsonable(v: Any) -> Any:
    """Plain-JSON value: numpy scalars unwrapped, NaN/inf -> None, containers recursed."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if v is pd.NA or v is pd.NaT:
        return None
    return str(v)


def _ref_dict(objs: Sequence[Objective], ref: Sequence[float] | Mapping[str, float] | None):
    if ref is None:
        return None
    if isinstance(ref, Mapping):
        return {o.metric: float(ref[o.metric]) for o in objs}
    vals = list(ref)
    if len(vals) != len(objs):
        raise UserError(f"reference point has {len(vals)} values for {len(objs)} objectives")
    return {o.metric: float(x) for o, x in zip(objs, vals, strict=True)}


def pareto_json(
    table: pd.DataFrame,
    objectives: ObjectivesLike,
    ref: Sequence[float] | Mapping[str, float] | None,
    hv: float | None,
) -> dict[str, Any]:
    """``pareto.json``: objectives, reference point (by metric), hypervolume and the front's rows
    as records. JSON-safe (``json.dumps(..., allow_nan=False)`` works: NaN becomes null)."""
    objs = parse_objectives(objectives)
    return jsonable(
        {
            "objectives": [{"metric": o.metric, "mode": o.mode} for o in objs],
            "reference_point": _ref_dict(objs, ref),
            "hypervolume": hv,
            "n_points": len(table),
            "eligible": ELIGIBLE,
            "points": table.to_dict(orient="records"),
        }
    )


def hypervolume_report(
    df: pd.DataFrame,
    objectives: ObjectivesLike,
    ref: Sequence[float] | Mapping[str, float] | None = None,
    *,
    margin: float = DEFAULT_MARGIN,
) -> dict[str, Any]:
    """``hypervolume.json``: the hypervolume of the finished trials (trial level, one point per
    trial, also in multi-seed sweeps) and its history.

    ``ref=None`` uses the default rule (:mod:`tti_ray.fronts.hypervolume`) over the finished
    trials; a given point is used as is. ``history`` has one entry per *terminal* trial
    (finished, diverged, early_stopped, failed) in completion order (``completed_at``, else
    ``trial_index``, else row order): ``n_completed`` counts all of them, so the curve shows the
    hypervolume against trials spent; only finished trials can raise it. Also reports
    ``n_trials``, ``n_finished`` (eligible for the front) and ``status_counts``, so a partial
    sweep says what is missing.
    """
    objs = parse_objectives(objectives)
    fin = finished_trials(df, objs)
    if ref is not None:
        ref_arr = reference_point(
            np.zeros((0, len(objs))), objs, list(_ref_dict(objs, ref).values())
        )
        rule = describe_reference_rule(list(ref_arr))
    elif len(fin):
        ref_arr = reference_point(_points(fin, objs), objs, DEFAULT_RULE, margin=margin)
        rule = describe_reference_rule(DEFAULT_RULE, margin)
    else:
        ref_arr, rule = None, "none: no finished trials yet"
    done = _completion_order(df[df[STATUS].astype(str).isin(TERMINAL)])
    pts = _points(done, objs)
    # only finished, feasible trials count
    pts[(done[STATUS].astype(str) != FINISHED).to_numpy() | ~feasible_mask(done)] = np.nan
    hist = hypervolume_history(pts, objs, ref_arr) if ref_arr is not None else [0.0] * len(done)
    ids = done[TRIAL_ID].tolist() if TRIAL_ID in done.columns else list(range(len(done)))
    return jsonable(
        {
            "objectives": [{"metric": o.metric, "mode": o.mode} for o in objs],
            "hypervolume": hypervolume(_points(fin, objs), objs, ref_arr)
            if ref_arr is not None
            else 0.0,
            "reference_point": _ref_dict(objs, ref_arr),
            "reference_rule": rule,
            "eligible": ELIGIBLE,
            "n_trials": len(df),
            "n_finished": len(fin),
            "n_infeasible": n_infeasible(df),
            "status_counts": {s: int((df[STATUS].astype(str) == s).sum()) for s in STATUSES},
            "history": [
                {"n_completed": k + 1, "trial_id": t, "hypervolume": h}
                for k, (t, h) in enumerate(zip(ids, hist, strict=True))
            ],
        }
    )
