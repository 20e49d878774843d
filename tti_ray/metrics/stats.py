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
    MONOSEMANTIC_THRESHOLD,
    calibrated_entropy_ratio,
    entropy_of_mass,
    mean_abs_offdiag_cosine_from_gram,
    mean_over_live,
    monosemantic_fraction,
    participation_ratio_from_cov,
)

#: Always reported. ``polysemanticity`` is the seed's definition (kept for comparability; it
#: counts dead neurons as entropy 0 and rewards rare firing); ``polysemanticity_live`` averages
#: the same entropy over live neurons only.
BASE_METRICS = (
    "polysemanticity",
    "polysemanticity_norm",
    "polysemanticity_live",
    "mean_abs_cosine",
    "sparsity",
    "dead_fraction",
    "always_on_fraction",
    "effective_dim",
)
#: Reported when the calibration null is on (``eval.permutations > 0``): the metric to optimize.
CALIBRATED_METRICS = ("polysemanticity_calibrated", "monosemantic_fraction")
#: Reported when token categories are named (``eval.categories`` or a category ``anti_poly``).
CATEGORY_METRICS = ("category_polysemanticity_live", "category_polysemanticity_calibrated")
METRICS = BASE_METRICS + CALIBRATED_METRICS + CATEGORY_METRICS
HEADLINE_SITE = "mlp_hidden"


class ActivationStats:
    """Accumulates, for one site of one layer, over token batches:

    mass[u, d] (|a| summed per distinct token id), the same under each calibration permutation
    of the ids over the sample's positions (``null[p, u, d]``, see
    :func:`tti_ray.metrics.core.label_masses`), the Gram matrix AᵀA, column sums, per-neuron
    active counts (|a| >= threshold), and the count of near-zero entries.

    ``id_categories`` (``LongTensor[U]``, the category of each distinct id) adds the category
    metrics: category masses are sums of id masses, so they need no state of their own."""

    def __init__(
        self, n_ids: int, dim: int, threshold: float, device: torch.device, *,
        permutations: int = 0, min_freq: float = 0.01,
        id_categories: torch.Tensor | None = None,
        monosemantic_threshold: float = MONOSEMANTIC_THRESHOLD,
    ) -> None:
        f32 = dict(dtype=torch.float32, device=device)
        self.threshold, self.min_freq = threshold, min_freq
        self.monosemantic_threshold = monosemantic_threshold
        self.id_categories = id_categories
        self.mass = torch.zeros(n_ids, dim, **f32)
        self.null = torch.zeros(permutations, n_ids, dim, **f32)
        self.gram = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.colsum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.active = torch.zeros(dim, dtype=torch.float64, device=device)
        self.near_zero = 0.0
        self.n = 0

    @torch.no_grad()
    def update(
        self, acts: torch.Tensor, id_index: torch.Tensor, null_index: torch.Tensor | None = None
    ) -> None:
        """``acts`` [N, D]; ``id_index`` [N]: index of each token's id among the sample's
        distinct ids (``torch.unique(..., return_inverse=True)``); ``null_index`` [P, N]: the
        same for the permuted sample, ``id_index_all[perms][:, positions of this batch]``."""
        a = acts.reshape(-1, acts.shape[-1]).float()
        a64 = a.double()
        mag = a.abs()
        self.mass.index_add_(0, id_index.reshape(-1), mag)
        if len(self.null):
            assert null_index is not None, "calibration permutations need null_index"
            for p in range(len(self.null)):
                self.null[p].index_add_(0, null_index[p].reshape(-1), mag)
        self.gram += a64.T @ a64
        self.colsum += a64.sum(0)
        big = mag >= self.threshold
        self.active += big.double().sum(0)
        self.near_zero += float((~big).sum())
        self.n += a.shape[0]

    def _by_category(self, mass: torch.Tensor) -> torch.Tensor:
        assert self.id_categories is not None
        cats = self.id_categories.to(mass.device)
        n_cat = int(cats.max()) + 1 if cats.numel() else 0
        return mass.new_zeros(n_cat, mass.shape[-1]).index_add_(0, cats, mass)

    def finalize(self, n_distinct_ids: int) -> dict[str, float | torch.Tensor]:
        n, d = self.n, self.gram.shape[0]
        h = entropy_of_mass(self.mass)
        mu = self.colsum / max(n, 1)
        cov = (self.gram - n * torch.outer(mu, mu)) / max(n - 1, 1)
        freq = self.active / max(n, 1)
        live = (freq >= self.min_freq).cpu()
        out: dict[str, float | torch.Tensor] = {
            "polysemanticity": float(h.mean()),
            "polysemanticity_norm": float(h.mean() / math.log(n_distinct_ids))
            if n_distinct_ids > 1
            else 0.0,
            "polysemanticity_live": mean_over_live(h.cpu(), live),
            "mean_abs_cosine": mean_abs_offdiag_cosine_from_gram(self.gram),
            "sparsity": self.near_zero / max(n * d, 1),
            "dead_fraction": float((freq < self.min_freq).double().mean()),
            "always_on_fraction": float((freq > 0.99).double().mean()),
            "effective_dim": participation_ratio_from_cov(cov),
            # per-neuron vectors, for plots and the neuron browser
            "neuron_entropy": h.cpu(),
            "neuron_frequency": freq.float().cpu(),
        }
        if len(self.null):
            null_h = torch.stack([entropy_of_mass(m) for m in self.null]).cpu()
            cal = calibrated_entropy_ratio(h.cpu(), null_h, live)
            out["polysemanticity_calibrated"] = mean_over_live(cal, live)
            out["monosemantic_fraction"] = monosemantic_fraction(cal, self.monosemantic_threshold)
            out["neuron_calibrated"] = cal
        if self.id_categories is not None:
            hc = entropy_of_mass(self._by_category(self.mass)).cpu()
            out["category_polysemanticity_live"] = mean_over_live(hc, live)
            if len(self.null):
                null_c = torch.stack(
                    [entropy_of_mass(self._by_category(m)) for m in self.null]
                ).cpu()
                out["category_polysemanticity_calibrated"] = mean_over_live(
                    calibrated_entropy_ratio(hc, null_c, live), live
                )
        return out


def site_metrics(
    results: Mapping[tuple[str, int], Mapping[str, float | torch.Tensor]], prefix: str = "val"
) -> dict[str, float]:
    """Flatten per-(site, layer) results into named scalar metrics with layer and site means."""
    out: dict[str, float] = {}
    sites = sorted({s for s, _ in results}, key=lambda s: (s != HEADLINE_SITE, s))
    for site in sites:
        layers = sorted(i for s, i in results if s == site)
        for metric in _present(results):
            vals = [float(results[(site, i)][metric]) for i in layers]
            for i, v in zip(layers, vals, strict=True):
                out[f"{prefix}/{metric}/{site}/layer_{i}"] = v
            out[f"{prefix}/{metric}/{site}/mean"] = sum(vals) / len(vals)
    if sites:
        for metric in _present(results):
            out[f"{prefix}/{metric}/mean"] = out[f"{prefix}/{metric}/{sites[0]}/mean"]
    return out


def _present(results: Mapping[tuple[str, int], Mapping[str, object]]) -> list[str]:
    """The metrics of :data:`METRICS` that every (site, layer) result has, in that order."""
    return [m for m in METRICS if all(m in r for r in results.values())]
