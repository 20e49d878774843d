"""Toy-model metrics as pure functions of weight / direction tensors.

Convention: a set of K directions in a D-dimensional space is a ``[D, K]`` matrix whose *columns*
are the directions - the layout of an SAE decoder weight (``nn.Linear(K, D).weight``) and of the
superposition model's ``W`` (``[m, n]``: column i is feature i's embedding). Scalars come back as
``float``, per-direction values as float32 tensors.

Sources: Elhage et al. 2022, "Toy Models of Superposition" (feature norms, superposition measure,
dimensions per feature); seed 001 (stanleyngugi/taming_polysemanticity: MACS, interference, L0,
‖W‖₄⁴, calibrated MACS - here with a non-degenerate null).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

EPS = 1e-12
REPRESENTED_NORM = 0.5  # Elhage et al.: a feature is "represented" when ‖W_i‖ > 0.5
SUPERPOSED_MEASURE = 0.25  # phase threshold on Σ_{j≠i}(Ŵ_i·W_j)², see feature_phases
PHASE_NAMES = ("not represented", "dedicated", "superposition")


# -- geometry of a direction set -------------------------------------------------------------


def unit_columns(d: torch.Tensor) -> torch.Tensor:
    """Columns scaled to unit norm; a zero column stays zero. ``[D, K] -> [D, K]``."""
    d = d.float()
    return d / d.norm(dim=0, keepdim=True).clamp_min(EPS)


def cosine_matrix(d: torch.Tensor) -> torch.Tensor:
    """cos(d_i, d_j) for every pair of columns, ``[K, K]``."""
    u = unit_columns(d)
    return u.T @ u


def macs(d: torch.Tensor) -> float:
    """Mean absolute off-diagonal cosine (seed 001's MACS) over the K(K-1) ordered pairs:

        MACS = 1/(K(K-1)) Σ_{i≠j} |cos(d_i, d_j)|.

    0 for orthogonal directions, 1 for identical (or antipodal) ones. Invariant under any
    permutation of the columns - which is why permuting decoder columns (seed 001's null) gives
    the same value every draw. (The seed averaged over all K² entries, zero diagonal included.)
    """
    k = d.shape[1]
    if k < 2:
        return 0.0
    c = cosine_matrix(d).abs()
    return float((c.sum() - c.diagonal().sum()) / (k * (k - 1)))


def interference(d: torch.Tensor, importances: torch.Tensor) -> float:
    """Importance-weighted interference Σ_{i≠j} cos²(d_i, d_j) I_i I_j over ordered pairs.

    ``importances`` ``[K]`` is the importance attached to each direction; for SAE latents see
    :func:`attach_importances`. Orthogonal directions give 0; K identical directions give
    (ΣI)² − ΣI². Twice seed 001's unordered-pair sum."""
    c2 = cosine_matrix(d).pow(2)
    imp = importances.float()
    w = imp[:, None] * imp[None, :]
    return float((c2 * w).sum() - (c2.diagonal() * w.diagonal()).sum())


def attach_importances(
    d: torch.Tensor, true_dirs: torch.Tensor, importances: torch.Tensor
) -> torch.Tensor:
    """Importance of each direction d_k = importance of the ground-truth feature whose direction
    is closest in axis: I(d_k) = I_{a(k)}, a(k) = argmax_i |cos(d_k, t_i)|.

    ``d`` ``[D, K]``, ``true_dirs`` ``[D, n]``, ``importances`` ``[n]`` -> ``[K]``. Seed 001 used
    0.9^(k mod 8) by latent index instead, which depends on the SAE's arbitrary latent order."""
    match = (unit_columns(true_dirs).T @ unit_columns(d)).abs()  # [n, K]
    return importances.float()[match.argmax(0)]


def feature_recovery(true_dirs: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """For each ground-truth direction t_i, the best signed cosine to any direction:
    r_i = max_k cos(t_i, d_k). ``[D, n], [D, K] -> [n]``; 1 means some latent writes exactly t_i.
    Signed, because a latent that fires (positive activation) adds +d_k."""
    return (unit_columns(true_dirs).T @ unit_columns(d)).max(1).values


# -- calibration against a null ---------------------------------------------------------------


def null_macs(
    dim: int, k: int, draws: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """MACS of ``draws`` sets of k isotropic random directions in R^dim (Gaussian entries),
    ``[draws]``. The null for :func:`calibrated_macs`."""
    r = torch.randn(draws, dim, k, generator=generator)
    u = r / r.norm(dim=1, keepdim=True).clamp_min(EPS)
    c = (u.transpose(1, 2) @ u).abs()
    off = c.sum((1, 2)) - c.diagonal(dim1=1, dim2=2).sum(1)
    return off / (k * (k - 1))


def calibrated_macs(d: torch.Tensor, *, draws: int = 200, seed: int = 0) -> float:
    """MACS z-scored against random directions of the same shape, squashed to [0, 1]:

        z = (MACS(d) − mean_null) / std_null,   calibrated = sigmoid(z).

    0.5 means chance-level overlap, above 0.5 more overlap than random directions, below 0.5
    less (more disentangled). The null draws are seeded (``seed``) so the value is a function of
    ``d``. Seed 001's null permuted the decoder columns; MACS is permutation invariant, so that
    null has zero spread and the z-score is degenerate - random directions are the meaningful
    reference."""
    dim, k = d.shape
    if k < 2:
        return 0.5
    null = null_macs(dim, k, draws, torch.Generator().manual_seed(seed))
    z = (macs(d) - float(null.mean())) / max(float(null.std()), EPS)
    return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))


# -- SAE and weight statistics ----------------------------------------------------------------


def l0_fraction(latents: torch.Tensor, threshold: float = 0.0) -> float:
    """Fraction of latent activations above ``threshold`` over all N·K entries ``[N, K]`` (seed
    001's L0: the mean fraction of latents active per input; with LeakyReLU, > 0 means the
    encoder pre-activation is positive)."""
    return float((latents.float() > threshold).float().mean())


def w4_sparsity(weights: Iterable[torch.Tensor]) -> float:
    """Seed 001's ‖W‖₄⁴ weight sparsity: Σ w⁴ / N over every entry of the weight matrices.

    Not scale-invariant (L2 shrinkage lowers it); see :func:`w4_kurtosis` for the shape alone."""
    w = torch.cat([t.detach().float().reshape(-1) for t in weights])
    return float(w.pow(4).sum() / max(w.numel(), 1))


def w4_kurtosis(weights: Iterable[torch.Tensor]) -> float:
    """Scale-free peakedness N·Σw⁴ / (Σw²)²: 1 when all |w| are equal, ≈3 for Gaussian weights,
    N when one weight carries everything."""
    w = torch.cat([t.detach().float().reshape(-1) for t in weights])
    s2 = float(w.pow(2).sum())
    return float(w.numel() * w.pow(4).sum() / s2**2) if s2 > 0 else 0.0


# -- superposition readouts (Elhage et al. 2022) ---------------------------------------------


def feature_norms(w: torch.Tensor) -> torch.Tensor:
    """‖W_i‖ for each feature column of ``W`` ``[m, n]`` -> ``[n]``."""
    return w.float().norm(dim=0)


def superposition_measure(w: torch.Tensor) -> torch.Tensor:
    """Σ_{j≠i} (Ŵ_i · W_j)² for each feature i (Elhage et al. §3, the colour of their feature
    plots): 0 when feature i has a dimension to itself, ‖W_j‖² per neighbour sharing its
    direction. ``[m, n] -> [n]``; an unembedded feature (W_i = 0) gets 0."""
    u = unit_columns(w)
    dots = (u.T @ w.float()).pow(2)  # [n, n]: (Ŵ_i · W_j)²
    return dots.sum(1) - dots.diagonal()


def features_represented(w: torch.Tensor, threshold: float = REPRESENTED_NORM) -> int:
    """Number of features with ‖W_i‖ > threshold."""
    return int((feature_norms(w) > threshold).sum())


def dims_per_feature(w: torch.Tensor) -> float:
    """Elhage et al.'s dimensions per feature D* = m / ‖W‖_F² (1 without superposition for
    unit-norm features, 1/2 for antipodal pairs)."""
    return w.shape[0] / max(float(w.float().pow(2).sum()), EPS)


def feature_phases(w: torch.Tensor) -> torch.Tensor:
    """Phase of each feature, as in the paper's phase diagrams: 0 = not represented
    (‖W_i‖ ≤ 0.5), 1 = dedicated dimension (represented, superposition measure ≤ 0.25),
    2 = superposition (represented and sharing its direction). ``[m, n] -> long [n]``."""
    rep = feature_norms(w) > REPRESENTED_NORM
    sup = superposition_measure(w) > SUPERPOSED_MEASURE
    return torch.where(rep, 1 + sup.long(), torch.zeros_like(sup, dtype=torch.long))
