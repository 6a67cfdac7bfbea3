"""Per-model hyperparameter search spaces for `testbed tune`, declared in this one place.

Every model is searched over the same three optimisation knobs (learning rate, weight decay, warmup).
A model gets an extra knob only where its authors tune one: the models with trainable transition
parameters (gates, eigenvalues, Δ) also search the learning-rate factor of those parameters, as S4/S5
and LRU train them with a reduced learning rate and docs/design.md §3 allows GateLoop's gates a lower one;
LRU also searches the inner radius of its eigenvalue ring, which its authors set per task. RetNet's
decays are fixed and attention has no transition, so they get no such knob. The number of
knobs differs between models; the budget (finished trials) does not.

A mixer that is not listed here (a new baseline, an ablation variant) is searched over `COMMON`,
as documented in `get_search_space`.

A study records `SEARCH_SPACE_VERSION` and the space's `fingerprint()`; `testbed tune` refuses to add
trials to a study whose stored space differs, because TPE would then mix incomparable histories.
Bump the version whenever a range or knob changes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import optuna

from studies.config import RunConfig, replace_from_strings

SEARCH_SPACE_VERSION = 1

_SECTIONS = ("task", "mixer", "lm", "train")


@dataclass(frozen=True)
class Knob:
    """One searched hyperparameter: an Optuna float distribution and the config field it sets.

    `target` is a dotted config key (`train.lr`). With `fraction_of_steps` the sampled value is a
    fraction of `train.steps`, rounded to a whole number of steps (warmup length scales with the run).
    """

    name: str  # Optuna parameter name, as shown in the dashboard
    target: str
    low: float
    high: float
    log: bool = False
    fraction_of_steps: bool = False

    def __post_init__(self) -> None:
        section, dot, key = self.target.partition(".")
        if not dot or section not in _SECTIONS or not key:
            raise ValueError(f"Knob {self.name}: target={self.target!r} must be section.key with section in {_SECTIONS}")
        if not self.low < self.high:
            raise ValueError(f"Knob {self.name}: low={self.low} must be < high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"Knob {self.name}: a log-scale range needs low > 0, got low={self.low}")
        if self.fraction_of_steps and not 0 <= self.low < self.high < 1:
            raise ValueError(f"Knob {self.name}: a fraction of steps needs 0 <= low < high < 1, got [{self.low}, {self.high}]")


@dataclass(frozen=True)
class SearchSpace:
    knobs: tuple[Knob, ...]

    def __post_init__(self) -> None:
        names = [k.name for k in self.knobs]
        targets = [k.target for k in self.knobs]
        if len(set(names)) != len(names) or len(set(targets)) != len(targets):
            raise ValueError(f"SearchSpace: knob names {names} and targets {targets} must be unique")

    def suggest(self, trial: optuna.Trial) -> dict[str, float]:
        """Sample every knob (a retried trial gets back the values it was first given)."""
        return {k.name: trial.suggest_float(k.name, k.low, k.high, log=k.log) for k in self.knobs}

    def apply(self, config: RunConfig, params: dict[str, float]) -> RunConfig:
        """The config with each knob's field set; type and range checks are the dataclasses' own."""
        missing = sorted({k.name for k in self.knobs} - set(params))
        unknown = sorted(set(params) - {k.name for k in self.knobs})
        if missing or unknown:
            raise ValueError(f"params {sorted(params)} do not match the search space {[k.name for k in self.knobs]}: "
                             f"missing {missing}, unknown {unknown}")
        by_section: dict[str, dict[str, str]] = {s: {} for s in _SECTIONS}
        for knob in self.knobs:
            section, _, key = knob.target.partition(".")
            value = params[knob.name]
            if knob.fraction_of_steps:
                by_section[section][key] = str(round(value * config.train.steps))
            else:
                by_section[section][key] = repr(float(value))
        return dataclasses.replace(
            config,
            task=replace_from_strings(config.task, by_section["task"], "task"),
            mixer=replace_from_strings(config.mixer, by_section["mixer"], "mixer"),
            lm=replace_from_strings(config.lm, by_section["lm"], "lm"),
            train=replace_from_strings(config.train, by_section["train"], "train"),
        )

    def searches(self, target: str) -> bool:
        """Whether a knob of this space sets the config field `target` (`train.warmup_steps`)."""
        return any(k.target == target for k in self.knobs)

    def overridden_by(self, overrides: Sequence[str]) -> list[tuple[str, Knob]]:
        """(override, knob) for each override (`train.lr=0.5`; `model.x` is `mixer.x`) that sets a field
        this space searches: each trial would replace its value with the sampled one."""
        by_target = {k.target: k for k in self.knobs}
        clashes = []
        for item in overrides:
            section, _, key = item.partition("=")[0].partition(".")
            target = f"{'mixer' if section == 'model' else section}.{key}"
            if target in by_target:
                clashes.append((item, by_target[target]))
        return clashes

    def describe(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(k) for k in self.knobs]

    def fingerprint(self) -> str:
        """Stable hash of the knobs and ranges, stored in a study to detect a changed space."""
        blob = json.dumps({"version": SEARCH_SPACE_VERSION, "knobs": self.describe()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


LR = Knob("lr", "train.lr", 1e-4, 3e-2, log=True)
WEIGHT_DECAY = Knob("weight_decay", "train.weight_decay", 0.0, 0.3)
WARMUP = Knob("warmup_fraction", "train.warmup_steps", 0.0, 0.2, fraction_of_steps=True)
# Transition parameters at up to 10x lower learning rate than the rest (never higher: the authors of
# every model with a learned transition lower it for stability, none raise it).
TRANSITION_LR = Knob("transition_lr_factor", "train.transition_lr_factor", 0.1, 1.0, log=True)

# LRU's authors sweep the inner radius of its eigenvalue ring per task (Orvieto et al. 2023, LRA).
LRU_R_MIN = Knob("r_min", "mixer.r_min", 0.0, 0.99)

COMMON = SearchSpace((LR, WEIGHT_DECAY, WARMUP))
WITH_TRANSITION = SearchSpace((LR, WEIGHT_DECAY, WARMUP, TRANSITION_LR))

SEARCH_SPACES: dict[str, SearchSpace] = {
    "gateloop": WITH_TRANSITION,
    "s4d": WITH_TRANSITION,
    "s5": WITH_TRANSITION,
    "lru": SearchSpace((LR, WEIGHT_DECAY, WARMUP, TRANSITION_LR, LRU_R_MIN)),
    "mamba": WITH_TRANSITION,
    "retnet": COMMON,
    "attention": COMMON,
}


def get_search_space(model: str) -> SearchSpace:
    """The model's declared space; a model not declared above is searched over `COMMON`."""
    return SEARCH_SPACES.get(model, COMMON)

