"""Toy Models of Superposition: the 2-feature / 1-neuron switches and the phase diagram."""

from __future__ import annotations

import pytest
import torch

from tti_ray.toy import SuperpositionConfig, phase_diagram, phase_grid
from tti_ray.toy import metrics as M
from tti_ray.toy.superposition import Trained, importances, sample_features, train_instances


def best_w(t: Trained, point: int, restarts: int) -> torch.Tensor:
    k = point * restarts + int(t.objective[point * restarts : (point + 1) * restarts].argmin())
    return t.w[k, 0]  # [2]: the hidden unit's weight on feature 0 and feature 1


def test_two_features_one_neuron_switches():
    """Feature 1 has importance 0.3 (feature 0: 1). What we find, and assert:

    * data-density knob (Elhage et al.): dense features (p = 1) -> the unit carries feature 0
      only; sparse features (p = 0.05) -> it carries both, antipodally (W ≈ [1, −1]: the ReLU
      filters the negative interference). Sparser data means *more* superposition.
    * L1 knob on the hidden activation (seed 004): at p = 0.05, λ = 0 -> both features; λ = 0.2
      -> feature 0 only. More penalty means less superposition, as seed 004 says - but the
      superposed solution is antipodal, not the "sum of the two feature directions" it describes
      (a same-sign W ≈ [1, 0.2] does occur, as a worse local minimum).
    """
    points = [(1.0, 0.0), (0.05, 0.0), (0.05, 0.2)]  # (feature_prob, l1_penalty)
    r = 4
    prob = torch.tensor([p for p, _ in points for _ in range(r)])
    l1 = torch.tensor([lam for _, lam in points for _ in range(r)])
    t = train_instances(
        n_features=2, n_hidden=1, prob=prob, importance=importances(2, torch.full((3 * r,), 0.3)),
        l1=l1, steps=1500, batch_size=512, lr=1e-2, seed=0, eval_samples=4096,
    )  # fmt: skip
    assert not t.diverged
    dense, sparse, sparse_l1 = (best_w(t, i, r).abs().tolist() for i in range(3))
    assert dense[0] > 0.9 and dense[1] < 0.1  # one feature only
    assert sparse_l1[0] > 0.8 and sparse_l1[1] < 0.1  # one feature only
    assert min(sparse) > 0.9  # weights on both ...
    ws = best_w(t, 1, r)
    assert float(ws[0] * ws[1]) < 0  # ... with opposite signs
    phases = [M.feature_phases(best_w(t, i, r)[None, :]).tolist() for i in range(3)]
    assert phases == [[1, 0], [2, 2], [1, 0]]  # dedicated / superposition / dedicated


def test_features_are_sparse_uniform_and_shared_across_instances():
    g = torch.Generator().manual_seed(0)
    x = sample_features(torch.tensor([1.0, 0.1]), 4, 20000, g)
    assert x.shape == (2, 20000, 4)
    assert float((x[1] > 0).float().mean()) == pytest.approx(0.1, abs=0.01)
    assert float(x[0].mean()) == pytest.approx(0.5, abs=0.01)
    assert torch.equal((x[1] > 0), (x[0] < 0.1))  # common random numbers


def test_phase_grid_records_and_png(tmp_path):
    base = SuperpositionConfig(n_features=2, n_hidden=1, steps=200, batch_size=256, restarts=2)
    recs = phase_grid(base, x=("importance_decay", [0.3, 3.0]), y=("feature_prob", [1.0, 0.05]))
    assert len(recs) == 4
    assert {(r["importance_decay"], r["feature_prob"]) for r in recs} == {
        (0.3, 1.0), (3.0, 1.0), (0.3, 0.05), (3.0, 0.05)}  # fmt: skip
    assert all(r["toy/phase"] in (0.0, 1.0, 2.0) and "toy/norm/1" in r for r in recs)
    png = phase_diagram(recs, tmp_path / "phase.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        phase_grid(base, x=("lr", [0.1]), y=("feature_prob", [1.0]))


def test_phase_diagram_from_sweep_style_records(tmp_path):
    """Sweep results name config values by dotted path; a non-grid set falls back to scatter."""
    recs = [{"toy.feature_prob": p, "toy.l1_penalty": lam, "toy/phase": float(ph)}
            for p, lam, ph in [(0.01, 0.0, 2), (0.1, 0.3, 1), (1.0, 1.0, 0)]]  # fmt: skip
    png = phase_diagram(recs, tmp_path / "d" / "scatter.png", x="feature_prob", y="l1_penalty")
    assert png.exists() and png.stat().st_size > 1000
