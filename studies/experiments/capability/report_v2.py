"""The capability study's report under protocol v2, rebuilt from the Optuna storage alone (it trains nothing).

    build_capability_report_v2(storage, study, out)  ->  the Markdown text, also written to out/report.md

`build_capability_report` (report.py) calls it for a study with `protocol="v2"`. out/report.md holds:
- the study's description and what each variant declares (steps, escape window, confirm seeds, early stop);
- at a glance (what the README quotes): per model and per length a prediction reads, the confirm seeds
  solved and their mean test score, state, parameters and the floor; out/headline.png draws every seed;
- the pre-registered predictions, each judged by `RULE_V2` (design.py: solve rates with exact intervals
  and Boschloo's test where seeds split, the exact paired sign-flip test otherwise, one-sided in the
  registered direction) on the confirm seeds' test scores;
- the main part: studies.tune.report's v2 report of the studies PREFIX/VARIANT/LABEL (the protocol as the
  studies stored it, per-seed test scores, bootstrap intervals, solve rates, paired exact tests with Holm,
  plateau escape, the rule's learning rate marked where it sits at a bound); its rows and figures
  (lr_sensitivity, scores_by_model, escape_survival) in out/main/;
- the ablations, tuned like models: the same report of PREFIX-ablate/VARIANT/BASE@ABLATION beside the base
  model's main studies (the full model, their reference), rows and figures in out/ablations/;
- the state-size sweep (per seed, bootstrap interval, solve rate) and what each part cost.
Missing studies (a run in progress) are skipped: a partial run's report shows what is done.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from studies.atomic_io import write_atomic
from studies.experiments.capability.design import RULE_V2, judge_v2
from studies.experiments.capability.figures import headline_figure
from studies.experiments.capability.plan import variant_table
from studies.experiments.capability.parts import cost_lines, per_seed, sweep_rows
from studies.experiments.capability.seeds import floor
from studies.experiments.capability.study import Study
from studies.stats import bootstrap_ci, solve_rate
from studies.tables import human_count, markdown_table
from studies.tune.report import write_report
from studies.tune.report_rows import SOLVE_TARGET, load_rows
from studies.tune.storage import as_storage

Rows = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def _rows(storage: optuna.storages.BaseStorage, prefix: str, variants: set[str], labels: set[str] | None = None) -> Rows:
    """The tune report's rows of the studies PREFIX/VARIANT/LABEL of this study's variants (and labels)."""
    trials, confirms = load_rows(storage, prefix)
    def keep(r: dict[str, Any]) -> bool:
        return r["task"] in variants and (labels is None or r["model"] in labels)

    return [r for r in trials if keep(r)], [r for r in confirms if keep(r)]


def _demoted(markdown: str) -> str:
    """The tune report's headings one level down, to sit under a section of this report."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def _figure_links(out: Path, part: str) -> list[str]:
    return [f"![{p.stem}]({part}/{p.name})" for p in sorted((out / part).glob("*.png"))]


def prediction_scores(confirm_rows: list[dict[str, Any]], variant: str, label: str, multiplier: int) -> dict[int, float]:
    """seed -> the test score at `multiplier` × the training length of one model's confirm seeds on `variant`."""
    return {r["seed"]: r["by_length"][str(multiplier * r["train_length"])] for r in confirm_rows
            if (r["task"], r["model"]) == (variant, label) and str(multiplier * r["train_length"]) in r["by_length"]}


def _floor_at(confirm_rows: list[dict[str, Any]], variant: str, multiplier: int) -> float | None:
    """The variant's floor at `multiplier` × L on its confirm seeds' test rows (the tables' floor row)."""
    for r in confirm_rows:
        if r["task"] == variant and r.get("floor") is not None:
            return r["floor"] if multiplier == 1 else r["floor_by_length"].get(str(multiplier * r["train_length"]))
    return None


def headline_columns(study: Study) -> list[tuple[str, int]]:
    """(variant, multiplier) of every length a registered prediction reads, in the study's variant order
    (the training length, 1×, for a variant no prediction reads)."""
    return [(v.label, k) for v in study.variants
            for k in sorted({p.multiplier for p in study.predictions if v.label in p.variants}) or [1]]


def headline_rows(study: Study, confirm_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (column of `headline_columns`, model, confirm seed): its test score at that length, the
    variant's floor there and its solve target; what the headline table and figure read."""
    out = []
    for variant, k in headline_columns(study):
        floor_at = _floor_at(confirm_rows, variant, k)
        target = next((r["target"] for r in confirm_rows if r["task"] == variant), SOLVE_TARGET)
        for m in study.models_for(variant):
            for seed, score in sorted(prediction_scores(confirm_rows, variant, m.label, k).items()):
                out.append({"column": f"{variant} @{k}×L", "model": m.label, "seed": seed, "score": score,
                            "floor": floor_at, "target": target})
    return out


def _span(values: set[int]) -> str:
    """'47.2k' for one value, '46.9k–48.1k' for several (vocabularies differ between tasks)."""
    return "–" if not values else "–".join(dict.fromkeys(human_count(v) for v in (min(values), max(values))))


def capability_lines(study: Study, confirm_rows: list[dict[str, Any]]) -> list[str]:
    """Per variant, once every model it runs has all its confirm seeds: whether its best model (by mean test
    score at the training length) reached the solve target in every seed, i.e. whether the variant is
    compared at capability (a gap below capability is a gap at this step budget)."""
    out = []
    for v in study.variants:
        rows = [r for r in confirm_rows if r["task"] == v.label]
        scores = {m.label: [r["accuracy"] for r in rows if r["model"] == m.label] for m in study.models_for(v.label)}
        if not rows or any(len(s) < study.confirm_seeds_for(v.label) for s in scores.values()):
            out.append(f"- {v.label}: not judged yet ({len(rows)} of "
                       f"{len(scores) * study.confirm_seeds_for(v.label)} confirm seeds in)")
            continue
        target = rows[0]["target"]
        best = max(scores, key=lambda m: sum(scores[m]) / len(scores[m]))
        low = min(scores[best])
        out.append(f"- {v.label}: best {best}, mean {sum(scores[best]) / len(scores[best]):.3f}, lowest seed "
                   f"{low:.3f}: " + ("every seed reached " if low >= target else "**not** every seed reached ")
                   + f"{target:g}" + ("" if low >= target else ": its gaps are gaps at this step budget"))
    return ["Capability (the best model at the training length reaches the solve target in every confirm seed):",
            "", *out, ""]


def headline_lines(study: Study, trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]],
                   rows: list[dict[str, Any]]) -> list[str]:
    """The study at a glance from its `headline_rows`: per model and per length a prediction reads, the confirm
    seeds solved and their mean test score, the floor beneath; the README quotes it."""
    lengths = headline_columns(study)
    columns = [f"{variant} @{k}×L" for variant, k in lengths]
    body = []
    for m in study.models:
        sized = [r for r in (*trial_rows, *confirm_rows) if r["model"] == m.label]
        cells = []
        for column, (variant, _) in zip(columns, lengths):
            scores = [r["score"] for r in rows if (r["column"], r["model"]) == (column, m.label)]
            target = next((r["target"] for r in rows if r["column"] == column), SOLVE_TARGET)
            if m not in study.models_for(variant):
                cells.append("not run")
            elif not scores:
                cells.append("–")
            else:
                rate = solve_rate(scores, target)
                cells.append(f"{rate.k}/{rate.n} · {sum(scores) / len(scores):.3f}")
        body.append((m.label, m.family, _span({r["state_size"] for r in sized if r.get("state_size")}),
                     _span({r["num_parameters"] for r in sized if r.get("num_parameters")}), *cells))
    floors = [next((r["floor"] for r in rows if r["column"] == c and r["floor"] is not None), None) for c in columns]
    body.append(("*floor*", "–", "–", "–", *["–" if f is None else f"{f:.3f}" for f in floors]))
    return ["## At a glance", "",
            f"Per model, at each length a registered prediction reads: confirm seeds solved (test score ≥ "
            f"{SOLVE_TARGET:g} at that length) · their mean test score; `–`: not confirmed yet; floor: the best "
            f"no-solve baseline on the same test rows. State (at the training length: attention's grows with "
            f"the sequence) and parameters over the variants the model ran (vocabularies differ). Every seed, "
            f"intervals and tests: the main part's tables; figure: headline.png.",
            "", markdown_table(("model", "family", "state", "params", *columns), body), "",
            *capability_lines(study, confirm_rows), *(["![headline](headline.png)", ""] if rows else [])]


def prediction_lines(study: Study, confirm_rows: list[dict[str, Any]]) -> list[str]:
    """The predictions table: each prediction judged by `RULE_V2` once every compared model has all its
    confirm seeds on every listed variant (a verdict on the seeds so far could flip), inconclusive before."""
    rows = []
    for p in study.predictions:
        scores = {(v, label): prediction_scores(confirm_rows, v, label, p.multiplier)
                  for v in p.variants for label in (*p.winners, *p.losers)}
        running = [f"{label} on {v}" for (v, label), s in scores.items() if len(s) < study.confirm_seeds_for(v)]
        floors = {v: _floor_at(confirm_rows, v, p.multiplier) for v in p.variants}
        targets = {v: next((r["target"] for r in confirm_rows if r["task"] == v), SOLVE_TARGET) for v in p.variants}
        if running:
            verdict, evidence = "inconclusive", f"confirm runs still to finish for {', '.join(running)}"
        elif p.kind == "fails" and any(f is None for f in floors.values()):
            verdict, evidence = "inconclusive", "no floor (runs made under an older config version)"
        else:
            verdict, evidence = judge_v2(p, scores, floors, targets)
        if p.not_judged:
            evidence = f"{evidence} (registered but not in this study: {p.not_judged})"
        rows.append((p.name, p.kind, ", ".join(p.variants), ", ".join(p.winners), ", ".join(p.losers) or "–",
                     f"{p.multiplier}×", f"**{verdict}**", evidence))
    if not rows:
        return []
    return ["## Pre-registered predictions", "", f"Rule: {RULE_V2}", "",
            markdown_table(("prediction", "kind", "variants", "winners (or: fail)", "losers", "length", "verdict",
                            "evidence"), rows), ""]


def sweep_lines(storage: optuna.storages.BaseStorage, study: Study, confirm_rows: list[dict[str, Any]]) -> list[str]:
    """The state-size sweep under v2: per point its seeds' test scores, their mean with a bootstrap interval
    and the solve rate with its exact interval, at each model's rule-tuned learning rate."""
    rows = sweep_rows(storage, study)
    if not rows:
        return []
    variant = study.sweep_variant
    metric = study.variant(variant).metric
    target = next((r["target"] for r in confirm_rows if r["task"] == variant), SOLVE_TARGET)
    body = []
    for r in rows:
        mean, low, high = bootstrap_ci(r["scores"])
        body.append((r["label"], r["size"], human_count(r["state"]), human_count(r["params"]),
                     f"{mean:.3f} [{low:.3f}, {high:.3f}]", str(solve_rate(r["scores"], target)), per_seed(r["scores"])))
    name, score = floor(study, variant, 1, study.sweep_seeds)
    body.append(("best no-solve baseline", "–", "–", "–", f"{name} {score:.3f}", "–", "–"))
    return [f"## State-size sweep ({variant})", "",
            f"Each model at its rule-tuned learning rate on {variant}, on the first {study.sweep_seeds} confirm seeds "
            f"(the main size's runs are the main part's).", "",
            markdown_table(("model", "size", "state", "params", f"{metric}, mean [95% bootstrap CI]",
                            f"solved (≥ {target:g}), k/n [95% exact CI]", "per seed"), body), ""]


def build_capability_report_v2(storage: str | optuna.storages.BaseStorage, study: Study, out: str | Path) -> str:
    """Tables and figures of the protocol v2 `study` from `storage`, written to `out`; returns the Markdown."""
    storage = as_storage(storage)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    variants = {v.label for v in study.variants}
    main_trials, main_confirms = _rows(storage, study.prefix, variants, {m.label for m in study.models})
    headline = headline_rows(study, main_confirms)
    lines = [f"# Capability study `{study.prefix}` (protocol v2, preset `{study.preset}`)", "", study.description, "",
             "Protocol v2 (design §6.1, issue 24): decisions never read the rows that report; one learning-rate rule "
             "for every model and ablation; no pruning on a plateau; equal training where other lengths are read; "
             "statistics for bounded, bimodal, paired scores. Each variant declares:", "", variant_table(study), "",
             *headline_lines(study, main_trials, main_confirms, headline), *prediction_lines(study, main_confirms)]
    headline_figure(study, headline, out / "headline.png")

    lines += ["## Main part", ""]
    if main_trials or main_confirms:
        text = write_report(main_trials, main_confirms, study.prefix, out / "main", study.models[0].label)
        lines += [_demoted(text), "", *_figure_links(out, "main"), ""]
    else:
        lines += ["No tuning study yet.", ""]

    ablated = set(study.ablation_variants)
    ablation_trials, ablation_confirms = _rows(storage, f"{study.prefix}-ablate", ablated)
    if ablation_trials or ablation_confirms:
        # The full model of every ablation is the base model as the main part tuned and confirmed it.
        def full(r: dict[str, Any]) -> bool:
            return r["model"] == study.ablation_base and r["task"] in ablated

        text = write_report([*filter(full, main_trials), *ablation_trials],
                            [*filter(full, main_confirms), *ablation_confirms],
                            f"{study.prefix}-ablate", out / "ablations", study.ablation_base)
        lines += ["## Ablations", "",
                  f"Each ablation of {study.ablation_base} (BASE@ABLATION) tuned by the same rule and confirmed on the "
                  f"same seeds as a model (design §6.1: a component judged at another model's learning rate is not "
                  f"judged); the reference row `{study.ablation_base}` is the full model from the main part "
                  f"(studies {study.prefix}/VARIANT/{study.ablation_base}).", "",
                  _demoted(text), "", *_figure_links(out, "ablations"), ""]

    lines += sweep_lines(storage, study, main_confirms)
    lines += cost_lines(storage, study)
    text = "\n".join(lines) + "\n"
    write_atomic(out / "report.md", text)
    return text
