"""Streaming sufficient statistics, so the metrics of :mod:`tti_ray.metrics.core` can be computed
over a large eval sample batch by batch without holding ``[N, D]`` activations for every site.

``ActivationStats.finalize()`` equals the pure functions applied to the concatenated batches
(tested), and :func:`site_metrics` names the results the way every other module expects:
``<prefix>/<metric>/<site>/layer_<i>``, ``<prefix>/<metric>/<site>/mean``, and the headline
``<prefix>/<metric>/mean`` = the layer mean at ``mlp_hidden`` (where TopK and L1 act, as in the seed
repo's expt2 tables) - or at the first site measured if ``mlp_hidden`` is not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from tti_ray.metrics.core import (
    entropy_of_mass,
    mean_abs_offdiag_cosine_from_gram,
    participation_ratio_from_cov,
)

METRICS = (
    "polysemanticity",
    "polysemanticity_norm",
    "mean_abs_cosine",
    "sparsity",
    "dead_fraction",
    "always_on_fraction",
    "effective_dim",
)
HEADLINE_SITE = "mlp_hidden"


class ActivationStats:
    """Accumulates, for one site of one layer, over token batches:

    mass[u, d] (|a| summed per distinct token id), the Gram matrix AᵀA, column sums, per-neuron
    active counts (|a| >= threshold), and the count of near-zero entries."""

    def __init__(self, n_ids: int, dim: int, threshold: float, device: torch.device) -> None:
        f32 = dict(dtype=torch.float32, device=device)
        self.threshold = threshold
        self.mass = torch.zeros(n_ids, dim, **f32)
        self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.colsum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.active = torch.zeros(dim, dtype=torch.float64, device=device)
        self.near_zero = 0.0
        self.n = 0

    @torch.no_grad()
    def update(self, acts: torch.Tensor, id_index: torch.Tensor) -> None:
        """``acts`` [N, D]; ``id_index`` [N]: index of each token's id among the sample's
        distinct ids (``torch.unique(..., return_inverse=True)``)."""
        a = acts.reshape(-1, acts.shape[-1]).float()
        a64 = a.double()
        self.mass.index_add_(0, id_index.reshape(-1), a.abs())
        self.gram += a64.T @ a64
        self.colsum += a64.sum(0)
        big = a.abs() >= self.threshold
        self.active += big.double().sum(0)
        self.near_zero += float((~big).sum())
        self.n += a.shape[0]

    def finalize(self, n_distinct_ids: int) -> dict[str, float | torch.Tensor]:
        n, d = self.n, self.gram.shape[0]
        h = entropy_of_mass(self.mass)
        mu = self.colsum / max(n, 1)
        cov = (self.gram - n * torch.outer(mu, mu)) / max(n - 1, 1)
        freq = self.active / max(n, 1)
        return {
            "polysemanticity": float(h.mean()),
            "polysemanticity_norm": float(h.mean() / math.log(n_distinct_ids))
            if n_distinct_ids > 1
            else 0.0,
            "mean_abs_cosine": mean_abs_offdiag_cosine_from_gram(self.gram),
            "sparsity": self.near_zero / max(n * d, 1),
            "dead_fraction": float((freq < 0.01).double().mean()),
            "always_on_fraction": float((freq > 0.99).double().mean()),
            "effective_dim": participation_ratio_from_cov(cov),
            # per-neuron vectors, for plots and the neuron browser
            "neuron_entropy": h.cpu(),
            "neuron_frequency": freq.float().cpu(),
        }


def site_metrics(
    results: Mapping[tuple[str, int], Mapping[str, float | torch.Tensor]], prefix: str = "val"
) -> dict[str, float]:
    """Flatten per-(site, layer) results into named scalar metrics with layer and site means."""
    out: dict[str, float] = {}
    sites = sorted({s for s, _ in results}, key=lambda s: (s != HEADLINE_SITE, s))
    for site in sites:
        layers = sorted(i for s, i in results if s == site)
        for metric in METRICS:
            vals = [float(results[(site, i)][metric]) for i in layers]
            for i, v in zip(layers, vals, strict=True):
                out[f"{prefix}/{metric}/{site}/layer_{i}"] = v
            out[f"{prefix}/{metric}/{site}/mean"] = sum(vals) / len(vals)
    if sites:
        for metric in METRICS:
            out[f"{prefix}/{metric}/mean"] = out[f"{prefix}/{metric}/{sites[0]}/mean"]
    return out
