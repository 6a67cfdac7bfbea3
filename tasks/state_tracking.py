"""State tracking: the product of a word of group elements, scored at the word's last position.

Each row is a word g_0 g_1 … g_{ℓ−1} of uniform random elements of a group G, right-padded to the
sequence length with a PAD token; its length ℓ is uniform in [ceil(min_len_frac · L), L]. The only
scored position is ℓ − 1, whose target is the product

    P = g_0 · g_1 · … · g_{ℓ−1}    (left to right: P_t = P_{t−1} · g_t, P_{−1} = the identity).

Inputs and targets are the same symbols (ids 0..|G|−1 are the elements, id 0 the identity); PAD is id
|G| and is never a target. Right padding leaves a causal model's prediction at ℓ − 1 untouched, and
the variable length means no fixed position carries the answer.

Groups (`group`):
- "cyclic": Z_m with m = `modulus`, a · b = (a + b) mod m; m = 2 is parity. Abelian.
- "S3": the 6 permutations of {0, 1, 2}. Non-abelian but solvable (Z_3 ⋊ Z_2): a cascade of two
  diagonal (abelian) recurrences can track it.
- "A5": the 60 even permutations of {0, …, 4}, the smallest non-solvable group. Its word problem
  is NC¹-complete (Barrington), so unless TC⁰ = NC¹ no constant-depth stack of diagonal linear
  recurrences (at log precision) tracks it at every length (Merrill et al., "The Illusion of State in
  State-Space Models", 2024): the negative control for any diagonal model, GateLoop included.
Permutations are tuples p (p[i] is the image of i), numbered in lexicographic order (the identity is
0). The product a · b is "apply a, then b": (a · b)[i] = b[a[i]], so P is the permutation that applies
g_0 first. `multiplication_table(group, modulus)` builds the (|G|, |G|) table by gather.

Why the final position: scored at every position, a rule that only tracks the last W elements is
exact wherever t < W (for parity at L=32 a 16-token window scores 0.75 this way). At the last element
of a word at least ceil(min_len_frac·L) long, the part of the word outside any window W < ℓ is a
uniform group element, so such a rule is at chance; only words no longer than W are solved by it.
Shortcuts: window_W (the product of the last W elements) for W = 2, 4, 8, L/2, last_token (W = 1),
and for S3 sign_only (the product's sign, which the parity of the number of odd inputs gives, and
then the first element of that sign: 1/3 on S3, chance + 0.17; the sign is S3's abelian part, which
a solver must track too). At the headline size (parity, L=32, min_len_frac=0.5) the best listed rule
is window_16: it is exact on words of length 16 (1/17 of rows) and at chance on the rest, 0.53.

Worked example (group="cyclic", modulus=3, seq_len=8, min_len_frac=0.5; this row has ℓ = 6;
`testbed tasks show state_tracking seq_len=8 modulus=3 --seed 0`):

    position   0   1   2   3   4   5   6    7
    inputs     2   0   2   0   1   0   PAD  PAD
    targets    .   .   .   .   .   2   .    .

(2 + 0 + 2 + 0 + 1 + 0) mod 3 = 2. With group="S3" the inputs are permutation ids and the target is
the id of their product.

Training supervision (`train_targets`): "last" trains on the scored position only; "prefix" trains
on every prefix product P_0 … P_{ℓ−1} of the same rows (`sample_train`), the dense supervision the
state-tracking literature trains with (Merrill et al. 2024; Grazzi et al., "Unlocking State-Tracking in
Linear RNNs Through Negative Eigenvalues", 2025). Evaluation, the audit and every floor use `sample`,
so the score stays the last element's whatever the training targets; "prefix" changes what a model
is taught, not what it is judged on. With one target per word, parity is not learned by any of our
models in 12k steps (results/pilot/curves.md): one bit of signal per row of 16–32 inputs.

meta["length"] (B,): the word length ℓ (the scored position is ℓ − 1).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from tasks.base import IGNORE, Batch, Predictor, Task


GROUPS = ("cyclic", "S3", "A5")
TRAIN_TARGETS = ("last", "prefix")


def _is_even(p: tuple[int, ...]) -> bool:
    inversions = sum(p[i] > p[j] for i in range(len(p)) for j in range(i + 1, len(p)))
    return inversions % 2 == 0


def permutations(group: str) -> Tensor:
    """(|G|, n) int64: the group's permutations in lexicographic order (row 0 is the identity)."""
    if group == "S3":
        perms = list(itertools.permutations(range(3)))
    elif group == "A5":
        perms = [p for p in itertools.permutations(range(5)) if _is_even(p)]
    else:
        raise ValueError(f"group {group!r} is not a permutation group; permutation groups: S3, A5")
    return torch.tensor(perms, dtype=torch.int64)


@functools.lru_cache(maxsize=None)
def multiplication_table(group: str, modulus: int = 2) -> Tensor:
    """(|G|, |G|) int64: table[a, b] = a · b, "apply a, then b" (for Z_m: (a + b) mod m)."""
    if group == "cyclic":
        a = torch.arange(modulus)
        return (a[:, None] + a[None, :]) % modulus
    perms = permutations(group)  # (G, n)
    G, n = perms.shape
    # (a · b)[i] = b[a[i]]: gather b's images at the positions a sends i to.
    composed = torch.gather(perms[None, :, :].expand(G, G, n), 2, perms[:, None, :].expand(G, G, n))
    # Permutations of n < 10 points as base-n integers are sorted exactly like the lexicographic order.
    weights = n ** torch.arange(n - 1, -1, -1)
    codes = (perms * weights).sum(-1)
    table = torch.searchsorted(codes, (composed * weights).sum(-1))
    if not torch.equal(codes[table], (composed * weights).sum(-1)):
        raise AssertionError(f"{group} is not closed under composition")  # cannot happen for S3, A5
    return table


@dataclass(frozen=True)
class StateTracking(Task):
    seq_len: int = 64
    group: str = "cyclic"  # "cyclic" (Z_modulus), "S3" or "A5"
    modulus: int = 2  # m of Z_m; only used by group="cyclic"
    min_len_frac: float = 0.5  # word lengths are uniform in [ceil(min_len_frac * seq_len), seq_len]
    train_targets: str = "last"  # training supervision: "last" (as scored) or "prefix" (every P_t)

    name = "state_tracking"
    extrapolates = True
    metric: ClassVar[str] = "accuracy"
    knobs_added_later: ClassVar[dict[str, Any]] = {"train_targets": "last"}

    def _validate(self) -> None:
        self._require(self.group in GROUPS, f"group={self.group!r} must be one of {GROUPS}")
        self._require(self.modulus >= 2, f"modulus={self.modulus} must be >= 2")
        self._require(
            self.group == "cyclic" or self.modulus == 2,
            f"modulus={self.modulus} is only for group='cyclic' (leave it at 2 for group={self.group!r})",
        )
        self._require(0 < self.min_len_frac <= 1, f"min_len_frac={self.min_len_frac} must be in (0, 1]")
        # A word of one element is its own product: at length 1 copying the input solves every row.
        self._require(
            self.seq_len >= 2,
            f"seq_len={self.seq_len} must be >= 2 (a word of one element is its own product: copying the input "
            f"answers it, nothing is tracked)",
        )
        self._require(
            self.train_targets in TRAIN_TARGETS,
            f"train_targets={self.train_targets!r} must be one of {TRAIN_TARGETS}",
        )

    @property
    def order(self) -> int:
        """|G|, the number of group elements."""
        return self.modulus if self.group == "cyclic" else {"S3": 6, "A5": 60}[self.group]

    @property
    def PAD(self) -> int:
        return self.order

    @property
    def min_len(self) -> int:
        return max(1, math.ceil(self.min_len_frac * self.seq_len))

    @property
    def vocab_size(self) -> int:
        return self.order + 1

    def token_names(self) -> list[str]:
        return [str(i) for i in range(self.order)] + ["PAD"]

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        return self._sample(n, generator, every_prefix=False)

    def sample_train(self, n: int, generator: torch.Generator) -> Batch:
        """With train_targets="prefix", the rows `sample` draws, with every P_t (t < ℓ) as a target."""
        return self._sample(n, generator, every_prefix=self.train_targets == "prefix")

    def _sample(self, n: int, generator: torch.Generator, every_prefix: bool) -> Batch:
        self._check_n(n)
        device, L = generator.device, self.seq_len
        elements = torch.randint(0, self.order, (n, L), generator=generator, device=device)
        length = torch.randint(self.min_len, L + 1, (n,), generator=generator, device=device)
        product = self._prefix_products(elements)  # (B, L): P_t at every t
        in_word = torch.arange(L, device=device) < length[:, None]
        inputs = torch.where(in_word, elements, self.PAD)
        if every_prefix:
            return Batch(inputs, torch.where(in_word, product, IGNORE), {"length": length})
        last = (length - 1)[:, None]
        targets = torch.full_like(inputs, IGNORE).scatter_(1, last, product.gather(1, last))
        return Batch(inputs, targets, {"length": length})

    def _prefix_products(self, elements: Tensor) -> Tensor:
        """(B, L) -> (B, L): P_t = g_0 · … · g_t. Z_m by cumsum; permutation groups by a log-depth
        (Hillis–Steele) scan over the table: after the step with shift d, entry t holds the product of
        elements max(0, t-2d+1)..t, earlier factors on the left (the product is associative)."""
        if self.group == "cyclic":
            return elements.cumsum(dim=1) % self.modulus  # int64 cumsum cannot overflow at feasible L
        table = multiplication_table(self.group).to(elements.device)
        G = self.order
        product, d = elements, 1
        while d < elements.shape[1]:
            left, right = product[:, :-d], product[:, d:]
            product = torch.cat([product[:, :d], table.view(-1)[left * G + right]], dim=1)
            d *= 2
        return product

    # ------------------------------------------------------------------ oracle and shortcuts

    def chance(self) -> float:
        """Accuracy of guessing uniformly among the |G| elements at the one scored position."""
        return 1 / self.order

    def oracle(self, inputs: Tensor, scored: Tensor) -> Tensor:
        """The definition, one element at a time per row: the running product at every non-PAD position."""
        table = multiplication_table(self.group, self.modulus).tolist()
        out = torch.full_like(inputs, IGNORE)
        for b, row in enumerate(inputs.tolist()):
            state = 0  # the identity
            for t, g in enumerate(row):
                if g == self.PAD:
                    break
                state = table[state][g]
                out[b, t] = state
        return out

    def shortcuts(self) -> dict[str, Predictor]:
        """window_W: the product of the last W elements read (W = 1 is last_token; W <= L/2, as a
        window of L is the solver); for S3 also sign_only."""
        rules: dict[str, Predictor] = {"last_token": lambda inputs, scored: self._window(inputs, 1)}
        for W in sorted(W for W in {2, 4, 8, self.seq_len // 2} if 1 < W <= self.seq_len // 2):
            rules[f"window_{W}"] = lambda inputs, scored, W=W: self._window(inputs, W)
        if self.group == "S3":
            rules["sign_only"] = lambda inputs, scored: self._sign_only(inputs)
        return rules

    def _window_ref(self, inputs: Tensor, W: int) -> Tensor:
        """At each position t, the product of elements max(0, t-W+1)..t (PAD counts as the identity).
        One element at a time: the twin of `_window`."""
        if W < 1:
            raise ValueError(f"a window holds at least one element, got W={W}")
        elements = torch.where(inputs == self.PAD, 0, inputs)
        table = multiplication_table(self.group, self.modulus).to(inputs.device)
        out = elements.clone()
        for k in range(1, min(W, inputs.shape[1])):  # out[t] = g_{t-k} · out[t], extending the window left
            left = torch.nn.functional.pad(elements[:, :-k], (k, 0))  # identity before the start
            out = table[left, out]
        return out

    def _window(self, inputs: Tensor, W: int) -> Tensor:
        """`_window_ref` by doubling, in O(log W) table look-ups: `block[t]` is the product of the 2^j
        elements ending at t, and the window is built from the blocks of W's binary digits, the nearest
        first."""
        if W < 1:
            raise ValueError(f"a window holds at least one element, got W={W}")
        table = multiplication_table(self.group, self.modulus).to(inputs.device)

        def before(x: Tensor, k: int) -> Tensor:  # x[t - k], the identity (0) before the start
            return torch.nn.functional.pad(x[:, :-k], (k, 0)) if k < x.shape[1] else torch.zeros_like(x)

        block = torch.where(inputs == self.PAD, 0, inputs)
        out, covered, size = None, 0, 1  # out[t]: the product of the `covered` elements ending at t
        while covered < W:
            if W & size:
                out = block if out is None else table[before(block, covered), out]
                covered += size
            if covered < W:
                block, size = table[before(block, size), block], 2 * size
        return out

    def _sign_only(self, inputs: Tensor) -> Tensor:
        """S3: the sign of the product (odd inputs counted mod 2), then the first element with it."""
        odd = torch.tensor([not _is_even(tuple(p)) for p in permutations("S3").tolist()] + [False],
                           device=inputs.device)
        sign = odd[inputs].long().cumsum(dim=1) % 2
        first_odd = int(odd.nonzero()[0])
        return torch.where(sign == 1, first_odd, 0)
