"""Statistics of per-seed scores: intervals, two-sample tests, multiple-comparison correction.

scipy.stats is imported inside the functions that need it, not at the top: it costs about a second to
import, and every worker process of a suite imports this module (through `studies.tables`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (0 for a single value)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return float(x.mean()) if x.size else math.nan, 0.0
    from scipy import stats  # lazily: see the module docstring

    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval (low, high) of the mean; seeded, so reports are reproducible."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        m = float(x.mean()) if x.size else math.nan
        return m, m, m
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone); NaNs stay NaN and are not counted."""
    finite = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(finite, key=lambda i: pvalues[i])
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def compare(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided p-values (Welch t, Mann–Whitney U) of samples a vs b; NaN where undefined.

    Two constant samples with equal values give p = 1 (no evidence of a difference); two constant
    samples with different values leave Welch's t undefined (zero variance), reported as NaN.
    """
    from scipy import stats  # lazily: see the module docstring

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return math.nan, math.nan
    if x.std() == 0 and y.std() == 0:
        welch = 1.0 if x[0] == y[0] else math.nan
    else:  # one constant sample is fine for Welch (its variance term is 0); scipy warns about it regardless
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Precision loss occurred in moment calculation")
            welch = float(stats.ttest_ind(x, y, equal_var=False).pvalue)
    mwu = float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    return welch, mwu


def expected_max(values: Sequence[float], n: int) -> float:
    """Expected best of n trials drawn with replacement from `values` (Dodge et al., 2019)."""
    v = np.sort(np.asarray(values, dtype=float))
    cdf = np.arange(1, v.size + 1) / v.size
    return float(np.sum(v * (cdf ** n - (cdf - 1 / v.size) ** n)))


# ------------------------------------------------------------------------------ protocol v2 (issue 24)
# Scores of a task's metric are bounded in [0, 1] and, where seeds split into "learned" and "not", bimodal;
# every model's seed s is scored on the same test rows, so comparisons by seed are paired. Hence: intervals
# that stay inside the data's range (bootstrap of the mean, exact binomial for solve rates), exact tests
# whose smallest p-value is what the sample can support, and survival curves for plateau-escape times.


@dataclass(frozen=True)
class SolveRate:
    """k of n seeds reached the target; [low, high] is the exact (Clopper–Pearson) 95 % interval."""

    k: int
    n: int
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.k}/{self.n} [{self.low:.2f}, {self.high:.2f}]"


def solve_rate(scores: Sequence[float], target: float, confidence: float = 0.95) -> SolveRate:
    """How many seeds reached `target`, with the exact binomial interval of the rate."""
    from scipy import stats  # lazily: see the module docstring

    k, n = sum(s >= target for s in scores), len(scores)
    if n == 0:
        return SolveRate(0, 0, math.nan, math.nan)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return SolveRate(k, n, float(ci.low), float(ci.high))


def splits(scores: Sequence[float], target: float) -> bool:
    """Whether the seeds split into learned (≥ target) and not: then the solve rate, not the mean, is the
    primary statistic (a mean of 0.2 and 1.0 describes no seed)."""
    return any(s >= target for s in scores) and any(s < target for s in scores)


def solve_rate_test(a: SolveRate, b: SolveRate, alternative: str = "two-sided") -> float:
    """p-value of equal solve rates: Boschloo's exact test (uniformly more powerful than Fisher's, whose
    p-value it uses as its statistic); 1.0 when both rates are 0/n or n/n alike. `alternative` "greater"
    (a's rate above b's) or "less" for a one-sided test of a direction stated beforehand."""
    from scipy import stats  # lazily: see the module docstring

    if a.n == 0 or b.n == 0:
        return math.nan
    table = [[a.k, a.n - a.k], [b.k, b.n - b.k]]
    if (a.k == 0 and b.k == 0) or (a.k == a.n and b.k == b.n):
        return 1.0
    return float(stats.boschloo_exact(table, alternative=alternative).pvalue)


def paired_permutation(a: Sequence[float], b: Sequence[float], resamples: int = 100_000, seed: int = 0,
                       alternative: str = "two-sided") -> float:
    """Two-sided p-value that paired scores a_i, b_i (seed i of two models, scored on the same test rows)
    have mean difference 0: the sign-flip permutation test, exact (all 2^n sign patterns) up to n = 16,
    seeded Monte Carlo beyond. Its smallest value is 2 / 2^n (`smallest_paired_p`): with 5 seeds no
    difference, however large, gives p < 0.0625. `alternative` "greater" (a above b) or "less": the
    one-sided test of a direction stated beforehand, whose smallest value is 1 / 2^n."""
    from scipy import stats  # lazily: see the module docstring

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size < 1:
        return math.nan
    if not d.any():
        return 1.0
    if d.size == 1:  # two sign patterns, +d and -d (scipy asks for two observations): |±d| are equally extreme
        return 1.0 if alternative == "two-sided" else 0.5 if (d[0] > 0) == (alternative == "greater") else 1.0
    exact = d.size <= 16
    result = stats.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                    n_resamples=np.inf if exact else resamples, alternative=alternative,
                                    rng=None if exact else np.random.default_rng(seed))
    return float(min(1.0, result.pvalue))


def smallest_paired_p(n: int) -> float:
    """The smallest two-sided p-value the exact sign-flip test can give with n pairs."""
    return min(1.0, 2.0 / 2 ** n)


def kaplan_meier(times: Sequence[float], escaped: Sequence[bool]) -> list[tuple[float, float]]:
    """The Kaplan–Meier estimate of P(still on the plateau after t): [(t, S(t))] at each escape time.
    `escaped[i]` False means run i was censored at times[i] (it never escaped within its budget)."""
    from scipy import stats  # lazily: see the module docstring

    t, e = np.asarray(times, dtype=float), np.asarray(escaped, dtype=bool)
    if not e.any():
        return [(0.0, 1.0)]
    sf = stats.ecdf(stats.CensoredData(uncensored=t[e], right=t[~e])).sf
    return [(0.0, 1.0)] + [(float(q), float(p)) for q, p in zip(sf.quantiles, sf.probabilities) if q in set(t[e])]


def logrank(times_a: Sequence[float], escaped_a: Sequence[bool], times_b: Sequence[float],
            escaped_b: Sequence[bool]) -> float:
    """Two-sided log-rank p-value that two groups of runs leave the plateau at the same rate (censored at
    their budgets); NaN when no run of either group escaped (nothing to compare)."""
    from scipy import stats  # lazily: see the module docstring

    ta, ea = np.asarray(times_a, dtype=float), np.asarray(escaped_a, dtype=bool)
    tb, eb = np.asarray(times_b, dtype=float), np.asarray(escaped_b, dtype=bool)
    if not (ea.any() or eb.any()):
        return math.nan
    x = stats.CensoredData(uncensored=ta[ea], right=ta[~ea])
    y = stats.CensoredData(uncensored=tb[eb], right=tb[~eb])
    with np.errstate(invalid="ignore", divide="ignore"):
        p = float(stats.logrank(x, y).pvalue)
    # No variance at any event time (e.g. every run of both escaped at the same step): no evidence of a
    # difference, p = 1 (scipy's statistic is 0/0 there).
    return 1.0 if math.isnan(p) else p
