"""Exact hypervolume (the S-metric) of a set of objective vectors, and the reference-point rule.

The hypervolume of a point set P w.r.t. a reference point r (minimization) is the Lebesgue
measure of the region dominated by P and bounded by r:  HV(P, r) = vol( U_{p in P} [p, r] ).
``max`` objectives are negated first (points and reference alike), so a larger HV is better in
every case. Only points strictly better than r in every objective add volume: a point that does
not dominate r (or has a NaN/inf) contributes nothing.

Algorithms (all exact, cross-checked against each other and inclusion-exclusion in the tests):

* 2 objectives: one sweep over the points sorted by the first objective, O(n log n).
* 3 objectives: a sweep over the third objective, summing slab thickness x the 2-D HV of the
  points seen so far (the "HV3D" slicing of Fonseca et al. 2006), O(n^2 log n).
* m >= 4: WFG, While et al. 2012, "A Fast Way of Calculating Exact Hypervolumes", Eq. (1)-(3):
  HV(P) = sum_i [ vol([p_i, r]) - HV(nondom(limit(P_{i+1:}, p_i))) ], recursing down to the
  3-D sweep. Exponential in m in the worst case; fine for the handful of objectives a sweep has.

**Reference point** (:func:`reference_point`): by default, for each objective, the worst value
among the given finite points pushed out by 10% of that objective's range,
``r_j = nadir_j + 0.1 * (nadir_j - ideal_j)`` in minimization terms (for a ``max`` objective:
``min_j - 0.1 * range_j``); where the range is 0, the push is ``0.1 * max(|nadir_j|, 1)``. So
every given point, including the extremes of the front, adds volume. Or pass a fixed point. To
compare hypervolumes (two searchers, or history over time) use one fixed reference for all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tti_ray.cli import UserError
from tti_ray.fronts.dominance import Objective, modes_of, non_dominated_mask, to_minimization

DEFAULT_RULE = "nadir+range"
DEFAULT_MARGIN = 0.1


def describe_reference_rule(
    rule: str | Sequence[float] = DEFAULT_RULE, margin: float = DEFAULT_MARGIN
) -> str:
    """One line stating how the reference point was chosen, for reports and JSON."""
    if isinstance(rule, str):
        if rule != DEFAULT_RULE:
            raise UserError(
                f"unknown reference rule {rule!r}; use {DEFAULT_RULE!r} or a fixed point"
            )
        return (
            f"nadir+{margin:g}*range: per objective, the worst value among the finished trials "
            f"pushed out by {margin:g} x (worst - best) (or {margin:g} x max(|worst|, 1) when all "
            "values are equal)"
        )
    return "fixed: user-given reference point"


def reference_point(
    points: np.ndarray | Sequence,
    modes: Sequence[str | Objective],
    rule: str | Sequence[float] = DEFAULT_RULE,
    *,
    margin: float = DEFAULT_MARGIN,
) -> np.ndarray:
    """The reference point, in the caller's units (``max`` objectives not negated).

    ``rule="nadir+range"`` (default): ``nadir + margin * range`` over the finite rows of
    ``points`` (module docstring). ``rule`` = a sequence of m numbers: that fixed point, validated.
    Raises ``ValueError`` when the rule needs points and no row is finite.
    """
    m = modes_of(modes)
    if not isinstance(rule, str):
        ref = np.asarray(rule, dtype=np.float64)
        if ref.shape != (len(m),) or not np.isfinite(ref).all():
            raise UserError(f"reference point must be {len(m)} finite numbers, got {list(rule)!r}")
        return ref
    describe_reference_rule(rule, margin)  # validates the rule name
    if not (margin > 0 and np.isfinite(margin)):
        raise UserError(f"reference margin must be > 0, got {margin!r}")
    p = to_minimization(points, m)
    p = p[np.isfinite(p).all(1)]
    if len(p) == 0:
        raise UserError("no finite points to derive a reference point from")
    worst, best = p.max(0), p.min(0)
    span = worst - best
    push = np.where(span > 0, margin * span, margin * np.maximum(np.abs(worst), 1.0))
    sign = np.array([-1.0 if x == "max" else 1.0 for x in m])
    return (worst + push) * sign


def _hv2d(p: np.ndarray, r: np.ndarray) -> float:
    """2-D HV of minimization points all strictly below ``r`` (dominated ones allowed)."""
    if len(p) == 0:
        return 0.0
    order = np.lexsort((p[:, 1], p[:, 0]))
    x, y = p[order, 0], p[order, 1]
    ymin = np.minimum.accumulate(y)
    prev = np.concatenate(([r[1]], ymin[:-1]))
    # the horizontal strip [ymin_i, prev_i] is first covered at x_i and reaches to r_x
    return float(np.sum((r[0] - x) * (prev - ymin)))


def _hv3d(p: np.ndarray, r: np.ndarray) -> float:
    """3-D HV by a sweep over the third objective: sum of slab thickness x 2-D HV below it."""
    if len(p) == 0:
        return 0.0
    order = np.argsort(p[:, 2], kind="stable")
    p = p[order]
    z_next = np.append(p[1:, 2], r[2])
    total = 0.0
    for k in range(len(p)):
        dz = z_next[k] - p[k, 2]
        if dz > 0:
            total += dz * _hv2d(p[: k + 1, :2], r[:2])
    return total


def _nondominated_unique(p: np.ndarray) -> np.ndarray:
    p = np.unique(p, axis=0)
    return p[non_dominated_mask(p, ["min"] * p.shape[1])]


def _hv_wfg(p: np.ndarray, r: np.ndarray, base_dim: int = 3) -> float:
    """WFG (While et al. 2012) for non-dominated unique minimization points strictly below ``r``.

    ``base_dim`` is the dimension at which the sweeps take over (3, or 2 to test WFG on 3-D)."""
    n, m = p.shape
    if n == 0:
        return 0.0
    if n == 1:
        return float(np.prod(r - p[0]))
    if m <= base_dim:
        return _hv2d(p, r) if m == 2 else _hv3d(p, r)
    # Worst-first in the last objective keeps the limited sets small (WFG paper, Sec. 4).
    p = p[np.argsort(-p[:, -1], kind="stable")]
    total = 0.0
    for i in range(n):
        box = float(np.prod(r - p[i]))
        rest = p[i + 1 :]
        if len(rest):
            limited = _nondominated_unique(np.maximum(rest, p[i]))
            box -= _hv_wfg(limited, r, base_dim)
        total += box
    return total


def _prepare(points: np.ndarray | Sequence, modes: Sequence[str | Objective], ref: Sequence[float]):
    m = modes_of(modes)
    p = to_minimization(points, m)
    r = to_minimization(np.asarray(ref, dtype=np.float64).reshape(1, -1), m)[0]
    if not np.isfinite(r).all():
        raise UserError(f"reference point must be finite, got {list(ref)!r}")
    keep = np.isfinite(p).all(1) & (p < r).all(1)
    return p[keep], r


def hypervolume(
    points: np.ndarray | Sequence, modes: Sequence[str | Objective], ref: Sequence[float]
) -> float:
    """Exact hypervolume of ``points`` [n, m] w.r.t. ``ref`` (both in the caller's units).

    Rows that do not strictly dominate ``ref`` or have NaN/inf are ignored; the empty set has 0.
    """
    p, r = _prepare(points, modes, ref)
    if len(p) == 0:
        return 0.0
    m = p.shape[1]
    if m == 1:
        return float(r[0] - p[:, 0].min())
    if m == 2:
        return _hv2d(p, r)
    p = _nondominated_unique(p)
    return _hv3d(p, r) if m == 3 else _hv_wfg(p, r)


def hypervolume_history(
    points_in_completion_order: np.ndarray | Sequence,
    modes: Sequence[str | Objective],
    ref: Sequence[float],
) -> list[float]:
    """``out[k]`` = hypervolume of the first ``k + 1`` points (one value per row, so non-finite or
    out-of-reference rows repeat the previous value). Recomputes only when a point enters the front.
    """
    q, r = _prepare(np.zeros((0, len(modes))), modes, ref)  # validates modes and ref
    q = to_minimization(points_in_completion_order, modes)
    mins = ["min"] * q.shape[1]
    front = np.zeros((0, q.shape[1]))
    out: list[float] = []
    hv = 0.0
    for row in q:
        useful = np.isfinite(row).all() and (row < r).all()
        if useful and not (front <= row).all(1).any():  # not weakly dominated by the front
            front = np.vstack([front[~(row <= front).all(1)], row])
            hv = hypervolume(front, mins, r)  # front and r are already in minimization units
        out.append(hv)
    return out
