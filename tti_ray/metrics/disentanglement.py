"""Disentanglement of a latent code against known factors, and the VAE quantities behind it.

Conventions: ``codes`` is ``[N, D]`` (N samples, D latents, continuous), ``factors`` is
``[N, F]`` (F ground-truth factors, integer class labels). NumPy or torch inputs; the scores are
Python floats (eval metrics, not for backprop). :func:`gaussian_kl` and
:func:`total_correlation` are differentiable float32 tensors (the ``bottleneck`` intervention's
loss terms).

* MIG - mutual information gap (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of
  Disentanglement in VAEs", §5), latents discretised into equal-width bins (default 20, as
  disentanglement_lib's ``_histogram_discretize``).
* SAP - separated attribute predictability (Kumar, Sattigeri & Balakrishnan 2018, "Variational
  Inference of Disentangled Latent Concepts from Unlabeled Observations", §3), with a 1-D binned
  classifier and chance-adjusted balanced accuracy (see :func:`sap`).
* total correlation - the minibatch-weighted-sampling estimator of Chen et al. 2018 (§4.1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

EPS = 1e-12
DEFAULT_BINS = 20


def _np(a: Any, dtype: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


# -- information-theoretic helpers ----------------------------------------------------------------
def discretize(codes: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Each column cut into ``bins`` equal-width bins over its own [min, max] -> ``int64 [N, D]``
    (a constant column falls in bin 0)."""
    z = _np(codes, np.float64)
    lo, hi = z.min(0), z.max(0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    return np.clip(((z - lo) / width).astype(np.int64), 0, bins - 1)


def entropy(labels: Any) -> float:
    """H(v) = −Σ_v p(v) log p(v) in nats, p the empirical frequencies of ``labels`` [N]."""
    _, counts = np.unique(_np(labels, np.int64), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(a: Any, b: Any) -> float:
    """I(a; b) = Σ p(a, b) log[p(a, b) / (p(a) p(b))] in nats, from the contingency table of
    two discrete label vectors [N] (the plug-in estimate; biased upwards by about
    (|A|−1)(|B|−1) / 2N nats for independent variables)."""
    _, ai = np.unique(_np(a, np.int64), return_inverse=True)
    _, bi = np.unique(_np(b, np.int64), return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


# -- MIG ------------------------------------------------------------------------------------------
def mig_per_factor(codes: Any, factors: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Chen et al. 2018, eq. (6), per factor k:

        MIG_k = (I(z_{j*}; v_k) − I(z_{j°}; v_k)) / H(v_k),

    j* and j° the latents with the largest and second-largest mutual information with v_k, each
    latent discretised into ``bins`` equal-width bins. In [0, 1] up to estimation noise: 1 when
    one latent determines v_k and no other carries any information about it. A factor with a
    single value (H = 0) gets NaN. Returns ``float64 [F]``."""
    z = discretize(codes, bins)
    v = _np(factors, np.int64)
    if v.ndim == 1:
        v = v[:, None]
    out = np.full(v.shape[1], np.nan)
    for k in range(v.shape[1]):
        h = entropy(v[:, k])
        if h <= 0:
            continue
        mi = np.sort([mutual_information(z[:, j], v[:, k]) for j in range(z.shape[1])])[::-1]
        second = mi[1] if len(mi) > 1 else 0.0
        out[k] = (mi[0] - second) / h
    return out


def mig(codes: Any, factors: Any, bins: int = DEFAULT_BINS) -> float:
    """Mutual information gap: the mean of :func:`mig_per_factor` over factors with H > 0
    (NaN when there is none)."""
    per = mig_per_factor(codes, factors, bins)
    per = per[np.isfinite(per)]
    return float(per.mean()) if per.size else float("nan")


# -- SAP ------------------------------------------------------------------------------------------
def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, min(n - 1, round(test_fraction * n)))
    return perm[n_test:], perm[:n_test]


def binned_classifier_score(
    z_train: np.ndarray, v_train: np.ndarray, z_test: np.ndarray, v_test: np.ndarray,
    bins: int = DEFAULT_BINS,
) -> float:
    """Chance-adjusted balanced accuracy of a 1-D classifier: the training range of one latent is
    cut into ``bins`` equal-width bins and each bin predicts its most frequent training class
    (ties: the smallest label; an empty bin: the most frequent class overall) - a decision
    stump with up to ``bins − 1`` thresholds. Balanced accuracy = mean recall over the test
    classes; adjusted = (bacc − 1/K) / (1 − 1/K) with K test classes (0 = chance, 1 = perfect),
    clipped at 0."""
    classes = np.unique(np.concatenate([v_train, v_test]))
    k = len(classes)
    if k < 2:
        return 0.0
    vt = np.searchsorted(classes, v_train)
    vs = np.searchsorted(classes, v_test)
    lo, hi = z_train.min(), z_train.max()
    width = (hi - lo) / bins if hi > lo else 1.0
    b_tr = np.clip(np.floor((z_train - lo) / width).astype(np.int64), 0, bins - 1)
    b_te = np.clip(np.floor((z_test - lo) / width).astype(np.int64), 0, bins - 1)
    counts = np.zeros((bins, k))
    np.add.at(counts, (b_tr, vt), 1.0)
    pred_bin = np.where(counts.sum(1) > 0, counts.argmax(1), np.bincount(vt, minlength=k).argmax())
    pred = pred_bin[b_te]
    recalls = [float((pred[vs == c] == c).mean()) for c in np.unique(vs)]
    bacc = float(np.mean(recalls))
    kt = len(recalls)
    if kt < 2:
        return 0.0
    return max(0.0, (bacc - 1.0 / kt) / (1.0 - 1.0 / kt))


def sap_score_matrix(
    codes: Any, factors: Any, bins: int = DEFAULT_BINS, test_fraction: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """S[j, k]: how well latent j alone predicts factor k (:func:`binned_classifier_score`,
    trained on a seeded random ``1 − test_fraction`` of the samples, scored on the rest).
    Returns ``float64 [D, F]``."""
    z = _np(codes, np.float64)
    v = _np(factors, np.int64)
    if v.ndim == 1:
        v = v[:, None]
    tr, te = _split(len(z), test_fraction, seed)
    s = np.zeros((z.shape[1], v.shape[1]))
    for j in range(z.shape[1]):
        for k in range(v.shape[1]):
            s[j, k] = binned_classifier_score(z[tr, j], v[tr, k], z[te, j], v[te, k], bins)
    return s


def sap(
    codes: Any, factors: Any, bins: int = DEFAULT_BINS, test_fraction: float = 0.5,
    seed: int = 0,
) -> float:
    """Separated attribute predictability (Kumar et al. 2018, §3): for each factor k, the gap
    between the largest and second-largest entries of column k of the score matrix
    (:func:`sap_score_matrix`), averaged over factors:

        SAP = (1/F) Σ_k (S[j*_k, k] − S[j°_k, k]).

    Kumar et al. score a categorical factor by the (balanced) accuracy of a classifier on one
    latent; disentanglement_lib uses raw accuracy of a 1-D linear SVM. Here the classifier is a
    binned stump (it also catches non-monotonic codes) and the accuracy is chance-adjusted, so a
    latent that carries nothing scores ≈ 0 whatever the number of classes: a perfectly
    factorised code has SAP ≈ 1 and a random one SAP ≈ 0 (raw accuracy would give 1 − 1/K).
    Factors are treated as categorical (the factor corpus has no continuous factor)."""
    s = sap_score_matrix(codes, factors, bins, test_fraction, seed)
    top = np.sort(s, axis=0)[::-1]  # [D, F], descending per factor
    gap = top[0] - (top[1] if len(top) > 1 else 0.0)
    return float(gap.mean())


# -- VAE quantities (differentiable) --------------------------------------------------------------
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per latent, float32 ``[..., D]`` (Kingma & Welling 2014,
    appendix B):

        KL_j = ½ (μ_j² + σ_j² − 1 − log σ_j²),   σ_j² = exp(logvar_j).

    Sum over the last axis for the KL of the whole code."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def total_correlation(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int | None = None
) -> torch.Tensor:
    """Total correlation TC = KL(q(z) ‖ Π_j q(z_j)) of the aggregate posterior, estimated on a
    minibatch of M samples z_i ~ q(z|x_i) (all ``[M, D]``), with minibatch-weighted sampling
    (Chen et al. 2018, §4.1 and appendix C.1):

        log q(z_i)    ≈ logsumexp_m log q(z_i | x_m) − log(N·M),
        log q(z_ij)   ≈ logsumexp_m log q(z_ij | x_m) − log(N·M),
        TC            ≈ (1/M) Σ_i [log q(z_i) − Σ_j log q(z_ij)].

    N is the dataset size. The normaliser only adds the constant (D − 1)·log(N·M) to TC (no
    gradient). A language model's "dataset" of residual-stream vectors has no natural N, so
    ``dataset_size=None`` treats the minibatch as the sample of the aggregate posterior
    (normaliser log M): the plug-in estimate, ≈ 0 for independent latents and > 0 for dependent
    ones. Returns a float32 scalar (differentiable)."""
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    m = z.shape[0]
    lq = _log_normal(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # [M, M, D]
    log_norm = math.log(m * (dataset_size or 1))
    log_qz = torch.logsumexp(lq.sum(-1), dim=1) - log_norm  # [M]
    log_marg = (torch.logsumexp(lq, dim=1) - log_norm).sum(-1)  # [M]
    return (log_qz - log_marg).mean()


def active_latents(mu: Any, threshold: float = 0.01) -> int:
    """Number of active latents: Var_x(E_q[z_j | x]) = Var_x(μ_j(x)) > ``threshold`` (Burda,
    Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders", §5.2; threshold 0.01).
    ``mu`` is ``[N, D]``."""
    m = _np(mu, np.float64)
    return int((m.var(0) > threshold).sum())


__all__ = [
    "DEFAULT_BINS",
    "active_latents",
    "binned_classifier_score",
    "discretize",
    "entropy",
    "gaussian_kl",
    "mig",
    "mig_per_factor",
    "mutual_information",
    "sap",
    "sap_score_matrix",
    "total_correlation",
]
