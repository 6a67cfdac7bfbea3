"""The capability study's report, rebuilt from the Optuna storage alone (it trains nothing).

    build_capability_report(storage, study, out)  ->  the Markdown text, also written to out/report.md

Reads the studies that `testbed capability` writes (PREFIX/VARIANT/LABEL and .../confirm for the main
part, PREFIX-sweep/VARIANT/LABEL/SIZE and PREFIX-ablate/VARIANT/ABLATION for the rest) and writes:
- report.md: per task variant, each model's confirmed score on the task's metric (mean and 95 %
  Student-t CI over the confirm seeds), state size, parameters, the best no-solve baseline
  (tasks.shortcuts: its name and score, the floor a model must beat), the median step at which
  held-out task metric first reached the target (and in how many seeds), what the seeds that never
  reached it still gained over the budget's last quarter (plateaued or cut off), the tuned lr, and the
  Holm-corrected Welch p of the first model (gateloop_kv) against each; under each table, whether
  its best model reached the target in every seed (the variant is compared at capability); the
  predictions table, each judged by `RULE` of studies/experiments/capability.py; the sweep and the
  ablation tables; the exact sampler and pruner, as the studies recorded them; what each part cost
  (device-hours from the trials' start and end times, and from the runs' own wall times).
- accuracy_by_model.png: each model's confirmed score per variant (mean, 95 % CI), the floors dashed.
- learning_curves.png: median and range over the confirm seeds of the held-out task metric against the
  step, per variant and model, the floor dashed. A seed that stopped at the target keeps its last value.
- state_size.png: the sweep's accuracy against state size, one line per model, the floor dashed.
- extrapolation.png: state-tracking variants at 1×, 2×, 4×, 8× the training length, the floors dashed.
Missing studies (a run still in progress) are skipped: the report of a partial run shows what is done.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from studies.experiments.capability import FAIL_MARGIN, RULE, Prediction, Study, is_main_size
from studies.atomic_io import write_atomic
from studies.report import FINISHED
from studies.stats import compare, holm, mean_ci
from studies.tables import human_count, markdown_table
from studies.tune import CONFIRM_SEED_OFFSET, as_storage, study_name
from tasks import TASKS, make_task
from tasks.shortcuts import AUDIT_SEEDS, baseline_scores, best_of, held_out_batch


@dataclass(frozen=True)
class Seeds:
    """The confirmed runs of one config: one entry per seed."""

    final: list[dict[int, dict[str, float]]]  # per seed: length -> {"accuracy", "sequence_accuracy"}
    curves: list[list[tuple[int, float]]]  # per seed: (step, held-out score on the task's metric)
    num_parameters: int
    state_size: int
    train_length: int

    def scores(self, metric: str, multiplier: int = 1) -> list[float]:
        """Per seed, the metric at `multiplier` × L. A diverged run has no final metrics: it scores 0, it is
        not dropped; a length a finished run was never evaluated at is an error, not a 0."""
        length = self.train_length * multiplier
        out = []
        for f in self.final:
            if f and length not in f:
                raise ValueError(f"no result at length {length} (evaluated: {sorted(f)})")
            out.append(f[length][metric] if f else 0.0)
        return out


def _load(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def load_seeds(storage: optuna.storages.BaseStorage, name: str, seeds: int | None = None) -> Seeds | None:
    """The earliest COMPLETE trial per seed of the seed study `name` (confirm, sweep or ablation), or None."""
    study = _load(storage, name)
    if study is None:
        return None
    by_seed: dict[int, Any] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        by_seed.setdefault(t.user_attrs.get("seed"), t)
    wanted = sorted(s for s in by_seed if s is not None)
    if seeds is not None:
        wanted = [s for s in wanted if s < CONFIRM_SEED_OFFSET + seeds]
    if not wanted:
        return None
    trials = [by_seed[s] for s in wanted]
    metric = TASKS[trials[0].user_attrs["config"]["task"]["name"]].metric
    return Seeds(
        final=[{int(f["length"]): f for f in t.user_attrs.get("final") or []} for t in trials],
        curves=[[(m["step"], m[metric]) for m in t.user_attrs.get("metrics") or []] for t in trials],
        num_parameters=trials[0].user_attrs["num_parameters"],
        state_size=trials[0].user_attrs["state_size"],
        train_length=trials[0].user_attrs["config"]["task"]["seq_len"],
    )


# ------------------------------------------------------------------------------------------------ floors


def floors(task_name: str, knobs: dict[str, Any], test_size: int, multiplier: int = 1,
           seeds: tuple[int, ...] = AUDIT_SEEDS) -> dict[str, tuple[str, float]]:
    """metric -> (best no-solve baseline, its score) on the very held-out rows the runs of `seeds` are
    scored on at `multiplier` × L: their test sets at L, their `test_at_length` sets beyond; the
    baselines are those of the task posed at that length."""
    task = make_task(task_name, **knobs)
    length = task.seq_len * multiplier
    scores = baseline_scores(task.at_length(length),
                             held_out_batch(task, test_size, seeds, None if multiplier == 1 else length))
    return {metric: best_of(metric, scores) for metric in ("accuracy", "sequence_accuracy")}


def _task_of(study: Study, variant: str) -> tuple[str, dict[str, Any], str]:
    v = study.variant(variant)
    task = make_task(v.task, **dict(v.knobs))
    return v.task, dict(v.knobs), task.metric


# ------------------------------------------------------------------------------------------- predictions


MIN_SEEDS = 2  # a verdict needs an interval on every side it compares


def _ci(values: Sequence[float]) -> tuple[float, float]:
    mean, half = mean_ci(values)
    return mean - half, mean + half


def _ci_of(values) -> tuple[float, float]:
    return _ci(list(values))


def judge(prediction: Prediction, scores: dict[tuple[str, str], list[float]], floor: dict[str, float]) -> tuple[str, str]:
    """(verdict, evidence) of a prediction by `RULE`; `scores` maps (variant, label) to per-seed scores at the
    prediction's length, `floor` maps a variant to its best baseline's score there."""
    evidence, separated, reversed_ = [], True, False
    thin = [f"{label} on {variant}" for variant in prediction.variants
            for label in (*prediction.winners, *prediction.losers)
            if scores.get((variant, label)) is not None and len(scores[(variant, label)]) < MIN_SEEDS]
    if thin:  # one seed has no interval: it can neither confirm nor refute anything
        return "inconclusive", f"fewer than {MIN_SEEDS} seeds for {', '.join(thin)}"
    for variant in prediction.variants:
        if prediction.kind == "fails":
            for label in prediction.winners:
                if not scores.get((variant, label)):
                    return "inconclusive", f"no data for {label} on {variant}"
                low, high = _ci(scores[(variant, label)])
                limit = floor[variant] + FAIL_MARGIN
                separated &= high < limit
                reversed_ |= low > limit
                if low > limit:
                    evidence.append(f"{label} on {variant}: CI [{low:.3f}, {high:.3f}] above {limit:.3f}")
            continue
        for w in prediction.winners:
            for loser in prediction.losers:
                if not scores.get((variant, w)) or not scores.get((variant, loser)):
                    return "inconclusive", f"no data for {w} or {loser} on {variant}"
                wl, wh = _ci(scores[(variant, w)])
                ll, lh = _ci(scores[(variant, loser)])
                separated &= wl > lh
                if ll > wh:
                    reversed_ = True
                    evidence.append(f"{loser} [{ll:.3f}, {lh:.3f}] above {w} [{wl:.3f}, {wh:.3f}] on {variant}")
    if reversed_:
        return "refuted", "; ".join(evidence)
    if separated:
        return "confirmed", "every CI separated as predicted"
    return "inconclusive", "some CIs overlap"


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


def _per_seed(values: Sequence[float]) -> str:
    """The scores seed by seed, in seed order: with 3 seeds a bimodal outcome (some seeds on the plateau,
    some solved) reads as a wide interval, and this says which it is."""
    return ", ".join(f"{v:.3f}" for v in values)


def _tuner_note(storage: optuna.storages.BaseStorage, study: Study) -> str:
    for variant in study.variants:
        for model in study.models:
            tuned = _load(storage, study_name(study.prefix, variant.label, model.label))
            if tuned is not None and "sampler" in tuned.user_attrs:
                a = tuned.user_attrs
                return (f"Sampler: `{a['sampler']}`. Pruner: `{a['pruner']}`. Intermediate values: "
                        f"{a['intermediate_values']}. Seeds per trial: {a['seeds_per_trial']}.")
    return "No tuning study yet."


def _best_lr(storage: optuna.storages.BaseStorage, name: str) -> tuple[str, str]:
    tuned = _load(storage, name)
    if tuned is None:
        return "–", "–"
    trials = tuned.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    best = f"{tuned.best_trial.params['lr']:.3g}" if any(t.state == TrialState.COMPLETE for t in trials) else "–"
    return best, f"{len(finished)} ({pruned} pruned)"


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
    the Markdown."""
    storage = as_storage(storage)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from studies.presets import get_preset

    train = get_preset(study.preset).train
    test_size, target = train["test_size"], train.get("target_accuracy", 1.0)
    # Each main study read once: its tuning (best lr, trials) and its confirm seeds, where it has any.
    tuned = {(v.label, m.label): _best_lr(storage, study_name(study.prefix, v.label, m.label))
             for v in study.variants for m in study.models}
    main: dict[tuple[str, str], Seeds] = {}
    for v in study.variants:
        for m in study.models:
            seeds = load_seeds(storage, study_name(study.prefix, v.label, m.label, confirm=True), study.confirm_seeds)
            if seeds is not None:
                main[(v.label, m.label)] = seeds
    lines = [f"# Capability study `{study.preset}`", "", study.description, "", _tuner_note(storage, study), "",
             *_progress_table(study, tuned, main)]
    floor_cache: dict[tuple[str, int, int], dict[str, tuple[str, float]]] = {}

    def floor_at(variant: str, multiplier: int, runs: int | None = None) -> dict[str, tuple[str, float]]:
        """The floors on the held-out sets of the first `runs` confirm seeds (default: all of them), which
        the sweep's and the ablations' runs share."""
        runs = study.confirm_seeds if runs is None else runs
        if (variant, multiplier, runs) not in floor_cache:
            task, knobs, _ = _task_of(study, variant)
            seeds = tuple(CONFIRM_SEED_OFFSET + i for i in range(runs))
            floor_cache[(variant, multiplier, runs)] = floors(task, knobs, test_size, multiplier, seeds)
        return floor_cache[(variant, multiplier, runs)]

    reference = study.models[0].label
    lines += ["## Main table", "",
              f"p: two-sided Welch t-test of {reference} against the model over the confirm seeds, Holm-corrected "
              f"over the comparisons of the variant.", ""]
    for variant in study.variants:
        _, _, metric = _task_of(study, variant.label)
        rows = []
        for model in study.models:
            seeds = main.get((variant.label, model.label))
            if seeds is None:
                continue
            lr, trials = tuned[(variant.label, model.label)]
            name, score = floor_at(variant.label, 1)[metric]
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
            lines += _length_table(study, variant.label, metric, main, floor_at)

    lines += ["## Pre-registered predictions", "", f"Rule: {RULE}", ""]
    rows = []
    for p in study.predictions:
        scores, floor = {}, {}
        for variant in p.variants:
            _, _, metric = _task_of(study, variant)
            floor[variant] = floor_at(variant, p.multiplier)[metric][1]
            for label in (*p.winners, *p.losers):
                if (variant, label) in main:
                    scores[(variant, label)] = main[(variant, label)].scores(metric, p.multiplier)
        running = [f"{label} on {variant}" for variant in p.variants for label in (*p.winners, *p.losers)
                   if (variant, label) not in main or len(main[(variant, label)].final) < study.confirm_seeds]
        if running:  # a verdict on the seeds so far could flip: none until every compared model has all
            verdict, evidence = "inconclusive", f"confirm runs still to finish for {', '.join(running)}"
        else:
            verdict, evidence = judge(p, scores, floor)
        if p.not_judged:
            evidence = f"{evidence} (registered but not in this study: {p.not_judged})".strip()
        rows.append((p.name, p.kind, ", ".join(p.variants), ", ".join(p.winners), ", ".join(p.losers) or "–",
                     f"{p.multiplier}×", f"**{verdict}**", evidence))
    lines.append(markdown_table(("prediction", "kind", "variants", "winners (or: fail)", "losers", "length", "verdict",
                                 "evidence"), rows))

    sweep_rows = _sweep_rows(storage, study)
    if sweep_rows:
        metric = _task_of(study, study.sweep_variant)[2]
        name, score = floor_at(study.sweep_variant, 1, study.sweep_seeds)[metric]
        lines += [f"## State-size sweep ({study.sweep_variant})", "",
                  markdown_table(("model", "size", "state", "params", f"{metric}, mean ± 95% CI", "seeds", "per seed"),
                                 [*[(r["label"], r["size"], human_count(r["state"]), human_count(r["params"]),
                                     _fmt(r["scores"]), len(r["scores"]), _per_seed(r["scores"])) for r in sweep_rows],
                                  ("best no-solve baseline", "–", "–", "–", f"{name} {score:.3f}", "–", "–")])]
    ablation_lines = _ablation_tables(storage, study, floor_at)
    if ablation_lines:
        lines += ["## Ablations", "", *ablation_lines]

    lines += _cost_lines(storage, study)
    figures = _figures(study, main, sweep_rows, floor_at, out)
    lines += ["## Figures", "", *[f"![{p.stem}]({p.name})" for p in figures], ""]
    text = "\n".join(lines)
    write_atomic(out / "report.md", text)
    return text


def _length_table(study: Study, variant: str, metric: str, main: dict[tuple[str, str], Seeds], floor_at) -> list[str]:
    """For a variant evaluated beyond its training length: the metric at every evaluated length (mean ±
    95% CI over the confirm seeds), the best no-solve baseline at each length as the last row."""
    multipliers = get_multipliers(study, _task_of(study, variant)[0])  # the lengths beyond 1×
    if not multipliers:
        return []
    rows = [[m.label, *(_fmt(main[(variant, m.label)].scores(metric, k)) for k in multipliers)]
            for m in study.models if (variant, m.label) in main]
    floor_cells = []
    for k in multipliers:
        name, score = floor_at(variant, k)[metric]
        floor_cells.append(f"{name} {score:.3f}")
    rows.append(["best no-solve baseline", *floor_cells])
    return [f"{variant} beyond the training length ({metric}, mean ± 95% CI over the confirm seeds):", "",
            markdown_table(("model", *(f"{k}×" for k in multipliers)), rows)]


def _sweep_rows(storage: optuna.storages.BaseStorage, study: Study) -> list[dict[str, Any]]:
    """One row per sweep point with runs: a main-size point is read from the first `sweep_seeds` main
    confirm seeds (the same configs and seeds), the others from their own sweep studies."""
    variant = study.sweep_variant
    _, _, metric = _task_of(study, variant)
    rows = []
    for point in study.sweep:
        name = (study_name(study.prefix, variant, point.label, confirm=True)
                if is_main_size(study.model(point.label), point)
                else f"{study.prefix}-sweep/{variant}/{point.label}/{point.size}")
        seeds = load_seeds(storage, name, study.sweep_seeds)
        if seeds is not None:
            rows.append({"label": point.label, "size": point.size, "state": seeds.state_size,
                         "params": seeds.num_parameters, "scores": seeds.scores(metric)})
    return rows


def _ablation_tables(storage: optuna.storages.BaseStorage, study: Study,
                     floor_at: Callable[..., dict[str, tuple[str, float]]]) -> list[str]:
    from studies.experiments.capability import ablation_plan

    lines = []
    for variant in study.ablation_variants:
        task, _, metric = _task_of(study, variant)
        multipliers = get_multipliers(study, task)  # the lengths beyond 1× it is evaluated at, if any
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
            rows.append([label, _fmt(scores), len(scores), _per_seed(scores), human_count(seeds.num_parameters),
                         human_count(seeds.state_size), *(_fmt(seeds.scores(metric, k)) for k in multipliers), scores])
        if rows:
            for row in rows:
                row[-1] = "–" if full is None else f"{np.mean(row[-1]) - np.mean(full):+.3f}"
            floors_beyond = []
            for k in multipliers:
                name, score = floor_at(variant, k, study.ablation_seeds)[metric]
                floors_beyond.append(f"{name} {score:.3f}")
            name, score = floor_at(variant, 1, study.ablation_seeds)[metric]
            rows.append(["best no-solve baseline", f"{name} {score:.3f}", "–", "–", "–", "–", *floors_beyond, "–"])
            lines += [f"### {variant} ({metric}, at the full model's tuned lr)", "",
                      markdown_table(("ablation", "mean ± 95% CI", "seeds", "per seed", "params", "state",
                                      *(f"{k}×" for k in multipliers), "Δ vs full (1×)"), rows)]
    return lines


def _part_of(study: Study, name: str) -> str | None:
    """The part of the study a storage's study belongs to: "main: VARIANT", "sweep" or "ablations: VARIANT";
    None for another study's (one storage may hold several)."""
    head, _, rest = name.partition("/")
    variant = rest.split("/")[0]
    if head == study.prefix:
        return f"main: {variant}"
    if head == f"{study.prefix}-sweep":
        return "sweep"
    if head == f"{study.prefix}-ablate":
        return f"ablations: {variant}"
    return None


def _cost_lines(storage: optuna.storages.BaseStorage, study: Study) -> list[str]:
    """Per part, the finished trials and what they took: the sum over COMPLETE and PRUNED trials of end −
    start (device-hours: a trial is one process on one core, so two workers spend two an hour) and of the
    runs' own `wall_time`; failed trials (a run killed at a stop, retrained on resume) are counted, not
    timed: their end is when the resume marked them."""
    parts: dict[str, dict[str, Any]] = {}
    for summary in storage.get_all_studies():
        part = _part_of(study, summary.study_name)
        if part is None:
            continue
        row = parts.setdefault(part, {"trials": 0, "failed": 0, "span": 0.0, "wall": 0.0, "first": None, "last": None})
        for t in storage.get_all_trials(storage.get_study_id_from_name(summary.study_name), deepcopy=False):
            if t.state == TrialState.FAIL:
                row["failed"] += 1
            if t.state not in FINISHED or t.datetime_start is None or t.datetime_complete is None:
                continue
            row["trials"] += 1
            row["span"] += (t.datetime_complete - t.datetime_start).total_seconds()
            row["wall"] += t.user_attrs.get("wall_time", 0.0)
            row["first"] = min(filter(None, (row["first"], t.datetime_start)))
            row["last"] = max(filter(None, (row["last"], t.datetime_complete)))
    order = [f"main: {v.label}" for v in study.variants] + ["sweep"] + [f"ablations: {v}" for v in study.ablation_variants]
    rows = [(part, r["trials"], r["failed"], f"{r['span'] / 3600:.1f}", f"{r['wall'] / 3600:.1f}",
             f"{r['first']:%Y-%m-%d %H:%M}", f"{r['last']:%Y-%m-%d %H:%M}")
            for part in order if (r := parts.get(part)) and r["trials"]]
    if not rows:
        return []
    span = sum(r["span"] for r in parts.values()) / 3600
    wall = sum(r["wall"] for r in parts.values()) / 3600
    rows.append(("all", sum(r["trials"] for r in parts.values()), sum(r["failed"] for r in parts.values()),
                 f"{span:.1f}", f"{wall:.1f}", "–", "–"))
    return ["## Cost", "",
            "Device-hours: one run is one process on one core, so two workers spend two device-hours an hour. "
            "'trial times' sums each finished (complete or pruned) trial's end − start, which includes any pause "
            "of the study (SIGSTOP) while it ran; 'run wall times' sums the runs' own measured wall time (a trial "
            "of 2 seeds is 2 runs). Failed trials (runs lost at a stop and retrained on resume) are counted, not "
            "timed. First and last are the parts' first trial start and last trial end (UTC).", "",
            markdown_table(("part", "finished trials", "failed trials", "device-hours (trial times)",
                            "device-hours (run wall times)", "first start", "last end"), rows)]


def _figures(study: Study, main: dict[tuple[str, str], Seeds], sweep_rows: list[dict[str, Any]], floor_at,
             out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import pandas as pd
    import seaborn as sns

    paths = []
    order = [m.label for m in study.models]
    variants = [v.label for v in study.variants if any(k[0] == v.label for k in main)]
    if variants:
        df = pd.DataFrame([{"variant": variant, "model": label, "score": s}
                           for (variant, label), seeds in main.items()
                           for s in seeds.scores(_task_of(study, variant)[2])])
        hue = [m for m in order if m in set(df["model"])]
        fig, ax = plt.subplots(figsize=(max(8.0, 2.5 + 0.35 * len(variants) * len(hue)), 4.2))
        sns.barplot(data=df, x="variant", y="score", hue="model", order=variants, hue_order=hue,
                    errorbar=_ci_of, alpha=0.7, ax=ax)
        for i, variant in enumerate(variants):
            floor = floor_at(variant, 1)[_task_of(study, variant)[2]][1]
            ax.hlines(floor, i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1)
        ax.set(ylim=(0, 1.02), xlabel="", ylabel="task metric (accuracy or exact match)",
               title="Confirmed score: mean and 95% Student-t CI over seeds (as in the tables); dashed: best no-solve baseline")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        paths.append(out / "accuracy_by_model.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

        rows = []
        for (variant, label), seeds in main.items():
            steps = sorted({s for c in seeds.curves for s, _ in c})
            for i, curve in enumerate(seeds.curves):
                values, last = dict(curve), 0.0
                for step in steps:  # a seed that stopped at its target keeps its last value
                    last = values.get(step, last)
                    rows.append({"variant": variant, "model": label, "seed": i, "step": step, "accuracy": last})
        df = pd.DataFrame(rows)
        cols = min(3, len(variants))
        grid = sns.relplot(data=df, x="step", y="accuracy", hue="model", col="variant", col_order=variants,
                           hue_order=[m for m in order if m in set(df["model"])], kind="line", estimator="median",
                           errorbar=("pi", 100), col_wrap=cols, height=2.8, aspect=1.3, facet_kws={"sharex": False})
        for variant, ax in grid.axes_dict.items():
            ax.axhline(floor_at(variant, 1)[_task_of(study, variant)[2]][1], ls="--", color="black", lw=1)
            ax.set_ylim(0, 1.02)
        grid.set_axis_labels("step", "held-out score (task's metric)")
        grid.figure.suptitle("Learning curves: median and range over confirm seeds; dashed: best no-solve baseline",
                             y=1.02)
        paths.append(out / "learning_curves.png")
        grid.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(grid.figure)

    if sweep_rows:
        variant = study.sweep_variant
        _, _, metric = _task_of(study, variant)
        df = pd.DataFrame([{"model": r["label"], "state size": r["state"], metric: s} for r in sweep_rows
                           for s in r["scores"]])
        fig, ax = plt.subplots(figsize=(7, 4.2))
        sns.lineplot(data=df, x="state size", y=metric, hue="model", hue_order=[m for m in order if m in set(df["model"])],
                     marker="o", errorbar=_ci_of, ax=ax)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on a short axis
        ax.axhline(floor_at(variant, 1, study.sweep_seeds)[metric][1], ls="--", color="black", lw=1,
                   label="best no-solve baseline")
        ax.set(ylim=(0, 1.02), xlabel="decoding state (real scalars)", title=f"{variant}: accuracy vs state size")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        paths.append(out / "state_size.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

    tracked = [v for v in variants if study.variant(v).task == "state_tracking"]
    if tracked:
        rows = []
        multipliers = (1, *get_multipliers(study, "state_tracking"))
        for variant in tracked:
            _, _, metric = _task_of(study, variant)
            for label in order:
                seeds = main.get((variant, label))
                if seeds is None:
                    continue
                for m in multipliers:
                    rows += [{"variant": variant, "model": label, "× training length": m, "accuracy": s}
                             for s in seeds.scores(metric, m)]
        df = pd.DataFrame(rows)
        grid = sns.relplot(data=df, x="× training length", y="accuracy", hue="model", col="variant",
                           col_order=tracked, hue_order=[m for m in order if m in set(df["model"])], kind="line",
                           marker="o", errorbar=_ci_of, col_wrap=min(4, len(tracked)), height=2.8)
        for variant, ax in grid.axes_dict.items():
            _, _, metric = _task_of(study, variant)
            ax.plot(multipliers, [floor_at(variant, m)[metric][1] for m in multipliers], ls="--", color="black", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xticks(multipliers, [f"{m}×" for m in multipliers])
            ax.set_ylim(0, 1.02)
        grid.figure.suptitle("State tracking beyond the training length: mean, 95% CI; dashed: best no-solve "
                             "baseline", y=1.03)
        paths.append(out / "extrapolation.png")
        grid.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(grid.figure)
    return paths


def get_multipliers(study: Study, task: str) -> tuple[int, ...]:
    from studies.presets import get_preset

    return get_preset(study.preset).multipliers(task)
