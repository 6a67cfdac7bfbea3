"""Fuzzy associative recall (multi-token keys and values), after Zoology (Arora et al., 2023).

Each of K keys is a tuple of key_len tokens from the key half of the vocabulary and each value a
tuple of value_len tokens from the value half. Keys are distinct as tuples but freely share tokens,
so only the whole tuple identifies a key. The context writes the K pairs as blocks `key value`, then
a separator, then each pair once more as a query block in random order. Reading the last token of a
query's key the model must emit the value's first token; reading value token i (teacher-forced) it
must emit token i + 1. Those value_len positions per query are scored. Context and queries take
2·K·(key_len + value_len) + 1 positions; seq_len leaves the rest as padding at the start, so a
longer seq_len poses the same problem and the task does not extrapolate in any meaningful sense.

Worked example (vocab=6: k0..k2 = ids 2..4, v0..v2 = ids 5..7; seq_len=18, num_kv_pairs=2,
key_len=2, value_len=2):

    position   0   1   2   3   4   5   6   7   8   9   10  11  12  13  14  15  16  17
    inputs     _   k1  k0  v2  v2  k0  k1  v0  v1  |   k0  k1  v0  v1  k1  k0  v2  v2
    targets    .   .   .   .   .   .   .   .   .   .   .   v0  v1  .   .   v2  v2  .

meta["distance"]    (B, L): scored position minus the position of the same value token in the context; -1 elsewhere.
meta["value_index"] (B, L): which token of the value is the target (0..value_len-1); -1 elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import IGNORE, Batch, Predictor, Task, predict_by_row, sample_without_replacement, uniform_chance


@dataclass(frozen=True)
class FuzzyRecall(Task):
    seq_len: int = 64
    vocab: int = 32  # key and value tokens together; half are key tokens, half value tokens
    num_kv_pairs: int = 6
    key_len: int = 2
    value_len: int = 2

    name = "fuzzy_recall"
    extrapolates = False

    PAD = 0
    SEP = 1

    def _validate(self) -> None:
        self._require_key_value_vocab(self.vocab)
        self._require(self.key_len >= 1, f"key_len={self.key_len} must be >= 1")
        self._require(self.value_len >= 1, f"value_len={self.value_len} must be >= 1")
        self._require(self.num_kv_pairs >= 1, f"num_kv_pairs={self.num_kv_pairs} must be >= 1")
        distinct = (self.vocab // 2) ** self.key_len
        self._require(
            self.num_kv_pairs <= distinct,
            f"num_kv_pairs={self.num_kv_pairs} must be <= (vocab//2)**key_len={distinct} (keys are distinct)",
        )
        needed = 2 * self.num_kv_pairs * (self.key_len + self.value_len) + 1
        self._require(
            needed <= self.seq_len,
            f"2*num_kv_pairs*(key_len+value_len)+1={needed} must be <= seq_len={self.seq_len}",
        )

    @property
    def keys(self) -> range:
        return range(2, 2 + self.vocab // 2)

    @property
    def values(self) -> range:
        return range(2 + self.vocab // 2, 2 + self.vocab)

    @property
    def vocab_size(self) -> int:
        return 2 + self.vocab

    def token_names(self) -> list[str]:
        return ["_", "|"] + [f"k{i}" for i in range(len(self.keys))] + [f"v{i}" for i in range(len(self.values))]

    def _distinct_keys(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(B, K, key_len): keys drawn one by one, each redrawn in the rows where it repeats an earlier one.

        That is sampling without replacement from all key_len-tuples, without enumerating them (there
        can be (vocab/2)^key_len). A loop over the K pairs, not over examples.
        """
        device, K, width = generator.device, self.num_kv_pairs, self.key_len
        keys = torch.empty(n, K, width, dtype=torch.int64, device=device)
        for j in range(K):
            repeats = torch.ones(n, dtype=torch.bool, device=device)
            while repeats.any():
                fresh = torch.randint(self.keys.start, self.keys.stop, (n, width), generator=generator, device=device)
                keys[:, j] = torch.where(repeats[:, None], fresh, keys[:, j])
                repeats = (keys[:, :j] == keys[:, j : j + 1]).all(dim=2).any(dim=1)
        return keys

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        self._check_n(n)
        device, K, L = generator.device, self.num_kv_pairs, self.seq_len
        kl, vl = self.key_len, self.value_len
        block = kl + vl
        pad = L - 2 * K * block - 1

        keys = self._distinct_keys(n, generator)
        values = torch.randint(self.values.start, self.values.stop, (n, K, vl), generator=generator, device=device)
        blocks = torch.cat([keys, values], dim=2)  # (B, K, key_len + value_len)
        order = sample_without_replacement(n, K, K, generator)  # (B, K): query j asks pair order[:, j]
        queries = blocks.gather(1, order[:, :, None].expand(n, K, block))
        inputs = torch.cat(
            [
                torch.full((n, pad), self.PAD, dtype=torch.int64, device=device),
                blocks.reshape(n, K * block),
                torch.full((n, 1), self.SEP, dtype=torch.int64, device=device),
                queries.reshape(n, K * block),
            ],
            dim=1,
        )

        # Within a query block, position kl-1+i (last key token, then value tokens) predicts value token i.
        query_targets = torch.full((n, K, block), IGNORE, dtype=torch.int64, device=device)
        query_targets[:, :, kl - 1 : kl - 1 + vl] = queries[:, :, kl:]
        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        targets[:, L - K * block :] = query_targets.reshape(n, K * block)

        i = torch.arange(vl, device=device)
        query_start = L - K * block + block * torch.arange(K, device=device)  # (K,)
        scored_pos = query_start[:, None] + kl - 1 + i  # (K, value_len)
        context_pos = pad + block * order[:, :, None] + kl + i  # (B, K, value_len)
        distance = torch.full((n, L), -1, dtype=torch.int64, device=device)
        distance[:, scored_pos.reshape(-1)] = (scored_pos - context_pos).reshape(n, K * vl)
        value_index = torch.full((n, L), -1, dtype=torch.int64, device=device)
        value_index[:, scored_pos.reshape(-1)] = i.repeat(K)
        return Batch(inputs, targets, {"distance": distance, "value_index": value_index})

    def chance(self) -> float:
        return uniform_chance(self.metric, len(self.values), self.num_kv_pairs * self.value_len)

    def _parse(self, x: list[int]) -> tuple[list[tuple[tuple[int, ...], list[int]]], int]:
        """The context's (key, value) pairs in order, and the position of the separator."""
        kl, block = self.key_len, self.key_len + self.value_len
        sep = x.index(self.SEP)
        context = [tok for tok in x[:sep] if tok != self.PAD]
        pairs = [(tuple(context[b : b + kl]), context[b + kl : b + block]) for b in range(0, len(context), block)]
        return pairs, sep

    def _query(self, t: int, sep: int) -> tuple[int, int]:
        """For a scored position t: the start of its query block and which value token it predicts."""
        block = self.key_len + self.value_len
        start = sep + 1 + block * ((t - sep - 1) // block)
        return start, t - (start + self.key_len - 1)

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        def rule(x: list[int], positions: list[int]) -> list[int]:
            pairs, sep = self._parse(x)
            binding = dict(pairs)
            out = []
            for t in positions:  # the last key token predicts value[0], value token i predicts value[i+1]
                start, i = self._query(t, sep)
                out.append(binding[tuple(x[start : start + self.key_len])][i])
            return out

        return predict_by_row(inputs, scored, rule)

    def shortcuts(self) -> dict[str, Predictor]:
        kl, block = self.key_len, self.key_len + self.value_len

        def unqueried_pair(x: list[int], positions: list[int]) -> list[int]:
            # Ignore the key; among the pairs whose value agrees with the value tokens read so far,
            # prefer those not queried yet (earlier query blocks show which were), first in context order.
            pairs, sep = self._parse(x)
            out = []
            for t in positions:
                start, i = self._query(t, sep)
                queried = {tuple(x[b : b + kl]) for b in range(sep + 1, start, block)}
                prefix = x[start + kl : start + kl + i]
                fits = [value for _, value in pairs if value[:i] == prefix]
                fresh = [value for key, value in pairs if value[:i] == prefix and key not in queried]
                out.append((fresh or fits or [pair[1] for pair in pairs])[0][i])
            return out

        def last_token_match(x: list[int], positions: list[int]) -> list[int]:
            # Match only the token just read against the context and answer what followed it there.
            sep = x.index(self.SEP)
            follows = {}
            for s in range(sep - 1, 0, -1):  # backwards, so the first occurrence wins
                follows[x[s - 1]] = x[s]
            return [follows.get(x[t], self.PAD) for t in positions]

        return {
            "unqueried_pair": lambda inputs, scored: predict_by_row(inputs, scored, unqueried_pair),
            "last_token_match": lambda inputs, scored: predict_by_row(inputs, scored, last_token_match),
        }
