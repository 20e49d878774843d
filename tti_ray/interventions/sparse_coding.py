"""Sparse coding trained with the model (seed expt-suite experiment 5, essay 2 "joint SAE").

* ``joint_sae`` - an SAE per (site, layer) trained alongside the model; its reconstruction error
  and latent sparsity are auxiliary losses *on the model too* (configuration 2, "online SAE").
* ``overcomplete`` - the site's output is replaced by its reconstruction through a trainable
  overcomplete code, with L1 on the code (configuration 3, "direct sparsity": the model must
  compute through a sparse basis).

Both use :class:`SparseCoder` (ReLU SAE, Bricken et al. 2023 / the seed's ``src/sae.py``): the
decoder rows are renormalised to unit norm *inside the forward* (a parametrisation instead of the
seed's post-step projection, which the shared optimizer cannot do), so the L1 term cannot be
gamed by shrinking the code and growing the decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tti_ray.config.schema import Site
from tti_ray.interventions.ops import strided_subsample
from tti_ray.interventions.registry import (
    Intervention,
    InterventionConfig,
    SiteKey,
    StepContext,
    flat,
    fp32,
    register_intervention,
)


def _key(site: str, layer: int) -> str:
    return f"{site}_{layer}"


class SparseCoder(nn.Module):
    """z = ReLU((x − b_dec) W_enc + b_enc) ∈ R^M,  x̂ = z · normalize(W_dec) + b_dec ∈ R^D.

    Init (from a private generator): unit-norm random decoder rows, encoder = decoder^T scaled by
    2D/M, so that E[x̂] ≈ x for isotropic x (ReLU keeps half of M random projections and
    E[Σ_j w_j w_jᵀ] = (M/D)·I): the reconstruction starts at the right scale, not accurate -
    the interventions train from the model's random init, where that is all that matters.
    Biases 0."""

    def __init__(self, d: int, m: int, generator: torch.Generator) -> None:
        super().__init__()
        w = F.normalize(torch.randn(m, d, generator=generator), dim=1)
        self.w_dec = nn.Parameter(w)  # [M, D]
        self.w_enc = nn.Parameter(w.T.clone() * (2.0 * d / m))  # [D, M]
        self.b_enc = nn.Parameter(torch.zeros(m))
        self.b_dec = nn.Parameter(torch.zeros(d))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu((x - self.b_dec) @ self.w_enc + self.b_enc)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ F.normalize(self.w_dec, dim=1) + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z


class _EvalStats:
    """Running sums over eval forwards (model in eval mode), reset by ``readouts()``."""

    def __init__(self) -> None:
        self.sums: dict[SiteKey, torch.Tensor] = {}  # [sq_err, Σ|x|², n, l0] + Σx (float64)

    def add(
        self, key: SiteKey, x: torch.Tensor, x_hat: torch.Tensor | None, z: torch.Tensor
    ) -> None:
        x64 = x.double()
        err = (x_hat.double() - x64).pow(2).sum() if x_hat is not None else x64.new_zeros(())
        head = torch.stack(
            [err, x64.pow(2).sum(), x64.new_tensor(float(x.shape[0])), (z > 0).sum().double()]
        )
        vec = torch.cat([head, x64.sum(0)])
        self.sums[key] = self.sums[key] + vec if key in self.sums else vec

    def pop(self) -> dict[SiteKey, dict[str, float]]:
        out = {}
        for key, v in self.sums.items():
            err, sq, n, l0 = (float(t) for t in v[:4])
            mean = v[4:] / max(n, 1.0)
            var = sq - n * float(mean.pow(2).sum())  # Σ|x − x̄|²
            out[key] = {
                "l0": l0 / max(n, 1.0),
                "mse": err / max(n * mean.numel(), 1.0),
                "fvu": err / var if var > 0 else float("nan"),
            }
        self.sums.clear()
        return out


class _SparseCodingBase(Intervention):
    def _build_coders(self, expansion: int) -> None:
        g = self.local_generator()
        self.coders = nn.ModuleDict(
            {
                _key(s, i): SparseCoder(self.site_width(s), expansion * self.site_width(s), g)
                for s, i in self.site_keys()
            }
        )
        self._stats = _EvalStats()

    def _readouts(self, keys: tuple[str, ...]) -> dict[str, float]:
        per = self._stats.pop()
        out: dict[str, float] = {}
        for name in keys:
            out.update(self.per_site(name, {k: v[name] for k, v in per.items()}))
        return out


# -- joint SAE ------------------------------------------------------------------------------------
class JointSAEConfig(InterventionConfig):
    """``expansion``: SAE width / site width (seed expt3: 4, 8, 16); ``l1_coef``: weight of the
    latent L1 relative to the reconstruction (seed ``lambda_l1`` 1e-3, a mean over latents);
    ``recon_loss``: ``mse`` (seed) or ``fvu`` (MSE / batch variance: scale-free, so the model
    cannot lower it by shrinking the site's activations); ``detach_input``: stop the auxiliary
    gradient into the model (a post-hoc-style online SAE, the control for joint training);
    ``max_tokens``: strided token subsample for the SAE step (``null``: all tokens)."""

    sites: list[Site] = Field(default_factory=lambda: ["mlp_out"])
    expansion: int = Field(8, ge=1, le=256)
    l1_coef: float = Field(1e-3, ge=0.0)
    recon_loss: Literal["mse", "fvu"] = "mse"
    detach_input: bool = False
    max_tokens: int | None = Field(None, ge=1)


class JointSAE(_SparseCodingBase):
    """An SAE per (site, layer) trained jointly with the model by the same optimizer.

    Terms (trainer adds ``coef ·`` each): ``recon`` = mean (x̂ − x)² over tokens × units (or FVU)
    and ``sparsity`` = ``l1_coef`` · mean |z| over tokens × latents, both averaged over sites.
    The activations x are **not** detached (unless ``detach_input``): the reconstruction error is
    an auxiliary loss on the model, pushing it towards SAE-decomposable representations -
    the point of the seed's joint-SAE experiment. Readouts, over the eval forwards since the last
    readout: ``l0`` (active latents per token), ``fvu`` (fraction of variance unexplained),
    ``mse``."""

    config_cls = JointSAEConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._build_coders(self.cfg.expansion)

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"coef": 0.1, "expansion": 2, "l1_coef": 0.1}

    def capture_sites(self) -> list[SiteKey]:
        return self.site_keys() if self.cfg.coef > 0 else []

    def attach(self, model: nn.Module) -> None:
        """A read-only hook per site that feeds the eval readouts (no-op in train mode)."""
        from tti_ray.model.gpt import site_module  # lazy: transformers

        self.remove_hooks()
        if self.cfg.coef == 0:
            return
        for site, layer in self.site_keys():
            mod = site_module(model, site, layer)

            def hook(m: nn.Module, _i: object, out: torch.Tensor, key=(site, layer)) -> None:
                if m.training:
                    return
                with torch.no_grad(), fp32(out.device):
                    x = flat(out)
                    x_hat, z = self.coders[_key(*key)](x)
                    self._stats.add(key, x, x_hat, z)

            self._handles.append(mod.register_forward_hook(hook))

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        recon, sparsity = [], []
        keys = self.site_keys()
        with fp32(acts[keys[0]].device):
            for site, layer in keys:
                x = strided_subsample(flat(acts[(site, layer)]), self.cfg.max_tokens, ctx.step)
                if self.cfg.detach_input:
                    x = x.detach()
                x_hat, z = self.coders[_key(site, layer)](x)
                err = (x_hat - x).pow(2)
                if self.cfg.recon_loss == "mse":
                    recon.append(err.mean())
                else:
                    recon.append(err.sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12))
                sparsity.append(self.cfg.l1_coef * z.abs().mean())
        return {"recon": torch.stack(recon).mean(), "sparsity": torch.stack(sparsity).mean()}

    @torch.no_grad()
    def readouts(self) -> dict[str, float]:
        return self._readouts(("l0", "fvu", "mse"))


# -- overcomplete direct sparsity -----------------------------------------------------------------
class OvercompleteConfig(InterventionConfig):
    """``expansion``: code width / site width. ``coef: 0`` disables it (no hook)."""

    sites: list[Site] = Field(default_factory=lambda: ["mlp_out"])
    expansion: int = Field(4, ge=1, le=256)


class Overcomplete(_SparseCodingBase):
    """Architectural: the site's output a is replaced by â = decode(z), z = encode(a) ≥ 0 of
    width expansion·D (seed expt-suite exp. 5 configuration 3: "trainable overcomplete
    projection hidden → expanded, L1 in the expanded space, project back"). The loss term
    ``loss`` is the mean |z| over tokens × code units of the current forward, averaged over sites.
    Because the model computes *through* the code, the L1 cannot be met by shrinking a detached
    side branch (which is what a loss-only version would allow); the model itself must become
    sparse in the learned basis.

    Only meaningful with a penalty, so ``coef: 0`` registers no hook (baseline forward).
    Readout: ``l0`` (active code units per token over the eval forwards since the last
    readout)."""

    config_cls = OvercompleteConfig
    architectural = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._build_coders(self.cfg.expansion)
        self._codes: dict[SiteKey, torch.Tensor] = {}

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"coef": 0.1, "expansion": 2}

    def attach(self, model: nn.Module) -> None:
        from tti_ray.model.gpt import add_site_transform, site_module  # lazy: transformers

        self.remove_hooks()
        self._codes.clear()
        if self.cfg.coef == 0:
            return
        for site, layer in self.site_keys():
            mod = site_module(model, site, layer)

            def fn(a: torch.Tensor, key: SiteKey = (site, layer), mod: nn.Module = mod):
                x = a.reshape(-1, a.shape[-1])
                x_hat, z = self.coders[_key(*key)](x.to(self.coders[_key(*key)].w_enc.dtype))
                if mod.training:
                    if torch.is_grad_enabled():
                        self._codes[key] = z  # read (and released) by loss_terms
                else:
                    with torch.no_grad():
                        self._stats.add(key, x.float(), None, z)
                return x_hat.to(a.dtype).reshape(a.shape)

            self._handles.append(add_site_transform(model, site, layer, fn))

    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        codes = self.pop_codes(self._codes)
        with fp32(codes[0].device):
            return {"loss": torch.stack([z.float().abs().mean() for z in codes]).mean()}

    @torch.no_grad()
    def readouts(self) -> dict[str, float]:
        return self._readouts(("l0",))


register_intervention("joint_sae", JointSAE)
register_intervention("overcomplete", Overcomplete)
