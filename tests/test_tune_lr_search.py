"""The learning-rate rule of protocol v2 (studies/tune/lr_search.py), run against known score curves."""
from __future__ import annotations

import math

import numpy as np
import pytest

from studies.tune.lr_search import LrSearch


def run(search: LrSearch, score) -> dict[float, float]:
    """Drive the rule to its end, as the tuner does: try what it asks, report the score, repeat."""
    scores: dict[float, float] = {}
    for _ in range(100):
        wanted = search.next_points(scores)
        if not wanted:
            return scores
        for lr in wanted:
            assert lr not in scores, f"{lr} asked for twice"
            scores[lr] = score(lr)
    raise AssertionError("the search did not end")


def peaked(at: float, width: float = 0.6):
    """A unimodal score in log10(lr), 1.0 at `at`."""
    return lambda lr: math.exp(-((math.log10(lr) - math.log10(at)) / width) ** 2)


def decades(scores: dict[float, float]) -> list[float]:
    return sorted(round(math.log10(lr), 6) for lr in scores)


def test_first_asks_for_the_start_grid():
    assert LrSearch().next_points({}) == pytest.approx([1e-3, 10 ** -2.5, 1e-2])


def test_interior_peak_is_refined_to_a_quarter_decade():
    # Peak at 10^-2.4: the grid's best is 10^-2.5; refinement adds -2.75 and -2.25, then the best is -2.5
    # or -2.25 with neighbours 0.25 away.
    search = LrSearch()
    scores = run(search, peaked(10 ** -2.4))
    assert decades(scores) == [-3.0, -2.75, -2.5, -2.25, -2.0]
    assert math.log10(search.best(scores)) == pytest.approx(-2.5)
    assert not search.at_bound(scores)


def test_edge_winner_extends_the_grid_until_it_is_interior():
    # v1's failure: the peak at 3e-4 lies below the grid, so 1e-3 wins at the edge. The rule steps down by
    # half a decade until the best is interior, then refines.
    search = LrSearch()
    scores = run(search, peaked(3e-4))
    d = decades(scores)
    best = math.log10(search.best(scores))
    assert best == pytest.approx(-3.5)
    assert d[0] < best < d[-1], "the best point is not at an edge"
    assert d == [-4.0, -3.75, -3.5, -3.25, -3.0, -2.5, -2.0]


def test_a_peak_beyond_the_bound_stops_there_and_is_marked():
    search = LrSearch(high=-1.5)
    scores = run(search, peaked(1.0))  # still rising at every allowed lr
    assert math.log10(search.best(scores)) == pytest.approx(-1.5)
    assert search.at_bound(scores)


def test_ties_are_bracketed_and_the_middle_one_wins():
    # Solved (1.0) at every lr from 1e-3 up: the tied plateau has an edge at the top, but its middle is
    # interior; refinement around the middle, never an extension beyond a tied edge.
    search = LrSearch()
    scores = run(search, lambda lr: 1.0 if lr >= 1e-3 - 1e-12 else 0.5)
    assert decades(scores) == [-3.0, -2.75, -2.5, -2.25, -2.0]
    assert math.log10(search.best(scores)) == pytest.approx(-2.5)


def test_tolerance_ties_near_equal_scores():
    scores = {1e-3: 0.998, 10 ** -2.5: 1.0, 1e-2: 0.999}
    assert LrSearch(tie=0.0).best(scores) == pytest.approx(10 ** -2.5)
    assert LrSearch(tie=0.005).best(scores) == pytest.approx(10 ** -2.5)  # middle of the three
    split = {1e-3: 0.998, 10 ** -2.5: 0.2, 1e-2: 1.0}
    assert LrSearch(tie=0.0).best(split) == pytest.approx(1e-2)
    assert LrSearch(tie=0.005).best(split) == pytest.approx(1e-3)  # two tied: the lower middle, as documented


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(start=(-2.0,)), "at least 2"),
    (dict(start=(-2.0, -3.0)), "increasing"),
    (dict(low=-2.5), "within the bounds"),
    (dict(finest=0.0), "finest"),
    (dict(finest=0.75), "finest"),
    (dict(tie=-0.1), "tie"),
])
def test_bad_settings_are_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        LrSearch(**kwargs)


def test_bad_learning_rates_are_refused():
    with pytest.raises(ValueError, match="positive and finite"):
        LrSearch().next_points({0.0: 0.5})


def run_rule(search: LrSearch, score) -> list[float]:
    """The learning rates the rule tries, one trial at a time, when lr scores `score(lr)`."""
    scores: dict[float, float] = {}
    while points := search.next_points(scores):
        for lr in points:
            scores[lr] = score(lr)
    return list(scores)


def test_max_trials_bounds_every_run_of_the_rule_and_is_reached():
    search = LrSearch()
    assert search.max_trials() == 8  # 3 start points + 3 extensions down to 10^-4.5 + 2 midpoints
    # a peak at 10^-4: two extensions below the grid leave it interior, then both neighbours are refined
    tried = run_rule(search, lambda lr: -abs(math.log10(lr) + 4.0))
    assert len(tried) == 8
    # where ties need not be exact or midpoints refine in several rounds, the bound counts every midpoint
    # the gaps allow: 3 start points, 3 + 2 extensions, one midpoint in each of 7 half-decade gaps
    assert LrSearch(tie=0.05).max_trials() == 15
    rng = np.random.default_rng(0)
    for search in (LrSearch(), LrSearch(start=(-3.0, -2.0), finest=0.25), LrSearch(start=(-4.0, -3.5, -2.0), tie=0.05)):
        for _ in range(300):  # random scores, with ties (rounded to one decimal), one trial at a time or 3 at once
            table: dict[float, float] = {}

            def score(lr: float, table=table) -> float:
                return table.setdefault(round(math.log10(lr), 6), round(float(rng.random()), 1))

            assert len(run_rule(search, score)) <= search.max_trials(), (search, table)
            assert len(run_concurrently(search, score, 3, rng)) <= search.max_trials(), (search, table)


def run_concurrently(search: LrSearch, score, workers: int, rng) -> list[float]:
    """The rule as several workers run it: a free worker takes the first point asked for that no running
    trial holds (as LrRuleSampler does), and running trials finish in a random order."""
    scores: dict[float, float] = {}
    running: list[float] = []
    while True:
        open_ = [lr for lr in search.next_points(scores) if lr not in running]
        if open_ and len(running) < workers:
            running.append(open_[0])
        elif running:
            lr = running.pop(int(rng.integers(len(running))))
            scores[lr] = score(lr)
        else:
            return list(scores)
