"""Memory horizon: writes with rebinding and resets; a query returns the latest binding since the last reset.

The sequence is a stream of events, each drawn independently:
- write `k v` (probability 1 − p_query − p_reset): bind key k to value v, replacing any earlier binding;
- query `? k` (p_query): the target at k's position is k's latest value written since the last reset,
  or the dedicated "none" token if k has not been written since then (or ever);
- reset `R` (p_reset): forget every binding.
Keys and values come from disjoint halves of the vocabulary and are uniform; "none" only ever occurs
as a target. A two-token event that would not fit at the last position is replaced by a reset. Only
query positions are scored.

How long something must be remembered is set by the data (the reset and rebinding rates), not by the
length: a longer sequence keeps the same event rates and horizon distribution, which is why the task
is meaningful at longer lengths. A fixed decay either forgets bindings it needs or keeps stale ones
across resets; a data-controlled forget gate can do both right.

Worked example (vocab=4: k0, k1 = ids 3, 4; v0, v1 = ids 5, 6; seq_len=14):

    position   0   1   2   3     4   5   6   7   8   9   10  11  12    13
    inputs     k0  v1  ?   k1    ?   k0  k0  v0  ?   k0  R   ?   k0    R
    targets    .   .   .   none  .   v1  .   .   .   v0  .   .   none  .

meta["distance"] (B, L): at a query, its position minus that of the value it returns; -1 where the
                         answer is "none" and at unscored positions.
meta["is_none"]  (B, L): at a query, 1 if the answer is "none" else 0; -1 at unscored positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tasks.base import IGNORE, Batch, Task

WRITE, QUERY, RESET = 0, 1, 2  # event kinds


@dataclass(frozen=True)
class MemoryHorizon(Task):
    seq_len: int = 64
    vocab: int = 8  # key and value tokens, half each; 4 keys make about a third of the answers "none"
    p_query: float = 0.3  # probability that an event is a query
    p_reset: float = 0.05  # probability that an event is a reset

    name = "memory_horizon"
    extrapolates = True

    QUERY_TOKEN = 0
    RESET_TOKEN = 1
    NONE = 2

    def _validate(self) -> None:
        self._require_key_value_vocab(self.vocab)
        self._require(self.seq_len >= 2, f"seq_len={self.seq_len} must be >= 2 (a query takes two tokens)")
        self._require(0 < self.p_query < 1, f"p_query={self.p_query} must be in (0, 1)")
        self._require(0 <= self.p_reset < 1, f"p_reset={self.p_reset} must be in [0, 1)")
        self._require(
            self.p_query + self.p_reset < 1,
            f"p_query + p_reset = {self.p_query + self.p_reset} must be < 1 (writes need the rest)",
        )

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
        keys, values = [f"k{i}" for i in range(len(self.keys))], [f"v{i}" for i in range(len(self.values))]
        return ["?", "R", "none", *keys, *values]

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        self._check_n(n)
        device, L = generator.device, self.seq_len
        num_keys = len(self.keys)

        # Event kinds for L events (each takes at least one token, so L always fill the sequence), then
        # keep only as many events as the fullest row uses: the work below scales with that, about L/2.
        u = torch.rand(n, L, generator=generator, device=device)
        kind = (u < self.p_query + self.p_reset).long() + (u < self.p_reset).long()  # WRITE 0, QUERY 1, RESET 2
        length = 2 - (kind == RESET).long()
        start = length.cumsum(dim=1) - length  # (B, E) position of each event's first token
        E = int((start < L).sum(dim=1).max())
        kind, start = kind[:, :E], start[:, :E]
        kind = torch.where((start == L - 1) & (kind != RESET), RESET, kind)  # a 2-token event cannot start last
        key = torch.randint(0, num_keys, (n, E), generator=generator, device=device)
        value = torch.randint(self.values.start, self.values.stop, (n, E), generator=generator, device=device)

        # For each event, the index of the latest write of its key in the same epoch (resets open a new
        # epoch), or -1. Events are grouped by (epoch, key) in time order by one sort; a running max of
        # write indices, with each group offset above every earlier one, then restarts at each group.
        event = torch.arange(E, device=device)
        group = (kind == RESET).long().cumsum(dim=1) * num_keys + key
        order = (group * E + event).argsort(dim=1)
        offset = group.gather(1, order) * (E + 1)
        writes = torch.where(kind == WRITE, event, -1).gather(1, order)
        running = (writes + 1 + offset).cummax(dim=1).values - offset - 1
        last_write = torch.empty_like(running).scatter_(1, order, running)  # (B, E)
        bound = last_write >= 0
        source = last_write.clamp(min=0)
        answer = torch.where(bound, value.gather(1, source), self.NONE)
        distance = torch.where(bound, start - start.gather(1, source), -1)

        marker = torch.where(kind == QUERY, self.QUERY_TOKEN, self.RESET_TOKEN)
        first = torch.where(kind == WRITE, self.keys.start + key, marker)
        second = torch.where(kind == WRITE, value, self.keys.start + key)
        in_seq = start < L
        has_second = in_seq & (kind != RESET)
        is_query = has_second & (kind == QUERY)

        # Events that start past the end write into a spare column L, dropped at the end.
        def column(at: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            return torch.where(keep, at, L)

        def filled(value: int) -> torch.Tensor:
            return torch.full((n, L + 1), value, dtype=torch.int64, device=device)

        inputs = filled(0).scatter_(1, column(start, in_seq), first)
        inputs.scatter_(1, column(start + 1, has_second), second)
        targets = filled(IGNORE).scatter_(1, column(start + 1, is_query), answer)
        meta = {
            "distance": filled(-1).scatter_(1, column(start + 1, is_query), distance),
            "is_none": filled(-1).scatter_(1, column(start + 1, is_query), (~bound).long()),
        }
        inputs, targets = inputs[:, :L].contiguous(), targets[:, :L].contiguous()
        meta = {k: v[:, :L].contiguous() for k, v in meta.items()}
        return Batch(inputs, targets, meta)
