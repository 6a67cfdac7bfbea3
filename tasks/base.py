"""What every task shares: the `Batch` it samples and the `Task` base class (config and generator in one).

Alignment convention, used by every task and every model: `targets[:, t]` is the token the model must
predict after reading `inputs[:, :t+1]`, and `IGNORE` (-100, PyTorch's cross-entropy default) marks
positions that are not scored.

Every task also states what solving it means and what does not count: `oracle` is its exact solver
from the inputs alone, `shortcuts` its named no-solve rules (see tasks/shortcuts.py, which adds the
generic ones and audits them), `chance` the score of uniform guessing on the task's `metric`.
"""
from __future__ import annotations

import dataclasses
import typing
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

IGNORE = -100
METRICS = ("accuracy", "sequence_accuracy")

# (inputs (B, L) int64, scored (B, L) bool) -> predictions (B, L) int64. Only predictions at scored
# positions are ever read. A predictor reads nothing but its two arguments and the task's own fields:
# never targets, never meta.
Predictor = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Batch:
    """A batch of sequences with aligned targets and per-example metadata for slicing results.

    inputs  (B, L) int64 token ids.
    targets (B, L) int64: what to predict after reading inputs[:, :t+1]; IGNORE where unscored.
    meta    name -> (B,) or (B, L) int64, e.g. the distance between a query and the key it recalls.
    """

    inputs: Tensor
    targets: Tensor
    meta: dict[str, Tensor] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.inputs.dim() != 2 or self.inputs.dtype != torch.int64:
            raise ValueError(f"Batch: inputs must be (B, L) int64, got {tuple(self.inputs.shape)} {self.inputs.dtype}")
        if self.targets.shape != self.inputs.shape or self.targets.dtype != torch.int64:
            raise ValueError(
                f"Batch: targets must match inputs {tuple(self.inputs.shape)} int64, "
                f"got {tuple(self.targets.shape)} {self.targets.dtype}"
            )
        for key, value in self.meta.items():
            if value.shape not in (self.inputs.shape[:1], self.inputs.shape):
                raise ValueError(
                    f"Batch: meta[{key!r}] has shape {tuple(value.shape)}, "
                    f"must be (B,) or (B, L) = {tuple(self.inputs.shape[:1])} or {tuple(self.inputs.shape)}"
                )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def scored(self) -> Tensor:
        """(B, L) bool: positions that carry a target."""
        return self.targets != IGNORE

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device), {k: v.to(device) for k, v in self.meta.items()})

    def __getitem__(self, rows: slice | Tensor) -> Batch:
        """A batch of some of the rows (a slice, an index tensor or a (B,) bool mask)."""
        return Batch(self.inputs[rows], self.targets[rows], {k: v[rows] for k, v in self.meta.items()})


@dataclass(frozen=True)
class Task:
    """Base of every task: a frozen dataclass whose fields are the task's knobs.

    Subclasses give every field a default, set the ClassVars `name`, `extrapolates` and `metric`, and
    implement `vocab_size`, `token_names`, `sample`, `chance`, `oracle` and (where the task has any)
    `shortcuts`. Field types (int, float, bool, str) are checked here, so a subclass's `_validate` only
    states its own constraints.
    """

    seq_len: int

    name: ClassVar[str] = "task"
    # True where evaluating at 2x/4x the training length poses the same problem over a longer horizon.
    extrapolates: ClassVar[bool] = False
    # The metric the headline reports for this task and that the audit's floor is judged on: "accuracy"
    # (token accuracy on scored positions) or "sequence_accuracy" (every scored position of a row right).
    metric: ClassVar[str] = "accuracy"
    # Knobs added after results were stored, each with the value that reproduces the task as it was
    # before: at that value the knob is left out of a run's config (`RunConfig.to_dict`), so the ids of
    # the runs stored before it existed stay the ids of the same computation.
    knobs_added_later: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value, expected = getattr(self, field.name), hints[field.name]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                # 1 for 1.0 is harmless; store the float so equal configs compare and hash equal.
                object.__setattr__(self, field.name, float(value))
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(
                    f"{self.name}: {field.name}={value!r} must be of type {expected.__name__}, "
                    f"got {type(value).__name__}"
                )
        self._require(self.seq_len >= 1, f"seq_len={self.seq_len} must be >= 1")
        self._validate()

    def _validate(self) -> None:
        """Raise ValueError (through `_require`) for settings under which the task cannot be posed."""

    def _require(self, condition: bool, constraint: str) -> None:
        if not condition:
            raise ValueError(f"{self.name}: {constraint}")

    def _require_key_value_vocab(self, vocab: int, num_kv_pairs: int | None = None) -> None:
        """Recall tasks split `vocab` into a key half and a disjoint value half; with `num_kv_pairs`
        single-token keys, each pair needs its own key."""
        self._require(vocab >= 2 and vocab % 2 == 0, f"vocab={vocab} must be even and >= 2 (half keys, half values)")
        if num_kv_pairs is not None:
            self._require(num_kv_pairs >= 1, f"num_kv_pairs={num_kv_pairs} must be >= 1")
            self._require(
                num_kv_pairs <= vocab // 2,
                f"num_kv_pairs={num_kv_pairs} must be <= vocab//2={vocab // 2} (keys are distinct)",
            )

    @classmethod
    def knobs(cls) -> dict[str, Any]:
        """Knob name -> default value, in declaration order."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def knob_types(cls) -> dict[str, type]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @property
    def vocab_size(self) -> int:
        """Number of token ids a model needs: every id that occurs in inputs or targets is below it."""
        raise NotImplementedError

    def token_names(self) -> list[str]:
        """A short readable name per token id (length vocab_size), for printing examples."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """n independent sequences of length seq_len, on the generator's device."""
        raise NotImplementedError

    def sample_train(self, n: int, generator: torch.Generator) -> Batch:
        """A training batch: the same sequences `sample` draws from this generator, with the targets
        training learns from. Where a task supervises training more densely than it scores (see
        StateTracking.train_targets) only the targets differ; evaluation always uses `sample`."""
        return self.sample(n, generator)

    def chance(self) -> float:
        """Expected score on `self.metric` of guessing uniformly among the answers a scored position
        can take (for sequence_accuracy: the product over a row's scored positions, averaged)."""
        raise NotImplementedError

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        """The exact solver, from the inputs alone: equals targets at every scored position.

        Written independently of `sample` (loops allowed: it is the spec, not a fast path).
        inputs (B, L) int64, scored (B, L) bool -> predictions (B, L) int64.
        """
        raise NotImplementedError

    def shortcuts(self) -> dict[str, Predictor]:
        """The task's own named no-solve rules: deterministic Predictors that do not solve the task but
        exploit something about its layout or statistics. The generic ones (majority, copy_previous)
        live in tasks/shortcuts.py and apply to every task."""
        return {}

    def at_length(self, seq_len: int) -> Task:
        """The same task at another length; raises ValueError if it cannot be posed there.

        No task here has a knob that must scale with length (each definition fixes the number of
        pairs/tokens and lets the horizon grow), so this only replaces seq_len and re-validates.
        """
        return dataclasses.replace(self, seq_len=seq_len)

    def _check_n(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{self.name}: sample size n={n!r} must be a positive int")


def sample_without_replacement(
    n: int, population: int, k: int, generator: torch.Generator, weights: Tensor | None = None
) -> Tensor:
    """(n, k) int64: k distinct indices in [0, population) per row.

    Uniform, in uniformly random order; or with probability proportional to `weights` (population,),
    drawn one by one without replacement and returned in draw order (Efraimidis & Spirakis: the k
    largest of u_i^(1/w_i), u_i ~ U[0, 1), compared through their logs).
    """
    u = torch.rand(n, population, generator=generator, device=generator.device)
    if weights is None:
        # Sorted by the uniform keys: that order is itself a uniformly random permutation.
        return u.topk(k, dim=-1).indices
    # In place: this (n, population) buffer dominates the cost. u == 0 gives -inf, which is never drawn
    # while any other index remains, as u^(1/w) = 0 would be.
    return u.log_().div_(weights).topk(k, dim=-1).indices


def predict_by_row(
    inputs: Tensor, scored: Tensor, rule: Callable[[list[int], list[int]], list[int]], fill: int = 0
) -> Tensor:
    """(B, L) int64 predictions from a plain-Python rule applied row by row.

    rule(x, positions) gets one row of inputs as a list and its scored positions in increasing order,
    and returns one prediction per scored position. Unscored positions hold `fill` (never read). For
    oracles and shortcut rules, which are specs and audits, not fast paths.
    """
    out = torch.full_like(inputs, fill)
    for b, (x, mask) in enumerate(zip(inputs.tolist(), scored.tolist())):
        positions = [t for t, s in enumerate(mask) if s]
        if positions:
            out[b, positions] = torch.tensor(rule(x, positions), dtype=torch.int64)
    return out


def by_row(rule: Callable[[list[int], list[int]], list[int]]) -> Predictor:
    """A Predictor from a row rule (see `predict_by_row`)."""
    return lambda inputs, scored: predict_by_row(inputs, scored, rule)


def uniform_chance(metric: str, answers: int, scored_per_row: int) -> float:
    """`chance` of a task whose every scored position has `answers` equally likely answers and whose
    every row has `scored_per_row` scored positions."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} must be one of {METRICS}")
    return 1 / answers if metric == "accuracy" else answers ** -scored_per_row


def most_frequent(tokens: Iterable[int]) -> int:
    """The most frequent of `tokens` (ties to the lowest id), for frequency shortcuts."""
    counts = Counter(tokens)
    return min(counts, key=lambda token: (-counts[token], token))
