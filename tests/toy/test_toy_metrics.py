"""Toy metrics on hand-made direction / weight matrices: exact closed-form values."""

from __future__ import annotations

import math

import pytest
import torch

from tti_ray.toy import metrics as M


def test_orthogonal_directions_have_zero_macs_and_interference():
    d = torch.eye(4) * torch.tensor([1.0, 2.0, 0.5, 3.0])  # orthogonal, mixed norms
    assert M.macs(d) == pytest.approx(0.0, abs=1e-7)
    assert M.interference(d, torch.tensor([1.0, 0.9, 0.81, 0.729])) == pytest.approx(0.0, abs=1e-7)


def test_identical_and_antipodal_directions_have_macs_one():
    v = torch.tensor([[1.0], [2.0], [-1.0]])
    assert M.macs(v.repeat(1, 5)) == pytest.approx(1.0)
    assert M.macs(torch.cat([v, -2 * v], 1)) == pytest.approx(1.0)
    imp = torch.tensor([1.0, 0.5, 0.25, 2.0, 1.0])
    # every cos² = 1: Σ_{i≠j} I_i I_j = (ΣI)² − ΣI²
    expected = float(imp.sum() ** 2 - imp.pow(2).sum())
    assert M.interference(v.repeat(1, 5), imp) == pytest.approx(expected)


def test_two_directions_at_45_degrees():
    d = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # cos = 1/√2
    assert M.macs(d) == pytest.approx(1 / math.sqrt(2))
    # ordered pairs (0,1) and (1,0): 2 · ½ · I0 · I1
    assert M.interference(d, torch.tensor([1.0, 0.9])) == pytest.approx(0.9)


def test_macs_is_permutation_invariant_so_a_permutation_null_is_degenerate():
    d = torch.randn(12, 16)
    values = {round(M.macs(d[:, torch.randperm(16)]), 6) for _ in range(20)}
    assert len(values) == 1


def test_calibrated_macs_is_one_half_on_random_directions():
    g = torch.Generator().manual_seed(123)
    vals = [
        M.calibrated_macs(torch.randn(12, 16, generator=g), draws=200, seed=k) for k in range(150)
    ]
    assert sum(vals) / len(vals) == pytest.approx(0.5, abs=0.05)
    assert 0.0 < min(vals) < 0.5 < max(vals) < 1.0


def test_calibrated_macs_extremes():
    # orthonormal directions: far below chance (z ≈ −11)
    assert M.calibrated_macs(torch.eye(16)[:, :12]) < 1e-3
    v = torch.randn(12, 1)
    assert M.calibrated_macs(v + 0.01 * torch.randn(12, 16)) > 1 - 1e-6  # near-duplicates


def test_feature_recovery_and_attached_importances():
    true = torch.eye(3)  # features along the axes of R^3
    d = torch.tensor([[0.0, 2.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    # feature 0 and 1 are written exactly; feature 2 only by −e2 (signed max: 0)
    assert M.feature_recovery(true, d).tolist() == pytest.approx([1.0, 1.0, 0.0])
    imp = torch.tensor([1.0, 0.5, 0.25])
    # axis match (|cos|): d0→f1, d1→f0, d2 ties f0/f1 (argmax takes f0), d3→f2
    assert M.attach_importances(d, true, imp).tolist() == pytest.approx([0.5, 1.0, 1.0, 0.25])


def test_superposition_readouts_on_a_hand_made_w():
    # columns: f0 = e0, f1 = e1, f2 = ½e0 (shares f0's direction)
    w = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    assert M.feature_norms(w).tolist() == pytest.approx([1.0, 1.0, 0.5])
    # Σ_{j≠i}(Ŵ_i·W_j)²: f0 sees f2 (0.5² = 0.25), f1 nothing, f2 sees f0 (1² = 1)
    assert M.superposition_measure(w).tolist() == pytest.approx([0.25, 0.0, 1.0])
    assert M.features_represented(w) == 2  # ‖W_2‖ = 0.5 is not > 0.5
    assert M.dims_per_feature(w) == pytest.approx(2 / 2.25)
    assert M.feature_phases(w).tolist() == [1, 1, 0]
    antipodal = torch.tensor([[1.0, -1.0]])  # 2 features in 1 hidden unit
    assert M.superposition_measure(antipodal).tolist() == pytest.approx([1.0, 1.0])
    assert M.feature_phases(antipodal).tolist() == [2, 2]
    assert M.dims_per_feature(antipodal) == pytest.approx(0.5)
    assert M.superposition_measure(torch.zeros(2, 3)).tolist() == [0.0, 0.0, 0.0]


def test_weight_statistics_and_l0():
    ws = [torch.tensor([[1.0, -1.0], [0.0, 0.0]])]
    assert M.w4_sparsity(ws) == pytest.approx(0.5)  # Σw⁴/N = 2/4
    assert M.w4_kurtosis(ws) == pytest.approx(2.0)  # N·Σw⁴/(Σw²)² = 4·2/4
    assert M.w4_kurtosis([torch.ones(3, 3)]) == pytest.approx(1.0)
    z = torch.tensor([[0.5, -0.01, 0.0, 2.0]])
    assert M.l0_fraction(z) == pytest.approx(0.5)
