"""Read queries on stored studies that the tuning report, the capability study and the ablations share.

Each query is written once here so that every reader of one storage picks the same trials:
- a seed study (a confirm study, a sweep or an ablation: one trial per seed) holds one result per
  seed, the earliest COMPLETE trial of that seed (a later one is a surplus copy, refused or re-run);
- a tuning study's learning rate is its best trial's: under protocol v2's learning-rate rule the rule's
  best point (`LrSearch.best`: ties bracketed, the middle one wins), otherwise as Optuna ranks them
  (`Study.best_trial`: the highest value, the earliest trial among equal values).
"""
from __future__ import annotations

from collections.abc import Container

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.tune.lr_search import LrSearch, same_lr
from studies.tune.samplers import rule_scores

RULE_SAMPLER = "studies.tune.samplers.LrRuleSampler"  # how a rule study's stored sampler name begins


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    """The study `name`, or None when the storage holds none of that name (a part not run yet)."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def earliest_by_seed(study: optuna.Study, seeds: Container[int] | None = None) -> dict[int, FrozenTrial]:
    """seed -> the earliest (lowest-numbered) COMPLETE trial of that seed, in ascending seed order.

    Trials without a `seed` user attr are skipped; with `seeds`, only those seeds are kept (e.g.
    `range(CONFIRM_SEED_OFFSET + n)` for the first n confirm seeds).
    """
    by_seed: dict[int, FrozenTrial] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        seed = t.user_attrs.get("seed")
        if seed is not None and seed not in by_seed and (seeds is None or seed in seeds):
            by_seed[seed] = t
    return {seed: by_seed[seed] for seed in sorted(by_seed)}


def stored_search(study: optuna.Study) -> LrSearch | None:
    """The learning-rate rule a study ran (from its stored sampler settings), or None for another sampler."""
    sampler = study.user_attrs.get("sampler", {})
    if not str(sampler.get("name", "")).startswith(RULE_SAMPLER):
        return None
    low, high = sampler["bounds_decades"]
    return LrSearch(tuple(sampler["start_decades"]), low, high, sampler["finest_decades"], sampler["tie"])


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's best trial, or None while no trial is COMPLETE: in a rule study the earliest finished
    trial at the rule's best learning rate, otherwise Optuna's `Study.best_trial`."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return None
    search = stored_search(study)
    if search is None:
        return study.best_trial
    best = search.best(rule_scores(trials))
    return min((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "lr" in t.params
                and same_lr(t.params["lr"], best)), key=lambda t: t.number)


def best_lr(study: optuna.Study) -> float | None:
    """The learning rate (param `lr`) of a tuning study's best trial, or None while no trial is COMPLETE.

    Raises ValueError, naming the study's params, if the best trial searched no `lr`.
    """
    best = best_trial(study)
    if best is None:
        return None
    if "lr" not in best.params:
        raise ValueError(f"study {study.study_name!r} tuned no learning rate (params: {sorted(best.params)})")
    return float(best.params["lr"])
