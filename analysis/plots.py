"""The sweep report's plots (PNG, matplotlib's object API, no pyplot): per-layer metric profiles,
metric correlations, parameter sensitivity and neuron utilization. The front and the
hypervolume history are :mod:`tti_ray.fronts.figures`.

All take a trials table in the ``trials.csv`` format and use the finished trials only; each
draws a "no data" panel rather than failing when a partial sweep has nothing to show yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from tti_ray.fronts.figures import save_figure
from tti_ray.fronts.stats import aggregate
from tti_ray.fronts.tables import CONFIG_ID, FINISHED, METHOD, STATUS

LAYER_RE = re.compile(r"^val/(?P<metric>[^/]+)/(?P<site>[^/]+)/layer_(?P<layer>\d+)$")
HEADLINE_RE = re.compile(r"^(val|sae)/[^/]+(/mean)?$")
DEAD, ALWAYS_ON = 0.01, 0.99


def finished(df: pd.DataFrame) -> pd.DataFrame:
    return df[df[STATUS].astype(str) == FINISHED] if STATUS in df.columns else df.iloc[:0]


def layer_columns(df: pd.DataFrame) -> dict[tuple[str, str], dict[int, str]]:
    """``{(metric, site): {layer: column}}`` for the ``val/<metric>/<site>/layer_<i>`` columns."""
    out: dict[tuple[str, str], dict[int, str]] = {}
    for c in df.columns:
        m = LAYER_RE.match(str(c))
        if m:
            out.setdefault((m["metric"], m["site"]), {})[int(m["layer"])] = c
    return out


def short(param: str) -> str:
    """``interventions.anti_poly.coef`` -> ``anti_poly.coef``."""
    parts = param.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else param


def _fmt(v: object) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)


def config_labels(df: pd.DataFrame, params: Sequence[str]) -> dict[object, str]:
    """A short label per configuration: method (if any) and its searched values."""
    out = {}
    for cid, g in df.groupby(CONFIG_ID, sort=False):
        row = g.iloc[0]
        parts = [str(row[METHOD])] if METHOD in df.columns and pd.notna(row[METHOD]) else []
        parts += [f"{short(p)}={_fmt(row[p])}" for p in params if p in df.columns]
        out[cid] = " ".join(parts) or str(cid)
    return out


def _numeric(s: pd.Series) -> np.ndarray | None:
    v = pd.to_numeric(s, errors="coerce")
    return None if v.isna().all() or (v.isna() & s.notna()).any() else v.to_numpy(float)


def _color_scale(values: np.ndarray, log: bool) -> Normalize:
    lo, hi = np.nanmin(values), np.nanmax(values)
    if log and lo > 0 and hi > lo:
        return LogNorm(lo, hi)
    return Normalize(lo, hi if hi > lo else lo + 1)


def _empty(ax, msg: str) -> None:
    ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_layer_profiles(
    df: pd.DataFrame,
    params: Sequence[str],
    out_png: str | Path,
    *,
    metrics: Sequence[str] = ("polysemanticity", "sparsity"),
    log_params: set[str] | frozenset[str] = frozenset(),
    max_legend: int = 10,
) -> Path:
    """Per-layer ``metrics`` (rows) at every measured site (columns), one line per configuration
    (mean over its finished seeds) — polysemanticity and sparsity by method and configuration.
    More than ``max_legend`` configurations are coloured by the first searched parameter."""
    fin = finished(df)
    cols = layer_columns(df)
    sites = sorted({s for (m, s) in cols if m in metrics}, key=lambda s: (s != "mlp_hidden", s))
    nr, nc = len(metrics), max(1, len(sites))
    fig = Figure(figsize=(4.2 * nc + 1.2, 3.0 * nr), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nr, nc, squeeze=False))
    groups = list(fin.groupby(CONFIG_ID, sort=False)) if len(fin) else []
    labels = config_labels(fin, params) if len(fin) else {}
    cparam = params[0] if params and len(groups) > max_legend else None
    cvals = _numeric(fin[cparam]) if cparam else None
    norm = _color_scale(cvals, cparam in log_params) if cvals is not None else None
    for r, metric in enumerate(metrics):
        for c in range(nc):
            ax = axes[r, c]
            site = sites[c] if sites else None
            layer_map = cols.get((metric, site), {}) if site else {}
            if not layer_map or not groups:
                _empty(ax, f"no per-layer {metric} yet" if groups else "no finished trials")
                continue
            layers = sorted(layer_map)
            for k, (cid, g) in enumerate(groups):
                ys = [pd.to_numeric(g[layer_map[i]], errors="coerce").mean() for i in layers]
                if norm is not None:
                    color = ScalarMappable(norm, "viridis").to_rgba(float(g[cparam].iloc[0]))
                else:
                    color = f"C{k % 10}"
                ax.plot(layers, ys, marker="o", ms=3, color=color, label=labels[cid], alpha=0.85)
            ax.set_xticks(layers)
            ax.set_xlabel("layer")
            ax.set_ylabel(metric)
            ax.set_title(f"{metric} @ {site}", fontsize="medium")
            ax.grid(alpha=0.3)
    if norm is not None:
        fig.colorbar(ScalarMappable(norm, "viridis"), ax=axes.ravel().tolist(), label=short(cparam))
    else:
        drawn = [ax for ax in axes.ravel() if ax.get_legend_handles_labels()[0]]
        if drawn:
            drawn[-1].legend(fontsize="x-small", loc="best")
    fig.suptitle("Per-layer metrics by configuration (mean over finished seeds)")
    return save_figure(fig, out_png)


def correlation_columns(
    df: pd.DataFrame, params: Sequence[str], objectives: Sequence[str]
) -> list[str]:
    """Searched parameters, the objectives, the headline metrics (``val/<m>/mean``, ``val/<m>``,
    ``sae/<m>``) and the regularizer/CE ratio, in that order, deduplicated."""
    heads = [c for c in df.columns if HEADLINE_RE.match(str(c)) and c != "val/loss"]
    extra = [c for c in ("train/reg_to_ce_ratio",) if c in df.columns]
    return list(dict.fromkeys([*params, *objectives, *heads, *extra]))


def correlation_matrix(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Spearman rank correlation of ``columns`` over the finished trials (constant or non-numeric
    columns dropped): robust to the log-scale parameters and the skew of perplexity."""
    fin = finished(df)
    num = fin[[c for c in columns if c in fin.columns]].apply(pd.to_numeric, errors="coerce")
    num = num.loc[:, num.notna().sum() >= 3]
    num = num.loc[:, num.nunique() > 1]
    return num.corr(method="spearman")


def plot_correlation(corr: pd.DataFrame, out_png: str | Path, *, n_trials: int = 0) -> Path:
    """Heatmap of a correlation matrix (the seeds' Figure 6), values printed when it is small."""
    k = len(corr)
    size = max(4.5, 0.42 * k + 2.5)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    if k < 2:
        _empty(ax, "need ≥ 3 finished trials and ≥ 2 varying metrics")
    else:
        im = ax.imshow(corr.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        names = [
            short(c) if "/" not in c else c.removeprefix("val/").removesuffix("/mean")
            for c in corr.columns
        ]
        ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize="small")
        ax.set_yticks(range(k), names, fontsize="small")
        if k <= 14:
            for i in range(k):
                for j in range(k):
                    v = corr.iat[i, j]
                    if np.isfinite(v):
                        ax.text(
                            j,
                            i,
                            f"{v:.2f}",
                            ha="center",
                            va="center",
                            fontsize="x-small",
                            color="white" if abs(v) > 0.6 else "black",
                        )
        fig.colorbar(im, ax=ax, shrink=0.8, label="Spearman ρ")
    ax.set_title(f"Metric correlations across {n_trials} finished trials")
    return save_figure(fig, out_png)


def plot_sensitivity(
    df: pd.DataFrame,
    params: Sequence[str],
    objectives: Sequence[str],
    out_png: str | Path,
    *,
    log_params: set[str] | frozenset[str] = frozenset(),
) -> Path:
    """Each searched parameter (rows) against each objective (columns): every finished trial as a
    dot, and per configuration the seed mean with its 95 % CI, joined in parameter order
    (λ / k sensitivity curves). Log x-axis for log-searched (or > 2-decade positive) parameters."""
    fin = finished(df)
    nr, nc = max(1, len(params)), max(1, len(objectives))
    fig = Figure(figsize=(4.2 * nc, 3.2 * nr), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nr, nc, squeeze=False))
    for r in range(nr):
        for c in range(nc):
            ax = axes[r, c]
            if not params or not objectives:
                _empty(ax, "no searched parameters")
                continue
            p, o = params[r], objectives[c]
            if not len(fin) or o not in fin.columns or p not in fin.columns:
                _empty(ax, f"no finished trials with {o}")
                continue
            y = pd.to_numeric(fin[o], errors="coerce").to_numpy(float)
            x = _numeric(fin[p])
            if x is None:  # categorical parameter: one slot per value
                cats = list(dict.fromkeys(fin[p].astype(str)))
                x = np.array([cats.index(v) for v in fin[p].astype(str)], float)
                ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize="small")
            elif p in log_params or (np.nanmin(x) > 0 and np.nanmax(x) / np.nanmin(x) > 100):
                ax.set_xscale("log")
            ax.scatter(x, y, s=14, alpha=0.45, color="C0", label="trial")
            means = []
            for xv in np.unique(x[np.isfinite(x)]):
                a = aggregate(y[x == xv])
                means.append((xv, a.mean, a.ci_half))
            if means:
                mx, my, mh = (np.array(v) for v in zip(*means, strict=True))
                ax.errorbar(
                    mx,
                    my,
                    yerr=np.where(np.isfinite(mh), mh, 0),
                    color="C3",
                    marker="o",
                    ms=4,
                    lw=1,
                    capsize=2,
                    label="config mean ± 95% CI",
                )
            ax.set_xlabel(short(p))
            ax.set_ylabel(o)
            ax.grid(alpha=0.3)
    if axes[0, -1].get_legend_handles_labels()[0]:
        axes[0, -1].legend(fontsize="x-small")
    fig.suptitle("Sensitivity: each searched parameter vs each objective (finished trials)")
    return save_figure(fig, out_png)


def plot_utilization(
    freqs: Mapping[str, Mapping[str, np.ndarray]], out_png: str | Path, *, site: str = "mlp_hidden"
) -> Path:
    """Histograms of per-neuron activation frequency, one panel per checkpoint label, one
    histogram per layer (``freqs[label][layer name] = freq[d]``). Dead (< 1 %) and always-on
    (> 99 %) thresholds are marked and their shares given in the legend."""
    n = max(1, len(freqs))
    fig = Figure(figsize=(4.4 * min(n, 3), 3.4 * ((n + 2) // 3)), layout="constrained")
    axes = np.atleast_1d(fig.subplots((n + 2) // 3, min(n, 3), squeeze=False).ravel())
    bins = np.linspace(0, 1, 41)
    if not freqs:
        _empty(axes[0], "no checkpoints analysed")
    for ax, (label, layers) in zip(axes, freqs.items(), strict=False):
        for k, (layer, f) in enumerate(layers.items()):
            f = np.asarray(f, float)
            dead, on = (f < DEAD).mean(), (f > ALWAYS_ON).mean()
            ax.hist(
                f,
                bins=bins,
                histtype="step",
                lw=1.5,
                color=f"C{k % 10}",
                label=f"{layer}: dead {dead:.0%}, always-on {on:.0%}",
            )
        for t in (DEAD, ALWAYS_ON):
            ax.axvline(t, color="k", ls=":", lw=1)
        ax.set_title(label, fontsize="small")
        ax.set_xlabel("activation frequency (share of tokens)")
        ax.set_ylabel("neurons")
        ax.legend(fontsize="x-small")
    for ax in axes[len(freqs) :]:
        ax.set_visible(bool(not freqs and ax is axes[0]))
    fig.suptitle(f"Neuron utilization at {site} (dotted: dead < 1 %, always-on > 99 %)")
    return save_figure(fig, out_png)
