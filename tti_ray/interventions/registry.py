"""The intervention registry: typed configs, hook sites, named loss terms.

An intervention is an ``nn.Module`` built from its own config slice and the model config. It may

* declare the activation sites it needs (:meth:`Intervention.capture_sites`); the trainer captures
  them during the forward pass and passes them to :meth:`Intervention.loss_terms`, which returns
  named scalar terms; the trainer adds ``coef(step) * term`` to the cross-entropy and logs each
  term as ``train/reg/<name>`` plus ``train/reg_to_ce_ratio``;
* change the forward pass at a site (:meth:`Intervention.attach`; TopK, L0 gates): such
  *architectural* interventions are re-applied by :func:`tti_ray.train.checkpoint.load_model`;
* own parameters (L0 gate logits, a joint SAE), optimised with the model and saved in
  ``interventions.safetensors`` next to the HF weights;
* report eval readouts (:meth:`Intervention.readouts`), e.g. the gate open fraction.

Registering the same name twice is an error (SAELens ``register_sae_class`` style).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, ValidationError, field_validator
from torch import nn

from tti_ray.config.schema import ModelConfig, Section, Site

SiteKey = tuple[str, int]  # (site name, layer index)


class KeyPathError(Exception):
    """A config problem at a dotted key path; formatted by the loader as ``file: path: msg``.

    Deliberately not a ``ValueError`` so it passes through pydantic validators unchanged."""

    def __init__(self, path: str, msg: str) -> None:
        super().__init__(f"{path}: {msg}")
        self.path, self.msg = path, msg


class InterventionConfig(Section):
    """Fields every intervention has.

    ``coef`` multiplies the loss terms (architectural-only interventions may ignore it);
    ``coef_warmup_steps`` ramps it linearly from 0 over that many steps; ``sites`` and ``layers``
    pick where it acts (``"all"`` or a list of layer indices)."""

    type: str
    coef: float = Field(0.0, ge=0.0)
    coef_warmup_steps: int = Field(0, ge=0)
    sites: list[Site] = Field(default_factory=lambda: ["mlp_hidden"])
    layers: Literal["all"] | list[int] = "all"

    @field_validator("sites")
    @classmethod
    def _sites_nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one site")
        return list(dict.fromkeys(v))

    @field_validator("layers")
    @classmethod
    def _layers_valid(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("needs at least one layer (or 'all')")
            if any(i < 0 for i in v):
                raise ValueError("layer indices must be >= 0")
            return sorted(set(v))
        return v


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

    # -- where it acts ---------------------------------------------------------------------
    def layer_indices(self) -> list[int]:
        layers = self.cfg.layers
        return list(range(self.model_cfg.n_layer)) if layers == "all" else list(layers)

    def site_keys(self) -> list[SiteKey]:
        return [(s, i) for s in self.cfg.sites for i in self.layer_indices()]

    def capture_sites(self) -> list[SiteKey]:
        """Sites whose activations :meth:`loss_terms` needs (empty: no loss terms)."""
        return []

    # -- training -------------------------------------------------------------------------
    def coef_at(self, step: int) -> float:
        w = self.cfg.coef_warmup_steps
        return self.cfg.coef * (min(1.0, step / w) if w else 1.0)

    def attach(self, model: nn.Module) -> None:
        """Register forward hooks that change the model (architectural interventions)."""

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        """Named scalar terms; the trainer adds ``coef_at(step) * term`` for each."""
        return {}

    @torch.no_grad()
    def readouts(self) -> dict[str, float]:
        """Eval-time numbers specific to this intervention (logged as ``val/<name>/<key>``)."""
        return {}


_REGISTRY: dict[str, type[Intervention]] = {}


def register_intervention(name: str, cls: type[Intervention]) -> type[Intervention]:
    if name in _REGISTRY:
        raise ValueError(f"intervention {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def registered() -> dict[str, type[Intervention]]:
    return dict(_REGISTRY)


def parse_interventions(v: Any) -> dict[str, InterventionConfig]:
    """Validate the ``interventions`` mapping, each entry by its own config class."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise KeyPathError("interventions", "must be a mapping of name -> settings")
    out: dict[str, InterventionConfig] = {}
    for name, entry in v.items():
        path = f"interventions.{name}"
        if isinstance(entry, InterventionConfig):
            out[name] = entry
            continue
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise KeyPathError(path, "must be a mapping of settings")
        kind = entry.get("type", name)
        if kind not in _REGISTRY:
            raise KeyPathError(
                path if "type" not in entry else f"{path}.type",
                f"unknown intervention {kind!r} (registered: {', '.join(sorted(_REGISTRY))})",
            )
        try:
            out[name] = _REGISTRY[kind].config_cls.model_validate({**entry, "type": kind})
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise KeyPathError(f"{path}.{loc}" if loc else path, msg.removeprefix("Value error, "))
    return out


def check_against_model(cfgs: Mapping[str, InterventionConfig], model_cfg: ModelConfig) -> None:
    for name, cfg in cfgs.items():
        if isinstance(cfg.layers, list) and max(cfg.layers) >= model_cfg.n_layer:
            raise KeyPathError(
                f"interventions.{name}.layers",
                f"layer {max(cfg.layers)} does not exist (model has {model_cfg.n_layer} layers)",
            )


def build_interventions(
    cfgs: Mapping[str, InterventionConfig], model_cfg: ModelConfig
) -> nn.ModuleDict:
    return nn.ModuleDict(
        {name: _REGISTRY[cfg.type](name, cfg, model_cfg) for name, cfg in cfgs.items()}
    )
