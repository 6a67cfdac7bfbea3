"""Ablate GateLoop's gating components: each named ablation on each task over several seeds.

    testbed ablate [--ablations a,b,...] [--tasks ...] [--preset ...] [--seeds S] [--out DIR]
                   [--workers N] [--threads T] [--lr-from-storage URL --lr-study-prefix P]
                   [section.key=value ...]

Every ablation keeps the width that parameter matching chose for the full model, so what changes is the
component and nothing else; ablations whose parameter count differs from `full` are flagged. The learning
rate is the same for all ablations: the preset's, or — with --lr-from-storage — the best learning rate
that `testbed tune` found for the full model on that task. The output says which. Runs are stored like
the suite's (DIR/runs/<id>.json, studies.suite), so a rerun resumes; the report is rebuilt from the stored
runs.

This module: resolve every ablation's runs, refuse bad input before anything is created or a storage is
opened, train what is not yet stored (studies.suite's runner), and rebuild the report.
"""
from __future__ import annotations

import argparse
import json
import sys

from studies.ablate.ablations import ABLATION_TASKS, ABLATIONS
from studies.ablate.configs import build_ablation_configs
from studies.ablate.lrs import tuned_learning_rates
from studies.ablate.report import STUDY_FILE, rebuild_ablation_report
from studies.atomic_io import write_atomic
from studies.checks import check_out_dir, check_storage_url, parse_names
from studies.config import RunConfig
from studies.presets import get_preset
from studies.suite.cli import add_run_arguments, check_run_arguments
from studies.suite.configs import check_configs
from studies.suite.run import RunFailed, run_configs

# The runs whose trained weights are kept for the gate-inspection figure.
INSPECT = {"memory_horizon", "state_tracking"}


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
    parser = argparse.ArgumentParser(prog="python -m studies.ablate.cli")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
