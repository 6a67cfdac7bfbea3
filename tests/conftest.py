"""Shared fixtures: the `device` every device-aware test runs on, and a throwaway PostgreSQL server for the
multi-worker tuning tests.

Device-aware tests take a `device` argument ("cpu" or "cuda"). By default each runs once per device, the
cuda run skipped with its reason where torch sees no CUDA device; `--device cpu` or `--device cuda` keeps
one of them, and `--device cuda` also deselects every test that neither takes `device` nor carries the
`cuda` mark (CUDA-only tests): that is how `testbed check-gpu` runs the CUDA half of the suite.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

DEVICES = (
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device", choices=("all", "cpu", "cuda"), default="all",
        help="devices of the tests that take a `device` argument (default all: cpu, and cuda where present); "
             "cuda also deselects the tests that do not take one",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: a CUDA-only test (skips itself without CUDA); kept by --device cuda")


def _runs_on_cuda(item: pytest.Item) -> bool:
    return "device" in getattr(item, "fixturenames", ()) or item.get_closest_marker("cuda") is not None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--device")
        metafunc.parametrize("device", [p for p in DEVICES if chosen in ("all", p.values[0])])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--device") != "cuda":
        return
    deselected = [item for item in items if not _runs_on_cuda(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if _runs_on_cuda(item)]


def _pg_bin() -> Path | None:
    """Debian's newest PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server on 127.0.0.1 (trust auth) in a temp data dir, stopped at session end.

    initdb refuses to run as root, so as root the server runs as the `postgres` OS user; as any other
    user it runs as that user. Skips (with the reason) only when no server can be started.
    """
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql; .ci/run does this)")
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` OS user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    # Under /tmp directly: pytest's own tmp dirs are private to root, and the server user must enter it.
    root = Path(tempfile.mkdtemp(prefix="testbed-pg-"))
    data = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    log = root / "server.log"

    def pg(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=timeout)

    started = False
    try:
        init = pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        if init.returncode != 0:
            pytest.skip(f"initdb failed, no PostgreSQL server for the tests: {init.stderr.strip()[-500:]}")
        # Durability is irrelevant to a throwaway test server; the unix socket goes to our own dir.
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off " \
                  f"-c full_page_writes=off -c max_connections=200"
        start = pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start",
                   timeout=90)
        if start.returncode != 0:
            tail = log.read_text()[-800:] if log.exists() else start.stderr
            pytest.skip(f"pg_ctl could not start a PostgreSQL server: {tail.strip()}")
        started = True
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", connect_timeout=5):
                    break
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    pytest.skip(f"PostgreSQL started but accepts no connection: {e}")
                time.sleep(0.3)
        yield url
    finally:
        if started:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """Tests use tiny tensors, where a second intra-op thread costs more than it gives (and on a busy
    2-core machine much more); one thread also keeps float reductions in a fixed order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _float32_convolutions_on_cuda() -> Iterator[None]:
    """cuDNN runs float32 convolutions as TF32 by default (~1e-3 relative); the tests compare float32
    computations at float32 tolerances, so on CUDA they run them in full float32 (matmuls already are)."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous
