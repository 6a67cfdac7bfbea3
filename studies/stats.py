"""Statistics of per-seed scores: intervals, two-sample tests, multiple-comparison correction.

scipy.stats is imported inside the functions that need it, not at the top: it costs about a second to
import, and every worker process of a suite imports this module (through `studies.tables`).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

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
