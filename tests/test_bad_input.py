"""Bad input to every command, as a new user would give it (issue 27): one line that names the problem and
the fix, before anything is created or trained, never a traceback.

The cases are one table (command, a fragment of the message, the exit status a shell sees); each runs
in-process through `studies.cli.main` and checks that nothing was created. The convention is that of
tests/test_cli_inputs.py: a refusal is `SystemExit("testbed <command>: <message>")`, which a shell sees as
status 1 with the message on stderr; `testbed tasks` prints "testbed tasks <action>: error: ..." and
returns 2. After the table: a worker's death and a Ctrl-C during parallel runs (one line, no traceback,
no warning, no temporary file left behind).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest

from studies import checks, cli
from studies.atomic_io import write_atomic_bytes
from studies.experiments.capability import run as capability_run
from studies.pool import WorkerDied, run_parallel
from studies.presets import get_preset
from studies.suite import run as suite_run
from studies.suite.configs import build_configs

S = ["suite", "--model", "gateloop", "--preset", "smoke", "--tasks", "state_tracking", "--out", "{out}"]
A = ["ablate", "--preset", "smoke", "--tasks", "state_tracking", "--seeds", "1", "--out", "{out}"]
TUNE = ["tune", "--task", "mqar", "--models", "attention", "--protocol", "v1", "--trials", "1", "--preset", "smoke", "--final-seeds", "0",
        "--quiet"]

# (argv, fragment of the one-line message, exit status). In argv, {out} is a directory that does not exist
# yet, {garbage} a file of random bytes, {text} a text file, {ro} a directory this process cannot write,
# {empty} an empty file, {plain} an SQLite database without Optuna's tables, {tuning} an Optuna storage of a
# tuning study.
CASES = [
    # Settings under which training cannot run, refused before it starts.
    ([*S, "task.seq_len=1", "train.steps=6"], "state_tracking: seq_len=1 must be >= 2", 1),
    ([*S, "task.seq_len=4"], "of training draws would be one of the test_size=64 held-out rows", 1),
    ([*S, "train.seed=-1"], "seed=-1 must be >= 0", 1),
    ([*S, "lm.vocab_size=2"], "lm.vocab_size=2 is smaller than the state_tracking task's 3 token ids", 1),
    ([*S, "train.batch_size=100000000"], "one run needs at least", 1),
    # Nonsense that used to train in silence.
    ([*S, "train.lr=inf"], "lr=inf must be > 0 and finite", 1),
    ([*S, "train.lr=nan"], "lr=nan must be > 0 and finite", 1),
    ([*S, "train.weight_decay=-1"], "weight_decay=-1.0 must be >= 0 and finite (0 turns weight decay off)", 1),
    ([*S, "train.grad_clip=-1"], "grad_clip=-1.0 must be > 0 and finite", 1),
    ([*S, "train.grad_clip=0"], "grad_clip=0.0 must be > 0 and finite", 1),
    ([*S, "train.grad_clip=inf"], "grad_clip=inf must be > 0 and finite", 1),
    ([*S, "train.transition_lr_factor=nan"], "transition_lr_factor=nan must be >= 0 and finite", 1),
    ([*S, "train.grad_clip=inf", "train.weight_decay=inf"], "weight_decay=inf must be >= 0 and finite", 1),
    (["suite", "--model", "gateloop", "--preset", "capability", "--out", "{out}"],
     "preset 'capability' sizes no task", 1),
    (["suite", "--model", "gateloop", "--preset", "gpu", "--out", "{out}"], "preset 'gpu' sizes no task", 1),
    (["ablate", "--preset", "capability", "--out", "{out}"], "preset 'capability' sizes no task", 1),
    # Blank entries in comma lists, named.
    (["suite", "--model", "gateloop", "--preset", "smoke", "--tasks", "mqar,,state_tracking", "--out", "{out}"],
     ("--tasks 'mqar,,state_tracking' has an empty entry (entry 2 of 3); remove the extra comma: "
      "--tasks mqar,state_tracking"), 1),
    (["suite", "--model", "gateloop", "--preset", "smoke", "--tasks", "mqar,", "--out", "{out}"],
     "--tasks 'mqar,' has an empty entry (entry 2 of 2)", 1),
    (["suite", "--model", "gateloop,,retnet", "--preset", "smoke", "--out", "{out}"],
     "--model 'gateloop,,retnet' has an empty entry", 1),
    (["suite", "--model", "gateloop", "--model", "gateloop", "--preset", "smoke", "--out", "{out}"],
     "names gateloop more than once", 1),
    (["ablate", "--preset", "smoke", "--tasks", "mqar,,state_tracking", "--out", "{out}"],
     "--tasks 'mqar,,state_tracking' has an empty entry", 1),
    (["ablate", "--preset", "smoke", "--ablations", "full,,real_gates", "--out", "{out}"],
     "--ablations 'full,,real_gates' has an empty entry (entry 2 of 3)", 1),
    (["tasks", "audit", "--preset", "smoke", "--tasks", "mqar,,state_tracking"],
     "--tasks 'mqar,,state_tracking' has an empty entry", 2),
    # Clashes and flags that would be ignored.
    ([*A, "model.magnitude=fixed"],
     "clashes with ablation(s) unit_magnitude (sets magnitude='one'); signed_gates (GateLoopConfig: phase='sign' is "
     "the signed real gate", 1),
    ([*A, "model.magnitude=fixed"], "head_magnitude (sets magnitude='data_head'); modulus_sigmoid", 1),
    ([*A, "model.magnitude=fixed"],
     "drop the override, or keep to the ablations it leaves alone: --ablations full,", 1),
    ([*A, "--lr-study-prefix", "mine"], "--lr-study-prefix 'mine' is read only with --lr-from-storage", 1),
    (["suite", "--model", "gateloop", "--preset", "smoke", "--out", ""], "--out '' names no directory", 1),
    (["ablate", "--preset", "smoke", "--out", ""], "--out '' names no directory", 1),
    # Storage files that are not databases.
    ([*A, "--lr-from-storage", "sqlite:///{garbage}"], "is not an SQLite database", 1),
    ([*A, "--lr-from-storage", "sqlite:///{text}"], "is not an SQLite database", 1),
    ([*TUNE, "--out", "{out}", "--storage", "sqlite:///{garbage}"], "is not an SQLite database", 1),
    (["report", "--storage", "sqlite:///{text}", "--out", "{out}"], "is not an SQLite database", 1),
    # Locations that cannot be written.
    ([*S[:-1], "{ro}"], "is not writable by this user", 1),
    ([*S[:-1], "{ro}/sub/dir"], "cannot be created: '{ro}' is not writable by this user", 1),
    ([*A[:-1], "{ro}/x"], "cannot be created", 1),
    ([*TUNE, "--out", "{ro}/x"], "cannot be created", 1),
    ([*TUNE, "--out", "{out}", "--storage", "sqlite:///{ro}/s.db"], "the directory '{ro}' is not writable", 1),
    # A storage a command only reads must be a study storage: Optuna would create its tables in any other.
    (["report", "--storage", "sqlite:///{plain}", "--out", "{out}"],
     "'{plain}' holds no Optuna studies (it has no 'studies' table); point --storage at the database", 1),
    (["report", "--storage", "sqlite:///{empty}", "--out", "{out}"], "'{empty}' holds no Optuna studies", 1),
    (["capability", "--snapshot", "--storage", "sqlite:///{plain}", "--out", "{out}"],
     "'{plain}' holds no Optuna studies", 1),
    (["capability", "--snapshot", "--storage", "sqlite:///{tuning}", "--out", "{out}"],
     "holds no study of the capability study `capability` (studies named capability/...; it holds tune/...); "
     "point --storage at the database the study ran in", 1),
    (["report", "--out", ""], "--out '' names no directory", 1),
    # The suite's up-front checks, made by tune before a study exists (its first trial would fail on them).
    ([*TUNE, "--out", "{out}", "train.batch_size=100000000"], "one run needs at least", 1),
    ([*TUNE, "--out", "{out}", "--task", "state_tracking", "task.seq_len=4"],
     "of training draws would be one of the test_size=64 held-out rows", 1),
]


@pytest.fixture(scope="module")
def tuning_storage(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of an Optuna storage that holds one tuning study (tune/mqar/attention) and no capability study."""
    path = tmp_path_factory.mktemp("tuning") / "studies.db"
    optuna.create_study(storage=f"sqlite:///{path}", study_name="tune/mqar/attention")
    return path.read_bytes()


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tuning_storage: bytes) -> dict[str, str]:
    """The paths the table names; {ro} is made read-only (as root, whom modes do not stop, os.access is
    made to answer for {ro} as the kernel answers an ordinary user: not writable)."""
    (tmp_path / "garbage.db").write_bytes(os.urandom(4096))
    (tmp_path / "text.db").write_text("this is a text file, not a database\n")
    (tmp_path / "empty.db").touch()
    with closing(sqlite3.connect(tmp_path / "plain.db")) as db:  # an SQLite database of something else
        db.execute("CREATE TABLE notes (text TEXT)")
    (tmp_path / "tuning.db").write_bytes(tuning_storage)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root
        access = os.access

        def unprivileged(path: os.PathLike | str, mode: int, *args, **kwargs) -> bool:
            inside = Path(path) == ro or ro in Path(path).parents
            return access(path, mode, *args, **kwargs) and not (inside and mode & os.W_OK)

        monkeypatch.setattr(checks.os, "access", unprivileged)
    yield {"out": str(tmp_path / "out"), "ro": str(ro),
           **{name: str(tmp_path / f"{name}.db") for name in ("garbage", "text", "empty", "plain", "tuning")}}
    ro.chmod(0o755)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit status a shell would see, the refusal message, everything else printed), in-process."""
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    printed = capsys.readouterr()
    if isinstance(code, str):
        return 1, code, printed.out + printed.err  # Python prints the message on stderr and exits with 1
    return code, printed.err.strip(), printed.out


@pytest.mark.parametrize("argv, fragment, status", CASES, ids=[" ".join(c[0]).replace("/", "|") for c in CASES])
def test_bad_input_is_refused_in_one_line_before_anything_is_created(argv, fragment, status, places, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output directory would appear here
    argv = [a.format(**places) for a in argv]
    before = set(tmp_path.rglob("*"))
    code, message, rest = run_cli(argv, capsys)
    assert code == status, (code, message)
    assert fragment.format(**places) in message, message
    prefix = f"testbed {argv[0]} {argv[1]}: error: " if argv[0] == "tasks" else f"testbed {argv[0]}: "
    assert message.startswith(prefix) and "\n" not in message and "Traceback" not in message, message
    assert "Traceback" not in rest and "Warning" not in rest, rest
    assert set(tmp_path.rglob("*")) == before, sorted(set(tmp_path.rglob("*")) - before)


def test_parse_names_is_the_one_rule_for_name_lists():
    assert checks.parse_names(" mqar, state_tracking ", "--tasks", "task") == ["mqar", "state_tracking"]
    for text, fragment in [("", "--tasks '' names no task"), (",", "--tasks ',' names no task"),
                           (",mqar", "(entry 1 of 2)"), ("a,,b,", "(entry 2, 4 of 4)"),
                           ("a,b,a", "names a more than once; name each once: --tasks a,b")]:
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            checks.parse_names(text, "--tasks", "task")


def test_a_snapshot_reads_a_read_only_archive(places, tmp_path, capsys):
    # A snapshot only reads its storage, so a study archived where this user cannot write is copied, not refused.
    ro = Path(places["ro"])
    ro.chmod(0o755)
    optuna.create_study(storage=f"sqlite:///{ro / 'studies.db'}", study_name="capability/parity/gateloop_max")
    ro.chmod(0o555)
    argv = ["capability", "--snapshot", "--storage", f"sqlite:///{ro / 'studies.db'}", "--out", places["out"]]
    code, message, rest = run_cli(argv, capsys)
    assert code == 0, message
    assert (Path(places["out"]) / "report.md").is_file() and sorted(p.name for p in ro.iterdir()) == ["studies.db"]


def test_an_empty_sqlite_file_is_a_new_database(tmp_path):
    (tmp_path / "empty.db").touch()  # SQLite makes an empty file a new database: not refused
    assert checks.check_storage_url(f"sqlite:///{tmp_path}/empty.db") == f"sqlite:///{tmp_path}/empty.db"


def test_the_memory_estimate_is_a_lower_bound_that_passes_every_preset():
    configs = build_configs(["gateloop", "mamba"], ["mqar", "state_tracking"], get_preset("quick"), 1,
                            ["train.device=cpu"])
    for config in configs:
        checks.check_memory(config)
        # The batch's tokens and one fp32 vector per token and layer are the least a step holds.
        assert checks.training_bytes(config) >= config.train.batch_size * config.task.seq_len * 4 * config.mixer.d_model


# ----------------------------------------------------------------------------------------- worker death


def _kill_own_worker(value: int) -> int:
    if value == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    return value


def test_a_worker_that_dies_ends_the_call_naming_its_job():
    seen = []
    with pytest.raises(WorkerDied, match=r"a worker died \(killed by SIGKILL\) while running job 1") as info:
        run_parallel(_kill_own_worker, [(0,), (1,), (2,)], 2, lambda position, result: seen.append(position))
    assert info.value.position == 1 and 1 not in seen


def _die_training(config, *args, **kwargs):
    """Stands in for suite.run.train_and_store in the workers: dies as the kernel's OOM killer would kill it."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_suite_whose_worker_dies_ends_in_one_line_naming_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(suite_run, "train_and_store", _die_training)
    argv = [a.format(out=tmp_path / "out") for a in S] + ["--seeds", "2", "--workers", "2", "--quiet"]
    code, message, rest = run_cli(argv, capsys)
    assert code == 1 and "\n" not in message and "Traceback" not in rest + message, message
    assert message.startswith("testbed suite: a worker died (killed by SIGKILL) while training gateloop on "
                              "state_tracking seed "), message
    assert message.endswith("rerun the same command to resume"), message


def test_a_capability_study_whose_worker_dies_ends_in_one_line(tmp_path, capsys, monkeypatch):
    # Each of the study's workers runs a share of the whole study (a job of run_parallel); here both die.
    monkeypatch.setattr(capability_run, "_worker_run", _die_training)
    argv = ["capability", "--workers", "2", "--out", str(tmp_path / "out"), "--storage",
            f"sqlite:///{tmp_path / 's.db'}", "--quiet"]
    code, message, rest = run_cli(argv, capsys)
    assert code == 1 and "\n" not in message and "Traceback" not in rest + message, message
    assert message.startswith("testbed capability: a worker died (killed by SIGKILL) and the others were stopped"), \
        message
    assert message.endswith("rerun the same command to resume"), message


def test_a_killed_worker_leaves_no_warning_behind(tmp_path):
    # The resource tracker warns when the parent exits, so this runs in a process of its own. tqdm used to
    # make a multiprocessing lock (a named semaphore) in the worker, which a SIGKILL leaked.
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent("""
        import os, signal
        from tqdm import tqdm
        from studies.pool import WorkerDied, run_parallel

        def job(value):
            for _ in tqdm(range(3)):
                pass
            if value == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return value

        if __name__ == "__main__":
            try:
                run_parallel(job, [(0,), (1,)], 2, lambda position, result: None)
            except WorkerDied as death:
                print(death)
    """))
    root = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert "a worker died (killed by SIGKILL) while running job 1" in done.stdout, done.stdout + done.stderr
    assert "leaked" not in done.stderr and "Warning" not in done.stderr, done.stderr


def _write_until_stopped(directory: str) -> None:
    """Writes a 4 MB file atomically over and over, so that a SIGTERM most likely lands inside a write."""
    while True:
        write_atomic_bytes(Path(directory) / "big.bin", bytes(4 << 20))


def test_ctrl_c_stops_the_workers_quietly_and_leaves_no_temporary_file(tmp_path, capfd):
    stop = threading.Event()

    def ctrl_c_once_writing() -> None:
        # A Ctrl-C once the workers are writing: after their first file is in place (spawning and importing
        # take seconds on a busy machine, so a fixed delay could land before any write), mid-stream.
        deadline = time.monotonic() + 120
        while not (tmp_path / "big.bin").exists() and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.05)
        if not stop.wait(0.5):
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=ctrl_c_once_writing, daemon=True)
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_parallel(_write_until_stopped, [(str(tmp_path),), (str(tmp_path),)], 2, lambda position, result: None)
    finally:
        stop.set()
        thread.join()
    err = capfd.readouterr().err  # the workers' stderr too: they share the file descriptor
    assert "Traceback" not in err and "Exception ignored" not in err and "Warning" not in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]  # no .big.bin.*.tmp left by a cut write
