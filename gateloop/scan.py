"""GateLoop recurrence engines: one signature, several computation modes, the same numbers.

    S_n = diag(a_n) · S_{n-1} + k_nᵀ v_n,     y_n = Re(q_n · S_n)

Shapes: q, k (B, L, H, K) real; v (B, L, H, V) real; a (B, L, H, K) complex with |a| <= 1;
state (B, H, K, V) complex; y (B, L, H, V) real.

`gateloop_scan_ref` is the plain loop over time: the spec every other mode is tested against.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from gateloop._inputs import check_scan_inputs
from gateloop.chunked import gateloop_scan_chunked


def gateloop_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One time step, for decoding: q, k (B, H, K); v (B, H, V); a (B, H, K); state (B, H, K, V)."""
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)  # (B, H, K, V), real
    state = a.unsqueeze(-1) * state + kv.to(state.dtype)
    # q is real, so Re(q · S) = q · Re(S); the state stays complex through the recurrence.
    y = torch.einsum("bhk,bhkv->bhv", q, state.real.to(q.dtype))
    return y, state


def gateloop_scan_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence written down as a loop over time. O(L) sequential steps."""
    state = check_scan_inputs(q, k, v, a, initial_state)
    ys = []
    for n in range(q.shape[1]):
        y, state = gateloop_step(q[:, n], k[:, n], v[:, n], a[:, n], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


MODES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "recurrent": gateloop_scan_ref,
    "chunked": gateloop_scan_chunked,
}


def gateloop_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    mode: str = "chunked",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the GateLoop recurrence with the chosen computation mode; returns (y, final_state)."""
    if mode not in MODES:
        raise ValueError(f"unknown gateloop_scan mode {mode!r}; valid modes: {sorted(MODES)}")
    if mode == "recurrent":
        return gateloop_scan_ref(q, k, v, a, initial_state)
    return MODES[mode](q, k, v, a, initial_state, chunk_size=chunk_size)
