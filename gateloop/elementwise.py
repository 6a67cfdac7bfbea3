"""The elementwise GateLoop engine: a diagonal linear recurrence with a hand-written backward.

For max-headed GateLoop (K = V = 1) every channel is an independent scalar recurrence
S_n = a_n S_{n-1} + b_n, b_n = k_n v_n, and there is no matmul for the chunked engine to exploit. Autograd
through a Python loop over L steps spends its time on per-step overhead and on the L saved graph nodes;
a torch tree scan makes several full passes over the states per level. This engine does the L-step recurrence in L / C + C vectorised
steps (two levels):

1. inside every chunk of C steps, all chunks at once: the local states s_n = a_n s_{n-1} + b_n from s = 0
   and the cumulative transitions A_n = Π_{chunk start ≤ j ≤ n} a_j (products only: never divided);
2. across chunks, sequentially: the state entering chunk c, S_in(c+1) = A_C(c) S_in(c) + s_C(c);
3. everywhere at once: S_n = s_n + A_n S_in(chunk of n).

The backward is the adjoint recurrence, run by the same two-level scan in reverse time:

    λ_n = ∂S_n + conj(a_{n+1}) λ_{n+1},   ∂b_n = λ_n,   ∂a_n = conj(S_{n-1}) λ_n,   ∂S_{-1} = conj(a_0) λ_0

with n = 0 .. L-1 and S_{-1} the initial state (PyTorch's gradient of a complex tensor is the conjugate
Wirtinger derivative, hence the conj). It is exact arithmetic on the same complex numbers as the reference
loop, so it has the loop's accuracy. It works for any K, V, but it materialises all L states
(B, L, H, K, V) of a block of rows, which only pays when K·V is small.
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
    if pad:
        # Identity steps (a = 1, b = 0); for the reverse scan at the front, so that chunk boundaries stay
        # aligned with the start of the scan.
        where = (pad, 0) if reverse else (0, pad)
        a = torch.nn.functional.pad(a, (0, 0, *where), value=1.0)
        b = torch.nn.functional.pad(b, (0, 0, *where))
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


# Work on blocks of batch rows whose complex (L, H, K, V) temporaries stay under this size: above glibc's
# largest mmap threshold (32 MiB) every fresh CPU allocation is page-faulted in again, which on the
# machines we measured costs more than the arithmetic. Bounded blocks also keep the per-step slices in cache.
_BLOCK_BYTES = 16 * 2**20


def _states(k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, s0: torch.Tensor, chunk: int) -> torch.Tensor:
    """All states S (b, L, H, K, V) of S_n = a_n S_{n-1} + k_nᵀ v_n from s0 (b, H, K, V)."""
    b, L, H, K = k.shape
    V = v.shape[-1]
    kv = (k.unsqueeze(-1) * v.unsqueeze(-2)).to(a.dtype).reshape(b, L, H * K * V)
    a_full = a.unsqueeze(-1).expand(b, L, H, K, V).reshape(b, L, H * K * V)
    return _diagonal_scan(a_full, kv, s0.reshape(b, H * K * V), chunk, reverse=False).view(b, L, H, K, V)


class _ElementwiseGateLoop(torch.autograd.Function):
    """(q, k, v, a, s0) -> (y, final state) by scalar recurrences, with the adjoint recurrence as backward.

    Nothing of size L·K·V is kept between forward and backward: the backward recomputes the states, block
    by block, which costs one forward scan and saves a (B, L, H, K, V) complex tensor.
    """

    @staticmethod
    def forward(ctx, q, k, v, a, s0, chunk):  # type: ignore[override]
        B, L, H, K = q.shape
        y = q.new_empty(B, L, H, v.shape[-1])
        final = torch.empty_like(s0)
        for rows in _row_blocks(q, v):
            S = _states(k[rows], v[rows], a[rows], s0[rows], chunk)
            y[rows] = _contract(q[rows].unsqueeze(-1), S.real, -2)  # y = q · Re S
            final[rows] = S[:, -1]
        ctx.save_for_backward(q, k, v, a, s0)
        ctx.chunk = chunk
        return y, final

    @staticmethod
    def backward(ctx, grad_y, grad_final):  # type: ignore[override]
        q, k, v, a, s0 = ctx.saved_tensors
        need_q, need_k, need_v, need_a, need_s0, _ = ctx.needs_input_grad
        grads = [torch.empty_like(x) if need else None for x, need in zip((q, k, v, a, s0), ctx.needs_input_grad)]
        grad_q, grad_k, grad_v, grad_a, grad_s0 = grads
        B, L, H, K = q.shape
        V = v.shape[-1]
        for rows in _row_blocks(q, v):
            q_b, k_b, v_b, a_b, s0_b, gy = q[rows], k[rows], v[rows], a[rows], s0[rows], grad_y[rows]
            S = _states(k_b, v_b, a_b, s0_b, ctx.chunk)  # (b, L, H, K, V)
            b = S.shape[0]
            # ∂S_n from the readout y_n = Re(q_n · S_n) (q real) and, at n = L-1, from the final state.
            g_S = (q_b.unsqueeze(-1) * gy.unsqueeze(-2)).to(S.dtype)
            g_S[:, -1] += grad_final[rows]
            # λ_n = ∂S_n + conj(a_{n+1}) λ_{n+1}: the transition of step n+1 acts on λ_{n+1} (none after L-1).
            a_next = torch.empty_like(a_b)
            torch.conj_physical(a_b[:, 1:], out=a_next[:, :-1])
            a_next[:, -1] = 0
            a_next = a_next.unsqueeze(-1).expand(b, L, H, K, V).reshape(b, L, H * K * V)
            zeros = torch.zeros_like(s0_b).view(b, -1)
            lam = _diagonal_scan(a_next, g_S.view(b, L, -1), zeros, ctx.chunk, reverse=True)
            lam = lam.view(b, L, H, K, V)
            if need_q:
                grad_q[rows] = _contract(gy.unsqueeze(-2), S.real, -1)
            if need_k:
                grad_k[rows] = _contract(v_b.unsqueeze(-2), lam.real, -1)
            if need_v:
                grad_v[rows] = _contract(k_b.unsqueeze(-1), lam.real, -2)
            if need_a:
                # ∂a_n = Σ_v conj(S_{n-1}) λ_n, with S_{-1} = s0.
                grad_a[rows, 1:] = _contract(S[:, :-1].conj_physical(), lam[:, 1:], -1)
                grad_a[rows, 0] = _contract(s0_b.conj(), lam[:, 0], -1)
            if need_s0:
                grad_s0[rows] = a_b[:, 0].conj().unsqueeze(-1) * lam[:, 0]
        return grad_q, grad_k, grad_v, grad_a, grad_s0, None


def _contract(x: torch.Tensor, y: torch.Tensor, dim: int) -> torch.Tensor:
    """(x * y).sum(dim), without the sum's extra pass when that dim has size 1 (max-headed: K = V = 1).

    Written out rather than as einsum: einsum copies strided views such as `S.real` before a bmm, which
    for K = V = 1 cost more than the scan itself.
    """
    product = x * y
    return product.squeeze(dim) if product.shape[dim] == 1 else product.sum(dim)


def _row_blocks(q: torch.Tensor, v: torch.Tensor) -> list[slice]:
    """Slices of batch rows whose complex (L, H, K, V) state tensors stay under _BLOCK_BYTES (≥ 1 row each)."""
    B, L, H, K = q.shape
    row_bytes = L * H * K * v.shape[-1] * 2 * q.element_size()
    rows = max(1, _BLOCK_BYTES // row_bytes)
    return [slice(start, min(start + rows, B)) for start in range(0, B, rows)]


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
    out_dtype, real = q.dtype, a.real.dtype
    y, final = _ElementwiseGateLoop.apply(q.to(real), k.to(real), v.to(real), a, state, chunk_size)
    return y.to(out_dtype), final
