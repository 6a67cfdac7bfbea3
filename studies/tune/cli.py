"""Tune models with Optuna under one protocol for every model, then re-train the best over fresh seeds.

    testbed tune --task T --models a,b,... [--protocol v2|v1] [--trials N (v1)] [--storage URL]
                 [--study-prefix P] [--preset quick] [--seeds S] [--final-seeds S] [--no-prune-before STEPS]
                 [--device cpu|cuda|auto] [--out DIR] [section.key=value ...]

One Optuna study per model, named `P/T/model`. The storage is an SQLite file `DIR/studies.db` by
default, or any SQLAlchemy URL: the same command run on several machines against one URL is how tuning
scales out (`studies.tune.storage`).

Protocol v2 (the default; issue 24): every decision reads a validation set disjoint from the test set
(`train.validation_size`, by default the preset's test_size); the learning rate is searched by the rule
of `studies.tune.lr_search` (a shared log-spaced start grid, extended past any edge winner, refined to a
quarter decade; the other knobs stay at the preset's values), so the study ends when the rule asks for
no more trials, not after a count; each trial trains 2 seeds; the pruner is plateau-safe halving (no
rung before `--no-prune-before`, by default half the run, and no trial pruned while any of its seeds is
above the rung's bar). Protocol v1: a seeded TPE over the model's whole space
(`studies.tune.search_spaces`) with the median pruner, on a budget of `--trials` finished trials
(`studies.tune.budget`), decisions and reports on the test set.

Final evaluation (`--final-seeds S`, default 5; 0 skips it): the best trial's configuration is
re-trained with seeds 1000..1000+S-1 in the study `P/T/model/confirm` (`studies.tune.study`); under v2
every step (a preset's early stop applies to the tuning trials only), under v1 as its trials stopped. Then
`testbed report` builds the tables and figures from the storage alone.

An override of a searched knob (`train.lr=...`) is refused: each trial samples it. Under v1, a run shortened
by `train.steps` below the preset's warmup is not: every trial sets its warmup as a tuned fraction of the steps.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import optuna

from baselines import MIXERS, get_mixer
from baselines.import_path import IMPORT_PATH_FORMS, installed_mixers, is_import_path, mixer_label
from studies.checks import check_device, check_out_dir, check_preset_tasks, parse_names
from studies.config import RunConfig
from studies.floors import metric_label
from studies.presets import PRESETS, get_preset
from studies.suite.configs import check_configs
from studies.tune.budget import Interrupted, stop_on_signals
from studies.tune.jobs import confirm, tune_models
from studies.tune.queries import best_trial
from studies.tune.search_spaces import WARMUP
from studies.tune.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, check_prefix, open_storage, storage_url
from studies.tune.study import base_config, check_not_searched, tuning_space

PROTOCOLS = ("v2", "v1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task name")
    parser.add_argument("--models", required=True,
                        help="comma-separated mixer names or import paths (pkg.module:Class, path/to/file.py:Class)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="v2",
                        help="v2 (default): validation apart from test, the learning-rate rule, plateau-safe "
                             "pruning; v1: TPE over every knob on a budget of --trials, decisions on the test set")
    parser.add_argument("--trials", type=int, default=None,
                        help="v1 only: finished trials per model (the budget; under v2 the rule ends a study)")
    parser.add_argument("--no-prune-before", type=int, default=None,
                        help="v2: no pruning before this step (the plateau-escape window; default: half the steps)")
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite:///OUT/studies.db)")
    parser.add_argument("--study-prefix", default="tune", help="studies are named PREFIX/TASK/MODEL")
    parser.add_argument("--preset", default="quick", help=f"one of {sorted(PRESETS)}")
    parser.add_argument("--seeds", type=int, default=None,
                        help="training seeds per trial (objective: their mean score; default 2 under v2, 1 under v1)")
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
    """A comma-separated list of mixers (registered or installed names, or import paths), each once, with no
    empty entry, and no two that would share a study (an import path's study is named after its class)."""
    models = parse_names(text, flag, "model")
    for model in models:
        if model not in MIXERS and not is_import_path(model) and model not in installed_mixers():
            raise ValueError(f"{flag}: unknown model {model!r}; models: {', '.join(MIXERS)} (or a mixer by import "
                             f"path, {IMPORT_PATH_FORMS})")
        try:
            get_mixer(model)
        except ValueError as e:
            raise ValueError(f"{flag}: {e}") from None
    labels = [mixer_label(model) for model in models]
    shared = sorted({label for label in labels if labels.count(label) > 1})
    if shared:
        raise ValueError(f"{flag}: {', '.join(shared)} would name the studies of two models (an import path's study "
                         f"is named after its class); tune them under separate --study-prefix")
    return models


def check_numbers(args: argparse.Namespace) -> None:
    """Each numeric flag of `testbed tune` on its own, naming only the flag that is wrong."""
    bounds = {"trials": (1, "finished trials per model"), "seeds": (1, "training seeds per trial"),
              "final_seeds": (0, "0 skips the final re-training"), "sampler_seed": (0, "the TPE sampler's seed"),
              "grace_period": (1, "seconds"), "heartbeat_interval": (1, "seconds"),
              "no_prune_before": (0, "a step")}
    for name, (low, meaning) in bounds.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be "
                             f"{'> 0' if meaning == 'seconds' else f'>= {low}'} ({meaning})")
    if args.heartbeat_interval >= args.grace_period:
        raise ValueError(f"--heartbeat-interval {args.heartbeat_interval} must be shorter than --grace-period "
                         f"{args.grace_period} (a live trial would look dead between two heartbeats)")


def set_optuna_verbosity(verbose: bool) -> None:
    """Optuna logs a line per trial at INFO; commands show its warnings only, unless --verbose."""
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def check_protocol(args: argparse.Namespace) -> None:
    """The flags each protocol takes: a budget of trials is v1's, the escape window v2's; fills the
    protocol's default seeds per trial."""
    if args.protocol == "v2":
        if args.trials is not None:
            raise ValueError(f"--trials {args.trials} is protocol v1's budget; under v2 the learning-rate rule ends "
                             f"each study: drop --trials, or pass --protocol v1")
        args.seeds = 2 if args.seeds is None else args.seeds
    else:
        if args.trials is None:
            raise ValueError("--protocol v1 tunes on a budget of finished trials: give --trials N")
        if args.no_prune_before is not None:
            raise ValueError("--no-prune-before is protocol v2's escape window; v1's median pruner has none")
        args.seeds = 1 if args.seeds is None else args.seeds


def resolve_configs(args: argparse.Namespace, models: list[str]) -> list[RunConfig]:
    """Each model's base config, with the checks that need it: a task the preset sizes, no override of
    a searched knob, every override valid. Under v2 the decision rows are a validation set as large as
    the test set unless `train.validation_size` says otherwise (not 0: that is v1), and the escape
    window defaults to half the run."""
    check_preset_tasks(args.preset, list(get_preset(args.preset).tasks), [args.task])
    configs = []
    for model in models:
        sampler = "lr_rule" if args.protocol == "v2" else "tpe"
        space = tuning_space(model, sampler, None, args.trials)
        check_not_searched(space, args.overrides, model)
        config = base_config(args.task, model, args.preset, args.overrides, args.device,
                             tuned_warmup=space.searches(WARMUP.target))
        if args.protocol == "v2" and not any(o.startswith("train.validation_size=") for o in args.overrides):
            args.overrides = [*args.overrides, f"train.validation_size={config.train.test_size}"]
            config = base_config(args.task, model, args.preset, args.overrides, args.device,
                                 tuned_warmup=space.searches(WARMUP.target))
        if args.protocol == "v2" and not config.train.validation_size:
            raise ValueError("train.validation_size=0 makes every decision read the test set, which is protocol "
                             "v1: give it a positive size (default: the test_size), or pass --protocol v1")
        configs.append(config)
    steps = configs[0].train.steps
    if args.protocol == "v2":
        args.no_prune_before = steps // 2 if args.no_prune_before is None else args.no_prune_before
        if args.no_prune_before > steps:
            raise ValueError(f"--no-prune-before {args.no_prune_before} is past the run's last step "
                             f"(train.steps={steps}); give a step in [0, {steps}]")
    return configs


def run(args: argparse.Namespace) -> int:
    set_optuna_verbosity(args.verbose)
    try:
        # Every check before anything is created: no study, database file or directory for bad input.
        check_numbers(args)
        check_protocol(args)
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
    protocol = (dict(sampler="lr_rule", pruner="safe_sha", no_prune_before=args.no_prune_before)
                if args.protocol == "v2" else dict(sampler="tpe", pruner="median"))
    studies = tune_models(args.task, models, args.trials, storage, args.study_prefix, args.preset, args.seeds,
                          args.overrides, args.device, args.sampler_seed, progress=not args.quiet, **protocol)
    metric = metric_label(configs[0].task.metric)  # one task: every model is scored on its metric
    rows = "validation" if args.protocol == "v2" else "test"
    for model, study in studies.items():
        best = best_trial(study)
        value = "pruned" if best.value is None else f"{best.value:.4f}"
        print(f"{model}: best trial {best.number} {metric} {value} (on the {rows} rows) params {best.params}")
    if args.final_seeds:
        # v2's confirm runs train every step (a run stopped at its validation target leaves its test score
        # either side of it by sampling alone); v1's stopped as its tuning trials did, as its studies ran.
        confirmed = confirm(args.task, models, storage, args.study_prefix, args.final_seeds, args.device,
                            progress=not args.quiet, every_step=args.protocol == "v2")
        for model, scores in confirmed.items():
            print(f"{model}: confirmed {metric} over {len(scores)} seeds: {np.mean(scores):.4f} ({scores})")
    print(f"report: testbed report --storage '{url}' --study-prefix '{args.study_prefix}'")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.tune.cli", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
