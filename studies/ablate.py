"""Ablate GateLoop's gating components: each named ablation on each task over several seeds.

    testbed ablate [--ablations a,b,...] [--tasks ...] [--preset ...] [--seeds S] [--out DIR]
                   [--workers N] [--threads T] [--lr-from-storage URL --lr-study-prefix P]
                   [section.key=value ...]

Every ablation keeps the width that parameter matching chose for the full model, so what changes is the
component and nothing else; ablations whose parameter count differs from `full` are flagged. The learning
rate is the same for all ablations: the preset's, or — with --lr-from-storage — the best learning rate
that `testbed tune` found for the full model on that task. The output says which. Runs are stored like
the suite's (DIR/runs/<id>.json), so a rerun resumes; the report is rebuilt from the stored runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studies.checks import check_out_dir, check_storage_url, parse_names
from studies.config import CONFIG_VERSION, RunConfig, parse_fields, parse_overrides, task_from_dict
from studies.experiments.ablations import ABLATION_TASKS, ABLATIONS
from studies.presets import get_preset
from studies.atomic_io import write_atomic
from studies.stats import compare
from studies.tables import fmt_mean_ci, human_count, markdown_table
from studies.suite import (RunFailed, add_run_arguments, build_configs, check_configs, check_run_arguments,
                           load_records, run_configs)
from studies.train import build_model
from tasks import TASKS
from tasks.shortcuts import floor

# The runs whose trained weights are kept for the gate-inspection figure.
INSPECT = {"memory_horizon", "state_tracking"}


def build_ablation_configs(
    ablations: Sequence[str],
    tasks: Sequence[str],
    preset_name: str,
    seeds: int,
    overrides: Sequence[str] = (),
    device: str | None = None,
    lr_by_task: dict[str, float] | None = None,
    threads: int | None = None,
) -> list[tuple[str, RunConfig]]:
    if not ablations:
        raise ValueError(f"the ablation list names no ablation; pass some of {list(ABLATIONS)}")
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; valid ablations: {list(ABLATIONS)}")
    base = build_configs(["gateloop"], tasks, get_preset(preset_name), seeds, overrides, device, threads)
    check_ablation_clashes(ablations, base, overrides)
    out = []
    for name in ablations:
        for config in base:
            train_cfg = config.train
            if lr_by_task is not None:
                train_cfg = dataclasses.replace(train_cfg, lr=lr_by_task[config.task_name])
            mixer = dataclasses.replace(config.mixer, **ABLATIONS[name])
            out.append((name, dataclasses.replace(config, mixer=mixer, train=train_cfg)))
    return out


def check_ablation_clashes(ablations: Sequence[str], base: Sequence[RunConfig], overrides: Sequence[str]) -> None:
    """Refuse mixer overrides that an ablation would silently replace (it sets the same knob to another
    value) or cannot be combined with (its config raises), naming each such ablation and the fix."""
    given = parse_overrides(list(overrides))["mixer"]
    if not given:
        return
    chosen = parse_fields(type(base[0].mixer), given, "model")
    clashes = {}
    for name in ablations:
        replaced = [f"sets {k}={v!r}" for k, v in ABLATIONS[name].items() if k in chosen and chosen[k] != v]
        if replaced:
            clashes[name] = ", ".join(replaced)
            continue
        for config in base:
            try:
                dataclasses.replace(config.mixer, **ABLATIONS[name])
            except ValueError as e:
                clashes[name] = str(e)
                break
    if clashes:
        kept = [a for a in ablations if a not in clashes]
        fix = f"or keep to the ablations it leaves alone: --ablations {','.join(kept)}" if kept else \
            "no selected ablation leaves it alone"
        raise ValueError(f"{' '.join(f'model.{k}={v}' for k, v in given.items())} clashes with ablation(s) "
                         + "; ".join(f"{name} ({why})" for name, why in clashes.items())
                         + f"; drop the override, {fix}")


def tuned_learning_rates(storage: str, prefix: str, tasks: Sequence[str]) -> dict[str, float]:
    """The best `train.lr` of the full model's tuning study per task (`testbed tune --models gateloop`)."""
    import optuna

    lrs = {}
    for task in tasks:
        study_name = f"{prefix}/{task}/gateloop"
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            raise ValueError(f"no study {study_name!r} in {storage}: run `testbed tune --task {task} --models gateloop "
                             f"--study-prefix {prefix}` first, or drop --lr-from-storage") from None
        try:
            params = study.best_trial.params
        except ValueError:  # optuna's "no trials are completed yet"
            raise ValueError(f"study {study_name!r} in {storage} has no finished trial yet: let `testbed tune` finish "
                             f"one, or drop --lr-from-storage") from None
        key = next((k for k in params if k.endswith("lr") and "factor" not in k), None)
        if key is None:
            raise ValueError(f"study {study_name!r} tuned no learning rate (params: {sorted(params)}); "
                             f"use a study that tunes train.lr, or drop --lr-from-storage")
        lrs[task] = float(params[key])
    return lrs


# --------------------------------------------------------------------------------------------- reporting


def _metric(record: dict[str, Any]) -> str:
    """The task's metric; runs of an older config version (other task generators) were read on token accuracy."""
    if record["config"].get("version") != CONFIG_VERSION:
        return "accuracy"
    return TASKS[record["config"]["task"]["name"]].metric


def _runs(records: list[dict[str, Any]], names: dict[str, list[str]]) -> dict[tuple[str, str], dict[str, float]]:
    """(ablation, task) -> {run id: final score on the task's metric} over seeds; a run shared by several
    names counts for each."""
    runs: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        value = r["final"][str(r["config"]["task"]["seq_len"])][_metric(r)] if r["final"] else 0.0
        for name in names[r["run_id"]]:
            runs.setdefault((name, r["config"]["task"]["name"]), {})[r["run_id"]] = value
    return runs


def ablation_table(records: list[dict[str, Any]], names: dict[str, list[str]], lr_note: str) -> str:
    """Markdown: one row per ablation; per task mean ± 95% CI and the difference to `full` (Welch p).

    `names` maps each run id to the ablations it stands for (several when their configs coincide,
    e.g. `max_heads` is the default head layout, so it shares the runs of `full`). Whether an
    ablation's runs are full's is decided by run id: distinct runs that happen to tie keep their Δ and p.
    """
    runs = _runs(records, names)
    ablations = [a for a in ABLATIONS if any(k[0] == a for k in runs)]
    tasks = sorted({t for _, t in runs})
    params = {n: r["num_parameters"] for r in records for n in names[r["run_id"]]}
    states = {n: r["state_size"] for r in records for n in names[r["run_id"]]}
    header = ["ablation", *tasks, "params", "state"]
    rows = []
    for a in ablations:
        cells = []
        for t in tasks:
            own = runs.get((a, t), {})
            if not own:
                cells.append("–")
                continue
            vals, full = list(own.values()), list(runs.get(("full", t), {}).values())
            cell = f"{fmt_mean_ci(vals)} (n={len(vals)})"
            if a != "full" and set(own) == set(runs.get(("full", t), {})):
                cell += "<br>(the runs of `full`)"
            elif a != "full" and len(full) >= 2 and len(vals) >= 2:
                diff = np.mean(vals) - np.mean(full)

                p = compare(vals, full)[0]  # Welch's t, without scipy's warning for one constant sample
                cell += f"<br>Δ {diff:+.3f}, p={p:.2g}" if np.isfinite(p) else f"<br>Δ {diff:+.3f}, p=–"
            cells.append(cell)
        flag = "" if params.get(a) == params.get("full") or "full" not in params else " (≠ full)"
        rows.append([a, *cells, human_count(params[a]) + flag, human_count(states[a])])
    rows.append(["*floor* (best no-solve baseline)", *[_floor_cell(records, t) for t in tasks], "", ""])
    metrics = {r["config"]["task"]["name"]: _metric(r) for r in records}
    shared = sorted({tuple(n) for n in names.values() if len(n) > 1})
    same = "".join(f" `{' = '.join(group)}`: identical configurations, one set of runs." for group in shared)
    scored = ", ".join(f"{t}: {'sequence exact match' if metrics[t] == 'sequence_accuracy' else 'token accuracy'}"
                       for t in tasks)
    note = (f"Held-out score at the training length ({scored}), mean ± 95% t-interval over seeds; Δ = difference "
            f"to `full`, p = Welch t-test (not corrected for multiple comparisons); floor: the best no-solve "
            f"baseline on the same held-out sets (– for runs of an older config version, made with other task "
            f"generators). {lr_note}{same}\n\n")
    return note + markdown_table(header, rows)


def _floor_cell(records: list[dict[str, Any]], task: str) -> str:
    """The floor of `task` on the held-out sets of full's seeds (every ablation shares them)."""
    mine = [r for r in records if r["config"]["task"]["name"] == task and r["config"].get("version") == CONFIG_VERSION]
    if not mine:
        return "–"
    cfg = mine[0]["config"]
    seeds = tuple(sorted({r["config"]["train"]["seed"] for r in mine}))
    name, score, _ = floor(task_from_dict(cfg), cfg["train"]["test_size"], seeds)
    return f"{score:.3f} ({name})"


def heatmap_figure(records: list[dict[str, Any]], names: dict[str, list[str]]):
    """Mean score (the task's metric) per (ablation, task) as a heatmap (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    runs = _runs(records, names)
    frame = pd.DataFrame([{"ablation": a, "task": t, "accuracy": float(np.mean(list(v.values())))}
                          for (a, t), v in runs.items()])
    grid = frame.pivot(index="ablation", columns="task", values="accuracy")
    grid = grid.reindex([a for a in ABLATIONS if a in grid.index])
    # Constrained layout makes room for the title and the colorbar's label, which tight_layout clipped
    # when one task made the figure narrow.
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * grid.shape[1] + 3), 0.45 * grid.shape[0] + 1.8),
                           layout="constrained")
    sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax,
                cbar_kws={"label": "held-out score (task's metric)"})
    ax.set_title("GateLoop ablations\nmean held-out score over seeds")
    ax.set(xlabel="task", ylabel="")
    ax.tick_params(axis="y", rotation=0)  # ablation names read horizontally, one per row
    return fig


def ablation_heatmap(records: list[dict[str, Any]], names: dict[str, list[str]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = heatmap_figure(records, names)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gate_figure(out: Path, records: list[dict[str, Any]], path: Path, channels: int = 4) -> bool:
    """|a_n| and arg a_n over positions of one held-out sequence, for the trained `full` models kept.

    Shows the first layer's gates for the `channels` channels whose |a| varies most along the sequence
    (the most data-controlled ones), with the input tokens on the x axis. Reads stored weights only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from studies.config import run_config_from_dict
    from tasks import TaskData

    kept = [r for r in records if (out / "runs" / f"{r['run_id']}.pt").exists()]
    kept = sorted(kept, key=lambda r: r["config"]["task"]["name"])
    if not kept:
        return False
    length = max(r["config"]["task"]["seq_len"] for r in kept)
    # Wide enough for one readable token label per position; the legend goes beside the axes, not on the lines.
    fig, axes = plt.subplots(2 * len(kept), 1, figsize=(max(10.0, 0.24 * length + 2.5), 4.2 * len(kept)),
                             squeeze=False, layout="constrained")
    for i, record in enumerate(kept):
        config = run_config_from_dict(record["config"])
        model = build_model(config)
        model.load_state_dict(torch.load(out / "runs" / f"{record['run_id']}.pt", weights_only=True))
        model.eval()
        tokens = TaskData(config.task, seed=config.train.seed, test_size=1).test.inputs[:1]  # (1, L)
        block = model.blocks[0]
        with torch.no_grad():
            a = block.mixer.gates(block.mixer_norm(model.embedding(tokens)))[0]  # (L, H, K)
        a = a.reshape(a.shape[0], -1)  # (L, H·K)
        magnitude, angle = a.abs(), a.angle()
        chosen = magnitude.std(0).argsort(descending=True)[:channels]
        names = config.task.token_names()
        labels = [names[t] for t in tokens[0].tolist()]
        ax_m, ax_p = axes[2 * i, 0], axes[2 * i + 1, 0]
        for c in chosen.tolist():
            ax_m.plot(magnitude[:, c].numpy(), marker=".", label=f"channel {c}")
            ax_p.plot(angle[:, c].numpy(), marker=".", label=f"channel {c}")
        ax_m.set(ylabel="|a_n|", title=f"{config.task_name}: layer-1 gates of the trained full GateLoop "
                                       f"(accuracy {record['final'][str(config.task.seq_len)]['accuracy']:.2f})")
        ax_p.set(ylabel="arg a_n (rad)", xlabel="input token at position n (one held-out sequence)")
        ax_m.set_xticks(range(len(labels)), [])
        ax_p.set_xticks(range(len(labels)), labels, fontsize=8, rotation=90)
        for ax in (ax_m, ax_p):
            ax.set_xlim(-0.5, len(labels) - 0.5)
            ax.grid(alpha=0.3)
        ax_m.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


STUDY_FILE = "ablation_study.json"  # run id -> ablation names, and the learning-rate note


def rebuild_ablation_report(out: Path) -> str:
    """Rebuild ablations.md and the figures from DIR/runs and DIR/ablation_study.json alone."""
    study = json.loads((out / STUDY_FILE).read_text())
    names = study["ablations"]
    records = [r for r in load_records(out) if r["run_id"] in names]
    table = ablation_table(records, names, study["lr_note"])
    write_atomic(out / "ablations.md", table)
    ablation_heatmap(records, names, out / "ablation_heatmap.png")
    gate_figure(out, [r for r in records if "full" in names[r["run_id"]]], out / "gates.png")
    return table


# -------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ablations", default=",".join(ABLATIONS), help=f"comma-separated, from {list(ABLATIONS)}")
    parser.add_argument("--tasks", default=None, help=f"comma-separated (default: the preset's share of {list(ABLATION_TASKS)})")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="output directory (default: runs/ablate-<preset>)")
    parser.add_argument("--lr-from-storage", default=None, metavar="URL",
                        help="take each task's learning rate from the full model's tuning study in this storage")
    parser.add_argument("--lr-study-prefix", default=None,
                        help="study prefix used with --lr-from-storage (default: tune)")
    add_run_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="section.key=value (task, mixer, lm, train)")


def run(args: argparse.Namespace) -> int:
    try:
        preset = get_preset(args.preset)
        ablations = parse_names(args.ablations, "--ablations", "ablation")
        tasks = (parse_names(args.tasks, "--tasks", "task") if args.tasks is not None
                 else [t for t in ABLATION_TASKS if t in preset.tasks])
        if not tasks:
            raise ValueError(f"preset {args.preset!r} has none of the ablation tasks {list(ABLATION_TASKS)}; "
                             f"pass some of its tasks with --tasks ({', '.join(preset.tasks)})")
        out = check_out_dir(args.out if args.out is not None else f"runs/ablate-{args.preset}")
        if args.lr_study_prefix is not None and not args.lr_from_storage:
            raise ValueError(f"--lr-study-prefix {args.lr_study_prefix!r} is read only with --lr-from-storage; add "
                             f"--lr-from-storage URL (the tuning studies' storage), or drop --lr-study-prefix")
        check_run_arguments(args, args.preset, preset, tasks, out)
        # Resolved once without tuned rates first, so that bad input is refused before a storage is opened.
        check_configs([c for _, c in build_ablation_configs(ablations, tasks, args.preset, args.seeds,
                                                            args.overrides, args.device, None, args.threads)])
        lr_by_task = None
        if args.lr_from_storage:
            args.lr_from_storage = check_storage_url(args.lr_from_storage, "--lr-from-storage", must_exist=True)
            prefix = "tune" if args.lr_study_prefix is None else args.lr_study_prefix
            if not prefix:
                raise ValueError("--lr-study-prefix '' names no prefix; pass the --study-prefix the studies were "
                                 "tuned with (testbed tune's default: tune)")
            lr_by_task = tuned_learning_rates(args.lr_from_storage, prefix, tasks)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"testbed ablate: {e}") from None
    labelled = build_ablation_configs(ablations, tasks, args.preset, args.seeds, args.overrides, args.device,
                                      lr_by_task, args.threads)
    if lr_by_task:
        lr_note = "Learning rate per task: the full model's tuned value " + ", ".join(f"{t}={lr:.3g}" for t, lr in lr_by_task.items()) + f" (from {args.lr_from_storage}), the same for every ablation."
    else:
        lr_note = f"Learning rate fixed to the `{args.preset}` preset's value for every ablation (not tuned)."
    print(lr_note)
    names: dict[str, list[str]] = {}
    unique: dict[str, RunConfig] = {}
    for name, config in labelled:
        names.setdefault(config.run_id(), []).append(name)
        unique.setdefault(config.run_id(), config)
    try:
        run_configs(
            list(unique.values()), out, progress=not args.quiet, workers=args.workers,
            keep_model=lambda c: "full" in names[c.run_id()] and c.train.seed == 0 and c.task_name in INSPECT,
            describe=lambda c: f"ablation {' = '.join(names[c.run_id()])} on {c.task_name} seed {c.train.seed}",
        )
    except RunFailed as e:
        raise SystemExit(f"testbed ablate: {e}") from None
    write_atomic(out / STUDY_FILE, json.dumps({"lr_note": lr_note, "ablations": names}, indent=1))
    table = rebuild_ablation_report(out)
    print()
    print(table)
    print(f"table: {out / 'ablations.md'}, figures: {out / 'ablation_heatmap.png'}, {out / 'gates.png'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.ablate")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
