"""The elementwise GateLoop engine: a diagonal linear recurrence with a hand-written backward.

For max-headed GateLoop (K = V = 1) every channel is an independent scalar recurrence
S_n = a_n S_{n-1} + b_n, b_n = k_n v_n, and there is no matmul for the chunked engine to exploit. Autograd
through a Python loop over L steps spends its time on per-step overhead and on the L saved graph nodes;
torch tree scans move O(L log L) memory. This engine does the L-step recurrence in L / C + C vectorised
steps (two levels):

1. inside every chunk of C steps, all chunks at once: the local states s_n = a_n s_{n-1} + b_n from s = 0
   and the cumulative transitions A_n = Π_{chunk start ≤ j ≤ n} a_j (products only: never divided);
2. across chunks, sequentially: the state entering chunk c, S_in(c+1) = A_C(c) S_in(c) + s_C(c);
3. everywhere at once: S_n = s_n + A_n S_in(chunk of n).

The backward is the adjoint recurrence, run by the same two-level scan in reverse time:

    λ_n = ∂S_n + conj(a_{n+1}) λ_{n+1},   ∂b_n = λ_n,   ∂a_n = conj(S_{n-1}) λ_n,   ∂S_0 = conj(a_1) λ_1

(PyTorch's gradient of a complex tensor is the conjugate Wirtinger derivative, hence the conj.) It is exact
arithmetic on the same complex numbers as the reference loop, so it has the loop's accuracy. It works for
any K, V, but it stores all L states (B, L, H, K, V), which only pays when K·V is small.
"""
from __future__ import annotations

import torch

from gateloop._inputs import check_scan_inputs


def _diagonal_scan(a: torch.Tensor, b: torch.Tensor, s0: torch.Tensor, chunk: int, reverse: bool) -> torch.Tensor:
    """All states of S_n = a_n S_{n∓1} + b_n (forward: from s0 before n = 0; reverse: from s0 after n = L-1).

    a, b (B, L, N) complex; s0 (B, N). Returns S (B, L, N). No autograd: called inside the Function.
    """
    B, L, N = b.shape
    C = min(chunk, L)
    nc = -(-L // C)
    pad = nc * C - L
    if reverse:
        # Pad at the front so that chunk boundaries stay aligned with the (reversed) start of the scan.
        a = torch.nn.functional.pad(a, (0, 0, pad, 0), value=1.0)
        b = torch.nn.functional.pad(b, (0, 0, pad, 0))
    else:
        a = torch.nn.functional.pad(a, (0, 0, 0, pad), value=1.0)
        b = torch.nn.functional.pad(b, (0, 0, 0, pad))
    a = a.reshape(B, nc, C, N)
    b = b.reshape(B, nc, C, N)
    steps = range(C - 1, -1, -1) if reverse else range(C)
    first, *rest = steps
    S = torch.empty_like(b)
    A = torch.empty_like(a)
    S[:, :, first] = b[:, :, first]
    A[:, :, first] = a[:, :, first]
    prev = first
    for t in rest:
        torch.addcmul(b[:, :, t], a[:, :, t], S[:, :, prev], out=S[:, :, t])
        torch.mul(a[:, :, t], A[:, :, prev], out=A[:, :, t])
        prev = t
    # The state entering each chunk, sequential over the L / C chunks.
    S_in = torch.empty(B, nc, N, dtype=b.dtype, device=b.device)
    state = s0
    for c in (range(nc - 1, -1, -1) if reverse else range(nc)):
        S_in[:, c] = state
        state = torch.addcmul(S[:, c, prev], A[:, c, prev], state)
    S.addcmul_(A, S_in.unsqueeze(2))
    S = S.reshape(B, nc * C, N)
    return S[:, pad:] if reverse else S[:, :L]


class _DiagonalRecurrence(torch.autograd.Function):
    """S_n = a_n ⊙ S_{n-1} + b_n for n = 0..L-1 from S_{-1} = s0; returns all states (B, L, N)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, s0: torch.Tensor, chunk: int) -> torch.Tensor:
        S = _diagonal_scan(a, b, s0, chunk, reverse=False)
        ctx.save_for_backward(a, s0, S)
        ctx.chunk = chunk
        return S

    @staticmethod
    def backward(ctx, grad_S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        a, s0, S = ctx.saved_tensors
        # λ_n = ∂S_n + conj(a_{n+1}) λ_{n+1}: the transition of step n+1 acts on λ_{n+1}.
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], 1).conj()
        lam = _diagonal_scan(a_next, grad_S, torch.zeros_like(s0), ctx.chunk, reverse=True)
        S_prev = torch.cat([s0.unsqueeze(1), S[:, :-1]], 1)
        grad_a = S_prev.conj() * lam
        grad_s0 = a[:, 0].conj() * lam[:, 0]
        return grad_a, lam, grad_s0, None


def gateloop_scan_elementwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GateLoop as B·H·K·V scalar recurrences; same signature and results as `gateloop_scan_ref`.

    q, k (B, L, H, K) real; v (B, L, H, V) real; a (B, L, H, K) complex; initial_state (B, H, K, V) or None.
    chunk_size is the length of the within-chunk loop (about sqrt(L) minimises the L/C + C Python steps).
    """
    state = check_scan_inputs(q, k, v, a, initial_state)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
    B, L, H, K = q.shape
    V = v.shape[-1]
    out_dtype, real = q.dtype, a.real.dtype
    q, k, v = q.to(real), k.to(real), v.to(real)
    b = (k.unsqueeze(-1) * v.unsqueeze(-2)).to(a.dtype)  # (B, L, H, K, V)
    a_full = a.unsqueeze(-1).expand(B, L, H, K, V)
    S = _DiagonalRecurrence.apply(
        a_full.reshape(B, L, H * K * V), b.reshape(B, L, H * K * V), state.reshape(B, H * K * V), chunk_size
    ).reshape(B, L, H, K, V)
    y = (q.unsqueeze(-1) * S.real).sum(-2)  # (B, L, H, V): Re(q · S), q real
    return y.to(out_dtype), S[:, -1]
