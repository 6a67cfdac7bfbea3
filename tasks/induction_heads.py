"""Induction heads, as in H3 (Fu et al., 2023): recall the token that followed the earlier trigger.

A dedicated trigger token occurs exactly twice: once at a uniformly random position p ≤ seq_len − 4,
followed by the target token at p + 1, and once at the last position. Reading the second trigger, the
model must emit the token that followed the first. Only the last position is scored (metric: token
accuracy, which for one scored position is also exact match). The distance to recall grows with
seq_len, so the task is posed at longer lengths unchanged (length extrapolation).

The seq_len − 2 ordinary tokens are balanced: a uniformly random arrangement of a multiset in which
every token occurs ⌊(L−2)/V⌋ or ⌈(L−2)/V⌉ times (which tokens get the extra occurrence is random per
sequence). That is what removes the frequency shortcut: with i.i.d. tokens the target occurs once more
than a typical token, so emitting the sequence's most frequent token scored 0.23 at L=32, vocab=8
(chance 0.125); with balanced counts a token's count says next to nothing about being the target. And
the target never sits right before the final trigger (p + 1 ≤ L − 3), which made "emit the token before
the last position" right in 1/(L−2) of rows beyond chance. At the headline size (L=32, vocab=8,
chance 0.125) every baseline is at chance: `most_frequent_token` 0.127 (the target is drawn from the
multiset, so a token holding the extra occurrence is the target with odds 4/30 rather than 3/30),
`majority` 0.130, `before_final_trigger` 0.101.

Worked example (vocab=3: t0..t2 = ids 1..3; seq_len=8: 6 ordinary tokens, each exactly twice;
`testbed tasks show induction_heads seq_len=8 vocab=3 --seed 0`):

    position   0   1   2   3   4   5   6   7
    inputs     t0  t2  t1  *   t2  t0  t1  *
    targets    .   .   .   .   .   .   .   t2      (. = -100, unscored)

meta["distance"] (B,): last position minus the position of the target token after the first trigger.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import (
    IGNORE, Batch, Predictor, Task, by_row, most_frequent, predict_by_row, sample_without_replacement, uniform_chance,
)


@dataclass(frozen=True)
class InductionHeads(Task):
    seq_len: int = 64
    vocab: int = 16  # ordinary tokens (the trigger has its own id)

    name = "induction_heads"
    extrapolates = True

    TRIGGER = 0

    def _validate(self) -> None:
        self._require(
            self.vocab >= 2, f"vocab={self.vocab} must be >= 2 (with one ordinary token the answer is always the same)"
        )
        self._require(
            self.seq_len >= 4,
            f"seq_len={self.seq_len} must be >= 4 (trigger, target, a token between it and the final trigger, trigger)",
        )

    @property
    def ordinary_tokens(self) -> range:
        return range(1, 1 + self.vocab)

    @property
    def vocab_size(self) -> int:
        return 1 + self.vocab

    def token_names(self) -> list[str]:
        return ["*"] + [f"t{i}" for i in range(self.vocab)]

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        self._check_n(n)
        device, L, V = generator.device, self.seq_len, self.vocab
        M = L - 2  # ordinary tokens
        # Balanced multiset: slot m holds the (m mod V)-th token of a random permutation of the ids, so
        # every token occurs floor(M/V) or ceil(M/V) times and which ones get the extra is random.
        ids = self.ordinary_tokens.start + sample_without_replacement(n, V, V, generator)  # (B, V)
        multiset = ids[:, torch.arange(M, device=device) % V]  # (B, M)
        ordinary = multiset.gather(1, sample_without_replacement(n, M, M, generator))  # shuffled

        # The first trigger goes before ordinary[:, p], p in [0, M - 2]: the target ordinary[:, p] then
        # lands at p + 1 <= L - 3, never right before the final trigger.
        p = torch.randint(0, M - 1, (n, 1), generator=generator, device=device)
        t = torch.arange(L - 1, device=device)
        source = (t - (t > p).long()).clamp(max=M - 1)  # before p: ordinary[t]; after p: ordinary[t - 1]
        inputs = torch.full((n, L), self.TRIGGER, dtype=torch.int64, device=device)
        inputs[:, : L - 1] = torch.where(t == p, self.TRIGGER, ordinary.gather(1, source))

        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        targets[:, -1] = ordinary.gather(1, p).squeeze(1)
        distance = (L - 1) - (p.squeeze(1) + 1)
        return Batch(inputs, targets, {"distance": distance})

    def chance(self) -> float:
        return uniform_chance(self.metric, self.vocab, 1)

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        def rule(x: list[int], positions: list[int]) -> list[int]:
            first = x.index(self.TRIGGER)  # the earlier trigger; the token after it is the answer
            return [x[first + 1] for _ in positions]

        return predict_by_row(inputs, scored, rule)

    def shortcuts(self) -> dict[str, Predictor]:
        def most_frequent_token(x: list[int], positions: list[int]) -> list[int]:
            return [most_frequent(tok for tok in x if tok in self.ordinary_tokens)] * len(positions)

        def before_final_trigger(inputs: Tensor, scored: Tensor) -> Tensor:
            # The token right before the last position (the final trigger).
            return inputs[:, -2:-1].expand_as(inputs).clone()

        return {
            "most_frequent_token": by_row(most_frequent_token),
            "before_final_trigger": before_final_trigger,
        }
