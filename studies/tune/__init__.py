"""Tune models with Optuna under one equal budget of finished trials per model, then re-train the best over seeds.

    testbed tune --task T --models a,b,... --trials N [--storage URL] [--study-prefix P] [--preset quick]
                 [--seeds S] [--final-seeds S] [--device cpu|cuda|auto] [--out DIR] [section.key=value ...]

One Optuna study per (prefix, task, model), named `P/T/model`, searched over the model's space in
`studies.search_spaces` by a seeded TPE sampler, with the same median pruner on held-out accuracy for
every model. The storage is the distributed engine: the default is an SQLite file `DIR/studies.db`; any
SQLAlchemy URL works, e.g. `postgresql://user@host/db` (`pip install -e '.[postgres]'`). Running the
same command on several machines against one URL is how tuning scales out.

Library options (the capability study uses them): `sampler="grid"` (optuna's GridSampler over given
values of some knobs, one trial per point) and `pruner="sha"` (successive halving with a tolerance,
`TolerantHalvingPruner`); model labels
(`ModelSpec`: a mixer with overrides) and `task_label` for study names. The exact sampler and pruner
settings are stored in the study (user attrs `sampler`, `pruner`, `intermediate_values`). With
`seeds` > 1 the pruner sees, while the last seed trains, the mean accuracy over all seeds at each step.

Budget. A trial counts iff it finished COMPLETE or PRUNED; a worker stops once its studies hold N such
trials. Trial numbers are assigned under a lock on the study row, so they order trials by creation.
A trial may run only if fewer than N trials with smaller numbers are finished or still live (RUNNING
or WAITING); otherwise it is told FAIL with user attr `surplus` and does not count. Trials only ever
move WAITING -> RUNNING -> finished (or FAIL), so the N+1-th counting trial would have seen N live or
finished trials before it: no study ends with more than N, and workers keep going until it has N.

Crash safety. Heartbeats are on (`--heartbeat-interval`, `--grace-period`): a RUNNING trial whose
heartbeat is older than the grace period (its worker was killed) is failed by whichever worker looks
next and re-queued as a WAITING trial with the same parameters (at most MAX_RETRY times); FAIL never
counts. So is a RUNNING trial with no heartbeat at all that started over a grace period ago: its
worker was killed between creating it and storing the first heartbeat (Optuna's own check skips such
trials, which would otherwise hold their slot forever). Rerunning the command resumes. A diverged run
is COMPLETE with the worst value, 0.0, and user attr status=diverged: it counts against the model.

Final evaluation (`--final-seeds S`, default 5; 0 skips it, `confirm()` runs it alone): the best
trial's configuration is re-trained with seeds 1000..1000+S-1, disjoint from the tuning seeds
(train.seed onwards, 0 by default) — each seed also draws its own held-out set, so a configuration is
not judged on the set it was picked on — as trials of the study `P/T/model/confirm`, one per seed,
distributed over workers the same way.

Stored for reports (`testbed report` reads storage only): study attrs `task`, `model`, `preset`,
`overrides`, `seeds_per_trial`, `base_config`, `config_version`, `search_space`,
`search_space_version`, `search_space_fingerprint`, `budget`; trial attrs `run_id`, `config`,
`status`, `metrics` (held-out loss/accuracy by step and seed), `final` (per evaluated length),
`accuracies` (per seed), `num_parameters`, `state_size`, `wall_time`.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from studies.checks import CONNECT_TIMEOUT, check_device, check_out_dir, check_storage_url, with_driver
from studies.config import CONFIG_VERSION, RunConfig, as_stored
from studies.presets import PRESETS, get_preset
from studies.search_spaces import SEARCH_SPACE_VERSION, Knob, SearchSpace, get_search_space
from studies.suite import build_configs
from studies.train import EvalRecord, TrainResult, train
from studies.tune.queries import earliest_by_seed
from tasks.shortcuts import floor as shortcut_floor

CONFIRM_SEED_OFFSET = 1000  # final-evaluation seeds start here; tuning seeds are 0..seeds-1
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # a RUNNING trial silent this long belongs to a dead worker
MAX_RETRY = 3  # re-queue a killed trial at most this often (a config that kills its worker each time is dropped)
POLL_SECONDS = 2.0  # how often an idle worker looks for freed slots

# Every study's objective is its task's metric (tasks.Task.metric: token accuracy, or sequence exact match
# where token accuracy is free), held out, mean over a trial's seeds; the study is named after it.

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.RUNNING, TrialState.WAITING)


class SurplusTrial(Exception):
    """This trial was created after the study's budget was already finished or taken by live trials."""


# ------------------------------------------------------------------------------------------- storage


def default_storage(out: str | Path) -> str:
    return f"sqlite:///{Path(out) / 'studies.db'}"


def storage_url(storage: str | None, out: str | Path, must_exist: bool = False) -> str:
    """The storage URL a command uses, checked (`studies.checks.check_storage_url`).

    None means the default SQLite file in `out`, whose directory is created: the user chose `--out`,
    not that URL. A URL the user wrote is only checked; a missing directory in it is refused.
    """
    if storage is None:
        check_out_dir(out)
        Path(out).mkdir(parents=True, exist_ok=True)
        storage = default_storage(out)
    return check_storage_url(storage, must_exist=must_exist)


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int = GRACE_PERIOD) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for an SQLAlchemy URL, with heartbeats and retry of killed trials.

    `postgresql://` is served by psycopg 3 when psycopg2 is absent (the `postgres` extra installs
    psycopg 3); a server that does not answer within CONNECT_TIMEOUT seconds is an error, not a hang.
    SQLite waits up to 60 s for a lock, so concurrent workers queue instead of failing. Nothing here
    creates directories: the command line checks the URL first (`storage_url`).
    """
    if not 0 < heartbeat_interval < grace_period:
        raise ValueError(f"heartbeat_interval={heartbeat_interval} must be > 0 and < grace_period={grace_period}")
    url = with_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        if "timeout=" not in url:
            engine_kwargs["connect_args"] = {"timeout": 60}
    elif url.startswith("postgresql"):
        engine_kwargs["pool_pre_ping"] = True
        if "connect_timeout=" not in url:
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    retry = _retry_callback()
    # Workers started together on a fresh database race to create Optuna's tables; the loser sees a
    # duplicate-key or "already exists" error, and on a second look finds the tables made.
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, **retry,
                )
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            if attempt == 4:
                raise
            time.sleep(0.5 + (os.getpid() % 7) / 7)  # workers started together retry at different times
    raise AssertionError("unreachable")


def _retry_callback() -> dict[str, Any]:
    # Optuna 4.9 renamed RetryFailedTrialCallback/failed_trial_callback; support both spellings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
            cb = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            return {"heartbeat_stale_trial_callback": cb}
        return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)}


def as_storage(storage: str | optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    return open_storage(storage) if isinstance(storage, str) else storage


def study_name(prefix: str, task: str, model: str, confirm: bool = False) -> str:
    return f"{prefix}/{task}/{model}" + ("/confirm" if confirm else "")


# ------------------------------------------------------------------------------------- sampler/pruner


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """TPE whose random stream is seeded by (seed, trial number).

    One seeded TPE per worker would make concurrent workers propose the very same start-up
    configurations; seeding each trial by its (unique) number keeps one worker exactly reproducible
    and gives concurrent trials different streams. `constant_liar` keeps TPE from re-proposing the
    neighbourhood of trials still running on other workers.
    """

    def __init__(self, seed: int, n_startup_trials: int) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._tpe = self._for_trial(0)

    def _for_trial(self, number: int) -> optuna.samplers.TPESampler:
        seed = int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                              multivariate=True, constant_liar=True)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._for_trial(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)


def make_sampler(seed: int, budget: int) -> TrialSeededTPE:
    # Optuna's default of 10 random start-up trials would make a budget of 8 pure random search;
    # a quarter of the budget (at least 3) leaves most trials to TPE at every budget.
    return TrialSeededTPE(seed, n_startup_trials=max(3, budget // 4))


def make_pruner(steps: int) -> optuna.pruners.BasePruner:
    """The one pruner every model gets: median rule on held-out accuracy, none in the first quarter."""
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=steps // 4)


# The alternatives to TPE + median (`sampler="grid"`, `pruner="sha"`), used by the capability study.
SAMPLERS = ("tpe", "grid")
PRUNERS = ("median", "sha")


class RetryingGridSampler(optuna.samplers.GridSampler):
    """optuna's GridSampler, except that a grid point whose trial FAILED is still unvisited.

    Optuna gives trial n < grid size the n-th point of the seeded, shuffled grid, and later trials a
    point no finished or running trial holds. It counts a FAILED trial as finished, so the point of a
    trial stopped by Ctrl-C (which Optuna fails on the spot, with no re-queue) was never tried again:
    the next trial, finding the grid "exhausted", re-ran a random point and the budget filled with a
    duplicate. Here only COMPLETE and PRUNED trials visit a point; a RUNNING or WAITING one holds it
    (a killed worker's trial is re-queued by Optuna's retry callback with its system attrs, its
    grid id among them), and so does a trial n < grid size whose point is not stored yet (it gets
    point n). Two workers may still pick one point in the instant between a trial's creation and
    the storing of its point: `_run_tuning_trial` then refuses the later trial as surplus.
    """

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        visited, held = set(), set()
        for trial in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if "grid_id" in trial.system_attrs:
                if not self._same_search_space(trial.system_attrs["search_space"]):
                    continue
                grid_id = trial.system_attrs["grid_id"]
            elif 0 <= trial.number < self._n_min_trials and trial.state in (TrialState.RUNNING, TrialState.WAITING):
                grid_id = trial.number  # what before_trial is giving it
            else:
                continue
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                visited.add(grid_id)
            elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
                held.add(grid_id)
        unvisited = set(range(self._n_min_trials)) - visited - held
        return sorted(unvisited or set(range(self._n_min_trials)) - visited)


def grid_point_taken_before(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether an earlier finished or live trial holds this trial's grid point (two workers picked it at
    once); False outside a grid study."""
    grid_id = study._storage.get_trial_system_attrs(trial._trial_id).get("grid_id")
    if grid_id is None:
        return False
    return any(t.number < trial.number and t.state in COUNTED + LIVE and t.system_attrs.get("grid_id") == grid_id
               for t in study.get_trials(deepcopy=False))


def make_grid_sampler(grid: dict[str, Sequence[float]], seed: int) -> optuna.samplers.GridSampler:
    return RetryingGridSampler({k: list(v) for k, v in grid.items()}, seed=seed)


class TolerantHalvingPruner(optuna.pruners.BasePruner):
    """Asynchronous successive halving (ASHA, Li et al. 2020: the rule of optuna's SuccessiveHalvingPruner)
    with a tolerance. Rung r sits at step min_resource · η^r (below `max_resource`: a run at its last
    step has nothing left to save). A trial at a rung continues if its value is within `margin` of the
    top-1/η value among the trials that reached the rung (itself included), and is pruned otherwise.

    With a `floor` (the task's best no-solve baseline on the trials' held-out sets), a rung prunes
    nothing while its best value is within `plateau_margin` of the floor: no trial has learned
    anything yet, and who is ahead is noise.

    Why the margin (0.05 in the capability study): a seed-mean accuracy over 2 seeds × 256 held-out
    rows has a sampling SD of about 0.02, a difference of two of them about 0.03; plain halving ranks
    that noise and may stop the learning rate that would have solved the task next. Why the floor
    (plateau margin 0.1): some plateaus are noisier still — parity scored at one position alternates
    between the two majority levels (0.465 and 0.535). Without it, lrs that went on to learn parity
    were pruned at the first rung: real-gated GateLoop's 3.16e-3 (0.957 in the pilot), 0.055 behind a
    rung whose best was itself on the plateau (margin 0.02), and Mamba's 3.16e-3 (0.977 in the pilot),
    0.043 behind a rung best only 0.06 above the floor (plateau margin 0.05). The study must maximise.
    """

    def __init__(self, min_resource: int, max_resource: int, reduction_factor: int = 2, margin: float = 0.05,
                 floor: float | None = None, plateau_margin: float = 0.1) -> None:
        if min_resource < 1 or reduction_factor < 2 or not margin >= 0 or not plateau_margin >= 0:
            raise ValueError(f"min_resource={min_resource} must be >= 1, reduction_factor={reduction_factor} >= 2, "
                             f"margin={margin} >= 0, plateau_margin={plateau_margin} >= 0")
        self.min_resource, self.max_resource = min_resource, max_resource
        self.reduction_factor, self.margin = reduction_factor, margin
        self.floor, self.plateau_margin = floor, plateau_margin

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        rung = 0
        while f"completed_rung_{rung}" in trial.system_attrs:
            rung += 1
        trials = None
        while step >= (rung_step := self.min_resource * self.reduction_factor ** rung) and rung_step < self.max_resource:
            key = f"completed_rung_{rung}"
            trials = trials if trials is not None else study.get_trials(deepcopy=False)
            study._storage.set_trial_system_attr(trial._trial_id, key, value)
            # A FAILED trial's rung values live on in its re-queued copy (Optuna's retry callback copies
            # system attrs, and a rerun of the same seeds repeats them): counting both would count it twice.
            competing = sorted([t.system_attrs[key] for t in trials if key in t.system_attrs and t.number != trial.number
                                and t.state != TrialState.FAIL] + [value], reverse=True)
            top_half = competing[max(1, len(competing) // self.reduction_factor) - 1]
            learned = self.floor is None or competing[0] > self.floor + self.plateau_margin
            if learned and value < top_half - self.margin:
                return True
            rung += 1
        return False


def make_sha_pruner(steps: int, floor: float | None = None) -> TolerantHalvingPruner:
    """Successive halving with rungs at steps/4 and steps/2 (reduction factor 2, margin 0.05, and with a
    floor, no pruning while the rung's best is within 0.1 of it): nothing is pruned before a
    quarter of the run, nor at its end."""
    return TolerantHalvingPruner(min_resource=max(1, steps // 4), max_resource=steps, floor=floor)


def describe_tuner(sampler: str, pruner: str, steps: int, seed: int,
                   grid: dict[str, Sequence[float]] | None, floor: float | None = None) -> dict[str, Any]:
    """What ran, for the study's user attrs and the report: the exact sampler and pruner settings."""
    samplers = {
        # the start-up count as its rule: a budget may be extended (see open_tuning_study), the rule stays
        "tpe": {"name": "TrialSeededTPE (optuna TPESampler, multivariate, constant_liar, seeded per trial)",
                "seed": seed, "n_startup_trials": "max(3, budget // 4)"},
        "grid": {"name": "studies.tune.RetryingGridSampler (optuna.samplers.GridSampler; a failed trial's point "
                         "is tried again)", "seed": seed, "grid": grid},
    }
    pruners = {
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


@dataclass(frozen=True)
class ModelSpec:
    """A mixer under a label of its own, with mixer overrides (e.g. `mixer.phase=zero`): tuned in the
    study PREFIX/TASK/LABEL. A plain mixer name is the spec (name, name, ())."""

    label: str
    model: str
    overrides: tuple[str, ...] = ()


def _spec(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else ModelSpec(model, model)


# ---------------------------------------------------------------------------------------- the budget


def has_slot(trials: Sequence[FrozenTrial], number: int, budget: int) -> bool:
    """Whether trial `number` may run: fewer than `budget` earlier trials are finished or live."""
    ahead = sum(1 for t in trials if t.number < number and t.state in COUNTED + LIVE)
    return ahead < budget


def free_seed(trials: Sequence[FrozenTrial], number: int, seeds: Sequence[int]) -> int | None:
    """The first wanted seed that no other finished or live trial of a confirm study holds."""
    held = {t.user_attrs.get("seed") for t in trials if t.number != number and t.state in COUNTED + LIVE}
    return next((s for s in seeds if s not in held), None)


def seed_taken_before(trials: Sequence[FrozenTrial], number: int, seed: int) -> bool:
    return any(t.number < number and t.state in COUNTED + LIVE and t.user_attrs.get("seed") == seed for t in trials)


def _reap(study: optuna.Study) -> None:
    """Fail RUNNING trials of dead workers now and re-queue them (at most MAX_RETRY times).

    Dead means: its heartbeat is older than the grace period (Optuna's check), or it never stored a
    heartbeat and started longer than the grace period ago — its worker died between creating the
    trial and the first heartbeat, a trial Optuna's check skips and that would hold its slot forever.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
        rdb = getattr(study._storage, "_backend", study._storage)  # the RDB storage under Optuna's cache
        if not isinstance(rdb, optuna.storages.RDBStorage) or rdb.heartbeat_interval is None:
            return
        grace = rdb.grace_period or 2 * rdb.heartbeat_interval  # Optuna's default, the same rule
        for trial_id in _heartbeatless_trial_ids(rdb, study, grace):
            # As optuna.storages.fail_stale_trials does for a stale heartbeat: fail, then re-queue.
            try:
                if not study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it first (or it finished after all)
            callback = rdb.get_heartbeat_stale_trial_callback()
            if callback is not None:
                callback(study, study._storage.get_trial(trial_id))


def _heartbeatless_trial_ids(storage: optuna.storages.RDBStorage, study: optuna.Study, grace: int) -> list[int]:
    """RUNNING trials started over `grace` seconds ago that have no heartbeat row."""
    # datetime_start is the creating worker's local clock: clocks of machines sharing one storage
    # must agree to well within the grace period (NTP does), as for any wall-clock timeout.
    old = datetime.datetime.now() - datetime.timedelta(seconds=grace)
    candidates = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                  if t.datetime_start is not None and t.datetime_start < old]
    if not candidates:
        return []
    query = sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
        sqlalchemy.bindparam("ids", expanding=True))
    with storage.engine.connect() as connection:
        beating = {row[0] for row in connection.execute(query, {"ids": candidates})}
    return [i for i in candidates if i not in beating]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# -------------------------------------------------------------------------------------------- studies


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config without what may differ between workers of one study (the device)."""
    train_cfg = {k: v for k, v in config["train"].items() if k not in ("device", "seed")}
    return {**config, "train": train_cfg}


def base_config(task: str, model: str, preset: str, overrides: Sequence[str] = (),
                device: str | None = None) -> RunConfig:
    """The resolved config (parameter-matched width, seed 0) a study's trials start from."""
    (config,) = build_configs([model], [task], get_preset(preset), 1, list(overrides), device)
    return config


def open_tuning_study(storage: optuna.storages.BaseStorage, prefix: str, task: str, model: str, preset: str,
                      overrides: Sequence[str], trials: int, seeds: int = 1, sampler_seed: int = 0,
                      device: str | None = None, label: str | None = None, task_label: str | None = None,
                      sampler: str = "tpe", pruner: str = "median",
                      grid: dict[str, Sequence[float]] | None = None) -> tuple[optuna.Study, RunConfig, SearchSpace]:
    """Create or resume the study of one model; refuse one created under another space or config.

    `label` and `task_label` replace the model and task in the study name (a model label or task variant
    whose settings are in `overrides`). `sampler="grid"` searches exactly the knobs in `grid` over its
    values (the budget must be the grid's size); `pruner="sha"` is successive halving.
    """
    if sampler not in SAMPLERS or pruner not in PRUNERS:
        raise ValueError(f"sampler={sampler!r} must be one of {SAMPLERS}, pruner={pruner!r} one of {PRUNERS}")
    config = base_config(task, model, preset, overrides, device)
    space = get_search_space(model)
    if sampler == "grid":
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
    name = study_name(prefix, task_label or task, label or model)
    steps = config.train.steps
    # The halving pruner's floor: the best no-solve baseline on the held-out sets of the trials' seeds,
    # pooled, on the task's metric (the values the trials report are those seeds' mean).
    floor = (shortcut_floor(config.task, config.train.test_size,
                            tuple(config.train.seed + i for i in range(seeds)))[1] if pruner == "sha" else None)
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True,
        sampler=make_grid_sampler(grid, sampler_seed) if sampler == "grid" else make_sampler(sampler_seed, trials),
        pruner=make_sha_pruner(steps, floor) if pruner == "sha" else make_pruner(steps))
    # What must match for old and new trials to be comparable; preset and overrides are compared
    # through the config they resolve to (the same overrides in another order are the same study).
    expected = {
        "task": task, "model": model, "seeds_per_trial": seeds, "config_version": CONFIG_VERSION,
        "search_space_version": SEARCH_SPACE_VERSION, "search_space_fingerprint": space.fingerprint(),
        "search_space": space.describe(), "base_config": _comparable(_jsonable(config.to_dict())),
        **describe_tuner(sampler, pruner, steps, sampler_seed, grid, floor),
    }
    stored = study.user_attrs
    for key, value in expected.items():
        if key in stored and _jsonable(stored[key]) != _jsonable(value):
            raise SystemExit(
                f"study {name!r} exists with another {key} ({_differences(stored[key], value, key)}). "
                f"Trials run under another search space, config or code version are not comparable, so they are "
                f"not mixed: use another --study-prefix, or delete the study "
                f"(optuna delete-study --study-name '{name}' --storage URL)."
            )
    _name_metric(study, config.task.metric)
    for key, value in {**expected, "preset": preset, "overrides": list(overrides)}.items():
        if key not in stored:
            study.set_user_attr(key, _jsonable(value))
    if stored.get("budget") != trials:
        if "budget" in stored:
            print(f"[{name}] budget changed from {stored['budget']} to {trials} finished trials", flush=True)
        study.set_user_attr("budget", trials)
    return study, config, space


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
        elif _jsonable(a) != _jsonable(b):
            found.append(f"{path}: stored {_short(a)}, this command {_short(b)}")

    walk(stored, wanted, key)
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more


def _name_metric(study: optuna.Study, metric: str) -> None:
    """Name the objective (the task's metric), so optuna-dashboard shows e.g. "accuracy" instead of
    "Objective 0" (also on old studies)."""
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ------------------------------------------------------------------------------------------- objectives


def _final_rows(result: TrainResult) -> list[dict[str, float]]:
    return [{"length": length, **metrics} for length, metrics in sorted(result.final.items())]


def _run_tuning_trial(trial: optuna.Trial, study: optuna.Study, config: RunConfig, space: SearchSpace,
                      budget: int, seeds: int, progress: bool) -> float:
    trial.set_user_attr("worker", _worker())
    if not has_slot(study.get_trials(deepcopy=False), trial.number, budget):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: {budget} earlier trials already hold the budget")
    params = space.suggest(trial)
    if grid_point_taken_before(study, trial):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: its grid point {params} is held by an earlier trial")
    config = space.apply(config, params)
    trial.set_user_attr("run_id", config.run_id())
    trial.set_user_attr("config", _jsonable(config.to_dict()))
    metrics: list[dict[str, Any]] = []

    curves: list[dict[int, float]] = [{} for _ in range(seeds)]  # per seed: step -> accuracy

    def on_eval(seed_index: int, record: EvalRecord) -> None:
        seed = config.train.seed + seed_index
        metrics.append({"seed": seed, **dataclasses.asdict(record)})
        value = record.score(config.task.metric)
        curves[seed_index][record.step] = value
        if seed_index < seeds - 1:
            return
        # Seeds run one after another. The pruner sees only what every seed has: while the last seed
        # trains, the mean over seeds at the same step (an earlier seed that stopped at its target
        # holds its last value), so no trial is pruned on one seed's curve and every report means the
        # same thing in every trial.
        mean = float(np.mean([c.get(record.step, c[max(c)] if c else 0.0) for c in curves]))
        trial.report(mean, record.step)
        if trial.should_prune():
            trial.set_user_attr("metrics", metrics)
            trial.set_user_attr("status", "pruned")
            raise optuna.TrialPruned(f"mean {config.task.metric} over {seeds} seeds {mean:.3f} at step {record.step}")

    results: list[TrainResult] = []
    for seed_index in range(seeds):
        run = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=config.train.seed + seed_index))
        result = train(run, on_eval=lambda r, i=seed_index: on_eval(i, r), progress=progress)
        results.append(result)
        if result.status == "diverged":
            break  # the trial scores the worst value whatever the other seeds do

    diverged = any(r.status == "diverged" for r in results)
    trial.set_user_attr("status", "diverged" if diverged else results[0].status)
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("accuracies", [r.accuracy for r in results])
    trial.set_user_attr("scores", [r.score for r in results])
    trial.set_user_attr("final", [{"seed": config.train.seed + i, "final": _final_rows(r)} for i, r in enumerate(results)])
    trial.set_user_attr("num_parameters", results[0].num_parameters)
    trial.set_user_attr("state_size", results[0].state_size)
    trial.set_user_attr("wall_time", sum(r.wall_time for r in results))
    return 0.0 if diverged else float(np.mean([r.score for r in results]))


def _run_confirm_trial(trial: optuna.Trial, study: optuna.Study, config: RunConfig, seeds: Sequence[int],
                       progress: bool) -> float:
    trial.set_user_attr("worker", _worker())
    seed = trial.user_attrs.get("seed")  # a re-queued trial keeps the seed it was given
    trials = study.get_trials(deepcopy=False)
    if seed is None:
        seed = free_seed(trials, trial.number, seeds)
    elif seed_taken_before(trials, trial.number, seed):
        seed = None
    if seed is None:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: every wanted seed is done or running elsewhere")
    trial.set_user_attr("seed", seed)
    run = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    trial.set_user_attr("run_id", run.run_id())
    trial.set_user_attr("config", _jsonable(run.to_dict()))
    result = train(run, progress=progress)
    # Two workers can pick the same free seed in the instant between a trial's creation and its
    # `seed` attr; by now the earlier one's attr is stored, and the later one gives way.
    if seed_taken_before(study.get_trials(deepcopy=False), trial.number, seed):
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: seed {seed} is held by an earlier trial")
    trial.set_user_attr("status", result.status)
    trial.set_user_attr("metrics", [{"seed": seed, **dataclasses.asdict(r)} for r in result.history])
    trial.set_user_attr("final", _final_rows(result))
    trial.set_user_attr("num_parameters", result.num_parameters)
    trial.set_user_attr("state_size", result.state_size)
    trial.set_user_attr("wall_time", result.wall_time)
    return 0.0 if result.status == "diverged" else result.score


# ---------------------------------------------------------------------------------------- worker loop


@dataclass
class _Job:
    """One study a worker contributes to: how to tell whether it needs work, and how to run a trial."""

    study: optuna.Study
    objective: Callable[[optuna.Trial], float]
    budget_state: Callable[[list[FrozenTrial]], str]  # -> "done" | "free" | "busy"

    def state(self) -> str:
        _reap(self.study)
        return self.budget_state(self.study.get_trials(deepcopy=False))

    def run_one(self) -> None:
        try:
            self.study.optimize(self.objective, n_trials=1, catch=(SurplusTrial,))
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another worker judged this trial dead (its heartbeat was late) and re-queued it; the
            # re-queued copy runs instead, so this result is dropped rather than counted twice.
            print(f"[{self.study.study_name}] a trial of this worker was failed as stale by another worker; "
                  f"its re-queued copy counts instead", flush=True)
            return
        last = max((t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == _worker()),
                   key=lambda t: t.number, default=None)
        if last is not None:
            value = "" if last.value is None else f" value={last.value:.4f}"
            status = "surplus (refused, not counted)" if last.user_attrs.get("surplus") else \
                last.user_attrs.get("status", "-")
            print(f"[{self.study.study_name}] trial {last.number} {last.state.name}{value} status={status} "
                  f"worker={_worker()}", flush=True)


class _QuietRoutineFailures(logging.Filter):
    """Optuna logs every FAIL with a traceback. A refused surplus trial is routine (reported above):
    no log line; a trial stopped by Ctrl-C keeps Optuna's one line, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "KeyboardInterrupt" in message:
            record.exc_info, record.exc_text = None, None
        return "SurplusTrial" not in message


def _tuning_state(budget: int) -> Callable[[list[FrozenTrial]], str]:
    def state(trials: list[FrozenTrial]) -> str:
        if sum(t.state in COUNTED for t in trials) >= budget:
            return "done"
        live_or_done = sum(t.state in COUNTED + LIVE for t in trials)
        # A WAITING (re-queued) trial must be picked up even when it fills the budget: it holds a slot.
        waiting = any(t.state == TrialState.WAITING for t in trials)
        return "free" if live_or_done < budget or waiting else "busy"
    return state


def _confirm_state(seeds: Sequence[int]) -> Callable[[list[FrozenTrial]], str]:
    def state(trials: list[FrozenTrial]) -> str:
        done = {t.user_attrs.get("seed") for t in trials if t.state == TrialState.COMPLETE}
        if all(s in done for s in seeds):
            return "done"
        waiting = any(t.state == TrialState.WAITING for t in trials)
        return "free" if free_seed(trials, -1, seeds) is not None or waiting else "busy"
    return state


def work(jobs: Sequence[_Job], poll: float = POLL_SECONDS) -> None:
    """Run trials of the first study with a free slot until every study is done; wait while slots are
    held by trials running on other workers (one of them may yet fail and free its slot)."""
    optimize_logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietRoutineFailures) for f in optimize_logger.filters):
        optimize_logger.addFilter(_QuietRoutineFailures())
    announced = False
    while True:
        states = [job.state() for job in jobs]
        if all(s == "done" for s in states):
            return
        if "free" in states:
            announced = False
            jobs[states.index("free")].run_one()
            continue
        if not announced:
            announced = True
            busy = [j.study.study_name for j, s in zip(jobs, states) if s == "busy"]
            print(f"waiting: every open slot of {busy} is held by a running trial of another worker", flush=True)
        time.sleep(poll)


def tune_models(
    task: str,
    models: Sequence[str],
    trials: int,
    storage: str | optuna.storages.BaseStorage,
    prefix: str = "tune",
    preset: str = "quick",
    seeds: int = 1,
    overrides: Sequence[str] = (),
    device: str | None = None,
    sampler_seed: int = 0,
    progress: bool = True,
    task_label: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    grid: dict[str, Sequence[float]] | None = None,
) -> dict[str, optuna.Study]:
    """Tune every model on `task` until its study `prefix/task/model` holds `trials` finished trials.

    A model may be a `ModelSpec` (a label with mixer overrides); `task_label`, `sampler`, `pruner` and
    `grid` are those of `open_tuning_study`. Returns the studies by label.
    Safe to run concurrently on many workers with the same arguments and storage, and to rerun.
    """
    if trials < 1:
        raise ValueError(f"trials={trials}: must be >= 1 (finished trials per model)")
    if seeds < 1:
        raise ValueError(f"seeds={seeds}: must be >= 1 (training seeds per trial)")
    storage = as_storage(storage)
    studies, jobs = {}, []
    for spec in map(_spec, models):
        study, config, space = open_tuning_study(storage, prefix, task, spec.model, preset,
                                                 [*overrides, *spec.overrides], trials, seeds, sampler_seed, device,
                                                 spec.label, task_label, sampler, pruner, grid)
        studies[spec.label] = study
        print(f"[{study.study_name}] {spec.label}: d_model={config.mixer.d_model}, {config.train.steps} steps, "
              f"knobs {[k.name for k in space.knobs]}, budget {trials} finished trials", flush=True)

        def objective(trial: optuna.Trial, study=study, config=config, space=space) -> float:
            return _run_tuning_trial(trial, study, config, space, trials, seeds, progress)

        jobs.append(_Job(study, objective, _tuning_state(trials)))
    work(jobs)
    return studies


def confirm(
    task: str,
    models: Sequence[str],
    storage: str | optuna.storages.BaseStorage,
    prefix: str = "tune",
    seeds: int = 5,
    device: str | None = None,
    progress: bool = True,
    task_label: str | None = None,
) -> dict[str, list[float]]:
    """Re-train each model's best tuning trial with `seeds` fresh seeds (study `prefix/task/model/confirm`).

    Rebuilds the config from what the tuning study stored and checks it against the best trial's
    stored config, so code changes since tuning are refused rather than silently confirmed.
    Models and `task_label` as in `tune_models`. Returns the confirmed accuracies per model label (one per seed).
    """
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be >= 1")
    storage = as_storage(storage)
    wanted = [CONFIRM_SEED_OFFSET + i for i in range(seeds)]
    jobs, studies = [], {}
    for spec in map(_spec, models):
        model = spec.model
        tuned = optuna.load_study(study_name=study_name(prefix, task_label or task, spec.label), storage=storage)
        best = tuned.best_trial
        attrs = tuned.user_attrs
        tuning_seeds = range(best.user_attrs["config"]["train"]["seed"],
                             best.user_attrs["config"]["train"]["seed"] + attrs["seeds_per_trial"])
        if set(tuning_seeds) & set(wanted):
            raise SystemExit(f"final seeds {wanted} overlap the tuning seeds {list(tuning_seeds)} of {tuned.study_name}: "
                             f"a configuration would be judged on the held-out set it was picked on")
        # The space the study searched, as stored (a grid study searched only the grid's knobs).
        space = SearchSpace(tuple(Knob(**k) for k in attrs["search_space"]))
        config = space.apply(base_config(task, model, attrs["preset"], attrs["overrides"], device), best.params)
        config = as_stored(config, best.user_attrs["config"])  # e.g. Mamba's scan, stored before it existed
        if _comparable(_jsonable(config.to_dict())) != _comparable(best.user_attrs["config"]):
            raise SystemExit(f"{tuned.study_name}: the best trial {best.number}'s config can no longer be rebuilt "
                             f"identically from its preset and parameters (did the code change since tuning?); "
                             f"refusing to confirm a different configuration")
        name = study_name(prefix, task_label or task, spec.label, confirm=True)
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
        source = {"source_trial": best.number, "params": best.params, "config": _comparable(best.user_attrs["config"])}
        for key, value in source.items():
            if key in study.user_attrs and _jsonable(study.user_attrs[key]) != _jsonable(value):
                raise SystemExit(f"study {name!r} re-trains {key}={_short(study.user_attrs[key])} but the best "
                                 f"tuning trial now has {key}={_short(value)} (the tuning study grew?); use another "
                                 f"--study-prefix or delete {name!r}")
            study.set_user_attr(key, _jsonable(value))
        _name_metric(study, config.task.metric)
        print(f"[{name}] re-training trial {best.number} (value {best.value:.4f}, params "
              f"{ {k: round(v, 6) for k, v in best.params.items()} }) with seeds {wanted}", flush=True)

        def objective(trial: optuna.Trial, study=study, config=config) -> float:
            return _run_confirm_trial(trial, study, config, wanted, progress)

        jobs.append(_Job(study, objective, _confirm_state(wanted)))
        studies[spec.label] = study
    work(jobs)
    return {model: confirmed_accuracies(study, wanted) for model, study in studies.items()}


def retrain_job(storage: optuna.storages.BaseStorage, name: str, config: RunConfig, seeds: Sequence[int],
                attrs: dict[str, Any], progress: bool = True) -> _Job:
    """The study `name` that trains the fixed `config` once per seed, as `confirm` re-trains a best
    trial: for runs that are not tuned (a state-size sweep or an ablation at a tuned learning rate).
    `attrs` (and the config) are stored in the study; a resumed study that stored others is refused."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    for key, value in {**attrs, "config": _comparable(_jsonable(config.to_dict()))}.items():
        if key in study.user_attrs and _jsonable(study.user_attrs[key]) != _jsonable(value):
            raise SystemExit(f"study {name!r} trains {key}={_short(study.user_attrs[key])}, this command "
                             f"{key}={_short(value)}: delete {name!r} or use another prefix")
        if key not in study.user_attrs:
            study.set_user_attr(key, _jsonable(value))
    return _Job(study, lambda trial: _run_confirm_trial(trial, study, config, seeds, progress), _confirm_state(seeds))


def confirmed_accuracies(study: optuna.Study, seeds: Sequence[int] | None = None) -> list[float]:
    """One accuracy per seed of a confirm study (the earliest COMPLETE trial of each seed)."""
    return [float(t.value) for t in earliest_by_seed(study, seeds).values()]


# ------------------------------------------------------------------------------------------------- CLI


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
    """A comma-separated list of registered mixers, each once."""
    from baselines import MIXERS

    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise ValueError(f"{flag} {text!r} names no model; pass a comma-separated list of {', '.join(MIXERS)}")
    for model in models:
        if model not in MIXERS:
            raise ValueError(f"{flag}: unknown model {model!r}; models: {', '.join(MIXERS)}")
        if models.count(model) > 1:
            raise ValueError(f"{flag}: {model!r} is given more than once (each model gets one study)")
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


def run(args: argparse.Namespace) -> int:
    set_optuna_verbosity(args.verbose)
    try:
        # Every check before anything is created: no study, database file or directory for bad input.
        check_numbers(args)
        models = parse_models(args.models)
        check_device(args.device)
        check_out_dir(args.out)
        configs = [base_config(args.task, model, args.preset, args.overrides, args.device) for model in models]
        url = storage_url(args.storage, args.out)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"testbed tune: {e}") from None
    try:
        return _tune_and_confirm(args, models, configs, url)
    except KeyboardInterrupt:
        raise SystemExit("testbed tune: interrupted (a trial it was running is failed and does not count); "
                         "rerun the same command to resume") from None


def _tune_and_confirm(args: argparse.Namespace, models: list[str], configs: list[RunConfig], url: str) -> int:
    storage = open_storage(url, args.heartbeat_interval, args.grace_period)
    print("resolved base config of the first model (each study stores its own):")
    print(json.dumps(configs[0].to_dict(), indent=1, default=str), flush=True)
    studies = tune_models(args.task, models, args.trials, storage, args.study_prefix, args.preset, args.seeds,
                          args.overrides, args.device, args.sampler_seed, progress=not args.quiet)
    for model, study in studies.items():
        best = study.best_trial
        print(f"{model}: best trial {best.number} accuracy {best.value:.4f} params {best.params}")
    if args.final_seeds:
        confirmed = confirm(args.task, models, storage, args.study_prefix, args.final_seeds, args.device,
                            progress=not args.quiet)
        for model, accs in confirmed.items():
            print(f"{model}: confirmed accuracy over {len(accs)} seeds: {np.mean(accs):.4f} ({accs})")
    print(f"report: testbed report --storage '{url}' --study-prefix {args.study_prefix}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.tune", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
