"""Accuracy over scored positions (targets != -100), overall and grouped by a metadata field.

preds are (B, L) int64 argmax ids, aligned with targets. Every helper raises if there is nothing to
score, rather than returning a number that means nothing.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tasks.base import IGNORE, Batch


def _check(preds: Tensor, targets: Tensor) -> Tensor:
    if preds.shape != targets.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} must have the same shape")
    scored = targets != IGNORE
    if not scored.any():
        raise ValueError("no scored position (every target is -100)")
    return scored


def token_accuracy(preds: Tensor, targets: Tensor) -> float:
    """Fraction of scored positions predicted correctly."""
    scored = _check(preds, targets)
    return (preds == targets)[scored].float().mean().item()


def _sequence_correct(preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) bool: every scored position right; (B,) bool: the sequence has a scored position."""
    scored = _check(preds, targets)
    wrong = (preds != targets) & scored
    return ~wrong.any(dim=1), scored.any(dim=1)


def sequence_accuracy(preds: Tensor, targets: Tensor) -> float:
    """Fraction of sequences with every scored position right; sequences with none are left out."""
    correct, has_scored = _sequence_correct(preds, targets)
    return correct[has_scored].float().mean().item()


def _grouped_mean(groups: Tensor, correct: Tensor) -> dict[int, float]:
    values, index = torch.unique(groups, return_inverse=True)
    totals = torch.zeros(len(values), device=correct.device).index_add_(0, index, correct.float())
    counts = torch.bincount(index, minlength=len(values))
    return {int(v): float(t / c) for v, t, c in zip(values.tolist(), totals.tolist(), counts.tolist())}


def accuracy_by(preds: Tensor, batch: Batch, key: str) -> dict[int, float]:
    """Token accuracy over scored positions, grouped by the value of batch.meta[key] there.

    A (B,) field groups whole sequences (every scored position of a row takes the row's value); a
    (B, L) field groups positions.
    """
    scored = _check(preds, batch.targets)
    groups = _meta(batch, key)
    if groups.dim() == 1:
        groups = groups[:, None].expand_as(batch.targets)
    return _grouped_mean(groups[scored], (preds == batch.targets)[scored])


def sequence_accuracy_by(preds: Tensor, batch: Batch, key: str) -> dict[int, float]:
    """Sequence accuracy grouped by a (B,) metadata field (sequences without a scored position left out)."""
    groups = _meta(batch, key)
    if groups.dim() != 1:
        raise ValueError(f"sequence_accuracy_by needs a (B,) meta field; {key!r} has shape {tuple(groups.shape)}")
    correct, has_scored = _sequence_correct(preds, batch.targets)
    return _grouped_mean(groups[has_scored], correct[has_scored])


def _meta(batch: Batch, key: str) -> Tensor:
    if key not in batch.meta:
        raise ValueError(f"no meta field {key!r}; this batch has {sorted(batch.meta)}")
    return batch.meta[key]
