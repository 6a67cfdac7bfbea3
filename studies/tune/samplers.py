"""The samplers a tuning study can run: seeded TPE (the default) and a grid that retries failed points.

`TrialSeededTPE` is what `testbed tune` runs for every model; `RetryingGridSampler` (`sampler="grid"`,
optuna's GridSampler over given values of some knobs, one trial per point) is what the capability
study runs. The exact settings a study ran are stored in it (`studies.tune.study.describe_tuner`).
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
from studies.tune.optuna_private import HookedGridSampler

SAMPLERS = ("tpe", "grid")


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
