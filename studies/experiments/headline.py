"""The headline study: does data-controlled complex gating (GateLoop) beat fixed transitions?

    testbed headline [--storage URL] [--out results/headline] [--device ...] [--quiet]

Every model gets the same tasks, backbone, data, steps and parameter budget (the `headline` preset),
the same tuning budget (`trials` finished Optuna trials per task), and its best configuration is
re-trained with `final_seeds` fresh seeds; the report (tables with 95 % bootstrap CIs, Welch and
Mann–Whitney p-values of GateLoop vs each model, Holm-corrected; figures) is built from the storage
alone. Everything is resumable: rerun the same command and it continues where it stopped. Several
workers may run the same command against one storage (one SQLite file on one machine, or a
PostgreSQL URL across machines); the per-model budgets stay exact.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from studies.report import build_report
from studies.tune import confirm, default_storage, open_storage, tune_models


@dataclass(frozen=True)
class Experiment:
    tasks: tuple[str, ...]
    models: tuple[str, ...]
    preset: str
    trials: int  # finished Optuna trials per model per task
    final_seeds: int  # re-training seeds of each model's best configuration
    prefix: str  # study names: PREFIX/TASK/MODEL (and .../confirm)


HEADLINE = Experiment(
    # memory_horizon and state_tracking before induction_heads: the ablation study takes the full
    # model's tuned learning rate on those tasks from this study, so they are needed first.
    tasks=("mqar", "selective_copy", "memory_horizon", "state_tracking", "induction_heads"),
    models=("gateloop", "s4d", "s5", "lru", "retnet", "mamba", "attention"),
    preset="headline",
    trials=8,
    final_seeds=5,
    prefix="headline",
)


def run_experiment(experiment: Experiment, storage_url: str, out: Path, device: str | None = None,
                   progress: bool = True) -> str:
    """Tune, confirm and report every (task, model) of the experiment; resumable and multi-worker safe.

    Task by task, so that an interrupted study has complete results for the tasks it finished.
    """
    storage = open_storage(storage_url)
    for task in experiment.tasks:
        tune_models(task, experiment.models, experiment.trials, storage, experiment.prefix, experiment.preset,
                    device=device, progress=progress)
        confirm(task, experiment.models, storage, experiment.prefix, experiment.final_seeds, device, progress)
        build_report(storage, experiment.prefix, out)  # refreshed after every task: partial results are readable
    return build_report(storage, experiment.prefix, out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite:///OUT/studies.db)")
    parser.add_argument("--out", default="results/headline", help="report directory")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    url = args.storage or default_storage(out)
    print(HEADLINE)
    print(run_experiment(HEADLINE, url, out, args.device, progress=not args.quiet))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.experiments.headline", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
