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


# -- live neurons and the calibrated (chance-corrected) polysemanticity ---------------------------
def live_mask(acts: torch.Tensor, threshold: float = 0.01, min_freq: float = 0.01) -> torch.Tensor:
    """``BoolTensor[D]``: neurons active (|a| >= ``threshold``) on at least ``min_freq`` (1%) of
    the tokens - the complement of what :func:`dead_fraction` counts."""
    return activation_frequency(acts, threshold) >= min_freq


def position_permutations(n: int, permutations: int, seed: int = 0) -> torch.Tensor:
    """``LongTensor[P, n]``: ``permutations`` random permutations of the n sample positions,
    drawn from a CPU ``torch.Generator`` seeded with ``seed`` (the same on every device and run).
    Shared by every neuron, site and layer, so the calibration null is one fixed shuffle of the
    sample's labels."""
    g = torch.Generator().manual_seed(seed)
    if permutations <= 0:
        return torch.zeros(0, n, dtype=torch.long)
    return torch.stack([torch.randperm(n, generator=g) for _ in range(permutations)])


def label_masses(
    acts: torch.Tensor, labels: torch.Tensor, perms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mass over the labels, observed and under each permutation of the labels over positions.

    With ``inv`` the index of each position's label among the distinct labels (U of them):
    ``mass[u, d] = Σ_{n: inv_n = u} |a_{n,d}|`` (as :func:`token_mass`) and
    ``null[p, u, d] = Σ_{n: inv_{π_p(n)} = u} |a_{n,d}|`` - neuron d's own activations with the
    labels shuffled by the p-th permutation π_p (``perms[p]``).

    Returns (``[U, D]``, ``[P, U, D]``)."""
    _, inverse = torch.unique(labels.reshape(-1), return_inverse=True)
    a = acts.reshape(inverse.numel(), -1).float().abs()
    u = int(inverse.max()) + 1 if inverse.numel() else 0
    mass = a.new_zeros(u, a.shape[1]).index_add_(0, inverse, a)
    null = a.new_zeros(len(perms), u, a.shape[1])
    for p, perm in enumerate(perms):
        null[p].index_add_(0, inverse[perm.to(inverse.device)], a)
    return mass, null


def calibrated_entropy_ratio(
    h: torch.Tensor, null_h: torch.Tensor, live: torch.Tensor
) -> torch.Tensor:
    """``H_d / H̄_d^null`` where ``live[d]``, NaN elsewhere; ``null_h`` is ``[P, D]`` (the entropy
    under each permutation) and H̄ its mean. A live neuron whose null entropy is 0 (it fires at
    one position, or the sample has one label; then H_d = 0 too) gets 1: no evidence either way."""
    null_mean = null_h.mean(0) if len(null_h) else torch.full_like(h, float("nan"))
    ratio = torch.where(null_mean > 0, h / null_mean.clamp_min(EPS), torch.ones_like(h))
    return torch.where(live, ratio, torch.full_like(h, float("nan")))


def calibrated_polysemanticity(
    acts: torch.Tensor,
    token_ids: torch.Tensor,
    permutations: int = 4,
    seed: int = 0,
    threshold: float = 0.01,
    min_freq: float = 0.01,
) -> torch.Tensor:
    """Per-neuron token-id entropy relative to chance for the neuron's own firing pattern.

    For a live neuron d (:func:`live_mask`), with H_d its :func:`polysemanticity` (entropy of the
    activation mass over token ids) and H_d^(p) the same entropy after the p-th random
    permutation π_p of the token ids over the sample's N positions (:func:`position_permutations`,
    fixed by ``seed`` and shared by all neurons),

        C_d = H_d / ((1/P) Σ_p H_d^(p)).

    The permutation null keeps everything about the neuron except the link between its
    activation and token identity: its firing frequency, its magnitudes and the sample's token
    frequencies. So C ≈ 1 for a neuron that is no more token-selective than chance, however rarely
    it fires (the raw entropy of a rarely firing neuron is low only because it sees few tokens),
    and C → 0 for a neuron that fires on one token id. Dead neurons (NaN) are excluded, not
    counted as monosemantic: the seed metric gives them entropy 0. Invariant to relabelling the
    ids (entropy ignores label names; the permutations act on positions). ``token_ids`` may be
    any per-position labels, e.g. token categories. Returns ``Tensor[D]`` (float32).

    The ratio follows the calibration-against-a-null idea of the toy suite's calibrated MACS
    (random directions as the null) and of permutation tests (Good 2005, *Permutation,
    Parametric and Bootstrap Tests of Hypotheses*); the plug-in entropy's downward bias for few
    samples (Miller 1955) affects H_d and the null alike, which is what the ratio removes.
    """
    n = token_ids.numel()
    mass, null = label_masses(acts, token_ids, position_permutations(n, permutations, seed))
    h = entropy_of_mass(mass)
    null_h = torch.stack([entropy_of_mass(m) for m in null]) if len(null) else null.new_zeros(0)
    return calibrated_entropy_ratio(h, null_h, live_mask(acts, threshold, min_freq))


def mean_over_live(values: torch.Tensor, live: torch.Tensor) -> float:
    """Mean of ``values[live]``; NaN when no neuron is live (the quantity is undefined)."""
    v = values.float()[live]
    return float(v.mean()) if v.numel() else float("nan")


MONOSEMANTIC_THRESHOLD = 0.5


def monosemantic_fraction(
    calibrated: torch.Tensor, threshold: float = MONOSEMANTIC_THRESHOLD
) -> float:
    """Share of live neurons (finite :func:`calibrated_polysemanticity`) with C_d < ``threshold``.

    With the default 0.5 a neuron counts as monosemantic when its entropy is under half of
    chance's, i.e. its effective number of token ids exp(H_d) is below the square root of the
    effective number a token-blind neuron with the same firing pattern would spread over
    (e.g. < 12 ids where chance gives 150). An automated stand-in for essay 3's manual count of
    "clearly monosemantic" neurons. NaN when no neuron is live."""
    live = torch.isfinite(calibrated)
    return float((calibrated[live] < threshold).float().mean()) if live.any() else float("nan")
