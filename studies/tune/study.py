"""Open a study: create it, or resume it after checking that it was made the same way.

One Optuna study per (prefix, task, model), named `P/T/model` (`studies.tune.storage.study_name`),
searched over the model's space in `studies.tune.search_spaces` by a seeded sampler
(`studies.tune.samplers`), with the same pruner for every model (`studies.tune.pruners`). Model labels
(`ModelSpec`: a mixer with overrides) and a task label replace the names in a study's name.

A study stores what must match for old and new trials to be comparable, and a resumed study that
stored something else is refused rather than mixed: study attrs `task`, `model`, `seeds_per_trial`,
`config_version`, `search_space`, `search_space_version`, `search_space_fingerprint`, `base_config`,
`sampler`, `pruner`, `intermediate_values` (the exact sampler and pruner settings), and, not compared,
`preset`, `overrides`, `budget`. A confirm study `P/T/model/confirm` stores the tuning trial it
re-trains (`source_trial`, `params`, `config`); a re-training study (`open_retrain_study`) its config and
the caller's attrs.

Final evaluation: the best trial's configuration is re-trained with seeds CONFIRM_SEED_OFFSET.. (1000..),
disjoint from the tuning seeds (train.seed onwards, 0 by default) — each seed also draws its own
held-out set, so a configuration is not judged on the set it was picked on.
"""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from baselines.import_path import mixer_label
from studies.config import CONFIG_VERSION, RunConfig, TrainConfig, as_stored
from studies.presets import get_preset
from studies.suite.configs import build_configs
from studies.tune.lr_search import LrSearch
from studies.tune.queries import best_trial, find_study
from studies.tune.pruners import PRUNERS, make_pruner, make_safe_sha_pruner, make_sha_pruner
from studies.tune.samplers import SAMPLERS, LrRuleSampler, make_grid_sampler, make_sampler
from studies.tune.search_spaces import SEARCH_SPACE_VERSION, WARMUP, Knob, SearchSpace, get_search_space
from studies.tune.storage import jsonable, study_name
from tasks.shortcuts import floor as shortcut_floor

CONFIRM_SEED_OFFSET = 1000  # final-evaluation seeds start here; tuning seeds are 0..seeds-1


@dataclass(frozen=True)
class ModelSpec:
    """A mixer under a label of its own, with mixer overrides (e.g. `mixer.phase=zero`): tuned in the
    study PREFIX/TASK/LABEL. A plain mixer name is the spec (name, name, ()); a mixer by import path is
    labelled by its class name (`examples/gla_mixer.py:GLA` -> GLA: a study's name holds no '/')."""

    label: str
    model: str
    overrides: tuple[str, ...] = ()


def as_spec(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else ModelSpec(mixer_label(model), model)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config without what may differ between workers of one study (the device)."""
    train_cfg = {k: v for k, v in config["train"].items() if k not in ("device", "seed")}
    return {**config, "train": train_cfg}


def base_config(task: str, model: str, preset: str, overrides: Sequence[str] = (),
                device: str | None = None, tuned_warmup: bool = False) -> RunConfig:
    """The resolved config (parameter-matched width, seed 0) a study's trials start from.

    With `tuned_warmup` (the study searches warmup as a fraction of the steps, so no trial trains with
    the preset's warmup), a run shortened by `train.steps` below the preset's warmup_steps is not
    refused over it: the base config then has warmup 0. Otherwise it has the preset's warmup.
    """
    extra = ["train.warmup_steps=0"] if tuned_warmup else []
    (config,) = build_configs([model], [task], get_preset(preset), 1, [*overrides, *extra], device)
    if tuned_warmup:
        kept = get_preset(preset).train.get("warmup_steps", TrainConfig.warmup_steps)
        if kept < config.train.steps:
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, warmup_steps=kept))
    return config


def check_not_searched(space: SearchSpace, overrides: Sequence[str], model: str) -> None:
    """Refuse an override of a knob the study searches: every trial would set that field to its sampled
    value, and the override would be ignored in silence."""
    clashes = space.overridden_by(overrides)
    if clashes:
        named = "; ".join(f"{item} sets {k.target}, which the tuner searches as {k.name!r} in "
                          f"[{k.low:g}, {k.high:g}]{' (a fraction of train.steps)' if k.fraction_of_steps else ''}"
                          for item, k in clashes)
        raise ValueError(f"{named} for {model}: remove the override (each trial samples it), or change "
                         f"{model}'s search space in studies/tune/search_spaces.py")


def rule_knob(search: LrSearch) -> Knob:
    """The learning rate as the rule searches it: log scale, between the rule's declared bounds."""
    return Knob("lr", "train.lr", 10.0 ** search.low, 10.0 ** search.high, log=True)


def tuning_space(model: str, sampler: str, grid: dict[str, Sequence[float]] | None,
                 trials: int | None, lr_search: LrSearch | None = None) -> SearchSpace:
    """The knobs a study of `model` searches: with `sampler="lr_rule"` the learning rate alone (the rule's
    bounds; every other knob stays at the preset's value), with `sampler="grid"` only the grid's knobs
    (checked against the space's ranges; the budget must be the grid's size), else its whole space."""
    if sampler == "lr_rule":
        return SearchSpace((rule_knob(lr_search or LrSearch()),))
    space = get_search_space(model)
    if sampler != "grid":
        return space
    if not grid:
        raise ValueError("sampler='grid' needs a grid, e.g. {'lr': (1e-3, 3e-3)}")
    unknown = sorted(set(grid) - {k.name for k in space.knobs})
    if unknown:
        raise ValueError(f"grid knob(s) {unknown} are not in {model}'s space {[k.name for k in space.knobs]}")
    space = SearchSpace(tuple(k for k in space.knobs if k.name in grid))
    outside = {k.name: v for k in space.knobs for v in grid[k.name] if not k.low <= v <= k.high}
    if outside:
        raise ValueError(f"grid value(s) {outside} lie outside the search space's ranges {space.describe()}")
    points = math.prod(len(v) for v in grid.values())
    if trials != points:
        raise ValueError(f"a grid of {points} points is tuned with a budget of exactly {points} trials, not {trials}")
    return space


def describe_tuner(sampler: str, pruner: str, steps: int, seed: int,
                   grid: dict[str, Sequence[float]] | None, floor: float | None = None,
                   lr_search: LrSearch | None = None, no_prune_before: int = 0) -> dict[str, Any]:
    """What ran, for the study's user attrs and the report: the exact sampler and pruner settings.

    The names are stored in every study and compared when it resumes: they stay as the studies wrote
    them (`studies.tune.RetryingGridSampler` is now in studies.tune.samplers, the pruner in
    studies.tune.pruners)."""
    search = lr_search or LrSearch()
    samplers = {
        "lr_rule": {"name": "studies.tune.samplers.LrRuleSampler (protocol v2: the learning-rate rule of "
                            "studies.tune.lr_search: the start grid, one step past an edge winner up to the bounds, "
                            "refined to `finest` decades around the best)",
                    "start_decades": list(search.start), "bounds_decades": [search.low, search.high],
                    "finest_decades": search.finest, "tie": search.tie},
        # the start-up count as its rule: a budget may be extended (see open_tuning_study), the rule stays
        "tpe": {"name": "TrialSeededTPE (optuna TPESampler, multivariate, constant_liar, seeded per trial)",
                "seed": seed, "n_startup_trials": "max(3, budget // 4)"},
        "grid": {"name": "studies.tune.RetryingGridSampler (optuna.samplers.GridSampler; a failed trial's point "
                         "is tried again)", "seed": seed, "grid": grid},
    }
    pruners = {
        "safe_sha": {"name": "studies.tune.pruners.PlateauSafeHalvingPruner (protocol v2: tolerant halving with no "
                             "rung before the escape window and no trial pruned while any of its seeds is at or "
                             "above the rung's bar)",
                     "min_resource": max(1, steps // 4, no_prune_before), "max_resource": steps, "reduction_factor": 2,
                     "margin": 0.05, "floor": None if floor is None else round(floor, 6), "plateau_margin": 0.1,
                     "no_prune_before": no_prune_before,
                     "failed_trials": "not counted at a rung (a re-queued copy carries their values)"},
        "median": {"name": "optuna.pruners.MedianPruner", "n_startup_trials": 3, "n_warmup_steps": steps // 4},
        "sha": {"name": "studies.tune.TolerantHalvingPruner (asynchronous successive halving, the rule of "
                        "optuna.pruners.SuccessiveHalvingPruner, pruning only below the rung's top half by > margin, "
                        "and only once the rung's best is above the floor by > plateau_margin)",
                "min_resource": max(1, steps // 4), "max_resource": steps, "reduction_factor": 2, "margin": 0.05,
                "floor": None if floor is None else round(floor, 6), "plateau_margin": 0.1,
                "failed_trials": "not counted at a rung (a re-queued copy carries their values)"},
    }
    return {"sampler": samplers[sampler], "pruner": pruners[pruner],
            "intermediate_values": "held-out accuracy at each eval step, the mean over the trial's seeds, "
                                   "reported while its last seed trains"}


def decision_rows(config: RunConfig) -> str:
    """Which rows a study's decisions read, for its user attrs and the report."""
    if config.train.validation_size:
        return (f"validation set ({config.train.validation_size} rows per seed, disjoint from the test set): "
                f"early stopping, pruning and the choice of the best trial; test set: reported scores only")
    return "test set (protocol v1: early stopping, pruning, the choice of the best trial and reported scores)"


def open_tuning_study(storage: optuna.storages.BaseStorage, prefix: str, task: str, model: str, preset: str,
                      overrides: Sequence[str], trials: int, seeds: int = 1, sampler_seed: int = 0,
                      device: str | None = None, label: str | None = None, task_label: str | None = None,
                      sampler: str = "tpe", pruner: str = "median",
                      grid: dict[str, Sequence[float]] | None = None, lr_search: LrSearch | None = None,
                      no_prune_before: int = 0) -> tuple[optuna.Study, RunConfig, SearchSpace]:
    """Create or resume the study of one model; refuse one created under another space or config.

    `label` and `task_label` replace the model and task in the study name (a model label or task variant
    whose settings are in `overrides`). `sampler="grid"` searches exactly the knobs in `grid` over its
    values (the budget must be the grid's size); `sampler="lr_rule"` searches the learning rate by
    `lr_search`'s rule (`trials` is then unused: the rule ends the study); `pruner="sha"` is successive
    halving, `pruner="safe_sha"` its plateau-safe form with no rung before `no_prune_before`. An override
    of a searched knob is refused (`check_not_searched`).
    """
    if sampler not in SAMPLERS or pruner not in PRUNERS:
        raise ValueError(f"sampler={sampler!r} must be one of {SAMPLERS}, pruner={pruner!r} one of {PRUNERS}")
    space = tuning_space(model, sampler, grid, trials, lr_search)
    check_not_searched(space, overrides, label or model)
    config = base_config(task, model, preset, overrides, device, tuned_warmup=space.searches(WARMUP.target))
    name = study_name(prefix, task_label or task, label or model)
    steps = config.train.steps
    # The halving pruner's floor: the best no-solve baseline on the held-out rows the trials decide on (their
    # validation rows under protocol v2, else their test sets), of the trials' seeds pooled, on the task's
    # metric (the values the trials report are those seeds' mean). A study stored before floors were read
    # on validation rows (no "floor_rows" attr) keeps its test-row floor, so that it resumes unchanged.
    existing = find_study(storage, name)
    floor_rows = ("validation" if config.train.validation_size
                  and (existing is None or "floor_rows" in existing.user_attrs or "pruner" not in existing.user_attrs)
                  else "test")
    floor = (shortcut_floor(config.task, config.train.test_size, tuple(config.train.seed + i for i in range(seeds)),
                            validation_size=config.train.validation_size if floor_rows == "validation" else 0)[1]
             if pruner in ("sha", "safe_sha") else None)
    samplers = {"grid": lambda: make_grid_sampler(grid, sampler_seed), "tpe": lambda: make_sampler(sampler_seed, trials),
                "lr_rule": lambda: LrRuleSampler(lr_search or LrSearch())}
    pruners = {"sha": lambda: make_sha_pruner(steps, floor), "median": lambda: make_pruner(steps),
               "safe_sha": lambda: make_safe_sha_pruner(steps, no_prune_before, floor)}
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=samplers[sampler](), pruner=pruners[pruner]())
    # What must match for old and new trials to be comparable; preset and overrides are compared
    # through the config they resolve to (the same overrides in another order are the same study).
    expected = {
        "task": task, "model": model, "seeds_per_trial": seeds, "config_version": CONFIG_VERSION,
        "search_space_version": SEARCH_SPACE_VERSION, "search_space_fingerprint": space.fingerprint(),
        "search_space": space.describe(), "base_config": comparable(jsonable(config.to_dict())),
        **describe_tuner(sampler, pruner, steps, sampler_seed, grid, floor, lr_search, no_prune_before),
    }
    if config.train.validation_size:  # absent from v1 studies, which must resume unchanged
        expected["decision_rows"] = decision_rows(config)
    if floor is not None and floor_rows == "validation":
        expected["floor_rows"] = "validation rows of the trials' seeds"
    stored = study.user_attrs
    for key, value in expected.items():
        if key in stored and jsonable(stored[key]) != jsonable(value):
            raise SystemExit(
                f"study {name!r} exists with another {key} ({_differences(stored[key], value, key)}). "
                f"Trials run under another search space, config or code version are not comparable, so they are "
                f"not mixed: use another --study-prefix, or delete the study "
                f"(optuna delete-study --study-name '{name}' --storage URL)."
            )
    name_metric(study, config.task.metric)
    for key, value in {**expected, "preset": preset, "overrides": list(overrides)}.items():
        if key not in stored:
            study.set_user_attr(key, jsonable(value))
    if sampler == "lr_rule":
        trials = None  # stored as such: the rule, not a count, ends the study
    if "budget" not in stored or stored["budget"] != trials:
        if "budget" in stored:
            print(f"[{name}] budget changed from {stored['budget']} to {trials} finished trials", flush=True)
        study.set_user_attr("budget", trials)
    return study, config, space


def open_confirm_study(storage: optuna.storages.BaseStorage, prefix: str, task: str, spec: ModelSpec,
                       seeds: Sequence[int], device: str | None = None, task_label: str | None = None,
                       every_step: bool = False) -> tuple[optuna.Study, RunConfig, FrozenTrial]:
    """Create or resume the confirm study of one model: its tuning study's best trial, to be re-trained on
    `seeds`. Returns the study, the config to train and the best trial.

    Rebuilds the config from what the tuning study stored and checks it against the best trial's
    stored config, so code changes since tuning are refused rather than silently confirmed; refuses
    seeds that overlap the tuning seeds, and a confirm study that re-trains another trial. With
    `every_step` the re-training never stops early (train.target_accuracy=1.0; the tuning trials may have
    stopped at their target): a run that stops once its validation rows reach the solve target leaves its
    test score either side of that target by sampling alone. A resumed study holding runs that stop at another
    target is refused.
    """
    tuned = optuna.load_study(study_name=study_name(prefix, task_label or task, spec.label), storage=storage)
    best = best_trial(tuned)
    if best is None:
        raise SystemExit(f"{tuned.study_name} has no finished trial to re-train: tune it first")
    attrs = tuned.user_attrs
    tuning_seeds = range(best.user_attrs["config"]["train"]["seed"],
                         best.user_attrs["config"]["train"]["seed"] + attrs["seeds_per_trial"])
    if set(tuning_seeds) & set(seeds):
        raise SystemExit(f"final seeds {list(seeds)} overlap the tuning seeds {list(tuning_seeds)} of "
                         f"{tuned.study_name}: a configuration would be judged on the held-out set it was picked on")
    # The space the study searched, as stored (a grid study searched only the grid's knobs).
    space = SearchSpace(tuple(Knob(**k) for k in attrs["search_space"]))
    config = base_config(task, spec.model, attrs["preset"], attrs["overrides"], device,
                         tuned_warmup=space.searches(WARMUP.target))
    config = space.apply(config, best.params)
    config = as_stored(config, best.user_attrs["config"])  # e.g. Mamba's scan, stored before it existed
    if comparable(jsonable(config.to_dict())) != comparable(best.user_attrs["config"]):
        raise SystemExit(f"{tuned.study_name}: the best trial {best.number}'s config can no longer be rebuilt "
                         f"identically from its preset and parameters (did the code change since tuning?); "
                         f"refusing to confirm a different configuration")
    if every_step:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, target_accuracy=1.0))
    name = study_name(prefix, task_label or task, spec.label, confirm=True)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    # Runs stopped at another target than this config's would be confirmed under one label with it.
    stops = {t.user_attrs["config"]["train"]["target_accuracy"] for t in study.get_trials(deepcopy=False)
             if "config" in t.user_attrs} - {config.train.target_accuracy}
    if stops:
        raise SystemExit(f"study {name!r} holds re-trainings with train.target_accuracy {sorted(stops)}, this "
                         f"command's is {config.train.target_accuracy:g} (1: no early stop): delete {name!r} or use "
                         f"another --study-prefix")
    source = {"source_trial": best.number, "params": best.params, "config": comparable(best.user_attrs["config"])}
    for key, value in source.items():
        if key in study.user_attrs and jsonable(study.user_attrs[key]) != jsonable(value):
            raise SystemExit(f"study {name!r} re-trains {key}={_short(study.user_attrs[key])} but the best "
                             f"tuning trial now has {key}={_short(value)} (the tuning study grew?); use another "
                             f"--study-prefix or delete {name!r}")
        study.set_user_attr(key, jsonable(value))
    name_metric(study, config.task.metric)
    return study, config, best


def open_retrain_study(storage: optuna.storages.BaseStorage, name: str, config: RunConfig,
                       attrs: dict[str, Any]) -> optuna.Study:
    """Create or resume the study `name` that re-trains the fixed `config` once per seed; `attrs` and
    the config are stored in it, and a resumed study that stored others is refused."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    for key, value in {**attrs, "config": comparable(jsonable(config.to_dict()))}.items():
        if key in study.user_attrs and jsonable(study.user_attrs[key]) != jsonable(value):
            raise SystemExit(f"study {name!r} trains {key}={_short(study.user_attrs[key])}, this command "
                             f"{key}={_short(value)}: delete {name!r} or use another prefix")
        if key not in study.user_attrs:
            study.set_user_attr(key, jsonable(value))
    return study


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 200 else text[:200] + "..."


def _differences(stored: Any, wanted: Any, key: str, limit: int = 6) -> str:
    """'train.lr: stored 0.001, this command 0.003; ...' — the differing leaves of two JSON values."""
    found: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
        elif jsonable(a) != jsonable(b):
            found.append(f"{path}: stored {_short(a)}, this command {_short(b)}")

    walk(stored, wanted, key)
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more


def name_metric(study: optuna.Study, metric: str) -> None:
    """Name the objective (the task's metric), so optuna-dashboard shows e.g. "accuracy" instead of
    "Objective 0" (also on old studies)."""
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])
