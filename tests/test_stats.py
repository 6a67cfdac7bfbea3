"""studies.stats against values computed by hand or from scipy's own formulas."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from studies.stats import (SolveRate, compare, expected_max, holm, kaplan_meier, logrank, paired_permutation,
                           smallest_paired_p, solve_rate, solve_rate_test, splits)


def test_statistics_helpers():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.2, math.nan, 0.01])
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert compare([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]) == (1.0, 1.0)
    welch, mwu = compare([0.9, 0.91, 0.92, 0.93, 0.94], [0.5, 0.52, 0.51, 0.53, 0.54])
    assert welch < 1e-5 and mwu == pytest.approx(2 / 252)  # exact MWU: 2 of C(10,5) orderings as extreme
    # one constant sample (a model at 1.000 in every seed): Welch's t with only the other's variance, df n − 1,
    # computed without scipy's spurious precision warning
    y = np.array([0.9, 0.95, 1.0, 0.97, 0.99])
    t = (1.0 - y.mean()) / math.sqrt(y.var(ddof=1) / y.size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        welch, _ = compare([1.0] * 5, y)
    assert welch == pytest.approx(2 * scipy.stats.t.sf(abs(t), y.size - 1))
    values = [0.1, 0.5, 0.9, 0.3]
    assert expected_max(values, 1) == pytest.approx(sum(values) / 4)
    assert expected_max(values, 200) == pytest.approx(0.9, abs=1e-6)
    assert expected_max(values, 2) == pytest.approx(sum(max(a, b) for a in values for b in values) / 16)


# ------------------------------------------------------------------------------ protocol v2 statistics


def test_solve_rate_is_the_clopper_pearson_interval():
    # Textbook Clopper–Pearson values: 3/10 -> [0.0667, 0.6525]; 0/5 -> [0, 1 - 0.025^(1/5)]; 5/5 mirrored.
    r = solve_rate([0.995, 0.2, 1.0, 0.1, 0.99, 0.25, 0.4, 0.5, 0.2, 0.3], target=0.99)
    assert (r.k, r.n) == (3, 10)
    assert (r.low, r.high) == pytest.approx((0.0667, 0.6525), abs=1e-4)
    none = solve_rate([0.5] * 5, target=0.99)
    assert (none.k, none.low, none.high) == (0, 0.0, pytest.approx(1 - 0.025 ** (1 / 5)))
    every = solve_rate([1.0] * 5, target=0.99)
    assert (every.k, every.low, every.high) == (5, pytest.approx(0.025 ** (1 / 5)), 1.0)
    assert str(r) == "3/10 [0.07, 0.65]"


def test_splits_only_when_seeds_fall_on_both_sides_of_the_target():
    assert splits([1.0, 0.3], 0.99) and not splits([1.0, 0.995], 0.99) and not splits([0.3, 0.5], 0.99)


def test_solve_rate_test_is_exact_and_bounded_by_the_sample():
    # 5/5 against 0/5: Boschloo's p is 2 * 0.5^10 (the tables as extreme maximise at p = 0.5 under H0),
    # below Fisher's 2/252 and far above anything Welch's t would claim.
    five, zero = SolveRate(5, 5, 0, 1), SolveRate(0, 5, 0, 1)
    assert solve_rate_test(five, zero) == pytest.approx(2 * 0.5 ** 10)
    assert solve_rate_test(five, zero) < scipy.stats.fisher_exact([[5, 0], [0, 5]]).pvalue
    assert solve_rate_test(zero, SolveRate(0, 5, 0, 1)) == 1.0


def test_paired_permutation_is_the_exact_sign_flip_test():
    # Five positive differences: only the all-plus and all-minus sign patterns are as extreme, 2 of 32.
    assert paired_permutation([0.1, 0.2, 0.3, 0.4, 0.5], [0.0] * 5) == pytest.approx(2 / 32)
    assert smallest_paired_p(5) == pytest.approx(0.0625) and smallest_paired_p(8) == pytest.approx(2 / 256)
    # Differences (+1, +1, -1): |mean| >= 1/3 for all 8 sign patterns -> p = 1.
    assert paired_permutation([1, 1, 0], [0, 0, 1]) == pytest.approx(1.0)
    # Pairing matters: a constant shift shared by every seed is detected paired, lost unpaired.
    a = np.array([0.2, 0.5, 0.9, 0.3, 0.7, 0.4, 0.8, 0.6])
    assert paired_permutation(a + 0.01, a) == pytest.approx(2 / 256)
    assert paired_permutation(a, a) == 1.0
    # One pair (a study's first confirm seed): two sign patterns, +d and -d.
    assert paired_permutation([0.9], [0.5]) == 1.0
    assert paired_permutation([0.9], [0.5], alternative="greater") == 0.5
    assert paired_permutation([0.9], [0.5], alternative="less") == 1.0
    assert paired_permutation([0.5], [0.9], alternative="less") == 0.5


def test_one_sided_tests_for_a_direction_stated_beforehand():
    # Five positive differences: only the all-plus pattern is as extreme upwards, 1 of 32; downwards all are.
    assert paired_permutation([0.1, 0.2, 0.3, 0.4, 0.5], [0.0] * 5, alternative="greater") == pytest.approx(1 / 32)
    assert paired_permutation([0.1, 0.2, 0.3, 0.4, 0.5], [0.0] * 5, alternative="less") == pytest.approx(1.0)
    five, zero = SolveRate(5, 5, 0.478, 1.0), SolveRate(0, 5, 0.0, 0.522)
    one_sided = solve_rate_test(five, zero, "greater")
    assert one_sided == pytest.approx(scipy.stats.boschloo_exact([[5, 0], [0, 5]], alternative="greater").pvalue)
    assert one_sided < solve_rate_test(five, zero) and solve_rate_test(zero, five, "greater") == pytest.approx(1.0)


def test_kaplan_meier_by_hand():
    # Escapes at 1, 2, 4; one run censored at 3: S = 3/4, 2/4, then 2/4 * (1 - 1/1) = 0 at 4.
    assert kaplan_meier([1, 2, 3, 4], [True, True, False, True]) == [(0.0, 1.0), (1.0, 0.75), (2.0, 0.5), (4.0, 0.0)]
    assert kaplan_meier([5, 5], [False, False]) == [(0.0, 1.0)]


def test_logrank_by_hand():
    # A escapes at 1, 2, 3; B at 5, 6 and is censored at 7. Observed minus expected escapes of A over the
    # event times (n, n_A): (6, 3), (5, 2), (4, 1): E_A = 1/2 + 2/5 + 1/4 = 1.15, variance 0.25 + 0.24 +
    # 0.1875 (hypergeometric), later events have n_A = 0. chi2 = (3 - 1.15)^2 / 0.6775 on 1 df.
    p = logrank([1, 2, 3], [True] * 3, [5, 6, 7], [True, True, False])
    assert p == pytest.approx(scipy.stats.chi2.sf((3 - 1.15) ** 2 / 0.6775, 1))
    assert math.isnan(logrank([9], [False], [9], [False]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert logrank([4, 4], [True, True], [4, 4], [True, True]) == 1.0  # identical curves: no difference
