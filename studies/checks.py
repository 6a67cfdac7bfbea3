"""Checks of command-line input that every subcommand shares, run before anything is created or trained.

Each raises ValueError with one line that names the problem and the fix; the subcommand turns it into
`SystemExit("testbed <command>: <message>")`, so a user never sees a traceback for a bad argument.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    """`path` must be a directory or not exist yet (it is created later, when there is something to write)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a directory; pass a directory path (or move the file)")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is a file; pass a path under a directory")
    return path


def check_at_least_one(flag: str, value: int) -> None:
    """A count flag (--seeds, --workers, --threads ...) must be >= 1."""
    if value < 1:
        raise ValueError(f"{flag} {value} must be >= 1")


def check_preset_tasks(preset_name: str, preset_tasks: Sequence[str], tasks: Sequence[str]) -> None:
    """Every task must be one the preset sizes: outside it a task would run at its default size, which is
    not what the preset promises (a smoke run would not be seconds)."""
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


def check_storage_url(url: str, flag: str = "--storage", must_exist: bool = False,
                      connect_timeout: int = CONNECT_TIMEOUT) -> str:
    """`url` must be an SQLAlchemy URL a study can live in; returns it with its driver resolved.

    SQLite: the URL must name a file whose directory exists (the directory is not created: a typo in
    a path the user wrote should not grow a tree of directories), with `must_exist` the file itself.
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
