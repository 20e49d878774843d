"""Disentanglement metrics (MIG, SAP) and the VAE quantities (KL, total correlation, active
latents). The factor corpus they are probed with is tested in tests/data/test_data_factors.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tti_ray.metrics.disentanglement import (
    active_latents,
    discretize,
    entropy,
    gaussian_kl,
    mig,
    mig_per_factor,
    mutual_information,
    sap,
    total_correlation,
)

N = 8000


@pytest.fixture
def factors() -> np.ndarray:
    """[N, 4] independent uniform factors with 2, 2, 4, 2 values (the corpus's shape)."""
    rng = np.random.default_rng(1)
    return np.stack([rng.integers(0, k, N) for k in (2, 2, 4, 2)], axis=1)


# -- information helpers ---------------------------------------------------------------------------
def test_entropy_and_mutual_information_closed_forms():
    v = np.repeat(np.arange(4), 25)
    assert entropy(v) == pytest.approx(math.log(4))
    assert mutual_information(v, v) == pytest.approx(math.log(4))
    assert mutual_information(v, v % 2) == pytest.approx(math.log(2))  # v determines v mod 2
    a, b = np.repeat([0, 1], 50), np.tile([0, 1], 50)  # exactly independent
    assert mutual_information(a, b) == pytest.approx(0.0, abs=1e-12)


def test_discretize_bins_and_constant_column():
    z = np.stack([np.linspace(0, 1, 11), np.full(11, 3.0)], axis=1)
    d = discretize(z, bins=10)
    assert d[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]  # the max joins the last bin
    assert (d[:, 1] == 0).all()


# -- MIG -------------------------------------------------------------------------------------------
def test_mig_of_a_perfectly_factorised_code_is_one(factors):
    rng = np.random.default_rng(2)
    code = factors + 0.05 * rng.normal(size=factors.shape)  # latent k = factor k (+ jitter)
    code = np.concatenate([code, rng.normal(size=(N, 4))], axis=1)  # and 4 nuisance latents
    assert mig(code, factors) == pytest.approx(1.0, abs=0.02)
    assert mig(torch.from_numpy(code), torch.from_numpy(factors)) == mig(code, factors)


def test_mig_of_a_random_code_is_zero(factors):
    code = np.random.default_rng(3).normal(size=(N, 8))
    assert abs(mig(code, factors)) < 0.05


def test_mig_penalises_a_factor_split_over_two_latents(factors):
    """Two latents that both encode factor 0 leave no gap for it: MIG_0 ≈ 0, the rest ≈ 1."""
    code = np.concatenate([factors, factors[:, :1]], axis=1).astype(float)
    per = mig_per_factor(code, factors)
    assert per[0] == pytest.approx(0.0, abs=1e-9)
    assert per[1:] == pytest.approx(1.0, abs=0.01)


def test_mig_skips_constant_factors():
    z = np.random.default_rng(0).normal(size=(100, 2))
    per = mig_per_factor(z, np.stack([np.zeros(100, int), np.arange(100) % 2], axis=1))
    assert math.isnan(per[0]) and math.isfinite(per[1])
    assert math.isnan(mig(z, np.zeros((100, 1), int)))


# -- SAP -------------------------------------------------------------------------------------------
def test_sap_of_a_perfectly_factorised_code_is_one(factors):
    rng = np.random.default_rng(4)
    code = np.concatenate([factors + 0.05 * rng.normal(size=factors.shape),
                           rng.normal(size=(N, 4))], axis=1)
    assert sap(code, factors) == pytest.approx(1.0, abs=0.05)


def test_sap_of_a_random_code_is_zero(factors):
    assert abs(sap(np.random.default_rng(5).normal(size=(N, 8)), factors)) < 0.05


def test_sap_catches_a_non_monotonic_code(factors):
    """Topic (4 values) coded as |z| with z symmetric: no single threshold separates it, the
    binned classifier does."""
    sign = np.where(np.random.default_rng(6).random(N) < 0.5, -1.0, 1.0)
    code = np.stack([sign * (factors[:, 2] + 1.0), np.random.default_rng(7).normal(size=N)], 1)
    assert sap(code, factors[:, 2:3]) > 0.9


# -- VAE quantities --------------------------------------------------------------------------------
def test_gaussian_kl_closed_form_on_hand_values():
    mu = torch.tensor([0.0, 0.5, -1.0, 2.0])
    logvar = torch.tensor([0.0, 0.0, math.log(4.0), -1.0])
    expected = [0.0, 0.125, 0.5 * (1 + 4 - 1 - math.log(4)), 0.5 * (4 + math.exp(-1) - 1 + 1)]
    assert gaussian_kl(mu, logvar).tolist() == pytest.approx(expected, rel=1e-6)
    assert float(gaussian_kl(mu, logvar).sum()) == pytest.approx(3.6157927, rel=1e-6)


def _posterior(mu: torch.Tensor, logvar: float) -> tuple[torch.Tensor, ...]:
    lv = torch.full_like(mu, logvar)
    return mu + (0.5 * lv).exp() * torch.randn(mu.shape), mu, lv


def test_total_correlation_of_independent_latents_is_zero():
    z, mu, lv = _posterior(torch.randn(2000, 4), 0.0)
    assert abs(float(total_correlation(z, mu, lv))) < 0.05


def test_total_correlation_of_correlated_latents_is_positive():
    c = torch.randn(2000, 1)
    mu = torch.cat([c, c + 0.1 * torch.randn(2000, 1), torch.randn(2000, 2)], dim=1)
    z, mu, lv = _posterior(mu, -3.0)
    # two latents with correlation ≈ 0.99 (plus noise): TC ≈ −½ log(1 − ρ²) ≈ 1.2 nats
    assert float(total_correlation(z, mu, lv)) > 0.5


def test_total_correlation_dataset_size_adds_the_mws_constant():
    z, mu, lv = _posterior(torch.randn(64, 3), 0.0)
    plain, mws = total_correlation(z, mu, lv), total_correlation(z, mu, lv, dataset_size=1000)
    assert float(mws - plain) == pytest.approx(2 * math.log(1000), rel=1e-5)  # (D − 1) log N


def test_total_correlation_is_differentiable():
    mu = torch.randn(32, 3, requires_grad=True)
    lv = torch.zeros(32, 3, requires_grad=True)
    z = mu + (0.5 * lv).exp() * torch.randn(32, 3)
    total_correlation(z, mu, lv).backward()
    assert mu.grad is not None and torch.isfinite(mu.grad).all() and mu.grad.abs().sum() > 0


def test_active_latents_counts_variance_above_threshold():
    mu = torch.stack([torch.randn(500), 0.01 * torch.randn(500), torch.zeros(500)], dim=1)
    assert active_latents(mu) == 1
    assert active_latents(mu, threshold=1e-6) == 2
