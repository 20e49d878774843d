"""A VAE-style bottleneck in the residual stream (issue #11: disentanglement).

At ``resid_post`` of the chosen layers the block output x ∈ R^D is *replaced* by

    μ, log σ² = W_μ·LN(x) + b_μ,  W_σ·LN(x) + b_σ          (μ, log σ² ∈ R^{d_z})
    z = μ + σ ⊙ ε,  ε ~ N(0, I)   (training; z = μ in eval)
    x' = W_dec·z + b_dec ∈ R^D,

LN a LayerNorm without gain or bias, so the encoder sees a scale-free input. Replacing (rather
than adding x' as a residual correction) is the point: every later layer reads the token only
through its d_z latents (attention still mixes the latents of earlier tokens), so the LM loss is
the reconstruction term and no separate one is needed - CE + β·KL per token is the deep
variational information bottleneck of Alemi et al. 2017 ("Deep Variational Information
Bottleneck"), the β-VAE objective (Higgins et al. 2017) with next-token prediction as decoder.
A residual correction would let information bypass z and make the KL trivially satisfiable.

Loss terms (the trainer adds ``coef ·`` each, coef = β; seeds 1, 4, 10, 40):

* ``kl`` - KL(q(z|x) ‖ N(0, I)) = Σ_j ½(μ_j² + σ_j² − 1 − log σ_j²), summed over latents, mean
  over tokens and layers (nats per token);
* ``tc`` (only with ``tc_coef > 0``) - (tc_coef / coef) · TC, the total correlation of the
  aggregate posterior (β-TC-VAE, Chen et al. 2018, minibatch-weighted sampling on at most
  ``tc_max_tokens`` tokens of the micro-batch, strided, no RNG); scaled so that its effective
  weight is ``tc_coef`` itself, not β·tc_coef.

Noise: ε comes from the global torch RNG, as the L0 gates' noise does; the trainer saves and
restores it in every checkpoint, so a resumed run is bit-identical (tested). Parameters are
initialised from :meth:`Intervention.local_generator`. ``coef: 0`` disables the bottleneck: no
hook, the baseline forward bit for bit.

Readouts (``val/<name>/<key>``, per layer when several), over the eval forwards since the last
readout: ``kl`` (total KL per token), ``kl_per_latent`` (its mean over latents), ``kl_top1..3``
(the largest per-latent KLs), ``active_latents`` (Var_x μ_j > ``active_threshold``, Burda et al.
2016). With ``probe_per_cell > 0``, also ``mig`` and ``sap`` of μ on the synthetic factor corpus
(:mod:`tti_ray.data.factors`: tense, sentiment, topic, number), one μ per sentence pooled over its
tokens (``probe_pool``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tti_ray.data.factors import EncodedCorpus, encode_corpus, factor_corpus
from tti_ray.data.tokens import TextTokenizer, TokenData
from tti_ray.interventions.categories import tokenizer_for
from tti_ray.interventions.ops import strided_subsample
from tti_ray.interventions.registry import (
    Intervention,
    InterventionConfig,
    SiteKey,
    StepContext,
    fp32,
    register_intervention,
)
from tti_ray.metrics.disentanglement import (
    DEFAULT_BINS,
    gaussian_kl,
    mig,
    sap,
    total_correlation,
)

N_TOP = 3  # per-latent KLs reported as kl_top1..kl_top3


def _key(site: str, layer: int) -> str:
    return f"{site}_{layer}"


class _StopForward(Exception):
    """Raised after the last bottleneck layer of a probe forward: the rest is not needed."""


class BottleneckConfig(InterventionConfig):
    """``coef`` = β; ``coef: 0`` disables the whole bottleneck, ``tc_coef`` included (so a β
    sweep's 0 point is the baseline). ``d_z``: latents per token; ``init_logvar``: initial
    log σ² (−5: σ ≈ 0.08, a nearly deterministic code at the start, as in Alemi et al.'s VIB
    with σ = softplus(x − 5); the KL then decides how much noise to add); ``tc_coef``: weight
    of the total-correlation term; ``tc_max_tokens``: tokens per micro-batch for the TC
    estimate (cost O(M²·d_z)); ``active_threshold``: Var(μ_j) above which a latent counts as
    active; ``probe_per_cell``: factor-corpus sentences per factor cell for the MIG/SAP
    readouts (32 cells; 0: no probe); ``probe_pool``: ``mean`` of μ over the sentence's tokens
    or μ at its ``last`` token; ``probe_bins``: bins per latent for MIG and SAP."""

    sites: list[Literal["resid_post"]] = Field(default_factory=lambda: ["resid_post"])
    layers: Literal["all"] | list[int] = Field(default_factory=lambda: [0])
    d_z: int = Field(16, ge=1, le=4096)
    init_logvar: float = Field(-5.0, ge=-20.0, le=5.0)
    tc_coef: float = Field(0.0, ge=0.0)
    tc_max_tokens: int = Field(256, ge=2)
    active_threshold: float = Field(0.01, gt=0.0)
    probe_per_cell: int = Field(32, ge=0)
    probe_pool: Literal["mean", "last"] = "mean"
    probe_bins: int = Field(DEFAULT_BINS, ge=2)


class GaussianBottleneck(nn.Module):
    """Encoder D → (μ, log σ²) ∈ R^{d_z} × R^{d_z}, decoder d_z → D (see the module docstring).

    Init from ``generator``: W_μ ~ N(0, 1/D) (μ_j ≈ unit scale on the normalised input),
    W_σ ~ N(0, 0.01/D) with b_σ = ``init_logvar``, W_dec ~ N(0, 0.02²) (GPT-2's init range, so
    x' starts at the residual stream's scale); other biases 0."""

    def __init__(
        self, d: int, d_z: int, generator: torch.Generator, init_logvar: float = 0.0
    ) -> None:
        super().__init__()
        self.w_mu = nn.Parameter(torch.randn(d_z, d, generator=generator) / d**0.5)  # [Z, D]
        self.b_mu = nn.Parameter(torch.zeros(d_z))
        self.w_lv = nn.Parameter(torch.randn(d_z, d, generator=generator) * 0.1 / d**0.5)
        self.b_lv = nn.Parameter(torch.full((d_z,), init_logvar))
        self.w_dec = nn.Parameter(torch.randn(d, d_z, generator=generator) * 0.02)  # [D, Z]
        self.b_dec = nn.Parameter(torch.zeros(d))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``[N, D]`` -> (μ, log σ²), each ``[N, d_z]``."""
        h = F.layer_norm(x, x.shape[-1:])
        return F.linear(h, self.w_mu, self.b_mu), F.linear(h, self.w_lv, self.b_lv)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.linear(z, self.w_dec, self.b_dec)  # [N, D]


class _LatentStats:
    """Float64 running sums of μ, μ² and per-latent KL over eval tokens, per site."""

    def __init__(self) -> None:
        self.sums: dict[SiteKey, torch.Tensor] = {}  # [1 + 3·Z]: n, Σμ, Σμ², ΣKL

    def add(self, key: SiteKey, mu: torch.Tensor, kl: torch.Tensor) -> None:
        m = mu.double()
        vec = torch.cat([m.new_tensor([float(m.shape[0])]), m.sum(0), m.pow(2).sum(0),
                         kl.double().sum(0)])
        self.sums[key] = self.sums[key] + vec if key in self.sums else vec

    def pop(self) -> dict[SiteKey, tuple[float, torch.Tensor, torch.Tensor]]:
        """{site: (n, Var μ [Z], mean KL [Z])}."""
        out = {}
        for key, v in self.sums.items():
            z = (v.numel() - 1) // 3
            n = max(float(v[0]), 1.0)
            mean, sq, kl = v[1 : 1 + z] / n, v[1 + z : 1 + 2 * z] / n, v[1 + 2 * z :] / n
            out[key] = (n, (sq - mean.pow(2)).clamp_min(0.0), kl)
        self.sums.clear()
        return out


class Bottleneck(Intervention):
    """The residual-stream VAE bottleneck (module docstring)."""

    config_cls = BottleneckConfig
    architectural = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        g = self.local_generator()
        self.vaes = nn.ModuleDict(
            {
                _key(s, i): GaussianBottleneck(
                    self.site_width(s), self.cfg.d_z, g, self.cfg.init_logvar
                )
                for s, i in self.site_keys()
            }
        )
        self._codes: dict[SiteKey, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._stats = _LatentStats()
        self._probe: EncodedCorpus | None = None
        self._probe_labels: torch.Tensor | None = None
        self._probe_mu: dict[SiteKey, torch.Tensor] | None = None  # filled during a probe
        self._model_ref: weakref.ref[nn.Module] | None = None  # not a submodule: no weights

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"coef": 0.1, "d_z": 4, "tc_coef": 0.1, "layers": [0], "probe_per_cell": 2}

    # -- forward --------------------------------------------------------------------------------
    def bottleneck(self, a: torch.Tensor, key: SiteKey, training: bool) -> torch.Tensor:
        """a ``[B, T, D]`` -> decode(z) ``[B, T, D]`` in a's dtype; computed in float32."""
        vae = self.vaes[_key(*key)]
        with fp32(a.device):
            x = a.reshape(-1, a.shape[-1]).float()  # [N, D]
            mu, logvar = vae.encode(x)  # [N, Z] each
            if training:
                z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
                if torch.is_grad_enabled():
                    self._codes[key] = (mu, logvar, z)  # read (and released) by loss_terms
            else:
                z = mu
                with torch.no_grad():
                    if self._probe_mu is not None:
                        self._probe_mu[key] = mu.detach().reshape(*a.shape[:-1], -1)
                    else:
                        self._stats.add(key, mu, gaussian_kl(mu, logvar))
            out = vae.decode(z)
        return out.to(a.dtype).reshape(a.shape)

    def prepare(self, tokens: TokenData, tokenizer: TextTokenizer | None = None) -> None:
        """Encode the factor corpus with the run's tokenizer and vocabulary (the probe set)."""
        self._probe = self._probe_labels = None
        if self.cfg.coef == 0 or self.cfg.probe_per_cell == 0:
            return
        tok = tokenizer if tokenizer is not None else tokenizer_for(tokens)
        corpus = factor_corpus(self.cfg.probe_per_cell, seed=0)
        self._probe = encode_corpus(corpus, tokens, tok, max_len=self.model_cfg.seq_len)
        self._probe_labels = torch.from_numpy(corpus.labels)

    def attach(self, model: nn.Module) -> None:
        from tti_ray.model.gpt import add_site_transform, site_module  # lazy: transformers

        self.remove_hooks()
        self._codes.clear()
        self._model_ref = None
        if self.cfg.coef == 0:
            return
        self._model_ref = weakref.ref(model)
        for site, layer in self.site_keys():
            mod = site_module(model, site, layer)

            def fn(a: torch.Tensor, key: SiteKey = (site, layer), mod: nn.Module = mod):
                return self.bottleneck(a, key, mod.training)

            self._handles.append(add_site_transform(model, site, layer, fn))

    # -- training -------------------------------------------------------------------------------
    def loss_terms(
        self, acts: Mapping[SiteKey, torch.Tensor], ctx: StepContext
    ) -> dict[str, torch.Tensor]:
        codes = self.pop_codes(self._codes)
        with fp32(codes[0][0].device):
            kl = torch.stack([gaussian_kl(mu, lv).sum(-1).mean() for mu, lv, _ in codes]).mean()
            out = {"kl": kl}
            if self.cfg.tc_coef > 0:
                tc = []
                for mu, lv, z in codes:
                    sub = [strided_subsample(t, self.cfg.tc_max_tokens, ctx.step)
                           for t in (z, mu, lv)]
                    tc.append(total_correlation(*sub))
                out["tc"] = (self.cfg.tc_coef / self.cfg.coef) * torch.stack(tc).mean()
        return out

    # -- eval -----------------------------------------------------------------------------------
    @torch.no_grad()
    def probe_codes(self, batch_size: int = 256) -> dict[SiteKey, torch.Tensor]:
        """μ of every factor-corpus sentence, ``{site: [N_sentences, d_z]}`` (eval mode; mean over
        the sentence's tokens or its last token, ``probe_pool``). Empty without a probe set or
        an attached model."""
        model = self._model_ref() if self._model_ref is not None else None
        if model is None or self._probe is None:
            return {}
        from tti_ray.model.gpt import site_module  # lazy: transformers

        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        chunks: dict[SiteKey, list[torch.Tensor]] = {}
        self._probe_mu = {}

        def stop(_m: nn.Module, _i: object, _o: object) -> None:
            raise _StopForward

        # registered after the bottleneck's own hook on that block, so it runs after it
        last = max(self.site_keys(), key=lambda k: k[1])
        handle = site_module(model, *last).register_forward_hook(stop)
        try:
            for i in range(0, len(self._probe.ids), batch_size):
                ids = self._probe.ids[i : i + batch_size].to(device)  # [b, T]
                mask = self._probe.mask[i : i + batch_size].to(device)  # [b, T]
                try:
                    model(input_ids=ids)
                except _StopForward:
                    pass
                for key, mu in self._probe_mu.items():  # mu [b, T, Z]
                    if self.cfg.probe_pool == "mean":
                        w = mask.unsqueeze(-1).float()
                        pooled = (mu * w).sum(1) / w.sum(1).clamp_min(1.0)
                    else:
                        last = mask.long().cumsum(1).argmax(1)  # last True position
                        pooled = mu[torch.arange(len(mu), device=device), last]
                    chunks.setdefault(key, []).append(pooled.cpu())
        finally:
            handle.remove()
            self._probe_mu = None
            model.train(was_training)
        return {k: torch.cat(v) for k, v in chunks.items()}

    @torch.no_grad()
    def readouts(self) -> dict[str, float]:
        per = self._stats.pop()
        out: dict[str, float] = {}
        out.update(self.per_site("kl", {k: float(kl.sum()) for k, (_, _, kl) in per.items()}))
        out.update(self.per_site("kl_per_latent",
                                 {k: float(kl.mean()) for k, (_, _, kl) in per.items()}))
        for r in range(min(N_TOP, self.cfg.d_z)):
            out.update(self.per_site(
                f"kl_top{r + 1}",
                {k: float(kl.sort(descending=True).values[r]) for k, (_, _, kl) in per.items()},
            ))
        out.update(self.per_site(
            "active_latents",
            {k: float((var > self.cfg.active_threshold).sum()) for k, (_, var, _) in per.items()},
        ))
        codes = self.probe_codes()
        if codes:
            labels = self._probe_labels
            bins = self.cfg.probe_bins
            out.update(self.per_site("mig", {k: mig(c, labels, bins) for k, c in codes.items()}))
            out.update(self.per_site("sap", {k: sap(c, labels, bins) for k, c in codes.items()}))
        return out


register_intervention("bottleneck", Bottleneck)
