"""The tuning report's Markdown from its rows alone (`report_rows`): protocol v1's tables (per task: confirmed
score with its bootstrap interval, Welch and Mann–Whitney p-values against the reference, Holm-corrected)
and protocol v2's (the protocol header, the floor row, per-seed scores, solve rates, exact paired and
Boschloo comparisons, plateau escape); `report_markdown` picks by the rows' protocol (`protocol_of`).
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from studies.floors import metric_label
from studies.stats import (bootstrap_ci, compare, holm, kaplan_meier, logrank, paired_permutation, smallest_paired_p,
                           solve_rate, solve_rate_test, splits)
from studies.tables import human_count, markdown_table
from studies.tune.report_rows import V2

DEFAULT_REFERENCE = "gateloop"  # the model under study: every other model is tested against it


# A study stopped before its confirm runs resumes them when its command is rerun; `testbed tune` confirms only with
# --final-seeds above 0. The capability study always confirms.
_CONFIRM_HINT = ("rerunning the same command re-trains each best configuration on the confirm seeds once its tuning "
                 "is done (`testbed tune`: with --final-seeds above 0).")


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
        notes = [f"No confirm runs for this task (not confirmed yet, or tuned with --final-seeds 0): no confirmed "
                 f"score and no floor; {_CONFIRM_HINT}"]
    budgets = {len([r for r in trials if r["model"] == m and r["finished_index"] is not None]) for m in models}
    if len(budgets) > 1:
        notes.append(f"**Unequal budgets**: finished trials per model differ ({sorted(budgets)}); the comparison "
                     f"is not fair until every study is complete.")
    if reference not in models:
        notes.append(f"No `{reference}` study for this task: no p-values.")
    return f"### {task}\n\n" + markdown_table(header, body) + "\n" + "\n".join(notes) + "\n"


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
        notes.append(f"No confirm runs for this task (not confirmed yet, or tuned with --final-seeds 0): no test "
                     f"scores, no floor and no comparisons; {_CONFIRM_HINT}")
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
