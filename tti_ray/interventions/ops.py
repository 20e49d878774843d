"""Differentiable building blocks of the penalties: pure functions of tensors.

They mirror the eval metrics in :mod:`tti_ray.metrics.core` (which return Python floats and are
not meant for backprop); ``tests/interventions`` checks that both agree. All of them take
``acts`` as ``[N, D]`` - N tokens, D units - and compute in float32.
"""

from __future__ import annotations

import math

import torch

from tti_ray.metrics.core import EPS, entropy_of_mass

#: Louizos et al. (2018) hard-concrete stretch interval (γ, ζ) and temperature β (§4, "we used
#: β = 2/3, γ = −0.1, ζ = 1.1").
HC_GAMMA, HC_ZETA, HC_BETA = -0.1, 1.1, 2.0 / 3.0


def strided_subsample(a: torch.Tensor, max_tokens: int | None, step: int = 0) -> torch.Tensor:
    """At most ``max_tokens`` rows of ``a`` [N, D]: every s-th row, s = ceil(N / max_tokens),
    starting at ``step mod s``.

    Deterministic (no RNG, so an exact resume stays exact) and cheap (a view); the offset moves
    with the step so every position is visited over s consecutive steps."""
    n = a.shape[0]
    if max_tokens is None or n <= max_tokens:
        return a
    stride = math.ceil(n / max_tokens)
    return a[step % stride :: stride][:max_tokens]


def mean_abs_offdiag_cosine(acts: torch.Tensor) -> torch.Tensor:
    """Mean over i ≠ j of |cos(a_i, a_j)|, a_i = column i (one neuron over the N tokens).

    Neuron-neuron ([D, D] similarity), not token-token: the seed repo's fix of the expt-suite
    pseudocode (hiskuDN/training-time-interpretability, src/losses.py). Zero columns have
    cosine 0 with everything. Same value as :func:`tti_ray.metrics.mean_abs_cosine`, as a
    differentiable scalar tensor. 0 for orthogonal columns, 1 for identical ones."""
    a = acts.float()
    d = a.shape[1]
    if d < 2:
        return a.sum() * 0.0
    norms = a.norm(dim=0).clamp_min(EPS)
    u = a / norms  # [N, D] unit columns
    cos = u.T @ u  # [D, D]
    off = cos.abs().sum() - cos.diagonal().abs().sum()
    return off / (d * (d - 1))


def group_mass(acts: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """m[g, d] = Σ_{n: group_n = g} |a_{n,d}|, float32 ``[n_groups, D]`` (an ``index_add``).

    With ``group`` = the compact token index this is :func:`tti_ray.metrics.token_mass`;
    with ``group`` = token category it is the per-category mass. Accumulates in float32 whatever
    the input dtype (bf16 sums over thousands of tokens would lose the small masses)."""
    a = acts.float().abs()
    return a.new_zeros(n_groups, a.shape[1]).index_add(0, group.reshape(-1), a)


def mean_entropy(acts: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Mean over neurons of the entropy (nats) of each neuron's activation-magnitude distribution
    over groups (token ids or token categories), :func:`tti_ray.metrics.entropy_of_mass`.

    0 for a neuron that fires on one group only, log n for one spread evenly over n groups;
    neurons silent on the sample count as 0 (seed repo expt1 "anti-polysemantic" penalty)."""
    return entropy_of_mass(group_mass(acts, group, n_groups)).mean()


def hard_concrete_sample(log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Louizos et al. (2018), eqs. 10-11: s = σ((log u − log(1 − u) + log α) / β),
    s̄ = s (ζ − γ) + γ, z = min(1, max(0, s̄)). ``u`` ~ U(0, 1), same shape as ``log_alpha``."""
    u = u.clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / HC_BETA)
    return (s * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0.0, 1.0)


def hard_concrete_eval(log_alpha: torch.Tensor) -> torch.Tensor:
    """Test-time gate (Louizos et al. 2018, eq. 13): z = min(1, max(0, σ(log α)(ζ − γ) + γ))."""
    return (torch.sigmoid(log_alpha) * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0.0, 1.0)


def hard_concrete_p_open(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z ≠ 0) = σ(log α − β log(−γ / ζ)) (Louizos et al. 2018, eq. 12): the expected L0 of each
    gate, differentiable in log α."""
    return torch.sigmoid(log_alpha - HC_BETA * math.log(-HC_GAMMA / HC_ZETA))


def topk_mask_values(a: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """Keep the ``k`` entries of largest |a| along ``dim`` (exactly k, ties broken by
    ``torch.topk``), zero the rest. Gradient flows to the kept entries only."""
    idx = a.abs().topk(k, dim=dim, sorted=False).indices
    return torch.zeros_like(a).scatter(dim, idx, a.gather(dim, idx))
