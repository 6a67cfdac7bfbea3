"""Multi-query associative recall (MQAR), as in Zoology (Arora et al., 2023).

The first 2·K positions list K key–value pairs `k v k v ...`, with a fresh mapping per sequence: keys
are distinct and drawn from the key half of the vocabulary, values from the disjoint value half —
distinct too by default (distinct_values=False draws them with replacement). The rest of the sequence
holds each key once more, as a query, at positions drawn without replacement with probability
∝ gap^(power_a − 1) (gap = 1 + offset past the pairs), so most queries come soon after the pairs and
a few much later; which key is queried where is independent of its place among the pairs. Only query
positions are scored: the target is the queried key's value, as bound in the pairs. Unscored
positions after the pairs hold:
- filler="blank" (default): the blank token, so a query's key occurs exactly once before it;
- filler="values": random value tokens (never a key: still no decoys);
- filler="random": Zoology's layout, uniform tokens from the whole key/value vocabulary, so filler can
  hold keys — decoys, an earlier occurrence of a query's key that is not its binding (what follows a
  decoy is random). meta["decoys"] counts them. Queries crowd near the pairs, so decoys are rare:
  12 % of queries have one at this module's defaults (seq_len=64, vocab=64, K=8), 6 % at the
  headline size (seq_len=32, vocab=32, K=8) — measured on 10 000 rows; a test pins both.

Why distinct values: with values drawn with replacement, answering the most frequent value among the
pairs scores 0.34 at K=4, vocab=32 (chance 1/16). With distinct values every no-solve rule here is a
guess among the K values of the context, 1/K: `most_frequent_value` and `latest_value` score 0.125 at
the headline size (K=8, vocab=32, chance 0.0625: within chance + 0.10), and at these defaults
(K=8, vocab=64) 0.125 against chance 0.031. Metric: token accuracy over the K queries.

Worked example (vocab=8: k0..k3 = ids 1..4, v0..v3 = ids 5..8; seq_len=10, num_kv_pairs=2;
`testbed tasks show mqar seq_len=10 vocab=8 num_kv_pairs=2 --seed 0`):

    position   0   1   2   3   4   5   6   7   8   9
    inputs     k1  v3  k0  v1  k0  k1  _   _   _   _
    targets    .   .   .   .   v1  v3  .   .   .   .       (. = -100, unscored)

meta["distance"] (B, L): query position minus the position of its key in the pairs; -1 elsewhere.
meta["decoys"]   (B, L): at a query, how often its key occurs between the pairs and the query (0 unless
                         filler="random"); -1 elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import (
    IGNORE, Batch, Predictor, Task, by_row, most_frequent, predict_by_row, sample_without_replacement, uniform_chance,
)

FILLERS = ("blank", "values", "random")


@dataclass(frozen=True)
class MQAR(Task):
    seq_len: int = 64
    vocab: int = 64  # key and value tokens together; half are keys, half values
    num_kv_pairs: int = 8
    power_a: float = 0.01  # query gaps ∝ gap^(power_a - 1); small values crowd queries near the pairs
    filler: str = "blank"  # what unscored positions after the pairs hold: "blank", "values" or "random"
    distinct_values: bool = True  # False: values drawn with replacement (a frequency shortcut appears)

    name = "mqar"
    extrapolates = True

    BLANK = 0

    def _validate(self) -> None:
        self._require_key_value_vocab(self.vocab, self.num_kv_pairs)
        self._require(
            self.num_kv_pairs >= 2,
            f"num_kv_pairs={self.num_kv_pairs} must be >= 2 (with one pair every query has the same answer)",
        )
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
        if self.distinct_values:
            values = self.values.start + sample_without_replacement(n, len(self.values), K, generator)
        else:
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
            low = self.values.start if self.filler == "values" else self.keys.start
            inputs = torch.randint(low, self.values.stop, (n, L), generator=generator, device=device)
        inputs[:, 0 : 2 * K : 2] = keys
        inputs[:, 1 : 2 * K : 2] = values
        inputs.scatter_(1, query_pos, keys)

        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        targets.scatter_(1, query_pos, values)
        distance = torch.full((n, L), -1, dtype=torch.int64, device=device)
        key_pos = 2 * torch.arange(K, device=device)
        distance.scatter_(1, query_pos, query_pos - key_pos)
        decoys = torch.full((n, L), -1, dtype=torch.int64, device=device)
        decoys.scatter_(1, query_pos, self._count_decoys(inputs, keys, query_pos))
        return Batch(inputs, targets, {"distance": distance, "decoys": decoys})

    def _count_decoys(self, inputs: Tensor, keys: Tensor, query_pos: Tensor) -> Tensor:
        """(B, K): occurrences of each queried key strictly between the pairs and its query."""
        if self.filler != "random":  # blank and value filler never hold a key
            return torch.zeros_like(keys)
        t = torch.arange(self.seq_len, device=inputs.device)
        between = (t >= 2 * self.num_kv_pairs) & (t < query_pos[:, :, None])  # (B, K, L)
        return ((inputs[:, None, :] == keys[:, :, None]) & between).sum(dim=2)

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
            # The mode of the pairs' values (ties to the lowest id): right 1/K of the time if values are distinct.
            return [most_frequent(x[1 : 2 * K : 2])] * len(positions)

        def latest_value(x: list[int], positions: list[int]) -> list[int]:
            # The last value token read before the query, whatever key it belonged to.
            return [next(tok for tok in reversed(x[:t]) if tok in self.values) for t in positions]

        def write_order(x: list[int], positions: list[int]) -> list[int]:
            # The j-th query answered with the j-th pair's value: exact if queries followed write order.
            return x[1 : 2 * K : 2][: len(positions)]

        return {
            "most_frequent_value": by_row(most_frequent_value),
            "latest_value": by_row(latest_value),
            "write_order": by_row(write_order),
        }
