"""Memory horizon: writes with rebinding and resets; a query returns the latest binding since the last reset.

The sequence is a stream of events:
- write `k v`: bind key k to value v, replacing any earlier binding;
- query `? k`: the target at k's position is k's latest value written since the last reset, or the
  dedicated "none" token if k has not been written since then;
- reset `R`: forget every binding.
Keys and values come from disjoint halves of the vocabulary; "none" only ever occurs as a target.
Only query positions are scored.

Forgetting decides the answer. Every row asks num_long + num_erased distinct keys, each of one kind:
- *long* (num_long): written after the latest reset, more than L/2 tokens before the query, not since;
- *erased early* (floor(num_erased/2)): written just before the reset R* that precedes the long
  writes, queried with them, so its gap is longer than theirs;
- *erased late* (ceil(num_erased/2)): written just before a reset that follows the long queries and
  queried just after it, a short gap.
The answer is "none" for both erased kinds. A model that never forgets ("ignore resets") fails every
erased query; one with a fixed horizon W <= L/2 fails every long query, even if it handles resets
perfectly; a fixed decay that ignores resets fails the long queries (W too short) or the late-erased
ones (W too long). The share of "none" answers is num_erased / (num_long + num_erased) in every row,
at every length; only the gaps scale with L, so at 2L and 4L the task poses the same problem over a
longer horizon.

Layout at length L (a multiple of 4), in two-token event slots plus the two resets:
- the first region (one slot per long and early-erased write, plus the L/4 - 2(num_long + num_erased)
  spare slots): filler writes of any key (a queried key written there is a stale binding), the
  early-erased writes, R*, the long writes, filler writes of unqueried keys; the position of R* is
  uniform over what the region allows;
- the middle, L/4 - 1 filler writes of unqueried keys (with rebinding);
- query block 1: the long and early-erased queries, in random order;
- the tail: the late-erased writes, the second reset, their queries.
The probes sit right next to the reset that decides them, so that where a reset falls says as little
as it can about which side of it a write is on. Values are uniform, with replacement.

Metric: sequence accuracy (every query of a row right). Token accuracy cannot separate solving from
not solving here: "always none" is right on every erased query and "ignore resets" on every long one,
so one of them scores >= 0.5 (at the headline size the best listed rules score 0.50 on token
accuracy). On sequence accuracy every listed shortcut scores 0 (each fails one kind, and every row
has each kind); chance is (1/(values + 1))^(num_long + num_erased).
The one listed rule that stays above chance + 0.10 reads absolute positions instead of resets
(`reset_position`: a write before token x was erased; every query after block 1 is "none"): with x
fitted on a reference sample it reaches sequence accuracy 0.20 at the headline size (L=64) and 0.08
at L=128, because R* can only move within the first region. So at L=64 the floor a model must beat
is 0.20, not chance; `testbed tasks audit` shows it, and every table carries it.

Sizes: the headline is L=64 (vocab 16, 2 long + 2 erased). At L=32 with four queries the first
region holds only the queried writes and R*, whose position the layout then fixes; fewer queries
would let a rule right on one kind be right on whole rows.

Worked example (vocab=8: k0..k3 = ids 3..6, v0..v3 = ids 7..10; seq_len=28, num_long=1, num_erased=2;
`testbed tasks show memory_horizon seq_len=28 vocab=8 num_long=1 num_erased=2 --seed 0`):

    position  0  1  2  3  4 5  6  7  8  9  10 11 12 13 14 15 16 17 18 19 20 21 22   23 24 25 26 27
    inputs    k1 v2 k3 v0 R k2 v1 k1 v1 k1 v1 k1 v1 k1 v0 k1 v1 k1 v0 ?  k2 ?  k3   k0 v3 R  ?  k0
    targets   .  .  .  .  . .  .  .  .  .  .  .  .  .  .  .  .  .  .  .  v1 .  none .  .  .  .  none

k3 is erased early (written at 2, reset at 4); k2 is long (written at 5, after the reset, 15 > L/2
tokens before its query at 20); k0 is erased late (written at 23, reset at 25, queried at 27).

meta["distance"] (B, L): at a query, its position minus that of the value it returns; -1 where the
                         answer is "none" and at unscored positions.
meta["is_none"]  (B, L): at a query, 1 if the answer is "none" else 0; -1 at unscored positions.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from tasks.base import IGNORE, Batch, Predictor, Task



@dataclass(frozen=True)
class MemoryHorizon(Task):
    seq_len: int = 64
    vocab: int = 16  # key and value tokens, half each
    num_long: int = 2  # queries whose answer was written more than L/2 tokens earlier
    num_erased: int = 2  # queries whose key's writes a reset erased (answer "none")

    name = "memory_horizon"
    extrapolates = True
    metric: ClassVar[str] = "sequence_accuracy"

    QUERY_TOKEN = 0
    RESET_TOKEN = 1
    NONE = 2

    def _validate(self) -> None:
        L, Q = self.seq_len, self.num_long + self.num_erased
        self._require_key_value_vocab(self.vocab)
        self._require(self.num_long >= 1, f"num_long={self.num_long} must be >= 1")
        self._require(
            self.num_erased >= 2,
            f"num_erased={self.num_erased} must be >= 2 (one erased early, one late; with a single erased "
            "key no query of block 1 is erased, and answering by position alone solves the task)",
        )
        self._require(
            Q <= self.vocab // 2 - 1,
            f"num_long + num_erased = {Q} must be <= vocab//2 - 1 = {self.vocab // 2 - 1} "
            "(queried keys are distinct, and filler needs an unqueried key)",
        )
        self._require(L % 4 == 0, f"seq_len={L} must be a multiple of 4 (the layout is cut at L/4 and L/2)")
        self._require(
            L >= 8 * Q + 4,
            f"seq_len={L} must be >= 8*(num_long + num_erased) + 4 = {8 * Q + 4} (the queries' writes must "
            "fit more than L/2 tokens before them, with a spare slot so that the reset's position varies)",
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

    @property
    def _kinds(self) -> tuple[int, int, int]:
        """(long, erased early, erased late) queries per row. A lone erased query is a late one: an
        early one alone would leave a reset-blind window between its gap and the long ones' exact."""
        return self.num_long, self.num_erased // 2, (self.num_erased + 1) // 2

    def _regions(self) -> tuple[int, int, int, int]:
        """Slots (two-token events) in the first region, the middle, query block 1 and the tail."""
        n_long, early, late = self._kinds
        block = n_long + early
        spare = self.seq_len // 4 - 2 * (block + late)  # >= 1, checked in _validate
        return block + spare, self.seq_len // 4 - 1, block, 2 * late

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        self._check_n(n)
        device, L, K = generator.device, self.seq_len, self.vocab // 2
        n_long, early, late = self._kinds
        first, middle, block, tail = self._regions()
        Q = block + late

        def uniform(*shape: int) -> Tensor:
            return torch.rand(shape, generator=generator, device=device)

        def randint(low: int, high: int, *shape: int) -> Tensor:
            return torch.randint(low, high, shape, generator=generator, device=device)

        # A random order of the keys per row: the long keys, the early-erased, the late-erased, then
        # the unqueried ones, which alone may be written where a write would change an answer.
        key_order = uniform(n, K).argsort(dim=1)  # (B, K)

        def unqueried(*shape: int) -> Tensor:
            return key_order.gather(1, randint(Q, K, *shape))

        # First region: R* after s of its slots; the early-erased writes before it, the long after it.
        s = randint(early, first - n_long + 1, n, 1)
        first_probe, first_after = _place(n, first, s, early, n_long, uniform)
        # Long write i writes key_order[:, i], early-erased write i key_order[:, n_long + i].
        key_index = torch.where(first_probe >= early, first_probe - early, n_long + first_probe)
        probe_key = key_order.gather(1, key_index.clamp(min=0))
        filler_key = torch.where(first_after, unqueried(n, first), randint(0, K, n, first))
        first_key = torch.where(first_probe >= 0, probe_key, filler_key)
        # Query block 1 asks the long and early-erased keys (key_order[:, :block]) in random order.
        asked = uniform(n, block).argsort(dim=1)  # (B, block); asked < n_long: a long query
        # Tail: the late-erased writes, R_late, then their queries, each side in random order.
        late_keys = key_order[:, block:Q]
        tail_key = torch.cat([late_keys.gather(1, uniform(n, late).argsort(dim=1)),
                              late_keys.gather(1, uniform(n, late).argsort(dim=1))], dim=1)
        # Event slots in time order: first region, middle, block 1, tail.
        slot_key = torch.cat([first_key, unqueried(n, middle), key_order.gather(1, asked), tail_key], dim=1)
        kinds = [(first + middle, False), (block, True), (late, False), (late, True)]
        is_query = torch.cat([torch.full((n, size), q, dtype=torch.bool, device=device) for size, q in kinds], dim=1)
        value = randint(self.values.start, self.values.stop, n, first + middle + block + tail)
        slot = torch.arange(first + middle + block + tail, device=device)
        late_reset = first + middle + block + late  # the slot that R_late precedes
        pos = 2 * slot + (slot >= s).long() + (slot >= late_reset).long()  # (B, slots): first token

        # A long query's answer is the value of its key's (only) write after R*.
        is_long_write = first_probe >= early
        long_index = torch.where(is_long_write, first_probe - early, n_long)  # spare column n_long
        long_value = value.new_zeros(n, n_long + 1).scatter_(1, long_index, value[:, :first])[:, :n_long]
        long_pos = value.new_zeros(n, n_long + 1).scatter_(1, long_index, pos[:, :first] + 1)[:, :n_long]
        is_long = asked < n_long
        asked_long = asked.clamp(max=n_long - 1)
        block_pos = pos[:, first + middle : first + middle + block] + 1  # the queried key's position
        block_answer = torch.where(is_long, long_value.gather(1, asked_long), self.NONE)
        block_distance = torch.where(is_long, block_pos - long_pos.gather(1, asked_long), -1)

        inputs = torch.empty(n, L, dtype=torch.int64, device=device)
        inputs.scatter_(1, pos, torch.where(is_query, self.QUERY_TOKEN, self.keys.start + slot_key))
        inputs.scatter_(1, pos + 1, torch.where(is_query, self.keys.start + slot_key, value))
        inputs.scatter_(1, 2 * s, self.RESET_TOKEN)
        inputs[:, 2 * late_reset + 1] = self.RESET_TOKEN

        targets = torch.full((n, L), IGNORE, dtype=torch.int64, device=device)
        distance = torch.full((n, L), -1, dtype=torch.int64, device=device)
        is_none = torch.full((n, L), -1, dtype=torch.int64, device=device)
        targets.scatter_(1, block_pos, block_answer)
        distance.scatter_(1, block_pos, block_distance)
        is_none.scatter_(1, block_pos, (~is_long).long())
        late_query = pos[:, late_reset:] + 1  # (B, late)
        targets.scatter_(1, late_query, self.NONE)
        is_none.scatter_(1, late_query, 1)
        return Batch(inputs, targets, {"distance": distance, "is_none": is_none})

    # ------------------------------------------------------------------ oracle and shortcuts

    def chance(self) -> float:
        """Sequence accuracy of guessing uniformly among the values and "none" at each of the Q queries."""
        return (1 / (len(self.values) + 1)) ** (self.num_long + self.num_erased)

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        """The definition run event by event on each row: answers at every query, IGNORE elsewhere."""
        out = torch.full_like(inputs, IGNORE)
        for b, row in enumerate(inputs.tolist()):
            memory: dict[int, int] = {}
            t = 0
            while t < len(row):
                if row[t] == self.RESET_TOKEN:
                    memory.clear()
                    t += 1
                elif row[t] == self.QUERY_TOKEN:
                    out[b, t + 1] = memory.get(row[t + 1], self.NONE)
                    t += 2
                else:  # a write `k v`
                    memory[row[t]] = row[t + 1]
                    t += 2
        return out

    def shortcuts(self) -> dict[str, Predictor]:
        """Rules that do not solve the task (see the module docstring for why each fails):

        always_none                 "none" at every query;
        ignore_resets               the key's latest write, resets ignored (no forgetting);
        window_W                    the key's latest write among the last W tokens read, with no reset
                                    after it, else "none" (perfect resets, fixed horizon), W = 4, 8, 16, L/2
                                    (those <= L/2);
        ignore_resets_window_W      the key's latest write among the last W tokens, resets ignored
                                    (a fixed decay), W = L/4, L/2, 3L/4;
        latest_value                the most recent value token read, whatever its key;
        reset_position              reads absolute positions instead of resets: "none" for every query
                                    after query block 1 and for a key whose latest write (resets
                                    ignored) starts before token x, else that write's value; x is the
                                    best threshold on a fixed reference sample (like `majority`, fitted
                                    once per task, never on the evaluated batch).
        """
        L = self.seq_len
        rules: dict[str, Predictor] = {
            "always_none": lambda inputs, scored: torch.full_like(inputs, self.NONE),
            "ignore_resets": lambda inputs, scored: self._recall(inputs, window=None, resets=False),
            "latest_value": lambda inputs, scored: self._latest_value(inputs),
            "reset_position": lambda inputs, scored: self._reset_position(inputs, _position_threshold(self)),
        }
        for W in sorted(W for W in {4, 8, 16, L // 2} if W <= L // 2):  # a window past L/2 starts to solve it
            rules[f"window_{W}"] = lambda inputs, scored, W=W: self._recall(inputs, window=W, resets=True)
        for W in sorted({L // 4, L // 2, 3 * L // 4}):
            rules[f"ignore_resets_window_{W}"] = (
                lambda inputs, scored, W=W: self._recall(inputs, window=W, resets=False)
            )
        return rules

    def _recall(self, inputs: Tensor, window: int | None, resets: bool, positions: bool = False) -> Tensor:
        """At each query `? k` (at k's position t): the value of k's latest write whose key token is
        among the last `window` tokens (t - window < p; None: any), with no reset after it if `resets`;
        else "none". Elsewhere "none". With `positions`, that write's key-token position instead of its
        value, and -1 instead of "none". One step per position, vectorised over rows."""
        B, L = inputs.shape
        K = len(self.keys)
        rows = torch.arange(B, device=inputs.device)
        written_at = inputs.new_full((B, K), -1)  # per key: position of its latest write's key token
        written = inputs.new_full((B, K), self.NONE)  # per key: that write's value
        last_reset = inputs.new_full((B,), -1)
        out = torch.full_like(inputs, self.NONE)
        for t in range(1, L):
            x, prev = inputs[:, t], inputs[:, t - 1]
            key_index = (torch.where(prev == self.QUERY_TOKEN, x, prev) - self.keys.start).clamp(0, K - 1)
            is_value = (x >= self.values.start) & (x < self.values.stop)  # a write's value: its key is prev
            written_at[rows[is_value], key_index[is_value]] = t - 1
            written[rows[is_value], key_index[is_value]] = x[is_value]
            last_reset = torch.where(prev == self.RESET_TOKEN, t - 1, last_reset)
            at, value = written_at[rows, key_index], written[rows, key_index]
            keep = at >= 0
            if resets:
                keep &= at > last_reset
            if window is not None:
                keep &= at > t - window
            if positions:
                out[:, t] = torch.where((prev == self.QUERY_TOKEN) & keep, at, -1)
            else:
                out[:, t] = torch.where((prev == self.QUERY_TOKEN) & keep, value, self.NONE)
        return out

    def _tail(self, L: int, device: torch.device) -> Tensor:
        """(L,) bool: the positions after query block 1, where `reset_position` always says "none"."""
        first, middle, block, _ = self._regions()
        return torch.arange(L, device=device) > 2 * (first + middle + block)

    def _reset_position(self, inputs: Tensor, threshold: int, latest: Tensor | None = None) -> Tensor:
        """The `reset_position` rule at threshold x (see `shortcuts`); `latest` (B, L), the queried key's
        latest write position (resets ignored, -1 elsewhere), is computed if not given."""
        if latest is None:
            latest = self._recall(inputs, window=None, resets=False, positions=True)
        tail = self._tail(inputs.shape[1], inputs.device)
        value = latest.clamp(min=0) + 1
        pred = inputs.gather(1, value)
        return torch.where((latest < threshold) | tail, self.NONE, pred)

    def _latest_value(self, inputs: Tensor) -> Tensor:
        """At each position, the most recent value token at or before it ("none" before the first)."""
        is_value = (inputs >= self.values.start) & (inputs < self.values.stop)
        t = torch.arange(inputs.shape[1], device=inputs.device)
        latest = torch.where(is_value, t, -1).cummax(dim=1).values
        return torch.where(latest >= 0, inputs.gather(1, latest.clamp(min=0)), self.NONE)


def threshold_accuracies_ref(task: MemoryHorizon, batch: Batch, latest: Tensor) -> Tensor:
    """Sequence accuracy of the `reset_position` rule at every threshold x = 0..L/2 (a (L/2+1,) tensor):
    the rule applied at each x in turn. The twin of `threshold_accuracies`."""
    def score(x: int) -> float:
        pred = task._reset_position(batch.inputs, x, latest)
        return (~((pred != batch.targets) & batch.scored).any(dim=1)).float().mean().item()

    return torch.tensor([score(x) for x in range(task.seq_len // 2 + 1)])


def threshold_accuracies(task: MemoryHorizon, batch: Batch, latest: Tensor) -> Tensor:
    """`threshold_accuracies_ref` for all thresholds at once. At a queried position with a latest write
    (latest >= 0, before the tail) the rule predicts that write's value for x <= latest and "none" for
    x > latest; elsewhere it predicts "none" whatever x. So a row is right exactly for lo < x <= hi, where
    lo is the largest `latest` among its positions the value gets wrong and hi the smallest among those
    "none" gets wrong, provided every x-independent position is right."""
    L = batch.inputs.shape[1]
    tail = task._tail(L, latest.device)
    value = batch.inputs.gather(1, latest.clamp(min=0) + 1)
    wrong_value = (value != batch.targets) & batch.scored
    wrong_none = (batch.targets != task.NONE) & batch.scored
    varies = (latest >= 0) & ~tail  # (B, L): the prediction there depends on x
    fixed_ok = ~(wrong_none & ~varies).any(dim=1)
    lo = torch.where(varies & wrong_value, latest, -1).amax(dim=1)  # right only for x > lo
    hi = torch.where(varies & wrong_none, latest, L).amin(dim=1)  # right only for x <= hi
    x = torch.arange(task.seq_len // 2 + 1, device=latest.device)[:, None]  # (X, 1)
    return (fixed_ok & (lo < x) & (x <= hi)).float().mean(dim=1)


@functools.cache
def _position_threshold(task: MemoryHorizon) -> int:
    """The threshold x of the `reset_position` rule with the best sequence accuracy on a fixed
    reference sample (1024 rows, its own seed): the strongest version of that rule (the smallest such x)."""
    batch = task.sample(1024, torch.Generator().manual_seed(0))
    latest = task._recall(batch.inputs, window=None, resets=False, positions=True)
    return int(threshold_accuracies(task, batch, latest).argmax())  # argmax: the first of equal maxima


def _place(
    n: int, size: int, split: Tensor, before: int, after: int, uniform: Callable[..., Tensor]
) -> tuple[Tensor, Tensor]:
    """Probes at random distinct slots of a region of `size` slots cut at `split` (B, 1) (split >= before).

    Returns (B, size) int64: probes 0..before-1 at slots < split, probes before..before+after-1 at
    slots >= split, -1 at the other (filler) slots; and the (B, size) mask slot >= split.
    """
    j = torch.arange(size, device=split.device).expand(n, size)
    is_after = j >= split
    # The probes sit next to the cut (the writes a reset erases right before it, the ones it spares
    # right after), each side in random order: the cut's position then says the least about which
    # side a probe is on.
    before_rank = uniform(n, before).argsort(dim=1)
    after_rank = before + uniform(n, after).argsort(dim=1)
    rank = torch.full_like(j, -1)
    rank.scatter_(1, (split - before + torch.arange(before, device=split.device)).expand(n, before), before_rank)
    rank.scatter_(1, (split + torch.arange(after, device=split.device)).expand(n, after), after_rank)
    return rank, is_after
