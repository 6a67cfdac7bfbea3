"""Synthetic memory-horizon tasks: one frozen dataclass per task, pure and seeded; registry; metrics.

    task = make_task("mqar", num_kv_pairs=4)
    batch = task.sample(32, torch.Generator().manual_seed(0))   # Batch(inputs, targets, meta), (B, L) int64
    data = TaskData(task, seed=0, test_size=1000)              # disjoint train stream and test set

Imports only torch and numpy.
"""
from __future__ import annotations

from tasks.base import IGNORE, Batch, Task
from tasks.data import TaskData
from tasks.fuzzy_recall import FuzzyRecall
from tasks.induction_heads import InductionHeads
from tasks.memory_horizon import MemoryHorizon
from tasks.metrics import accuracy_by, sequence_accuracy, sequence_accuracy_by, token_accuracy
from tasks.mqar import MQAR
from tasks.noisy_recall import NoisyRecall
from tasks.selective_copy import SelectiveCopy
from tasks.state_tracking import StateTracking

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (MQAR, SelectiveCopy, InductionHeads, NoisyRecall, FuzzyRecall, MemoryHorizon, StateTracking)
}


def make_task(name: str, **overrides: object) -> Task:
    """The registered task `name` with its defaults, some replaced by `overrides` (validated)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}")
    cls = TASKS[name]
    unknown = sorted(set(overrides) - set(cls.knobs()))
    if unknown:
        raise ValueError(f"{name}: unknown knob(s) {', '.join(unknown)}; its knobs are {', '.join(cls.knobs())}")
    return cls(**overrides)


__all__ = [
    "IGNORE", "Batch", "Task", "TaskData", "TASKS", "make_task",
    "MQAR", "SelectiveCopy", "InductionHeads", "NoisyRecall", "FuzzyRecall", "MemoryHorizon", "StateTracking",
    "token_accuracy", "sequence_accuracy", "accuracy_by", "sequence_accuracy_by",
]
