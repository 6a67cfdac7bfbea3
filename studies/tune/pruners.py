"""The pruners a tuning study can run: the median rule (the default) and tolerant successive halving.

Every model of `testbed tune` gets the same median pruner on its held-out score; the capability study
runs `TolerantHalvingPruner` (`pruner="sha"`). The exact settings a study ran are stored in it
(`studies.tune.study.describe_tuner`).
"""
from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.tune.optuna_private import set_trial_system_attr

PRUNERS = ("median", "sha")


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
            if learned and value < top_half - self.margin:
                return True
            rung += 1
        return False


def make_sha_pruner(steps: int, floor: float | None = None) -> TolerantHalvingPruner:
    """Successive halving with rungs at steps/4 and steps/2 (reduction factor 2, margin 0.05, and with a
    floor, no pruning while the rung's best is within 0.1 of it): nothing is pruned before a
    quarter of the run, nor at its end."""
    return TolerantHalvingPruner(min_resource=max(1, steps // 4), max_resource=steps, floor=floor)
