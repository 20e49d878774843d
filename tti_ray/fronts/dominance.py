"""Objectives, Pareto dominance, non-dominated sorting and the MO-ASHA ranking.

Everything here is a pure function of a ``[n, m]`` array of objective values (one row per trial,
one column per objective) and the objectives' modes. Internally all objectives are turned into
minimization by negating the ``max`` columns (:func:`to_minimization`); results are returned in
the caller's row order.

**Dominance.** Row ``a`` dominates row ``b`` iff ``a`` is no worse than ``b`` in every objective
and strictly better in at least one (minimization: ``all(a <= b) and any(a < b)``).

* **Duplicates / ties.** Identical rows do not dominate each other, so all copies of a
  non-dominated point are kept on the front (and share a front in :func:`non_dominated_sort`).
  A row that ties another in some objectives and is worse in none is not dominated by it.
* **Non-finite rows.** A row with any NaN or +-inf is never on the front and never dominates
  anything (a diverged trial must not knock finite trials off the front through an ``-inf``).
  :func:`non_dominated_sort` puts such rows together in one last front of their own.

This module imports only numpy: the sweep scheduler uses it inside Ray workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tti_ray.cli import UserError

MODES = ("min", "max")
# Rows per block when comparing all pairs, so memory stays O(block * n * m) instead of O(n^2 m).
_BLOCK = 512


@dataclass(frozen=True)
class Objective:
    """One objective: a metric name exactly as logged (``val/perplexity``), ``min`` or ``max``."""

    metric: str
    mode: str = "min"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise UserError(f"objective metric must be a non-empty string, got {self.metric!r}")
        if self.metric != self.metric.strip():
            raise UserError(f"objective metric {self.metric!r} has surrounding whitespace")
        if self.mode not in MODES:
            raise UserError(
                f"objective {self.metric!r}: mode must be 'min' or 'max', got {self.mode!r}"
            )

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"


def parse_objectives(spec: str | Iterable[str | Objective]) -> list[Objective]:
    """Parse ``"val/perplexity:min,val/polysemanticity/mean:min"`` into :class:`Objective` s.

    Also accepts an iterable of ``"metric:mode"`` strings or ``Objective`` s. Every item must name
    its mode; the metric is everything before the last ``:`` (metric names may contain ``/``).
    Raises ``ValueError`` on an empty spec, a missing or unknown mode, or a repeated metric.
    """
    if isinstance(spec, str):
        items: list[str | Objective] = [s.strip() for s in spec.split(",")]
        if all(not s for s in items):
            raise UserError("no objectives given (expected e.g. 'val/perplexity:min')")
    else:
        items = list(spec)
    if not items:
        raise UserError("no objectives given (expected e.g. 'val/perplexity:min')")
    out: list[Objective] = []
    for item in items:
        if isinstance(item, Objective):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise UserError(f"objective must be a 'metric:mode' string, got {item!r}")
        item = item.strip()
        if not item:
            raise UserError(f"empty objective in {spec!r} (stray comma?)")
        metric, sep, mode = item.rpartition(":")
        if not sep or not metric.strip():
            raise UserError(f"objective {item!r} must be 'metric:min' or 'metric:max'")
        out.append(Objective(metric.strip(), mode.strip()))
    seen: set[str] = set()
    for o in out:
        if o.metric in seen:
            raise UserError(f"objective {o.metric!r} given twice")
        seen.add(o.metric)
    return out


def modes_of(modes: Sequence[str | Objective]) -> list[str]:
    """The modes of a list of objectives (or a list of mode strings, validated)."""
    out = [m.mode if isinstance(m, Objective) else m for m in modes]
    for m in out:
        if m not in MODES:
            raise UserError(f"mode must be 'min' or 'max', got {m!r}")
    return out


def to_minimization(points: np.ndarray | Sequence, modes: Sequence[str | Objective]) -> np.ndarray:
    """``points`` [n, m] as float64 with the ``max`` columns negated (a copy)."""
    p = np.array(points, dtype=np.float64)
    if p.ndim == 1 and p.size == 0:
        p = p.reshape(0, len(modes))
    if p.ndim != 2:
        raise ValueError(f"points must be a 2-D array [n, m], got shape {p.shape}")
    m = modes_of(modes)
    if p.shape[1] != len(m) or not m:
        raise ValueError(f"points have {p.shape[1]} objectives but {len(m)} modes were given")
    sign = np.array([-1.0 if x == "max" else 1.0 for x in m])
    return p * sign


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str | Objective]) -> bool:
    """True iff ``a`` dominates ``b`` (see the module docstring); False if either is non-finite."""
    p = to_minimization([a, b], modes)
    if not np.isfinite(p).all():
        return False
    return bool((p[0] <= p[1]).all() and (p[0] < p[1]).any())


def _finite_rows(p: np.ndarray) -> np.ndarray:
    return np.isfinite(p).all(axis=1)


def _nd_mask_pairwise(p: np.ndarray) -> np.ndarray:
    """Exact non-dominated mask of finite minimization rows by blocked all-pairs comparison."""
    n = len(p)
    mask = np.ones(n, dtype=bool)
    for s in range(0, n, _BLOCK):
        blk = p[s : s + _BLOCK]  # [b, m]
        le = (p[None, :, :] <= blk[:, None, :]).all(-1)  # [b, n]: row j no worse than row i
        lt = (p[None, :, :] < blk[:, None, :]).any(-1)  # [b, n]: row j strictly better somewhere
        mask[s : s + _BLOCK] = ~(le & lt).any(1)
    return mask


def _nd_mask_2d(p: np.ndarray) -> np.ndarray:
    """The same for m = 2 in O(n log n): after sorting by (x, y), a row is non-dominated iff its
    y is the smallest among rows with the same x and strictly below every y at a smaller x."""
    n = len(p)
    order = np.lexsort((p[:, 1], p[:, 0]))
    x, y = p[order, 0], p[order, 1]
    new_x = np.ones(n, dtype=bool)
    new_x[1:] = x[1:] != x[:-1]
    group = np.cumsum(new_x) - 1  # index of each row's x-group
    group_min_y = y[new_x]  # sorted by y within a group, so the first is the minimum
    # best y over all strictly smaller x = running minimum of the previous groups' minima
    before = np.concatenate(([np.inf], np.minimum.accumulate(group_min_y)[:-1]))
    keep = (y == group_min_y[group]) & (y < before[group])
    mask = np.empty(n, dtype=bool)
    mask[order] = keep
    return mask


def non_dominated_mask(
    points: np.ndarray | Sequence, modes: Sequence[str | Objective]
) -> np.ndarray:
    """bool[n]: True for the rows of ``points`` [n, m] that no other row dominates.

    Exact. Duplicates of a non-dominated point are all True; rows with NaN/inf are False and do
    not dominate others (module docstring). O(n log n) for two objectives, O(n^2 m) otherwise.
    """
    p = to_minimization(points, modes)
    fin = _finite_rows(p)
    out = np.zeros(len(p), dtype=bool)
    if fin.any():
        q = p[fin]
        out[fin] = _nd_mask_2d(q) if q.shape[1] == 2 else _nd_mask_pairwise(q)
    return out


def _domination_matrix(p: np.ndarray) -> np.ndarray:
    """bool[n, n]: ``D[i, j]`` iff row i dominates row j (finite minimization rows)."""
    n = len(p)
    d = np.empty((n, n), dtype=bool)
    for s in range(0, n, _BLOCK):
        blk = p[s : s + _BLOCK]
        le = (blk[:, None, :] <= p[None, :, :]).all(-1)
        lt = (blk[:, None, :] < p[None, :, :]).any(-1)
        d[s : s + _BLOCK] = le & lt
    return d


def non_dominated_sort(
    points: np.ndarray | Sequence, modes: Sequence[str | Objective]
) -> list[np.ndarray]:
    """Fronts F_0, F_1, ... as arrays of row indices (ascending), partitioning ``range(n)``.

    Deb et al. 2002, "A fast and elitist multiobjective genetic algorithm: NSGA-II", Sec. III-A
    (fast non-dominated sort): F_0 is the non-dominated set; F_k is the non-dominated set once
    F_0..F_{k-1} are removed. Computed by peeling with domination counts, O(n^2 m) time and O(n^2)
    bits; for two objectives by peeling 2-D fronts, O(k n log n) for k fronts. Rows with NaN/inf
    form one extra last front (so a diverged trial ranks below every finite one); identical rows
    always share a front.
    """
    p = to_minimization(points, modes)
    n = len(p)
    fin = np.flatnonzero(_finite_rows(p))
    bad = np.flatnonzero(~_finite_rows(p))
    fronts: list[np.ndarray] = []
    if len(fin) and p.shape[1] == 2:
        # Fast path: peel O(n log n) 2-D fronts (the usual perplexity vs polysemanticity case).
        left = fin
        while len(left):
            mask = _nd_mask_2d(p[left])
            fronts.append(left[mask])
            left = left[~mask]
    elif len(fin):
        d = _domination_matrix(p[fin])
        count = d.sum(0).astype(np.int64)  # how many rows dominate each row
        alive = np.ones(len(fin), dtype=bool)
        while alive.any():
            cur = alive & (count == 0)
            fronts.append(fin[cur])
            alive &= ~cur
            count -= d[cur].sum(0)
    if len(bad):
        fronts.append(bad)
    assert sum(len(f) for f in fronts) == n
    return fronts


def front_ranks(points: np.ndarray | Sequence, modes: Sequence[str | Objective]) -> np.ndarray:
    """int[n]: the index of each row's front in :func:`non_dominated_sort` (0 = non-dominated)."""
    fronts = non_dominated_sort(points, modes)
    rank = np.empty(sum(len(f) for f in fronts), dtype=np.int64)
    for k, f in enumerate(fronts):
        rank[f] = k
    return rank


def crowding_distance(points: np.ndarray | Sequence) -> np.ndarray:
    """float[n]: NSGA-II crowding distance of each row within one front (Deb et al. 2002, Sec.
    III-B): for each objective, rows are sorted, the two extremes get +inf, and every other row
    adds ``(f[next] - f[prev]) / (f_max - f_min)``; an objective with zero range adds 0.

    Mode-independent (the distance is symmetric). Ties are broken by row order (stable sort), so
    of several identical extreme rows only one gets +inf. Fronts of one or two rows are all +inf.
    Meant for finite rows (one front of :func:`non_dominated_sort`).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"points must be a 2-D array [n, m], got shape {p.shape}")
    n, m = p.shape
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for j in range(m):
        order = np.argsort(p[:, j], kind="stable")
        f = p[order, j]
        span = f[-1] - f[0]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (f[2:] - f[:-2]) / span
    return dist


def rank_order(points: np.ndarray | Sequence, modes: Sequence[str | Objective]) -> np.ndarray:
    """All row indices, best first: by front (:func:`non_dominated_sort`), then by decreasing
    crowding distance within the front, then by row index (deterministic)."""
    p = to_minimization(points, modes)
    out: list[np.ndarray] = []
    for front in non_dominated_sort(p, ["min"] * p.shape[1]):
        fp = p[front]
        if np.isfinite(fp).all():
            cd = crowding_distance(fp)
        else:  # the non-finite last front: keep row order
            cd = np.zeros(len(front))
        out.append(front[np.lexsort((front, -cd))])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def select_top(
    points: np.ndarray | Sequence, modes: Sequence[str | Objective], n_keep: int
) -> np.ndarray:
    """Indices of the ``n_keep`` best rows, best first: the MO-ASHA ranking.

    Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving" (MO-ASHA with the
    NSGA-II selection): whole fronts are taken in order; the last front that does not fit is cut
    by decreasing crowding distance. ``n_keep`` is clipped to ``[0, n]``.
    """
    if int(n_keep) != n_keep or n_keep < 0:
        raise ValueError(f"n_keep must be a non-negative integer, got {n_keep!r}")
    return rank_order(points, modes)[: int(n_keep)]
