"""Train a suite's runs: every config not yet stored in DIR/runs, on the worker pool (studies.pool), each
stored atomically the moment it ends, so that the same call resumes after a Ctrl-C or a crash."""
from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from studies.atomic_io import write_atomic, write_atomic_bytes
from studies.config import RunConfig
from studies.floors import metric_label
from studies.pool import WorkerDied, default_workers, run_parallel
from studies.suite.records import check_manifest, load_records, result_record, write_manifest
from studies.train import train


def _on_cuda(configs: Sequence[RunConfig]) -> bool:
    device = configs[0].train.device if configs else "cpu"
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _gpus(configs: Sequence[RunConfig]) -> int:
    """GPUs to spread workers over: all of them for `cuda`/`auto`, none for an explicit `cuda:N`."""
    return torch.cuda.device_count() if _on_cuda(configs) and configs[0].train.device in ("cuda", "auto") else 0


def _default_workers(configs: Sequence[RunConfig]) -> int:
    """The pool's default for these runs: one per GPU on CUDA, else one per core over each run's threads."""
    gpus = max(1, _gpus(configs)) if _on_cuda(configs) else 0  # an explicit cuda:N is one GPU
    return default_workers(max([c.train.threads for c in configs] or [1]), gpus)


def train_and_store(config: RunConfig, runs_dir: Path, keep: bool, progress: bool = False) -> dict[str, Any]:
    """Train one run and store it atomically as runs/<id>.json (weights first, as runs/<id>.pt, if kept);
    returns what a progress line shows."""
    run_id = config.run_id()
    result = train(config, progress=progress, keep_model=keep)
    if keep and result.model is not None:
        # Weights first: a run counts as finished only once its .json exists.
        buffer = io.BytesIO()
        torch.save(result.model.state_dict(), buffer)
        write_atomic_bytes(runs_dir / f"{run_id}.pt", buffer.getvalue())
    write_atomic(runs_dir / f"{run_id}.json", json.dumps(result_record(config, result), default=str))
    return {"status": result.status, "score": result.score, "steps": result.steps, "wall_time": result.wall_time}


def run_cost(config: RunConfig) -> float:
    """A run's relative cost for ordering work (not a time): token-steps of training and of evaluation
    (a forward pass over the held-out set, about a third of a training step's cost per token, at the
    training length every eval_every steps and once at every evaluated length)."""
    tc, L = config.train, config.task.seq_len
    evals = (tc.steps // tc.eval_every + 1) * L + sum(config.eval_lengths)
    return tc.steps * tc.batch_size * L + tc.test_size * evals / 3


class RunFailed(RuntimeError):
    """Training stopped for a reason outside the runs' configs (a worker process died); the message is one
    line that names the run that was lost and how to resume."""


def run_configs(
    configs: Sequence[RunConfig],
    out: Path,
    progress: bool = True,
    keep_model: Callable[[RunConfig], bool] | None = None,
    workers: int | None = None,
    describe: Callable[[RunConfig], str] | None = None,
) -> None:
    """Train every config whose run is not yet stored in out/runs; store each the moment it ends.

    Where `keep_model(config)` is true the trained weights are stored beside it as runs/<id>.pt.
    `workers` processes train in parallel (None: the pool's `default_workers`; 1: in this process, with
    progress bars); `describe(config)` names a run in progress lines (default: model, task and seed).
    A Ctrl-C stops every worker; finished runs are kept, and the same call resumes. A worker that dies
    stops the others too and raises `RunFailed` naming the run it was training.
    """
    check_manifest(out)
    write_manifest(out)
    runs_dir = out / "runs"
    done = {r["run_id"] for r in load_records(out)}

    def finished(config: RunConfig) -> bool:
        # A run whose weights should be kept but are missing is not finished (it is rerun, deterministically).
        run_id = config.run_id()
        wants_weights = keep_model is not None and keep_model(config)
        return run_id in done and (not wants_weights or (runs_dir / f"{run_id}.pt").exists())

    def name(config: RunConfig) -> str:
        return describe(config) if describe else f"{config.model} on {config.task_name} seed {config.train.seed}"

    def outcome(config: RunConfig, summary: dict[str, Any]) -> str:
        # the task's metric at the training length, what the table reports (0 for a diverged run)
        return (f"{summary['status']}: {metric_label(config.task.metric)} {summary['score']:.3f} in {summary['steps']} steps, "
                f"{summary['wall_time']:.1f}s")

    todo = [c for c in configs if not finished(c)]
    workers = min(workers or _default_workers(configs), max(1, len(todo)))
    print(f"{len(configs)} runs: {len(configs) - len(todo)} already finished in {out}, {len(todo)} to do"
          + (f", on {workers} workers" if workers > 1 else ""), flush=True)
    jobs = [(c, runs_dir, keep_model is not None and keep_model(c)) for c in todo]
    count = 0
    try:
        if workers == 1:
            for i, job in enumerate(jobs, 1):
                config = job[0]
                print(f"[{i}/{len(todo)}] {name(config)} (d_model={config.mixer.d_model}, run {config.run_id()})",
                      flush=True)
                summary = train_and_store(*job, progress=progress)
                count += 1
                print(f"    {outcome(config, summary)}", flush=True)
        else:
            # Longest first (LPT scheduling), so that no long run starts last while the other workers idle.
            order = sorted(range(len(todo)), key=lambda i: -run_cost(todo[i]))

            def report(position: int, summary: dict[str, Any]) -> None:
                nonlocal count
                count += 1
                config = todo[order[position]]
                print(f"[{count}/{len(todo)}] {name(config)} (run {config.run_id()}) {outcome(config, summary)}",
                      flush=True)

            try:
                run_parallel(train_and_store, [jobs[i] for i in order], workers, report, gpus=_gpus(configs))
            except WorkerDied as death:
                lost = None if death.position is None else todo[order[death.position]]
                what = f"while training {name(lost)} (run {lost.run_id()})" if lost else "between runs"
                raise RunFailed(f"a worker died ({death.cause}) {what}; {count} of {len(todo)} runs finished and "
                                f"are stored in {runs_dir}: rerun the same command to resume") from None
    except KeyboardInterrupt:
        print(f"interrupted: {count} of {len(todo)} runs finished and stored in {runs_dir}; "
              f"rerun the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(130) from None  # 128 + SIGINT, as a shell reports a Ctrl-C
