"""Hypervolume: closed forms, inclusion-exclusion, Monte Carlo, and the algorithms vs each other."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tti_ray.fronts.hypervolume import (
    _hv2d,
    _hv3d,
    _hv_wfg,
    _nondominated_unique,
    describe_reference_rule,
    hypervolume,
    hypervolume_history,
    reference_point,
)


def inclusion_exclusion(p: np.ndarray, r: np.ndarray) -> float:
    """HV = sum over non-empty subsets S of (-1)^{|S|+1} vol(box(max over S, r)); minimization."""
    p = p[(p < r).all(1)]
    total = 0.0
    for k in range(1, len(p) + 1):
        for s in itertools.combinations(range(len(p)), k):
            corner = p[list(s)].max(0)
            total += (-1) ** (k + 1) * float(np.prod(r - corner))
    return total


def test_single_point_is_its_box():
    assert hypervolume([[1.0, 2.0, 3.0]], ["min"] * 3, [4, 4, 4]) == pytest.approx(3 * 2 * 1)
    assert hypervolume([[1.0, 2.0]], ["min", "min"], [3, 5]) == pytest.approx(2 * 3)
    assert hypervolume([[1.0, 2.0, 3.0, 0.5]], ["min"] * 4, [2, 3, 4, 1]) == pytest.approx(0.5)
    assert hypervolume([[2.0]], ["min"], [5.0]) == pytest.approx(3.0)


def test_two_overlapping_boxes_2d():
    # boxes [1,4]x[3,4] (3) and [2,4]x[1,4] (6) overlap in [2,4]x[3,4] (2): 3 + 6 - 2
    assert hypervolume([[1, 3], [2, 1]], ["min", "min"], [4, 4]) == pytest.approx(7.0)


def test_max_objectives_are_sign_flipped():
    # same geometry as above with the second objective maximized: y -> -y
    assert hypervolume([[1, -3], [2, -1]], ["min", "max"], [4, -4]) == pytest.approx(7.0)
    assert hypervolume([[-1, -3], [-2, -1]], ["max", "max"], [-4, -4]) == pytest.approx(7.0)


def test_known_3d_staircase():
    # three cyclic points: 3 boxes of 6, three pairwise overlaps of 2, one triple overlap of 1
    p = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]
    assert hypervolume(p, ["min"] * 3, [4, 4, 4]) == pytest.approx(18 - 6 + 1)


def test_points_not_dominating_reference_add_nothing():
    r = [4.0, 4.0]
    base = hypervolume([[1, 3], [2, 1]], ["min", "min"], r)
    extra = [[1, 3], [2, 1], [0, 4], [5, 0], [np.nan, 0], [0, np.inf], [3, 3]]  # (3,3) dominated
    assert hypervolume(extra, ["min", "min"], r) == pytest.approx(base)
    assert hypervolume(np.zeros((0, 3)), ["min"] * 3, [1, 1, 1]) == 0.0
    assert hypervolume([[5, 5, 5]], ["min"] * 3, [1, 1, 1]) == 0.0


def test_duplicates_do_not_change_volume():
    p = np.array([[1, 2, 3], [2, 3, 1], [3, 1, 2]], dtype=float)
    r = [4, 4, 4]
    assert hypervolume(np.vstack([p, p, p[:1]]), ["min"] * 3, r) == pytest.approx(13.0)
    assert hypervolume([[1, 3], [1, 3], [2, 1]], ["min", "min"], [4, 4]) == pytest.approx(7.0)


def test_matches_inclusion_exclusion_on_random_sets():
    rng = np.random.default_rng(2024)
    for _ in range(200):
        m = int(rng.integers(2, 6))
        n = int(rng.integers(0, 8))
        p = rng.integers(0, 5, size=(n, m)).astype(float)  # ties and duplicates
        if rng.random() < 0.5:
            p = p + rng.random(size=p.shape)
        modes = list(rng.choice(["min", "max"], size=m))
        sign = np.where(np.array(modes) == "max", -1.0, 1.0)
        r = np.full(m, 5.5)
        expect = inclusion_exclusion(p, r)
        assert hypervolume(p * sign, modes, r * sign) == pytest.approx(expect, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("m, n", [(3, 40), (4, 25)])
def test_matches_monte_carlo(m, n):
    rng = np.random.default_rng(m)
    p = rng.random(size=(n, m)) ** 0.5  # some concave-ish spread
    p = p / np.linalg.norm(p, axis=1, keepdims=True)  # points near a sphere: a real trade-off
    r = np.full(m, 1.1)
    hv = hypervolume(p, ["min"] * m, r)
    lo = p.min(0)
    samples = lo + rng.random(size=(200_000, m)) * (r - lo)
    dominated = np.zeros(len(samples), dtype=bool)
    for q in p:
        dominated |= (samples >= q).all(1)
    frac = dominated.mean()
    box = float(np.prod(r - lo))
    sigma = box * np.sqrt(frac * (1 - frac) / len(samples))
    assert abs(hv - frac * box) < 5 * sigma


def test_algorithms_agree_with_each_other():
    rng = np.random.default_rng(8)
    for _ in range(30):
        p = _nondominated_unique(
            rng.integers(0, 6, size=(int(rng.integers(1, 30)), 3)).astype(float)
        )
        r = np.full(3, 6.0)
        hv3 = _hv3d(p, r)
        assert _hv_wfg(p, r, base_dim=2) == pytest.approx(hv3)
        # invariant to the order of the objectives
        assert _hv3d(p[:, [2, 0, 1]], r) == pytest.approx(hv3)
    for _ in range(30):
        p = _nondominated_unique(rng.random(size=(int(rng.integers(1, 15)), 4)))
        r = np.full(4, 1.0)
        assert _hv_wfg(p, r, base_dim=3) == pytest.approx(_hv_wfg(p, r, base_dim=2))
    q = rng.random(size=(50, 2))
    assert _hv2d(q, np.ones(2)) == pytest.approx(_hv_wfg(_nondominated_unique(q), np.ones(2)))


def test_reference_point_rule():
    p = np.array([[1.0, 10.0], [3.0, 30.0], [2.0, np.nan]])
    r = reference_point(p, ["min", "max"])
    # min: worst 3, range 2 -> 3.2 ; max: worst 10, range 20 -> 8 (NaN row ignored)
    np.testing.assert_allclose(r, [3.2, 8.0])
    # zero range: pushed by margin * max(|worst|, 1)
    np.testing.assert_allclose(reference_point([[5.0, 0.0]], ["min", "max"]), [5.5, -0.1])
    np.testing.assert_allclose(reference_point(p, ["min", "max"], margin=0.5), [4.0, 0.0])
    np.testing.assert_allclose(reference_point(p, ["min", "max"], [9, 0]), [9.0, 0.0])
    assert "nadir" in describe_reference_rule() and "fixed" in describe_reference_rule([1, 2])
    # every given point adds volume under the default rule
    assert hypervolume(p, ["min", "max"], r) > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rule="ideal"), "unknown reference rule"),
        (dict(rule=[1.0]), "2 finite numbers"),
        (dict(rule=[1.0, np.nan]), "2 finite numbers"),
        (dict(margin=0.0), "margin"),
    ],
)
def test_reference_point_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reference_point([[1.0, 2.0]], ["min", "min"], **kwargs)


def test_reference_point_needs_a_finite_point():
    with pytest.raises(ValueError, match="no finite points"):
        reference_point([[np.nan, 1.0]], ["min", "min"])


def test_history_equals_prefix_recomputation():
    rng = np.random.default_rng(21)
    for m in (2, 3, 4):
        p = rng.random(size=(25, m))
        p[3] = np.nan
        p[7] = 2.0  # outside the reference
        modes = list(rng.choice(["min", "max"], size=m))
        sign = np.where(np.array(modes) == "max", -1.0, 1.0)
        p = p * sign
        r = np.full(m, 1.0) * sign
        hist = hypervolume_history(p, modes, r)
        assert len(hist) == len(p)
        expect = [hypervolume(p[: k + 1], modes, r) for k in range(len(p))]
        np.testing.assert_allclose(hist, expect, rtol=1e-12, atol=1e-12)
        assert (np.diff(hist) >= -1e-12).all()
    assert hypervolume_history(np.zeros((0, 2)), ["min", "min"], [1, 1]) == []
