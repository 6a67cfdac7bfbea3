"""Train, validation and test streams of one task from one root seed, with no sequence shared between them.

Each stream has its own torch.Generator, seeded from (root seed, stream id, length) through numpy's
SeedSequence, so streams are independent, reproducible, and do not depend on the order in which they
are used. The held-out test set is drawn once; so is the validation set (protocol v2: what every
decision reads — early stopping, pruning, learning-rate choice — while reported scores read the test
set), whose rows equal to a test row are redrawn. Every training batch is checked against both by row
hashes and colliding rows are redrawn, so no training sequence ever equals a held-out one.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tasks.base import Batch, Task

TRAIN, TEST, AT_LENGTH, PROBE, VALIDATION = 0, 1, 2, 3, 4  # stream ids
MAX_REDRAW_ROUNDS = 100
# `TaskData.check_training_room`: a probe of PROBE_ROWS rows (its own stream: the training stream is untouched)
# measures the share of training draws that are not test sequences. Under MIN_FRESH (more than 85 % of draws
# are test rows) a row needs over 100 redraws often enough that a run of a few thousand steps would fail
# mid-training (0.9^100 × 32 rows × 1000 steps ≈ 0.9 failures), so the setting is refused up front.
PROBE_ROWS, MIN_FRESH = 256, 0.15
_HASH_SEED = 0x5EED_CAFE


def stream_generator(seed: int, stream: int, seq_len: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one stream; SeedSequence mixes the three numbers so nearby seeds share nothing."""
    state = np.random.SeedSequence([seed, stream, seq_len]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed((int(state[0]) << 31) ^ int(state[1]))


def row_hash(inputs: Tensor) -> Tensor:
    """(B, L) int64 -> (B,) int64: Σ_t x_t · m_t mod 2^64 with fixed random odd multipliers m_t.

    Equal rows always hash equal (all the dedup needs); unequal rows collide with probability ~2^-63,
    and a collision only costs a needless redraw. int64 products wrap mod 2^64, which is the point.
    """
    g = torch.Generator().manual_seed(_HASH_SEED)
    multipliers = torch.randint(-(2**63), 2**63 - 1, (inputs.shape[1],), generator=g, dtype=torch.int64) | 1
    return (inputs * multipliers.to(inputs.device)).sum(dim=1)


def _in_sorted(values: Tensor, sorted_set: Tensor) -> Tensor:
    """(B,) bool: values[i] occurs in the sorted 1-D tensor sorted_set."""
    index = torch.searchsorted(sorted_set, values).clamp(max=len(sorted_set) - 1)
    return sorted_set[index] == values


def _replace_rows(batch: Batch, rows: Tensor, fresh: Batch) -> Batch:
    def put(old: Tensor, new: Tensor) -> Tensor:
        out = old.clone()
        out[rows] = new
        return out

    meta = {key: put(value, fresh.meta[key]) for key, value in batch.meta.items()}
    return Batch(put(batch.inputs, fresh.inputs), put(batch.targets, fresh.targets), meta)


class TaskData:
    """A task's fixed held-out test set, an optional validation set disjoint from it (`validation_size`
    rows; 0: none), an endless training stream that never repeats a held-out sequence, and held-out
    sets at other lengths (for length extrapolation).

    Generation runs on the CPU (move batches with `Batch.to`), so a seed gives the same data on any
    machine, whatever device trains on it.
    """

    def __init__(self, task: Task, seed: int, test_size: int, validation_size: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"TaskData: seed={seed!r} must be a non-negative int")
        if not isinstance(test_size, int) or isinstance(test_size, bool) or test_size < 1:
            raise ValueError(f"TaskData: test_size={test_size!r} must be a positive int")
        if not isinstance(validation_size, int) or isinstance(validation_size, bool) or validation_size < 0:
            raise ValueError(f"TaskData: validation_size={validation_size!r} must be a non-negative int")
        self.task, self.seed, self.test_size, self.validation_size = task, seed, test_size, validation_size
        self._test = task.sample(test_size, stream_generator(seed, TEST, task.seq_len))
        test_hashes = row_hash(self._test.inputs).unique()  # sorted
        self._validation = None
        if validation_size:
            self._validation = self._avoiding(task.sample, validation_size, stream_generator(seed, VALIDATION, task.seq_len),
                                              test_hashes, "validation rows")
        held_out = test_hashes if self._validation is None else torch.cat([test_hashes, row_hash(self._validation.inputs)])
        self._test_hashes = held_out.unique()  # sorted: every row training must avoid
        self._train_generator = stream_generator(seed, TRAIN, task.seq_len)
        self._at_length: dict[tuple[int, int], Batch] = {}

    @property
    def test(self) -> Batch:
        return self._test

    @property
    def validation(self) -> Batch:
        """The rows decisions read: the validation set, or the test set where there is none (protocol v1)."""
        return self._test if self._validation is None else self._validation

    def _avoiding(self, sample, n: int, generator: torch.Generator, hashes: Tensor, what: str) -> Batch:
        """n rows of `sample(n, generator)`, rows whose hash is in the sorted `hashes` redrawn."""
        batch = sample(n, generator)
        for _ in range(MAX_REDRAW_ROUNDS):
            clash = _in_sorted(row_hash(batch.inputs), hashes)
            if not clash.any():
                return batch
            rows = clash.nonzero().squeeze(1)
            batch = _replace_rows(batch, rows, sample(len(rows), generator))
        raise RuntimeError(
            f"TaskData: after {MAX_REDRAW_ROUNDS} redraws some {what} still equal held-out sequences; "
            f"test_size={self.test_size} (with validation_size={self.validation_size}) covers nearly every sequence "
            f"{self.task} can produce; make the task larger (e.g. a longer seq_len) or the held-out sets smaller"
        )

    def check_training_room(self) -> None:
        """ValueError, before anything trains, where the held-out set holds so much of what the task can
        draw that the training stream would soon fail to avoid it (see MIN_FRESH); the message names the
        fix. Runners call it up front; `train_batch` alone fails only when it happens."""
        task = self.task
        probe = task.sample_train(PROBE_ROWS, stream_generator(self.seed, PROBE, task.seq_len))
        fresh = 1 - _in_sorted(row_hash(probe.inputs), self._test_hashes).float().mean().item()
        if fresh < MIN_FRESH:
            raise ValueError(
                f"{task.name}: at these knobs (seq_len={task.seq_len}) the task has so few distinct sequences that "
                f"{1 - fresh:.0%} of training draws would be one of the test_size={self.test_size} held-out rows; "
                f"make the task larger (e.g. a longer seq_len) or the held-out sets smaller (train.test_size, "
                f"train.validation_size={self.validation_size})"
            )

    def train_batch(self, batch_size: int) -> Batch:
        """The next training batch (`Task.sample_train`); rows equal to a test sequence are redrawn
        from the same stream."""
        return self._avoiding(self.task.sample_train, batch_size, self._train_generator, self._test_hashes, "training rows")

    def test_at_length(self, seq_len: int, n: int) -> Batch:
        """n held-out sequences of the task posed at seq_len (ValueError where it cannot be posed).

        At the training length this is the first n rows of `test`, the only sequences at that length
        the training stream is guaranteed to avoid; elsewhere lengths differ, so no row can equal a
        training row. Each length has its own stream, and results are cached.
        """
        if seq_len == self.task.seq_len:
            if n > self.test_size:
                raise ValueError(f"TaskData: n={n} must be <= test_size={self.test_size} at the training length")
            return self._test[:n]
        if (seq_len, n) not in self._at_length:
            task = self.task.at_length(seq_len)
            self._at_length[seq_len, n] = task.sample(n, stream_generator(self.seed, AT_LENGTH, seq_len))
        return self._at_length[seq_len, n]
