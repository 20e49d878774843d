"""Closed-form checks of the pure metric functions (tti_ray.metrics.core)."""

from __future__ import annotations

import math

import pytest
import torch

from tti_ray.metrics import (
    activation_frequency,
    always_on_fraction,
    dead_fraction,
    entropy_of_mass,
    mean_abs_cosine,
    normalized_polysemanticity,
    participation_ratio,
    perplexity,
    polysemanticity,
    sparsity,
    token_mass,
)


def test_neuron_firing_on_one_token_id_has_entropy_zero():
    ids = torch.tensor([3, 5, 7, 5, 3, 9, 5, 7])  # [N=8]
    acts = torch.zeros(8, 2)
    acts[ids == 5, 0] = torch.tensor([0.5, 2.0, 1.0])  # fires on id 5 only, varying magnitude
    acts[:, 1] = 1.0  # fires everywhere
    h = polysemanticity(acts, ids)
    assert h.shape == (2,) and h.dtype == torch.float32
    assert h[0].item() == 0.0
    assert h[1].item() > 0.0


@pytest.mark.parametrize("n", [2, 5, 17])
def test_uniform_magnitude_over_n_ids_gives_log_n(n):
    ids = torch.arange(n).repeat(3)  # each id 3 times
    acts = torch.ones(3 * n, 1) * torch.where(torch.arange(3 * n) % 2 == 0, 1.0, -1.0)[:, None]
    # magnitude, not sign: alternating signs are still a uniform magnitude distribution
    assert polysemanticity(acts, ids).item() == pytest.approx(math.log(n), abs=1e-5)
    assert normalized_polysemanticity(acts, ids).item() == pytest.approx(1.0, abs=1e-5)


def test_normalized_divides_by_log_distinct_ids_in_sample():
    ids = torch.tensor([0, 1, 2, 3])
    acts = torch.tensor([[1.0], [1.0], [0.0], [0.0]])  # uniform over 2 of the 4 ids seen
    assert normalized_polysemanticity(acts, ids).item() == pytest.approx(math.log(2) / math.log(4))
    # a single distinct id: normalized is defined as 0 (no log 1 division)
    assert normalized_polysemanticity(torch.ones(3, 2), torch.zeros(3)).tolist() == [0.0, 0.0]


def test_dead_neuron_has_entropy_zero_not_nan():
    h = polysemanticity(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]))
    assert h.tolist() == [0.0, 0.0, 0.0]


def test_token_mass_and_entropy_of_mass():
    ids = torch.tensor([10, 20, 10, 30])
    acts = torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0], [0.0, 0.0]])
    m = token_mass(acts, ids)  # distinct ids sorted: 10, 20, 30
    assert torch.equal(m, torch.tensor([[2.0, 6.0], [3.0, 0.0], [0.0, 0.0]]))
    p = torch.tensor([0.4, 0.6])
    h = entropy_of_mass(m)
    assert h[0].item() == pytest.approx(float(-(p * p.log()).sum()), abs=1e-6)
    assert h[1].item() == 0.0


def test_orthogonal_columns_give_cosine_zero_identical_give_one():
    assert mean_abs_cosine(torch.eye(6)) == 0.0
    q, _ = torch.linalg.qr(torch.randn(50, 8))  # orthonormal columns, dense entries
    assert mean_abs_cosine(q) == pytest.approx(0.0, abs=1e-5)
    col = torch.randn(40, 1)
    assert mean_abs_cosine(col.repeat(1, 5)) == pytest.approx(1.0, abs=1e-6)
    # absolute value: anti-parallel columns count as 1 too
    assert mean_abs_cosine(torch.cat([col, -col, 3 * col], 1)) == pytest.approx(1.0, abs=1e-6)


def test_mean_abs_cosine_is_over_offdiagonal_pairs():
    # columns e0, e0, e1: pairs (0,1)=1, (0,2)=0, (1,2)=0 -> mean over 6 ordered pairs = 2/6
    a = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert mean_abs_cosine(a) == pytest.approx(1 / 3)
    assert mean_abs_cosine(torch.randn(10, 1)) == 0.0  # one neuron: no pairs
    # a zero column has cosine 0 with everything
    assert mean_abs_cosine(torch.tensor([[1.0, 0.0], [2.0, 0.0]])) == 0.0


def test_sparsity_dead_always_on_on_hand_made_tensors():
    # 100 tokens x 4 neurons
    acts = torch.zeros(100, 4)
    acts[:, 0] = 1.0  # active on 100%           -> always on
    acts[:50, 1] = -0.5  # active on 50%
    acts[0, 2] = 0.02  # active on 1% (not < 1%)  -> not dead
    acts[:, 3] = 0.009  # below threshold always  -> dead
    assert sparsity(acts) == pytest.approx(1 - (100 + 50 + 1) / 400)
    assert activation_frequency(acts).tolist() == pytest.approx([1.0, 0.5, 0.01, 0.0])
    assert dead_fraction(acts) == 0.25
    assert always_on_fraction(acts) == 0.25
    acts[99, 0] = 0.0  # 99% is not "> 99%"
    assert always_on_fraction(acts) == 0.0
    assert sparsity(acts, threshold=1e-3) == pytest.approx(1 - (99 + 50 + 1 + 100) / 400)


def test_participation_ratio_rank_one_and_isotropic():
    u = torch.randn(64, 1, dtype=torch.float64)
    v = torch.randn(1, 7, dtype=torch.float64)
    assert participation_ratio(u @ v + torch.randn(7, dtype=torch.float64)) == pytest.approx(
        1.0, rel=1e-5
    )
    d = 9
    iso = torch.cat([torch.eye(d), -torch.eye(d)]) * 2.5  # zero mean, covariance ∝ I
    assert participation_ratio(iso) == pytest.approx(d, rel=1e-6)
    # two equal-variance directions out of 5 neurons -> 2
    a = torch.zeros(4, 5)
    a[0, 0], a[1, 0], a[2, 3], a[3, 3] = 1.0, -1.0, 1.0, -1.0
    assert participation_ratio(a) == pytest.approx(2.0, rel=1e-6)
    assert participation_ratio(torch.ones(5, 3)) == 0.0  # no variance at all


def test_metrics_accept_low_precision_input():
    a = torch.randn(32, 4)
    ids = torch.randint(0, 5, (32,))
    assert torch.allclose(polysemanticity(a.bfloat16(), ids), polysemanticity(a.bfloat16().float(), ids))
    assert mean_abs_cosine(a.half()) == pytest.approx(mean_abs_cosine(a.half().float()))


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(50.0)) == pytest.approx(50.0)
    assert perplexity(1e6) == float("inf")
