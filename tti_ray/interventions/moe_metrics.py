"""Routing, losses and readouts of the Mixture-of-Experts intervention, as pure functions.

Conventions: ``logits`` / ``probs`` are ``[N, E]`` router outputs for N tokens and E experts,
``categories`` is ``[N]`` (token category ids, :mod:`tti_ray.interventions.categories`). Every
function computes in float32 (float64 where it accumulates counts); entropies are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tti_ray.metrics.core import EPS, entropy_of_mass


@dataclass(frozen=True)
class Routing:
    """The result of :func:`route` for N tokens, E experts, top-k routing."""

    logits: torch.Tensor  # [N, E] float32
    probs: torch.Tensor  # [N, E] softmax of logits
    experts: torch.Tensor  # [N, k] chosen experts, best first
    gates: torch.Tensor  # [N, k] gate weight of each choice (before capacity)
    kept: torch.Tensor  # [N, k] bool: the choice fit in its expert's capacity
    combine: torch.Tensor  # [N, E] weight of each expert's output (0: not chosen or dropped)


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """C = ceil(capacity_factor · k · N / E): Fedus et al. (2021), "Switch Transformers", eq. 3
    (expert capacity = tokens per batch / experts × capacity factor), times k for top-k routing
    (Lepikhin et al. 2021, GShard, §2.2: 2N/E for top-2)."""
    return max(1, math.ceil(capacity_factor * top_k * n_tokens / n_experts))


def route(logits: torch.Tensor, top_k: int, capacity_factor: float | None) -> Routing:
    """Softmax router with top-k choice and expert capacity.

    p = softmax(logits); each token picks its k most probable experts. Gates: top-1 uses the
    router probability itself, g = p_e (Switch, Fedus et al. 2021 eq. 2, so the router gets a
    gradient from the LM loss); top-k > 1 renormalises over the chosen experts,
    g_e = p_e / Σ_{chosen} p (Mixtral / GShard), so the gates of a token sum to 1.

    Capacity: each expert serves at most C = :func:`expert_capacity` (token, choice) pairs; the
    rest are *dropped* (combine weight 0: no output from that expert; GShard does not
    renormalise the surviving gate). Priority is all first choices before any second choice,
    and within a choice rank the row order of ``logits`` (the caller puts rows in position
    order, so a token is never dropped because of a *later* token of its own sequence).
    ``capacity_factor=None``: unlimited capacity, nothing is dropped."""
    n, e = logits.shape
    logits = logits.float()
    probs = logits.softmax(-1)  # [N, E]
    top_p, experts = probs.topk(top_k, dim=-1)  # [N, k]
    gates = top_p if top_k == 1 else top_p / top_p.sum(-1, keepdim=True)
    if capacity_factor is None:
        kept = torch.ones_like(experts, dtype=torch.bool)
    else:
        cap = expert_capacity(n, e, top_k, capacity_factor)
        onehot = F.one_hot(experts, e).transpose(0, 1).reshape(top_k * n, e)  # [k·N, E]
        pos = (onehot.cumsum(0) * onehot).sum(-1)  # 1-based slot in the chosen expert's buffer
        kept = (pos <= cap).view(top_k, n).T  # [N, k]
    combine = probs.new_zeros(n, e).scatter_add(1, experts, gates * kept)
    return Routing(logits, probs, experts, gates, kept, combine)


def gate_hidden(hidden: torch.Tensor, combine: torch.Tensor, expert_width: int) -> torch.Tensor:
    """Scale the MLP's hidden units by their expert's combine weight.

    ``hidden`` ``[..., F]`` (post-activation), ``combine`` ``[..., E]``; expert e owns units
    [e·w, (e+1)·w); units from E·w on (when E·w < F) are an always-on shared expert (weight 1).
    After ``c_proj`` this is b_proj + Σ_e combine_e · E_e(x) + shared(x), E_e(x) = expert e's
    GPT-2 MLP on its slice of ``c_fc`` / ``c_proj``."""
    n_e = combine.shape[-1]
    w = combine.to(hidden.dtype).repeat_interleave(expert_width, dim=-1)  # [..., E·w]
    rest = hidden.shape[-1] - n_e * expert_width
    if rest:
        w = torch.cat([w, w.new_ones(*w.shape[:-1], rest)], dim=-1)
    return hidden * w


# -- losses ---------------------------------------------------------------------------------------
def load_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """Switch Transformer auxiliary load-balancing loss (Fedus et al. 2021, eqs. 4-6):

        L = E · Σ_e f_e · P_e,   f_e = (1/N) Σ_x 1{argmax p(x) = e},   P_e = (1/N) Σ_x p_e(x).

    1 under uniform routing (f = P = 1/E); E when every token goes to one expert with
    probability 1. Only P carries a gradient (f is a count)."""
    n_e = probs.shape[-1]
    p = probs.float()
    f = F.one_hot(p.argmax(-1), n_e).float().mean(0)  # [E]
    return n_e * (f * p.mean(0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """Router z-loss (Zoph et al. 2022, "ST-MoE", eq. 5): (1/N) Σ_x (log Σ_e exp z_e(x))²;
    keeps router logits small for numerical stability."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def category_prob_sums(
    probs: torch.Tensor, categories: torch.Tensor, n_categories: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S [C, E], n [C]): S[c] = Σ_{x in category c} p(x), n[c] = number of such tokens."""
    cats = categories.reshape(-1)
    p = probs.float()
    sums = p.new_zeros(n_categories, p.shape[-1]).index_add(0, cats, p)
    counts = torch.bincount(cats, minlength=n_categories).to(p)
    return sums, counts


def category_entropy_from_sums(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over the categories present (n[c] > 0) of H(expert | category = c), the entropy of
    P(e | c) = S[c, e] / n[c] (mean router probability over the category's tokens). 0 when
    there is no category."""
    h = entropy_of_mass(sums.T)  # [C]: each column of S.T normalised to P(· | c)
    present = counts > 0
    if not bool(present.any()):
        return sums.sum() * 0.0
    return h[present].mean()


def specialization_entropy(
    probs: torch.Tensor, categories: torch.Tensor, n_categories: int
) -> torch.Tensor:
    """The specialization loss: mean over token categories c of H(expert | category = c), with
    P(e | c) the mean router probability of c's tokens (soft, so it is differentiable).

    0 when every category's tokens route to one expert with probability 1 (also under collapse
    onto a single expert: pair it with :func:`load_balance_loss`); log E under uniform routing.
    Categories are unweighted (a rare category counts as much as a frequent one)."""
    return category_entropy_from_sums(*category_prob_sums(probs, categories, n_categories))


# -- readouts -------------------------------------------------------------------------------------
def entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) = −Σ p log p (nats) of the last dim of a non-negative tensor, normalised first;
    0 log 0 = 0, an all-zero vector has H = 0."""
    p = p.double()
    total = p.sum(-1, keepdim=True)
    q = p / total.clamp_min(EPS)
    h = -(q * torch.log(q.clamp_min(EPS))).sum(-1)
    return torch.where(total.squeeze(-1) > 0, h, torch.zeros_like(h))


def normalized_entropy(counts: torch.Tensor) -> float:
    """H(counts / Σ counts) / log E for E = ``counts.numel()`` bins: 1 for a uniform
    distribution, 0 for all mass on one bin."""
    n = counts.numel()
    return float(entropy(counts)) / math.log(n) if n > 1 else 0.0


def mutual_information(joint: torch.Tensor) -> float:
    """I(E; C) = H(E) + H(C) − H(E, C) (nats) of the empirical joint distribution given by a
    count table ``joint`` ``[E, C]`` (expert × category; Cover & Thomas 2006, eq. 2.45).

    0 when expert and category are independent (joint = outer product of its marginals);
    log n for a deterministic bijection between n experts and n categories."""
    j = joint.double()
    if j.sum() <= 0:
        return 0.0
    mi = entropy(j.sum(1)) + entropy(j.sum(0)) - entropy(j.reshape(-1))
    return max(float(mi), 0.0)


def normalized_mutual_information(joint: torch.Tensor) -> float:
    """I(E; C) / H(E) ∈ [0, 1]: the fraction of the expert-choice entropy explained by the token
    category (1: the category determines the expert). 0 when H(E) = 0 (a single expert used)."""
    h_e = float(entropy(joint.double().sum(1)))
    return mutual_information(joint) / h_e if h_e > 1e-12 else 0.0


def ablation_summary(rows: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """Compact scalars of one layer's expert-ablation table.

    ``rows`` ``{e: {category: ΔCE_e(c), ..., "all": ΔCE_e}}`` for the experts e of one layer, as
    :func:`tti_ray.interventions.moe.expert_ablation_by_category` returns them (ΔCE in nats,
    CE with expert e ablated minus intact, averaged over the tokens of category c, or over all
    tokens). Returns

    * ``dce/expert_<e>`` = ΔCE_e on all tokens (how much the loss needs expert e);
    * ``max_dce`` = max_e ΔCE_e (the most needed expert);
    * ``specificity`` = (1/E) Σ_e [max_c ΔCE_e(c) − ΔCE_e], nats: how much more an expert's
      ablation hurts its most affected category than the average token. ΔCE_e is the
      token-weighted mean of the ΔCE_e(c), so each bracket is ≥ 0 and the score is 0 exactly
      when, for every expert, all categories present lose the same amount (ablating an expert
      hurts every category alike: no category specialization); an expert with no category
      entries counts 0. The max runs over every category present (``other`` included, as in
      ΔCE_e), so a rare category's noisy mean can inflate it on a small sample.

    An empty ``rows`` gives ``{}``."""
    if not rows:
        return {}
    out: dict[str, float] = {}
    gaps = []
    for e in sorted(rows):
        row = rows[e]
        dce = float(row["all"])
        out[f"dce/expert_{e}"] = dce
        cats = [float(v) for k, v in row.items() if k != "all"]
        gaps.append(max(cats) - dce if cats else 0.0)
    out["max_dce"] = max(out[f"dce/expert_{e}"] for e in rows)
    out["specificity"] = sum(gaps) / len(gaps)
    return out
