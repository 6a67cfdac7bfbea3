"""Multi-query associative recall (MQAR), as in Zoology (Arora et al., 2023), without its decoys.

The first 2·K positions list K key–value pairs `k v k v ...`, with a fresh mapping per sequence: keys
are distinct and drawn from the key half of the vocabulary, values from the disjoint value half. The
rest of the sequence holds each key once more, as a query, at positions drawn without replacement with
probability ∝ gap^(power_a − 1) (gap = 1 + offset past the pairs), so most queries come soon after
the pairs and a few much later. Only query positions are scored: the target is the queried key's
value. Unscored positions hold the blank token, or (filler="values") random value tokens; filler
never contains a key, so a query's key occurs exactly once before it (Zoology's random filler can
repeat keys and create decoys).

Worked example (vocab=8: k0..k3 = ids 1..4, v0..v3 = ids 5..8; seq_len=10, num_kv_pairs=2):

    position   0   1   2   3   4   5   6   7   8   9
    inputs     k3  v1  k0  v3  _   k0  _   _   k3  _
    targets    .   .   .   .   .   v3  .   .   v1  .       (. = -100, unscored)

meta["distance"] (B, L): query position minus the position of its key in the pairs; -1 elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import IGNORE, Batch, Predictor, Task, most_frequent, predict_by_row, sample_without_replacement, uniform_chance

FILLERS = ("blank", "values")


@dataclass(frozen=True)
class MQAR(Task):
    seq_len: int = 64
    vocab: int = 64  # key and value tokens together; half are keys, half values
    num_kv_pairs: int = 8
    power_a: float = 0.01  # query gaps ∝ gap^(power_a - 1); small values crowd queries near the pairs
    filler: str = "blank"  # what unscored query-region positions hold: "blank" or "values"

    name = "mqar"
    extrapolates = True

    BLANK = 0

    def _validate(self) -> None:
        self._require_key_value_vocab(self.vocab, self.num_kv_pairs)
        self._require(
            3 * self.num_kv_pairs <= self.seq_len,
            f"3*num_kv_pairs={3 * self.num_kv_pairs} must be <= seq_len={self.seq_len} (2 per pair + 1 per query)",
        )
        self._require(self.power_a > 0, f"power_a={self.power_a} must be > 0")
        self._require(self.filler in FILLERS, f"filler={self.filler!r} must be one of {FILLERS}")

    @property
    def keys(self) -> range:
        return range(1, 1 + self.vocab // 2)

    @property
    def values(self) -> range:
        return range(1 + self.vocab // 2, 1 + self.vocab)

    @property
    def vocab_size(self) -> int:
        return 1 + self.vocab

    def token_names(self) -> list[str]:
        return ["_"] + [f"k{i}" for i in range(len(self.keys))] + [f"v{i}" for i in range(len(self.values))]

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        self._check_n(n)
        device, K, L = generator.device, self.num_kv_pairs, self.seq_len
        keys = self.keys.start + sample_without_replacement(n, len(self.keys), K, generator)  # (B, K)
        values = torch.randint(self.values.start, self.values.stop, (n, K), generator=generator, device=device)

        span = L - 2 * K
        gaps = torch.arange(1, span + 1, device=device, dtype=torch.float32)
        offsets = sample_without_replacement(n, span, K, generator, weights=gaps ** (self.power_a - 1))
        # Gumbel-top-k returns offsets in draw order, which favours small offsets first; shuffle so that
        # which key is queried where is independent of where the key sits among the pairs.
        shuffle = sample_without_replacement(n, K, K, generator)
        query_pos = 2 * K + offsets.gather(1, shuffle)  # (B, K): column i queries key i

        if self.filler == "blank":
            inputs = torch.full((n, L), self.BLANK, dtype=torch.int64, device=device)
        else:
            inputs = torch.randint(self.values.start, self.values.stop, (n, L), generator=generator, device=device)
        inputs[:, 0 : 2 * K : 2] = keys
        inputs[:, 1 : 2 * K : 2] = values
        inputs.scatter_(1, query_pos, keys)

        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        targets.scatter_(1, query_pos, values)
        distance = torch.full((n, L), -1, dtype=torch.int64, device=device)
        key_pos = 2 * torch.arange(K, device=device)
        distance.scatter_(1, query_pos, query_pos - key_pos)
        return Batch(inputs, targets, {"distance": distance})

    def chance(self) -> float:
        return uniform_chance(self.metric, len(self.values), self.num_kv_pairs)

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        def rule(x: list[int], positions: list[int]) -> list[int]:
            # The first 2K tokens alternate key, value; a query answers with its key's value there.
            binding = {x[2 * i]: x[2 * i + 1] for i in range(self.num_kv_pairs)}
            return [binding[x[t]] for t in positions]

        return predict_by_row(inputs, scored, rule)

    def shortcuts(self) -> dict[str, Predictor]:
        K = self.num_kv_pairs

        def most_frequent_value(x: list[int], positions: list[int]) -> list[int]:
            # The mode of the pairs' values, ties to the lowest id: right 1/K of the time when values are distinct.
            return [most_frequent(x[1 : 2 * K : 2])] * len(positions)

        def latest_value(x: list[int], positions: list[int]) -> list[int]:
            # The last value token read before the query, whatever key it belonged to.
            return [next(tok for tok in reversed(x[:t]) if tok in self.values) for t in positions]

        return {
            "most_frequent_value": lambda inputs, scored: predict_by_row(inputs, scored, most_frequent_value),
            "latest_value": lambda inputs, scored: predict_by_row(inputs, scored, latest_value),
        }
