"""Worker processes: every job's result comes back once, and a failing job is reported, not lost."""
from __future__ import annotations

import operator

import pytest

from studies.pool import run_parallel


def test_every_job_is_reported_once_with_its_result():
    seen: dict[int, int] = {}
    run_parallel(operator.mul, [(i, 3) for i in range(7)], 2, lambda position, result: seen.setdefault(position, result))
    assert seen == {i: 3 * i for i in range(7)}


def test_a_failing_job_raises_with_its_traceback():
    with pytest.raises(RuntimeError, match="(?s)job 1 failed in a worker:.*ZeroDivisionError"):
        run_parallel(operator.truediv, [(1, 1), (1, 0), (2, 1)], 2, lambda position, result: None)
