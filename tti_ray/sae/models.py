"""Sparse autoencoders: ReLU + L1 and TopK (+ AuxK), in a registry of SAE kinds.

Shared architecture (pre-bias ``b_dec`` subtracted before encoding, Bricken et al. 2023)::

    x̃    = s · x                          [N, d_in]   s = input scale (normalize_input)
    pre  = (x̃ − b_dec) W_enc + b_enc      [N, d_sae]
    f    = σ(pre)                          [N, d_sae]  σ = ReLU, or TopK then ReLU
    x̂    = (f W_dec + b_dec) / s           [N, d_in]   back in the model's units

``W_dec`` is stored ``[d_sae, d_in]`` (SAELens layout): row j is latent j's decoder direction, i.e.
column j of the usual d_in × d_sae decoder matrix. It is kept unit-norm (optional for ReLU): the
gradient component parallel to each direction is removed before the step and the directions are
renormalized after it (Gao et al. 2024, §A.4). Encoder initialised as ``W_dec.T`` (tied init, Gao et al. §A.1), ``b_dec``
as the mean of the first batch. Losses are computed in the scaled units; all public inputs and
outputs (``encode``, ``decode``, ``forward``) are in the model's units.

TopK fast paths, each with an eager twin that a test checks against: the forward decodes only the k
kept latents (``F.embedding_bag``; twin: dense :meth:`SAE.decode`), and training back-propagates
only through the selected encoder entries (:class:`_SelectedPreActs`; twin:
``TopKSAE.sparse_backward = False``), which removes two of the three dense d_in × d_sae products
of a step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tti_ray.config.base import KeyPathError
from tti_ray.sae.config import SAE_KINDS, ReLUSAEConfig, SAEConfig, TopKSAEConfig, parse_sae_config


class SAE(nn.Module):
    """Base class: parameters, scaling, decoder-norm upkeep and dead-latent bookkeeping."""

    config_cls: ClassVar[type[SAEConfig]] = SAEConfig

    def __init__(self, cfg: SAEConfig, d_in: int) -> None:
        super().__init__()
        self.cfg = cfg
        d_sae = cfg.expansion * d_in
        g = torch.Generator().manual_seed(cfg.seed)
        w = F.normalize(torch.randn(d_sae, d_in, generator=g), dim=-1)
        self.W_dec = nn.Parameter(w)  # [d_sae, d_in]
        self.W_enc = nn.Parameter(w.T.clone())  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.ones(()))
        #: training tokens since each latent last fired (AuxK's dead mask; a training readout)
        self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))

    @classmethod
    def check(cls, cfg: SAEConfig, d_in: int) -> None:
        """Raise :class:`KeyPathError` when ``cfg`` cannot work for inputs of width ``d_in``
        (cheap: called before any activation is computed)."""

    @property
    def unit_decoder(self) -> bool:
        """Whether training keeps the decoder directions unit-norm (see :meth:`normalize_decoder`)."""
        return bool(getattr(self.cfg, "normalize_decoder", True))

    @property
    def d_in(self) -> int:
        return self.W_dec.shape[1]

    @property
    def d_sae(self) -> int:
        return self.W_dec.shape[0]

    # -- forward pieces --------------------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[N, d_in] model units → [N, d_sae] encoder pre-activations."""
        return (x.float() * self.input_scale - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, d_in] → dense codes f [N, d_sae] (non-negative)."""
        raise NotImplementedError

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Dense decode, [N, d_sae] → x̂ [N, d_in] in model units."""
        return (f @ self.W_dec + self.b_dec) / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction x̂ of ``x`` ([..., d_in] → [..., d_in], float32)."""
        shape = x.shape
        return self.decode(self.encode(x.reshape(-1, shape[-1]))).reshape(shape)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training loss on a batch ``x`` [N, d_in]: ``{"loss": total, <term>: value, ...}``.

        Updates the dead-latent counters when the module is in training mode."""
        raise NotImplementedError

    # -- upkeep ----------------------------------------------------------------------------------
    @torch.no_grad()
    def init_from_batch(self, x: torch.Tensor) -> None:
        """Set the input scale (E‖s·x‖ = √d_in) and ``b_dec`` = mean of the scaled batch."""
        x = x.float()
        if self.cfg.normalize_input:
            norm = x.norm(dim=-1).mean()
            if norm > 0:
                self.input_scale.fill_(math.sqrt(self.d_in) / float(norm))
        self.b_dec.copy_((x * self.input_scale).mean(0))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the part of ∂L/∂W_dec that only changes the (renormalized) row norms."""
        if self.W_dec.grad is not None:
            w = self.W_dec
            self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.copy_(F.normalize(self.W_dec, dim=-1))

    @torch.no_grad()
    def _track_firing(self, fired: torch.Tensor, n_tokens: int) -> None:
        """``fired``: bool [d_sae], latents active on at least one token of this batch."""
        if self.training:
            self.tokens_since_fired += n_tokens
            self.tokens_since_fired[fired] = 0


class ReLUSAE(SAE):
    """ReLU + L1 (the seed repo's SAE, with its bug fixed: the seed compared x̂ — which already
    includes ``b_dec`` — against x − b_dec).

    L = mean_n Σ_d (x̃_nd − x̂_nd)² + λ mean_n Σ_j f_nj · w_j,  w_j = ‖W_dec,j‖ or 1."""

    config_cls = ReLUSAEConfig
    cfg: ReLUSAEConfig

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pre_acts(x))

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.encode(x)  # [N, d_sae]
        err = x.float() * self.input_scale - (f @ self.W_dec + self.b_dec)  # scaled units
        mse = err.pow(2).sum(-1).mean()
        w = self.W_dec.norm(dim=-1) if self.cfg.l1_decoder_norm else 1.0
        l1 = (f * w).sum(-1).mean()
        self._track_firing((f > 0).any(0), x.shape[0])
        return {"loss": mse + self.cfg.l1_coef * l1, "mse": mse, "l1": l1}


class _SelectedPreActs(torch.autograd.Function):
    """pre[n, idx[n, i]] for a precomputed dense ``pre``, with a *sparse* backward.

    ``pre = xc @ W_enc + b_enc`` is computed once without autograd; only the selected entries get
    gradients: ∂xc = Σ_i g_ni W_enc[:, idx_ni] (``embedding_bag``), ∂W_enc = xcᵀ G and
    ∂b_enc = Σ_n G_n with G the [N, d_sae] sparse matrix holding g at the selected entries. That
    replaces two dense [N, d_in] × [d_in, d_sae] products by O(N · |idx| · d_in) work."""

    @staticmethod
    def forward(ctx, xc, w_enc, b_enc, pre, idx):
        ctx.save_for_backward(xc, w_enc, idx)
        ctx.d_sae = b_enc.shape[0]
        return pre.gather(1, idx)

    @staticmethod
    def backward(ctx, g):
        xc, w_enc, idx = ctx.saved_tensors
        n, m = idx.shape
        grad_xc = grad_w = grad_b = None
        flat_idx, flat_g = idx.reshape(-1), g.reshape(-1).contiguous()
        if ctx.needs_input_grad[0]:
            grad_xc = F.embedding_bag(idx, w_enc.t().contiguous(), per_sample_weights=g, mode="sum")
        if ctx.needs_input_grad[1]:
            rows = torch.arange(n, device=idx.device).repeat_interleave(m)
            gt = torch.sparse_coo_tensor(
                torch.stack([flat_idx, rows]), flat_g, (ctx.d_sae, n), check_invariants=False
            )
            grad_w = torch.sparse.mm(gt, xc).t()  # [d_in, d_sae]
        if ctx.needs_input_grad[2]:
            grad_b = g.new_zeros(ctx.d_sae).index_add_(0, flat_idx, flat_g)
        return grad_xc, grad_w, grad_b, None, None


class TopKSAE(SAE):
    """TopK SAE with the AuxK loss (Gao et al. 2024, eq. 3 and §A.2).

    f = ReLU(TopK_k(pre)); with e = x̃ − x̂ and ê = W_decᵀ·ReLU(TopK_{k_aux}(pre on dead latents)),
    L = mean_n ‖e_n‖² + α mean_n ‖sg(e_n) − ê_n‖², α = ``aux_coef`` (1/32). Dead latents: not fired
    in the last ``dead_tokens`` training tokens. The AuxK term is 0 when no latent is dead."""

    config_cls = TopKSAEConfig
    cfg: TopKSAEConfig
    #: training uses :class:`_SelectedPreActs` (sparse encoder backward); ``False`` selects the
    #: plain-autograd eager twin (dense backward), kept for the equivalence test
    sparse_backward: bool = True

    @classmethod
    def check(cls, cfg: TopKSAEConfig, d_in: int) -> None:
        d_sae = cfg.expansion * d_in
        if cfg.k > d_sae:
            raise KeyPathError("sae.k", f"k = {cfg.k} exceeds d_sae = {d_sae} (expansion × d_in)")

    def __init__(self, cfg: TopKSAEConfig, d_in: int) -> None:
        self.check(cfg, d_in)
        super().__init__(cfg, d_in)
        self.k_aux = min(cfg.k_aux or max(d_in // 2, 1), self.d_sae)

    def _topk(self, pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        vals, idx = pre.topk(k, dim=-1, sorted=False)  # [N, k]
        return F.relu(vals), idx

    def _decode_sparse(self, vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Σ_i vals_i · W_dec[idx_i] without the bias, scaled units, [N, d_in]."""
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        vals, idx = self._topk(pre, self.cfg.k)
        return torch.zeros_like(pre).scatter_(-1, idx, vals)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        vals, idx = self._topk(self.pre_acts(x.reshape(-1, shape[-1])), self.cfg.k)
        x_hat = (self._decode_sparse(vals, idx) + self.b_dec) / self.input_scale
        return x_hat.reshape(shape)

    def dead_mask(self) -> torch.Tensor:
        return self.tokens_since_fired >= self.cfg.dead_tokens

    def _select(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(vals, idx) of the top-k latents and (a_vals, a_idx) of the top-k_aux dead ones (empty
        when none is dead), values after ReLU and differentiable."""
        k = self.cfg.k
        dead = self.dead_mask()
        k_aux = min(self.k_aux, int(dead.sum()))
        if not self.sparse_backward:  # eager twin: plain autograd through the dense pre-acts
            pre = self.pre_acts(x)
            vals, idx = self._topk(pre, k)
            a_vals, a_idx = self._topk(pre.masked_fill(~dead, float("-inf")), k_aux)
            return vals, idx, a_vals, a_idx
        xc = x.float() * self.input_scale - self.b_dec  # [N, d_in]
        with torch.no_grad():
            pre = xc @ self.W_enc + self.b_enc  # [N, d_sae]
            idx = pre.topk(k, dim=-1, sorted=False).indices
            if k_aux:
                a_idx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, sorted=False).indices
                idx = torch.cat([idx, a_idx], 1)
        sel = F.relu(_SelectedPreActs.apply(xc, self.W_enc, self.b_enc, pre, idx))
        return sel[:, :k], idx[:, :k], sel[:, k:], idx[:, k:]

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        vals, idx, a_vals, a_idx = self._select(x)
        err = x.float() * self.input_scale - (self._decode_sparse(vals, idx) + self.b_dec)
        mse = err.pow(2).sum(-1).mean()
        if a_idx.shape[1]:
            e_hat = self._decode_sparse(a_vals, a_idx)
            auxk = (err.detach() - e_hat).pow(2).sum(-1).mean()
        else:
            auxk = mse.new_zeros(())
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[idx[vals > 0]] = True
        self._track_firing(fired, x.shape[0])
        return {"loss": mse + self.cfg.aux_coef * auxk, "mse": mse, "auxk": auxk}


# -- registry -------------------------------------------------------------------------------------


def register_sae(name: str, cls: type[SAE], cfg_cls: type[SAEConfig]) -> type[SAE]:
    """Register an SAE kind (SAELens ``register_sae_class`` style); duplicates are an error."""
    SAE_KINDS.register(name, (cls, cfg_cls))
    return cls


def registered_saes() -> dict[str, tuple[type[SAE], type[SAEConfig]]]:
    return SAE_KINDS.entries()


register_sae("topk", TopKSAE, TopKSAEConfig)
register_sae("relu", ReLUSAE, ReLUSAEConfig)


def check_sae(cfg: SAEConfig, d_in: int) -> None:
    """Validate ``cfg`` for inputs of width ``d_in`` without building anything."""
    SAE_KINDS[cfg.kind][0].check(cfg, d_in)


def build_sae(cfg: SAEConfig, d_in: int) -> SAE:
    """The SAE of ``cfg.kind`` for inputs of width ``d_in``."""
    cls, cfg_cls = SAE_KINDS[cfg.kind]
    if not isinstance(cfg, cfg_cls):
        raise TypeError(f"{cls.__name__} needs a {cfg_cls.__name__}, got {type(cfg).__name__}")
    return cls(cfg, d_in)


# -- persistence (safetensors only) ---------------------------------------------------------------
def save_sae(sae: SAE, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write parameters and buffers to ``path`` (safetensors); the config goes in the header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    meta = {"sae_config": json.dumps(sae.cfg.model_dump(mode="json")), "d_in": str(sae.d_in)}
    save_file(tensors, path, metadata={**(metadata or {}), **meta})
    return path


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SAE:
    """Rebuild an SAE written by :func:`save_sae`."""
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    if "sae_config" not in meta:
        raise ValueError(f"{path}: not an SAE file (no sae_config in the safetensors header)")
    sae = build_sae(parse_sae_config(json.loads(meta["sae_config"])), int(meta["d_in"]))
    sae.load_state_dict(tensors)
    return sae.to(device)
