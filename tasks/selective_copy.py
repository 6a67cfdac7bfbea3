"""Selective copying, as in Mamba (Gu & Dao, 2023, §3.1).

The first seq_len − N positions hold N data tokens at uniformly random distinct positions among
blanks; the last N positions hold the marker, once per token to emit. Reading the i-th marker, the
model must emit the i-th data token (in order of appearance). Blanks may sit anywhere, including
right before the first marker, so no fixed delay separates a data token from its copy slot and a
time-invariant convolution cannot solve the task: the model has to select by content. The marker
carries no hint of the answer (no teacher forcing), so the model must also keep count. At least one
blank is required: without blanks every data token sits at a fixed place.

The data tokens of a sequence are distinct by default (distinct_tokens=False draws them with
replacement), and the metric is sequence exact match: a row counts only if all N tokens come out in
order. Token accuracy rewards partial rules: with repeats allowed, emitting the most frequent data token everywhere
scored 0.41 token accuracy at N=4, vocab=8 (chance 0.125); and since the i-th of N uniformly placed
tokens sits near a predictable place, `expected_position` (the data token nearest to where the i-th
one lies on average, no counting) scores 0.47 token accuracy even at N=8. Exact match compounds
those errors over the row: at the headline size (L=32, N=8, vocab=16; chance 16^-8 ≈ 0) the best
baseline is `expected_position` at 0.028, at these defaults (L=64) 0.020. N must not be small: at
N=4 in L=32 `expected_position` gets 0.22 exact match.

Worked example (vocab=4: d0..d3 = ids 2..5; seq_len=10, num_tokens=3;
`testbed tasks show selective_copy seq_len=10 vocab=4 num_tokens=3 --seed 0`):

    position   0   1   2   3   4   5   6   7   8   9
    inputs     _   d1  _   d0  _   d3  _   >   >   >
    targets    .   .   .   .   .   .   .   d1  d0  d3      (. = -100, unscored)

meta["copy_index"] (B, L): i at the i-th marker, -1 elsewhere.
meta["distance"]   (B, L): at the i-th marker, its position minus that of the i-th data token; -1 elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import (
    IGNORE, Batch, Predictor, Task, by_row, most_frequent, predict_by_row, sample_without_replacement, uniform_chance,
)


@dataclass(frozen=True)
class SelectiveCopy(Task):
    seq_len: int = 64
    vocab: int = 16  # data tokens
    num_tokens: int = 8
    distinct_tokens: bool = True  # the N data tokens of a sequence are distinct; False draws with replacement

    name = "selective_copy"
    extrapolates = True
    metric = "sequence_accuracy"

    BLANK = 0
    MARKER = 1

    def _validate(self) -> None:
        self._require(
            self.vocab >= 2, f"vocab={self.vocab} must be >= 2 (with one data token the answer is always the same)"
        )
        self._require(self.num_tokens >= 1, f"num_tokens={self.num_tokens} must be >= 1")
        if self.distinct_tokens:
            self._require(
                self.num_tokens <= self.vocab,
                f"num_tokens={self.num_tokens} must be <= vocab={self.vocab} (distinct_tokens=True)",
            )
        self._require(
            2 * self.num_tokens < self.seq_len,
            f"2*num_tokens={2 * self.num_tokens} must be < seq_len={self.seq_len} (data + one marker per token "
            "+ at least one blank; without blanks every data token sits at a fixed place)",
        )

    @property
    def data_tokens(self) -> range:
        return range(2, 2 + self.vocab)

    @property
    def vocab_size(self) -> int:
        return 2 + self.vocab

    def token_names(self) -> list[str]:
        return ["_", ">"] + [f"d{i}" for i in range(self.vocab)]

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        self._check_n(n)
        device, N, L = generator.device, self.num_tokens, self.seq_len
        region = L - N
        if self.distinct_tokens:
            data = self.data_tokens.start + sample_without_replacement(n, self.vocab, N, generator)  # (B, N)
        else:
            tokens = self.data_tokens
            data = torch.randint(tokens.start, tokens.stop, (n, N), generator=generator, device=device)
        data_pos = sample_without_replacement(n, region, N, generator).sort(dim=1).values  # (B, N)

        inputs = torch.full((n, L), self.BLANK, dtype=torch.int64, device=device)
        inputs.scatter_(1, data_pos, data)
        inputs[:, region:] = self.MARKER

        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        targets[:, region:] = data
        copy_pos = torch.arange(region, L, device=device)
        copy_index = torch.full((n, L), -1, dtype=torch.int64, device=device)
        copy_index[:, region:] = torch.arange(N, device=device)
        distance = torch.full((n, L), -1, dtype=torch.int64, device=device)
        distance[:, region:] = copy_pos - data_pos
        return Batch(inputs, targets, {"copy_index": copy_index, "distance": distance})

    def chance(self) -> float:
        return uniform_chance(self.metric, self.vocab, self.num_tokens)

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        def rule(x: list[int], positions: list[int]) -> list[int]:
            data = [tok for tok in x if tok in self.data_tokens]  # in order of appearance
            markers = [t for t, tok in enumerate(x) if tok == self.MARKER]
            copy = dict(zip(markers, data, strict=True))
            return [copy[t] for t in positions]

        return predict_by_row(inputs, scored, rule)

    def shortcuts(self) -> dict[str, Predictor]:
        def most_frequent_data(x: list[int], positions: list[int]) -> list[int]:
            # The right tokens, no order: the mode of the data tokens (ties to the lowest id) everywhere.
            return [most_frequent(tok for tok in x if tok in self.data_tokens)] * len(positions)

        def sorted_data(x: list[int], positions: list[int]) -> list[int]:
            # The right tokens in a fixed order that ignores where they were: sorted by id.
            data = sorted(tok for tok in x if tok in self.data_tokens)
            return [data[i] for i in range(len(positions))]

        def expected_position(x: list[int], positions: list[int]) -> list[int]:
            # No counting: for the i-th marker, the data token nearest to where the i-th of N uniformly
            # placed tokens sits on average, (i + 1)(R + 1)/(N + 1) − 1 in a region of R positions.
            N, region = len(positions), len(x) - len(positions)
            data = [(t, tok) for t, tok in enumerate(x[:region]) if tok in self.data_tokens]
            out = []
            for i in range(N):
                centre = (i + 1) * (region + 1) / (N + 1) - 1
                out.append(min(data, key=lambda item: abs(item[0] - centre))[1])
            return out

        return {
            "most_frequent_data": by_row(most_frequent_data),
            "sorted_data": by_row(sorted_data),
            "expected_position": by_row(expected_position),
        }
