"""No-solve baselines and the shortcut audit: the floor a model must beat on each task.

A baseline is a `Predictor` (inputs (B, L), scored (B, L) bool) -> predictions (B, L): a deterministic
rule that reads only the inputs and the scored mask, never targets or meta, and does not solve the
task. Every task gets the generic ones here; each task adds its own in `Task.shortcuts()`:

- majority: the most frequent target over the scored positions of a fixed reference sample of the task
  (its own fixed-seed generator, `REFERENCE_ROWS` rows) — a training-distribution prior, never the
  evaluated batch's targets;
- copy_previous: at position t, the token just read, inputs[:, t].

`audit` scores the oracle (which must be 1.0) and every baseline on held-out batches; `floor` is the
best baseline on the task's metric, on the test sets a suite run evaluates on (`TaskData(task, seed,
test_size).test` for each seed), cached.

    audit(task, held_out_batch(task, 256))     # AuditRow: chance, oracle, every baseline, best
    floor(task, 256)                           # ("most_frequent_value", 0.125, "accuracy")
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import Batch, Predictor, Task
from tasks.data import TaskData
from tasks.metrics import sequence_accuracy, token_accuracy

REFERENCE_ROWS = 1024
REFERENCE_SEED = 0x5EED_0A11
# The held-out sets a tuning study's final runs are evaluated on: TaskData seeds of its confirm runs
# (studies/tune/study.py CONFIRM_SEED_OFFSET = 1000; `testbed tune --final-seeds` is 5 by default).
AUDIT_SEEDS = (1000, 1001, 1002, 1003, 1004)
# A task is shortcut-proof at a size if its best baseline is within this of chance on its metric.
FLOOR_MARGIN = 0.10


@functools.cache
def _majority_token(task: Task) -> int:
    batch = task.sample(REFERENCE_ROWS, torch.Generator().manual_seed(REFERENCE_SEED))
    return int(batch.targets[batch.scored].bincount().argmax())


def majority(task: Task) -> Predictor:
    """Predict the task's most frequent target (on a fixed reference sample) everywhere."""
    token = _majority_token(task)
    return lambda inputs, scored: torch.full_like(inputs, token)


def copy_previous(inputs: Tensor, scored: Tensor) -> Tensor:
    """Predict at position t the token just read, inputs[:, t]."""
    return inputs.clone()


def baselines(task: Task) -> dict[str, Predictor]:
    """The generic baselines, then the task's own shortcuts (a task's name may not shadow a generic one)."""
    generic: dict[str, Predictor] = {"majority": majority(task), "copy_previous": copy_previous}
    own = task.shortcuts()
    clash = sorted(set(generic) & set(own))
    if clash:
        raise ValueError(f"{task.name}: shortcut name(s) {', '.join(clash)} shadow generic baselines")
    return {**generic, **own}


def _scores(predictor: Predictor, batch: Batch) -> tuple[float, float]:
    preds = predictor(batch.inputs, batch.scored)
    if preds.shape != batch.inputs.shape or preds.dtype != torch.int64:
        raise ValueError(
            f"a predictor returned {tuple(preds.shape)} {preds.dtype}, must be {tuple(batch.inputs.shape)} int64"
        )
    return token_accuracy(preds, batch.targets), sequence_accuracy(preds, batch.targets)


@dataclass(frozen=True)
class AuditRow:
    """One task's audit: every score is (token accuracy, sequence accuracy) on the same batch."""

    task: Task
    chance: float  # on task.metric
    oracle: tuple[float, float]
    baselines: dict[str, tuple[float, float]]

    @property
    def metric(self) -> str:
        return self.task.metric

    def on_metric(self, scores: tuple[float, float]) -> float:
        return _on_metric(self.metric, scores)

    @property
    def best(self) -> tuple[str, float]:
        """The best baseline on the task's metric: (name, score); ties go to the first listed."""
        return best_of(self.metric, self.baselines)

    @property
    def margin(self) -> float:
        """Best baseline minus chance, on the task's metric."""
        return self.best[1] - self.chance


def _concat(batches: list[Batch]) -> Batch:
    return Batch(torch.cat([b.inputs for b in batches]), torch.cat([b.targets for b in batches]))


def held_out_batch(task: Task, test_size: int, seeds: tuple[int, ...] = AUDIT_SEEDS,
                   seq_len: int | None = None, validation_size: int = 0) -> Batch:
    """The held-out sets of `TaskData(task, seed, test_size)` for each seed, as one batch: at the
    training length its test set, at another `seq_len` the held-out set a run is evaluated on there. With
    `validation_size`, the validation rows of `TaskData(task, seed, test_size, validation_size)` instead:
    the rows a run's decisions read (training length only)."""
    if validation_size:
        if seq_len is not None and seq_len != task.seq_len:
            raise ValueError(f"validation rows exist at the training length {task.seq_len} only, not {seq_len}")
        return _concat([TaskData(task, seed, test_size, validation_size).validation for seed in seeds])
    if seq_len is None or seq_len == task.seq_len:
        return _concat([TaskData(task, seed, test_size).test for seed in seeds])
    return _concat([TaskData(task, seed, test_size).test_at_length(seq_len, test_size) for seed in seeds])


def baseline_scores(task: Task, batch: Batch) -> dict[str, tuple[float, float]]:
    """Every baseline of `task` scored on `batch`: name -> (token accuracy, sequence accuracy)."""
    return {name: _scores(predictor, batch) for name, predictor in baselines(task).items()}


def audit(task: Task, batch: Batch) -> AuditRow:
    """Chance, the oracle and every baseline of `task` scored on `batch`."""
    return AuditRow(
        task=task,
        chance=task.chance(),
        oracle=_scores(task.oracle, batch),
        baselines=baseline_scores(task, batch),
    )


def _on_metric(metric: str, scores: tuple[float, float]) -> float:
    return scores[0] if metric == "accuracy" else scores[1]


def best_of(metric: str, scores: dict[str, tuple[float, float]]) -> tuple[str, float]:
    """The best of (token accuracy, sequence accuracy) `scores` on `metric`; ties go to the first listed."""
    on_metric = {name: _on_metric(metric, s) for name, s in scores.items()}
    name = max(on_metric, key=on_metric.get)
    return name, on_metric[name]


def best_baseline(task: Task, batch: Batch) -> tuple[str, float]:
    """The best no-solve baseline of `task` on `batch`, scored on task.metric: (name, score). The audit's
    best, without the oracle's score (which a floor does not need)."""
    return best_of(task.metric, baseline_scores(task, batch))


@functools.cache
def floor(task: Task, test_size: int, seeds: tuple[int, ...] = AUDIT_SEEDS,
          seq_len: int | None = None, validation_size: int = 0) -> tuple[str, float, str]:
    """(best baseline's name, its score, the metric) on the test sets a suite run of `task` with
    `test_size` evaluates on, one per seed — at the training length, or at `seq_len` with the baselines
    of the task posed there; with `validation_size`, on the runs' validation rows (what a decision such as
    pruning may read). Cached: tasks are frozen, so equal configs share it."""
    at = task if seq_len is None else task.at_length(seq_len)
    name, score = best_baseline(at, held_out_batch(task, test_size, seeds, seq_len, validation_size))
    return name, score, task.metric


def audit_markdown(rows: list[AuditRow]) -> str:
    """Two Markdown tables: per task, its floor; then every baseline's token / sequence accuracy."""
    lines = [
        "| task | metric | chance | oracle | best baseline | its score | margin over chance "
        f"| within +{FLOOR_MARGIN:.2f} |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        name, score = row.best
        lines.append(
            f"| {row.task.name} | {row.metric} | {row.chance:.3f} | {row.on_metric(row.oracle):.3f} | {name} "
            f"| {score:.3f} | {row.margin:+.3f} | {'yes' if row.margin <= FLOOR_MARGIN else '**no**'} |"
        )
    lines += ["", "| task | baseline | token accuracy | sequence accuracy |", "|---|---|---:|---:|"]
    for row in rows:
        for name, (token, sequence) in {"oracle": row.oracle, **row.baselines}.items():
            lines.append(f"| {row.task.name} | {name} | {token:.3f} | {sequence:.3f} |")
    return "\n".join(lines)
