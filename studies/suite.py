"""Train a model (or several) on every task of a preset and report a table and figures.

    testbed suite --model gateloop [--model s4d ...] [--tasks a,b] [--preset smoke|quick|standard]
                  [--seeds N] [--device cpu|cuda|auto] [--out DIR] [section.key=value ...]

Every run has a deterministic id (hash of its resolved config, seed included) and is stored as
DIR/runs/<id>.json the moment it finishes; rerunning the same command skips finished runs, so an
interrupted suite resumes where it stopped. DIR/results.jsonl (tidy rows), DIR/table.md and the PNGs
are rebuilt from the stored runs.
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
from studies.config import CONFIG_VERSION, RunConfig, TrainConfig, parse_fields, parse_overrides, replace_from_strings
from studies.presets import PRESETS, Preset, get_preset
from studies.results import fmt_mean_ci, human_count, markdown_table, write_atomic, write_atomic_bytes, write_jsonl
from studies.train import TrainResult, train
from tasks import TASKS, make_task


def build_configs(
    models: Sequence[str],
    task_names: Sequence[str],
    preset: Preset,
    seeds: int,
    overrides: Sequence[str] = (),
    device: str | None = None,
) -> list[RunConfig]:
    """Resolve every (model, task, seed) run of a suite into a full RunConfig.

    Mixer widths are chosen by parameter matching to the preset's budget unless the user fixes
    `mixer.d_model`; task overrides apply to every selected task that has the knob.
    """
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
    if device is not None:
        train_overrides["device"] = device

    configs = []
    for task_name in task_names:
        task = make_task(task_name, **preset.tasks.get(task_name, {}))
        task = replace_from_strings(task, {k: v for k, v in parsed["task"].items() if k in fields_by_task[task_name]},
                                    f"task ({task_name})")
        lm = replace_from_strings(LMConfig(vocab_size=task.vocab_size, **preset.lm), parsed["lm"], "lm")
        eval_lengths = tuple(m * task.seq_len for m in preset.eval_multipliers) if task.extrapolates else ()
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


def check_out_dir(out: Path) -> None:
    """Refuse an output directory written under another config version instead of mixing results."""
    manifest = out / "manifest.json"
    if manifest.exists():
        version = json.loads(manifest.read_text()).get("version")
        if version != CONFIG_VERSION:
            raise SystemExit(
                f"{out} holds results of config version {version}, this testbed writes version {CONFIG_VERSION}; "
                f"results of different versions are not comparable. Use another --out directory (or move {out} away)."
            )
    else:
        write_atomic(manifest, json.dumps({"version": CONFIG_VERSION}) + "\n")


def result_record(config: RunConfig, result: TrainResult) -> dict[str, Any]:
    record = result.to_dict()
    record["run_id"] = config.run_id()
    return record


def tidy_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run × metric × slice (slice = evaluated sequence length)."""
    cfg = record["config"]
    base = {
        "run_id": record["run_id"], "model": cfg["model"]["name"], "task": cfg["task"]["name"],
        "seed": cfg["train"]["seed"], "train_length": cfg["task"]["seq_len"], "status": record["status"],
        "num_parameters": record["num_parameters"], "state_size": record["state_size"],
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


def load_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def suite_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: task, model, accuracy at each length (mean ± 95% CI over seeds), steps, time, size."""
    acc = [r for r in rows if r["metric"] == "accuracy"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in acc:
        groups.setdefault((r["task"], r["model"]), []).append(r)
    multipliers = sorted({r["length"] // r["train_length"] for r in acc})
    header = ["task", "model", *[f"acc @{m}×L" for m in multipliers], "seeds", "steps to target", "wall s",
              "params", "state"]
    body = []
    for (task, model), rs in sorted(groups.items()):
        cells = []
        for m in multipliers:
            vals = [r["value"] for r in rs if r["length"] == m * r["train_length"]]
            cells.append(fmt_mean_ci(vals) if vals else "–")
        train_rows = [r for r in rs if r["length"] == r["train_length"]]
        reached = [r["steps_to_target"] for r in train_rows if r["steps_to_target"] is not None]
        steps = f"{sum(reached) / len(reached):.0f} ({len(reached)}/{len(train_rows)})" if reached else "–"
        wall = sum(r["wall_time"] for r in train_rows) / len(train_rows)
        diverged = sum(r["status"] == "diverged" for r in train_rows)
        seeds = f"{len(train_rows)}" + (f" ({diverged} diverged)" if diverged else "")
        body.append([task, model, *cells, seeds, steps, f"{wall:.1f}", human_count(train_rows[0]["num_parameters"]),
                     human_count(train_rows[0]["state_size"])])
    return markdown_table(header, body)


def suite_figures(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame([r for r in rows if r["metric"] == "accuracy"])
    df["length ×"] = df["length"] // df["train_length"]
    paths = []
    at_train = df[df["length ×"] == 1]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * at_train["task"].nunique() * max(1, at_train["model"].nunique()) ** 0.5), 4))
    sns.barplot(data=at_train, x="task", y="value", hue="model", errorbar=("ci", 95), ax=ax)
    ax.set(ylabel="held-out token accuracy", ylim=(0, 1.02), title="Accuracy at the training length (95% CI over seeds)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    paths.append(out / "accuracy_by_task.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if df["length ×"].nunique() > 1:
        grid = sns.relplot(data=df, x="length ×", y="value", hue="model", col="task", kind="line", marker="o",
                           errorbar=("ci", 95), col_wrap=min(4, df["task"].nunique()), height=2.6)
        grid.set(xscale="log", ylim=(0, 1.02), ylabel="accuracy")
        multipliers = sorted(df["length ×"].unique())
        for ax in grid.axes.flat:
            ax.set_xticks(multipliers, [f"{m}×" for m in multipliers])
            ax.minorticks_off()
        grid.set_axis_labels("evaluated length / training length", "accuracy")
        paths.append(out / "accuracy_by_length.png")
        grid.savefig(paths[-1], dpi=120)
        plt.close(grid.figure)
    return paths


def rebuild_reports(out: Path) -> str:
    """Rebuild results.jsonl, table.md and figures from DIR/runs alone."""
    rows = [row for record in load_records(out) for row in tidy_rows(record)]
    write_jsonl(out / "results.jsonl", rows)
    table = suite_table(rows)
    write_atomic(out / "table.md", table)
    suite_figures(rows, out)
    return table


def run_configs(
    configs: Sequence[RunConfig],
    out: Path,
    progress: bool = True,
    labels: Callable[[RunConfig], dict[str, Any]] | None = None,
    keep_model: Callable[[RunConfig], bool] | None = None,
) -> None:
    """Train every config whose run is not yet stored in out/runs; store each the moment it ends.

    `labels(config)` adds fields to the stored record (e.g. the ablation name); where
    `keep_model(config)` is true the trained weights are stored beside it as runs/<id>.pt.
    """
    out.mkdir(parents=True, exist_ok=True)
    check_out_dir(out)
    runs_dir = out / "runs"
    done = {p.stem for p in runs_dir.glob("*.json")} if runs_dir.exists() else set()

    def finished(config: RunConfig) -> bool:
        # A run whose weights should be kept but are missing is not finished (it is rerun, deterministically).
        run_id = config.run_id()
        wants_weights = keep_model is not None and keep_model(config)
        return run_id in done and (not wants_weights or (runs_dir / f"{run_id}.pt").exists())

    todo = [c for c in configs if not finished(c)]
    print(f"{len(configs)} runs: {len(configs) - len(todo)} already finished in {out}, {len(todo)} to do", flush=True)
    for i, config in enumerate(todo, 1):
        run_id = config.run_id()
        print(f"[{i}/{len(todo)}] {config.model} on {config.task_name} seed {config.train.seed} "
              f"(d_model={config.mixer.d_model}, run {run_id})", flush=True)
        keep = keep_model is not None and keep_model(config)
        result = train(config, progress=progress, keep_model=keep)
        if keep and result.model is not None:
            # Weights first: a run counts as finished only once its .json exists.
            buffer = io.BytesIO()
            torch.save(result.model.state_dict(), buffer)
            write_atomic_bytes(runs_dir / f"{run_id}.pt", buffer.getvalue())
        record = {**result_record(config, result), **(labels(config) if labels else {})}
        write_atomic(runs_dir / f"{run_id}.json", json.dumps(record, default=str))
        print(f"    {result.status}: accuracy {result.accuracy:.3f} in {result.steps} steps, "
              f"{result.wall_time:.1f}s", flush=True)


def run_suite(configs: Sequence[RunConfig], out: Path, progress: bool = True) -> str:
    run_configs(configs, out, progress)
    return rebuild_reports(out)


# -------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help=f"mixer name (repeat or comma-separate to compare); one of {sorted(MIXERS)}")
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: the preset's tasks)")
    parser.add_argument("--preset", default="quick", help=f"one of {sorted(PRESETS)}")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per (model, task)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: train.device of the preset, auto)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/suite-<preset>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="section.key=value, section in task, mixer (or model), lm, train")


def run(args: argparse.Namespace) -> int:
    models = [m for item in args.model for m in item.split(",") if m]
    preset = get_preset(args.preset)
    task_names = args.tasks.split(",") if args.tasks else list(preset.tasks)
    if args.seeds < 1:
        raise SystemExit(f"--seeds={args.seeds} must be >= 1")
    try:
        configs = build_configs(models, task_names, preset, args.seeds, args.overrides, args.device)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"testbed suite: {e}") from None
    out = Path(args.out or f"runs/suite-{args.preset}")
    first = configs[0]
    print("resolved config of the first run (all runs are stored with their own):")
    print(json.dumps(first.to_dict(), indent=1, default=str))
    table = run_suite(configs, out, progress=not args.quiet)
    print()
    print(table)
    print(f"results: {out / 'results.jsonl'}, table: {out / 'table.md'}, figures: {out}/*.png")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.suite")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
