"""studies.stats against values computed by hand or from scipy's own formulas."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from studies.stats import compare, expected_max, holm


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
