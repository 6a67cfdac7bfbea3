"""Every use of Optuna's private internals, in one place, behind named functions.

Optuna offers no public way to do what these do. Each is pinned by the optuna version range in
pyproject.toml and checked by tests/test_tune_optuna_private.py, which names what changed when a new
Optuna release changes one. The rest of `studies.tune` uses Optuna's public API only.

- `GridSampler._get_unvisited_grid_ids(study)`: the hook through which GridSampler picks the point of a
  trial numbered past the grid's size (and decides that the grid is exhausted); `HookedGridSampler`
  routes it to a method of ours. With it: `GridSampler._n_min_trials` (the grid's size) and
  `GridSampler._same_search_space(space)` (whether a stored trial's grid is this sampler's).
- `Study._storage` and `Trial._trial_id` / `FrozenTrial._trial_id`: a pruner gets a study and a frozen
  trial, and can store a value in that trial only through the storage, by the trial's storage id (as
  optuna's own SuccessiveHalvingPruner does).
- `_CachedStorage._backend`: the RDBStorage under the cache a study wraps it in; its attributes
  `heartbeat_interval`, `grace_period` and `engine`, and `get_heartbeat_stale_trial_callback()` (of
  `BaseHeartbeat`, which Optuna's docs say is not for library users).
- The logger `optuna.study._optimize` (named after a private module): where `Study.optimize` logs each
  failed trial with its traceback.
- The table `trial_heartbeats(trial_id)`: Optuna's stale-trial check skips a RUNNING trial with no row
  there, so `heartbeatless_trial_ids` reads it to find the trials of workers killed before their first
  heartbeat.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState


class HookedGridSampler(optuna.samplers.GridSampler):
    """optuna's GridSampler whose rule for the points still to try is `unvisited_grid_ids`, a method of
    the subclass (optuna calls the private `_get_unvisited_grid_ids` in `before_trial` for a trial
    numbered past the grid's size, and in `after_trial` to decide whether the grid is done)."""

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        return self.unvisited_grid_ids(study)

    def unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        raise NotImplementedError

    @property
    def grid_size(self) -> int:
        """The number of grid points (trial n < grid_size gets point n from `before_trial`)."""
        return self._n_min_trials

    def same_search_space(self, search_space: dict[str, Any]) -> bool:
        """Whether `search_space` (a trial's `search_space` system attr) is this sampler's grid."""
        return self._same_search_space(search_space)


def trial_failure_logger() -> logging.Logger:
    """The logger `Study.optimize` reports a failed trial to (one warning, with the exception's traceback)."""
    return logging.getLogger("optuna.study._optimize")


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (Optuna wraps an RDBStorage in a cache)."""
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (storage methods take it; the trial's number is per study)."""
    return trial._trial_id


def set_trial_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    """Store `key`=`value` in a trial's system attrs (a pruner holds only a FrozenTrial)."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def rdb_storage(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The RDBStorage under the study's cached storage, or None for another kind of storage."""
    storage = getattr(study._storage, "_backend", study._storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def heartbeat_grace_period(study: optuna.Study) -> int | None:
    """Seconds without a heartbeat after which the study's storage counts a RUNNING trial as stale
    (Optuna's default, twice the interval, when none was set); None when heartbeats are off."""
    storage = rdb_storage(study)
    if storage is None or storage.heartbeat_interval is None:
        return None
    return storage.grace_period or 2 * storage.heartbeat_interval


def stale_trial_callback(study: optuna.Study) -> Callable[[optuna.Study, FrozenTrial], None] | None:
    """What the study's storage does with a trial it failed as stale (`open_storage`: re-queue it)."""
    storage = rdb_storage(study)
    return None if storage is None else storage.get_heartbeat_stale_trial_callback()


def heartbeatless_trial_ids(study: optuna.Study, started_before: datetime.datetime) -> list[int]:
    """Storage ids of the RUNNING trials started before `started_before` that have no heartbeat row."""
    storage = rdb_storage(study)
    if storage is None:
        return []
    candidates = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                  if t.datetime_start is not None and t.datetime_start < started_before]
    if not candidates:
        return []
    query = sqlalchemy.text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
        sqlalchemy.bindparam("ids", expanding=True))
    with storage.engine.connect() as connection:
        beating = {row[0] for row in connection.execute(query, {"ids": candidates})}
    return [i for i in candidates if i not in beating]
