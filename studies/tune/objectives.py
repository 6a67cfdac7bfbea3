"""The trial functions: one tuning trial (a sampled configuration, trained on the study's seeds) and one
confirm trial (the best configuration re-trained on one fresh seed).

Every study's objective is its task's metric (tasks.Task.metric: token accuracy, or sequence exact match
where token accuracy is free), mean over a trial's seeds; the study is named after it. A tuning trial
reads it on the decision rows (`TrainResult.validation_score`: the validation set under protocol v2,
the test set under v1, where they are one), a confirm trial on the test set. With `seeds` > 1 the
pruner sees, while the last seed trains, the mean score over all seeds at each step, and (user attr
`seed_values`) each seed's own. A diverged run is COMPLETE with the worst value, 0.0, and user attr
status=diverged: it counts against the model.

Stored in each trial for the reports (`testbed report` reads storage only): `worker`, `run_id`,
`config`, `status`, `metrics` (held-out loss/accuracy by step and seed), `final` (per evaluated length),
`accuracies` and `scores` (per seed, on the test rows) and `validation_scores` (per seed, on the decision
rows; tuning trials), `seed` (confirm trials), `num_parameters`,
`state_size`, `wall_time`; a refused trial has `surplus`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from studies.config import RunConfig
from studies.train import EvalRecord, TrainResult, train
from studies.tune.budget import SurplusTrial, free_seed, has_slot, seed_taken_before, worker_id
from studies.tune.pruners import SEED_VALUES
from studies.tune.samplers import grid_point_taken_before, lr_point_taken_before
from studies.tune.search_spaces import SearchSpace
from studies.tune.storage import jsonable


def final_rows(result: TrainResult) -> list[dict[str, float]]:
    return [{"length": length, **metrics} for length, metrics in sorted(result.final.items())]


def run_tuning_trial(trial: optuna.Trial, study: optuna.Study, config: RunConfig, space: SearchSpace,
                     budget: int | None, seeds: int, progress: bool) -> float:
    """Train `config` with the trial's sampled params on seeds train.seed.. train.seed+seeds-1; the mean
    score on the decision rows. Refused (SurplusTrial, before training) when the budget (None: the
    learning-rate rule decides when a study ends), its grid point or its learning rate is taken."""
    trial.set_user_attr("worker", worker_id())
    if budget is not None and not has_slot(study.get_trials(deepcopy=False), trial.number, budget):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: {budget} earlier trials already hold the budget")
    params = space.suggest(trial)
    if grid_point_taken_before(study, trial):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: its grid point {params} is held by an earlier trial")
    if budget is None and lr_point_taken_before(study, trial):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: its learning rate {params} is held by an earlier trial")
    config = space.apply(config, params)
    trial.set_user_attr("run_id", config.run_id())
    trial.set_user_attr("config", jsonable(config.to_dict()))
    metrics: list[dict[str, Any]] = []

    curves: list[dict[int, float]] = [{} for _ in range(seeds)]  # per seed: step -> accuracy

    def on_eval(seed_index: int, record: EvalRecord) -> None:
        seed = config.train.seed + seed_index
        metrics.append({"seed": seed, **dataclasses.asdict(record)})
        value = record.score(config.task.metric)
        curves[seed_index][record.step] = value
        if seed_index < seeds - 1:
            return
        # Seeds run one after another. The pruner sees only what every seed has: while the last seed
        # trains, the mean over seeds at the same step (an earlier seed that stopped at its target
        # holds its last value), so no trial is pruned on one seed's curve and every report means the
        # same thing in every trial.
        values = [c.get(record.step, c[max(c)] if c else 0.0) for c in curves]
        mean = float(np.mean(values))
        if seeds > 1:
            trial.set_user_attr(SEED_VALUES, values)  # what a plateau-safe pruner spares a trial on
        trial.report(mean, record.step)
        if trial.should_prune():
            trial.set_user_attr("metrics", metrics)
            trial.set_user_attr("status", "pruned")
            raise optuna.TrialPruned(f"mean {config.task.metric} over {seeds} seeds {mean:.3f} at step {record.step}")

    results: list[TrainResult] = []
    for seed_index in range(seeds):
        run = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=config.train.seed + seed_index))
        result = train(run, on_eval=lambda r, i=seed_index: on_eval(i, r), progress=progress)
        results.append(result)
        if result.status == "diverged":
            break  # the trial scores the worst value whatever the other seeds do

    diverged = any(r.status == "diverged" for r in results)
    trial.set_user_attr("status", "diverged" if diverged else results[0].status)
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("accuracies", [r.accuracy for r in results])
    trial.set_user_attr("scores", [r.score for r in results])
    trial.set_user_attr("validation_scores", [r.validation_score for r in results])
    trial.set_user_attr("final", [{"seed": config.train.seed + i, "final": final_rows(r)} for i, r in enumerate(results)])
    trial.set_user_attr("num_parameters", results[0].num_parameters)
    trial.set_user_attr("state_size", results[0].state_size)
    trial.set_user_attr("wall_time", sum(r.wall_time for r in results))
    return 0.0 if diverged else float(np.mean([r.validation_score for r in results]))


def run_confirm_trial(trial: optuna.Trial, study: optuna.Study, config: RunConfig, seeds: Sequence[int],
                      progress: bool) -> float:
    """Train the fixed `config` on the first of `seeds` no other trial holds; its score. Refused
    (SurplusTrial) when every seed is done or held, or when an earlier trial took the same seed."""
    trial.set_user_attr("worker", worker_id())
    seed = trial.user_attrs.get("seed")  # a re-queued trial keeps the seed it was given
    trials = study.get_trials(deepcopy=False)
    if seed is None:
        seed = free_seed(trials, trial.number, seeds)
    elif seed_taken_before(trials, trial.number, seed):
        seed = None
    if seed is None:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: every wanted seed is done or running elsewhere")
    trial.set_user_attr("seed", seed)
    run = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    trial.set_user_attr("run_id", run.run_id())
    trial.set_user_attr("config", jsonable(run.to_dict()))
    result = train(run, progress=progress)
    # Two workers can pick the same free seed in the instant between a trial's creation and its
    # `seed` attr; by now the earlier one's attr is stored, and the later one gives way.
    if seed_taken_before(study.get_trials(deepcopy=False), trial.number, seed):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: seed {seed} is held by an earlier trial")
    trial.set_user_attr("status", result.status)
    trial.set_user_attr("metrics", [{"seed": seed, **dataclasses.asdict(r)} for r in result.history])
    trial.set_user_attr("final", final_rows(result))
    trial.set_user_attr("num_parameters", result.num_parameters)
    trial.set_user_attr("state_size", result.state_size)
    trial.set_user_attr("wall_time", result.wall_time)
    return 0.0 if result.status == "diverged" else result.score
