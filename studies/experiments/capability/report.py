"""The capability study's report, rebuilt from the Optuna storage alone (it trains nothing).

    build_capability_report(storage, study, out)  ->  the Markdown text, also written to out/report.md

Reads the studies that `testbed capability` writes (PREFIX/VARIANT/LABEL and .../confirm for the main
part, PREFIX-sweep/VARIANT/LABEL/SIZE and PREFIX-ablate/VARIANT/ABLATION for the rest) and writes
report.md: per task variant, each model's confirmed score on the task's metric (mean and 95 %
Student-t CI over the confirm seeds), state size, parameters, the best no-solve baseline
(tasks.shortcuts: its name and score, the floor a model must beat), the median step at which
held-out task metric first reached the target (and in how many seeds), what the seeds that never
reached it still gained over the budget's last quarter (plateaued or cut off), the tuned lr, and the
Holm-corrected Welch p of the first model (gateloop_kv) against each; under each table, whether
its best model reached the target in every seed (the variant is compared at capability); the
predictions table, each judged by `RULE` (design.py); the sweep and the ablation tables; the exact
sampler and pruner, as the studies recorded them; what each part cost (device-hours from the trials'
start and end times, and from the runs' own wall times); and the figures (figures.py).
Missing studies (a run still in progress) are skipped: the report of a partial run shows what is done.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from studies.atomic_io import write_atomic
from studies.experiments.capability.design import RULE, TaskVariant, judge
from studies.experiments.capability.figures import write_figures
from studies.experiments.capability.parts import cost_lines, per_seed, sweep_rows
from studies.experiments.capability.plan import ablation_plan
from studies.experiments.capability.report_v2 import build_capability_report_v2
from studies.experiments.capability.seeds import Seeds, floor, load_seeds
from studies.experiments.capability.study import Study
from studies.presets import get_preset
from studies.stats import compare, holm, mean_ci
from studies.tables import human_count, markdown_table
from studies.tune.budget import COUNTED
from studies.tune.queries import best_lr, find_study
from studies.tune.storage import as_storage, study_name


# ------------------------------------------------------------------------------------------------ tables


def _steps_to_target(curves: list[list[tuple[int, float]]], target: float) -> str:
    reached = [next((step for step, acc in c if acc >= target), None) for c in curves]
    hits = [s for s in reached if s is not None]
    if not hits:
        return f"never (0/{len(curves)})"
    return f"{int(np.median(hits))} ({len(hits)}/{len(curves)})"


def _late_gain(curves: list[list[tuple[int, float]]], target: float, steps: int) -> str:
    """How much the seeds that never reached `target` still gained over the last quarter of the budget
    (the median over them of the held-out score at the end minus at 3/4 of `steps`, with their count):
    near 0 they had plateaued, clearly positive they were cut off while learning. "–": every seed
    reached the target (or none has a curve)."""
    gains = []
    for curve in curves:
        if not curve or any(score >= target for _, score in curve) or curve[-1][0] <= 0.75 * steps:
            continue  # reached the target, or stopped before the last quarter (no gain to read)
        before = [score for step, score in curve if step <= 0.75 * steps]
        if before:
            gains.append(curve[-1][1] - before[-1])
    return f"{np.median(gains):+.3f} ({len(gains)})" if gains else "–"


def capability_line(label: str, scores: Sequence[float], target: float) -> str:
    """Whether a variant was compared at capability: its best model (by mean) reached `target` in every
    confirm seed. If not, its gaps are gaps at this step budget."""
    verdict = ("every seed reached it: the variant is compared at capability" if min(scores) >= target else
               "not every seed reached it: the variant is not at capability, its gaps are gaps at this budget")
    return (f"Best model: {label}, mean {np.mean(scores):.3f}, lowest seed {min(scores):.3f} (target "
            f"{target:.2f}); {verdict}.")


def _fmt(values: Sequence[float]) -> str:
    mean, half = mean_ci(values)
    return f"{mean:.3f} ± {half:.3f}" if len(values) > 1 else f"{mean:.3f}"


def _tuner_note(storage: optuna.storages.BaseStorage, study: Study) -> str:
    for variant in study.variants:
        for model in study.models:
            tuned = find_study(storage, study_name(study.prefix, variant.label, model.label))
            if tuned is not None and "sampler" in tuned.user_attrs:
                a = tuned.user_attrs
                return (f"Sampler: `{a['sampler']}`. Pruner: `{a['pruner']}`. Intermediate values: "
                        f"{a['intermediate_values']}. Seeds per trial: {a['seeds_per_trial']}.")
    return "No tuning study yet."


def _tuning_summary(storage: optuna.storages.BaseStorage, name: str) -> tuple[str, str]:
    """(best lr so far, "finished (pruned)") of the tuning study `name`, "–" for what it does not have yet."""
    tuned = find_study(storage, name)
    if tuned is None:
        return "–", "–"
    trials = tuned.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in COUNTED]
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    lr = best_lr(tuned)
    return "–" if lr is None else f"{lr:.3g}", f"{len(finished)} ({pruned} pruned)"


def _progress_table(study: Study, tuned: dict[tuple[str, str], tuple[str, str]],
                    main: dict[tuple[str, str], Seeds]) -> list[str]:
    """Per variant and model of the main part: finished tuning trials of the grid, the best lr so far,
    and confirm seeds done — what a study that spans sessions has finished (the storage's state)."""
    rows = []
    for variant in study.variants:
        for model in study.models:
            lr, trials = tuned[(variant.label, model.label)]
            confirmed = main.get((variant.label, model.label))
            seeds = 0 if confirmed is None else len(confirmed.final)
            if trials != "–" or seeds:
                rows.append((variant.label, model.label, f"{trials} of {len(study.lr_grid)}", lr,
                             f"{seeds} of {study.confirm_seeds}"))
    if not rows:
        return []
    return ["## Progress (main part)", "",
            markdown_table(("variant", "model", "tuning trials finished", "best lr so far", "confirm seeds done"),
                           rows)]


def build_capability_report(storage: str | optuna.storages.BaseStorage, study: Study, out: str | Path) -> str:
    """Tables and figures of `study` from `storage` (a URL or an opened storage), written to `out`; returns
    the Markdown. A protocol v2 study gets report_v2.py's report."""
    if study.protocol == "v2":

        return build_capability_report_v2(storage, study, out)
    storage = as_storage(storage)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = get_preset(study.preset).train
    target = train.get("target_accuracy", 1.0)
    # Each main study read once: its tuning (best lr, trials) and its confirm seeds, where it has any.
    tuned = {(v.label, m.label): _tuning_summary(storage, study_name(study.prefix, v.label, m.label))
             for v in study.variants for m in study.models}
    main: dict[tuple[str, str], Seeds] = {}
    for v in study.variants:
        for m in study.models:
            seeds = load_seeds(storage, study_name(study.prefix, v.label, m.label, confirm=True), study.confirm_seeds)
            if seeds is not None:
                main[(v.label, m.label)] = seeds
    lines = [f"# Capability study `{study.preset}`", "", study.description, "", _tuner_note(storage, study), "",
             *_progress_table(study, tuned, main)]

    reference = study.models[0].label
    lines += ["## Main table", "",
              f"p: two-sided Welch t-test of {reference} against the model over the confirm seeds, Holm-corrected "
              f"over the comparisons of the variant.", ""]
    for variant in study.variants:
        metric = variant.metric
        rows = []
        for model in study.models:
            seeds = main.get((variant.label, model.label))
            if seeds is None:
                continue
            lr, trials = tuned[(variant.label, model.label)]
            name, score = floor(study, variant.label)
            rows.append([model.label, model.family, _fmt(seeds.scores(metric)), len(seeds.final),
                         human_count(seeds.state_size), human_count(seeds.num_parameters), f"{name} {score:.3f}",
                         _steps_to_target(seeds.curves, target), _late_gain(seeds.curves, target, variant.steps),
                         lr, trials])
        if rows:
            ref = main.get((variant.label, reference))
            others = [row for row in rows if row[0] != reference]
            raw = [compare(ref.scores(metric), main[(variant.label, row[0])].scores(metric))[0] if ref else math.nan
                   for row in others]
            for row, p in zip(others, holm(raw)):
                row.append("–" if math.isnan(p) else f"{p:.2g}")
            for row in rows:
                if row[0] == reference:
                    row.append("(reference)")
            lines += [f"### {variant.label} ({variant.task}; {variant.note}; {variant.steps} steps; metric: {metric})", "",
                      markdown_table(("model", "family", f"{metric}, mean ± 95% CI", "seeds", "state", "params",
                                      "best no-solve baseline", f"steps to {target:.2f} (seeds)",
                                      "last-¼ gain (seeds below target)", "tuned lr", "trials (pruned)",
                                      f"p vs {reference}"), rows)]
            done = sum(len(main[(variant.label, m.label)].final) for m in study.models if (variant.label, m.label) in main)
            if done < len(study.models) * study.confirm_seeds:  # the best so far may not be the best
                lines += [f"Capability not judged yet: {done} of {len(study.models) * study.confirm_seeds} confirm "
                          f"runs done.", ""]
            else:
                best = max(rows, key=lambda row: np.mean(main[(variant.label, row[0])].scores(metric)))[0]
                lines += [capability_line(best, main[(variant.label, best)].scores(metric), target), ""]
            lines += _length_table(study, variant, main)

    lines += ["## Pre-registered predictions", "", f"Rule: {RULE}", ""]
    rows = []
    for p in study.predictions:
        scores, floors = {}, {}
        for variant in p.variants:
            metric = study.variant(variant).metric
            floors[variant] = floor(study, variant, p.multiplier)[1]
            for label in (*p.winners, *p.losers):
                if (variant, label) in main:
                    scores[(variant, label)] = main[(variant, label)].scores(metric, p.multiplier)
        running = [f"{label} on {variant}" for variant in p.variants for label in (*p.winners, *p.losers)
                   if (variant, label) not in main or len(main[(variant, label)].final) < study.confirm_seeds]
        if running:  # a verdict on the seeds so far could flip: none until every compared model has all
            verdict, evidence = "inconclusive", f"confirm runs still to finish for {', '.join(running)}"
        else:
            verdict, evidence = judge(p, scores, floors)
        if p.not_judged:
            evidence = f"{evidence} (registered but not in this study: {p.not_judged})".strip()
        rows.append((p.name, p.kind, ", ".join(p.variants), ", ".join(p.winners), ", ".join(p.losers) or "–",
                     f"{p.multiplier}×", f"**{verdict}**", evidence))
    lines.append(markdown_table(("prediction", "kind", "variants", "winners (or: fail)", "losers", "length", "verdict",
                                 "evidence"), rows))

    sweep = sweep_rows(storage, study)
    if sweep:
        metric = study.variant(study.sweep_variant).metric
        name, score = floor(study, study.sweep_variant, 1, study.sweep_seeds)
        lines += [f"## State-size sweep ({study.sweep_variant})", "",
                  markdown_table(("model", "size", "state", "params", f"{metric}, mean ± 95% CI", "seeds", "per seed"),
                                 [*[(r["label"], r["size"], human_count(r["state"]), human_count(r["params"]),
                                     _fmt(r["scores"]), len(r["scores"]), per_seed(r["scores"])) for r in sweep],
                                  ("best no-solve baseline", "–", "–", "–", f"{name} {score:.3f}", "–", "–")])]
    ablation_lines = _ablation_tables(storage, study)
    if ablation_lines:
        lines += ["## Ablations", "", *ablation_lines]

    lines += cost_lines(storage, study)
    figures = write_figures(study, main, sweep, out)
    lines += ["## Figures", "", *[f"![{p.stem}]({p.name})" for p in figures], ""]
    text = "\n".join(lines)
    write_atomic(out / "report.md", text)
    return text


def _length_table(study: Study, variant: TaskVariant, main: dict[tuple[str, str], Seeds]) -> list[str]:
    """For a variant evaluated beyond its training length: the metric at every evaluated length (mean ±
    95% CI over the confirm seeds), the best no-solve baseline at each length as the last row."""
    multipliers = get_preset(study.preset).multipliers(variant.task)  # the lengths beyond 1×
    if not multipliers:
        return []
    metric = variant.metric
    rows = [[m.label, *(_fmt(main[(variant.label, m.label)].scores(metric, k)) for k in multipliers)]
            for m in study.models if (variant.label, m.label) in main]
    floor_cells = []
    for k in multipliers:
        name, score = floor(study, variant.label, k)
        floor_cells.append(f"{name} {score:.3f}")
    rows.append(["best no-solve baseline", *floor_cells])
    return [f"{variant.label} beyond the training length ({metric}, mean ± 95% CI over the confirm seeds):", "",
            markdown_table(("model", *(f"{k}×" for k in multipliers)), rows)]


def _ablation_tables(storage: optuna.storages.BaseStorage, study: Study) -> list[str]:
    lines = []
    for variant in study.ablation_variants:
        task, metric = study.variant(variant).task, study.variant(variant).metric
        multipliers = get_preset(study.preset).multipliers(task)  # the lengths beyond 1× it is evaluated at, if any
        rows, full = [], None
        # "full" is the base model's main confirm study (the same config and seeds: see ablation_plan)
        named = [(f"full ({study.ablation_base}, main confirm seeds)",
                  study_name(study.prefix, variant, study.ablation_base, confirm=True), True)]
        named += [(item.label, f"{study.prefix}-ablate/{variant}/{item.label}", False) for item in ablation_plan(study)
                  if item.variant == variant]
        for label, name, is_full in named:
            seeds = load_seeds(storage, name, study.ablation_seeds)
            if seeds is None:
                continue
            scores = seeds.scores(metric)
            if is_full:
                full = scores
            rows.append([label, _fmt(scores), len(scores), per_seed(scores), human_count(seeds.num_parameters),
                         human_count(seeds.state_size), *(_fmt(seeds.scores(metric, k)) for k in multipliers), scores])
        if rows:
            for row in rows:
                row[-1] = "–" if full is None else f"{np.mean(row[-1]) - np.mean(full):+.3f}"
            floors_beyond = []
            for k in multipliers:
                name, score = floor(study, variant, k, study.ablation_seeds)
                floors_beyond.append(f"{name} {score:.3f}")
            name, score = floor(study, variant, 1, study.ablation_seeds)
            rows.append(["best no-solve baseline", f"{name} {score:.3f}", "–", "–", "–", "–", *floors_beyond, "–"])
            lines += [f"### {variant} ({metric}, at the full model's tuned lr)", "",
                      markdown_table(("ablation", "mean ± 95% CI", "seeds", "per seed", "params", "state",
                                      *(f"{k}×" for k in multipliers), "Δ vs full (1×)"), rows)]
    return lines
