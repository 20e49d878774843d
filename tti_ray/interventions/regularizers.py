"""Regularizers: loss terms on activations or weights (seed repo expt1/expt2, seed 001).

Each returns one term named ``loss`` (logged as ``train/reg/<name>``): a mean over the micro-batch's
tokens and over the intervention's (site, layer) pairs, computed in float32 with autocast off.

| type            | term                                                                   |
|-----------------|------------------------------------------------------------------------|
| ``orthogonality`` | mean |off-diagonal| neuron-neuron cosine on ≤ ``max_tokens`` tokens   |
| ``anti_poly``     | mean per-neuron entropy of |a| over token ids or token categories    |
| ``l1_act``        | mean |a| over tokens × units (the seed's ``acts.abs().mean()``)       |
| ``l2_act``        | mean a² over tokens × units                                          |
| ``weight_l1``     | mean |w| over the MLP weight entries of the chosen sites and layers    |
| ``weight_l2``     | mean w² over the same entries                                        |

Means (not sums) keep the seeds' λ grids meaningful at every model width.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from tti_ray.config.schema import Site
from tti_ray.interventions.categories import CategoryMap, category_map, validate_kind
from tti_ray.interventions.ops import (
    group_mass,
    mean_abs_offdiag_cosine,
    strided_subsample,
)
from tti_ray.interventions.registry import (
    Intervention,
    InterventionConfig,
    SiteKey,
    StepContext,
    flat,
    fp32,
    register_intervention,
)
from tti_ray.metrics.core import entropy_of_mass


class SitePenalty(Intervention):
    """A penalty computed per captured (site, layer) and averaged over them."""

    def capture_sites(self) -> list[SiteKey]:
        # Nothing to capture when the coefficient is 0: the trainer never asks for the terms.
        return self.site_keys() if self.cfg.coef > 0 else []

    def site_term(self, a: torch.Tensor, ctx: StepContext, key: SiteKey) -> torch.Tensor:
        """The penalty for one site; ``a`` is ``[N, D]`` float32."""
        raise NotImplementedError

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        keys = self.site_keys()
        with fp32(acts[keys[0]].device):
            vals = [self.site_term(flat(acts[k]), ctx, k) for k in keys]
        return {"loss": torch.stack(vals).mean()}


# -- orthogonality ----------------------------------------------------------------------------
class OrthogonalityConfig(InterventionConfig):
    """``max_tokens``: tokens per site used for the [D, D] similarity (strided subsample, see
    :func:`tti_ray.interventions.ops.strided_subsample`); ``null`` uses the whole micro-batch."""

    max_tokens: int | None = Field(1024, ge=2)


class Orthogonality(SitePenalty):
    """Seed expt1 "orthogonal": mean |cos(a_i, a_j)| over neuron pairs i ≠ j, where a_i is
    neuron i's activations over the (subsampled) tokens. Decorrelates neurons; the seed found it
    does *not* reduce polysemanticity (essay 3, §2.1.1)."""

    config_cls = OrthogonalityConfig

    def site_term(self, a: torch.Tensor, ctx: StepContext, key: SiteKey) -> torch.Tensor:
        return mean_abs_offdiag_cosine(strided_subsample(a, self.cfg.max_tokens, ctx.step))


# -- anti-polysemanticity -----------------------------------------------------------------------
class AntiPolyConfig(InterventionConfig):
    """``over: token`` - entropy over token ids (seed repo); ``over: category`` - over token
    categories, ``categories: coarse | lexicon | <path to JSON>`` (see
    :mod:`tti_ray.interventions.categories`). ``exclude_other`` drops tokens of the ``other``
    category (unmatched words) from the category distribution, so that firing on unclassified
    tokens neither costs nor earns anything."""

    over: Literal["token", "category"] = "token"
    categories: str = "coarse"
    exclude_other: bool = True

    @field_validator("categories")
    @classmethod
    def _categories_valid(cls, v: str) -> str:
        return validate_kind(v)


class AntiPoly(SitePenalty):
    """Seed expt1 "anti-polysemantic": the mean over neurons of the entropy (nats) of each
    neuron's activation-magnitude distribution over token ids (or categories) in the batch,
    :func:`tti_ray.metrics.polysemanticity` as a loss. Masses are accumulated with
    ``index_add`` in float32 (bf16 would lose small masses under autocast)."""

    config_cls = AntiPolyConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("category_ids", None, persistent=False)  # [vocab] long
        self.category_names: tuple[str, ...] = ()

    def prepare(self, tokens: Any, tokenizer: Any = None) -> None:
        if self.cfg.over == "category":
            self.set_category_map(category_map(self.cfg.categories, tokens, tokenizer))

    def set_category_map(self, cmap: CategoryMap) -> None:
        """Use ``cmap`` (model id -> category) instead of building it in :meth:`prepare`."""
        device = self.category_ids.device if self.category_ids is not None else "cpu"
        self.category_ids = cmap.ids.to(device)
        self.category_names = cmap.names

    def _groups(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
        """(group index per token [N], number of groups, drop the last group?)."""
        ids = token_ids.reshape(-1)
        if self.cfg.over == "token":
            # one unique() per step, shared by every layer (the masses only need compact ids)
            uniq, inverse = torch.unique(ids, return_inverse=True)
            return inverse, int(uniq.numel()), False
        if self.category_ids is None:
            raise RuntimeError(
                f"intervention {self.name!r}: over=category needs prepare(token_data) "
                "or set_category_map() before training"
            )
        if self.category_ids.device != ids.device:
            self.category_ids = self.category_ids.to(ids.device)
        # "other" is the last category of every kind
        return self.category_ids[ids], len(self.category_names), self.cfg.exclude_other

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        group, n_groups, drop_other = self._groups(ctx.token_ids)
        keys = self.site_keys()
        vals = []
        with fp32(acts[keys[0]].device):
            for k in keys:
                mass = group_mass(flat(acts[k]), group, n_groups)  # [G, D]
                vals.append(entropy_of_mass(mass[:-1] if drop_other else mass).mean())
        return {"loss": torch.stack(vals).mean()}


# -- activation norms -----------------------------------------------------------------------------
class L1Act(SitePenalty):
    """Seed expt2 "L1": mean |a| over tokens and units (default site ``mlp_hidden``)."""

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"coef": 1e-2}

    def site_term(self, a: torch.Tensor, ctx: StepContext, key: SiteKey) -> torch.Tensor:
        return a.abs().mean()


class L2Act(SitePenalty):
    """Mean a² over tokens and units (essay 2 / seed 001's L2 counterpart of L1)."""

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"coef": 1e-2}

    def site_term(self, a: torch.Tensor, ctx: StepContext, key: SiteKey) -> torch.Tensor:
        return a.pow(2).mean()


# -- weight norms ---------------------------------------------------------------------------
class WeightPenaltyConfig(InterventionConfig):
    """``sites`` names the weights by the site they produce: ``mlp_hidden`` -> ``c_fc.weight``
    (d_model x d_ff), ``mlp_out`` -> ``c_proj.weight`` (d_ff x d_model). Default: both."""

    sites: list[Site] = Field(default_factory=lambda: ["mlp_hidden", "mlp_out"])


_WEIGHT_OF_SITE = {"mlp_hidden": "c_fc", "mlp_out": "c_proj"}


class WeightPenalty(Intervention):
    """Seed 001's L1 / L2 weight regularization on the MLP weights (biases excluded). Unlike
    AdamW's decoupled weight decay this is a loss term, so it goes through Adam's scaling."""

    config_cls = WeightPenaltyConfig
    power: int = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # plain list of the model's Conv1D modules: not registered, so not saved with ours
        self._weight_owners: list[nn.Module] = []

    def attach(self, model: nn.Module) -> None:
        h = model.transformer.h
        self._weight_owners = [
            getattr(h[layer].mlp, _WEIGHT_OF_SITE[site]) for site, layer in self.site_keys()
        ]

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        if not self._weight_owners:
            raise RuntimeError(f"intervention {self.name!r}: attach(model) before loss_terms")
        weights = [m.weight for m in self._weight_owners]
        with fp32(weights[0].device):
            vals = [w.float().abs().pow(self.power).mean() for w in weights]
        return {"loss": torch.stack(vals).mean()}


class WeightL1(WeightPenalty):
    power = 1


class WeightL2(WeightPenalty):
    power = 2


register_intervention("orthogonality", Orthogonality)
register_intervention("anti_poly", AntiPoly)
register_intervention("l1_act", L1Act)
register_intervention("l2_act", L2Act)
register_intervention("weight_l1", WeightL1)
register_intervention("weight_l2", WeightL2)
