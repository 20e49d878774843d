"""Architectural gates on a site's units: TopK (seed expt2) and hard-concrete L0 gates.

Both are modules in the forward path (:func:`tti_ray.model.add_site_gate`: a gate appended to
the site's ``GatedSite``, ``mlp.act`` for ``mlp_hidden``), not forward hooks, so captures, eval
metrics, nnsight (``mlp.act.output``) and checkpoints (re-attached on load from the config) all see
the gated activations, and :meth:`~TopK.portable_gates` lets a checkpoint carry them to plain HF
loading (``config.json``'s ``tti_ray_gates``). The computation is the one the former forward hooks
did, op for op (tests/interventions checks training losses against a hook-based reference). In
their disabled setting (TopK ``k: 1.0``, L0 ``coef: 0``) they add no gate and no hook: the forward
is the baseline's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from tti_ray.interventions.ops import (
    hard_concrete_eval,
    hard_concrete_p_open,
    hard_concrete_sample,
    topk_mask_values,
)
from tti_ray.interventions.registry import (
    Intervention,
    InterventionConfig,
    SiteKey,
    StepContext,
    fp32,
    register_intervention,
)


def _key(site: str, layer: int) -> str:
    return f"{site}_{layer}"  # ModuleDict / ParameterDict keys may not contain "."


# -- TopK -----------------------------------------------------------------------------------------
class TopKConfig(InterventionConfig):
    """``k``: fraction of the site's units kept, in (0, 1] (seeds: 0.10, 0.25, 0.50); ``1.0``
    disables the gate. ``mode: token`` keeps round(k·D) units per token; ``mode: batch`` keeps the
    round(k·D·N) largest entries over the whole micro-batch (N tokens), so busy tokens may use
    more units than quiet ones. TopK has no loss term: ``coef`` must stay 0."""

    k: float = Field(0.25, gt=0.0, le=1.0)
    mode: Literal["token", "batch"] = "token"

    @model_validator(mode="after")
    def _no_coef(self) -> TopKConfig:
        if self.coef != 0:
            raise ValueError("topk has no loss term; leave coef at 0 (set k instead)")
        return self


class TopK(Intervention):
    """Seed expt2 TopK activation: per token, keep the k·D units of largest |a| and zero the
    rest (the seed's ``mlp_topk_ratio``, by magnitude). Exactly ``max(1, round(k·D))`` units
    survive (ties broken by ``torch.topk``; Python's round, half to even); the gradient flows
    through the kept units, the zeroed ones get none."""

    config_cls = TopKConfig
    architectural = True

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"k": 0.25}

    @classmethod
    def disabled_config(cls) -> dict[str, Any]:
        return {"k": 1.0}

    def units(self, site: str) -> int:
        return max(1, round(self.cfg.k * self.site_width(site)))

    def gate(self, a: torch.Tensor, site: str) -> torch.Tensor:
        """TopK of ``a`` ``[..., D]`` (token mode) or of all of ``a`` (batch mode)."""
        if self.cfg.mode == "token":
            return topk_mask_values(a, self.units(site), dim=-1)
        keep = max(1, round(self.cfg.k * a.numel()))  # k·D·N
        return topk_mask_values(a.reshape(-1), keep, dim=0).reshape(a.shape)

    def attach(self, model: nn.Module) -> None:
        from tti_ray.model.gpt import add_site_gate  # lazy: transformers

        self.remove_hooks()
        if self.cfg.k >= 1.0:
            return
        for site, layer in self.site_keys():
            self._handles.append(
                add_site_gate(model, site, layer, lambda a, s=site: self.gate(a, s))
            )

    def portable_gates(self) -> list[dict[str, Any]]:
        if self.cfg.k >= 1.0:
            return []
        return [
            {"type": "topk", "site": s, "layer": i, "k": self.cfg.k, "k_units": self.units(s),
             "mode": self.cfg.mode}
            for s, i in self.site_keys()
        ]

    @torch.no_grad()
    def readouts(self) -> dict[str, float]:
        return self.per_site("k_units", {k: float(self.units(k[0])) for k in self.site_keys()})


# -- hard-concrete L0 gates ---------------------------------------------------------------------
class L0GateConfig(InterventionConfig):
    """``init_log_alpha``: initial log α of every gate; 2.0 opens the deterministic gate to
    σ(2)·1.2 − 0.1 ≈ 0.96 and P(gate ≠ 0) ≈ 0.98. ``coef: 0`` disables the gates (no hook)."""

    init_log_alpha: float = 2.0


class L0Gate(Intervention):
    """Hard-concrete gates z_d ∈ [0, 1] on each unit d of the site (Louizos, Welling & Kingma
    2018, "Learning Sparse Neural Networks through L0 Regularization", §2-4; β = 2/3,
    γ = −0.1, ζ = 1.1). The site output becomes a · z.

    * Training (``model.train()``: the site module's ``training`` flag) samples z from the
      stretched, clipped concrete distribution, independently for every token and unit, with
      the global torch RNG (saved/restored by the trainer's checkpoints).
    * Eval (``model.eval()``) uses the deterministic gate min(1, max(0, σ(log α)(ζ − γ) + γ)).
    * The loss term ``loss`` is the expected L0 *fraction*: the mean over gates of
      P(z_d ≠ 0) = σ(log α_d − β log(−γ/ζ)), so coef is per-gate-fraction, width-independent.

    The gates are only there to carry the penalty, so ``coef: 0`` registers no hook (a λ sweep's
    0 point is the true baseline). Readouts: ``gate_open_fraction`` (deterministic gates > 0)
    and ``expected_l0`` (mean P(z ≠ 0))."""

    config_cls = L0GateConfig
    architectural = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_alpha = nn.ParameterDict(
            {
                _key(s, i): nn.Parameter(torch.full((self.site_width(s),), self.cfg.init_log_alpha))
                for s, i in self.site_keys()
            }
        )

    def gated(self, a: torch.Tensor, key: str, training: bool) -> torch.Tensor:
        la = self.log_alpha[key]
        if training:
            u = torch.rand(a.shape, device=a.device, dtype=torch.float32)
            z = hard_concrete_sample(la.float(), u)
        else:
            z = hard_concrete_eval(la.float())
        return a * z.to(a.dtype)

    def attach(self, model: nn.Module) -> None:
        from tti_ray.model.gpt import add_site_gate, site_module  # lazy: transformers

        self.remove_hooks()
        if self.cfg.coef == 0:
            return
        for site, layer in self.site_keys():
            mod = site_module(model, site, layer)

            def fn(a: torch.Tensor, key: str = _key(site, layer), mod: nn.Module = mod):
                return self.gated(a, key, mod.training)

            self._handles.append(add_site_gate(model, site, layer, fn))

    @torch.no_grad()
    def portable_gates(self) -> list[dict[str, Any]]:
        """The deterministic eval gates z (float32, as :meth:`gated` applies them in eval mode)."""
        if self.cfg.coef == 0:
            return []
        return [
            {"type": "fixed", "site": s, "layer": i,
             "values": hard_concrete_eval(self.log_alpha[_key(s, i)].float()).detach().cpu()}
            for s, i in self.site_keys()
        ]

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        las = list(self.log_alpha.values())
        with fp32(las[0].device):
            vals = [hard_concrete_p_open(la.float()).mean() for la in las]
        return {"loss": torch.stack(vals).mean()}

    @torch.no_grad()
    def readouts(self) -> dict[str, float]:
        las = {k: self.log_alpha[_key(*k)].float() for k in self.site_keys()}
        out = self.per_site(
            "gate_open_fraction",
            {k: float((hard_concrete_eval(la) > 0).float().mean()) for k, la in las.items()},
        )
        out.update(
            self.per_site(
                "expected_l0", {k: float(hard_concrete_p_open(la).mean()) for k, la in las.items()}
            )
        )
        return out


register_intervention("topk", TopK)
register_intervention("l0_gate", L0Gate)
