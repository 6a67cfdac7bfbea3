"""What both capability reports (protocol v1's report.py and v2's report_v2.py) read the same way: the
state-size sweep's rows, the cost of each part from the storage's trial times, and scores seed by seed."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from studies.experiments.capability.seeds import load_seeds
from studies.experiments.capability.study import Study, is_main_size
from studies.tables import markdown_table
from studies.tune.budget import COUNTED
from studies.tune.storage import study_name


def per_seed(values: Sequence[float]) -> str:
    """The scores seed by seed, in seed order: with 3 seeds a bimodal outcome (some seeds on the plateau,
    some solved) reads as a wide interval, and this says which it is."""
    return ", ".join(f"{v:.3f}" for v in values)

def sweep_rows(storage: optuna.storages.BaseStorage, study: Study) -> list[dict[str, Any]]:
    """One row per sweep point with runs: a main-size point is read from the first `sweep_seeds` main
    confirm seeds (the same configs and seeds), the others from their own sweep studies."""
    variant = study.sweep_variant
    metric = study.variant(variant).metric
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

def part_of(study: Study, name: str) -> str | None:
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

def cost_lines(storage: optuna.storages.BaseStorage, study: Study) -> list[str]:
    """Per part, the finished trials and what they took: the sum over COMPLETE and PRUNED trials of end −
    start (device-hours: a trial is one process on one core, so two workers spend two an hour) and of the
    runs' own `wall_time`; failed trials (a run killed at a stop, retrained on resume) are counted, not
    timed: their end is when the resume marked them."""
    parts: dict[str, dict[str, Any]] = {}
    for summary in storage.get_all_studies():
        part = part_of(study, summary.study_name)
        if part is None:
            continue
        row = parts.setdefault(part, {"trials": 0, "failed": 0, "span": 0.0, "wall": 0.0, "first": None, "last": None})
        for t in storage.get_all_trials(storage.get_study_id_from_name(summary.study_name), deepcopy=False):
            if t.state == TrialState.FAIL:
                row["failed"] += 1
            if t.state not in COUNTED or t.datetime_start is None or t.datetime_complete is None:
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
