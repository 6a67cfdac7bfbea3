"""List the tasks, print one decoded example, or audit the tasks' no-solve baselines.

    testbed tasks                                  # every task, its knobs and defaults
    testbed tasks show mqar num_kv_pairs=4 seq_len=24 --seed 3
    testbed tasks audit --preset headline          # chance, oracle and every baseline per task, as Markdown

The audit scores each task of the preset at the preset's sizes on the held-out sets its final runs are
evaluated on: `TaskData(task, seed, test_size).test` for seeds 1000-1004 (the confirm seeds of
studies/tune/study.py) and the preset's test_size, pooled.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from studies.checks import UNSIZED_PRESETS, parse_names
from studies.config import parse_value
from studies.presets import PRESETS
from tasks import IGNORE, TASKS, Task, make_task
from tasks.shortcuts import AUDIT_SEEDS, audit, audit_markdown, held_out_batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="{show,audit}")
    show = sub.add_parser("show", help="print one decoded example: inputs, targets, scored positions, metadata")
    show.add_argument("name", help=f"task name: {', '.join(TASKS)}")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="knob overrides, e.g. num_kv_pairs=4")
    show.add_argument("--seed", type=int, default=0, help="generator seed for the example")
    check = sub.add_parser("audit", help="chance, oracle and every no-solve baseline per task, as Markdown tables")
    check.add_argument("--preset", default="headline", help=f"whose tasks, sizes and test_size: {', '.join(PRESETS)}")
    check.add_argument("--tasks", default=None, help="comma-separated subset of the preset's tasks (default: all)")


def run(args: argparse.Namespace) -> int:
    if args.action is None:
        print(list_tasks())
        return 0
    if args.action == "audit":
        return run_audit(args.preset, args.tasks)
    try:
        task = make_task(args.name, **parse_overrides(args.name, args.overrides))
    except ValueError as error:
        print(f"testbed tasks show: error: {error}", file=sys.stderr)
        return 2
    print(show_example(task, args.seed))
    return 0


def parse_overrides(name: str, items: list[str]) -> dict[str, object]:
    """["num_kv_pairs=4", ...] -> {"num_kv_pairs": 4}, each value parsed as its dataclass field's type by
    the one override parser (`studies.config.parse_value`: the rules of `testbed suite task.x=...`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}")
    types = TASKS[name].knob_types()
    parsed: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        if key not in types:
            raise ValueError(f"{name}: unknown knob {key!r}; its knobs are {', '.join(types)}")
        kind = types[key]
        try:
            parsed[key] = parse_value(text, kind, f"{name}.{key}")
        except ValueError:
            raise ValueError(f"{name}: {key} expects {kind.__name__}, got {text!r}") from None
    return parsed


def list_tasks() -> str:
    lines = []
    for name, cls in TASKS.items():
        task = cls()
        summary = (sys.modules[cls.__module__].__doc__ or "").strip().split("\n")[0]
        knobs = "  ".join(f"{key}={value}" for key, value in cls.knobs().items())
        extra = ", extrapolates" if cls.extrapolates else ""
        lines += [f"{name} — {summary}", f"    {knobs}    (vocab_size {task.vocab_size}{extra}, metric {cls.metric})"]
    return "\n".join(lines)


def show_example(task: Task, seed: int) -> str:
    """One sampled sequence as a table: position, input, target (with * where scored), then metadata."""
    batch = task.sample(1, torch.Generator().manual_seed(seed))
    names = task.token_names()
    per_position = {key: value[0].tolist() for key, value in batch.meta.items() if value.dim() == 2}
    per_sequence = {key: int(value[0]) for key, value in batch.meta.items() if value.dim() == 1}
    header = ["pos", "input", "target", *per_position]
    rows = []
    for t, (x, y) in enumerate(zip(batch.inputs[0].tolist(), batch.targets[0].tolist())):
        target = f"{names[y]} *" if y != IGNORE else "."
        rows.append([str(t), names[x], target, *(str(values[t]) for values in per_position.values())])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"{task}  vocab_size={task.vocab_size}  seed={seed}"]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    scored = [str(t) for t, y in enumerate(batch.targets[0].tolist()) if y != IGNORE]
    lines.append(f"scored positions (*): {', '.join(scored)}")
    lines += [f"{key}: {value}" for key, value in per_sequence.items()]
    return "\n".join(lines)


def run_audit(preset_name: str, task_list: str | None) -> int:
    """Print the audit of a preset's tasks; 2 with one line on stderr for a bad preset or task name."""
    if preset_name not in PRESETS:
        print(f"testbed tasks audit: error: unknown preset {preset_name!r}; valid presets: {', '.join(PRESETS)}",
              file=sys.stderr)
        return 2
    if preset_name in UNSIZED_PRESETS:
        # Those presets hold only shared training settings; each study variant fixes its own knobs, so an
        # audit of the tasks' defaults would look like the study's floors without being them.
        print(f"testbed tasks audit: error: preset {preset_name!r} sizes no task itself (the capability study's "
              f"variants do); its floors are in the capability report (testbed capability)", file=sys.stderr)
        return 2
    preset = PRESETS[preset_name]
    try:
        names = list(preset.tasks) if task_list is None else parse_names(task_list, "--tasks")
    except ValueError as error:
        print(f"testbed tasks audit: error: {error}", file=sys.stderr)
        return 2
    unknown = [name for name in names if name not in preset.tasks]
    if unknown:
        print(f"testbed tasks audit: error: task(s) {', '.join(unknown)} not in preset {preset_name!r}; "
              f"its tasks are {', '.join(preset.tasks)}", file=sys.stderr)
        return 2
    test_size = preset.train["test_size"]
    start = time.perf_counter()
    rows = [audit(task, held_out_batch(task, test_size))
            for task in (make_task(name, **preset.tasks[name]) for name in names)]
    print(f"## Shortcut audit, preset {preset_name}: test_size {test_size} x seeds "
          f"{AUDIT_SEEDS[0]}-{AUDIT_SEEDS[-1]} (TaskData test sets, pooled)")
    print()
    print("\n".join(f"- {row.task}" for row in rows))
    print()
    print(audit_markdown(rows))
    print(f"\n({time.perf_counter() - start:.1f} s)")
    return 0
