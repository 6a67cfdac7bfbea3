"""State tracking: the running sum of the inputs modulo m (m = 2 is running parity), scored everywhere.

Inputs are uniform residues 0..m−1; the target at position t is (x_0 + … + x_t) mod m. Tokens and
answers are the same symbols (elements of Z_m), so they share ids 0..m−1. The state is a point of
the cyclic group Z_m: a linear recurrence can carry it only with a transition whose eigenvalues
include the m-th roots of unity (−1 for parity), i.e. negative or complex ones chosen by the input,
which is what a data-controlled complex gate provides and a positive real decay cannot. Trained at one
length, the same rule applies at every length (length extrapolation).

Worked example (modulus=3, seq_len=8):

    position   0   1   2   3   4   5   6   7
    inputs     2   1   1   0   2   2   0   1
    targets    2   0   1   1   0   2   2   0

meta["position"] (B, L): the position t, for accuracy as a function of the prefix length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tasks.base import Batch, Task


@dataclass(frozen=True)
class StateTracking(Task):
    seq_len: int = 64
    modulus: int = 2

    name = "state_tracking"
    extrapolates = True

    def _validate(self) -> None:
        self._require(self.modulus >= 2, f"modulus={self.modulus} must be >= 2")

    @property
    def vocab_size(self) -> int:
        return self.modulus

    def token_names(self) -> list[str]:
        return [str(i) for i in range(self.modulus)]

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        self._check_n(n)
        device, L = generator.device, self.seq_len
        inputs = torch.randint(0, self.modulus, (n, L), generator=generator, device=device)
        targets = inputs.cumsum(dim=1) % self.modulus  # int64 cumsum cannot overflow at any feasible length
        position = torch.arange(L, device=device).expand(n, L).contiguous()
        return Batch(inputs, targets, {"position": position})
