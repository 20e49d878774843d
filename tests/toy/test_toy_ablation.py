"""Seed 001 ablation pieces: data statistics, noise, init, SAE."""

from __future__ import annotations

import pytest
import torch

from tti_ray.toy import AblationConfig
from tti_ray.toy.ablation import (
    ToyMLP,
    ToySAE,
    fit_sae,
    group_correlations,
    grouped_features,
    init_mlp,
    sample_noise,
    targets,
)


def test_grouped_features_statistics():
    cfg = AblationConfig(feature_prob=0.5, coactivation=0.6)
    x = grouped_features(40000, cfg, torch.Generator().manual_seed(0))
    on = x > 0
    assert on.float().mean(0).tolist() == pytest.approx([0.5] * 8, abs=0.015)
    both = lambda i, j: float((on[:, i] & on[:, j]).float().mean() / on[:, i].float().mean())
    assert both(0, 2) == pytest.approx(0.6 + 0.4 * 0.5, abs=0.02)  # same group
    assert both(3, 4) == pytest.approx(0.8, abs=0.02)
    assert both(0, 5) == pytest.approx(0.5, abs=0.02)  # different groups
    assert group_correlations(cfg).tolist() == pytest.approx([0.5, 0.75, 1.0])
    for (i, j), rho in [((0, 1), 0.5), ((3, 4), 0.75)]:
        m = on[:, i] & on[:, j]
        r = torch.corrcoef(torch.stack([x[m, i], x[m, j]]))[0, 1]
        assert float(r) == pytest.approx(rho, abs=0.03)
    assert targets(x).shape == (40000, 8) and torch.isfinite(targets(x)).all()


def test_noise_kinds():
    g = torch.Generator().manual_seed(0)
    bip = sample_noise(torch.Size((1000, 12)), AblationConfig(noise="bipolar"), g)
    assert bip.unique().tolist() == pytest.approx([-0.1, 0.1])
    t = sample_noise(torch.Size((200000,)), AblationConfig(noise="student_t"), g)
    assert float(t.std()) == pytest.approx(0.1, rel=0.1)  # same variance, heavier tails
    assert float((t.abs() > 0.4).float().mean()) > 10 * float(
        (bip.abs() > 0.4).float().mean() + 1e-4
    )


def test_orthogonal_init_and_gaussian_scale():
    g = torch.Generator().manual_seed(0)
    m = ToyMLP(12, "relu")
    init_mlp(m, "orthogonal", g)
    w = m.layers[1].weight
    assert torch.allclose(w @ w.T, torch.eye(12), atol=1e-5)
    init_mlp(m, "gaussian", g)
    assert float(m.layers[1].weight.detach().std()) == pytest.approx(12**-0.5, rel=0.25)
    assert float(m.layers[1].bias.detach().abs().max()) == 0.0


def test_sae_init_and_fit():
    g = torch.Generator().manual_seed(0)
    sae = ToySAE(12, 16, g)
    bias = sae.enc.bias.detach()
    assert 0.0 <= float(bias.min()) and float(bias.max()) <= 0.1
    acts = torch.randn(256, 12, generator=g)
    fitted, diverged = fit_sae(acts, AblationConfig(sae_steps=200), g)
    with torch.no_grad():
        recon, _ = fitted(acts)
    assert not diverged
    assert float((recon - acts).pow(2).mean()) < 0.2
    assert torch.allclose(fitted.dec.weight.detach().norm(dim=0), torch.ones(16), atol=1e-5)
