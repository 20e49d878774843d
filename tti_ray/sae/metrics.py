"""SAE evaluation metrics as pure functions (SAELens / SAEBench names), plus a streaming twin.

Conventions: ``x`` and ``x_hat`` are ``[N, D]`` (N tokens, D = d_in of the site), ``f`` the SAE
codes ``[N, d_sae]``; a latent *fires* on a token when its code is > 0. Reductions run in float64;
every metric is returned as a Python float.

Explained variance, stated exactly: we use **1 − FVU with the denominator centred on the per-
dimension mean over all evaluation tokens**, i.e. the conventional coefficient of determination
summed over dimensions. This is the definition SAEBench adopted (adamkarvonen/SAEBench#61) and
SAELens ported (decoderesearch/SAELens#443), whose implementation measured the variance about
*zero* instead of the mean until the 2026 fix (SAELens#665). It is not the "legacy" per-token
``1 − Var(residual)/Var(x)`` average (nor the seed repo's ``1 − var(residual)/var(x)`` over all
elements, which ignores a constant offset in the residual).

:class:`ReconstructionStats` accumulates sufficient statistics batch by batch (constant memory)
and gives the same numbers as the pure functions on the concatenated tensors (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DENSE_THRESHOLD = 0.1


def l0(f: torch.Tensor) -> float:
    """Mean number of firing latents per token: L0 = (1/N) Σ_n #{j : f_nj > 0}."""
    return float((f > 0).sum(-1).double().mean())


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean over tokens of the squared error *summed over dimensions*:
    MSE = (1/N) Σ_n Σ_d (x_nd − x̂_nd)²  (SAELens ``mse`` sums over d; divide by D for the
    per-element mean)."""
    return float((x.double() - x_hat.double()).pow(2).sum(-1).mean())


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained (normalized MSE):
    FVU = Σ_n ‖x_n − x̂_n‖² / Σ_n ‖x_n − μ‖²,  μ = (1/N) Σ_n x_n (per-dimension mean).

    0 for a perfect reconstruction, 1 for predicting μ; NaN when x is constant."""
    x = x.double()
    num = (x - x_hat.double()).pow(2).sum()
    den = (x - x.mean(0)).pow(2).sum()
    return float(num / den) if den > 0 else math.nan


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """EV = 1 − FVU (see :func:`fvu`; denominator centred on the evaluation-set mean)."""
    return 1.0 - fvu(x, x_hat)


def dead_fraction(f: torch.Tensor) -> float:
    """Fraction of latents that never fire over the evaluation tokens: (1/d_sae) #{j : max_n f_nj ≤ 0}."""
    return float((f > 0).sum(0).eq(0).double().mean())


def dense_fraction(f: torch.Tensor, threshold: float = DENSE_THRESHOLD) -> float:
    """Fraction of latents firing on more than ``threshold`` (10%) of the evaluation tokens:
    (1/d_sae) #{j : (1/N) Σ_n [f_nj > 0] > threshold}."""
    return float(((f > 0).double().mean(0) > threshold).double().mean())


def ce_loss_score(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """CE-loss score (SAELens ``ce_loss_score``, SAEBench "loss recovered"):

        score = (CE_zero_ablation − CE_sae) / (CE_zero_ablation − CE_clean)

    CE_sae: mean next-token cross-entropy with the SAE reconstruction spliced in at the site;
    CE_zero_ablation: with the site's activations replaced by zeros. 1 = the SAE loses nothing,
    0 = as bad as deleting the site. NaN when zero ablation does not change the loss."""
    den = ce_zero - ce_clean
    return (ce_zero - ce_sae) / den if den != 0 else math.nan


def delta_ce(ce_clean: float, ce_sae: float) -> float:
    """Raw increase in cross-entropy from splicing in the SAE: ΔCE = CE_sae − CE_clean (nats)."""
    return ce_sae - ce_clean


def kl_div(logits_clean: torch.Tensor, logits_sae: torch.Tensor) -> torch.Tensor:
    """Per-token KL(p_clean ‖ p_sae) = Σ_v p_clean(v) (log p_clean(v) − log p_sae(v)), nats.

    ``[..., V]`` logits → ``[...]`` (float32: a [B, T, V] float64 copy is too big at full vocab;
    identical logits still give exactly 0)."""
    lp = F.log_softmax(logits_clean.float(), -1)
    lq = F.log_softmax(logits_sae.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def kl(logits_clean: torch.Tensor, logits_sae: torch.Tensor) -> float:
    """Mean over tokens of KL(p_clean ‖ p_sae) of the next-token distributions (SAEBench
    ``kl_div_with_sae``), see :func:`kl_div`."""
    return float(kl_div(logits_clean, logits_sae).double().mean())


class ReconstructionStats:
    """Streaming twin of :func:`l0`, :func:`mse`, :func:`fvu`, :func:`explained_variance`,
    :func:`dead_fraction`, :func:`dense_fraction`.

    Keeps N, Σ‖x − x̂‖², Σx (per dim), Σ‖x‖² and per-latent firing counts (float64), and uses
    Σ_n ‖x_n − μ‖² = Σ_n ‖x_n‖² − N‖μ‖²."""

    def __init__(self, d_in: int, d_sae: int, device: torch.device | str = "cpu") -> None:
        kw = {"dtype": torch.float64, "device": device}
        self.n = 0
        self.sq_err = torch.zeros((), **kw)
        self.sum_x = torch.zeros(d_in, **kw)
        self.sum_sq_x = torch.zeros((), **kw)
        self.fire_count = torch.zeros(d_sae, **kw)

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> None:
        x = x.double()
        self.n += x.shape[0]
        self.sq_err += (x - x_hat.double()).pow(2).sum()
        self.sum_x += x.sum(0)
        self.sum_sq_x += x.pow(2).sum()
        self.fire_count += (f > 0).sum(0).double()

    def compute(self, dense_threshold: float = DENSE_THRESHOLD) -> dict[str, float]:
        n = max(self.n, 1)
        mu = self.sum_x / n
        total_var = float(self.sum_sq_x - n * mu.pow(2).sum())
        fvu_ = float(self.sq_err) / total_var if total_var > 0 else math.nan
        freq = self.fire_count / n
        return {
            "l0": float(self.fire_count.sum()) / n,
            "mse": float(self.sq_err) / n,
            "fvu": fvu_,
            "explained_variance": 1.0 - fvu_,
            "dead_fraction": float(freq.eq(0).double().mean()),
            "dense_fraction": float((freq > dense_threshold).double().mean()),
        }
