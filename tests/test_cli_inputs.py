"""Bad command-line input to `testbed tune`, `report` and `capability`: one line naming the problem and
the fix, before anything is created (no study, no database file, no directory), never a traceback.

One test per class of input: storage URL, --out, device, model list, numeric flags; and the report's
--reference. Every command runs in-process through `studies.cli.main`, so each case costs milliseconds.
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from studies import checks, cli
from studies.tune.storage import storage_url
from studies.tune.study import base_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = ["train.steps=12", "train.eval_every=4", "train.batch_size=4", "train.test_size=16"]


def refusal(argv: list[str]) -> str:
    """The message a command exits with; asserts it is one line and the prefix names the command."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    message = str(info.value.code)
    assert isinstance(info.value.code, str), f"exit code {info.value.code!r} instead of a message"
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(f"testbed {argv[0]}: "), message
    return message


def tune_argv(tmp_path: Path, *extra: str, storage: str | None = None) -> list[str]:
    argv = ["tune", "--task", "mqar", "--models", "attention", "--protocol", "v1", "--trials", "1", "--preset", "smoke",
            "--final-seeds", "0", "--quiet", "--out", str(tmp_path / "out")]
    if storage is not None:
        argv += ["--storage", storage]
    return [*argv, *extra, *TINY]


def nothing_created(tmp_path: Path, before: set[Path]) -> None:
    assert set(tmp_path.rglob("*")) == before, sorted(set(tmp_path.rglob("*")) - before)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


# ---------------------------------------------------------------------------------------- storage URL


def test_check_storage_url_messages(tmp_path, monkeypatch):
    cases = {
        "sqlite//x.db": "is not a database URL",
        "notadb://x": "unknown database dialect 'notadb'",
        "sqlite://x.db": "names no file",
        "sqlite://": "names no file",
        f"sqlite:///{tmp_path}/no/such/dir/s.db": f"directory {tmp_path}/no/such/dir does not exist",
        f"sqlite:///{tmp_path}": "is a directory",
    }
    for url, expected in cases.items():
        with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
            checks.check_storage_url(url)
    if "MySQLdb" not in sys.modules:
        with pytest.raises(ValueError, match=r"driver 'MySQLdb'.*pip install mysqlclient"):
            checks.check_storage_url("mysql://user@localhost/db")
    with pytest.raises(ValueError, match="no SQLite file"):
        checks.check_storage_url(f"sqlite:///{tmp_path}/absent.db", must_exist=True)
    assert checks.check_storage_url(f"sqlite:///{tmp_path}/s.db") == f"sqlite:///{tmp_path}/s.db"
    assert not (tmp_path / "s.db").exists()  # checking creates nothing
    # PostgreSQL without any driver installed (None in sys.modules makes the import fail).
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(ValueError, match=r"needs a PostgreSQL driver.*\[postgres\]"):
        checks.check_storage_url("postgresql://user@localhost/db")


def test_unreachable_postgres_fails_fast_in_one_line(tmp_path):
    pytest.importorskip("psycopg")
    port = _closed_port()
    start = time.monotonic()
    message = refusal(tune_argv(tmp_path, storage=f"postgresql://user:secret@127.0.0.1:{port}/db"))
    assert time.monotonic() - start < 4.0
    assert f"could not connect to PostgreSQL at 127.0.0.1:{port}" in message
    assert "secret" not in message  # the password is never echoed


def test_storage_url_refused_by_every_command_before_anything_is_created(tmp_path):
    before = set(tmp_path.rglob("*"))
    missing = f"sqlite:///{tmp_path}/missing/s.db"
    for url, expected in [("sqlite//x.db", "is not a database URL"), ("notadb://", "unknown database dialect"),
                          ("sqlite://x.db", "names no file"), (missing, "does not exist; create it")]:
        assert expected in refusal(tune_argv(tmp_path, storage=url))
        assert expected in refusal(["capability", "--storage", url, "--out", str(tmp_path / "h")])
        # The report reads existing studies: a missing file is the problem to name, not its directory.
        assert (expected if url != missing else "no SQLite file") in \
            refusal(["report", "--storage", url, "--out", str(tmp_path / "r")])
    nothing_created(tmp_path, before)
    for url, expected in [("notadb://", "unknown database dialect"), (missing, "no SQLite file")]:
        assert f"--lr-from-storage {url!r}" in refusal(["ablate", "--preset", "smoke", "--lr-from-storage", url])
        assert expected in refusal(["ablate", "--preset", "smoke", "--lr-from-storage", url])
    nothing_created(tmp_path, before)


def test_default_storage_creates_its_out_directory(tmp_path):
    # The default URL sqlite:///OUT/studies.db is the testbed's choice, not the user's: OUT is created;
    # a URL the user wrote is only checked.
    out = tmp_path / "a" / "b"
    assert storage_url(None, out) == f"sqlite:///{out / 'studies.db'}"
    assert out.is_dir()
    with pytest.raises(ValueError, match="does not exist"):
        storage_url(f"sqlite:///{tmp_path / 'c' / 's.db'}", out)
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------- --out


def test_out_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "f"
    file.write_text("x")
    argv = tune_argv(tmp_path)
    argv[argv.index("--out") + 1] = str(file)
    assert "is a file, not a directory" in refusal(argv)
    db = tmp_path / "s.db"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="p/mqar/attention")
    before = set(tmp_path.rglob("*"))
    assert "is a file, not a directory" in refusal(["report", "--storage", f"sqlite:///{db}", "--study-prefix", "p",
                                                    "--out", str(file)])
    assert "is a file, not a directory" in refusal(["capability", "--out", str(file)])
    nothing_created(tmp_path, before)


# --------------------------------------------------------------------------------------------- device


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_refused_before_a_study_exists(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    message = refusal(tune_argv(tmp_path, "--device", "cuda", storage=storage))
    assert "CUDA is not available" in message
    assert not (tmp_path / "s.db").exists()
    assert "CUDA is not available" in refusal(["capability", "--device", "cuda", "--out", str(tmp_path / "h")])
    assert not (tmp_path / "h").exists()


# ----------------------------------------------------------------------------------------- model list


def test_model_list_is_checked_before_any_study_is_created(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    argv = tune_argv(tmp_path, storage=storage)
    argv[argv.index("--models") + 1] = "attention,nosuch"
    message = refusal(argv)
    assert "unknown model 'nosuch'" in message and "gateloop" in message
    argv[argv.index("--models") + 1] = ""
    assert "--models '' names no model" in refusal(argv)
    argv[argv.index("--models") + 1] = "attention,attention"
    assert "more than once" in refusal(argv)
    assert not (tmp_path / "s.db").exists()


def test_a_model_list_takes_import_paths_and_refuses_one_that_cannot_be_used(tmp_path, monkeypatch):
    """Issue 26: a mixer by import path (docs/own-model.md); its study is named after its class, so two paths
    to one class name are refused, and a path that does not import is one line with nothing created."""
    from studies.tune.cli import parse_models

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the example's directory joins it
    assert parse_models("gateloop,examples/gla_mixer.py:GLA") == ["gateloop", "examples/gla_mixer.py:GLA"]
    with pytest.raises(ValueError, match="GLA would name the studies of two models"):
        parse_models(f"examples/gla_mixer.py:GLA,{Path('examples/gla_mixer.py').resolve()}:GLA")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    argv = tune_argv(tmp_path, storage=storage)
    for models, fragment in ((f"attention,{tmp_path / 'nosuch.py'}:X", "no such file"),
                             ("no_such_package.mixers:X", "no module named 'no_such_package'"),
                             ("examples/gla_mixer.py:Nope", "has no 'Nope'; its nn.Module classes: ['GLA']"),
                             ("nosuch", "unknown model 'nosuch'; models: gateloop")):
        argv[argv.index("--models") + 1] = models
        assert fragment in refusal(argv)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "out").exists()


def test_num_heads_that_fit_no_matched_width_say_so(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    argv = tune_argv(tmp_path, "mixer.num_heads=4096", storage=storage)
    argv[argv.index("--models") + 1] = "gateloop"
    message = refusal(argv)
    assert "parameter matching" in message and "mixer.d_model=" in message, message
    assert not (tmp_path / "s.db").exists()


def test_num_heads_that_do_not_divide_the_default_width_are_matched(tmp_path):
    # 5 heads do not divide the class's default width (64), but the width is chosen by parameter
    # matching among the widths 5 heads divide: accepted, and matched.
    config = base_config("mqar", "gateloop", "quick", ["mixer.num_heads=5"])
    assert config.mixer.num_heads == 5 and config.mixer.d_model % 5 == 0


# -------------------------------------------------------------------------------------- numeric flags


def test_each_numeric_flag_has_its_own_message(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    cases = [
        (["--trials", "0"], "--trials 0: must be >= 1"),
        (["--seeds", "0"], "--seeds 0: must be >= 1"),
        (["--final-seeds", "-1"], "--final-seeds -1: must be >= 0"),
        (["--sampler-seed", "-1"], "--sampler-seed -1: must be >= 0"),
        (["--grace-period", "-1"], "--grace-period -1: must be > 0"),
        (["--heartbeat-interval", "0"], "--heartbeat-interval 0: must be > 0"),
        (["--heartbeat-interval", "30", "--grace-period", "30"], "--heartbeat-interval 30 must be shorter than "
                                                                 "--grace-period 30"),
    ]
    for flags, expected in cases:
        message = refusal(tune_argv(tmp_path, *flags, storage=storage))
        assert expected in message, (flags, message)
        others = {"--trials", "--seeds", "--final-seeds", "--sampler-seed", "--grace-period",
                  "--heartbeat-interval"} - set(flags)
        assert not any(f"{flag} " in message for flag in others), message  # names only what is wrong
    assert not (tmp_path / "s.db").exists()


# ------------------------------------------------------------------------------------------- reference


def test_report_reference_must_be_a_reported_model(tmp_path):
    db = tmp_path / "s.db"
    for model in ("gateloop", "attention"):
        optuna.create_study(storage=f"sqlite:///{db}", study_name=f"p/mqar/{model}").enqueue_trial({})
    message = refusal(["report", "--storage", f"sqlite:///{db}", "--study-prefix", "p", "--reference", "nosuch",
                       "--out", str(tmp_path / "r")])
    assert "--reference 'nosuch'" in message and "attention, gateloop" in message
    assert not (tmp_path / "r").exists()
