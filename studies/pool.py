"""The one worker pool: independent jobs (training runs, study workers) on worker processes, with a clean
Ctrl-C and a clean worker death; and how many workers a machine takes by default (`default_workers`).

Each worker is a spawned process (a fork would copy the parent's torch threads and state) that takes
jobs from a queue until a sentinel and reports each outcome. A Ctrl-C reaches only the parent (workers
ignore SIGINT, from before they import anything), which then terminates the workers: SIGTERM becomes
an exception in a worker, so an atomic write in progress removes its temporary file, and the worker
then leaves at once (`os._exit`), without the interpreter's exit handlers, where a late signal would
print a traceback. A worker whose parent dies, even by SIGKILL, is sent SIGTERM by the kernel (Linux),
so no worker trains on unowned. A worker that dies (kill -9, the kernel's out-of-memory killer) ends the
call with `WorkerDied` naming the job it was running, once every result already sent is reported.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

IDLE = -1  # a worker's entry in the parent's table of running jobs while it runs none


class WorkerDied(RuntimeError):
    """A worker process ended without reporting its job: killed (kill -9, the out-of-memory killer) or
    crashed. `position` is the job it was running (None if it died between jobs), `exitcode` the
    process's (negative: the signal that killed it)."""

    def __init__(self, position: int | None, exitcode: int) -> None:
        self.position, self.exitcode = position, exitcode
        self.cause = f"killed by {signal.Signals(-exitcode).name}" if exitcode < 0 else f"exit code {exitcode}"
        running = f"while running job {position}" if position is not None else "between jobs"
        super().__init__(f"a worker died ({self.cause}) {running}")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(threads: int = 1, gpus: int = 0) -> int:
    """Workers to start when the user names no number: one per GPU where the runs go to `gpus` GPUs;
    on CPU one per core this process may use, over the intra-op `threads` each run takes."""
    if gpus:
        return gpus
    return max(1, usable_cores() // max(1, threads))


def _exit_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this process when its parent dies (even by SIGKILL);
    elsewhere a worker whose parent died ends at its next read of the job queue."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        raise SystemExit(1)  # the parent died before the request above took effect


def _terminate(signum: int, frame: Any) -> None:
    # An exception, not an abrupt exit: write_atomic removes its temporary file on the way out. Later
    # SIGTERMs (the kernel's, when the parent exits) are ignored so that they cannot cut that cleanup short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def _worker(fn: Callable[..., Any], index: int, gpus: int, jobs: Any, results: Any, running: Any) -> None:
    """Take (position, args) jobs until the `None` sentinel; put (position, "ok"|"error", payload). While a
    job runs, `running[index]` holds its position (shared memory: the parent reads it even after a SIGKILL)."""
    _exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    signal.signal(signal.SIGTERM, _terminate)
    # tqdm's default lock is a multiprocessing one, a named semaphore: a worker killed by SIGKILL could not
    # release it, and the resource tracker would warn of a leak. A worker's bars need only a thread lock.
    tqdm.set_lock(threading.RLock())
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # read at CUDA's first use, which is later
    try:
        while (job := jobs.get()) is not None:
            position, args = job
            running[index] = position
            try:
                results.put((position, "ok", fn(*args)))
            except Exception:
                results.put((position, "error", traceback.format_exc()))
            running[index] = IDLE
    except SystemExit as stop:  # SIGTERM: the job's cleanups (finally blocks) have run on the way here
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.code if isinstance(stop.code, int) else 1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing half-written is left to clean up


def run_parallel(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[Any, ...]],
    workers: int,
    report: Callable[[int, Any], None],
    gpus: int = 0,
) -> None:
    """Call `fn(*job)` for every job on `workers` processes; `report(position, result)` in the parent as
    each finishes (in completion order). `fn` must be importable (a module-level function) and its
    arguments picklable. With `gpus` > 1, worker i sees only GPU i mod gpus (as `cuda`).

    A job that raises stops the others and raises RuntimeError with its traceback; a worker that dies
    stops the others and raises `WorkerDied` with the job it was running. A KeyboardInterrupt in the
    parent terminates every worker before it propagates.
    """
    context = multiprocessing.get_context("spawn")
    job_queue, results = context.Queue(), context.Queue()
    running = context.RawArray("q", [IDLE] * workers)  # position of the job each worker runs
    for position, job in enumerate(jobs):
        job_queue.put((position, job))
    processes = [context.Process(target=_worker, args=(fn, i, gpus, job_queue, results, running), daemon=True)
                 for i in range(workers)]
    for _ in processes:
        job_queue.put(None)
    # Children inherit an ignored SIGINT, so a Ctrl-C while they start up cannot reach them either.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for p in processes:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)

    def check_alive() -> None:
        for i, p in enumerate(processes):
            if p.exitcode not in (None, 0):
                raise WorkerDied(running[i] if running[i] != IDLE else None, p.exitcode)

    finished = False
    try:
        pending, checked = len(jobs), time.monotonic()
        while pending:
            try:
                position, kind, payload = results.get(timeout=0.5)
            except queue.Empty:
                check_alive()  # every result a dead worker sent before it died has been reported
                checked = time.monotonic()
                continue
            if kind == "error":
                raise RuntimeError(f"job {position} failed in a worker:\n{payload}")
            pending -= 1
            report(position, payload)
            if time.monotonic() - checked > 5.0:  # results that never pause must not hide a death
                check_alive()
                checked = time.monotonic()
        finished = True
    finally:
        # A second Ctrl-C must not cut the workers' shutdown short (nor print a traceback of it).
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for p in processes:
                if finished:
                    p.join(timeout=60)  # each has read its sentinel and is on its way out
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join(timeout=30)  # a terminated worker removes its temporary files, then exits
                if p.is_alive():
                    p.kill()
                    p.join()
            job_queue.cancel_join_thread()
            results.cancel_join_thread()
        finally:
            signal.signal(signal.SIGINT, previous)
