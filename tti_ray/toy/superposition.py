"""Toy Models of Superposition (Elhage et al. 2022, §2-3): ``x̂ = ReLU(WᵀW x + b)``.

Features x_i ∈ [0, 1] are active with probability p (= 1 − S) and weighted by importance
I_i = decay^i in the reconstruction loss; an optional L1 penalty λ·E[Σ_k |h_k|] on the hidden
h = Wx is seed 004's "sparsity knob". Many independent instances (restarts, or the points of a
phase-diagram grid, each with its own p, importance and λ) train side by side as one batched
model, so a whole 2-feature phase diagram costs about as much as a single run.

Loss per instance (the paper's colab): mean over batch and features of I_i (x_i − x̂_i)², plus
λ · mean over batch of Σ_k |h_k|.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from tti_ray.toy import metrics as M
from tti_ray.toy.config import SuperpositionConfig
from tti_ray.trials import TrialStatus

GRID_FIELDS = ("feature_prob", "importance_decay", "l1_penalty")
MAX_PER_FEATURE = 16  # per-feature metrics are reported for at most this many features

EvalHook = Callable[[dict[str, float], int], None]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the setting afterwards. Toy tensors are far
    below torch's parallel grain, so extra threads only add synchronisation - 6-8x slower on a
    loaded 2-core machine - and a sweep already runs one trial per core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ToyResult:
    """What a toy workload hands back to :func:`tti_ray.toy.run.run_toy`."""

    metrics: dict[str, float]
    tensors: dict[str, torch.Tensor]
    step: int
    status: str = TrialStatus.FINISHED.value


def sample_features(
    prob: torch.Tensor, n_features: int, batch: int, generator: torch.Generator
) -> torch.Tensor:
    """Sparse features ``[I, B, n]``: x_i ~ U[0, 1] with probability ``prob[I]``, else 0.

    One uniform u per (sample, feature), shared by all instances (common random numbers, so
    restarts are compared on the same data): active iff u < p, and then u / p ~ U[0, 1]."""
    p = prob[:, None, None]
    u = torch.rand(1, batch, n_features, generator=generator)
    return torch.where(u < p, u / p, torch.zeros(()))


def forward(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` [I, m, n], ``b`` [I, n], ``x`` [I, B, n] -> (x̂ [I, B, n], h [I, B, m])."""
    h = torch.bmm(x, w.transpose(1, 2))
    out = torch.relu(torch.baddbmm(b[:, None, :], h, w))
    return out, h


def instance_losses(
    w: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor,
    importance: torch.Tensor,
    l1: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted reconstruction MSE [I], hidden L1 E[Σ_k|h_k|] [I]) - the objective is mse + λ·l1."""
    out, h = forward(w, b, x)
    mse = (importance[:, None, :] * (x - out).pow(2)).mean((1, 2))
    return mse, h.abs().sum(-1).mean(1)


class Trained(NamedTuple):
    """Batched training result; eval quantities are on one fixed eval batch, per instance."""

    w: torch.Tensor  # [I, m, n]
    b: torch.Tensor  # [I, n]
    mse: torch.Tensor  # [I] importance-weighted reconstruction MSE
    hidden_l1: torch.Tensor  # [I] E[Σ_k |h_k|]
    objective: torch.Tensor  # [I] mse + λ·hidden_l1 (NaN -> inf, so argmin skips it)
    steps: int
    diverged: bool


def train_instances(
    *,
    n_features: int,
    n_hidden: int,
    prob: torch.Tensor,
    importance: torch.Tensor,
    l1: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    eval_samples: int = 8192,
    eval_every: int = 0,
    on_eval: Callable[[Trained], None] | None = None,
) -> Trained:
    """Train I independent instances (``prob`` [I], ``importance`` [I, n], ``l1`` [I]).

    Adam with a cosine decay to 5% of ``lr``; W ~ Xavier normal, b = 0, as in the paper.
    ``on_eval(snapshot)`` runs every ``eval_every`` steps (before the last)."""
    with single_thread():
        n_inst = prob.shape[0]
        g_init = torch.Generator().manual_seed(seed * 1009 + 1)
        g_data = torch.Generator().manual_seed(seed * 1009 + 2)
        g_eval = torch.Generator().manual_seed(seed * 1009 + 3)
        std = math.sqrt(2.0 / (n_features + n_hidden))
        w = (torch.randn(n_inst, n_hidden, n_features, generator=g_init) * std).requires_grad_()
        b = torch.zeros(n_inst, n_features, requires_grad=True)
        x_eval = sample_features(prob, n_features, eval_samples, g_eval)
        opt = torch.optim.Adam([w, b], lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )

        def snapshot(step: int, diverged: bool) -> Trained:
            with torch.no_grad():
                mse, hl1 = instance_losses(w, b, x_eval, importance, l1)
                obj = torch.nan_to_num(mse + l1 * hl1, nan=math.inf)
            return Trained(w.detach().clone(), b.detach().clone(), mse, hl1, obj, step, diverged)

        step = 0
        for step in range(1, steps + 1):
            x = sample_features(prob, n_features, batch_size, g_data)
            mse, hl1 = instance_losses(w, b, x, importance, l1)
            loss = (mse + l1 * hl1).sum()
            if not torch.isfinite(loss):
                return snapshot(step, True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if on_eval is not None and eval_every and step % eval_every == 0 and step < steps:
                on_eval(snapshot(step, False))
        return snapshot(step, False)


def readouts(w: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Named readouts of one trained model (``w`` [m, n], ``b`` [n]); see :mod:`tti_ray.toy`."""
    norms = M.feature_norms(w)
    sup = M.superposition_measure(w)
    rep = norms > M.REPRESENTED_NORM
    phases = M.feature_phases(w)
    out = {
        "toy/features_represented": float(rep.sum()),
        "toy/superposition/mean": float(sup[rep].mean()) if rep.any() else 0.0,
        "toy/dims_per_feature": M.dims_per_feature(w),
        "toy/phase": float(phases[-1]),
    }
    if w.shape[1] <= MAX_PER_FEATURE:
        for i in range(w.shape[1]):
            out[f"toy/norm/{i}"] = float(norms[i])
            out[f"toy/superposition/{i}"] = float(sup[i])
            out[f"toy/bias/{i}"] = float(b[i])
    return out


def importances(n_features: int, decay: float | torch.Tensor) -> torch.Tensor:
    """I_i = decay^i, ``[n]`` for a float decay or ``[I, n]`` for a tensor of decays ``[I]``."""
    expo = torch.arange(n_features, dtype=torch.float32)
    if isinstance(decay, torch.Tensor):
        return decay.float()[:, None] ** expo[None, :]
    return torch.tensor(float(decay)) ** expo


def train_superposition(
    cfg: SuperpositionConfig, *, seed: int, on_eval: EvalHook | None = None
) -> ToyResult:
    """One run: ``cfg.restarts`` instances, keep the lowest-objective one."""
    r = cfg.restarts

    def best(t: Trained) -> dict[str, float]:
        k = int(t.objective.argmin())
        return {
            "toy/loss": float(t.mse[k]),
            "toy/hidden_l1": float(t.hidden_l1[k]),
            "toy/objective": float(t.mse[k] + cfg.l1_penalty * t.hidden_l1[k]),
            **readouts(t.w[k], t.b[k]),
        }

    t = train_instances(
        n_features=cfg.n_features, n_hidden=cfg.n_hidden, prob=torch.full((r,), cfg.feature_prob),
        importance=importances(cfg.n_features, cfg.importance_decay).expand(r, -1),
        l1=torch.full((r,), cfg.l1_penalty), steps=cfg.steps, batch_size=cfg.batch_size,
        lr=cfg.lr, seed=seed, eval_samples=cfg.eval_samples, eval_every=cfg.eval_every,
        on_eval=None if on_eval is None else (lambda snap: on_eval(best(snap), snap.steps)),
    )  # fmt: skip
    k = int(t.objective.argmin())
    metrics = best(t)
    finite = all(math.isfinite(v) for v in metrics.values())
    return ToyResult(
        metrics=metrics,
        tensors={"W": t.w[k].contiguous(), "b": t.b[k].contiguous()},
        step=t.steps,
        status=(TrialStatus.FINISHED if finite and not t.diverged
                else TrialStatus.DIVERGED).value,
    )


# -- phase diagrams -------------------------------------------------------------------------


def phase_grid(
    base: SuperpositionConfig,
    *,
    x: tuple[str, Sequence[float]] = ("importance_decay", (0.1, 0.3, 1.0, 3.0, 10.0)),
    y: tuple[str, Sequence[float]] = ("feature_prob", (1.0, 0.3, 0.1, 0.03, 0.01)),
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train every (x, y) grid point of ``base`` - x and y name fields among ``feature_prob``,
    ``importance_decay``, ``l1_penalty`` - as one batched model with ``base.restarts`` instances
    per point; return one record per point: the two field values plus :func:`readouts`.

    The defaults reproduce Elhage et al.'s 2-feature / 1-neuron diagram (relative importance of
    the second feature × feature density) when ``base`` has n_features=2, n_hidden=1."""
    (xn, xv), (yn, yv) = x, y
    for name in (xn, yn):
        if name not in GRID_FIELDS:
            raise ValueError(f"grid axis {name!r} must be one of {GRID_FIELDS}")
    if xn == yn:
        raise ValueError("x and y must be different fields")
    points = [{xn: float(a), yn: float(c)} for c in yv for a in xv]
    r = base.restarts
    settings = {f: torch.tensor([float(p.get(f, getattr(base, f))) for p in points for _ in range(r)])
                for f in GRID_FIELDS}  # fmt: skip
    t = train_instances(
        n_features=base.n_features, n_hidden=base.n_hidden, prob=settings["feature_prob"],
        importance=importances(base.n_features, settings["importance_decay"]),
        l1=settings["l1_penalty"], steps=base.steps, batch_size=base.batch_size, lr=base.lr,
        seed=seed, eval_samples=min(base.eval_samples, 2048),
    )  # fmt: skip
    records = []
    for i, point in enumerate(points):
        k = i * r + int(t.objective[i * r : (i + 1) * r].argmin())
        obj = float(t.objective[k])
        records.append({**point, "toy/objective": obj, **readouts(t.w[k], t.b[k])})
    return records


_PHASE_COLORS = ("#d9d9d9", "#3b75af", "#c0392b")


def _lookup(record: Mapping[str, object], name: str) -> float:
    for key in (name, f"toy.{name}", f"config/toy.{name}"):
        if key in record:
            return float(record[key])  # type: ignore[arg-type]
    raise KeyError(f"record has no {name!r} (nor toy.{name}): keys {sorted(record)[:8]}...")


def phase_diagram(
    results: Sequence[Mapping[str, object]],
    out_png: str | Path,
    *,
    x: str = "importance_decay",
    y: str = "feature_prob",
    title: str | None = None,
) -> Path:
    """Render the paper-style phase diagram of the last feature (the "extra" feature whose
    importance varies) as a PNG: one cell per record, coloured by ``toy/phase`` (grey: not
    represented, blue: dedicated dimension, red: superposition). Records come from
    :func:`phase_grid` or from sweep results (keys ``x``/``y``, or ``toy.<x>``, plus
    ``toy/phase``). Axes are logarithmic when the values span more than a factor 10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    if not results:
        raise ValueError("phase_diagram needs at least one record")
    xs = [_lookup(r, x) for r in results]
    ys = [_lookup(r, y) for r in results]
    ph = [int(_lookup(r, "toy/phase")) if "toy/phase" in r else 0 for r in results]
    fig, ax = plt.subplots(figsize=(5.2, 4.4), dpi=120)
    ux, uy = sorted(set(xs)), sorted(set(ys))
    cmap = ListedColormap(_PHASE_COLORS)
    norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5], cmap.N)
    logx = min(ux) > 0 and max(ux) / min(ux) > 10
    logy = min(uy) > 0 and max(uy) / min(uy) > 10
    if len(ux) * len(uy) == len(results) and len(ux) > 1 and len(uy) > 1:
        grid = torch.full((len(uy), len(ux)), -1.0)
        for a, c, p in zip(xs, ys, ph):
            grid[uy.index(c), ux.index(a)] = p
        ax.pcolormesh(_edges(ux, logx), _edges(uy, logy), grid.numpy(), cmap=cmap, norm=norm)
    else:
        ax.scatter(xs, ys, c=ph, cmap=cmap, norm=norm, marker="s", s=120, edgecolors="k")
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel({"importance_decay": "relative importance of the extra feature",
                   "feature_prob": "feature density (1 − S)",
                   "l1_penalty": "L1 penalty on hidden activations"}.get(x, x))  # fmt: skip
    ax.set_ylabel({"feature_prob": "feature density (1 − S)",
                   "l1_penalty": "L1 penalty on hidden activations",
                   "importance_decay": "relative importance of the extra feature"}.get(y, y))  # fmt: skip
    ax.set_title(title or "Superposition phase diagram (last feature)")
    ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(_PHASE_COLORS, M.PHASE_NAMES)],
              loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize=8, frameon=False)  # fmt: skip
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _edges(values: list[float], log: bool) -> list[float]:
    """Cell edges around sorted centres (geometric midpoints on a log axis)."""
    v = [math.log(a) for a in values] if log else list(values)
    mids = [(a + c) / 2 for a, c in itertools.pairwise(v)]
    e = [v[0] - (mids[0] - v[0]), *mids, v[-1] + (v[-1] - mids[-1])]
    return [math.exp(a) for a in e] if log else e
