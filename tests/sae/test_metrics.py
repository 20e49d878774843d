"""Closed-form answers for every SAE metric, and the streaming twin against the pure functions."""

from __future__ import annotations

import math

import pytest
import torch

from tti_ray.sae.metrics import (
    ReconstructionStats,
    ce_loss_score,
    dead_fraction,
    delta_ce,
    dense_fraction,
    explained_variance,
    fvu,
    kl,
    l0,
    mse,
)


def test_l0_dead_dense_of_a_hand_made_code():
    f = torch.tensor(
        [
            [1.0, 0.0, 0.0, 2.0, 0.0],
            [0.5, 0.0, 0.0, 0.0, 0.0],
            [3.0, 0.0, 0.0, 0.0, 0.0],
            [0.2, 0.0, 0.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, 0.0, 0.0],
            [0.1, 0.0, 0.0, 0.0, -1.0],  # negative codes do not count as firing
            [0.1, 0.0, 4.0, 0.0, 0.0],
        ]
    )  # 11 tokens: latent 0 fires on all, latent 3 on 1/11 (9.1% - not dense), 2 on 1/11
    assert l0(f) == pytest.approx(13 / 11)
    assert dead_fraction(f) == pytest.approx(2 / 5)  # latents 1 and 4
    assert dense_fraction(f) == pytest.approx(1 / 5)  # only latent 0 fires on > 10%
    assert dense_fraction(f, threshold=0.05) == pytest.approx(3 / 5)


def test_perfect_reconstruction():
    x = torch.randn(50, 8) * 3 + 1
    assert mse(x, x) == 0.0
    assert fvu(x, x) == 0.0
    assert explained_variance(x, x) == 1.0


def test_predicting_the_mean_explains_nothing_and_zero_is_worse():
    x = torch.randn(200, 6) + 5.0  # large offset: variance about 0 would be wrong here
    mean = x.mean(0, keepdim=True).expand_as(x)
    assert fvu(x, mean) == pytest.approx(1.0)
    assert explained_variance(x, mean) == pytest.approx(0.0, abs=1e-12)
    assert fvu(x, torch.zeros_like(x)) > 10  # ‖x‖² ≫ ‖x − μ‖²


def test_hand_computed_example():
    """x = [[2, 0], [0, 4]], μ = [1, 2]: Σ‖x − μ‖² = 10; x̂ = [[2, 1], [0, 3]]: Σ‖x − x̂‖² = 2."""
    x = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    x_hat = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    assert mse(x, x_hat) == pytest.approx(1.0)  # (1 + 1) / 2 tokens, summed over dims
    assert fvu(x, x_hat) == pytest.approx(0.2)
    assert explained_variance(x, x_hat) == pytest.approx(0.8)


def test_constant_input_gives_nan_fvu():
    x = torch.ones(4, 3)
    assert math.isnan(fvu(x, x))


def test_ce_loss_score_and_delta_ce():
    assert ce_loss_score(ce_clean=2.0, ce_sae=2.0, ce_zero=5.0) == 1.0  # perfect
    assert ce_loss_score(ce_clean=2.0, ce_sae=5.0, ce_zero=5.0) == 0.0  # as bad as ablation
    assert ce_loss_score(ce_clean=2.0, ce_sae=3.0, ce_zero=6.0) == pytest.approx(0.75)
    assert math.isnan(ce_loss_score(2.0, 2.5, 2.0))
    assert delta_ce(2.0, 2.0) == 0.0 and delta_ce(2.0, 2.25) == 0.25


def test_kl_closed_form():
    logits = torch.randn(3, 7, 11)
    assert kl(logits, logits) == 0.0
    assert kl(logits, logits + 4.0) == pytest.approx(0.0, abs=1e-6)  # softmax shift-invariant
    # p = (1/2, 1/2), q = (1/4, 3/4): KL = ½ log 2 + ½ log(2/3)
    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.25, 0.75]]))
    expect = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert kl(p, q) == pytest.approx(expect, rel=1e-5)
    assert kl(q, p) != pytest.approx(expect, rel=1e-3)  # KL(clean ‖ sae) is directional


def test_streaming_twin_matches_pure_functions():
    torch.manual_seed(0)
    x = torch.randn(300, 8) * 2 + 3
    x_hat = x + 0.3 * torch.randn_like(x)
    f = torch.relu(torch.randn(300, 20) - 1.0)
    f[:, 5] = 0  # a dead latent
    f[:, 6] = 1.0  # a dense one
    stats = ReconstructionStats(8, 20)
    for i in range(0, 300, 64):  # uneven batches
        stats.update(x[i : i + 64], x_hat[i : i + 64], f[i : i + 64])
    got = stats.compute()
    want = {
        "l0": l0(f),
        "mse": mse(x, x_hat),
        "fvu": fvu(x, x_hat),
        "explained_variance": explained_variance(x, x_hat),
        "dead_fraction": dead_fraction(f),
        "dense_fraction": dense_fraction(f),
    }
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
