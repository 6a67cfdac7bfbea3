"""Noisy associative recall: key–value writes with noise tokens interleaved, then queries.

The context is the stream `k v k v ...` of K pairs (distinct keys from the key half of the
vocabulary, values from the value half, distinct too unless distinct_values=False) with noise tokens
inserted at uniformly random places, so noise can also fall between a key and its value: a key binds
to the next non-noise token. A fraction noise_frac of the context is noise (noise tokens are drawn
uniformly from their own ids). Then a separator, then each key once in random order; reading a query
key the model must emit its value. Only the K query positions are scored. The context and queries
need 3·K + 1 + (noise) positions; seq_len leaves the rest as padding at the start, so a longer
seq_len poses the same problem and the task does not extrapolate in any meaningful sense. Metric:
token accuracy over the K queries.

Why distinct values: drawn with replacement, values repeat in a third of rows at K=3, vocab=16, and
emitting the most frequent value scored 0.44 (chance 0.125). With distinct values a rule that ignores
the key guesses among the K values of the context: `most_frequent_value` and `write_order` (the
j-th query answered by the j-th value written; queries come in random order) score 1/K, 0.20 at
the quick size (K=5, vocab=16, chance 0.125) and 0.125 at these defaults (K=8, vocab=32, chance
0.0625).

Worked example (vocab=8: k0..k3 = ids 6..9, v0..v3 = ids 10..13; num_noise_tokens=4: n0..n3 = ids
2..5; seq_len=10, num_kv_pairs=2, noise_frac=0.34, so round(4 · 0.34/0.66) = 2 noise tokens;
`testbed tasks show noisy_recall seq_len=10 vocab=8 num_kv_pairs=2 noise_frac=0.34 num_noise_tokens=4 --seed 2`):

    position   0   1   2   3   4   5   6   7   8   9
    inputs     _   k2  n3  v0  k0  n2  v1  |   k0  k2
    targets    .   .   .   .   .   .   .   .   v1  v0      (. = -100, unscored)

meta["distance"] (B, L): query position minus the position of the recalled value; -1 elsewhere.
meta["kv_gap"]   (B, L): noise tokens between the queried key and its value; -1 elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import (
    IGNORE, Batch, Predictor, Task, by_row, most_frequent, predict_by_row, sample_without_replacement, uniform_chance,
)


@dataclass(frozen=True)
class NoisyRecall(Task):
    seq_len: int = 64
    vocab: int = 32  # key and value tokens together; half are keys, half values
    num_kv_pairs: int = 8
    noise_frac: float = 0.6  # fraction of the context (pairs + noise) that is noise
    num_noise_tokens: int = 8  # distinct noise ids
    distinct_values: bool = True  # False: values drawn with replacement (a frequency shortcut appears)

    name = "noisy_recall"
    extrapolates = False

    PAD = 0
    SEP = 1

    def _validate(self) -> None:
        self._require_key_value_vocab(self.vocab, self.num_kv_pairs)
        self._require(
            self.num_kv_pairs >= 2,
            f"num_kv_pairs={self.num_kv_pairs} must be >= 2 (with one pair every query has the same answer)",
        )
        self._require(0 <= self.noise_frac < 1, f"noise_frac={self.noise_frac} must be in [0, 1)")
        self._require(self.num_noise_tokens >= 1, f"num_noise_tokens={self.num_noise_tokens} must be >= 1")
        needed = 3 * self.num_kv_pairs + self.num_noise + 1
        self._require(
            needed <= self.seq_len,
            f"3*num_kv_pairs + noise + separator = {3 * self.num_kv_pairs}+{self.num_noise}+1 = {needed} "
            f"must be <= seq_len={self.seq_len}",
        )

    @property
    def num_noise(self) -> int:
        """Noise tokens per sequence: noise / (noise + 2K) = noise_frac, rounded half up."""
        return math.floor(2 * self.num_kv_pairs * self.noise_frac / (1 - self.noise_frac) + 0.5)

    @property
    def noise_tokens(self) -> range:
        return range(2, 2 + self.num_noise_tokens)

    @property
    def keys(self) -> range:
        start = self.noise_tokens.stop
        return range(start, start + self.vocab // 2)

    @property
    def values(self) -> range:
        start = self.keys.stop
        return range(start, start + self.vocab // 2)

    @property
    def vocab_size(self) -> int:
        return self.values.stop

    def token_names(self) -> list[str]:
        return (
            ["_", "|"]
            + [f"n{i}" for i in range(self.num_noise_tokens)]
            + [f"k{i}" for i in range(len(self.keys))]
            + [f"v{i}" for i in range(len(self.values))]
        )

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        self._check_n(n)
        device, K, L = generator.device, self.num_kv_pairs, self.seq_len
        context_len = 2 * K + self.num_noise
        pad = L - context_len - 1 - K

        keys = self.keys.start + sample_without_replacement(n, len(self.keys), K, generator)  # (B, K)
        if self.distinct_values:
            values = self.values.start + sample_without_replacement(n, len(self.values), K, generator)
        else:
            values = torch.randint(self.values.start, self.values.stop, (n, K), generator=generator, device=device)
        pair_stream = torch.stack([keys, values], dim=2).reshape(n, 2 * K)  # k0 v0 k1 v1 ...
        # Where the pair stream lands in the context; the remaining places are noise.
        stream_pos = sample_without_replacement(n, context_len, 2 * K, generator).sort(dim=1).values
        context = torch.randint(
            self.noise_tokens.start, self.noise_tokens.stop, (n, context_len), generator=generator, device=device
        )
        context.scatter_(1, stream_pos, pair_stream)

        order = sample_without_replacement(n, K, K, generator)  # (B, K): query j asks pair order[:, j]
        inputs = torch.cat(
            [
                torch.full((n, pad), self.PAD, dtype=torch.int64, device=device),
                context,
                torch.full((n, 1), self.SEP, dtype=torch.int64, device=device),
                keys.gather(1, order),
            ],
            dim=1,
        )
        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        targets[:, L - K :] = values.gather(1, order)

        key_pos = pad + stream_pos[:, 0::2].gather(1, order)  # (B, K)
        value_pos = pad + stream_pos[:, 1::2].gather(1, order)
        distance = torch.full((n, L), -1, dtype=torch.int64, device=device)
        distance[:, L - K :] = torch.arange(L - K, L, device=device) - value_pos
        kv_gap = torch.full((n, L), -1, dtype=torch.int64, device=device)
        kv_gap[:, L - K :] = value_pos - key_pos - 1
        return Batch(inputs, targets, {"distance": distance, "kv_gap": kv_gap})

    def chance(self) -> float:
        return uniform_chance(self.metric, len(self.values), self.num_kv_pairs)

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        def rule(x: list[int], positions: list[int]) -> list[int]:
            sep = x.index(self.SEP)
            binding, key = {}, None
            for tok in x[:sep]:  # a key binds to the next token that is neither noise nor padding
                if tok in self.keys:
                    key = tok
                elif tok in self.values:
                    binding[key] = tok
            return [binding[x[t]] for t in positions]

        return predict_by_row(inputs, scored, rule)

    def shortcuts(self) -> dict[str, Predictor]:
        def most_frequent_value(x: list[int], positions: list[int]) -> list[int]:
            return [most_frequent(tok for tok in x if tok in self.values)] * len(positions)

        def write_order(x: list[int], positions: list[int]) -> list[int]:
            # The j-th query answered with the j-th value written: exact if queries followed write order.
            return [tok for tok in x if tok in self.values][: len(positions)]

        return {
            "most_frequent_value": by_row(most_frequent_value),
            "write_order": by_row(write_order),
        }
