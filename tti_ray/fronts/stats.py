"""Multi-seed statistics: mean, std, Student-t confidence interval, Welch's t-test, Cohen's d.

The statistics seed 001 reports for each configuration against the baseline. Conventions:

* Non-finite values (NaN, inf: a diverged seed) are dropped first; ``n`` counts what is left.
* ``std`` is the sample standard deviation (``ddof=1``).
* The CI is ``mean +- t_{(1+c)/2, n-1} * std / sqrt(n)`` (Student t, as ``scipy.stats.t.interval``);
  ``ci_half`` is its half-width, so tables can print ``mean +- ci_half``.
* **n = 1**: ``std``, the CI and every test statistic are NaN (a variance needs two values); n = 0
  gives a NaN mean too. Nothing raises, so a partial sweep still tabulates.
* Welch's t-test (unequal variances; Welch 1947): ``t = (mean_a - mean_b) / sqrt(s_a^2/n_a +
  s_b^2/n_b)``, Welch-Satterthwaite degrees of freedom, two-sided p. Needs n >= 2 on both sides,
  else all NaN. With zero variance on both sides, ``t`` is +-inf (p = 0) if the means differ and
  NaN if they are equal, as in ``scipy.stats.ttest_ind(equal_var=False)``; the dof is then NaN.
* Cohen's d with the pooled standard deviation ``sqrt(((n_a-1)s_a^2 + (n_b-1)s_b^2) / (n_a+n_b-2))``
  (Cohen 1988); NaN when n_a + n_b < 3 or the pooled std is 0.

Only numpy at import; ``scipy.stats`` (slow to import) is loaded on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NAN = float("nan")


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


@dataclass(frozen=True)
class Aggregate:
    """Summary of one metric over the seeds of one configuration."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def ci_half(self) -> float:
        """Half-width of the CI: the ``+-`` in ``mean +- ci_half``."""
        return (self.ci_high - self.ci_low) / 2


def _t_quantile(q: float, dof: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, dof))


def aggregate(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Aggregate:
    """Mean, sample std and Student-t CI of the finite ``values`` (module docstring for n < 2)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    v = _clean(values)
    n = len(v)
    if n == 0:
        return Aggregate(0, NAN, NAN, NAN, NAN)
    mean = float(v.mean())
    if n == 1:
        return Aggregate(1, mean, NAN, NAN, NAN)
    std = float(v.std(ddof=1))
    half = _t_quantile((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return Aggregate(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class WelchResult:
    """Welch's t-test of a vs b, with the effect size. ``diff = mean_a - mean_b``."""

    statistic: float
    dof: float
    pvalue: float
    diff: float
    cohens_d: float
    n_a: int
    n_b: int


def cohens_d(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """(mean_a - mean_b) / pooled std (module docstring); NaN when undefined."""
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    if na == 0 or nb == 0 or na + nb < 3:
        return NAN
    ss = (a.var(ddof=1) * (na - 1) if na > 1 else 0.0) + (
        b.var(ddof=1) * (nb - 1) if nb > 1 else 0.0
    )
    pooled = math.sqrt(ss / (na + nb - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else NAN


def welch_t_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> WelchResult:
    """Welch's unequal-variance t-test of a vs b, two-sided (module docstring for edge cases)."""
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    diff = float(a.mean() - b.mean()) if na and nb else NAN
    d = cohens_d(a, b)
    if na < 2 or nb < 2:
        return WelchResult(NAN, NAN, NAN, diff, d, na, nb)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se2 = va + vb
    if se2 == 0:
        t = math.copysign(math.inf, diff) if diff != 0 else NAN
        return WelchResult(t, NAN, 0.0 if diff != 0 else NAN, diff, d, na, nb)
    t = diff / math.sqrt(se2)
    dof = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    from scipy import stats

    p = float(2 * stats.t.sf(abs(t), dof))
    return WelchResult(float(t), float(dof), p, diff, d, na, nb)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm 1979), NaN entries left NaN and not counted.

    Controls the family-wise error over the comparisons given (e.g. every config vs baseline
    on one metric)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, NAN)
    ok = np.flatnonzero(~np.isnan(p))
    if len(ok) == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    k = len(order)
    adj = np.maximum.accumulate((k - np.arange(k)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out
