"""The pruners a tuning study can run: protocol v2's plateau-safe halving, tolerant successive halving,
and the median rule.

Under protocol v2 every model gets `PlateauSafeHalvingPruner` (`pruner="safe_sha"`): no rung before the
variant's plateau-escape window, and no pruning while any seed of the trial is at or above the rung's
bar. The v1 capability study ran `TolerantHalvingPruner` (`pruner="sha"`), v1's `testbed tune` the
median rule (`pruner="median"`). The exact settings a study ran are stored in it
(`studies.tune.study.describe_tuner`).
"""
from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.tune.optuna_private import set_trial_system_attr

PRUNERS = ("safe_sha", "sha", "median")
SEED_VALUES = "seed_values"  # trial user attr: each seed's value at the step last reported (see objectives)


def make_pruner(steps: int) -> optuna.pruners.BasePruner:
    """The one pruner every model gets: median rule on held-out accuracy, none in the first quarter."""
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=steps // 4)


class TolerantHalvingPruner(optuna.pruners.BasePruner):
    """Asynchronous successive halving (ASHA, Li et al. 2020: the rule of optuna's SuccessiveHalvingPruner)
    with a tolerance. Rung r sits at step min_resource · η^r (below `max_resource`: a run at its last
    step has nothing left to save). A trial at a rung continues if its value is within `margin` of the
    top-1/η value among the trials that reached the rung (itself included), and is pruned otherwise.

    With a `floor` (the task's best no-solve baseline on the trials' held-out sets), a rung prunes
    nothing while its best value is within `plateau_margin` of the floor: no trial has learned
    anything yet, and who is ahead is noise.

    Why the margin (0.05 in the capability study): a seed-mean accuracy over 2 seeds × 256 held-out
    rows has a sampling SD of about 0.02, a difference of two of them about 0.03; plain halving ranks
    that noise and may stop the learning rate that would have solved the task next. Why the floor
    (plateau margin 0.1): some plateaus are noisier still — parity scored at one position alternates
    between the two majority levels (0.465 and 0.535). Without it, lrs that went on to learn parity
    were pruned at the first rung: real-gated GateLoop's 3.16e-3 (0.957 in the pilot), 0.055 behind a
    rung whose best was itself on the plateau (margin 0.02), and Mamba's 3.16e-3 (0.977 in the pilot),
    0.043 behind a rung best only 0.06 above the floor (plateau margin 0.05). The study must maximise.
    """

    def __init__(self, min_resource: int, max_resource: int, reduction_factor: int = 2, margin: float = 0.05,
                 floor: float | None = None, plateau_margin: float = 0.1) -> None:
        if min_resource < 1 or reduction_factor < 2 or not margin >= 0 or not plateau_margin >= 0:
            raise ValueError(f"min_resource={min_resource} must be >= 1, reduction_factor={reduction_factor} >= 2, "
                             f"margin={margin} >= 0, plateau_margin={plateau_margin} >= 0")
        self.min_resource, self.max_resource = min_resource, max_resource
        self.reduction_factor, self.margin = reduction_factor, margin
        self.floor, self.plateau_margin = floor, plateau_margin

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        rung = 0
        while f"completed_rung_{rung}" in trial.system_attrs:
            rung += 1
        trials = None
        while step >= (rung_step := self.min_resource * self.reduction_factor ** rung) and rung_step < self.max_resource:
            key = f"completed_rung_{rung}"
            trials = trials if trials is not None else study.get_trials(deepcopy=False)
            set_trial_system_attr(study, trial, key, value)
            # A FAILED trial's rung values live on in its re-queued copy (Optuna's retry callback copies
            # system attrs, and a rerun of the same seeds repeats them): counting both would count it twice.
            competing = sorted([t.system_attrs[key] for t in trials if key in t.system_attrs and t.number != trial.number
                                and t.state != TrialState.FAIL] + [value], reverse=True)
            top_half = competing[max(1, len(competing) // self.reduction_factor) - 1]
            learned = self.floor is None or competing[0] > self.floor + self.plateau_margin
            if learned and value < top_half - self.margin and not self.spared(trial, top_half - self.margin):
                return True
            rung += 1
        return False

    def spared(self, trial: FrozenTrial, bar: float) -> bool:
        """Whether a trial below the rung's `bar` is kept anyway (never, in plain tolerant halving)."""
        return False


class PlateauSafeHalvingPruner(TolerantHalvingPruner):
    """Tolerant halving that cannot kill a learner on its plateau (protocol v2).

    v1's first rung sat at steps/4 while MQAR seeds leave the plateau anywhere from ~1.2k to ~6k steps,
    and it judged a trial on its seeds' mean: in 11 of 19 pruned v1 trials a finished seed had already
    reached 0.94 or more (one at 0.991, pruned on a 2-seed mean of 0.472). So, on top of the tolerant
    rule: no rung before `no_prune_before` (the variant's escape window, from measured curves), and a
    trial is never pruned while any of its seeds is at or above the rung's bar (the top-1/η value minus
    the margin). Each seed's value at the reported step is read from the trial's user attr
    `seed_values` (set by the tuning objective before each report); without it, the mean stands for
    every seed.
    """

    def __init__(self, min_resource: int, max_resource: int, no_prune_before: int = 0, **kwargs) -> None:
        if no_prune_before < 0:
            raise ValueError(f"no_prune_before={no_prune_before} must be >= 0 (a step)")
        super().__init__(max(min_resource, no_prune_before), max_resource, **kwargs)
        self.no_prune_before = no_prune_before

    def spared(self, trial: FrozenTrial, bar: float) -> bool:
        values = trial.user_attrs.get(SEED_VALUES)
        return values is not None and max(values) >= bar


def make_sha_pruner(steps: int, floor: float | None = None) -> TolerantHalvingPruner:
    """Successive halving with rungs at steps/4 and steps/2 (reduction factor 2, margin 0.05, and with a
    floor, no pruning while the rung's best is within 0.1 of it): nothing is pruned before a
    quarter of the run, nor at its end."""
    return TolerantHalvingPruner(min_resource=max(1, steps // 4), max_resource=steps, floor=floor)


def make_safe_sha_pruner(steps: int, no_prune_before: int, floor: float | None = None) -> PlateauSafeHalvingPruner:
    """Protocol v2's pruner: the tolerant halving of `make_sha_pruner` (rungs from steps/4 doubling, margin
    0.05, plateau margin 0.1 over the floor), with no rung before `no_prune_before` and no trial pruned
    while any of its seeds is at or above the rung's bar."""
    return PlateauSafeHalvingPruner(min_resource=max(1, steps // 4), max_resource=steps,
                                    no_prune_before=no_prune_before, floor=floor)
