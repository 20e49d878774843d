"""Interpretability metrics as pure functions of activation tensors.

Conventions: ``acts`` is ``[N, D]`` - N tokens, D neurons (units of one site of one layer);
``token_ids`` is ``[N]``. Every function computes in float32 whatever the input dtype.

The definitions follow the seed experiments (hiskuDN/training-time-interpretability, essay 3):
polysemanticity is the entropy of a neuron's activation *magnitude* over token ids, sparsity the
fraction of near-zero activations (|a| < 0.01).
"""

from __future__ import annotations

import math

import torch

EPS = 1e-12


def polysemanticity(acts: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Per-neuron entropy (nats) of the activation-magnitude distribution over token ids.

    For neuron d, with m_d(t) = Σ_{n: token_n = t} |a_{n,d}| (a scatter-add over token ids),

        p_d(t) = m_d(t) / Σ_t' m_d(t'),        H_d = -Σ_t p_d(t) log p_d(t).

    H_d = 0 for a neuron that fires on one token id only and log n when its magnitude is spread
    evenly over n ids. A neuron with zero total magnitude (dead on the sample) gets H_d = 0.
    Returns ``Tensor[D]`` (float32).
    """
    mass = token_mass(acts, token_ids)  # [U, D]
    return entropy_of_mass(mass)


def token_mass(acts: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """m[u, d] = Σ_{n: token_n = u-th distinct id} |a_{n,d}|, float32, shape [U, D]."""
    _, inverse = torch.unique(token_ids.reshape(-1), return_inverse=True)
    a = acts.reshape(inverse.numel(), -1).float().abs()
    mass = a.new_zeros(int(inverse.max()) + 1 if inverse.numel() else 0, a.shape[1])
    return mass.index_add_(0, inverse, a)


def entropy_of_mass(mass: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each column of a non-negative mass matrix ``[U, D]`` -> ``[D]``.

    Columns with zero total mass get 0."""
    mass = mass.float()
    total = mass.sum(0, keepdim=True)
    p = mass / total.clamp_min(EPS)
    h = -(p * torch.log(p.clamp_min(EPS))).sum(0)
    return torch.where(total.squeeze(0) > 0, h, torch.zeros_like(h))


def normalized_polysemanticity(acts: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """:func:`polysemanticity` divided by log(U), U = number of distinct token ids in the sample.

    In [0, 1]; 1 means spread evenly over every token id seen. With U = 1 it is 0."""
    u = int(torch.unique(token_ids).numel())
    h = polysemanticity(acts, token_ids)
    return h / math.log(u) if u > 1 else torch.zeros_like(h)


def mean_abs_cosine(acts: torch.Tensor) -> float:
    """Mean over i ≠ j of |cos(a_i, a_j)|, a_i = neuron i's activation vector over the N tokens.

    Neuron-neuron (columns), not token-token. Zero vectors have cosine 0 with everything.
    Orthogonal columns give 0; identical columns give 1."""
    a = acts.float()
    return mean_abs_offdiag_cosine_from_gram(a.T @ a)


def mean_abs_offdiag_cosine_from_gram(gram: torch.Tensor) -> float:
    """Same as :func:`mean_abs_cosine` from the Gram matrix G = AᵀA ([D, D])."""
    d = gram.shape[0]
    if d < 2:
        return 0.0
    norms = gram.diagonal().clamp_min(0).sqrt()
    cos = gram / (norms[:, None] * norms[None, :]).clamp_min(EPS)
    off = cos.abs().sum() - cos.diagonal().abs().sum()
    return float(off / (d * (d - 1)))


def sparsity(acts: torch.Tensor, threshold: float = 0.01) -> float:
    """Fraction of activations with |a| < threshold over all N·D entries (seed definition)."""
    return float((acts.float().abs() < threshold).float().mean())


def activation_frequency(acts: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Per-neuron fraction of tokens on which |a| >= threshold, ``Tensor[D]``."""
    return (acts.float().abs() >= threshold).float().mean(0)


def dead_fraction(acts: torch.Tensor, threshold: float = 0.01, min_freq: float = 0.01) -> float:
    """Fraction of neurons active (|a| >= threshold) on fewer than ``min_freq`` (1%) of tokens."""
    return float((activation_frequency(acts, threshold) < min_freq).float().mean())


def always_on_fraction(
    acts: torch.Tensor, threshold: float = 0.01, max_freq: float = 0.99
) -> float:
    """Fraction of neurons active (|a| >= threshold) on more than ``max_freq`` (99%) of tokens."""
    return float((activation_frequency(acts, threshold) > max_freq).float().mean())


def participation_ratio(acts: torch.Tensor) -> float:
    """Effective dimensionality PR = (Σ λ_i)² / Σ λ_i² of the activation covariance eigenvalues.

    Equals tr(C)² / tr(C²) for the covariance C (no eigendecomposition needed). 1 for rank-one
    activity, D for isotropic activity over D neurons."""
    a = acts.float()
    n = a.shape[0]
    mu = a.mean(0)
    cov = (a.T @ a - n * torch.outer(mu, mu)) / max(n - 1, 1)
    return participation_ratio_from_cov(cov)


def participation_ratio_from_cov(cov: torch.Tensor) -> float:
    tr = cov.diagonal().sum()
    tr2 = (cov * cov).sum()
    return float(tr * tr / tr2) if tr2 > 0 else 0.0


def perplexity(mean_ce_nats: float) -> float:
    """exp(mean token cross-entropy in nats); inf on overflow."""
    try:
        return math.exp(mean_ce_nats)
    except OverflowError:
        return float("inf")
