"""Train a model (or several) on every task of a preset and report a table and figures.

    testbed suite --model gateloop [--model s4d ...] [--tasks a,b] [--preset smoke|quick|standard]
                  [--seeds N] [--workers N] [--threads T] [--device cpu|cuda|auto] [--out DIR]
                  [section.key=value ...]

Every run has a deterministic id (hash of its resolved config, seed and thread count included) and is
stored as DIR/runs/<id>.json the moment it finishes; rerunning the same command skips finished runs, so
an interrupted suite resumes where it stopped. Runs go to `--workers` processes (default: one per CPU
core, or one per GPU), each single-threaded on CPU; results do not depend on the number of workers.
DIR/results.jsonl (tidy rows), DIR/table.md and the PNGs are rebuilt from the stored runs, grouped by
the full config minus the seed: runs of another config in the same DIR are kept apart, never pooled.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from baselines import MIXERS, get_mixer
from baselines.matching import match_width
from gateloop import LMConfig
from studies.checks import (check_at_least_one, check_device, check_memory, check_out_dir, check_preset_tasks,
                            parse_names)
from studies.config import (CONFIG_VERSION, RunConfig, TrainConfig, config_hash, group_hash, parse_fields,
                            parse_overrides, replace_from_strings, task_from_dict)
from studies.floors import metric_label
from studies.parallel import WorkerDied, run_parallel, usable_cores
from studies.presets import PRESETS, Preset, get_preset
from studies.atomic_io import write_atomic, write_atomic_bytes, write_jsonl
from studies.stats import mean_ci
from studies.tables import fmt_mean_ci, human_count, markdown_table
from studies.train import TrainResult, train
from tasks import TASKS, TaskData, make_task
from tasks.shortcuts import floor


def build_configs(
    models: Sequence[str],
    task_names: Sequence[str],
    preset: Preset,
    seeds: int,
    overrides: Sequence[str] = (),
    device: str | None = None,
    threads: int | None = None,
) -> list[RunConfig]:
    """Resolve every (model, task, seed) run of a suite into a full RunConfig.

    Mixer widths are chosen by parameter matching to the preset's budget unless the user fixes
    `mixer.d_model`; task overrides apply to every selected task that has the knob. `device` and
    `threads` (the --device and --threads flags) set train.device and train.threads.
    """
    if not models:
        raise ValueError(f"the model list names no model; pass one of {sorted(MIXERS)}")
    for model in models:
        get_mixer(model)
    unknown = [t for t in task_names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks: {sorted(TASKS)}")
    parsed = parse_overrides(list(overrides))
    task_keys = set(parsed["task"])
    fields_by_task = {t: {f.name for f in dataclasses.fields(TASKS[t])} for t in task_names}
    orphan = sorted(k for k in task_keys if not any(k in f for f in fields_by_task.values()))
    if orphan:
        raise ValueError(f"task override(s) {orphan} match no selected task; knobs: "
                         + "; ".join(f"{t}: {sorted(f)}" for t, f in fields_by_task.items()))
    train_overrides = dict(parsed["train"])
    for key, flag in ((device, "device"), (threads, "threads")):
        if key is None:
            continue
        if flag in train_overrides and train_overrides[flag] != str(key):
            raise ValueError(f"--{flag} {key} and train.{flag}={train_overrides[flag]} disagree; give only one")
        train_overrides[flag] = str(key)

    configs = []
    for task_name in task_names:
        task = make_task(task_name, **preset.tasks.get(task_name, {}))
        task = replace_from_strings(task, {k: v for k, v in parsed["task"].items() if k in fields_by_task[task_name]},
                                    f"task ({task_name})")
        lm = replace_from_strings(LMConfig(vocab_size=task.vocab_size, **preset.lm), parsed["lm"], "lm")
        eval_lengths = tuple(m * task.seq_len for m in preset.multipliers(task_name)) if task.extrapolates else ()
        for model in models:
            mixer = _mixer_config(model, lm, preset, parsed["mixer"])
            for seed in range(seeds):
                train_cfg = replace_from_strings(TrainConfig(**{**preset.train, "seed": seed}), train_overrides, "train")
                configs.append(RunConfig(task_name, task, model, mixer, lm, train_cfg, eval_lengths))
    return configs


def _mixer_config(model: str, lm: LMConfig, preset: Preset, overrides: dict[str, str]):
    cls = get_mixer(model)
    default = cls.config_class(**preset.mixer.get(model, {}))
    if "d_model" in overrides:
        return replace_from_strings(default, overrides, f"mixer ({model})")  # never override the user's width
    # Not validated at the class's default width: matching chooses the width among those the overrides allow.
    fixed = {k: v for k, v in dataclasses.asdict(default).items() if k != "d_model"}
    fixed.update(parse_fields(cls.config_class, overrides, f"mixer ({model})"))
    return match_width(model, preset.param_budget, lm, fixed)


# ------------------------------------------------------------------------------------------------ storage


MANIFEST = "manifest.json"


def check_manifest(out: Path) -> None:
    """Refuse an output directory written under another config version instead of mixing results."""
    manifest = out / MANIFEST
    if not manifest.exists():
        return
    try:
        version = json.loads(manifest.read_text()).get("version")
    except (ValueError, AttributeError):
        raise ValueError(f"{manifest} is not a manifest this testbed wrote (not a JSON object); "
                         f"use another --out directory (or move {out} away)") from None
    if version != CONFIG_VERSION:
        raise ValueError(
            f"{out} holds results of config version {version}, this testbed writes version {CONFIG_VERSION}; "
            f"results of different versions are not comparable. Use another --out directory (or move {out} away)."
        )


def result_record(config: RunConfig, result: TrainResult) -> dict[str, Any]:
    record = result.to_dict()
    record["run_id"] = config.run_id()
    return record


# What a stored run must hold to count as finished (besides `config`, whose hash must be its id).
RECORD_KEYS = ("run_id", "status", "final", "steps", "steps_to_target", "num_parameters", "state_size",
               "wall_time")


def check_record(path: Path) -> dict[str, Any]:
    """The run stored in `path`, or ValueError saying why the file is not a finished run."""
    try:
        record = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("config", *RECORD_KEYS) if k not in record]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    try:
        run_id = config_hash(record["config"])
    except (KeyError, TypeError, AttributeError):
        raise ValueError("its config is not a run config") from None
    if record["run_id"] != path.stem or run_id != path.stem:
        raise ValueError(f"does not match its config (file {path.stem}, stored id {record['run_id']}, "
                         f"config hashes to {run_id})")
    return record


def _move_aside(path: Path) -> Path:
    n = 1
    while (target := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    path.rename(target)
    return target


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every finished run stored in out/runs. A file that is not one (truncated by a crash, edited by
    hand) is named in one warning line and moved aside, kept as runs/<id>.json.corrupt-<n>, so that
    the run counts as not finished and is rerun."""
    records = []
    for path in sorted((out / "runs").glob("*.json")):
        try:
            records.append(check_record(path))
        except ValueError as e:
            target = _move_aside(path)
            print(f"warning: {path} is not a finished run ({e}); moved to {target.name}, the run will be redone",
                  file=sys.stderr, flush=True)
    return records


def tidy_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run × metric × slice (slice = evaluated sequence length); `group` is the hash of the
    config without the seed: rows of one group are seeds of one another, rows of two groups never are."""
    cfg = record["config"]
    base = {
        "run_id": record["run_id"], "group": group_hash(cfg), "model": cfg["model"]["name"],
        "task": cfg["task"]["name"], "task_metric": TASKS[cfg["task"]["name"]].metric, "seed": cfg["train"]["seed"], "train_length": cfg["task"]["seq_len"],
        "status": record["status"], "num_parameters": record["num_parameters"], "state_size": record["state_size"],
        "steps": record["steps"], "steps_to_target": record["steps_to_target"], "wall_time": record["wall_time"],
    }
    rows = []
    lengths = [cfg["task"]["seq_len"], *cfg["eval_lengths"]]
    for length in lengths:
        metrics = record["final"].get(str(length)) or record["final"].get(length) or {}
        for metric in ("accuracy", "sequence_accuracy"):
            # A diverged run has no final metrics: it scores 0, it is not dropped.
            rows.append({**base, "metric": metric, "length": length, "value": metrics.get(metric, 0.0)})
    return rows


def with_floors(rows: list[dict[str, Any]], configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the task's own metric get `floor` and `floor_name`: the best no-solve baseline
    (tasks.shortcuts) scored on exactly the held-out sets the group's runs were scored on (their seeds,
    test size and length) — the level a model must beat to have learned anything."""
    seeds: dict[str, set[int]] = {}
    for r in rows:
        seeds.setdefault(r["group"], set()).add(r["seed"])
    out = []
    for r in rows:
        if r["metric"] == r["task_metric"]:
            cfg = configs[r["group"]]
            name, score, _ = floor(task_from_dict(cfg), cfg["train"]["test_size"], tuple(sorted(seeds[r["group"]])),
                                   r["length"])
            r = {**r, "floor": score, "floor_name": name}
        out.append(r)
    return out


def _flat(config: dict[str, Any]) -> dict[str, str]:
    """{"train": {"lr": 0.03}, ...} -> {"train.lr": "0.03", ...}, the way overrides are written."""
    flat = {}
    for section, value in config.items():
        if isinstance(value, dict):
            for key, v in value.items():
                flat[f"{section}.{key}"] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        else:
            flat[section] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def config_differences(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """group -> the keys (other than the seed) in which the given configs differ, with its values."""
    flats = {g: {k: v for k, v in _flat(c).items() if k != "train.seed"} for g, c in configs.items()}
    keys = sorted({k for f in flats.values() for k in f})
    differing = [k for k in keys if len({f.get(k, "–") for f in flats.values()}) > 1]
    return {g: {k: f.get(k, "–") for k in differing} for g, f in flats.items()}


def labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a `label` for tables and plots: the model name, plus the config hash where one (task,
    model) holds several configs."""
    groups: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["model"]), set()).add(r["group"])
    return [{**r, "label": r["model"] if len(groups[r["task"], r["model"]]) == 1 else f"{r['model']} [{r['group'][:6]}]"}
            for r in rows]


def suite_table(rows: list[dict[str, Any]], configs: dict[str, dict[str, Any]] | None = None) -> str:
    """Markdown: task, its metric, model, score at each length (mean ± 95% CI over seeds), the floor
    (best no-solve baseline at the training length, where rows carry one), steps, time, size.

    One row per (task, model, config group). Where one (task, model) has several groups, a `config`
    column shows each group's short hash and a note under the table lists the keys they differ in
    (`configs`: group -> resolved config, from the stored runs).
    """
    acc = [r for r in rows if r["metric"] == r["task_metric"]]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in acc:
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
        cells = []
        for m in multipliers:
            vals = [r["value"] for r in rs if r["length"] == m * r["train_length"]]
            cells.append(fmt_mean_ci(vals) if vals else "–")
        train_rows = [r for r in rs if r["length"] == r["train_length"]]
        floor_cell = f"{train_rows[0]['floor']:.3f} ({train_rows[0]['floor_name']})" if "floor" in train_rows[0] else "–"
        reached = [r["steps_to_target"] for r in train_rows if r["steps_to_target"] is not None]
        steps = f"{sum(reached) / len(reached):.0f} ({len(reached)}/{len(train_rows)})" if reached else "–"
        wall = sum(r["wall_time"] for r in train_rows) / len(train_rows)
        diverged = sum(r["status"] == "diverged" for r in train_rows)
        seeds = f"{len(train_rows)}" + (f" ({diverged} diverged)" if diverged else "")
        config = [f"`{group[:6]}`" if (task, model) in several else ""] if several else []
        metric = "seq. exact" if train_rows[0]["task_metric"] == "sequence_accuracy" else "token acc."
        body.append([task, metric, model, *config, *cells, floor_cell, seeds, steps, f"{wall:.1f}",
                     human_count(train_rows[0]["num_parameters"]), human_count(train_rows[0]["state_size"])])
    table = markdown_table(header, body)
    if not several:
        return table
    lines = ["", "Several configurations of one (task, model) are stored in this directory; their runs are kept "
                 "apart (a row each), never pooled as seeds. They differ in:"]
    for (task, model), gs in sorted(several.items()):
        diffs = config_differences({g: configs[g] for g in gs}) if configs else {g: {} for g in gs}
        described = "; ".join(f"`{g[:6]}` " + (", ".join(f"{k}={v}" for k, v in diffs[g].items()) or "?")
                              for g in sorted(gs))
        lines.append(f"- {task} / {model}: {described}")
    return table + "\n".join(lines) + "\n"


def length_intervals(rows: list[dict[str, Any]]):
    """Per (task, label, length multiple): mean accuracy and the table's 95 % Student-t interval over seeds
    (a DataFrame with columns task, label, "length ×", mean, low, high, n)."""
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r["metric"] == r["task_metric"]])
    df["length ×"] = df["length"] // df["train_length"]
    out = []
    for (task, label, multiple), part in df.groupby(["task", "label", "length ×"], sort=True):
        mean, half = mean_ci(part["value"].tolist())
        out.append({"task": task, "label": label, "length ×": multiple, "mean": mean, "low": mean - half,
                    "high": mean + half, "n": len(part)})
    return pd.DataFrame(out)


def suite_figures(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.lines
    import matplotlib.patches
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rows = labelled(rows)
    df = pd.DataFrame([r for r in rows if r["metric"] == r["task_metric"]])
    df["length ×"] = df["length"] // df["train_length"]
    # The floor a model must beat, per task and length (one value per group; groups of a task share a
    # test size in a suite, so the first is drawn).
    floors = df.dropna(subset=["floor"]).groupby(["task", "length ×"])["floor"].first() if "floor" in df else None
    labels = sorted(df["label"].unique())
    palette = dict(zip(labels, sns.color_palette(n_colors=len(labels))))
    paths = []
    # Bars are means, error bars the table's 95 % t-interval (seaborn's errorbar="ci" is a bootstrap).
    bars = length_intervals(rows)
    bars = bars[bars["length ×"] == 1]
    tasks = sorted(bars["task"].unique())
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) * max(1, len(labels)) ** 0.5) + 2, 4))
    # Each task's bars side by side, only the labels it has (a config group belongs to one task).
    width = 0.8 / max(bars.groupby("task")["label"].nunique())
    for i, task in enumerate(tasks):
        part = bars[bars["task"] == task].sort_values("label")
        for j, (_, bar) in enumerate(part.iterrows()):
            x = i + width * (j - (len(part) - 1) / 2)
            ax.bar(x, bar["mean"], width, color=palette[bar["label"]], yerr=[[bar["mean"] - bar["low"]],
                   [bar["high"] - bar["mean"]]], capsize=3, error_kw={"lw": 1, "ecolor": "black"})
        if floors is not None and (task, 1) in floors.index:
            ax.hlines(floors[task, 1], i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1.2)
    handles = [matplotlib.patches.Patch(color=palette[label], label=label) for label in labels]
    if floors is not None:
        handles.append(matplotlib.lines.Line2D([], [], color="black", ls="--", lw=1.2, label="best no-solve baseline"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set(ylabel="held-out score (each task's metric)", ylim=(0, 1.02),
           title="Score at the training length (mean, 95% t-interval over seeds; dashed: floor)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    paths.append(out / "accuracy_by_task.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if df["length ×"].nunique() > 1:
        intervals = length_intervals(rows)
        tasks = sorted(df["task"].unique())
        cols = min(4, len(tasks))
        nrows = -(-len(tasks) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols + 2, 2.9 * nrows + 0.8), squeeze=False,
                                 sharey=True)
        multipliers = sorted(df["length ×"].unique())
        for ax, task in zip(axes.flat, tasks):
            part = intervals[intervals["task"] == task]
            for label in labels:
                line = part[part["label"] == label].sort_values("length ×")
                if line.empty:
                    continue
                ax.plot(line["length ×"], line["mean"], marker="o", color=palette[label], label=label)
                ax.fill_between(line["length ×"], line["low"], line["high"], color=palette[label], alpha=0.2, lw=0)
            if floors is not None and task in floors.index.get_level_values(0):
                line = floors[task].sort_index()
                ax.plot(line.index, line.values, color="black", ls="--", lw=1.2, label="best no-solve baseline")
            ax.set(xscale="log", ylim=(0, 1.02), title=task)
            ax.set_xticks(multipliers, [f"{m}×" for m in multipliers])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
        for ax in axes.flat[len(tasks):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("score (task's metric)")
        fig.supxlabel("evaluated length / training length")
        fig.suptitle("Score by evaluated length (mean, 95% t-interval over seeds; dashed: floor)")
        by_label = {n: h for ax in axes.flat for h, n in zip(*ax.get_legend_handles_labels())}
        fig.tight_layout(rect=(0, 0, 1 - 2 / (3.4 * cols + 2), 1))
        fig.legend(list(by_label.values()), list(by_label), loc="center left", fontsize=8, frameon=False,
                   bbox_to_anchor=(1 - 2 / (3.4 * cols + 2), 0.5))
        paths.append(out / "accuracy_by_length.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def rebuild_reports(out: Path) -> str:
    """Rebuild results.jsonl, table.md and figures from DIR/runs alone."""
    records = load_records(out)
    configs = {group_hash(r["config"]): r["config"] for r in records}
    rows = with_floors([row for record in records for row in tidy_rows(record)], configs)
    write_jsonl(out / "results.jsonl", rows)
    table = suite_table(rows, configs)
    write_atomic(out / "table.md", table)
    suite_figures(rows, out)
    return table


# -------------------------------------------------------------------------------------------------- runs


def _on_cuda(configs: Sequence[RunConfig]) -> bool:
    device = configs[0].train.device if configs else "cpu"
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def default_workers(configs: Sequence[RunConfig]) -> int:
    """One worker per GPU on CUDA; on CPU one per core this process may use, over each run's threads."""
    if _on_cuda(configs):
        return max(1, torch.cuda.device_count())
    return max(1, usable_cores() // max([c.train.threads for c in configs] or [1]))


def _gpus(configs: Sequence[RunConfig]) -> int:
    """GPUs to spread workers over: all of them for `cuda`/`auto`, none for an explicit `cuda:N`."""
    return torch.cuda.device_count() if _on_cuda(configs) and configs[0].train.device in ("cuda", "auto") else 0


def train_and_store(config: RunConfig, runs_dir: Path, keep: bool, labels: dict[str, Any],
                    progress: bool = False) -> dict[str, Any]:
    """Train one run and store it atomically as runs/<id>.json (weights first, as runs/<id>.pt, if kept);
    returns what a progress line shows."""
    run_id = config.run_id()
    result = train(config, progress=progress, keep_model=keep)
    if keep and result.model is not None:
        # Weights first: a run counts as finished only once its .json exists.
        buffer = io.BytesIO()
        torch.save(result.model.state_dict(), buffer)
        write_atomic_bytes(runs_dir / f"{run_id}.pt", buffer.getvalue())
    record = {**result_record(config, result), **labels}
    write_atomic(runs_dir / f"{run_id}.json", json.dumps(record, default=str))
    scores = result.final[min(result.final)] if result.final else {}
    return {"status": result.status, "accuracy": scores.get("accuracy", 0.0),
            "sequence_accuracy": scores.get("sequence_accuracy", 0.0), "steps": result.steps,
            "wall_time": result.wall_time}


def run_cost(config: RunConfig) -> float:
    """A run's relative cost for ordering work (not a time): token-steps of training and of evaluation
    (a forward pass over the held-out set, about a third of a training step's cost per token, at the
    training length every eval_every steps and once at every evaluated length)."""
    tc, L = config.train, config.task.seq_len
    evals = (tc.steps // tc.eval_every + 1) * L + sum(config.eval_lengths)
    return tc.steps * tc.batch_size * L + tc.test_size * evals / 3


class RunFailed(RuntimeError):
    """Training stopped for a reason outside the runs' configs (a worker process died); the message is one
    line that names the run that was lost and how to resume."""


def run_configs(
    configs: Sequence[RunConfig],
    out: Path,
    progress: bool = True,
    labels: Callable[[RunConfig], dict[str, Any]] | None = None,
    keep_model: Callable[[RunConfig], bool] | None = None,
    workers: int | None = None,
    describe: Callable[[RunConfig], str] | None = None,
) -> None:
    """Train every config whose run is not yet stored in out/runs; store each the moment it ends.

    `labels(config)` adds fields to the stored record (e.g. the ablation name); where
    `keep_model(config)` is true the trained weights are stored beside it as runs/<id>.pt.
    `workers` processes train in parallel (None: `default_workers`; 1: in this process, with progress
    bars); `describe(config)` names a run in progress lines (default: model, task and seed).
    A Ctrl-C stops every worker; finished runs are kept, and the same call resumes. A worker that dies
    stops the others too and raises `RunFailed` naming the run it was training.
    """
    check_manifest(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MANIFEST).exists():
        write_atomic(out / MANIFEST, json.dumps({"version": CONFIG_VERSION}) + "\n")
    runs_dir = out / "runs"
    done = {r["run_id"] for r in load_records(out)}

    def finished(config: RunConfig) -> bool:
        # A run whose weights should be kept but are missing is not finished (it is rerun, deterministically).
        run_id = config.run_id()
        wants_weights = keep_model is not None and keep_model(config)
        return run_id in done and (not wants_weights or (runs_dir / f"{run_id}.pt").exists())

    def name(config: RunConfig) -> str:
        return describe(config) if describe else f"{config.model} on {config.task_name} seed {config.train.seed}"

    def outcome(config: RunConfig, summary: dict[str, Any]) -> str:
        metric = config.task.metric  # what the table reports for this task (0 for a diverged run)
        return (f"{summary['status']}: {metric_label(metric)} {summary[metric]:.3f} in {summary['steps']} steps, "
                f"{summary['wall_time']:.1f}s")

    todo = [c for c in configs if not finished(c)]
    workers = min(workers or default_workers(configs), max(1, len(todo)))
    print(f"{len(configs)} runs: {len(configs) - len(todo)} already finished in {out}, {len(todo)} to do"
          + (f", on {workers} workers" if workers > 1 else ""), flush=True)
    jobs = [(c, runs_dir, keep_model is not None and keep_model(c), labels(c) if labels else {}) for c in todo]
    count = 0
    try:
        if workers == 1:
            for i, job in enumerate(jobs, 1):
                config = job[0]
                print(f"[{i}/{len(todo)}] {name(config)} (d_model={config.mixer.d_model}, run {config.run_id()})",
                      flush=True)
                summary = train_and_store(*job, progress=progress)
                count += 1
                print(f"    {outcome(config, summary)}", flush=True)
        else:
            # Longest first (LPT scheduling), so that no long run starts last while the other workers idle.
            order = sorted(range(len(todo)), key=lambda i: -run_cost(todo[i]))

            def report(position: int, summary: dict[str, Any]) -> None:
                nonlocal count
                count += 1
                config = todo[order[position]]
                print(f"[{count}/{len(todo)}] {name(config)} (run {config.run_id()}) {outcome(config, summary)}",
                      flush=True)

            try:
                run_parallel(train_and_store, [jobs[i] for i in order], workers, report, gpus=_gpus(configs))
            except WorkerDied as death:
                lost = None if death.position is None else todo[order[death.position]]
                what = f"while training {name(lost)} (run {lost.run_id()})" if lost else "between runs"
                raise RunFailed(f"a worker died ({death.cause}) {what}; {count} of {len(todo)} runs finished and "
                                f"are stored in {runs_dir}: rerun the same command to resume") from None
    except KeyboardInterrupt:
        print(f"interrupted: {count} of {len(todo)} runs finished and stored in {runs_dir}; "
              f"rerun the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(130) from None  # 128 + SIGINT, as a shell reports a Ctrl-C


def run_suite(configs: Sequence[RunConfig], out: Path, progress: bool = True, workers: int | None = None) -> str:
    run_configs(configs, out, progress, workers=workers)
    return rebuild_reports(out)


# -------------------------------------------------------------------------------------------------- CLI


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `suite` and `ablate` share: how and where runs execute."""
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: train.device of the preset, auto)")
    parser.add_argument("--workers", type=int, default=None,
                        help="runs trained in parallel, one process each (default: one per CPU core over "
                             "--threads, or one per GPU); results do not depend on it")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads per CPU run (default: train.threads, 1); part of each run's "
                             "config and id, since it changes results")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def check_run_arguments(args: argparse.Namespace, preset_name: str, preset: Preset, tasks: Sequence[str],
                        out: Path) -> None:
    """The checks `suite` and `ablate` share; ValueError with one line naming the problem."""
    check_out_dir(out)
    check_manifest(out)
    check_device(args.device)
    for flag in ("seeds", "workers", "threads"):
        if getattr(args, flag) is not None:
            check_at_least_one(f"--{flag}", getattr(args, flag))
    check_preset_tasks(preset_name, list(preset.tasks), tasks)


def check_configs(configs: Sequence[RunConfig]) -> None:
    """What only the resolved configs tell: a device set by train.device=..., a held-out set that leaves the
    training stream too little to draw (`TaskData.check_training_room`), a run too large for memory."""
    for device in sorted({c.train.device for c in configs}):
        check_device(device, "train.device")
    for config in configs:
        check_memory(config)  # first: the held-out sets drawn next would be allocated at the size refused here
    for task, seed, test_size in dict.fromkeys((c.task, c.train.seed, c.train.test_size) for c in configs):
        TaskData(task, seed, test_size).check_training_room()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help=f"mixer name (repeat or comma-separate to compare); one of {sorted(MIXERS)}")
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: the preset's tasks)")
    parser.add_argument("--preset", default="quick", help=f"one of {sorted(PRESETS)}")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per (model, task)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/suite-<preset>)")
    add_run_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="section.key=value, section in task, mixer (or model), lm, train")


def run(args: argparse.Namespace) -> int:
    try:
        preset = get_preset(args.preset)
        models = parse_names(",".join(args.model), "--model", "model")  # --model a,b --model c: one list
        task_names = parse_names(args.tasks, "--tasks", "task") if args.tasks is not None else list(preset.tasks)
        unknown = [t for t in task_names if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; valid tasks: {sorted(TASKS)}")
        out = check_out_dir(args.out if args.out is not None else f"runs/suite-{args.preset}")
        check_run_arguments(args, args.preset, preset, task_names, out)
        configs = build_configs(models, task_names, preset, args.seeds, args.overrides, args.device, args.threads)
        check_configs(configs)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"testbed suite: {e}") from None
    first = configs[0]
    print("resolved config of the first run (all runs are stored with their own):")
    print(json.dumps(first.to_dict(), indent=1, default=str))
    try:
        table = run_suite(configs, out, progress=not args.quiet, workers=args.workers)
    except RunFailed as e:
        raise SystemExit(f"testbed suite: {e}") from None
    print()
    print(table)
    print(f"results: {out / 'results.jsonl'}, table: {out / 'table.md'}, figures: {out}/*.png")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.suite")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
