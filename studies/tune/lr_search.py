"""The learning-rate rule of protocol v2: a log-spaced search with no best point at an edge.

Recurrent models learn recall tasks only inside a narrow learning-rate window while attention is robust
to it (Okpekpe & Orvieto 2025, arXiv 2508.19029); v1's 3-point grid left 17 of 32 winners at an edge.
So every model is searched by one rule, a pure function of the scores seen so far:

1. try every point of the shared start grid (log-spaced);
2. while the best point is the smallest or largest tried, try one grid step beyond it, unless that
   step crosses the declared bound (then the point at the bound is tried, and the report marks a best
   point left at a bound);
3. refine: while a neighbour of the best point is more than `finest` decades away, try the geometric
   midpoint between them.

It ends when none of these asks for a point. "Best" is the highest score; points within `tie` of it
are tied and the best of them is the one in the middle (the geometric median of the tied set, lower
middle for an even count), so a plateau of tied scores is bracketed on both sides before the search ends.
Learning rates are compared in decades (log10), rounded to 1e-9 decades so that a midpoint computed
twice is the same point.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

DECIMALS = 9  # decades are rounded to this many digits: the same point reached twice is one point


def _decade(lr: float) -> float:
    return round(math.log10(lr), DECIMALS)


def same_lr(a: float, b: float) -> bool:
    """Whether two learning rates are one point of the search (equal to 1e-9 decades)."""
    return _decade(a) == _decade(b)


def _lr(decade: float) -> float:
    return float(10.0 ** decade)


@dataclass(frozen=True)
class LrSearch:
    """A search's start grid (log-spaced, in decades), its bounds and its final resolution."""

    start: tuple[float, ...] = (-3.0, -2.5, -2.0)  # 1e-3, 3.16e-3, 1e-2
    low: float = -4.5  # bounds, in decades: 3.16e-5 .. 1e-1
    high: float = -1.0
    finest: float = 0.25  # neighbouring points at most this many decades apart around the best
    tie: float = 0.0  # scores within this of the best are tied

    def __post_init__(self) -> None:
        if len(self.start) < 2 or list(self.start) != sorted(set(self.start)):
            raise ValueError(f"start must be at least 2 increasing decades, got {self.start}")
        if not self.low <= self.start[0] or not self.start[-1] <= self.high:
            raise ValueError(f"start {self.start} must lie within the bounds [{self.low}, {self.high}]")
        if not 0 < self.finest <= self.step:
            raise ValueError(f"finest must be in (0, {self.step}] decades (the start grid's step), got {self.finest}")
        if self.tie < 0:
            raise ValueError(f"tie must be >= 0, got {self.tie}")

    @property
    def step(self) -> float:
        """The start grid's spacing in decades (its smallest gap): how far an edge extension goes."""
        return min(b - a for a, b in zip(self.start, self.start[1:]))

    def best(self, scores: Mapping[float, float]) -> float:
        """The best learning rate among those tried (see the module docstring for ties)."""
        by_decade = _by_decade(scores)
        top = max(by_decade.values())
        tied = sorted(d for d, s in by_decade.items() if s >= top - self.tie)
        return _lr(tied[(len(tied) - 1) // 2])

    def at_bound(self, scores: Mapping[float, float]) -> bool:
        """Whether the best point sits at a declared bound (the search could not go beyond it)."""
        d = _decade(self.best(scores))
        return d <= self.low or d >= self.high

    def max_trials(self) -> int:
        """An upper bound on the learning rates the rule tries (the dry run's cost bound).

        Every point tried is a start point, an extension past an edge (one grid step; the last one clipped
        to the bound) or the midpoint of a gap wider than `finest` beside the best point, so a gap g of the
        start grid or of the extensions is split at most 2^k − 1 times, k = ceil(log2(g / finest)): that
        bound holds for any scores, ties and order in which concurrent workers finish. It is tighter where
        ties are exact (tie = 0) and one round of midpoints refines (every gap at most 2·finest, as by
        default): then once the best point is interior no later point makes an edge best again (a new best
        is a midpoint, a tied set of three or more has an interior middle), so the extensions go one way
        only, and the refinement tries at most the two midpoints beside the best point. The default search:
        3 start points + 3 extensions + 2 midpoints = 8.
        """
        eps = 10 ** -DECIMALS
        down = math.ceil((self.start[0] - self.low) / self.step - eps)
        up = math.ceil((self.high - self.start[-1]) / self.step - eps)

        def splits(gap: float) -> int:
            return 2 ** max(0, math.ceil(math.log2(gap / self.finest) - eps)) - 1

        start_gaps = [b - a for a, b in zip(self.start, self.start[1:])]
        if self.tie == 0 and all(splits(g) <= 1 for g in start_gaps):
            return len(self.start) + max(down, up) + 2 * (max(map(splits, start_gaps)) > 0)
        edge_gaps = [self.step] * (down - 1) + [self.start[0] - self.low - (down - 1) * self.step] * (down > 0) \
            + [self.step] * (up - 1) + [self.high - self.start[-1] - (up - 1) * self.step] * (up > 0)
        return len(self.start) + down + up + sum(map(splits, start_gaps + edge_gaps))

    def next_points(self, scores: Mapping[float, float]) -> list[float]:
        """The learning rates to try next, given the mean score of every one tried; [] when done."""
        tried = _by_decade(scores) if scores else {}
        missing = [d for d in (round(d, DECIMALS) for d in self.start) if d not in tried]
        if missing:
            return [_lr(d) for d in missing]
        grid = sorted(tried)
        best = _decade(self.best(scores))
        if best == grid[0] and best > self.low:
            return [_lr(round(max(self.low, best - self.step), DECIMALS))]
        if best == grid[-1] and best < self.high:
            return [_lr(round(min(self.high, best + self.step), DECIMALS))]
        i = grid.index(best)
        wanted = [round((best + n) / 2, DECIMALS) for n in (grid[i - 1] if i else None, grid[i + 1] if i + 1 < len(grid) else None)
                  if n is not None and abs(best - n) > self.finest + 10 ** -DECIMALS]
        return [_lr(d) for d in wanted]


def _by_decade(scores: Mapping[float, float]) -> dict[float, float]:
    if not scores:
        raise ValueError("no learning rate has been tried")
    out: dict[float, float] = {}
    for lr, score in scores.items():
        if not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"a learning rate must be positive and finite, got {lr}")
        out[_decade(lr)] = score
    return out
