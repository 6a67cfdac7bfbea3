"""Fuzzy associative recall (multi-token keys and values), after Zoology (Arora et al., 2023).

Each of K keys is a tuple of key_len tokens from the key half of the vocabulary and each value a
tuple of value_len tokens from the value half. Keys are distinct as tuples but freely share tokens,
so only the whole tuple identifies a key. The context writes the K pairs as blocks `key value`, then
a separator, then Q = num_queries query blocks `key ? ... ?` (the key, then value_len − 1 markers),
each asking a pair drawn uniformly with replacement. Reading the last token of a query's key the model
must emit the value's first token; reading its i-th marker, token i + 1. Those value_len positions per
query are scored (metric: token accuracy). Context and queries take K·(key_len + value_len) +
Q·(key_len + value_len − 1) + 1 positions; seq_len leaves the rest as padding at the start, so a longer
seq_len poses the same problem and the task does not extrapolate in any meaningful sense.

Why this layout: queries used to ask every pair once, in random order, with the value teacher-forced
after the key. Then the earlier query blocks show which pairs were asked, and guessing among the pairs
not asked yet scored 0.80 at the quick size (chance 0.125); and the value's later tokens followed from
its first by a one-token lookup. Queries with replacement reveal nothing about the next one, and
markers reveal no value: `unqueried_pair` now scores 0.46 at the quick size, which is guessing a pair
of the context (1/K, plus a wrong pair's value token matching by chance, 1/4 of the rest).

Shortcut left, stated loudly: matching only part of the key. `last_key_token` (the first pair whose
key ends with the query's last token) is right whenever no other key shares that token, which small
sizes cannot make rare: at the quick size (vocab=8: 4 key and 4 value tokens, K=4, key_len=2,
value_len=2, L=32) it scores 0.80 against chance 0.25 — far above chance + 0.10 — and at these
defaults (vocab=8, K=8, L=64) 0.61. On this task a score means something only above that floor.

Worked example (vocab=6: k0..k2 = ids 3..5, v0..v2 = ids 6..8; seq_len=15, num_kv_pairs=2,
num_queries=2, key_len=2, value_len=2; `testbed tasks show fuzzy_recall seq_len=15 vocab=6
num_kv_pairs=2 num_queries=2 --seed 0`). Both keys end in k0: only the whole tuple tells them apart.

    position   0   1   2   3   4   5   6   7   8   9   10  11  12  13  14
    inputs     k2  k0  v1  v1  k1  k0  v1  v0  |   k1  k0  ?   k2  k0  ?
    targets    .   .   .   .   .   .   .   .   .   .   v1  v0  .   v1  v1

meta["distance"]    (B, L): scored position minus the position of the same value token in the context; -1 elsewhere.
meta["value_index"] (B, L): which token of the value is the target (0..value_len-1); -1 elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.base import IGNORE, Batch, Predictor, Task, by_row, predict_by_row, uniform_chance


@dataclass(frozen=True)
class FuzzyRecall(Task):
    seq_len: int = 64
    vocab: int = 8  # key and value tokens together; half are key tokens, half value tokens
    num_kv_pairs: int = 8
    key_len: int = 2
    value_len: int = 2
    num_queries: int = 8  # query blocks, each asking a pair drawn with replacement

    name = "fuzzy_recall"
    extrapolates = False

    PAD = 0
    SEP = 1
    MARKER = 2

    def _validate(self) -> None:
        self._require_key_value_vocab(self.vocab)
        self._require(self.key_len >= 1, f"key_len={self.key_len} must be >= 1")
        self._require(self.value_len >= 1, f"value_len={self.value_len} must be >= 1")
        self._require(
            self.num_kv_pairs >= 2,
            f"num_kv_pairs={self.num_kv_pairs} must be >= 2 (with one pair every query has the same answer)",
        )
        self._require(self.num_queries >= 1, f"num_queries={self.num_queries} must be >= 1")
        distinct = (self.vocab // 2) ** self.key_len
        self._require(
            self.num_kv_pairs <= distinct,
            f"num_kv_pairs={self.num_kv_pairs} must be <= (vocab//2)**key_len={distinct} (keys are distinct)",
        )
        needed = self._context_len + self._queries_len + 1
        self._require(
            needed <= self.seq_len,
            f"num_kv_pairs*(key_len+value_len) + num_queries*(key_len+value_len-1) + 1 = {needed} "
            f"must be <= seq_len={self.seq_len}",
        )

    @property
    def _context_len(self) -> int:
        return self.num_kv_pairs * (self.key_len + self.value_len)

    @property
    def _queries_len(self) -> int:
        return self.num_queries * (self.key_len + self.value_len - 1)

    @property
    def keys(self) -> range:
        return range(3, 3 + self.vocab // 2)

    @property
    def values(self) -> range:
        return range(3 + self.vocab // 2, 3 + self.vocab)

    @property
    def vocab_size(self) -> int:
        return 3 + self.vocab

    def token_names(self) -> list[str]:
        return ["_", "|", "?"] + [f"k{i}" for i in range(len(self.keys))] + [f"v{i}" for i in range(len(self.values))]

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
        device, K, Q, L = generator.device, self.num_kv_pairs, self.num_queries, self.seq_len
        kl, vl = self.key_len, self.value_len
        qblock = kl + vl - 1
        pad = L - self._context_len - 1 - self._queries_len

        keys = self._distinct_keys(n, generator)  # (B, K, key_len)
        values = torch.randint(self.values.start, self.values.stop, (n, K, vl), generator=generator, device=device)
        asked = torch.randint(0, K, (n, Q), generator=generator, device=device)  # (B, Q): query j asks pair asked[:, j]
        query_keys = keys.gather(1, asked[:, :, None].expand(n, Q, kl))
        markers = torch.full((n, Q, vl - 1), self.MARKER, dtype=torch.int64, device=device)
        inputs = torch.cat(
            [
                torch.full((n, pad), self.PAD, dtype=torch.int64, device=device),
                torch.cat([keys, values], dim=2).reshape(n, self._context_len),
                torch.full((n, 1), self.SEP, dtype=torch.int64, device=device),
                torch.cat([query_keys, markers], dim=2).reshape(n, self._queries_len),
            ],
            dim=1,
        )

        # Within a query block, position kl-1+i (last key token, then the markers) predicts value token i.
        i = torch.arange(vl, device=device)
        query_start = L - self._queries_len + qblock * torch.arange(Q, device=device)  # (Q,)
        scored_pos = (query_start[:, None] + kl - 1 + i).reshape(-1)  # (Q·value_len,)
        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        targets[:, scored_pos] = values.gather(1, asked[:, :, None].expand(n, Q, vl)).reshape(n, Q * vl)

        context_pos = pad + (kl + vl) * asked[:, :, None] + kl + i  # (B, Q, value_len)
        distance = torch.full((n, L), -1, dtype=torch.int64, device=device)
        distance[:, scored_pos] = scored_pos - context_pos.reshape(n, Q * vl)
        value_index = torch.full((n, L), -1, dtype=torch.int64, device=device)
        value_index[:, scored_pos] = i.repeat(Q)
        return Batch(inputs, targets, {"distance": distance, "value_index": value_index})

    def chance(self) -> float:
        return uniform_chance(self.metric, len(self.values), self.num_queries * self.value_len)

    def _parse(self, x: list[int]) -> tuple[list[tuple[tuple[int, ...], list[int]]], int]:
        """The context's (key, value) pairs in order, and the position of the separator."""
        kl, block = self.key_len, self.key_len + self.value_len
        sep = x.index(self.SEP)
        context = [tok for tok in x[:sep] if tok != self.PAD]
        pairs = [(tuple(context[b : b + kl]), context[b + kl : b + block]) for b in range(0, len(context), block)]
        return pairs, sep

    def _query(self, t: int, sep: int) -> tuple[int, int]:
        """For a scored position t: the start of its query block and which value token it predicts."""
        qblock = self.key_len + self.value_len - 1
        start = sep + 1 + qblock * ((t - sep - 1) // qblock)
        return start, t - (start + self.key_len - 1)

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        def rule(x: list[int], positions: list[int]) -> list[int]:
            pairs, sep = self._parse(x)
            binding = dict(pairs)
            out = []
            for t in positions:  # the last key token predicts value[0], the i-th marker value[i]
                start, i = self._query(t, sep)
                out.append(binding[tuple(x[start : start + self.key_len])][i])
            return out

        return predict_by_row(inputs, scored, rule)

    def shortcuts(self) -> dict[str, Predictor]:
        kl, qblock = self.key_len, self.key_len + self.value_len - 1

        def unqueried_pair(x: list[int], positions: list[int]) -> list[int]:
            # Ignore the query's key: the first pair (in context order) whose key no earlier query asked.
            pairs, sep = self._parse(x)
            out = []
            for t in positions:
                start, i = self._query(t, sep)
                asked = {tuple(x[b : b + kl]) for b in range(sep + 1, start, qblock)}
                fresh = [value for key, value in pairs if key not in asked]
                out.append((fresh or [pairs[0][1]])[0][i])
            return out

        def key_token_match(j: int) -> Predictor:
            def rule(x: list[int], positions: list[int]) -> list[int]:
                # Match only the query key's j-th token: the first pair whose key has it there.
                pairs, sep = self._parse(x)
                out = []
                for t in positions:
                    start, i = self._query(t, sep)
                    token = x[start + j]
                    out.append(next((value for key, value in pairs if key[j] == token), pairs[0][1])[i])
                return out

            return by_row(rule)

        rules: dict[str, Predictor] = {
            "unqueried_pair": by_row(unqueried_pair),
        }
        if kl > 1:  # with one-token keys, matching the key's token is the solution
            rules.update(last_key_token=key_token_match(kl - 1), first_key_token=key_token_match(0))
        return rules
