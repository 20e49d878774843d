"""Multi-seed statistics against scipy and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tti_ray.fronts.stats import aggregate, cohens_d, holm, welch_t_test


def test_aggregate_matches_scipy_t_interval():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10, 40):
        x = rng.normal(3.0, 2.0, size=n)
        a = aggregate(x)
        lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert a.n == n
        assert a.mean == pytest.approx(x.mean())
        assert a.std == pytest.approx(x.std(ddof=1))
        assert (a.ci_low, a.ci_high) == pytest.approx((lo, hi))
        assert a.ci_half == pytest.approx((hi - lo) / 2)
    lo, hi = stats.t.interval(
        0.9, 4, loc=np.mean([1, 2, 3, 4, 6]), scale=stats.sem([1, 2, 3, 4, 6])
    )
    assert (
        aggregate([1, 2, 3, 4, 6], 0.9).ci_low,
        aggregate([1, 2, 3, 4, 6], 0.9).ci_high,
    ) == pytest.approx((lo, hi))


def test_aggregate_small_and_nonfinite():
    one = aggregate([2.5])
    assert one.n == 1 and one.mean == 2.5
    assert math.isnan(one.std) and math.isnan(one.ci_low) and math.isnan(one.ci_half)
    none = aggregate([])
    assert none.n == 0 and math.isnan(none.mean)
    # NaN / inf (diverged seeds) are dropped
    assert aggregate([1.0, np.nan, 3.0, np.inf]) == aggregate([1.0, 3.0])
    const = aggregate([2.0, 2.0, 2.0])
    assert const.std == 0 and const.ci_half == 0
    with pytest.raises(ValueError, match="confidence"):
        aggregate([1, 2], confidence=95)


def test_welch_matches_scipy():
    rng = np.random.default_rng(1)
    for na, nb in [(2, 2), (3, 5), (5, 3), (10, 4), (30, 30)]:
        a = rng.normal(0.0, 1.0, size=na)
        b = rng.normal(0.7, 2.5, size=nb)
        w = welch_t_test(a, b)
        ref = stats.ttest_ind(a, b, equal_var=False)
        assert w.statistic == pytest.approx(ref.statistic)
        assert w.pvalue == pytest.approx(ref.pvalue)
        assert w.dof == pytest.approx(ref.df)
        assert w.diff == pytest.approx(a.mean() - b.mean())
        assert (w.n_a, w.n_b) == (na, nb)


def test_welch_edge_cases():
    w = welch_t_test([1.0], [1.0, 2.0, 3.0])  # n = 1: no test
    assert math.isnan(w.statistic) and math.isnan(w.pvalue) and math.isnan(w.dof)
    assert w.diff == pytest.approx(-1.0)
    z = welch_t_test([1.0, 1.0], [2.0, 2.0])  # zero variance, different means: like scipy
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = stats.ttest_ind([1.0, 1.0], [2.0, 2.0], equal_var=False)
    assert z.statistic == ref.statistic == -math.inf and z.pvalue == ref.pvalue == 0.0
    assert math.isnan(z.dof)
    same = welch_t_test([1.0, 1.0], [1.0, 1.0])
    assert math.isnan(same.statistic) and math.isnan(same.pvalue)
    # non-finite values dropped before testing
    a, b = [1.0, 2.0, 4.0, np.nan], [3.0, 5.0, 6.0, np.inf]
    ref = stats.ttest_ind([1.0, 2.0, 4.0], [3.0, 5.0, 6.0], equal_var=False)
    assert welch_t_test(a, b).pvalue == pytest.approx(ref.pvalue)


def test_cohens_d_pooled():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.0, 5.0, 7.0])
    pooled = math.sqrt((3 * a.var(ddof=1) + 2 * b.var(ddof=1)) / 5)
    assert cohens_d(a, b) == pytest.approx((a.mean() - b.mean()) / pooled)
    assert welch_t_test(a, b).cohens_d == pytest.approx(cohens_d(a, b))
    assert cohens_d(b, a) == pytest.approx(-cohens_d(a, b))
    assert math.isnan(cohens_d([1.0], [2.0]))
    assert math.isnan(cohens_d([1.0, 1.0], [1.0, 1.0]))
    assert cohens_d([1.0], [2.0, 4.0]) == pytest.approx((1 - 3) / math.sqrt(2.0))


def test_holm_adjustment():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = holm([0.5, np.nan, 0.4])
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.8, 0.8])
    np.testing.assert_allclose(holm([0.9, 0.8]), [1.0, 1.0])
    assert holm([]).shape == (0,)
