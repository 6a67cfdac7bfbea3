"""Tuning on a real PostgreSQL server (started by the `postgres_url` fixture in conftest.py): four
concurrent workers on shared studies end with exactly N finished trials per model, none lost or
duplicated; a worker killed with SIGKILL mid-trial leaves a FAIL trial that is re-queued, re-run and
does not count; one killed before its first heartbeat is failed and re-queued too. Every worker but
that last one is the real `python -m studies tune` command training for real."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from studies.tune.budget import COUNTED
from test_tune import (REPO, TASK, check_trial_without_heartbeat_is_reaped, finished, run_workers, worker_command,
                       worker_trials)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_four_workers_share_the_studies_and_end_with_exactly_n(postgres_url):
    prefix, n, models = f"four-{uuid.uuid4().hex[:6]}", 3, ["gateloop", "attention"]
    outputs = run_workers([worker_command(postgres_url, prefix, n, ",".join(models), "--final-seeds", "2")] * 4,
                          timeout=400)
    storage = optuna.storages.RDBStorage(postgres_url)
    for model in models:
        study = optuna.load_study(study_name=f"{prefix}/{TASK}/{model}", storage=storage)
        done = finished(study)
        assert len(done) == n, [(t.number, t.state.name) for t in study.get_trials()]
        claimed = [x for numbers in worker_trials(outputs, study.study_name) for x in numbers]
        assert sorted(claimed) == sorted(t.number for t in done), "a finished trial was lost or run twice"
        # Every other trial is a refused surplus trial: nothing else failed.
        for t in study.get_trials():
            assert t.state in COUNTED or t.user_attrs.get("surplus"), (t.number, t.state.name)
        confirm = optuna.load_study(study_name=f"{prefix}/{TASK}/{model}/confirm", storage=storage)
        seeds = [t.user_attrs["seed"] for t in confirm.get_trials() if t.state == TrialState.COMPLETE]
        assert sorted(seeds) == [1000, 1001]


def test_killed_worker_trial_is_failed_retried_and_not_counted(postgres_url):
    prefix, n = f"kill-{uuid.uuid4().hex[:6]}", 2
    # Longer trials than elsewhere, so that the kill lands inside one.
    command = [*worker_command(postgres_url, prefix, n, "attention", "--final-seeds", "0"),
               "train.steps=150", "train.eval_every=50"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    storage = optuna.storages.RDBStorage(postgres_url)
    name = f"{prefix}/{TASK}/attention"
    victim = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    killed_number = None
    try:
        deadline = time.monotonic() + 180
        while killed_number is None and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue  # the worker has not created the study yet
            running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
            # The heartbeat thread starts before the objective, which stores `config` only after
            # several other writes: by then the first heartbeat is stored.
            if running and "config" in running[0].user_attrs:
                time.sleep(0.5)
                if optuna.load_study(study_name=name, storage=storage).trials[running[0].number].state \
                        == TrialState.RUNNING:
                    os.kill(victim.pid, signal.SIGKILL)
                    killed_number = running[0].number
    finally:
        if victim.poll() is None and killed_number is None:
            victim.kill()
        victim.communicate(timeout=30)
    assert killed_number is not None, "the worker never was mid-trial (too fast?) or exited early"
    assert victim.returncode == -signal.SIGKILL

    (output,) = run_workers([command], timeout=300)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials()
    assert trials[killed_number].state == TrialState.FAIL  # failed by the next worker's stale check
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].params == trials[killed_number].params
    assert retries[0].state in COUNTED, output[-2000:]
    assert len(finished(study)) == n
    assert killed_number not in [t.number for t in finished(study)]


def test_worker_killed_before_its_first_heartbeat_frees_the_slot_on_postgres(postgres_url, monkeypatch):
    check_trial_without_heartbeat_is_reaped(postgres_url, f"gap-{uuid.uuid4().hex[:6]}", monkeypatch)
