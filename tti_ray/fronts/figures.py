"""Front and hypervolume plots (PNG), drawn with matplotlib's object API on the Agg canvas.

``matplotlib.figure.Figure`` is used without ``pyplot``: no global figure state and no GUI
backend, so plotting works the same in tests, Ray workers and headless servers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from tti_ray.cli import UserError
from tti_ray.fronts.dominance import Objective, non_dominated_mask, parse_objectives
from tti_ray.fronts.tables import (
    METHOD,
    ObjectivesLike,
    _points,
    feasible_mask,
    finished_trials,
)


def _axis_label(o: Objective) -> str:
    return f"{o.metric} ({'lower' if o.mode == 'min' else 'higher'} is better)"


def _save(fig: Figure, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out


def save_figure(fig: Figure, out_png: str | Path) -> Path:
    """Save a ``Figure`` (built without pyplot) as PNG the way every plot here is saved: Agg
    canvas, 120 dpi, tight bounding box, parent directories created. Returns the path."""
    return _save(fig, out_png)


def plot_front(
    df: pd.DataFrame,
    objectives: ObjectivesLike,
    out_png: str | Path,
    color_by: str | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Scatter of the finished trials on the first two objectives (the seeds' Figure 5).

    Dominated trials are faded; the non-dominated ones (over *all* objectives) are drawn solid
    with a black edge and, with exactly two objectives, joined by the attainment staircase.
    Colours: by ``color_by`` (a colour bar if numeric with more than 8 distinct values, log-scaled
    when positive and spanning over two decades; else one colour per value), else by ``method``
    if the column exists. Finished trials that violate a constraint (``feasible`` false or
    empty) are red crosses, outside the front. Works with 0 or 1 finished trials. Returns the
    PNG path.
    """
    objs = parse_objectives(objectives)
    if len(objs) < 2:
        raise UserError("plot_front needs at least two objectives")
    fin = finished_trials(df, objs)
    ox, oy = objs[0], objs[1]
    color_by = color_by if color_by is not None else (METHOD if METHOD in df.columns else None)
    if color_by is not None and color_by not in df.columns:
        raise UserError(f"color_by column {color_by!r} not in the trials table")

    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    pts = _points(fin, objs)
    front = non_dominated_mask(pts, objs) if len(pts) else np.zeros(0, bool)
    x, y = pts[:, 0], pts[:, 1]

    if len(pts) == 0:
        ax.text(0.5, 0.5, "no finished trials", ha="center", va="center", transform=ax.transAxes)
    elif color_by is None:
        ax.scatter(x[~front], y[~front], c="tab:blue", alpha=0.3, s=25, label="dominated")
        ax.scatter(x[front], y[front], c="tab:blue", edgecolors="k", s=45, label="Pareto front")
    else:
        col = fin[color_by]
        if pd.api.types.is_numeric_dtype(col) and col.nunique() > 8:
            vals = col.to_numpy(float)
            lo, hi = np.nanmin(vals), np.nanmax(vals)
            # log-uniform searches (lambda from 1e-4 to 1) read better on a log colour scale
            norm = LogNorm(lo, hi) if lo > 0 and hi / lo > 100 else Normalize(lo, hi)
            kw: dict[str, Any] = dict(cmap="viridis", norm=norm)
            ax.scatter(x[~front], y[~front], c=vals[~front], alpha=0.3, s=25, **kw)
            ax.scatter(x[front], y[front], c=vals[front], edgecolors="k", s=45, **kw)
            fig.colorbar(ScalarMappable(**kw), ax=ax, label=color_by)
        else:
            labels = col.astype(str).to_numpy()
            for i, lab in enumerate(pd.unique(labels)):
                c = f"C{i % 10}"
                sel = labels == lab
                ax.scatter(x[sel & ~front], y[sel & ~front], color=c, alpha=0.3, s=25)
                ax.scatter(x[sel & front], y[sel & front], color=c, edgecolors="k", s=45, label=lab)
            ax.legend(title=color_by, fontsize="small")
    bad = finished_trials(df, objs, feasible_only=False)
    bad = bad.loc[~feasible_mask(bad)]
    if len(bad):
        bp = _points(bad, objs)
        ax.scatter(bp[:, 0], bp[:, 1], marker="x", c="tab:red", s=30, linewidths=1.2,
                   label=f"infeasible ({len(bad)})", zorder=3)
        ax.legend(fontsize="small")
    if len(objs) == 2 and front.sum() >= 1:
        # Staircase of the attained region: front sorted best-first in x, flat until the next point.
        fx, fy = x[front], y[front]
        order = np.argsort(fx if ox.mode == "min" else -fx, kind="stable")
        ax.step(fx[order], fy[order], where="post", color="k", lw=1, alpha=0.7, zorder=0)
    if color_by is None and len(pts):
        ax.legend(fontsize="small")
    ax.set_xlabel(_axis_label(ox))
    ax.set_ylabel(_axis_label(oy))
    ax.set_title(title or f"Pareto front: {int(front.sum())} of {len(pts)} finished trials")
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


HistoryLike = Sequence[float] | Sequence[Mapping[str, Any]]


def _curve(history: HistoryLike) -> tuple[np.ndarray, np.ndarray]:
    if len(history) and isinstance(history[0], Mapping):
        xs = [h["n_completed"] for h in history]  # type: ignore[index]
        ys = [h["hypervolume"] for h in history]  # type: ignore[index]
    else:
        xs, ys = list(range(1, len(history) + 1)), list(history)
    return np.asarray(xs, float), np.asarray([np.nan if v is None else v for v in ys], float)


def plot_hypervolume_history(
    history: HistoryLike | Mapping[str, HistoryLike],
    out_png: str | Path,
    *,
    xlabel: str = "completed trials",
    title: str | None = None,
) -> Path:
    """Hypervolume against completed trials, as a step curve.

    ``history``: a list of floats (one per trial), the ``history`` list of
    :func:`~tti_ray.fronts.tables.hypervolume_report` (``{n_completed, hypervolume}``), or a
    mapping label -> either of those to compare searchers on one axis. Returns the PNG path.
    """
    curves = dict(history) if isinstance(history, Mapping) else {"": history}
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    drawn = 0
    for label, h in curves.items():
        xs, ys = _curve(h)
        if len(xs) == 0:
            continue
        ax.step(
            xs, ys, where="post", marker="o" if len(xs) < 30 else None, ms=3, label=label or None
        )
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no completed trials", ha="center", va="center", transform=ax.transAxes)
    if any(curves) and drawn:
        ax.legend(fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("hypervolume")
    ax.set_title(title or "Hypervolume vs trials")
    ax.grid(alpha=0.3)
    return _save(fig, out_png)
