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

This module: resolve the runs, refuse bad input before anything is created, train what is not yet
stored, print the table; and the run flags and checks that `testbed ablate` shares.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from baselines import MIXERS
from studies.checks import check_at_least_one, check_device, check_out_dir, check_preset_tasks, parse_names
from studies.presets import PRESETS, Preset, get_preset
from studies.suite.configs import build_configs, check_configs
from studies.suite.records import check_manifest
from studies.suite.report import rebuild_reports
from studies.suite.run import RunFailed, run_configs
from tasks import TASKS


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help=f"mixer (repeat or comma-separate to compare): one of {sorted(MIXERS)}, or a mixer by "
                             f"import path, pkg.module:Class or path/to/file.py:Class")
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
        run_configs(configs, out, progress=not args.quiet, workers=args.workers)
    except RunFailed as e:
        raise SystemExit(f"testbed suite: {e}") from None
    table = rebuild_reports(out)
    print()
    print(table)
    print(f"results: {out / 'results.jsonl'}, table: {out / 'table.md'}, figures: {out}/*.png")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.suite.cli")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
