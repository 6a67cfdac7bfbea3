"""The library's entry points: tune models under one equal budget of finished trials, then re-train the
best over fresh seeds, on as many workers as run the same call against one storage.

    tune_models(task, models, trials, storage, ...)   every model's study filled to `trials` finished trials
    confirm(task, models, storage, seeds=5, ...)       each best trial re-trained on seeds 1000..1000+seeds-1
    retrain_job(storage, name, config, seeds, attrs)   a fixed config trained once per seed (sweeps, ablations)

Each opens its studies (`studies.tune.study`), pairs each with its trial function
(`studies.tune.objectives`) and its budget, and runs them in the worker loop (`studies.tune.budget.work`).
Safe to run concurrently on many workers with the same arguments and storage, and to rerun.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from studies.config import RunConfig
from studies.tune.budget import Job, confirm_state, tuning_state, work
from studies.tune.lr_search import LrSearch
from studies.tune.objectives import run_confirm_trial, run_tuning_trial
from studies.tune.queries import earliest_by_seed
from studies.tune.samplers import rule_state
from studies.tune.storage import as_storage
from studies.tune.study import (CONFIRM_SEED_OFFSET, ModelSpec, as_spec, open_confirm_study, open_retrain_study,
                                open_tuning_study)


def tune_models(
    task: str,
    models: Sequence[str | ModelSpec],
    trials: int | None,
    storage: str | optuna.storages.BaseStorage,
    prefix: str = "tune",
    preset: str = "quick",
    seeds: int = 1,
    overrides: Sequence[str] = (),
    device: str | None = None,
    sampler_seed: int = 0,
    progress: bool = True,
    task_label: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    grid: dict[str, Sequence[float]] | None = None,
    lr_search: LrSearch | None = None,
    no_prune_before: int = 0,
) -> dict[str, optuna.Study]:
    """Tune every model on `task` until its study `prefix/task/model` holds `trials` finished trials, or
    with `sampler="lr_rule"` until the learning-rate rule asks for no more (`trials` must then be None).

    A model may be a `ModelSpec` (a label with mixer overrides); `task_label`, `sampler`, `pruner`,
    `grid`, `lr_search` and `no_prune_before` are those of `open_tuning_study`. Returns the studies by label.
    """
    if sampler == "lr_rule":
        if trials is not None:
            raise ValueError(f"trials={trials}: the learning-rate rule decides how many trials a study takes; "
                             f"give none")
        lr_search = lr_search or LrSearch()
    elif trials is None or trials < 1:
        raise ValueError(f"trials={trials}: must be >= 1 (finished trials per model)")
    if seeds < 1:
        raise ValueError(f"seeds={seeds}: must be >= 1 (training seeds per trial)")
    storage = as_storage(storage)
    studies, jobs = {}, []
    for spec in map(as_spec, models):
        study, config, space = open_tuning_study(storage, prefix, task, spec.model, preset,
                                                 [*overrides, *spec.overrides], trials, seeds, sampler_seed, device,
                                                 spec.label, task_label, sampler, pruner, grid, lr_search,
                                                 no_prune_before)
        studies[spec.label] = study
        budget = "the learning-rate rule" if trials is None else f"{trials} finished trials"
        print(f"[{study.study_name}] {spec.label}: d_model={config.mixer.d_model}, {config.train.steps} steps, "
              f"knobs {[k.name for k in space.knobs]}, budget {budget}", flush=True)

        def objective(trial: optuna.Trial, study=study, config=config, space=space) -> float:
            return run_tuning_trial(trial, study, config, space, trials, seeds, progress)

        jobs.append(Job(study, objective, rule_state(lr_search) if trials is None else tuning_state(trials)))
    work(jobs)
    return studies


def confirm(
    task: str,
    models: Sequence[str | ModelSpec],
    storage: str | optuna.storages.BaseStorage,
    prefix: str = "tune",
    seeds: int = 5,
    device: str | None = None,
    progress: bool = True,
    task_label: str | None = None,
    every_step: bool = False,
) -> dict[str, list[float]]:
    """Re-train each model's best tuning trial with `seeds` fresh seeds (study `prefix/task/model/confirm`).

    The config is rebuilt from what the tuning study stored and must equal the best trial's stored
    config (`open_confirm_study`); with `every_step` the re-training never stops early. Models and
    `task_label` as in `tune_models`. Returns the confirmed scores per model label (one per seed).
    """
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be >= 1")
    storage = as_storage(storage)
    wanted = [CONFIRM_SEED_OFFSET + i for i in range(seeds)]
    jobs, studies = [], {}
    for spec in map(as_spec, models):
        study, config, best = open_confirm_study(storage, prefix, task, spec, wanted, device, task_label, every_step)
        value = "pruned" if best.value is None else f"{best.value:.4f}"
        print(f"[{study.study_name}] re-training trial {best.number} (value {value}, params "
              f"{ {k: round(v, 6) for k, v in best.params.items()} }) with seeds {wanted}", flush=True)

        def objective(trial: optuna.Trial, study=study, config=config) -> float:
            return run_confirm_trial(trial, study, config, wanted, progress)

        jobs.append(Job(study, objective, confirm_state(wanted)))
        studies[spec.label] = study
    work(jobs)
    return {model: confirmed_accuracies(study, wanted) for model, study in studies.items()}


def retrain_job(storage: optuna.storages.BaseStorage, name: str, config: RunConfig, seeds: Sequence[int],
                attrs: dict[str, Any], progress: bool = True) -> Job:
    """The study `name` that trains the fixed `config` once per seed, as `confirm` re-trains a best
    trial: for runs that are not tuned (a state-size sweep or an ablation at a tuned learning rate).
    `attrs` (and the config) are stored in the study; a resumed study that stored others is refused."""
    study = open_retrain_study(storage, name, config, attrs)
    return Job(study, lambda trial: run_confirm_trial(trial, study, config, seeds, progress), confirm_state(seeds))


def confirmed_accuracies(study: optuna.Study, seeds: Sequence[int] | None = None) -> list[float]:
    """One score per seed of a confirm study (the earliest COMPLETE trial of each seed), in seed order."""
    return [float(t.value) for t in earliest_by_seed(study, seeds).values()]
