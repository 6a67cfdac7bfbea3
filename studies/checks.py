"""Checks of command-line input that every subcommand shares, run before anything is created or trained.

Each raises ValueError with one line that names the problem and the fix; the subcommand turns it into
`SystemExit("testbed <command>: <message>")`, so a user never sees a traceback for a bad argument.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

CONNECT_TIMEOUT = 5  # seconds to reach a database server before a command gives up on it

# Python module of a database driver -> what to pip install for it
_DRIVER_PACKAGES = {"MySQLdb": "mysqlclient", "pymysql": "pymysql", "psycopg2": "psycopg2-binary",
                    "psycopg": "psycopg", "oracledb": "oracledb", "pyodbc": "pyodbc"}

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
_BACKEND_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB"}


def check_device(device: str | None, flag: str = "--device") -> None:
    """`device` (None: the preset's, i.e. auto) must exist on this machine; `flag` is how the user gave it."""
    import torch  # here, not at the top: `testbed report` checks its storage without importing torch

    if device is None or device in ("auto", "cpu"):
        return
    if not device.startswith("cuda"):
        raise ValueError(f"{flag} {device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        fix = "--device cpu" if flag == "--device" else f"{flag}=cpu"
        raise ValueError(f"{flag} {device!r} but CUDA is not available on this machine; use {fix} (or auto)")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ValueError(f"{flag} {device!r}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """`path` must be a directory or not exist yet (it is created later, when there is something to write),
    and this process must be able to write there: into the directory, or into its nearest existing parent."""
    if str(path) == "":
        raise ValueError(f"{flag} '' names no directory; pass a directory path, or leave out {flag} for the default")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a directory; pass a directory path (or move the file)")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is a file; pass a path under a directory")
    existing = _nearest_existing(path)
    if not _writable_dir(existing):
        why = _why_not_writable(existing)
        problem = f"is {why}" if existing == path else f"cannot be created: {str(existing)!r} is {why}"
        raise ValueError(f"{flag} {str(path)!r} {problem}; pass a directory you can write to")
    return path


def _nearest_existing(path: Path) -> Path:
    """`path` if it exists, else its nearest existing parent (the directory a mkdir -p would write into)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _writable_dir(directory: Path) -> bool:
    # access(2) answers for this process's user, and refuses writes on a read-only filesystem even to root.
    return os.access(directory, os.W_OK | os.X_OK)


def _why_not_writable(path: Path) -> str:
    """'read-only' (the filesystem or the mode) or 'not writable by this user', for a message."""
    try:
        read_only_fs = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_fs = False
    if read_only_fs:
        return "on a read-only filesystem"
    return "not writable by this user"


def check_at_least_one(flag: str, value: int) -> None:
    """A count flag (--seeds, --workers, --threads ...) must be >= 1."""
    if value < 1:
        raise ValueError(f"{flag} {value} must be >= 1")


def parse_names(text: str, flag: str, what: str = "name") -> list[str]:
    """The names in a comma-separated list given to `flag` ("mqar, state_tracking" -> ["mqar",
    "state_tracking"]), spaces around each stripped; `what` is what a name names ("task", "model"). Refuses,
    naming the fix, a list that names nothing, an empty entry (",,", a leading or trailing comma: a name
    lost to a typo would otherwise be dropped in silence) and a name given twice. Whether each name exists
    is the caller's to check."""
    names = [part.strip() for part in text.split(",")]
    kept = [name for name in names if name]
    if not kept:
        raise ValueError(f"{flag} {text!r} names no {what}; pass one or more, comma-separated")
    if len(kept) < len(names):
        where = ", ".join(str(i + 1) for i, name in enumerate(names) if not name)
        raise ValueError(f"{flag} {text!r} has an empty entry (entry {where} of {len(names)}); "
                         f"remove the extra comma: {flag} {','.join(kept)}")
    twice = sorted({name for name in kept if kept.count(name) > 1})
    if twice:
        unique = ",".join(dict.fromkeys(kept))
        raise ValueError(f"{flag} {text!r} names {', '.join(twice)} more than once; name each once: {flag} {unique}")
    return kept


# Presets that size no task themselves: they hold the capability study's shared training settings, and the
# study's variants (studies/experiments/capability/study.py) fix every task's knobs; a task run under one
# would run at its default size, which no study of that preset ever ran.
UNSIZED_PRESETS = ("capability", "gpu")


def check_preset_tasks(preset_name: str, preset_tasks: Sequence[str], tasks: Sequence[str]) -> None:
    """Every task must be one the preset sizes: outside it a task would run at its default size, which is
    not what the preset promises (a smoke run would not be seconds)."""
    if preset_name in UNSIZED_PRESETS:
        raise ValueError(f"preset {preset_name!r} sizes no task itself (the capability study's variants do: run "
                         f"`testbed capability`); choose a preset that sizes its tasks, e.g. quick or standard")
    outside = [t for t in tasks if t not in preset_tasks]
    if outside:
        raise ValueError(
            f"task {', '.join(map(repr, outside))} is not in the {preset_name} preset (its tasks: "
            f"{', '.join(preset_tasks)}); choose among those, or a preset that has it")


def with_driver(url: str) -> str:
    """`postgresql://` (or `postgres://`) with the installed driver: psycopg2, else psycopg 3."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg2", "postgresql"), ("psycopg", "postgresql+psycopg")):
        try:
            __import__(module)
        except ImportError:
            continue
        return f"{driver}://{rest}"
    raise ValueError(f"storage {url!r} needs a PostgreSQL driver and none is installed: "
                     f"pip install -e '.[postgres]' (installs psycopg), or use an SQLite file sqlite:///PATH.db")


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def _check_sqlite_file(path: Path, flag: str, shown: str) -> None:
    """An existing file must be an SQLite database: its header, or empty (SQLite makes an empty file a new
    database). Reading 16 bytes is enough to refuse a text file or a wrong path before SQLite says
    "file is not a database" from deep inside a study."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise ValueError(f"{flag} {shown!r}: cannot read {str(path)!r} ({e.strerror}); fix its permissions "
                         f"or choose another storage") from None
    if head and head != SQLITE_HEADER:
        raise ValueError(f"{flag} {shown!r}: {str(path)!r} is not an SQLite database (it lacks SQLite's header); "
                         f"point {flag} at the .db file a study was stored in, or at a path that does not exist yet")


def check_storage_url(url: str, flag: str = "--storage", must_exist: bool = False,
                      connect_timeout: int = CONNECT_TIMEOUT) -> str:
    """`url` must be an SQLAlchemy URL a study can live in; returns it with its driver resolved.

    SQLite: the URL must name a file whose directory exists (the directory is not created: a typo in
    a path the user wrote should not grow a tree of directories), with `must_exist` the file itself; a
    file that exists must be an SQLite database; and unless `must_exist` (a command that only reads),
    file and directory must be writable.
    A server database: its driver must be installed and the server must answer within
    `connect_timeout` seconds. Creates nothing.
    """
    import sqlalchemy
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    example = "e.g. sqlite:///runs/tune/studies.db (a file) or postgresql://user@host:5432/db"
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ValueError(f"{flag} {url!r} is not a database URL; write DIALECT://..., {example}") from None
    shown = parsed.render_as_string(hide_password=True)  # never echo a password
    if parsed.drivername in ("postgresql", "postgres"):
        try:
            parsed = make_url(with_driver(url))
        except ValueError:
            raise ValueError(f"{flag} {shown!r} needs a PostgreSQL driver and none is installed: "
                             f"pip install -e '.[postgres]' (installs psycopg), or use sqlite:///PATH.db") from None
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise ValueError(f"{flag} {shown!r}: unknown database dialect {parsed.drivername!r}; use one SQLAlchemy "
                         f"knows, {example}") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        package = _DRIVER_PACKAGES.get(e.name or "", e.name)
        raise ValueError(f"{flag} {shown!r}: the {parsed.get_backend_name()} driver {e.name!r} is not installed: "
                         f"pip install {package} (or use an SQLite file, sqlite:///PATH.db)") from None

    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:" or parsed.host:
            raise ValueError(f"{flag} {shown!r} names no file (an in-memory database is gone when the command "
                             f"exits); write sqlite:///relative/path.db or sqlite:////absolute/path.db (3 or 4 slashes)")
        path = Path(parsed.database)
        if path.is_dir():
            raise ValueError(f"{flag} {shown!r}: {str(path)!r} is a directory; name a file in it, "
                             f"e.g. sqlite:///{path / 'studies.db'}")
        if must_exist and not path.exists():
            raise ValueError(f"{flag} {shown!r}: no SQLite file at {str(path)!r} (did `testbed tune` write "
                             f"elsewhere? its default is sqlite:///OUT/studies.db)")
        if not path.parent.is_dir():
            raise ValueError(f"{flag} {shown!r}: directory {path.parent} does not exist; create it "
                             f"(mkdir -p {path.parent}) or leave out --storage to use the default under --out")
        if path.exists():
            _check_sqlite_file(path, flag, shown)
        if not must_exist:
            # The command writes: SQLite needs the file and, for its journal, the directory writable.
            for target, what in ((path, "file"), (path.parent, "directory")):
                if target.exists() and not os.access(target, os.W_OK | (os.X_OK if what == "directory" else 0)):
                    raise ValueError(f"{flag} {shown!r}: the {what} {str(target)!r} is {_why_not_writable(target)}, "
                                     f"and a study is written there; choose a storage path you can write to")
        return parsed.render_as_string(hide_password=False)

    connect_args = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = connect_timeout
    engine = sqlalchemy.create_engine(parsed, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__
        backend = parsed.get_backend_name()
        port = parsed.port or _DEFAULT_PORTS.get(backend, "default port")
        raise ValueError(f"{flag}: could not connect to {_BACKEND_NAMES.get(backend, backend)} at "
                         f"{parsed.host or 'localhost'}:{port} ({reason}); start the server, or fix host, port, "
                         f"user, password or database in the URL") from None
    finally:
        engine.dispose()
    return parsed.render_as_string(hide_password=False)


OPTUNA_TABLE = "studies"  # the table every Optuna RDB storage has (its studies' names and ids)


def check_optuna_storage(url: str, flag: str = "--storage") -> None:
    """A storage that a command only reads (`testbed report`, `capability --snapshot`, `ablate
    --lr-from-storage`) must hold Optuna's tables: opened by Optuna, any other database (or an empty file)
    would have them created in it, and the command would report nothing found. Call it after
    `check_storage_url(url, flag, must_exist=True)`. SQLite is read through sqlite3 in read-only mode, so
    nothing is written even to a database that is refused; a server database through SQLAlchemy's inspector."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    fix = f"point {flag} at the database a `testbed tune` or `testbed capability` run stored its studies in"
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database).resolve()
        try:
            with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
                found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                   (OPTUNA_TABLE,)).fetchone()
        except sqlite3.Error as e:
            raise ValueError(f"{flag} {shown!r}: cannot read {str(path)!r} as SQLite ({e}); {fix}") from None
        if found is None:
            raise ValueError(f"{flag} {shown!r}: {str(path)!r} holds no Optuna studies (it has no "
                             f"{OPTUNA_TABLE!r} table); {fix}")
        return
    connect_args = {"connect_timeout": CONNECT_TIMEOUT} if parsed.get_backend_name() == "postgresql" else {}
    engine = sqlalchemy.create_engine(with_driver(url), connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    try:
        found = sqlalchemy.inspect(engine).has_table(OPTUNA_TABLE)
    finally:
        engine.dispose()
    if not found:
        raise ValueError(f"{flag} {shown!r} holds no Optuna studies (it has no {OPTUNA_TABLE!r} table); {fix}")


def training_bytes(config: Any) -> int:
    """A lower bound on the memory one run of `config` (a studies.config.RunConfig) holds at once: its
    held-out sets (int64 inputs and targets at every evaluated length) and one training step's batch with
    the activations any backbone keeps for the backward pass — the residual stream (B, L, D) in fp32 at
    every layer's input and the output, and the logits (B, L, vocab) with their log-softmax. Mixers keep
    more (gates, states), so a run may need many times this; the bound only ever refuses what cannot fit."""
    tc, L = config.train, config.task.seq_len
    D, layers, vocab = config.mixer.d_model, config.lm.n_layers, config.lm.vocab_size
    held_out = tc.test_size * (L + sum(config.eval_lengths)) * 2 * 8
    per_token = 2 * 8 + 4 * D * (layers + 1) + 2 * 4 * vocab
    return held_out + tc.batch_size * L * per_token


def available_bytes(device: str) -> tuple[int, str] | None:
    """Memory a run on `device` may use and where that figure comes from: MemAvailable of /proc/meminfo
    (Linux; free pages elsewhere) for the CPU, the GPU's total memory for CUDA; None where unknown."""
    if device.startswith("cuda"):
        import torch

        index = int(device.partition(":")[2] or 0)
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {index}'s memory"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free RAM"
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: Any) -> None:
    """Refuse a run whose lower-bound memory (`training_bytes`) exceeds what its device has, with the estimate
    and the fix, before anything is allocated: an oversized batch would otherwise grow until the kernel
    kills the process, with no message."""
    import torch

    device = config.train.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    have = available_bytes(device)
    need = training_bytes(config)
    if have is None or need <= have[0]:
        return
    tc = config.train
    raise ValueError(f"train.batch_size={tc.batch_size}, train.test_size={tc.test_size} at seq_len="
                     f"{config.task.seq_len}: one run needs at least {_gib(need)} (batch activations and held-out "
                     f"sets), more than the {_gib(have[0])} of {have[1]}; lower train.batch_size or train.test_size")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
