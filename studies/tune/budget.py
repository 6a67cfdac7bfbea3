"""The budget of finished trials, the seeds of a confirm study, dead workers' trials, and the worker loop.

Budget. A trial counts iff it finished COMPLETE or PRUNED; a worker stops once its studies hold N such
trials. Trial numbers are assigned under a lock on the study row, so they order trials by creation.
A trial may run only if fewer than N trials with smaller numbers are finished or still live (RUNNING
or WAITING); otherwise it is told FAIL with user attr `surplus` and does not count. Trials only ever
move WAITING -> RUNNING -> finished (or FAIL), so the N+1-th counting trial would have seen N live or
finished trials before it: no study ends with more than N, and workers keep going until it has N.
A confirm study's budget is its seeds: one trial per seed, the earliest finished or live one holds it.

Dead workers. A RUNNING trial whose heartbeat is older than the storage's grace period is failed and
re-queued (Optuna's check, `optuna.storages.fail_stale_trials`, with the storage's retry callback). So is
a RUNNING trial with no heartbeat at all that started over a grace period ago: its worker was killed
between creating it and storing the first heartbeat (Optuna's own check skips such trials, which
would otherwise hold their slot forever). Rerunning the command resumes.
"""
from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.tune.optuna_private import (heartbeat_grace_period, heartbeatless_trial_ids, stale_trial_callback,
                                         study_storage, trial_failure_logger)

POLL_SECONDS = 2.0  # how often an idle worker looks for freed slots

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.RUNNING, TrialState.WAITING)


class SurplusTrial(Exception):
    """This trial was created after the study's budget was already finished or taken by live trials."""


def has_slot(trials: Sequence[FrozenTrial], number: int, budget: int) -> bool:
    """Whether trial `number` may run: fewer than `budget` earlier trials are finished or live."""
    ahead = sum(1 for t in trials if t.number < number and t.state in COUNTED + LIVE)
    return ahead < budget


def free_seed(trials: Sequence[FrozenTrial], number: int, seeds: Sequence[int]) -> int | None:
    """The first wanted seed that no other finished or live trial of a confirm study holds."""
    held = {t.user_attrs.get("seed") for t in trials if t.number != number and t.state in COUNTED + LIVE}
    return next((s for s in seeds if s not in held), None)


def seed_taken_before(trials: Sequence[FrozenTrial], number: int, seed: int) -> bool:
    return any(t.number < number and t.state in COUNTED + LIVE and t.user_attrs.get("seed") == seed for t in trials)


def tuning_state(budget: int) -> Callable[[list[FrozenTrial]], str]:
    """A tuning study's state: "done" with `budget` finished trials, "free" while a trial may start,
    "busy" while every open slot is held by a live trial (of another worker)."""
    def state(trials: list[FrozenTrial]) -> str:
        if sum(t.state in COUNTED for t in trials) >= budget:
            return "done"
        live_or_done = sum(t.state in COUNTED + LIVE for t in trials)
        # A WAITING (re-queued) trial must be picked up even when it fills the budget: it holds a slot.
        waiting = any(t.state == TrialState.WAITING for t in trials)
        return "free" if live_or_done < budget or waiting else "busy"
    return state


def confirm_state(seeds: Sequence[int]) -> Callable[[list[FrozenTrial]], str]:
    """A seed study's state: "done" once every seed has a COMPLETE trial, else as `tuning_state`."""
    def state(trials: list[FrozenTrial]) -> str:
        done = {t.user_attrs.get("seed") for t in trials if t.state == TrialState.COMPLETE}
        if all(s in done for s in seeds):
            return "done"
        waiting = any(t.state == TrialState.WAITING for t in trials)
        return "free" if free_seed(trials, -1, seeds) is not None or waiting else "busy"
    return state


def reap(study: optuna.Study) -> None:
    """Fail RUNNING trials of dead workers now and re-queue them (at most MAX_RETRY times).

    Dead means: its heartbeat is older than the grace period (Optuna's check), or it never stored a
    heartbeat and started longer than the grace period ago — its worker died between creating the
    trial and the first heartbeat, a trial Optuna's check skips and that would hold its slot forever.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
        grace = heartbeat_grace_period(study)
        if grace is None:
            return
        # datetime_start is the creating worker's local clock: clocks of machines sharing one storage
        # must agree to well within the grace period (NTP does), as for any wall-clock timeout.
        started_before = datetime.datetime.now() - datetime.timedelta(seconds=grace)
        storage = study_storage(study)
        for trial_id in heartbeatless_trial_ids(study, started_before):
            # As optuna.storages.fail_stale_trials does for a stale heartbeat: fail, then re-queue.
            try:
                if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker failed it first (or it finished after all)
            callback = stale_trial_callback(study)
            if callback is not None:
                callback(study, storage.get_trial(trial_id))


def worker_id() -> str:
    """This worker, as the trials it runs record it (user attr `worker`)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Job:
    """One study a worker contributes to: how to tell whether it needs work, and how to run a trial."""

    study: optuna.Study
    objective: Callable[[optuna.Trial], float]
    budget_state: Callable[[list[FrozenTrial]], str]  # -> "done" | "free" | "busy"

    def state(self) -> str:
        reap(self.study)
        return self.budget_state(self.study.get_trials(deepcopy=False))

    def run_one(self) -> None:
        try:
            self.study.optimize(self.objective, n_trials=1, catch=(SurplusTrial,))
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another worker judged this trial dead (its heartbeat was late) and re-queued it; the
            # re-queued copy runs instead, so this result is dropped rather than counted twice.
            print(f"[{self.study.study_name}] a trial of this worker was failed as stale by another worker; "
                  f"its re-queued copy counts instead", flush=True)
            return
        last = max((t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker_id()),
                   key=lambda t: t.number, default=None)
        if last is not None:
            value = "" if last.value is None else f" value={last.value:.4f}"
            status = "surplus (refused, not counted)" if last.user_attrs.get("surplus") else \
                last.user_attrs.get("status", "-")
            print(f"[{self.study.study_name}] trial {last.number} {last.state.name}{value} status={status} "
                  f"worker={worker_id()}", flush=True)


class QuietRoutineFailures(logging.Filter):
    """Optuna logs every FAIL as two warnings: the error with its traceback, then the value. A refused
    surplus trial is routine (reported above), and a trial stopped by Ctrl-C or SIGTERM is reported by the
    command's one line (`Interrupted`): neither gets a log line. Other failures keep both."""

    QUIET = ("SurplusTrial", "KeyboardInterrupt", "Interrupted(")

    def __init__(self) -> None:
        super().__init__()
        self._dropped: set[str] = set()  # "Trial N" whose error was dropped: its value line goes too

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        trial = message.partition(" failed with ")[0]
        if " failed with value " in message:
            if trial in self._dropped:
                self._dropped.discard(trial)
                return False
            return True
        if any(word in message for word in self.QUIET):
            self._dropped.add(trial)
            return False
        return True


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C or a SIGTERM under `stop_on_signals`. A KeyboardInterrupt, so that Optuna fails the trial it
    stops (as on Ctrl-C: the trial does not count, and a rerun trains another) before it leaves `work`."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        super().__init__(self.signal)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Around a command's worker loop, in its main process: the first SIGINT or SIGTERM raises `Interrupted`.
    From then on both are ignored, so that a second Ctrl-C (or a process manager's repeated SIGTERM) cannot
    cut short Optuna failing the trial, nor the command's exit (a signal in an exit handler prints "Exception
    ignored in atexit callback"): the command ends in the one line it prints. Without a signal the previous
    handlers come back. Not for pool workers, which studies.pool gives handlers of their own."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals (and may set their handlers)
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)

    # A signal ignored from the start stays ignored: a shell's background job ignores the terminal's Ctrl-C.
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        if all(signal.getsignal(s) is stop for s in previous):  # no signal came
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def work(jobs: Sequence[Job], poll: float = POLL_SECONDS) -> None:
    """Run trials of the first study with a free slot until every study is done; wait while slots are
    held by trials running on other workers (one of them may yet fail and free its slot). Signals are the
    caller's: a command wraps it in `stop_on_signals`, a pool worker runs it under the pool's handlers."""
    optimize_logger = trial_failure_logger()
    if not any(isinstance(f, QuietRoutineFailures) for f in optimize_logger.filters):
        optimize_logger.addFilter(QuietRoutineFailures())
    announced = False
    while True:
        states = [job.state() for job in jobs]
        if all(s == "done" for s in states):
            return
        if "free" in states:
            announced = False
            jobs[states.index("free")].run_one()
            continue
        if not announced:
            announced = True
            busy = [j.study.study_name for j, s in zip(jobs, states) if s == "busy"]
            print(f"waiting: every open slot of {busy} is held by a running trial of another worker", flush=True)
        time.sleep(poll)
