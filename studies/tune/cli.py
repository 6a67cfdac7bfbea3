"""Tune models with Optuna under one equal budget of finished trials per model, then re-train the best over seeds.

    testbed tune --task T --models a,b,... --trials N [--storage URL] [--study-prefix P] [--preset quick]
                 [--seeds S] [--final-seeds S] [--device cpu|cuda|auto] [--out DIR] [section.key=value ...]

One Optuna study per model, named `P/T/model`, searched over the model's space
(`studies.tune.search_spaces`) by a seeded TPE sampler, with the same median pruner on the held-out
score for every model; the budget counts finished trials (`studies.tune.budget`). The storage is an
SQLite file `DIR/studies.db` by default, or any SQLAlchemy URL: the same command run on several
machines against one URL is how tuning scales out (`studies.tune.storage`).

Final evaluation (`--final-seeds S`, default 5; 0 skips it): the best trial's configuration is
re-trained with seeds 1000..1000+S-1 in the study `P/T/model/confirm` (`studies.tune.study`). Then
`testbed report` builds the tables and figures from the storage alone.

An override of a searched knob (`train.lr=...`) is refused: each trial samples it. A run shortened by
`train.steps` below the preset's warmup is not: every trial sets its warmup as a tuned fraction of the steps.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import optuna

from baselines import MIXERS
from studies.checks import check_device, check_out_dir, check_preset_tasks, parse_names
from studies.config import RunConfig
from studies.floors import metric_label
from studies.presets import PRESETS, get_preset
from studies.suite.configs import check_configs
from studies.tune.budget import Interrupted, stop_on_signals
from studies.tune.jobs import confirm, tune_models
from studies.tune.search_spaces import WARMUP, get_search_space
from studies.tune.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, check_prefix, open_storage, storage_url
from studies.tune.study import base_config, check_not_searched


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task name")
    parser.add_argument("--models", required=True, help="comma-separated mixer names")
    parser.add_argument("--trials", type=int, required=True, help="finished trials per model (the budget)")
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite:///OUT/studies.db)")
    parser.add_argument("--study-prefix", default="tune", help="studies are named PREFIX/TASK/MODEL")
    parser.add_argument("--preset", default="quick", help=f"one of {sorted(PRESETS)}")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per trial (objective: mean accuracy)")
    parser.add_argument("--final-seeds", type=int, default=5, help="seeds to re-train each best config with (0: skip)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the preset's, auto)")
    parser.add_argument("--out", default="runs/tune", help="directory of the default SQLite storage")
    parser.add_argument("--heartbeat-interval", type=int, default=HEARTBEAT_INTERVAL,
                        help="seconds between heartbeats of a running trial")
    parser.add_argument("--grace-period", type=int, default=GRACE_PERIOD,
                        help="seconds without heartbeat after which a trial's worker counts as dead")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="Optuna's INFO log lines (default: warnings only)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, section in task, mixer (or model), lm, train")


def parse_models(text: str, flag: str = "--models") -> list[str]:
    """A comma-separated list of registered mixers, each once, with no empty entry."""
    models = parse_names(text, flag, "model")
    for model in models:
        if model not in MIXERS:
            raise ValueError(f"{flag}: unknown model {model!r}; models: {', '.join(MIXERS)}")
    return models


def check_numbers(args: argparse.Namespace) -> None:
    """Each numeric flag of `testbed tune` on its own, naming only the flag that is wrong."""
    bounds = {"trials": (1, "finished trials per model"), "seeds": (1, "training seeds per trial"),
              "final_seeds": (0, "0 skips the final re-training"), "sampler_seed": (0, "the TPE sampler's seed"),
              "grace_period": (1, "seconds"), "heartbeat_interval": (1, "seconds")}
    for name, (low, meaning) in bounds.items():
        value = getattr(args, name)
        if value < low:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be "
                             f"{'> 0' if meaning == 'seconds' else f'>= {low}'} ({meaning})")
    if args.heartbeat_interval >= args.grace_period:
        raise ValueError(f"--heartbeat-interval {args.heartbeat_interval} must be shorter than --grace-period "
                         f"{args.grace_period} (a live trial would look dead between two heartbeats)")


def set_optuna_verbosity(verbose: bool) -> None:
    """Optuna logs a line per trial at INFO; commands show its warnings only, unless --verbose."""
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def resolve_configs(args: argparse.Namespace, models: list[str]) -> list[RunConfig]:
    """Each model's base config, with the checks that need it: a task the preset sizes, no override of
    a searched knob, every override valid."""
    configs = []
    for model in models:
        space = get_search_space(model)
        check_not_searched(space, args.overrides, model)
        configs.append(base_config(args.task, model, args.preset, args.overrides, args.device,
                                   tuned_warmup=space.searches(WARMUP.target)))
    check_preset_tasks(args.preset, list(get_preset(args.preset).tasks), [args.task])
    return configs


def run(args: argparse.Namespace) -> int:
    set_optuna_verbosity(args.verbose)
    try:
        # Every check before anything is created: no study, database file or directory for bad input.
        check_numbers(args)
        models = parse_models(args.models)
        check_prefix(args.study_prefix)
        check_device(args.device)
        check_out_dir(args.out)
        configs = resolve_configs(args, models)
        check_configs(configs)  # the suite's checks: memory, training room; else the first trial fails on them
        url = storage_url(args.storage, args.out)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"testbed tune: {e}") from None
    try:
        with stop_on_signals():
            return _tune_and_confirm(args, models, configs, url)
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Interrupted) and stop.signal != "SIGINT"
        how = f"stopped by {stop.signal}" if terminated else "interrupted"
        raise SystemExit(f"testbed tune: {how} (a trial it was running is failed and does not count); "
                         f"rerun the same command to resume") from None


def _tune_and_confirm(args: argparse.Namespace, models: list[str], configs: list[RunConfig], url: str) -> int:
    storage = open_storage(url, args.heartbeat_interval, args.grace_period)
    print("resolved base config of the first model (each study stores its own):")
    print(json.dumps(configs[0].to_dict(), indent=1, default=str), flush=True)
    studies = tune_models(args.task, models, args.trials, storage, args.study_prefix, args.preset, args.seeds,
                          args.overrides, args.device, args.sampler_seed, progress=not args.quiet)
    metric = metric_label(configs[0].task.metric)  # one task: every model is scored on its metric
    for model, study in studies.items():
        best = study.best_trial
        print(f"{model}: best trial {best.number} {metric} {best.value:.4f} params {best.params}")
    if args.final_seeds:
        confirmed = confirm(args.task, models, storage, args.study_prefix, args.final_seeds, args.device,
                            progress=not args.quiet)
        for model, scores in confirmed.items():
            print(f"{model}: confirmed {metric} over {len(scores)} seeds: {np.mean(scores):.4f} ({scores})")
    print(f"report: testbed report --storage '{url}' --study-prefix '{args.study_prefix}'")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.tune.cli", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
