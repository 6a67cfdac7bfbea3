"""The Optuna internals studies/tune/optuna_private.py relies on, each checked for existence, signature and the
behaviour relied on. A failure here names what changed in the installed Optuna: fix optuna_private.py for the
new release (or find a public replacement), then widen the pin in pyproject.toml."""
from __future__ import annotations

import datetime
import inspect
import logging
import tomllib
import warnings
from pathlib import Path

import optuna
from packaging.specifiers import SpecifierSet

from studies.tune import optuna_private
from studies.tune.storage import open_storage, retry_callback

optuna.logging.set_verbosity(optuna.logging.WARNING)

VERSION = f"optuna {optuna.__version__}"
FIX = "adapt studies/tune/optuna_private.py to it"


def params_of(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_grid_sampler_hook_size_and_space_check_exist_with_their_signatures():
    grid = optuna.samplers.GridSampler
    assert params_of(getattr(grid, "_get_unvisited_grid_ids", None) or (lambda: None)) == ["self", "study"], \
        f"{VERSION}: GridSampler._get_unvisited_grid_ids(self, study) is gone or changed; RetryingGridSampler's rule " \
        f"would be bypassed in silence: {FIX}"
    assert params_of(getattr(grid, "_same_search_space", None) or (lambda: None)) == ["self", "search_space"], \
        f"{VERSION}: GridSampler._same_search_space(self, search_space) is gone or changed: {FIX}"
    sampler = optuna_private.HookedGridSampler({"x": [1.0, 2.0, 3.0]}, seed=0)
    assert getattr(sampler, "_n_min_trials", None) == 3, f"{VERSION}: GridSampler._n_min_trials is not the grid size: {FIX}"
    assert sampler.grid_size == 3
    assert sampler.same_search_space({"x": [1.0, 2.0, 3.0]}) and not sampler.same_search_space({"x": [1.0, 2.0]})


def test_grid_sampler_asks_the_hook_for_trials_past_the_grid_and_gives_trial_n_point_n():
    class Recording(optuna_private.HookedGridSampler):
        calls: list[int] = []

        def unvisited_grid_ids(self, study):
            self.calls.append(len(study.get_trials(deepcopy=False)))
            return [1]  # always point 1, whatever is visited

    sampler = Recording({"x": [10.0, 20.0]}, seed=0)
    study = optuna.create_study(sampler=sampler)
    trials = []
    for _ in range(2):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 100.0)
        trials.append(trial)
    # Trials 0 and 1 (n < grid size) get points 0 and 1 from their number, without the hook.
    attrs = [t.system_attrs for t in study.get_trials(deepcopy=False)]
    assert [a.get("grid_id") for a in attrs] == [0, 1], \
        f"{VERSION}: GridSampler no longer stores grid_id = trial number for trial n < grid size; " \
        f"RetryingGridSampler counts such a trial as holding point n: {FIX}"
    assert all(a.get("search_space") == {"x": [10.0, 20.0]} for a in attrs), \
        f"{VERSION}: GridSampler no longer stores the trial's grid as system attr 'search_space': {FIX}"
    assert Recording.calls == [], f"{VERSION}: GridSampler asks the hook for trials within the grid: {FIX}"
    third = study.ask()
    third.suggest_float("x", 0.0, 100.0)
    assert Recording.calls, f"{VERSION}: GridSampler.before_trial no longer calls _get_unvisited_grid_ids: {FIX}"
    assert study.get_trials(deepcopy=False)[2].system_attrs["grid_id"] == 1, \
        f"{VERSION}: GridSampler does not pick the point of a trial past the grid among the hook's ids: {FIX}"


def test_study_storage_backend_and_trial_ids(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage)
    assert isinstance(getattr(study, "_storage", None), optuna.storages.BaseStorage), \
        f"{VERSION}: Study._storage is gone: {FIX}"
    assert optuna_private.rdb_storage(study) is storage, \
        f"{VERSION}: the study's storage is no longer the RDBStorage or a cache with it as `_backend`: {FIX}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ask() outside optimize() warns about heartbeats
        trial = study.ask()
    assert isinstance(getattr(trial, "_trial_id", None), int), f"{VERSION}: Trial._trial_id is gone: {FIX}"
    frozen = study.get_trials(deepcopy=False)[0]
    assert optuna_private.trial_id(frozen) == optuna_private.trial_id(trial), \
        f"{VERSION}: FrozenTrial._trial_id is gone or differs from Trial._trial_id: {FIX}"
    assert storage.get_trial(optuna_private.trial_id(trial)).number == trial.number
    optuna_private.set_trial_system_attr(study, frozen, "completed_rung_0", 0.5)
    assert study.get_trials(deepcopy=False)[0].system_attrs["completed_rung_0"] == 0.5, \
        f"{VERSION}: a system attr set through Study._storage by trial id is not read back: {FIX}"


def test_heartbeat_settings_callback_and_table(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=5)
    for name in ("heartbeat_interval", "grace_period", "engine"):
        assert hasattr(storage, name), f"{VERSION}: RDBStorage.{name} is gone: {FIX}"
    study = optuna.create_study(storage=storage)
    assert optuna_private.heartbeat_grace_period(study) == 5
    assert isinstance(optuna_private.stale_trial_callback(study), type(retry_callback())), \
        f"{VERSION}: RDBStorage.get_heartbeat_stale_trial_callback() no longer returns the callback it was given: {FIX}"
    study.optimize(lambda trial: 0.0, n_trials=1)  # a trial run by optimize stores a heartbeat row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        silent = study.ask()  # RUNNING, no heartbeat thread: no row
    later = datetime.datetime.now() + datetime.timedelta(seconds=1)
    with storage.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT trial_id FROM trial_heartbeats").fetchall()
    assert [r[0] for r in rows] == [optuna_private.trial_id(study.trials[0])], \
        f"{VERSION}: the table trial_heartbeats(trial_id) no longer holds one row per trial that beat: {FIX}"
    assert optuna_private.heartbeatless_trial_ids(study, later) == [optuna_private.trial_id(silent)]
    assert optuna_private.heartbeatless_trial_ids(study, datetime.datetime(2000, 1, 1)) == []


def test_optimize_logs_a_failed_trial_to_the_logger_that_is_filtered(caplog):
    def fails(trial):
        raise ValueError("boom")

    study = optuna.create_study()
    logger = optuna_private.trial_failure_logger()
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            study.optimize(fails, n_trials=1, catch=(ValueError,))
    finally:
        optuna.logging.disable_propagation()
    assert any(r.name == logger.name and "boom" in r.getMessage() for r in caplog.records), \
        f"{VERSION}: Study.optimize no longer logs a failed trial to {logger.name!r}; the filter that quiets " \
        f"refused surplus trials would miss it (records: {[(r.name, r.getMessage()[:60]) for r in caplog.records]}): {FIX}"


def test_the_pin_covers_the_installed_version():
    """pyproject.toml pins the range these checks ran on; a version outside it is untested."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("optuna")]
    specifier = SpecifierSet(pin.removeprefix("optuna"))
    assert optuna.__version__ in specifier, \
        f"{VERSION} is outside the tested pin {pin!r}: run this file, fix optuna_private.py, then move the pin"
    assert any(s.operator == "<" for s in specifier), f"the optuna pin {pin!r} has no upper bound"
