"""Front, non-dominated sort and MO-ASHA ranking against brute-force definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tti_ray.fronts.dominance import (
    Objective,
    _nd_mask_2d,
    _nd_mask_pairwise,
    crowding_distance,
    dominates,
    front_ranks,
    non_dominated_mask,
    non_dominated_sort,
    parse_objectives,
    rank_order,
    select_top,
)


def brute_dominates(a, b, modes) -> bool:
    """The docstring's definition, written out literally."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    no_worse = all(
        (x <= y) if m == "min" else (x >= y) for x, y, m in zip(a, b, modes, strict=True)
    )
    better = any((x < y) if m == "min" else (x > y) for x, y, m in zip(a, b, modes, strict=True))
    return no_worse and better


def brute_mask(p, modes) -> np.ndarray:
    n = len(p)
    return np.array(
        [
            bool(np.isfinite(p[i]).all())
            and not any(brute_dominates(p[j], p[i], modes) for j in range(n) if j != i)
            for i in range(n)
        ],
        dtype=bool,
    )


def random_case(rng: np.random.Generator):
    """Small integer grids so ties and exact duplicates are frequent; mixed senses; some NaN/inf."""
    n = int(rng.integers(0, 30))
    m = int(rng.integers(1, 5))
    p = rng.integers(0, int(rng.integers(2, 6)), size=(n, m)).astype(float)
    if n and rng.random() < 0.5:  # duplicate some rows verbatim
        k = int(rng.integers(1, n + 1))
        p = np.vstack([p, p[rng.integers(0, n, size=k)]])
    if len(p) and rng.random() < 0.3:
        p[rng.integers(0, len(p)), rng.integers(0, m)] = rng.choice([np.nan, np.inf, -np.inf])
    modes = list(rng.choice(["min", "max"], size=m))
    return p, modes


def test_front_equals_brute_force_on_random_sets():
    rng = np.random.default_rng(1234)
    for _ in range(250):
        p, modes = random_case(rng)
        np.testing.assert_array_equal(non_dominated_mask(p, modes), brute_mask(p, modes))


def test_front_equals_brute_force_on_continuous_sets():
    rng = np.random.default_rng(7)
    for _ in range(50):
        m = int(rng.integers(2, 5))
        p = rng.normal(size=(int(rng.integers(1, 60)), m))
        modes = list(rng.choice(["min", "max"], size=m))
        np.testing.assert_array_equal(non_dominated_mask(p, modes), brute_mask(p, modes))


def test_2d_fast_path_agrees_with_pairwise_twin():
    rng = np.random.default_rng(3)
    for _ in range(300):
        p = rng.integers(0, int(rng.integers(1, 8)), size=(int(rng.integers(1, 80)), 2)).astype(
            float
        )
        np.testing.assert_array_equal(_nd_mask_2d(p), _nd_mask_pairwise(p))
    big = rng.normal(size=(3000, 2))  # also across the pairwise blocks
    np.testing.assert_array_equal(_nd_mask_2d(big), _nd_mask_pairwise(big))


def test_duplicates_ties_and_nonfinite_rows():
    p = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 3.0], [2.0, 1.0], [np.nan, 0.0], [-np.inf, 0.0]])
    mask = non_dominated_mask(p, ["min", "min"])
    # both copies of (1, 2) kept; (1, 3) ties in x and is worse in y; -inf row dominates nothing
    np.testing.assert_array_equal(mask, [True, True, False, True, False, False])
    assert not dominates([1, 2], [1, 2], ["min", "min"])
    assert dominates([1, 2], [1, 3], ["min", "min"])
    assert dominates([1, 3], [1, 2], ["min", "max"])
    assert not dominates([-np.inf, 0], [1, 1], ["min", "min"])


def test_empty_and_shape_errors():
    assert non_dominated_mask(np.zeros((0, 2)), ["min", "min"]).shape == (0,)
    assert non_dominated_sort(np.zeros((0, 3)), ["min"] * 3) == []
    assert select_top(np.zeros((0, 2)), ["min", "min"], 3).shape == (0,)
    with pytest.raises(ValueError, match="2 objectives but 3 modes"):
        non_dominated_mask(np.zeros((4, 2)), ["min"] * 3)
    with pytest.raises(ValueError, match="mode"):
        non_dominated_mask(np.zeros((4, 2)), ["min", "minimize"])


def brute_sort(p, modes) -> list[list[int]]:
    left = [i for i in range(len(p)) if np.isfinite(p[i]).all()]
    fronts = []
    while left:
        sub = p[left]
        mask = brute_mask(sub, modes)
        fronts.append([left[i] for i in np.flatnonzero(mask)])
        left = [left[i] for i in np.flatnonzero(~mask)]
    bad = [i for i in range(len(p)) if not np.isfinite(p[i]).all()]
    return fronts + ([bad] if bad else [])


def test_non_dominated_sort_equals_repeated_peeling():
    rng = np.random.default_rng(99)
    for _ in range(120):
        p, modes = random_case(rng)
        got = [f.tolist() for f in non_dominated_sort(p, modes)]
        assert got == brute_sort(p, modes)
        ranks = front_ranks(p, modes)
        for k, f in enumerate(got):
            assert (ranks[f] == k).all()


def test_2d_sort_fast_path_agrees_with_domination_counts():
    rng = np.random.default_rng(4)
    for _ in range(100):
        p = rng.integers(0, 6, size=(int(rng.integers(1, 60)), 2)).astype(float)
        p = np.vstack([p, p[:3]])  # duplicates
        # a constant third column leaves dominance unchanged but takes the general path
        general = non_dominated_sort(np.c_[p, np.zeros(len(p))], ["min", "max", "min"])
        fast = non_dominated_sort(p, ["min", "max"])
        assert [f.tolist() for f in fast] == [f.tolist() for f in general]


def test_crowding_distance_closed_form():
    p = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    cd = crowding_distance(p)
    assert np.isinf(cd[0]) and np.isinf(cd[3])
    assert cd[1] == pytest.approx((3 - 0) / 4 + (4 - 1) / 4)
    assert cd[2] == pytest.approx((4 - 1) / 4 + (2 - 0) / 4)
    assert np.isinf(crowding_distance(p[:2])).all()
    # zero range in an objective adds nothing
    flat = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    assert crowding_distance(flat)[1] == pytest.approx(1.0)


def test_select_top_takes_best_front_first_then_crowding():
    # front 0: 4 points on a line; front 1: two points behind it; a NaN trial last
    p = np.array(
        [[5, 2], [0, 4], [1, 2.5], [3, 1], [4, 0], [2, 3], [6, 6], [np.nan, 0]], dtype=float
    )
    modes = ["min", "min"]
    assert [f.tolist() for f in non_dominated_sort(p, modes)] == [[1, 2, 3, 4], [0, 5], [6], [7]]
    top2 = select_top(p, modes, 2)
    assert sorted(top2.tolist()) == [1, 4]  # the extremes (infinite crowding distance)
    top4 = select_top(p, modes, 4)
    assert set(top4.tolist()) == {1, 2, 3, 4}
    top5 = select_top(p, modes, 5)
    assert set(top5[:4].tolist()) == {1, 2, 3, 4} and top5[4] in (0, 5)
    assert select_top(p, modes, 100).tolist()[-1] == 7
    assert len(select_top(p, modes, 100)) == len(p)
    with pytest.raises(ValueError, match="n_keep"):
        select_top(p, modes, -1)


def test_select_top_respects_max_mode():
    p = np.array([[1.0], [3.0], [2.0]])
    assert select_top(p, ["max"], 1).tolist() == [1]
    assert select_top(p, ["min"], 1).tolist() == [0]
    assert rank_order(p, ["max"]).tolist() == [1, 2, 0]


def test_rank_order_is_a_permutation_best_front_first():
    rng = np.random.default_rng(5)
    for _ in range(50):
        p, modes = random_case(rng)
        order = rank_order(p, modes)
        assert sorted(order.tolist()) == list(range(len(p)))
        ranks = front_ranks(p, modes)
        assert (np.diff(ranks[order]) >= 0).all()


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("val/perplexity:min", [Objective("val/perplexity", "min")]),
        (
            " val/perplexity:min , val/polysemanticity/mean:max ",
            [Objective("val/perplexity", "min"), Objective("val/polysemanticity/mean", "max")],
        ),
        (["a:b:min"], [Objective("a:b", "min")]),
        ([Objective("x", "max"), "y:min"], [Objective("x", "max"), Objective("y", "min")]),
    ],
)
def test_parse_objectives(spec, expected):
    assert parse_objectives(spec) == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        ("", "no objectives"),
        ([], "no objectives"),
        ("val/perplexity", "must be 'metric:min'"),
        ("val/perplexity:minimize", "mode must be 'min' or 'max'"),
        (":min", "must be 'metric:min'"),
        ("a:min,,b:max", "empty objective"),
        ("a:min,a:max", "given twice"),
    ],
)
def test_parse_objectives_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_objectives(spec)


def test_objective_is_frozen_and_prints_as_spec():
    o = Objective("val/perplexity", "min")
    assert str(o) == "val/perplexity:min"
    with pytest.raises(AttributeError):
        o.mode = "max"  # type: ignore[misc]
    assert parse_objectives(",".join(str(x) for x in [o, Objective("s", "max")]))[1].mode == "max"


def test_every_pair_in_a_front_is_mutually_non_dominating():
    rng = np.random.default_rng(11)
    p = rng.integers(0, 4, size=(40, 3)).astype(float)
    modes = ["min", "max", "min"]
    for f in non_dominated_sort(p, modes):
        for i, j in itertools.permutations(f.tolist(), 2):
            assert not brute_dominates(p[i], p[j], modes)
