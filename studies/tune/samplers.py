"""The samplers a tuning study can run: protocol v2's learning-rate rule, seeded TPE, and a grid that
retries failed points.

`LrRuleSampler` (`sampler="lr_rule"`, protocol v2, what `testbed tune` runs by default) asks
`studies.tune.lr_search.LrSearch` for the next learning rate given every finished trial: the study ends
when the rule asks for none, not after a fixed number of trials. `TrialSeededTPE` (`sampler="tpe"`)
searches a model's whole space under a budget of finished trials (protocol v1's default);
`RetryingGridSampler` (`sampler="grid"`, optuna's GridSampler over given values of some knobs, one
trial per point) is what the v1 capability study ran. The exact settings a study ran are stored in it
(`studies.tune.study.describe_tuner`).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from studies.tune.budget import COUNTED, LIVE
from studies.tune.lr_search import LrSearch, same_lr
from studies.tune.optuna_private import HookedGridSampler

SAMPLERS = ("lr_rule", "tpe", "grid")


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random stream is seeded by (seed, trial number).

    One seeded TPE per worker would make concurrent workers propose the very same start-up
    configurations; seeding each trial by its (unique) number keeps one worker exactly reproducible
    and gives concurrent trials different streams. `constant_liar` keeps TPE from re-proposing the
    neighbourhood of trials still running on other workers.
    """

    def __init__(self, seed: int, n_startup_trials: int) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._tpe = self._for_trial(0)

    def _for_trial(self, number: int) -> optuna.samplers.TPESampler:
        seed = int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                              multivariate=True, constant_liar=True)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._for_trial(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)


def make_sampler(seed: int, budget: int) -> TrialSeededTPE:
    # Optuna's default of 10 random start-up trials would make a budget of 8 pure random search;
    # a quarter of the budget (at least 3) leaves most trials to TPE at every budget.
    return TrialSeededTPE(seed, n_startup_trials=max(3, budget // 4))


class RetryingGridSampler(HookedGridSampler):
    """optuna's GridSampler, except that a grid point whose trial FAILED is still unvisited.

    Optuna gives trial n < grid size the n-th point of the seeded, shuffled grid, and later trials a
    point no finished or running trial holds. It counts a FAILED trial as finished, so the point of a
    trial stopped by Ctrl-C (which Optuna fails on the spot, with no re-queue) was never tried again:
    the next trial, finding the grid "exhausted", re-ran a random point and the budget filled with a
    duplicate. Here only COMPLETE and PRUNED trials visit a point; a RUNNING or WAITING one holds it
    (a killed worker's trial is re-queued by Optuna's retry callback with its system attrs, its
    grid id among them), and so does a trial n < grid size whose point is not stored yet (it gets
    point n). Two workers may still pick one point in the instant between a trial's creation and
    the storing of its point: the tuning objective then refuses the later trial as surplus
    (`grid_point_taken_before`).
    """

    def unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        visited, held = set(), set()
        for trial in study.get_trials(deepcopy=False):
            if "grid_id" in trial.system_attrs:
                if not self.same_search_space(trial.system_attrs["search_space"]):
                    continue
                grid_id = trial.system_attrs["grid_id"]
            elif 0 <= trial.number < self.grid_size and trial.state in (TrialState.RUNNING, TrialState.WAITING):
                grid_id = trial.number  # what before_trial is giving it
            else:
                continue
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                visited.add(grid_id)
            elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
                held.add(grid_id)
        unvisited = set(range(self.grid_size)) - visited - held
        return sorted(unvisited or set(range(self.grid_size)) - visited)


def grid_point_taken_before(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether an earlier finished or live trial holds this trial's grid point (two workers picked it at
    once); False outside a grid study."""
    trials = study.get_trials(deepcopy=False)
    grid_id = next(t.system_attrs.get("grid_id") for t in trials if t.number == trial.number)
    if grid_id is None:
        return False
    return any(t.number < trial.number and t.state in COUNTED + LIVE and t.system_attrs.get("grid_id") == grid_id
               for t in trials)


def make_grid_sampler(grid: dict[str, Sequence[float]], seed: int) -> RetryingGridSampler:
    return RetryingGridSampler({k: list(v) for k, v in grid.items()}, seed=seed)


# ----------------------------------------------------------------------------------- the lr rule (v2)


def _lr_of(trial: FrozenTrial) -> float | None:
    """The learning rate a trial runs or ran: its sampled param, or the fixed param of a re-queued trial."""
    return trial.params.get("lr", trial.system_attrs.get("fixed_params", {}).get("lr"))


def _score(trial: FrozenTrial) -> float:
    """A finished trial's score: its value, or for a pruned trial the last value the pruner saw."""
    if trial.state == TrialState.COMPLETE:
        return float(trial.value)
    steps = trial.intermediate_values
    return float(steps[max(steps)]) if steps else 0.0


def rule_scores(trials: Sequence[FrozenTrial]) -> dict[float, float]:
    """lr -> score of each learning rate finished (COMPLETE or PRUNED), the earliest trial of each."""
    scores: dict[float, float] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        lr = _lr_of(trial)
        if trial.state in COUNTED and lr is not None and not any(same_lr(lr, seen) for seen in scores):
            scores[lr] = _score(trial)
    return scores


def open_points(search: LrSearch, trials: Sequence[FrozenTrial], exclude: int | None = None) -> list[float]:
    """The learning rates the rule asks for that no live trial (other than `exclude`) holds."""
    held = [lr for t in trials if t.state in LIVE and t.number != exclude and (lr := _lr_of(t)) is not None]
    return [lr for lr in search.next_points(rule_scores(trials)) if not any(same_lr(lr, h) for h in held)]


def rule_state(search: LrSearch):
    """A rule study's state for the worker loop: "done" once the rule asks for nothing and no trial is
    live (a live trial's score may yet make it ask), "free" while it asks for a point no live trial
    holds (or a re-queued trial waits), "busy" while every point asked for is running elsewhere."""
    def state(trials: list[FrozenTrial]) -> str:
        live = [t for t in trials if t.state in LIVE]
        if any(t.state == TrialState.WAITING for t in live):
            return "free"
        if open_points(search, trials):
            return "free"
        return "busy" if live else "done"
    return state


class LrRuleSampler(optuna.samplers.BaseSampler):
    """Samples only `lr`: the first learning rate the rule asks for that no other live trial holds.

    Deterministic given the finished trials, so it needs no seed. Two workers may ask in the same
    instant and get the same point: the tuning objective then refuses the later trial as surplus
    (`lr_point_taken_before`), as the grid sampler's duplicates are.
    """

    def __init__(self, search: LrSearch) -> None:
        self.search = search

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if param_name != "lr":
            raise ValueError(f"the learning-rate rule samples only 'lr', not {param_name!r}")
        trials = study.get_trials(deepcopy=False)
        wanted = open_points(self.search, trials, exclude=trial.number)
        # Nothing open: another worker took the last point since this trial was created; any point
        # will do, the objective refuses the trial as surplus.
        return wanted[0] if wanted else self.search.best(rule_scores(trials)) if rule_scores(trials) else \
            10.0 ** self.search.start[0]


def lr_point_taken_before(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether an earlier finished or live trial holds this trial's learning rate (two workers picked it
    at once); False for a trial without an `lr`."""
    trials = study.get_trials(deepcopy=False)
    mine = next(_lr_of(t) for t in trials if t.number == trial.number)
    if mine is None:
        return False
    return any(t.number < trial.number and t.state in COUNTED + LIVE and (lr := _lr_of(t)) is not None
               and same_lr(lr, mine) for t in trials)
