"""`testbed headline --workers N`: N worker processes on one storage; Ctrl-C stops them all, a rerun
resumes and ends with exactly the budget. Runs a tiny experiment of the same shape (smoke preset,
60-step runs of batch 4) through `run_pool`, the function the command calls, with real worker processes."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from studies.experiments import headline
from studies.tune import COUNTED

REPO = Path(__file__).resolve().parents[1]
# Long enough (about a second) that the interrupt lands inside a trial.
TINY = ("train.steps=60", "train.eval_every=20", "train.batch_size=4", "train.test_size=16")
# Long enough (a second or more per trial) that the interrupt surely lands inside a trial, even when
# the poll below is slow on a busy machine; a 60-step trial could end between two polls.
INTERRUPTIBLE = ("train.steps=600", "train.eval_every=200", "train.batch_size=4", "train.test_size=16")
EXPERIMENT = headline.Experiment(tasks=("mqar",), models=("gateloop",), preset="smoke", trials=2,
                                 final_seeds=1, prefix="h", overrides=TINY)

# A terminal's foreground process takes Ctrl-C; one started in the background of a non-interactive shell
# (nohup ... &, as CI runners may) inherits an ignored SIGINT, which Python then keeps ignoring. The pool
# is put back in the terminal's situation, so the test does not depend on how pytest was started.
POOL = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
import sys
from studies.experiments.headline import Experiment, run_pool
experiment = Experiment(tasks=("mqar",), models=("gateloop",), preset="smoke", trials=2, final_seeds=1,
                        prefix="h", overrides=tuple(sys.argv[3:]))
run_pool(experiment, sys.argv[1], sys.argv[2], workers=2)
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU default")
def test_default_workers_is_one_per_core_on_cpu():
    assert headline.default_workers("cpu") == len(os.sched_getaffinity(0))
    assert headline.default_workers("cuda") == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_a_rerun_resumes(tmp_path):
    url, out = f"sqlite:///{tmp_path / 'studies.db'}", tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", POOL, url, str(out), *INTERRUPTIBLE]
    pool = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    storage = None
    deadline = time.monotonic() + 120
    running = False
    while not running and time.monotonic() < deadline and pool.poll() is None:
        time.sleep(0.2)
        try:
            storage = storage or optuna.storages.RDBStorage(url)
            study = optuna.load_study(study_name="h/mqar/gateloop", storage=storage)
        except Exception:  # neither the database nor the study exists yet
            continue
        # `config` is stored just before training starts: the interrupt lands inside a trial.
        running = any(t.state == TrialState.RUNNING and "config" in t.user_attrs
                      for t in study.get_trials(deepcopy=False))
    assert running, "no worker ever ran a trial"
    pool.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground process
    output = pool.communicate(timeout=60)[0]
    assert pool.returncode == 1 and "interrupted; every worker stopped" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    pids = [int(p) for p in re.search(r"pids \[([\d, ]+)\]", output).group(1).split(",")]
    assert len(pids) == 2 and not any(_alive(p) for p in pids)
    # The trial that was training when the interrupt came was failed by its worker. (One caught
    # between its creation and its first heartbeat stays RUNNING; the rerun fails it after the grace
    # period, as it would for a killed worker.)
    states = [t.state for name in optuna.get_all_study_names(storage)
              for t in optuna.load_study(study_name=name, storage=storage).get_trials()]
    assert TrialState.FAIL in states, states

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for model in EXPERIMENT.models:
        study = optuna.load_study(study_name=f"h/mqar/{model}", storage=storage)
        assert sum(t.state in COUNTED for t in study.get_trials()) == 2
        assert TrialState.RUNNING not in [t.state for t in study.get_trials()]
        confirm = optuna.load_study(study_name=f"h/mqar/{model}/confirm", storage=storage)
        assert [t.user_attrs["seed"] for t in confirm.get_trials() if t.state == TrialState.COMPLETE] == [1000]
    assert "| gateloop |" in (out / "report.md").read_text()
