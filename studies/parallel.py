"""Run independent jobs (training runs) on worker processes, with a clean Ctrl-C.

Each worker is a spawned process (a fork would copy the parent's torch threads and state) that takes
jobs from a queue until a sentinel and reports each outcome. A Ctrl-C reaches only the parent (workers
ignore SIGINT, from before they import anything), which then terminates the workers: SIGTERM becomes
an exception in a worker, so an atomic write in progress removes its temporary file. A worker whose
parent dies, even by SIGKILL, is sent SIGTERM by the kernel (Linux), so no worker trains on unowned.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import traceback
from collections.abc import Callable, Sequence
from typing import Any


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _exit_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this process when its parent dies (even by SIGKILL);
    elsewhere a worker whose parent died ends at its next read of the job queue."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        raise SystemExit(1)  # the parent died before the request above took effect


def _terminate(signum: int, frame: Any) -> None:
    # An exception, not an abrupt exit: write_atomic removes its temporary file on the way out.
    raise SystemExit(128 + signum)


def _worker(fn: Callable[..., Any], index: int, gpus: int, jobs: Any, results: Any) -> None:
    """Take (position, args) jobs until the `None` sentinel; put (position, "ok"|"error", payload)."""
    _exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    signal.signal(signal.SIGTERM, _terminate)
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # read at CUDA's first use, which is later
    while (job := jobs.get()) is not None:
        position, args = job
        try:
            results.put((position, "ok", fn(*args)))
        except Exception:
            results.put((position, "error", traceback.format_exc()))
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

    A job that raises stops the others and raises RuntimeError with its traceback; so does a worker
    that dies. A KeyboardInterrupt in the parent terminates every worker before it propagates.
    """
    context = multiprocessing.get_context("spawn")
    job_queue, results = context.Queue(), context.Queue()
    for position, job in enumerate(jobs):
        job_queue.put((position, job))
    processes = [context.Process(target=_worker, args=(fn, i, gpus, job_queue, results), daemon=True)
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
    finished = False
    try:
        pending = len(jobs)
        while pending:
            try:
                position, kind, payload = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a worker died (exit code {dead[0].exitcode}); what finished is stored, "
                                       f"rerun the same command to redo the rest") from None
                continue
            if kind == "error":
                raise RuntimeError(f"job {position} failed in a worker:\n{payload}")
            pending -= 1
            report(position, payload)
        finished = True
    finally:
        for p in processes:
            if finished:
                p.join(timeout=60)  # each has read its sentinel and is on its way out
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join()
        job_queue.cancel_join_thread()
        results.cancel_join_thread()
