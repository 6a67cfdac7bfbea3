"""The headline study: does data-controlled complex gating (GateLoop) beat fixed transitions?

    testbed headline [--storage URL] [--out results/headline] [--device ...] [--workers N] [--quiet]

Every model gets the same tasks, backbone, data, steps and parameter budget (the `headline` preset),
the same tuning budget (`trials` finished Optuna trials per task), and its best configuration is
re-trained with `final_seeds` fresh seeds; the report (tables with 95 % bootstrap CIs, Welch and
Mann–Whitney p-values of GateLoop vs each model, Holm-corrected; figures) is built from the storage
alone. Everything is resumable: rerun the same command and it continues where it stopped.

Workers. `--workers N` starts N processes on this machine running the same job against the same
storage (default: one per CPU core on CPU, one on CUDA), each with one intra-op thread on CPU; the
per-model budgets stay exact (`studies.tune` is multi-worker safe), so N changes the wall time, not
which trials count. Ctrl-C stops every worker (a trial it was running is failed and does not count)
and a rerun resumes. More workers on other machines: run the same command there with a PostgreSQL
`--storage` URL.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from studies.checks import check_device, check_out_dir
from studies.report import build_report
from studies.tune import confirm, open_storage, set_optuna_verbosity, storage_url, tune_models

# Stopping a worker: SIGTERM, repeated every RESTOP_SECONDS while it lives (a KeyboardInterrupt raised
# inside a finaliser is swallowed by Python, so one signal can be lost), SIGKILL after STOP_SECONDS.
# Failing the running trial takes milliseconds; a killed worker's trial is failed by the rerun's
# heartbeat check.
RESTOP_SECONDS = 2.0
STOP_SECONDS = 10.0


@dataclass(frozen=True)
class Experiment:
    tasks: tuple[str, ...]
    models: tuple[str, ...]
    preset: str
    trials: int  # finished Optuna trials per model per task
    final_seeds: int  # re-training seeds of each model's best configuration
    prefix: str  # study names: PREFIX/TASK/MODEL (and .../confirm)
    overrides: tuple[str, ...] = ()  # section.key=value for every run (none in the headline study)


HEADLINE = Experiment(
    # memory_horizon and state_tracking before induction_heads: the ablation study takes the full
    # model's tuned learning rate on those tasks from this study, so they are needed first.
    tasks=("mqar", "selective_copy", "memory_horizon", "state_tracking", "induction_heads"),
    models=("gateloop", "s4d", "s5", "lru", "retnet", "mamba", "attention"),
    preset="headline",
    trials=8,
    final_seeds=5,
    prefix="headline",
)


def run_experiment(experiment: Experiment, storage_url: str, out: Path, device: str | None = None,
                   progress: bool = True, report: bool = True) -> str | None:
    """Tune, confirm and report every (task, model) of the experiment; resumable and multi-worker safe.

    Task by task, so that an interrupted study has complete results for the tasks it finished. With
    `report=False` (every worker of a pool but the first) nothing is written to `out`.
    """
    storage = open_storage(storage_url)
    for task in experiment.tasks:
        tune_models(task, experiment.models, experiment.trials, storage, experiment.prefix, experiment.preset,
                    overrides=experiment.overrides, device=device, progress=progress)
        confirm(task, experiment.models, storage, experiment.prefix, experiment.final_seeds, device, progress)
        if report:  # refreshed after every task: partial results are readable
            build_report(storage, experiment.prefix, out)
    return build_report(storage, experiment.prefix, out) if report else None


def uses_cuda(device: str | None) -> bool:
    import torch

    return device is not None and device.startswith("cuda") or device in (None, "auto") and torch.cuda.is_available()


def default_workers(device: str | None) -> int:
    """One worker per CPU core on CPU; one on CUDA (the workers would share one GPU)."""
    if uses_cuda(device):
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_pool(experiment: Experiment, storage_url: str, out: Path, workers: int, device: str | None = None,
             verbose: bool = False, poll: float = 0.5) -> str:
    """`workers` processes each running `run_experiment` on the same storage; the report when all are done.

    Each worker is `python -m studies.experiments.headline --worker-of JSON`, in its own process group
    so that a terminal's Ctrl-C reaches this process only, which then stops every worker exactly once.
    It stops them with SIGTERM: a worker still starting up dies quietly (it holds no trial yet), a
    running one turns it into KeyboardInterrupt, fails its running trial and exits. SIGTERM to this
    process stops the workers the same way. A worker that fails stops the others.
    """
    command = [sys.executable, "-m", "studies.experiments.headline", "--storage", storage_url, "--out", str(out),
               "--worker-of", json.dumps(dataclasses.asdict(experiment)), "--quiet"]
    if device is not None:
        command += ["--device", device]
    if verbose:
        command += ["--verbose"]
    # One intra-op thread per worker: N single-threaded runs beat one N-threaded run, and the thread
    # count changes numbers (DESIGN §6).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    signal.signal(signal.SIGTERM, _interrupt)
    procs = [subprocess.Popen(command, env=env, process_group=0) for _ in range(workers)]
    print(f"headline: {workers} workers (pids {[p.pid for p in procs]}) on {storage_url}", flush=True)
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            if failed:
                stop_workers(procs)
                raise SystemExit(f"testbed headline: worker {failed[0].pid} exited with code {failed[0].returncode} "
                                 f"(its output is above); the other workers were stopped; rerun to resume")
            time.sleep(poll)
    except KeyboardInterrupt:
        stop_workers(procs)
        raise SystemExit("testbed headline: interrupted; every worker stopped (a trial it was running is failed "
                         "and does not count); rerun the same command to resume") from None
    failed = [p for p in procs if p.returncode != 0]
    if failed:
        raise SystemExit(f"testbed headline: worker {failed[0].pid} exited with code {failed[0].returncode} "
                         f"(its output is above); rerun to resume")
    return build_report(storage_url, experiment.prefix, out)


def stop_workers(procs: list[subprocess.Popen], timeout: float = STOP_SECONDS) -> None:
    """SIGTERM every live worker (again every RESTOP_SECONDS), SIGKILL what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        end = min(deadline, time.monotonic() + RESTOP_SECONDS)
        while any(p.poll() is None for p in procs) and time.monotonic() < end:
            time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite:///OUT/studies.db)")
    parser.add_argument("--out", default="results/headline", help="report directory")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes on this machine (default: CPU cores on CPU, 1 on CUDA)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (always so with several workers)")
    parser.add_argument("--verbose", action="store_true", help="Optuna's INFO log lines (default: warnings only)")
    # Set by run_pool for the processes it starts: run this experiment (JSON) as one worker, no report.
    parser.add_argument("--worker-of", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    set_optuna_verbosity(args.verbose)
    out = Path(args.out)
    try:
        check_device(args.device)
        check_out_dir(out)
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers {args.workers}: must be >= 1 (worker processes on this machine)")
        url = storage_url(args.storage, out)
    except ValueError as e:
        raise SystemExit(f"testbed headline: {e}") from None
    if args.worker_of is not None:
        experiment = Experiment(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in json.loads(args.worker_of).items()})
        _one_thread_on_cpu(args.device)
        signal.signal(signal.SIGTERM, _interrupt)  # how run_pool stops its workers
        sys.unraisablehook = _drop_lost_interrupts
        try:
            run_experiment(experiment, url, out, args.device, progress=False, report=False)
        except KeyboardInterrupt:
            return 130  # stopped by the pool; optuna has failed the running trial already
        return 0
    workers = args.workers or default_workers(args.device)
    print(HEADLINE)
    if workers == 1:
        _one_thread_on_cpu(args.device)
        print(run_experiment(HEADLINE, url, out, args.device, progress=not args.quiet))
    else:
        print(run_pool(HEADLINE, url, out, workers, args.device, args.verbose))
    return 0


_interrupted_at: float | None = None


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM -> KeyboardInterrupt, so that Optuna fails the running trial. A repeated signal within
    RESTOP_SECONDS is ignored: it would break that clean-up; a later one means the first was lost."""
    global _interrupted_at
    now = time.monotonic()
    if _interrupted_at is None or now - _interrupted_at > RESTOP_SECONDS:
        _interrupted_at = now
        raise KeyboardInterrupt


def _drop_lost_interrupts(unraisable: sys.UnraisableHookArgs) -> None:
    """A KeyboardInterrupt that landed in a finaliser is lost (and re-sent); don't print its traceback."""
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _one_thread_on_cpu(device: str | None) -> None:
    import torch

    if not uses_cuda(device):
        torch.set_num_threads(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.experiments.headline", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
