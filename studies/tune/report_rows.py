"""The tuning report's rows: one tidy row per tuning trial and per confirmed seed of the studies under a
prefix, read from an Optuna storage (`load_rows`). Protocol v2 studies' rows carry `"protocol": "v2"` and what
the v2 tables and figures read besides (each trial's learning rate and per-seed validation scores, each
confirm seed's solve target, learning curve and plateau escape). The tables (`report_tables`) and figures
(`report_figures`) read these rows alone, so the report rebuilds from trials.jsonl and confirm.jsonl.
"""
from __future__ import annotations

import re
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.floors import stored_floor, stored_metric
from studies.tune.budget import COUNTED
from studies.tune.pruners import SEED_VALUES
from studies.tune.queries import best_trial, earliest_by_seed, find_study, stored_search
from studies.tune.samplers import rule_scores

V2 = "v2"  # the `protocol` of rows from protocol v2 studies; v1 rows carry no such key
# "Solved" under v2: a seed's test score at the training length reaches the train.target_accuracy its model was
# tuned with (its re-training may train every step), or this where that is 1.0 (tuning trials that never stop
# early): a seed at 0.995 has learned the task.
SOLVE_TARGET = 0.99


# -------------------------------------------------------------------------------------------- loading


def load_rows(storage: optuna.storages.BaseStorage, prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tidy rows of every tuning trial and every confirmed seed under `prefix`. Rows of protocol v2 studies
    (`is_v2`) carry `"protocol": "v2"` and what the v2 tables and figures read besides (see `_v2_trial_fields`
    and `_v2_confirm_fields`); v1 rows are as they always were."""
    trial_rows, confirm_rows = [], []
    pattern = re.compile(rf"^{re.escape(prefix)}/([^/]+)/([^/]+)(/confirm)?$")
    studies = {}
    for name in sorted(optuna.get_all_study_names(storage)):
        if match := pattern.match(name):
            studies[name] = (*match.groups(), optuna.load_study(study_name=name, storage=storage))
    # The confirm seeds of a task: every model's, together. While a study runs, one model may have confirmed
    # more seeds than another; the floor (and the escape threshold read from it) is the same for all of them.
    confirmed = {name: earliest_by_seed(study) for name, (_, _, is_confirm, study) in studies.items() if is_confirm}
    task_seeds: dict[str, set[int]] = {}
    for name, by_seed in confirmed.items():
        task_seeds.setdefault(studies[name][0], set()).update(by_seed)
    for name, (task, model, is_confirm, study) in studies.items():
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if is_confirm:
            # Rows in the order the runs were made (trial numbers), as the committed reports were written.
            by_seed = dict(sorted(confirmed[name].items(), key=lambda item: item[1].number))
            if not by_seed:
                continue
            # One floor per task: the best baseline on all its confirm seeds' held-out sets pooled, as the suite,
            # the audit and the ablation table compute it (a mean of per-seed bests would be biased up).
            # Runs stored under another config version were made with other task generators: no floor.
            config = next(iter(by_seed.values())).user_attrs["config"]
            seeds = tuple(sorted(task_seeds[task]))
            floor = stored_floor(config, seeds)
            metric = stored_metric(config) if floor is None else floor[2]
            floor_name, floor_score = (None, None) if floor is None else floor[:2]
            tuning = find_study(storage, f"{prefix}/{task}/{model}")
            v2 = tuning is not None and is_v2(tuning)
            floors_at = _floors_at_lengths(config, seeds, trials) if v2 and floor is not None else {}
            # The best tuning trial's early-stop target, stored in the confirm study (re-trainings may train
            # every step, target 1.0): a seed is solved at the target its model was tuned to reach.
            tuned = (study.user_attrs.get("config") or {}).get("train", {}).get("target_accuracy", 1.0)
            for seed, t in by_seed.items():
                row = {
                    "task": task, "model": model, "seed": seed, "accuracy": float(t.value),
                    "metric": metric, "floor": floor_score, "floor_name": floor_name,
                    "status": t.user_attrs.get("status"), "num_parameters": t.user_attrs.get("num_parameters"),
                    "state_size": t.user_attrs.get("state_size"), "run_id": t.user_attrs.get("run_id"),
                    "source_trial": study.user_attrs.get("source_trial"),
                    "train_length": t.user_attrs["config"]["task"]["seq_len"],
                    # the objective's metric at the training length and at the longer evaluated lengths
                    "by_length": {str(f["length"]): f[metric] for f in t.user_attrs.get("final") or []},
                }
                confirm_rows.append({**row, **_v2_confirm_fields(t, seed, metric, floor_score, floors_at, tuned)}
                                    if v2 else row)
            continue
        v2 = _v2_study(study, trials) if is_v2(study) else None
        finished = 0
        for t in trials:
            counted = t.state in COUNTED
            finished += counted
            row = {
                "task": task, "model": model, "number": t.number, "state": t.state.name,
                "finished_index": finished if counted else None,
                # A pruned trial's value is its last reported accuracy (a lower bound of where it would
                # have ended); a diverged one is stored as 0.
                "value": None if t.value is None else float(t.value),
                "status": t.user_attrs.get("status"), "params": t.params,
                "num_parameters": t.user_attrs.get("num_parameters"), "state_size": t.user_attrs.get("state_size"),
                "surplus": bool(t.user_attrs.get("surplus", False)), "retry_of": t.system_attrs.get("failed_trial"),
                "budget": study.user_attrs.get("budget"),
            }
            trial_rows.append(row if v2 is None else {**row, **_v2_trial_fields(t, v2)})
    return trial_rows, confirm_rows


# ------------------------------------------------------------------------------ protocol v2's rows


def is_v2(study: optuna.Study) -> bool:
    """Whether a tuning study ran protocol v2: its decisions read a validation set apart from the test set
    (it stored `decision_rows`, which v1 studies lack)."""
    return "decision_rows" in study.user_attrs


def _v2_study(study: optuna.Study, trials: list[FrozenTrial]) -> dict[str, Any]:
    """What every row of a v2 tuning study repeats (so the report rebuilds from trials.jsonl alone): the
    protocol as the study stored it, its best trial (the rule's best learning rate) and whether that
    learning rate sits at a bound of the rule's search."""
    attrs = study.user_attrs
    best = best_trial(study)
    search, scores = stored_search(study), rule_scores(trials)
    return {"protocol": V2, "decision_rows": attrs["decision_rows"], "sampler": attrs.get("sampler"),
            "pruner": attrs.get("pruner"), "seeds_per_trial": attrs.get("seeds_per_trial"),
            "best_trial": None if best is None else best.number,
            "lr_at_bound": None if search is None or not scores else search.at_bound(scores)}


def _v2_trial_fields(t: FrozenTrial, study_fields: dict[str, Any]) -> dict[str, Any]:
    """A tuning trial's learning rate and each seed's score on the validation rows as the decisions read
    them: a finished trial's final scores; a pruned trial's values at the step it was pruned (`seed_values`,
    or the reported value itself when it trained one seed)."""
    if t.state == TrialState.PRUNED:
        scores = t.user_attrs.get(SEED_VALUES) or ([t.intermediate_values[t.last_step]] if t.intermediate_values else [])
    else:
        scores = t.user_attrs.get("validation_scores") or []
    config = t.user_attrs.get("config")
    first = config["train"]["seed"] if config else 0
    fields = {k: v for k, v in study_fields.items() if k != "best_trial"}
    return {**fields, "lr": t.params.get("lr"), "best": t.number == study_fields["best_trial"],
            "seeds": [first + i for i in range(len(scores))], "validation_scores": [float(s) for s in scores]}


def _floors_at_lengths(config: dict[str, Any], seeds: tuple[int, ...], trials: list[FrozenTrial]) -> dict[str, float]:
    """The floor at every longer length a confirm study's runs were scored at, on the same test rows."""
    lengths = {f["length"] for t in trials for f in t.user_attrs.get("final") or []} - {config["task"]["seq_len"]}
    return {str(n): stored_floor(config, seeds, n)[1] for n in sorted(lengths)}


def escape_time(curve: list[list[float]], threshold: float) -> tuple[int, bool]:
    """(step, escaped) of one run's [[step, score], ...] on the decision rows: the first eval step at which the
    score reaches `threshold`, or the run's last eval step (0 without one) if it never does (censored)."""
    for step, score in curve:
        if score >= threshold:
            return int(step), True
    return (int(curve[-1][0]) if curve else 0), False


def _v2_confirm_fields(t: FrozenTrial, seed: int, metric: str, floor: float | None,
                       floors_at: dict[str, float], tuned_target: float) -> dict[str, Any]:
    """A confirm seed's solve target (its run's early-stop target, else its tuning trials', else
    SOLVE_TARGET), its learning curve on the validation rows and its plateau escape (first eval step at
    floor + (1 − floor)/2; None without a floor), and the floor at the longer lengths."""
    target = min(t.user_attrs["config"]["train"]["target_accuracy"], tuned_target)
    curve = [[m["step"], float(m[metric])] for m in t.user_attrs.get("metrics") or [] if m.get("seed", seed) == seed]
    threshold = None if floor is None else floor + (1 - floor) / 2
    step, escaped = (None, None) if threshold is None else escape_time(curve, threshold)
    return {"protocol": V2, "lr": t.params.get("lr", t.user_attrs["config"]["train"]["lr"]),
            "target": target if target < 1 else SOLVE_TARGET, "curve": curve, "escape_threshold": threshold,
            "escape_step": step, "escaped": escaped, "floor_by_length": floors_at}
