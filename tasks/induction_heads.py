"""Induction heads, as in H3 (Fu et al., 2023): recall the token that followed the earlier trigger.

Uniformly random tokens, except that a dedicated trigger token occurs exactly twice: once at a
uniformly random position p ≤ seq_len − 3, followed by the target token at p + 1, and once at the
last position. Reading the second trigger, the model must emit the token that followed the first.
Only the last position is scored. The distance to recall grows with seq_len, so the task is posed at
longer lengths unchanged (length extrapolation).

Worked example (vocab=4: t0..t3 = ids 1..4; seq_len=8):

    position   0   1   2   3   4   5   6   7
    inputs     t2  t0  *   t3  t1  t1  t0  *
    targets    .   .   .   .   .   .   .   t3      (. = -100, unscored)

meta["distance"] (B,): last position minus the position of the target token after the first trigger.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import IGNORE, Batch, Predictor, Task, most_frequent, predict_by_row, uniform_chance


@dataclass(frozen=True)
class InductionHeads(Task):
    seq_len: int = 64
    vocab: int = 16  # ordinary tokens (the trigger has its own id)

    name = "induction_heads"
    extrapolates = True

    TRIGGER = 0

    def _validate(self) -> None:
        self._require(self.vocab >= 1, f"vocab={self.vocab} must be >= 1")
        self._require(self.seq_len >= 3, f"seq_len={self.seq_len} must be >= 3 (trigger, target, trigger)")

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
        device, L = generator.device, self.seq_len
        tokens = self.ordinary_tokens
        inputs = torch.randint(tokens.start, tokens.stop, (n, L), generator=generator, device=device)
        trigger_pos = torch.randint(0, L - 2, (n, 1), generator=generator, device=device)
        inputs.scatter_(1, trigger_pos, self.TRIGGER)
        inputs[:, -1] = self.TRIGGER

        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        targets[:, -1] = inputs.gather(1, trigger_pos + 1).squeeze(1)
        distance = (L - 1) - (trigger_pos.squeeze(1) + 1)
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
            "most_frequent_token": lambda inputs, scored: predict_by_row(inputs, scored, most_frequent_token),
            "before_final_trigger": before_final_trigger,
        }
