"""The floor every score is read against, and the names of the metrics it is read on.

A task's floor is its best no-solve baseline (`tasks.shortcuts`) scored on exactly the held-out rows the
runs were scored on: their seeds, test size and length. Reports read stored configs (dicts), so this
module turns a stored config into that floor. Runs stored under another config version were made with
other task generators: their floor cannot be rebuilt (None), and their score was read on token accuracy.
"""
from __future__ import annotations

from typing import Any

from studies.config import CONFIG_VERSION, task_from_dict
from tasks.shortcuts import floor

METRIC_LABELS = {"accuracy": "token accuracy", "sequence_accuracy": "sequence exact match"}
SHORT_METRIC_LABELS = {"accuracy": "token acc.", "sequence_accuracy": "seq. exact"}


def metric_label(metric: str, short: bool = False) -> str:
    """How tables and progress lines name a task's metric ("token accuracy", "sequence exact match")."""
    return (SHORT_METRIC_LABELS if short else METRIC_LABELS)[metric]


def stored_metric(config: dict[str, Any]) -> str:
    """The metric a stored run was scored on: its task's, or token accuracy for an older config version."""
    if config.get("version") != CONFIG_VERSION:
        return "accuracy"
    return task_from_dict(config).metric


def stored_floor(config: dict[str, Any], seeds: tuple[int, ...],
                 seq_len: int | None = None) -> tuple[str, float, str] | None:
    """(baseline, score, metric) of the floor on the held-out sets of `seeds` for a stored run config
    (at `seq_len` when given), or None for an older config version."""
    if config.get("version") != CONFIG_VERSION:
        return None
    return floor(task_from_dict(config), config["train"]["test_size"], tuple(sorted(seeds)), seq_len)
