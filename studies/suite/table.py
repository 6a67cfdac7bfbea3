"""The suite's Markdown table: one row per (task, model, config group), the score at each evaluated length
beside the task's floor.

Scores of a task's metric are bounded in [0, 1] and, where some seeds learn a task and others do not,
bimodal; so a cell with several seeds shows each seed's score, the mean with a percentile-bootstrap 95 %
interval of the mean (it stays inside the seeds' range, unlike a Student-t interval), and where the seeds
split at the target the solve rate with its exact (Clopper–Pearson) interval (docs/design.md §6.1).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from studies.floors import metric_label
from studies.stats import bootstrap_ci, solve_rate, splits
from studies.suite.rows import config_differences
from studies.tables import human_count, markdown_table

# The score that counts a seed as solved where a run has no early-stopping target of its own.
DEFAULT_TARGET = 0.99


def solve_target(config: dict[str, Any]) -> float:
    """The score at which a seed of this stored config counts as solved: its early-stopping target
    (`train.target_accuracy`) where that is below 1, else DEFAULT_TARGET."""
    target = config["train"].get("target_accuracy", 1.0)
    return target if target < 1 else DEFAULT_TARGET


def score_cell(values: Sequence[float], target: float) -> str:
    """One seed: its score. Several (in seed order): mean [95 % bootstrap interval], the per-seed scores,
    and where they split at `target`, the solve rate k/n [exact 95 % interval]."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    mean, low, high = bootstrap_ci(values)
    cell = f"{mean:.3f} [{low:.3f}, {high:.3f}]<br>seeds: " + " ".join(f"{v:.3f}" for v in values)
    if splits(values, target):
        cell += f"<br>solved {solve_rate(values, target)}"
    return cell


def suite_table(rows: list[dict[str, Any]], configs: dict[str, dict[str, Any]]) -> str:
    """Markdown: task, its metric, model, score at each length (`score_cell` over seeds), the floor (best
    no-solve baseline at the training length, where rows carry one), seeds, steps, time, size.

    One row per (task, model, config group); `configs` maps each group to its resolved config (from the
    stored runs). Where one (task, model) has several groups, a `config` column shows each group's short
    hash and a note under the table lists the keys they differ in. Where some row has several seeds, a
    note under the table says how its cells read.
    """
    acc = [r for r in rows if r["metric"] == r["task_metric"]]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in sorted(acc, key=lambda r: r["seed"]):
        groups.setdefault((r["task"], r["model"], r["group"]), []).append(r)
    per_pair: dict[tuple[str, str], list[str]] = {}
    for task, model, group in groups:
        per_pair.setdefault((task, model), []).append(group)
    several = {pair: gs for pair, gs in per_pair.items() if len(gs) > 1}
    multipliers = sorted({r["length"] // r["train_length"] for r in acc})
    header = ["task", "metric", "model", *(["config"] if several else []), *[f"score @{m}×L" for m in multipliers],
              "floor @1×L", "seeds", "steps to target", "wall s", "params", "state"]
    body = []
    for (task, model, group), rs in sorted(groups.items()):
        target = solve_target(configs[group])
        cells = []
        for m in multipliers:
            vals = [r["value"] for r in rs if r["length"] == m * r["train_length"]]
            cells.append(score_cell(vals, target) if vals else "–")
        train_rows = [r for r in rs if r["length"] == r["train_length"]]
        floor_cell = f"{train_rows[0]['floor']:.3f} ({train_rows[0]['floor_name']})" if "floor" in train_rows[0] else "–"
        reached = [r["steps_to_target"] for r in train_rows if r["steps_to_target"] is not None]
        steps = f"{sum(reached) / len(reached):.0f} ({len(reached)}/{len(train_rows)})" if reached else "–"
        wall = sum(r["wall_time"] for r in train_rows) / len(train_rows)
        diverged = sum(r["status"] == "diverged" for r in train_rows)
        seeds = f"{len(train_rows)}" + (f" ({diverged} diverged)" if diverged else "")
        config = [f"`{group[:6]}`" if (task, model) in several else ""] if several else []
        body.append([task, metric_label(train_rows[0]["task_metric"], short=True), model, *config, *cells, floor_cell,
                     seeds, steps, f"{wall:.1f}", human_count(train_rows[0]["num_parameters"]),
                     human_count(train_rows[0]["state_size"])])
    table = markdown_table(header, body)
    notes = []
    if any(len({r["seed"] for r in rs}) > 1 for rs in groups.values()):
        targets = sorted({solve_target(configs[g]) for _, _, g in groups})
        notes.append("With several seeds a score cell reads: mean [95 % percentile-bootstrap interval of the mean]; "
                     "each seed's score, in seed order; and where the seeds split at the target "
                     f"({' / '.join(f'{t:g}' for t in targets)}), the solve rate k/n [exact 95 % interval].")
    if several:
        lines = ["Several configurations of one (task, model) are stored in this directory; their runs are kept "
                 "apart (a row each), never pooled as seeds. They differ in:"]
        for (task, model), gs in sorted(several.items()):
            diffs = config_differences({g: configs[g] for g in gs})
            described = "; ".join(f"`{g[:6]}` " + (", ".join(f"{k}={v}" for k, v in diffs[g].items()) or "?")
                                  for g in sorted(gs))
            lines.append(f"- {task} / {model}: {described}")
        notes.append("\n".join(lines))
    return table + "".join(f"\n{note}\n" for note in notes)
