"""Issue 27's cases in `testbed tune` and `testbed report`: each bad input is refused in one line that names the
problem and the fix, with exit status 1, before anything is created; each misleading message now says what is
wrong; and what was refused for no reason (a short run under a preset's warmup, which tune replaces) runs.

Commands run in-process through `studies.cli.main`; trials train with the fake of tests/test_tune.py."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from test_cli_inputs import TINY, nothing_created, refusal, tune_argv
from test_tune import FakeTrain, SequenceMetricTrain

from studies import cli
from studies.tune import objectives
from studies.tune.jobs import tune_models
from studies.tune.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def exit_status(argv: list[str]) -> int:
    """The status `testbed ARGV` exits with (SystemExit with a message: 1, as the interpreter gives it)."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return 1 if isinstance(e.code, str) else (e.code or 0)


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def tuned_storage(tmp_path: Path, monkeypatch, models: list[str], final_seeds: int, prefix: str = "p") -> str:
    """A storage with `models` tuned on mqar (2 trials each, the fake trainer), confirmed on `final_seeds` seeds."""
    monkeypatch.setattr(objectives, "train", FakeTrain())
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    argv = ["tune", "--task", "mqar", "--models", ",".join(models), "--protocol", "v1", "--trials", "2",
            "--preset", "smoke",
            "--final-seeds", str(final_seeds), "--quiet", "--storage", url, "--study-prefix", prefix, *TINY]
    assert cli.main(argv) == 0
    return url


# ------------------------------------------------------------------------------------------ refusals

TUNE_REFUSALS = [
    # an override of a searched knob would be ignored in silence: every trial samples it
    (["train.lr=0.5"], {}, "train.lr=0.5 sets train.lr, which the tuner searches as 'lr' in [0.0001, 0.03] for "
                           "attention: remove the override (each trial samples it), or change attention's search space"),
    (["model.r_min=0.5"], {"--models": "lru"}, "model.r_min=0.5 sets mixer.r_min, which the tuner searches as 'r_min'"),
    (["train.warmup_steps=3"], {}, "train.warmup_steps=3 sets train.warmup_steps, which the tuner searches as "
                                   "'warmup_fraction' in [0, 0.2] (a fraction of train.steps)"),
    # a task the preset does not size would run at its default size
    ([], {"--task": "fuzzy_recall"}, "task 'fuzzy_recall' is not in the smoke preset (its tasks: mqar, state_tracking, "
                                     "memory_horizon)"),
    # study names are PREFIX/TASK/MODEL
    ([], {"--study-prefix": ""}, "--study-prefix '' names no prefix"),
    ([], {"--study-prefix": "demo/state_tracking"}, "--study-prefix 'demo/state_tracking' contains '/': studies are "
                                                    "named PREFIX/TASK/MODEL, so a prefix has none; pass --study-prefix demo"),
    # a blank entry in the model list
    ([], {"--models": "attention,,gateloop"}, "--models 'attention,,gateloop' has an empty entry (entry 2 of 3); "
                                              "remove the extra comma: --models attention,gateloop"),
    ([], {"--models": "attention,"}, "--models 'attention,' has an empty entry"),
]


@pytest.mark.parametrize("overrides, flags, expected", TUNE_REFUSALS,
                         ids=["searched-lr", "searched-model-alias", "searched-warmup", "task-not-in-preset",
                              "empty-prefix", "prefix-with-slash", "blank-model", "trailing-comma"])
def test_tune_refuses_before_anything_is_created(tmp_path, overrides, flags, expected):
    before = set(tmp_path.rglob("*"))
    argv = tune_argv(tmp_path, *overrides, storage=f"sqlite:///{tmp_path / 's.db'}")
    for flag, value in flags.items():
        argv = with_flag(argv, flag, value) if flag in argv else [*argv, flag, value]
    assert expected in refusal(argv)
    assert exit_status(argv) == 1
    nothing_created(tmp_path, before)


@pytest.mark.parametrize("argv, expected", [
    (["report", "--study-prefix", "p/mqar"], "--study-prefix 'p/mqar' contains '/'"),
    (["report", "--study-prefix", ""], "--study-prefix '' names no prefix"),
    (["report", "--study-prefix", "p", "--reference", "gateloop"], "--reference 'gateloop' is not a model of the "
                                                                   "studies p/*; models: lru"),
], ids=["prefix-with-slash", "empty-prefix", "named-reference-absent"])
def test_report_refuses_before_anything_is_created(tmp_path, monkeypatch, argv, expected):
    url = tuned_storage(tmp_path, monkeypatch, ["lru"], final_seeds=1)
    before = set(tmp_path.rglob("*"))
    argv = [*argv, "--storage", url, "--out", str(tmp_path / "report")]
    assert expected in refusal(argv)
    assert exit_status(argv) == 1
    nothing_created(tmp_path, before)


# ------------------------------------------------------------------------------ what now runs, and says

def test_a_run_shorter_than_the_presets_warmup_is_tuned(tmp_path, monkeypatch):
    # quick's warmup_steps=50 does not fit train.steps=6, but no trial trains with it: warmup is tuned.
    monkeypatch.setattr(objectives, "train", FakeTrain())
    argv = tune_argv(tmp_path, "train.steps=6", "train.eval_every=3", storage=f"sqlite:///{tmp_path / 's.db'}")
    argv = [a for a in with_flag(argv, "--preset", "quick") if a not in TINY[:2]]  # keep steps=6, eval_every=3
    assert exit_status(argv) == 0
    study = optuna.load_study(study_name="tune/mqar/attention", storage=f"sqlite:///{tmp_path / 's.db'}")
    (trial,) = study.trials
    assert study.user_attrs["base_config"]["train"]["warmup_steps"] == 0
    assert trial.user_attrs["config"]["train"]["steps"] == 6
    assert trial.user_attrs["config"]["train"]["warmup_steps"] == round(trial.params["warmup_fraction"] * 6)


def test_a_grid_study_that_keeps_the_presets_warmup_still_refuses_a_run_shorter_than_it(tmp_path):
    # Where warmup is not searched (a grid over lr only), the preset's warmup is what every trial trains with.
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(ValueError, match=r"warmup_steps=50 must be in \[0, steps=6\)"):
        tune_models("mqar", ["attention"], 2, storage, "g", "quick", overrides=["train.steps=6", "train.eval_every=3"],
                    progress=False, sampler="grid", grid={"lr": (1e-3, 1e-2)})


def test_progress_lines_name_the_tasks_metric(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(objectives, "train", SequenceMetricTrain())
    argv = with_flag(tune_argv(tmp_path, storage=f"sqlite:///{tmp_path / 's.db'}"), "--task", "memory_horizon")
    argv = with_flag(argv, "--final-seeds", "1")
    assert exit_status(argv) == 0
    out = capsys.readouterr().out
    assert "attention: best trial 0 sequence exact match 0." in out
    assert "attention: confirmed sequence exact match over 1 seeds: 0." in out
    assert " accuracy " not in out.replace("token accuracy", "")


def test_the_printed_report_command_works_when_pasted(tmp_path, monkeypatch, capsys):
    url = tuned_storage(tmp_path, monkeypatch, ["attention"], final_seeds=1, prefix="my prefix")
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("report: testbed report")]
    argv = shlex.split(line.removeprefix("report: testbed "))
    assert argv[:2] == ["report", "--storage"] and argv[argv.index("--study-prefix") + 1] == "my prefix"
    assert exit_status([*argv, "--out", str(tmp_path / "report")]) == 0
    assert url in line


def test_report_without_reference_and_no_gateloop_study_says_there_are_no_p_values(tmp_path, monkeypatch, capsys):
    url = tuned_storage(tmp_path, monkeypatch, ["lru"], final_seeds=1)
    capsys.readouterr()
    assert exit_status(["report", "--storage", url, "--study-prefix", "p", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "--reference" not in out
    assert "No `gateloop` study for this task: no p-values." in (tmp_path / "r" / "report.md").read_text()


def test_report_of_a_study_without_confirm_runs_says_so(tmp_path, monkeypatch):
    url = tuned_storage(tmp_path, monkeypatch, ["gateloop", "attention"], final_seeds=0)
    assert exit_status(["report", "--storage", url, "--study-prefix", "p", "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "No confirm runs for this task (not confirmed yet, or tuned with --final-seeds 0)" in text
    assert "rerunning the same command re-trains each best configuration" in text
    assert "older config version" not in text


# -------------------------------------------------------------------------------------- Ctrl-C, SIGTERM

# `testbed tune` in a process of its own, its trials' training a wait that says when it has begun.
STOPPABLE_TUNE = """
import sys, time
from studies import cli
from studies.tune import objectives

def train(config, on_eval=None, progress=True):
    print("training", flush=True)
    while True:
        time.sleep(0.05)

objectives.train = train
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig, expected", [
    (signal.SIGINT, "testbed tune: interrupted (a trial it was running is failed and does not count); "
                    "rerun the same command to resume"),
    (signal.SIGTERM, "testbed tune: stopped by SIGTERM (a trial it was running is failed and does not count); "
                     "rerun the same command to resume"),
], ids=["ctrl-c", "sigterm"])
def test_a_stopped_tune_ends_in_one_line_and_fails_its_trial(tmp_path, sig, expected):
    script = tmp_path / "tune.py"
    script.write_text(STOPPABLE_TUNE)
    root = Path(__file__).parents[1]
    url = f"sqlite:///{tmp_path / 's.db'}"
    # A session of its own, with Ctrl-C's default action (a shell's background job would ignore it).
    proc = subprocess.Popen([sys.executable, str(script), *tune_argv(tmp_path, storage=url)], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:  # the resolved config, the study's line, then the trial's training
            if line.strip() == "training":
                break
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (out, err)
    assert err.strip() == expected, err  # one line: no traceback, no Optuna warning, no atexit noise
    (trial,) = optuna.load_study(study_name="tune/mqar/attention", storage=url).trials
    assert trial.state == optuna.trial.TrialState.FAIL  # at once: no heartbeat check needed to free its slot


# ------------------------------------------------------------------------------------ protocol v2 flags

def v2_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["tune", "--task", "mqar", "--models", "attention", "--preset", "smoke", "--final-seeds", "0", "--quiet",
            "--storage", f"sqlite:///{tmp_path / 's.db'}", *extra, *TINY]


@pytest.mark.parametrize("extra, expected", [
    (["--trials", "8"], "--trials 8 is protocol v1's budget; under v2 the learning-rate rule ends each study"),
    (["train.validation_size=0"], "train.validation_size=0 makes every decision read the test set, which is protocol v1"),
    (["--no-prune-before", "13"], "--no-prune-before 13 is past the run's last step (train.steps=12)"),
    (["--no-prune-before", "-1"], "--no-prune-before -1: must be >= 0"),
    (["--protocol", "v1"], "--protocol v1 tunes on a budget of finished trials: give --trials N"),
    (["--protocol", "v1", "--trials", "2", "--no-prune-before", "4"], "--no-prune-before is protocol v2's escape window"),
    (["train.lr=1e-3"], "train.lr=1e-3 sets train.lr, which the tuner searches as 'lr'"),
], ids=["trials-under-v2", "no-validation-under-v2", "window-past-the-end", "negative-window", "v1-without-trials",
        "window-under-v1", "searched-lr-under-v2"])
def test_protocol_flags_are_checked_before_anything_is_created(tmp_path, extra, expected):
    before = set(tmp_path.rglob("*"))
    argv = v2_argv(tmp_path, *extra)
    assert expected in refusal(argv)
    assert exit_status(argv) == 1
    nothing_created(tmp_path, before)


def test_tune_runs_protocol_v2_by_default(tmp_path, monkeypatch):
    """The default protocol: the rule's learning rates, 2 seeds per trial, a validation set as large as the
    test set, the plateau-safe pruner with its window at half the run; the report line says which rows."""
    monkeypatch.setattr(objectives, "train", FakeTrain())
    assert cli.main(v2_argv(tmp_path)) == 0
    study = optuna.load_study(study_name="tune/mqar/attention", storage=f"sqlite:///{tmp_path / 's.db'}")
    attrs = study.user_attrs
    assert attrs["sampler"]["name"].startswith("studies.tune.samplers.LrRuleSampler") and attrs["budget"] is None
    assert attrs["pruner"]["no_prune_before"] == 6 and attrs["pruner"]["min_resource"] == 6
    assert attrs["seeds_per_trial"] == 2 and attrs["base_config"]["train"]["validation_size"] == 16
    assert attrs["decision_rows"].startswith("validation set (16 rows per seed")
    assert "train.validation_size=16" in attrs["overrides"]
    assert {t.params["lr"] for t in study.trials} >= {1e-3, 10 ** -2.5, 1e-2}
