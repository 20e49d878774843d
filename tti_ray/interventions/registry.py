"""The intervention registry: typed configs, hook sites, named loss terms.

An intervention is an ``nn.Module`` built from its own config slice and the model config. It may

* declare the activation sites it needs (:meth:`Intervention.capture_sites`); the trainer captures
  them during the forward pass and passes them to :meth:`Intervention.loss_terms`, which returns
  named scalar terms; the trainer adds ``coef(step) * term`` to the cross-entropy and logs each
  term as ``train/reg/<name>`` plus ``train/reg_to_ce_ratio``;
* change the forward pass at a site (:meth:`Intervention.attach`; TopK, L0 gates): such
  *architectural* interventions are re-applied by :func:`tti_ray.train.checkpoint.load_model`,
  and the gates among them also by plain HF loading (:meth:`Intervention.portable_gates`);
* own parameters (L0 gate logits, a joint SAE), optimised with the model and saved in
  ``interventions.safetensors`` next to the HF weights;
* report eval readouts (:meth:`Intervention.readouts`), e.g. the gate open fraction;
* need the vocabulary (:meth:`Intervention.prepare`, called with the token data before
  :meth:`Intervention.attach`), e.g. the token-category map of the category entropy penalty.

Conventions shared by every built-in intervention:

* a loss term is a mean over the tokens of the micro-batch and over the intervention's
  (site, layer) pairs, so its scale does not depend on batch size or on how many layers it covers;
* every term is computed in float32 with autocast disabled, whatever the model's dtype;
* parameters are initialised from a private generator seeded from ``torch.initial_seed()`` and
  the intervention's name, so adding an intervention never shifts the global RNG stream (a run
  with every coefficient at 0 is bit-identical to the baseline);
* an architectural intervention in its disabled setting (:meth:`Intervention.disabled_config`)
  registers no hook at all.

Registering the same name twice is an error (SAELens ``register_sae_class`` style). The registry
itself is :data:`tti_ray.config.schema.INTERVENTIONS`, on the ground floor, so that config
validation never imports this package; importing it registers the built-ins.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from tti_ray.config.base import KeyPathError  # noqa: F401 - part of this module's API
from tti_ray.config.schema import (  # noqa: F401 - the registry's config side, re-exported
    INTERVENTIONS,
    InterventionConfig,
    ModelConfig,
    check_against_model,
    parse_interventions,
)

if TYPE_CHECKING:
    from tti_ray.data.tokens import TextTokenizer, TokenData

SiteKey = tuple[str, int]  # (site name, layer index)


@dataclass(frozen=True)
class StepContext:
    """What a loss term may need besides activations."""

    token_ids: torch.Tensor  # [B, T] input ids of the micro-batch
    step: int


class Intervention(nn.Module):
    """Base class. Subclasses set ``config_cls`` and override what they need."""

    config_cls: ClassVar[type[InterventionConfig]] = InterventionConfig
    #: True when the intervention changes the forward pass (re-applied on load).
    architectural: ClassVar[bool] = False

    def __init__(self, name: str, cfg: InterventionConfig, model_cfg: ModelConfig) -> None:
        super().__init__()
        self.name, self.cfg, self.model_cfg = name, cfg, model_cfg
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- test protocol --------------------------------------------------------------------
    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """A small, active setting (nonzero coefficient) for the shared test suite."""
        return {"coef": 0.1}

    @classmethod
    def disabled_config(cls) -> dict[str, Any]:
        """Overrides that make the intervention an exact no-op (baseline loss and gradients)."""
        return {"coef": 0.0}

    # -- where it acts ---------------------------------------------------------------------
    def layer_indices(self) -> list[int]:
        layers = self.cfg.layers
        return list(range(self.model_cfg.n_layer)) if layers == "all" else list(layers)

    def site_keys(self) -> list[SiteKey]:
        return [(s, i) for s in self.cfg.sites for i in self.layer_indices()]

    def site_width(self, site: str) -> int:
        """Number of units at a site: ``d_ff`` for ``mlp_hidden``, ``d_model`` otherwise."""
        return self.model_cfg.ff_dim if site == "mlp_hidden" else self.model_cfg.d_model

    def capture_sites(self) -> list[SiteKey]:
        """Sites whose activations :meth:`loss_terms` needs (empty: no loss terms)."""
        return []

    # -- setup ----------------------------------------------------------------------------
    def prepare(self, tokens: TokenData, tokenizer: TextTokenizer | None = None) -> None:
        """Called once with the run's token data before :meth:`attach` (and again on load).

        Interventions that depend on the vocabulary (token categories) build it here. The
        tokenizer is derived from the token cache when not given."""

    def attach(self, model: nn.Module) -> None:
        """Register forward hooks that change the model (architectural interventions), or
        keep references to it (weight penalties, read-only eval hooks).

        Subclasses add their handles to ``self._handles`` so :meth:`remove_hooks` (and a second
        ``attach``) can undo them. Hooks on one site run in attach order: use
        :func:`attach_all` so gates come before read-only hooks."""

    def portable_gates(self) -> list[dict[str, Any]] | None:
        """How a plain-HF model re-applies this intervention's change to the forward pass
        (gate specs for ``config.json``'s ``tti_ray_gates``; see
        :mod:`tti_ray.model.hf_modeling`): ``[]`` when the forward is unchanged (not
        architectural, or in the :meth:`disabled_config` setting), ``None`` when only tti-ray can
        re-apply it. A spec is ``{"type": "topk" | "fixed", "site", "layer", ...}``; a ``fixed``
        gate carries its per-unit ``values`` tensor."""
        if not self.architectural:
            return []
        disabled = self.disabled_config()
        if all(getattr(self.cfg, k) == v for k, v in disabled.items()):
            return []
        return None

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def local_generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """A private generator for parameter init: seeded from the run seed
        (``torch.initial_seed()``) and the intervention name, without touching the global RNG."""
        seed = (torch.initial_seed() + zlib.crc32(self.name.encode())) % (2**63)
        return torch.Generator(device=device).manual_seed(seed)

    # -- training -------------------------------------------------------------------------
    def coef_at(self, step: int) -> float:
        w = self.cfg.coef_warmup_steps
        return self.cfg.coef * (min(1.0, step / w) if w else 1.0)

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        """Named scalar terms; the trainer adds ``coef_at(step) * term`` for each."""
        return {}

    @torch.no_grad()
    def readouts(self) -> dict[str, float]:
        """Eval-time numbers specific to this intervention (logged as ``val/<name>/<key>``)."""
        return {}

    def pop_codes(self, codes: dict[SiteKey, Any]) -> list[Any]:
        """What the last training forward stashed per site (architectural interventions whose
        loss needs their own code), in site order; removed so a stale code is never reused."""
        keys = self.site_keys()
        missing = [k for k in keys if k not in codes]
        if missing:
            raise RuntimeError(
                f"intervention {self.name!r}: no code for {missing}; attach(model) and run a "
                "training forward (model.train(), grad enabled) before loss_terms"
            )
        return [codes.pop(k) for k in keys]

    def per_site(self, key: str, values: Mapping[SiteKey, float]) -> dict[str, float]:
        """``{key: mean}`` plus ``key/layer_<i>`` (or ``key/<site>/layer_<i>`` with several
        sites) when the intervention covers more than one (site, layer)."""
        if not values:
            return {}
        out = {key: sum(values.values()) / len(values)}
        if len(values) > 1:
            several = len({s for s, _ in values}) > 1
            for (site, layer), v in values.items():
                out[f"{key}/{site}/layer_{layer}" if several else f"{key}/layer_{layer}"] = v
        return out


@contextmanager
def fp32(device: torch.device) -> Iterator[None]:
    """Autocast off: loss terms are computed in float32 whatever the forward's dtype."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def flat(a: torch.Tensor) -> torch.Tensor:
    """``[..., D]`` -> ``[N, D]`` float32."""
    return a.reshape(-1, a.shape[-1]).float()


#: the live ``{type: class}`` store of :data:`INTERVENTIONS` (tests patch it)
_REGISTRY: dict[str, type[Intervention]] = INTERVENTIONS._entries


def register_intervention(name: str, cls: type[Intervention]) -> type[Intervention]:
    return INTERVENTIONS.register(name, cls)


def registered() -> dict[str, type[Intervention]]:
    return INTERVENTIONS.entries()


def build_interventions(
    cfgs: Mapping[str, InterventionConfig], model_cfg: ModelConfig
) -> nn.ModuleDict:
    return nn.ModuleDict(
        {name: INTERVENTIONS[cfg.type](name, cfg, model_cfg) for name, cfg in cfgs.items()}
    )


def attach_all(interventions: Mapping[str, Intervention], model: nn.Module) -> None:
    """``attach`` every intervention, architectural ones first (in config order), so that the
    read-only hooks of the others (the joint SAE's eval readouts) see the final site output."""
    ordered = sorted(interventions.values(), key=lambda iv: not iv.architectural)
    for iv in ordered:
        iv.attach(model)
