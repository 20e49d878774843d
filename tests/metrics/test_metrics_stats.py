"""Streaming ActivationStats agrees with the pure functions; site_metrics names."""

from __future__ import annotations

import math

import pytest
import torch

from tti_ray.metrics import (
    BASE_METRICS,
    METRICS,
    ActivationStats,
    always_on_fraction,
    dead_fraction,
    mean_abs_cosine,
    normalized_polysemanticity,
    participation_ratio,
    polysemanticity,
    site_metrics,
    sparsity,
)
from tti_ray.metrics.core import activation_frequency


def _batches():
    """Three batches of GELU-like activations with exact zeros, dead and always-on neurons."""
    g = torch.Generator().manual_seed(1)
    out = []
    for n in (37, 64, 11):
        a = torch.nn.functional.relu(torch.randn(n, 12, generator=g)) * 3  # [n, D=12]
        a[:, 0] = 0.0  # dead
        a[:, 1] = 1.0 + torch.rand(n, generator=g)  # always on
        a[: n // 3, 2] = 0.005  # near zero, below threshold
        ids = torch.randint(0, 20, (n,), generator=g) * 7  # sparse id values
        out.append((a, ids))
    return out


def test_streamed_stats_equal_pure_functions_on_concatenation():
    batches = _batches()
    acts = torch.cat([a for a, _ in batches])
    ids = torch.cat([i for _, i in batches])
    uniq, inverse = torch.unique(ids, return_inverse=True)
    st = ActivationStats(len(uniq), acts.shape[1], 0.01, torch.device("cpu"))
    start = 0
    for a, _ in batches:
        st.update(a, inverse[start : start + len(a)])
        start += len(a)
    res = st.finalize(len(uniq))

    h = polysemanticity(acts, ids)
    assert set(BASE_METRICS) <= set(res)
    assert torch.allclose(res["neuron_entropy"], h, atol=1e-5)
    assert res["polysemanticity"] == pytest.approx(float(h.mean()), abs=1e-5)
    assert res["polysemanticity_norm"] == pytest.approx(
        float(normalized_polysemanticity(acts, ids).mean()), abs=1e-5
    )
    assert res["mean_abs_cosine"] == pytest.approx(mean_abs_cosine(acts), abs=1e-5)
    assert res["sparsity"] == pytest.approx(sparsity(acts), abs=1e-6)
    assert res["dead_fraction"] == pytest.approx(dead_fraction(acts)) and res["dead_fraction"] > 0
    assert res["always_on_fraction"] == pytest.approx(always_on_fraction(acts))
    assert res["always_on_fraction"] > 0
    assert res["effective_dim"] == pytest.approx(participation_ratio(acts), rel=1e-4)
    assert torch.allclose(res["neuron_frequency"], activation_frequency(acts))


def test_streamed_closed_forms():
    # neuron 0 fires on id 4 only; neuron 1 uniform over 4 ids; fed one token at a time
    ids = torch.tensor([4, 1, 2, 3, 4, 1, 2, 3])
    acts = torch.stack([(ids == 4).float() * 2, torch.ones(8)], 1)
    uniq, inv = torch.unique(ids, return_inverse=True)
    st = ActivationStats(len(uniq), 2, 0.01, torch.device("cpu"))
    for i in range(8):
        st.update(acts[i : i + 1], inv[i : i + 1])
    res = st.finalize(len(uniq))
    assert res["neuron_entropy"].tolist() == pytest.approx([0.0, math.log(4)], abs=1e-6)
    assert res["polysemanticity_norm"] == pytest.approx(0.5, abs=1e-6)


def _fake(value: float) -> dict[str, float]:
    return {m: value for m in METRICS}


def test_site_metrics_key_names_and_headline_mean():
    results = {
        ("mlp_hidden", 0): _fake(1.0),
        ("mlp_hidden", 1): _fake(3.0),
        ("mlp_out", 0): _fake(10.0),
        ("mlp_out", 1): _fake(20.0),
    }
    out = site_metrics(results, prefix="val")
    assert out["val/polysemanticity/mlp_hidden/layer_0"] == 1.0
    assert out["val/polysemanticity/mlp_hidden/layer_1"] == 3.0
    assert out["val/polysemanticity/mlp_out/layer_1"] == 20.0
    assert out["val/polysemanticity/mlp_hidden/mean"] == 2.0
    assert out["val/polysemanticity/mlp_out/mean"] == 15.0
    # the headline is the mlp_hidden layer mean, whatever order the sites come in
    for metric in METRICS:
        assert out[f"val/{metric}/mean"] == 2.0
    assert len(out) == len(METRICS) * (4 + 2 + 1)
    assert all(isinstance(v, float) for v in out.values())


def test_site_metrics_headline_falls_back_to_first_site():
    out = site_metrics({("mlp_out", 2): _fake(5.0)}, prefix="sae")
    assert out["sae/sparsity/mlp_out/layer_2"] == 5.0
    assert out["sae/sparsity/mean"] == 5.0
    assert site_metrics({}) == {}
