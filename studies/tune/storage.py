"""Where studies live: storage URLs, the opened Optuna storage, and the studies' names.

The storage is the distributed engine: the default is an SQLite file `OUT/studies.db`; any SQLAlchemy
URL works, e.g. `postgresql://user@host/db` (`pip install -e '.[postgres]'`). Running the same command
on several machines against one URL is how tuning scales out.

Crash safety. Heartbeats are on (`--heartbeat-interval`, `--grace-period`): a RUNNING trial whose
heartbeat is older than the grace period (its worker was killed) is failed by whichever worker looks
next and re-queued as a WAITING trial with the same parameters (at most MAX_RETRY times); FAIL never
counts (`studies.tune.budget.reap`).
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc

from studies.checks import CONNECT_TIMEOUT, check_optuna_storage, check_out_dir, check_storage_url, with_driver

HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # a RUNNING trial silent this long belongs to a dead worker
MAX_RETRY = 3  # re-queue a killed trial at most this often (a config that kills its worker each time is dropped)


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
    # Workers started together on a fresh database race to create Optuna's tables; the loser sees a
    # duplicate-key or "already exists" error, and on a second look finds the tables made.
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period, heartbeat_stale_trial_callback=retry_callback(),
                )
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            if attempt == 4:
                raise
            time.sleep(0.5 + (os.getpid() % 7) / 7)  # workers started together retry at different times
    raise AssertionError("unreachable")


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """What a storage does with a trial failed as stale: re-queue it, with its params and system attrs
    (a grid trial's point among them), at most MAX_RETRY times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def open_existing_storage(url: str, flag: str = "--storage") -> optuna.storages.RDBStorage:
    """The storage of existing studies, for a command that only reads them (`flag` is how the user gave it):
    an SQLite URL must name an existing file, and the database must hold Optuna's tables (nothing is
    created, in a database that is not a study storage least of all)."""
    url = check_storage_url(url, flag, must_exist=True)
    check_optuna_storage(url, flag)
    return optuna.storages.RDBStorage(url)


def as_storage(storage: str | optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    return open_storage(storage) if isinstance(storage, str) else storage


def check_prefix(prefix: str, flag: str = "--study-prefix") -> None:
    """A study prefix must be a non-empty name without '/': studies are named PREFIX/TASK/MODEL, and the
    report finds them by splitting that name at its slashes."""
    if not prefix.strip():
        raise ValueError(f"{flag} {prefix!r} names no prefix (the studies would be named /TASK/MODEL); pass a "
                         f"name such as {flag} tune")
    if "/" in prefix:
        raise ValueError(f"{flag} {prefix!r} contains '/': studies are named PREFIX/TASK/MODEL, so a prefix has "
                         f"none; pass {flag} {prefix.split('/')[0] or 'tune'} (the part before the task)")


def study_name(prefix: str, task: str, model: str, confirm: bool = False) -> str:
    return f"{prefix}/{task}/{model}" + ("/confirm" if confirm else "")


def jsonable(obj: Any) -> Any:
    """`obj` as the storage holds it in a study's attrs: through JSON (tuples become lists, anything JSON
    cannot hold its str), so that a stored value and a fresh one compare equal."""
    return json.loads(json.dumps(obj, default=str))
