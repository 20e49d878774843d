"""Live-neuron and calibrated polysemanticity: constructed neurons score what they are."""

from __future__ import annotations

import math

import pytest
import torch

from tti_ray.metrics import (
    ActivationStats,
    calibrated_polysemanticity,
    dead_fraction,
    live_mask,
    monosemantic_fraction,
    polysemanticity,
    position_permutations,
    site_metrics,
)


def _zipf_ids(n: int, vocab: int, seed: int) -> torch.Tensor:
    """Token ids with a Zipfian frequency profile, like text."""
    g = torch.Generator().manual_seed(seed)
    w = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    return torch.multinomial(w, n, replacement=True, generator=g)


def _neurons(n: int = 20_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, 4]: 0 fires at 2% of positions chosen uniformly at random (token-blind); 1 fires only
    on token id 3 (every occurrence); 2 is dead; 3 fires everywhere with random magnitude."""
    g = torch.Generator().manual_seed(seed + 1)
    ids = _zipf_ids(n, 2000, seed)
    acts = torch.zeros(n, 4)
    rare = torch.rand(n, generator=g) < 0.02
    acts[rare, 0] = 0.5 + torch.rand(int(rare.sum()), generator=g)
    acts[ids == 3, 1] = 1.0 + torch.rand(int((ids == 3).sum()), generator=g)
    acts[:, 3] = torch.rand(n, generator=g) + 0.05
    return acts, ids


def test_random_rare_neuron_is_chance_level_while_its_raw_entropy_is_low():
    acts, ids = _neurons()
    cal = calibrated_polysemanticity(acts, ids)
    raw = polysemanticity(acts, ids)
    n_ids = int(torch.unique(ids).numel())
    assert abs(cal[0].item() - 1.0) < 0.1
    # the seed metric calls it far more selective than the token-blind dense neuron: it fires on
    # ~400 positions, so it cannot see most of the ids
    assert raw[0].item() < 0.85 * math.log(n_ids)
    assert raw[0].item() < raw[3].item() - 0.5
    assert abs(cal[3].item() - 1.0) < 0.05


def test_single_token_neuron_is_zero_and_dead_neuron_is_excluded():
    acts, ids = _neurons()
    cal = calibrated_polysemanticity(acts, ids)
    assert cal[1].item() == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(cal[2].item())
    live = live_mask(acts)
    assert live.tolist() == [True, True, False, True]
    assert dead_fraction(acts) == pytest.approx(0.25)  # the NaN neuron is the one counted dead
    # the seed metric gives the dead neuron 0, "perfectly monosemantic"
    assert polysemanticity(acts, ids)[2].item() == 0.0


def test_neuron_on_k_ids_scores_log_k_over_null():
    # uniform over 2 ids of 64 equally frequent ones: H = log 2, the null spreads the same
    # positions over all 64 ids
    n = 6400
    ids = torch.arange(n) % 64
    acts = ((ids == 5) | (ids == 9)).float()[:, None]
    cal = calibrated_polysemanticity(acts, ids, permutations=8)
    null = float(polysemanticity(acts, ids)) / float(cal)
    assert float(polysemanticity(acts, ids)) == pytest.approx(math.log(2), abs=1e-5)
    # the null puts 200 positions on 64 equally likely ids: plug-in entropy ≈ log 64 minus the
    # Miller (1955) bias (K − 1) / 2N
    assert null == pytest.approx(math.log(64) - 63 / 400, abs=0.03)


def test_relabelling_token_ids_changes_nothing():
    acts, ids = _neurons(5000)
    relabel = torch.randperm(5000, generator=torch.Generator().manual_seed(3))  # a bijection
    a = calibrated_polysemanticity(acts, ids)
    b = calibrated_polysemanticity(acts, relabel[ids] + 10_000)
    assert torch.allclose(a, b, atol=1e-6, equal_nan=True)


def test_same_seed_same_value_other_seed_close():
    acts, ids = _neurons(5000)
    a = calibrated_polysemanticity(acts, ids, seed=7)
    b = calibrated_polysemanticity(acts, ids, seed=7)
    assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
    c = calibrated_polysemanticity(acts, ids, seed=8)
    assert torch.allclose(a, c, atol=0.05, equal_nan=True) and not torch.equal(
        torch.nan_to_num(a), torch.nan_to_num(c))
    assert torch.equal(position_permutations(50, 3, 1), position_permutations(50, 3, 1))


def test_monosemantic_fraction_counts_live_neurons_under_threshold():
    cal = torch.tensor([0.1, 0.49, 0.5, 0.9, float("nan")])
    assert monosemantic_fraction(cal) == pytest.approx(2 / 4)
    assert monosemantic_fraction(cal, threshold=0.95) == pytest.approx(1.0)
    assert math.isnan(monosemantic_fraction(torch.full((3,), float("nan"))))


def test_streaming_equals_pure_functions():
    acts, ids = _neurons(3000)
    cats = ids % 5  # a category per id
    n = ids.numel()
    uniq, inv = torch.unique(ids, return_inverse=True)
    perms = position_permutations(n, 4, 0)
    null_index = inv[perms]  # [P, N]
    st = ActivationStats(len(uniq), 4, 0.01, torch.device("cpu"), permutations=4,
                         id_categories=uniq % 5)
    for s, e in ((0, 1000), (1000, 1001), (1001, 3000)):
        st.update(acts[s:e], inv[s:e], null_index[:, s:e])
    res = st.finalize(len(uniq))
    live = live_mask(acts)
    cal = calibrated_polysemanticity(acts, ids)
    assert torch.allclose(res["neuron_calibrated"], cal, atol=1e-5, equal_nan=True)
    assert res["polysemanticity_calibrated"] == pytest.approx(float(cal[live].mean()), abs=1e-5)
    assert res["polysemanticity_live"] == pytest.approx(
        float(polysemanticity(acts, ids)[live].mean()), abs=1e-5)
    assert res["monosemantic_fraction"] == pytest.approx(monosemantic_fraction(cal))
    assert res["category_polysemanticity_live"] == pytest.approx(
        float(polysemanticity(acts, cats)[live].mean()), abs=1e-5)
    assert res["category_polysemanticity_calibrated"] == pytest.approx(
        float(calibrated_polysemanticity(acts, cats)[live].mean()), abs=1e-5)


def test_site_metrics_report_calibrated_names_and_nan_without_live_neurons():
    acts = torch.zeros(200, 3)
    ids = torch.arange(200) % 7
    uniq, inv = torch.unique(ids, return_inverse=True)
    st = ActivationStats(len(uniq), 3, 0.01, torch.device("cpu"), permutations=2)
    st.update(acts, inv, inv[position_permutations(200, 2)])
    out = site_metrics({("mlp_hidden", 0): st.finalize(len(uniq))})
    assert math.isnan(out["val/polysemanticity_calibrated/mean"])
    assert math.isnan(out["val/polysemanticity_live/mlp_hidden/layer_0"])
    assert out["val/polysemanticity/mean"] == 0.0  # the seed metric: "perfectly monosemantic"
    assert out["val/dead_fraction/mean"] == 1.0
