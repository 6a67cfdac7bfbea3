"""Build the tuning report (tables, significance tests, figures) from an Optuna storage alone.

    testbed report [--storage URL] [--study-prefix P] [--out DIR] [--reference gateloop]

Reads the studies `P/<task>/<model>` and `P/<task>/<model>/confirm` written by `testbed tune`; trains
nothing. Per task a Markdown table: each model's confirmed accuracy (mean and 95 % percentile-bootstrap
interval over the final seeds), parameters, state size, its tuning budget and best hyperparameters,
and the p-value of the reference model (GateLoop) against it — Welch's t-test and the Mann–Whitney U
test, two-sided, each Holm-corrected over the comparisons of that task. Figures (seaborn):
`accuracy_by_model.png` (confirmed accuracy with 95 % CIs and the seeds as dots),
`optimization_history.png` (every trial's value, and the best so far, per model), `best_so_far.png`
(best accuracy after n finished trials, and its expectation over random orderings of the same trials,
the expected-validation-performance curve of Dodge et al., 2019).

Protocol v2 studies (issue 24; docs/design.md §6.1: their decisions read a validation set) get their own report,
chosen by the rows (`"protocol": "v2"`; v1 rows carry no such key and render as above): the header states
the protocol the studies stored; per task a table with the floor as its first row and, per model, the test
score's mean [95 % bootstrap CI], every seed's score, the solve rate k/n at the target with its exact
interval, the longer lengths likewise, the rule's learning rate (marked where it sits at a bound of the
search), and against the reference the exact paired sign-flip test on seed-matched scores (with the
smallest p its pairs allow) and, where seeds split at the target, Boschloo's test of the solve rates,
each Holm-corrected; notes say which statistic is primary and give plateau-escape times (Kaplan–Meier,
log-rank). Figures: `lr_sensitivity.png`, `scores_by_model.png`, `escape_survival.png`.

Written to DIR: `report.md`, `trials.jsonl` (one row per tuning trial), `confirm.jsonl` (one row per
final seed) and the PNGs; the report and the figures rebuild from the two jsonl files alone.
"""
from __future__ import annotations

import argparse
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.atomic_io import write_atomic, write_jsonl
from studies.checks import check_out_dir
from studies.floors import metric_label, stored_floor, stored_metric
from studies.stats import (bootstrap_ci, compare, expected_max, holm, kaplan_meier, logrank, paired_permutation,
                           smallest_paired_p, solve_rate, solve_rate_test, splits)
from studies.tables import human_count, markdown_table
from studies.tune.budget import COUNTED
from studies.tune.cli import set_optuna_verbosity
from studies.tune.pruners import SEED_VALUES
from studies.tune.queries import best_trial, earliest_by_seed, find_study, stored_search
from studies.tune.samplers import rule_scores
from studies.tune.storage import check_prefix, open_existing_storage

DEFAULT_REFERENCE = "gateloop"  # the model under study: every other model is tested against it
V2 = "v2"  # the `protocol` of rows from protocol v2 studies; v1 rows carry no such key
# "Solved" under v2: a seed's test score at the training length reaches the run's train.target_accuracy, or
# this where the target is 1.0 (runs that never stop early): a seed at 0.995 has learned the task.
SOLVE_TARGET = 0.99


# -------------------------------------------------------------------------------------------- loading


def load_rows(storage: optuna.storages.BaseStorage, prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tidy rows of every tuning trial and every confirmed seed under `prefix`. Rows of protocol v2 studies
    (`is_v2`) carry `"protocol": "v2"` and what the v2 tables and figures read besides (see `_v2_trial_fields`
    and `_v2_confirm_fields`); v1 rows are as they always were."""
    trial_rows, confirm_rows = [], []
    names = optuna.get_all_study_names(storage)
    pattern = re.compile(rf"^{re.escape(prefix)}/([^/]+)/([^/]+)(/confirm)?$")
    for name in sorted(names):
        match = pattern.match(name)
        if not match:
            continue
        task, model, is_confirm = match.groups()
        study = optuna.load_study(study_name=name, storage=storage)
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if is_confirm:
            # Rows in the order the runs were made (trial numbers), as the committed reports were written.
            by_seed = dict(sorted(earliest_by_seed(study).items(), key=lambda item: item[1].number))
            if not by_seed:
                continue
            # One floor per study: the best baseline on all its seeds' held-out sets pooled, as the suite,
            # the audit and the ablation table compute it (a mean of per-seed bests would be biased up).
            # Runs stored under another config version were made with other task generators: no floor.
            config = next(iter(by_seed.values())).user_attrs["config"]
            floor = stored_floor(config, tuple(by_seed))
            metric = stored_metric(config) if floor is None else floor[2]
            floor_name, floor_score = (None, None) if floor is None else floor[:2]
            tuning = find_study(storage, f"{prefix}/{task}/{model}")
            v2 = tuning is not None and is_v2(tuning)
            floors_at = _floors_at_lengths(config, tuple(by_seed), trials) if v2 and floor is not None else {}
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
                confirm_rows.append({**row, **_v2_confirm_fields(t, seed, metric, floor_score, floors_at)} if v2
                                    else row)
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
                       floors_at: dict[str, float]) -> dict[str, Any]:
    """A confirm seed's solve target, its learning curve on the validation rows and its plateau escape
    (first eval step at floor + (1 − floor)/2; None without a floor), and the floor at the longer lengths."""
    target = t.user_attrs["config"]["train"]["target_accuracy"]
    curve = [[m["step"], float(m[metric])] for m in t.user_attrs.get("metrics") or [] if m.get("seed", seed) == seed]
    threshold = None if floor is None else floor + (1 - floor) / 2
    step, escaped = (None, None) if threshold is None else escape_time(curve, threshold)
    return {"protocol": V2, "lr": t.params.get("lr", t.user_attrs["config"]["train"]["lr"]),
            "target": target if target < 1 else SOLVE_TARGET, "curve": curve, "escape_threshold": threshold,
            "escape_step": step, "escaped": escaped, "floor_by_length": floors_at}


def _floor_cell(rows: list[dict[str, Any]]) -> str:
    """The rows' floor (one per study; studies of a task share their seeds and test sets, hence the
    floor) with the baseline that sets it; "–" where it is unknown."""
    known = [r for r in rows if r.get("floor") is not None]
    if not known:
        return "–"
    names = sorted({r["floor_name"] for r in known})
    return f"{sum(r['floor'] for r in known) / len(known):.3f} ({', '.join(names)})"


# --------------------------------------------------------------------------------------------- tables


def _fmt_p(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _fmt_params(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in sorted(params.items()))


def task_table(task: str, trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]],
               reference: str) -> str:
    trials = [r for r in trial_rows if r["task"] == task]
    confirmed = [r for r in confirm_rows if r["task"] == task]
    models = sorted({r["model"] for r in trials} | {r["model"] for r in confirmed},
                    key=lambda m: (m != reference, m))
    acc = {m: [r["accuracy"] for r in confirmed if r["model"] == m] for m in models}
    others = [m for m in models if m != reference and reference in models]
    raw = [compare(acc[reference], acc[m]) for m in others]
    welch = dict(zip(others, holm([w for w, _ in raw])))
    mwu = dict(zip(others, holm([u for _, u in raw])))

    multipliers = sorted({int(length) // r["train_length"] for r in confirmed for length in r["by_length"]} - {1})
    header = ["model", "score, mean [95% bootstrap CI]", *[f"@{k}×L" for k in multipliers], "seeds", "params", "state",
              f"p vs {reference} (Welch, Holm)", f"p vs {reference} (MWU, Holm)",
              "trials (pruned, diverged)", "best tuning score", "best hyperparameters"]
    body = []
    for m in models:
        rows = [r for r in confirmed if r["model"] == m]
        finished = [r for r in trials if r["model"] == m and r["finished_index"] is not None]
        complete = [r for r in finished if r["state"] == "COMPLETE"]
        # The trial the confirm study re-trained; before confirmation, the best complete trial so far.
        source = rows[0]["source_trial"] if rows else None
        best = next((r for r in complete if r["number"] == source), None) or \
            max(complete, key=lambda r: (r["value"], -r["number"]), default=None)
        if acc[m]:
            mean, low, high = bootstrap_ci(acc[m])
            cell = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        else:
            cell = "not confirmed"
        diverged = sum(r["status"] == "diverged" for r in rows)
        sized = rows or complete
        longer = []
        for k in multipliers:
            values = [r["by_length"][str(k * r["train_length"])] for r in rows if str(k * r["train_length"]) in r["by_length"]]
            longer.append(f"{sum(values) / len(values):.3f}" if values else "–")
        body.append([
            m, cell, *longer, f"{len(rows)}" + (f" ({diverged} diverged)" if diverged else ""),
            human_count(sized[0]["num_parameters"]) if sized and sized[0]["num_parameters"] else "–",
            human_count(sized[0]["state_size"]) if sized and sized[0]["state_size"] else "–",
            _fmt_p(welch[m]) if m in welch else "–", _fmt_p(mwu[m]) if m in mwu else "–",
            f"{len(finished)} ({sum(r['state'] == 'PRUNED' for r in finished)}, "
            f"{sum(r['status'] == 'diverged' for r in finished)})",
            f"{best['value']:.3f}" if best else "–", _fmt_params(best["params"]) if best else "–",
        ])
    if confirmed:
        metric = confirmed[0].get("metric", "accuracy")
        notes = [f"Metric: {metric_label(metric)}. "
                 f"Floor (best no-solve baseline on the same held-out sets, mean over the seeds): {_floor_cell(confirmed)}"
                 + ("" if any(r.get("floor") is not None for r in confirmed) else
                    " — not computable: these runs were made under an older config version, with other task generators")
                 + "."]
    else:
        # The floor is read on the confirm seeds' held-out sets: without confirm runs there is none to read.
        notes = ["No confirm runs for this task (tuned with --final-seeds 0, or not confirmed yet): no confirmed "
                 "score and no floor; rerun the same `testbed tune` command with --final-seeds 5 to re-train each "
                 "best configuration."]
    budgets = {len([r for r in trials if r["model"] == m and r["finished_index"] is not None]) for m in models}
    if len(budgets) > 1:
        notes.append(f"**Unequal budgets**: finished trials per model differ ({sorted(budgets)}); the comparison "
                     f"is not fair until every study is complete.")
    if reference not in models:
        notes.append(f"No `{reference}` study for this task: no p-values.")
    return f"### {task}\n\n" + markdown_table(header, body) + "\n" + "\n".join(notes) + "\n"


# ------------------------------------------------------------------------------ protocol v2's tables
# docs/design.md §6.1: per-seed scores shown; intervals inside [0, 1] (percentile bootstrap of the mean, exact
# binomial for solve rates); where seeds split into learned and not, the solve rate k/n is the primary
# statistic, compared by an exact test; seeds share test rows across models, so scores are compared
# paired; plateau-escape time as survival curves with a log-rank test; Holm over a task's comparisons.


def _fmt_p3(p: float) -> str:
    """Exact p-values to 3 significant digits: 0.0625, the smallest 4 pairs can give, is not 0.062."""
    return "–" if math.isnan(p) else f"{p:.3g}" if p >= 1e-3 else f"{p:.2e}"


def _ci_cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean, low, high = bootstrap_ci(values)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _by_seed(rows: list[dict[str, Any]], model: str) -> dict[int, float]:
    return {r["seed"]: r["accuracy"] for r in rows if r["model"] == model}


def _one(values: set, what: str, task: str) -> Any:
    """The one value a task's models share (a target, a threshold): a comparison across two is no comparison."""
    if len(values) > 1:
        raise ValueError(f"task {task}: its models' {what} differ ({sorted(values)}); they were run under different "
                         f"settings and are not compared: report them under separate study prefixes")
    return next(iter(values), None)


def v2_comparisons(task: str, confirm_rows: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Per model other than `reference` (in the table's order): its comparisons with the reference on the task.

    `paired_p`: the exact sign-flip permutation test on the seed-matched test scores (seeds both models
    have), Holm-corrected over the task's comparisons, with `pairs` and the smallest p `pairs` allow
    (`min_p`, before Holm); `solve_p`: Boschloo's exact test of the solve rates where the two models' seeds
    together split at the target (NaN elsewhere), Holm-corrected over the comparisons that make it; `primary`:
    which of the two is the comparison's primary statistic; `logrank_p`: the log-rank test of plateau-escape
    times (Holm), NaN without escape rows.
    """
    rows = [r for r in confirm_rows if r["task"] == task]
    models = sorted({r["model"] for r in rows}, key=lambda m: (m != reference, m))
    if reference not in models:
        return []
    target = _one({r["target"] for r in rows}, "solve targets", task)
    ref = _by_seed(rows, reference)
    out = []
    for m in models[1:]:
        mine = _by_seed(rows, m)
        common = sorted(set(ref) & set(mine))
        # Solve rates are primary where the two models' seeds, together, split into solved and not (also
        # 5/5 against 0/5, where the paired test on scores cannot go below 2/2^n).
        split = splits([*ref.values(), *mine.values()], target)
        escapes = {g: [(r["escape_step"], r["escaped"]) for r in rows if r["model"] == g and r["escaped"] is not None]
                   for g in (reference, m)}
        out.append({
            "model": m, "pairs": len(common), "min_p": smallest_paired_p(len(common)) if common else math.nan,
            "paired_p": paired_permutation([ref[s] for s in common], [mine[s] for s in common]) if common else math.nan,
            "split": split,
            "solve_p": solve_rate_test(solve_rate(list(ref.values()), target), solve_rate(list(mine.values()), target))
            if split else math.nan,
            "logrank_p": logrank(*zip(*escapes[reference]), *zip(*escapes[m])) if all(escapes.values()) else math.nan,
        })
    for key in ("paired_p", "solve_p", "logrank_p"):
        for c, p in zip(out, holm([c[key] for c in out])):
            c[key] = p
    for c in out:
        c["primary"] = "solve rate" if c["split"] else "paired test on scores"
    return out


def _km_median(times: list[float], escaped: list[bool]) -> str:
    """The Kaplan–Meier median escape step, or "not reached" while over half the runs may still be on the plateau."""
    reached = [t for t, s in kaplan_meier(times, escaped) if s <= 0.5]
    return f"{reached[0]:.0f}" if reached else "not reached"


def task_table_v2(task: str, trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]],
                  reference: str) -> str:
    trials = [r for r in trial_rows if r["task"] == task]
    confirmed = [r for r in confirm_rows if r["task"] == task]
    models = sorted({r["model"] for r in trials} | {r["model"] for r in confirmed}, key=lambda m: (m != reference, m))
    target = _one({r["target"] for r in confirmed}, "solve targets", task)
    seeds = sorted({r["seed"] for r in confirmed})
    comparisons = {c["model"]: c for c in v2_comparisons(task, confirm_rows, reference)}
    lengths = sorted({int(n) for r in confirmed for n in r["by_length"]} - {r["train_length"] for r in confirmed})
    train_length = _one({r["train_length"] for r in confirmed}, "training lengths", task)
    seed_span = f"seeds {seeds[0]}–{seeds[-1]}" if seeds else "seeds"
    header = ["model", "test score, mean [95% bootstrap CI]", f"per seed ({seed_span})",
              f"solved (≥ {target:g}), k/n [95% exact CI]" if target is not None else "solved",
              *[f"@{n // train_length}×L, mean [95% CI]" for n in lengths], "params", "state",
              "lr (rule's best)", "trials (pruned, diverged)", f"p vs {reference}: paired sign-flip on scores (Holm)",
              f"p vs {reference}: solve rate, Boschloo (Holm)"]
    body = []
    known = [r for r in confirmed if r.get("floor") is not None]
    if known:
        floors_at = known[0]["floor_by_length"]
        body.append([f"*floor: {', '.join(sorted({r['floor_name'] for r in known}))}*",
                     f"{sum(r['floor'] for r in known) / len(known):.3f}", "–", "–",
                     *[f"{floors_at[str(n)]:.3f}" if str(n) in floors_at else "–" for n in lengths],
                     *["–"] * 6])
    for m in models:
        rows = sorted((r for r in confirmed if r["model"] == m), key=lambda r: r["seed"])
        scores = _by_seed(rows, m)
        finished = [r for r in trials if r["model"] == m and r["finished_index"] is not None]
        best = next((r for r in trials if r["model"] == m and r["best"]), None)
        sized = rows or finished
        longer = [_ci_cell([r["by_length"][str(n)] for r in rows if str(n) in r["by_length"]]) for n in lengths]
        lr = "–" if best is None or best["lr"] is None else f"{best['lr']:.3g}" + (" **at bound**" if best["lr_at_bound"] else "")
        c = comparisons.get(m)
        diverged = sum(r["status"] == "diverged" for r in rows)
        body.append([
            m, _ci_cell(list(scores.values())) if scores else "not confirmed",
            ", ".join(f"{scores[s]:.3f}" if s in scores else "–" for s in seeds) + (f" ({diverged} diverged)" if diverged else ""),
            str(solve_rate(list(scores.values()), target)) if scores else "–", *longer,
            human_count(sized[0]["num_parameters"]) if sized and sized[0]["num_parameters"] else "–",
            human_count(sized[0]["state_size"]) if sized and sized[0]["state_size"] else "–", lr,
            (f"{len(finished)} ({sum(r['state'] == 'PRUNED' for r in finished)}, "
             f"{sum(r['status'] == 'diverged' for r in finished)})"),
            "–" if c is None or not c["pairs"] else f"p={_fmt_p3(c['paired_p'])} (min {_fmt_p3(c['min_p'])}, {c['pairs']} pairs)",
            "–" if c is None else f"p={_fmt_p3(c['solve_p'])}" if c["split"] else "no split",
        ])
    notes = []
    if confirmed:
        notes.append(f"Metric: {metric_label(confirmed[0]['metric'])}, on the test rows (no decision read them), at "
                     f"the training length L = {train_length} and at the longer lengths. Floor (first row): the best "
                     f"no-solve baseline on the same test rows, pooled over the seeds"
                     + ("" if known else " — not computable: these runs were made under an older config version")
                     + f". Solved: a seed's test score ≥ {target:g}.")
    else:
        notes.append("No confirm runs for this task (tuned with --final-seeds 0, or not confirmed yet): no test "
                     "scores, no floor and no comparisons; rerun the same `testbed tune` command with --final-seeds 5.")
    at_bound = [m for m in models if any(r["model"] == m and r["best"] and r["lr_at_bound"] for r in trials)]
    if at_bound:
        notes.append(f"**At bound**: the rule's best learning rate of {', '.join(at_bound)} sits at a bound of the "
                     f"search; that is a reason to widen the bounds and tune again, not a result.")
    if reference not in models:
        notes.append(f"No `{reference}` study for this task: no comparisons.")
    elif comparisons:
        primary = "; ".join(f"{reference} vs {c['model']}: " + (
            f"**solve rate** (seeds split at {target:g})" if c["split"] else
            "**paired test on scores** (the seeds of both are all solved or all not)")
            for c in comparisons.values())
        notes.append(f"Primary statistic per comparison (docs/design.md §6.1: the solve rate where the two models' "
                     f"seeds together split into solved and not, else the paired test on scores): {primary}. Paired: the exact two-sided "
                     f"sign-flip permutation test on the seeds both models ran (each seed draws the same test rows "
                     f"for every model); `min`: the smallest p that many pairs can give, before Holm. Solve rates: "
                     f"Boschloo's exact test. Each column Holm-corrected over this task's comparisons.")
    escapes = [r for r in confirmed if r["escaped"] is not None]
    if escapes:
        threshold = _one({round(r["escape_threshold"], 9) for r in escapes}, "escape thresholds", task)
        parts = []
        for m in models:
            mine = [r for r in escapes if r["model"] == m]
            if mine:
                c = comparisons.get(m)
                parts.append(f"{m} {sum(r['escaped'] for r in mine)}/{len(mine)} escaped, median step "
                             f"{_km_median([r['escape_step'] for r in mine], [r['escaped'] for r in mine])}"
                             + ("" if c is None else f", log-rank p vs {reference} (Holm) {_fmt_p3(c['logrank_p'])}"))
        notes.append(f"Plateau escape (escape_survival.png): the first eval step at which a confirm run's metric on "
                     f"its validation rows reaches floor + (1 − floor)/2 = {threshold:.3f} (the floor of the first row), censored at the run's last "
                     f"eval step if never; Kaplan–Meier medians: {'; '.join(parts)}.")
    return f"### {task}\n\n" + markdown_table(header, body) + "\n" + "\n".join(notes) + "\n"


def summary_table_v2(confirm_rows: list[dict[str, Any]], reference: str = DEFAULT_REFERENCE) -> str:
    """Task × model: mean test score [95% bootstrap CI] and solve rate k/n, the best mean of each task in bold;
    then the task's floor."""
    tasks = sorted({r["task"] for r in confirm_rows})
    models = sorted({r["model"] for r in confirm_rows}, key=lambda m: (m != reference, m))
    body = []
    for task in tasks:
        rows = [r for r in confirm_rows if r["task"] == task]
        target = _one({r["target"] for r in rows}, "solve targets", task)
        cells, means = [], {}
        for m in models:
            scores = list(_by_seed(rows, m).values())
            if scores:
                means[m] = float(np.mean(scores))
                rate = solve_rate(scores, target)
                cells.append(f"{_ci_cell(scores)}; {rate.k}/{rate.n} solved")
            else:
                cells.append("–")
        best = max(means.values(), default=None)
        body.append([task, *[f"**{c}**" if m in means and means[m] == best else c for m, c in zip(models, cells)],
                     _floor_cell(rows)])
    return markdown_table(["task", *models, "floor"], body)


def _decades(values: list[float]) -> str:
    return ", ".join(f"{10 ** d:.3g}" for d in values) + f" (decades {', '.join(f'{d:g}' for d in values)})"


def protocol_lines(row: dict[str, Any]) -> list[str]:
    """The protocol a v2 tuning study ran, from what it stored (a trial row repeats it)."""
    lines = [f"Decision rows: {row['decision_rows']}."]
    sampler = row["sampler"] or {}
    if "start_decades" in sampler:
        low, high = sampler["bounds_decades"]
        start = sampler["start_decades"]
        step = min(b - a for a, b in itertools.pairwise(start))
        lines.append(f"Learning rate: the rule of `studies.tune.lr_search` (`LrRuleSampler`), one for every model: "
                     f"the start grid {_decades(start)}; while the best point is the smallest or largest tried, one "
                     f"step ({step:g} decades) beyond it, up to the bounds [{10 ** low:.3g}, {10 ** high:.3g}] "
                     f"(decades [{low:g}, {high:g}]); then midpoints until the best point's neighbours are at most "
                     f"{sampler['finest_decades']:g} decades away; "
                     + ("equal scores tie" if sampler["tie"] == 0 else f"scores within {sampler['tie']:g} of the best tie")
                     + " (the middle one wins). Every other knob stays at the preset's value.")
    else:
        lines.append(f"Sampler: {sampler.get('name', 'unknown')}.")
    pruner = row["pruner"] or {}
    if "no_prune_before" in pruner:
        floor = "none" if pruner["floor"] is None else f"{pruner['floor']:.3f}"
        lines.append(f"Pruner: plateau-safe halving (`PlateauSafeHalvingPruner`): rungs from step "
                     f"{pruner['min_resource']}, ×{pruner['reduction_factor']} while below step {pruner['max_resource']}; "
                     f"no rung before step {pruner['no_prune_before']} (the escape window); a trial is pruned only "
                     f"below the rung's top 1/{pruner['reduction_factor']} by more than {pruner['margin']:g}, once the "
                     f"rung's best is more than {pruner['plateau_margin']:g} above the floor ({floor}, the tuning "
                     f"seeds' rows), and never while any of its seeds is at or above that bar.")
    else:
        lines.append(f"Pruner: {pruner.get('name', 'unknown')}.")
    lines.append(f"Seeds per tuning trial: {row['seeds_per_trial']} (a trial's score: their mean on the decision rows).")
    return lines


def _seed_span(seeds: list[int]) -> str:
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}–{seeds[-1]}" if contiguous and len(seeds) > 1 else ", ".join(map(str, seeds))


def protocol_header(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]]) -> str:
    """The protocol every v2 study of the report ran, stated once where all share it, else per group of studies."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for (task, model), row in sorted({(r["task"], r["model"]): r for r in trial_rows}.items()):
        groups.setdefault(tuple(protocol_lines(row)), []).append(f"{task}/{model}")
    text = []
    for lines, studies in groups.items():
        if len(groups) > 1:
            text.append(f"Studies {', '.join(studies)}:\n")
        text.append("".join(f"- {line}\n" for line in lines) + ("\n" if len(groups) > 1 else ""))
    confirm = {}
    for r in confirm_rows:
        confirm.setdefault((r["task"], r["model"]), []).append(r["seed"])
    spans = {_seed_span(sorted(s)) + f" ({len(s)} per model)" for s in confirm.values()}
    if len(spans) == 1:
        text.append(f"- Confirm seeds: {spans.pop()}: each model's best learning rate re-trained; its test scores "
                    f"are what the tables report.\n")
    elif spans:
        text.append("- Confirm seeds: " + "; ".join(f"{t}/{m} {_seed_span(sorted(s))}" for (t, m), s in
                                                     sorted(confirm.items())) + ".\n")
    return "".join(text)


def report_markdown_v2(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], prefix: str,
                       reference: str = DEFAULT_REFERENCE) -> str:
    tasks = sorted({r["task"] for r in trial_rows} | {r["task"] for r in confirm_rows})
    return (f"## Tuning report: `{prefix}`\n\n"
            "Protocol v2 (docs/design.md §6.1, issue 24): decisions never read the rows that report.\n\n"
            + protocol_header(trial_rows, confirm_rows) + "\n"
            "Score: each task's metric (token accuracy, or sequence exact match where named) on the test rows of "
            "each model's best learning rate re-trained with fresh seeds; diverged seeds count as 0; `@k×L`: the "
            "same runs on test sequences k times the training length; floor: the best no-solve baseline "
            "(`testbed tasks audit`) on the same test rows — a model at the floor has learned nothing. Intervals: "
            "95 % percentile bootstrap of the mean (scores), Clopper–Pearson (solve rates). p-values: exact, "
            "two-sided, Holm-corrected over the comparisons of a task. Figures: `lr_sensitivity.png` (every "
            "learning rate tried, every seed's validation score), `scores_by_model.png` (every seed's test score), "
            "`escape_survival.png` (plateau-escape times).\n\n"
            "### Summary: mean test score [95% bootstrap CI]; seeds solved (best mean of each task in bold)\n\n"
            + summary_table_v2(confirm_rows, reference) + "\n"
            + "\n".join(task_table_v2(t, trial_rows, confirm_rows, reference) for t in tasks))


def protocol_of(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]]) -> str:
    """"v2" where every row is a protocol v2 study's, "v1" where none is; a mix is refused (its tasks would
    need two headers and two kinds of tables, and no comparison crosses protocols)."""
    found = {r.get("protocol", "v1") for r in [*trial_rows, *confirm_rows]}
    if len(found) > 1:
        mixed = sorted({(r["task"], r["model"], r.get("protocol", "v1")) for r in [*trial_rows, *confirm_rows]})
        raise ValueError("the studies mix protocol v1 and v2 (" + ", ".join(f"{t}/{m}: {p}" for t, m, p in mixed)
                         + "): report them under separate study prefixes")
    return found.pop() if found else "v1"


# -------------------------------------------------------------------------------------------- figures


def best_so_far_rows(trial_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, model): best value after n finished trials, and its expectation (Dodge et al.)."""
    out = []
    for task, model in sorted({(r["task"], r["model"]) for r in trial_rows}):
        values = [r["value"] or 0.0 for r in trial_rows
                  if (r["task"], r["model"]) == (task, model) and r["finished_index"] is not None]
        best = -math.inf
        for n, v in enumerate(values, 1):
            best = max(best, v)
            out.append({"task": task, "model": model, "trials": n, "accuracy": best, "curve": "best so far"})
            out.append({"task": task, "model": model, "trials": n, "accuracy": expected_max(values, n),
                        "curve": "expected best of n"})
    return out


# matplotlib, pandas and seaborn are imported in the figure functions, not at the top: they take seconds
# to import, and the tables (`report_markdown`, which the results test rebuilds) need none of them.


def figures(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], out: Path,
            reference: str = DEFAULT_REFERENCE) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in trial_rows} | {r["model"] for r in confirm_rows},
                    key=lambda m: (m != reference, m))
    made = []
    if protocol_of(trial_rows, confirm_rows) == V2:
        if any(r["finished_index"] is not None and r.get("lr") is not None for r in trial_rows):
            made.append(("lr_sensitivity.png", lr_sensitivity_figure(trial_rows, confirm_rows, models)))
        if confirm_rows:
            made.append(("scores_by_model.png", scores_figure(confirm_rows, models)))
        if any(r["escaped"] is not None for r in confirm_rows):
            made.append(("escape_survival.png", survival_figure(confirm_rows, models)))
    else:
        if confirm_rows:
            made.append(("accuracy_by_model.png", accuracy_figure(confirm_rows, models)))
        if any(r["finished_index"] is not None for r in trial_rows):
            made.append(("optimization_history.png", history_figure(trial_rows, models).figure))
            made.append(("best_so_far.png", best_so_far_figure(trial_rows, models).figure))
    paths = []
    for name, fig in made:
        paths.append(out / name)
        # "tight" grows the saved area to every artist: a title or legend wider than the axes (one
        # task, two models) is not clipped.
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def accuracy_figure(confirm_rows: list[dict[str, Any]], models: list[str]):
    """Confirmed accuracy per task and model: bars with 95 % CIs, the seeds as dots."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame(confirm_rows)
    fig, ax = plt.subplots(figsize=(2.5 + 0.6 * df["task"].nunique() * len(models), 4))
    sns.barplot(data=df, x="task", y="accuracy", hue="model", hue_order=models, errorbar=("ci", 95), seed=0,
                alpha=0.6, ax=ax)
    sns.stripplot(data=df, x="task", y="accuracy", hue="model", hue_order=models, dodge=True, legend=False,
                  size=4, palette={m: "black" for m in models}, ax=ax)
    tasks = [tick.get_text() for tick in ax.get_xticklabels()]
    floors = df.dropna(subset=["floor"]).groupby("task")["floor"].mean() if "floor" in df else {}
    for i, task in enumerate(tasks):
        if task in floors:
            ax.hlines(floors[task], i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1.2,
                      label="best no-solve baseline" if i == 0 else None)
    ax.set(ylim=(0, 1.02), ylabel="held-out score (each task's metric)",
           title="Best config re-trained: mean, 95% CI, seeds; dashed: floor")
    ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def history_figure(trial_rows: list[dict[str, Any]], models: list[str]):
    """Every finished trial's value (by outcome) and the best so far, one panel per (task, model)."""
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame([r for r in trial_rows if r["finished_index"] is not None])
    df["outcome"] = np.where(df["status"] == "diverged", "diverged", df["state"].str.lower())
    df["value"] = df["value"].fillna(0.0)
    df["best so far"] = df.groupby(["task", "model"])["value"].cummax()
    grid = sns.relplot(data=df, x="finished_index", y="value", hue="outcome", col="model", row="task",
                       col_order=[m for m in models if m in set(df["model"])],
                       height=2.6, aspect=1.2, facet_kws={"sharex": False})
    for (task, model), ax in grid.axes_dict.items():  # keys are (row, col) = (task, model)
        part = df[(df["task"] == task) & (df["model"] == model)]
        ax.step(part["finished_index"], part["best so far"], where="post", color="black", lw=1)
    grid.set_axis_labels("finished trial", "held-out score (task's metric)")
    _integer_x_ticks(grid)
    return grid


def best_so_far_figure(trial_rows: list[dict[str, Any]], models: list[str]):
    """Best accuracy after n finished trials and its expectation over orderings, one panel per task."""
    import pandas as pd
    import seaborn as sns

    curves = pd.DataFrame(best_so_far_rows(trial_rows))
    grid = sns.relplot(data=curves, x="trials", y="accuracy", hue="model", style="curve", col="task",
                       hue_order=[m for m in models if m in set(curves["model"])],
                       kind="line", height=3, aspect=1.3, col_wrap=min(3, curves["task"].nunique()))
    grid.set_axis_labels("finished trials", "best held-out score")
    _integer_x_ticks(grid)
    return grid


def _integer_x_ticks(grid) -> None:
    """Trials are counted: no tick at 1.5 trials (matplotlib's default with 2 or 3 trials)."""
    from matplotlib.ticker import MaxNLocator

    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# ----------------------------------------------------------------------------- protocol v2's figures


def _task_floors(confirm_rows: list[dict[str, Any]]) -> dict[str, float]:
    """task -> its floor on the confirm seeds' test rows (the tables' floor row)."""
    known: dict[str, list[float]] = {}
    for r in confirm_rows:
        if r.get("floor") is not None:
            known.setdefault(r["task"], []).append(r["floor"])
    return {task: sum(v) / len(v) for task, v in known.items()}


def lr_sensitivity_figure(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], models: list[str]):
    """Score against learning rate, one panel per (task, model): every finished tuning trial's per-seed
    validation scores (pruned trials hollow, at the step they were pruned; diverged ones as crosses), the
    mean per learning rate, the rule's best learning rate, and the task's floor."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    rows = [r for r in trial_rows if r["finished_index"] is not None and r.get("lr") is not None]
    tasks = sorted({r["task"] for r in rows})
    shown = [m for m in models if any(r["model"] == m for r in rows)]
    colors = dict(zip(shown, sns.color_palette(n_colors=len(shown))))
    floors = _task_floors(confirm_rows)
    fig, axes = plt.subplots(len(tasks), len(shown), figsize=(1.0 + 3.2 * len(shown), 0.6 + 2.8 * len(tasks)),
                             squeeze=False, sharey=True)
    for i, task in enumerate(tasks):
        for j, model in enumerate(shown):
            ax, color = axes[i][j], colors[model]
            mine = sorted((r for r in rows if (r["task"], r["model"]) == (task, model)), key=lambda r: r["lr"])
            for r in mine:
                xs = [r["lr"]] * len(r["validation_scores"])
                if r["status"] == "diverged":
                    ax.scatter(xs, r["validation_scores"], marker="x", color=color, s=22, zorder=3)
                else:
                    ax.scatter(xs, r["validation_scores"], s=22, zorder=3, edgecolors=color, linewidths=1.2,
                               facecolors="none" if r["state"] == "PRUNED" else color)
            means = [(r["lr"], float(np.mean(r["validation_scores"]))) for r in mine if r["validation_scores"]]
            if means:
                ax.plot(*zip(*means), color=color, lw=1.2, zorder=2)
            for r in mine:
                if r["best"]:
                    ax.axvline(r["lr"], color=color, ls=":", lw=1.2)
            if task in floors:
                ax.axhline(floors[task], color="black", ls="--", lw=1)
            ax.set_xscale("log")
            lrs = [r["lr"] for r in mine]
            if lrs and min(lrs) == max(lrs):  # one point tried so far: a decade around it, not a zero-width axis
                ax.set_xlim(lrs[0] / 10 ** 0.5, lrs[0] * 10 ** 0.5)
            ax.set(ylim=(-0.02, 1.02), title=f"{task} · {model}", xlabel="learning rate" if i == len(tasks) - 1 else None)
        axes[i][0].set_ylabel("validation score\n(task's metric)")
    legend = [Line2D([], [], marker="o", ls="", color="grey", label="seed of a finished trial"),
              Line2D([], [], marker="o", ls="", mfc="none", color="grey", label="seed of a pruned trial (when pruned)"),
              Line2D([], [], marker="x", ls="", color="grey", label="seed of a diverged trial"),
              Line2D([], [], color="grey", label="mean over seeds"),
              Line2D([], [], color="grey", ls=":", label="rule's best learning rate"),
              Line2D([], [], color="black", ls="--", label="floor (test rows)")]
    fig.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 0.98))
    fig.suptitle("Learning-rate sensitivity: every learning rate the rule tried, every seed")
    fig.tight_layout()
    return fig


def scores_figure(confirm_rows: list[dict[str, Any]], models: list[str]):
    """Confirmed test scores, one panel per task: every seed as a point, the mean with its 95 % bootstrap
    interval as an error bar (no bars: a bar's height is a mean no bimodal seed is near), the floor dashed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    tasks = sorted({r["task"] for r in confirm_rows})
    floors = _task_floors(confirm_rows)
    shown = [m for m in models if any(r["model"] == m for r in confirm_rows)]
    colors = dict(zip(shown, sns.color_palette(n_colors=len(shown))))
    fig, axes = plt.subplots(1, len(tasks), figsize=(0.8 + (1.0 + 0.9 * len(shown)) * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        present = [m for m in shown if any((r["task"], r["model"]) == (task, m) for r in confirm_rows)]
        for x, model in enumerate(present):
            scores = [r["accuracy"] for r in sorted(confirm_rows, key=lambda r: r["seed"])
                      if (r["task"], r["model"]) == (task, model)]
            # Seeds spread side by side in seed order (deterministic, unlike a random jitter).
            offsets = np.linspace(-0.18, 0.18, len(scores)) if len(scores) > 1 else [0.0]
            ax.scatter(x + np.asarray(offsets), scores, color=colors[model], s=24, zorder=3)
            mean, low, high = bootstrap_ci(scores)
            ax.errorbar([x + 0.3], [mean], yerr=[[mean - low], [high - mean]], fmt="D", color="black", ms=4,
                        capsize=3, zorder=4)
        if task in floors:
            ax.axhline(floors[task], color="black", ls="--", lw=1, label="floor")
        ax.set_xticks(range(len(present)), present, rotation=30, ha="right")
        ax.set(ylim=(-0.02, 1.02), title=task, xlim=(-0.6, len(present) - 0.4))
    axes[0][0].set_ylabel("test score (task's metric)")
    fig.suptitle("Confirm seeds: every seed's test score; ◆ mean with 95% bootstrap CI; dashed: floor")
    fig.tight_layout()
    return fig


def survival_rows(confirm_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Kaplan–Meier curve of each (task, model)'s plateau-escape steps: rows (task, model, step, on_plateau),
    a step function from (0, 1) that drops at each escape step."""
    out = []
    for task, model in sorted({(r["task"], r["model"]) for r in confirm_rows if r.get("escaped") is not None}):
        mine = [r for r in confirm_rows if (r["task"], r["model"]) == (task, model) and r["escaped"] is not None]
        for step, s in kaplan_meier([r["escape_step"] for r in mine], [r["escaped"] for r in mine]):
            out.append({"task": task, "model": model, "step": step, "on_plateau": s})
    return out


def survival_figure(confirm_rows: list[dict[str, Any]], models: list[str]):
    """Per task, each model's Kaplan–Meier curve of the step its confirm seeds leave the plateau (the fraction
    still on it), censored runs as + at their last step."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = [r for r in confirm_rows if r.get("escaped") is not None]
    curves = survival_rows(rows)
    tasks = sorted({r["task"] for r in rows})
    shown = [m for m in models if any(r["model"] == m for r in rows)]
    colors = dict(zip(shown, sns.color_palette(n_colors=len(shown))))
    fig, axes = plt.subplots(1, len(tasks), figsize=(1.5 + 4.0 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for model in shown:
            mine = [r for r in rows if (r["task"], r["model"]) == (task, model)]
            if not mine:
                continue
            points = [(c["step"], c["on_plateau"]) for c in curves if (c["task"], c["model"]) == (task, model)]
            end = max(r["escape_step"] for r in mine)
            steps, levels = zip(*points, (max(end, points[-1][0]), points[-1][1]))
            ax.step(steps, levels, where="post", color=colors[model], lw=1.5,
                    label=f"{model} ({sum(r['escaped'] for r in mine)}/{len(mine)} escaped)")
            for r in mine:
                if not r["escaped"]:
                    level = [s for t, s in points if t <= r["escape_step"]][-1]
                    ax.plot([r["escape_step"]], [level], marker="+", ms=10, color=colors[model])
        threshold = rows[[r["task"] for r in rows].index(task)]["escape_threshold"]
        ax.set(ylim=(-0.02, 1.05), xlabel="training step", title=f"{task}: escape at ≥ {threshold:.3f} (validation)")
        ax.legend(loc="lower left", fontsize="small")
    axes[0][0].set_ylabel("fraction still on the plateau")
    fig.suptitle("Plateau escape over the confirm seeds (Kaplan–Meier; + censored)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- entry


def summary_table(confirm_rows: list[dict[str, Any]], reference: str = DEFAULT_REFERENCE) -> str:
    """Task × model: mean confirmed score [95% bootstrap CI], the best mean of each task in bold; then the
    task's floor (best no-solve baseline on the same held-out sets)."""
    tasks = sorted({r["task"] for r in confirm_rows})
    models = sorted({r["model"] for r in confirm_rows}, key=lambda m: (m != reference, m))
    body = []
    for task in tasks:
        cells, means = [], {}
        for m in models:
            acc = [r["accuracy"] for r in confirm_rows if r["task"] == task and r["model"] == m]
            if acc:
                means[m], low, high = bootstrap_ci(acc)
                cells.append(f"{means[m]:.3f} [{low:.3f}, {high:.3f}]")
            else:
                cells.append("–")
        best = max(means.values(), default=None)
        floor = _floor_cell([r for r in confirm_rows if r["task"] == task])
        body.append([task, *[f"**{c}**" if m in means and means[m] == best else c for m, c in zip(models, cells)],
                     floor])
    return markdown_table(["task", *models, "floor"], body)


def report_markdown(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], prefix: str,
                    reference: str = DEFAULT_REFERENCE) -> str:
    """The Markdown report from the tidy rows alone (so it can be rebuilt from trials/confirm.jsonl): protocol
    v2's (`report_markdown_v2`) where the rows are v2 studies', else protocol v1's."""
    if protocol_of(trial_rows, confirm_rows) == V2:
        return report_markdown_v2(trial_rows, confirm_rows, prefix, reference)
    tasks = sorted({r["task"] for r in trial_rows} | {r["task"] for r in confirm_rows})
    return (f"## Tuning report: `{prefix}`\n\n"
            "Score: each task's metric (token accuracy, or sequence exact match where named), held out, of each "
            "model's best tuning trial re-trained with fresh seeds; diverged seeds count as 0; `@k×L`: the same "
            "runs on held-out sequences k times the training length; floor: the best no-solve baseline "
            "(`testbed tasks audit`) on the same held-out sets — a model at the floor has learned nothing. "
            "p-values: two-sided, Holm-corrected over the comparisons of a task.\n\n"
            "### Summary: mean score [95% bootstrap CI] over the final seeds (best of each task in bold)\n\n"
            + summary_table(confirm_rows, reference) + "\n"
            + "\n".join(task_table(t, trial_rows, confirm_rows, reference) for t in tasks))


def build_report(storage: str | optuna.storages.BaseStorage, prefix: str, out: str | Path,
                 reference: str = DEFAULT_REFERENCE, reference_required: bool = True) -> str:
    """Write report.md, trials.jsonl, confirm.jsonl and the figures to `out`; return the Markdown.

    Raises ValueError (before writing anything) if there is nothing under `prefix`, if its studies mix
    protocols v1 and v2, or if `reference` is not one of the reported models and `reference_required` (the
    user named it). Otherwise a report
    without the reference says so under each task's table, and has no p-values.
    """
    if isinstance(storage, str):
        storage = open_existing_storage(storage)
    trial_rows, confirm_rows = load_rows(storage, prefix)
    if not trial_rows and not confirm_rows:
        raise ValueError(f"no studies named {prefix}/<task>/<model> in the storage; "
                         f"found: {sorted(optuna.get_all_study_names(storage))}")
    models = sorted({r["model"] for r in trial_rows} | {r["model"] for r in confirm_rows})
    if reference_required and reference not in models:
        raise ValueError(f"--reference {reference!r} is not a model of the studies {prefix}/*; "
                         f"models: {', '.join(models)}")
    return write_report(trial_rows, confirm_rows, prefix, out, reference)


def write_report(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], prefix: str, out: str | Path,
                 reference: str = DEFAULT_REFERENCE) -> str:
    """Write report.md, trials.jsonl, confirm.jsonl and the figures of these rows (`load_rows`'s, or a
    selection of them, e.g. the capability study's ablations beside their full model) to `out`; return the
    Markdown. A mix of protocols v1 and v2 is refused (ValueError) before anything is written."""
    protocol_of(trial_rows, confirm_rows)  # a mix of v1 and v2 studies is refused before anything is written
    out = check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    text = report_markdown(trial_rows, confirm_rows, prefix, reference)
    write_atomic(out / "report.md", text)
    write_jsonl(out / "trials.jsonl", trial_rows)
    write_jsonl(out / "confirm.jsonl", confirm_rows)
    figures(trial_rows, confirm_rows, out, reference)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default="sqlite:///runs/tune/studies.db", help="SQLAlchemy URL of the studies")
    parser.add_argument("--study-prefix", default="tune", help="report the studies named PREFIX/TASK/MODEL")
    parser.add_argument("--out", default=None, help="output directory (default: runs/report-<prefix>)")
    parser.add_argument("--reference", default=None,
                        help=f"model every other model is tested against (default: {DEFAULT_REFERENCE}, where it "
                             f"was tuned; a report without it has no p-values and says so)")
    parser.add_argument("--verbose", action="store_true", help="Optuna's INFO log lines (default: warnings only)")


def run(args: argparse.Namespace) -> int:
    set_optuna_verbosity(args.verbose)
    default_out = f"runs/report-{re.sub(r'[^A-Za-z0-9_.-]+', '_', args.study_prefix)}"
    try:
        check_prefix(args.study_prefix)
        out = check_out_dir(default_out if args.out is None else args.out)  # --out '' is refused, not the default
        storage = open_existing_storage(args.storage)
        text = build_report(storage, args.study_prefix, out, args.reference or DEFAULT_REFERENCE,
                            reference_required=args.reference is not None)
    except ValueError as e:
        raise SystemExit(f"testbed report: {e}") from None
    print(text)
    print(f"report: {out / 'report.md'}, figures: {out}/*.png")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.tune.report", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
