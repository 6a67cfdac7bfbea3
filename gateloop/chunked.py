"""The chunked GateLoop engine: real matmuls inside chunks, the complex K×V state carried across them.

    S_n = diag(a_n) · S_{n-1} + k_nᵀ v_n,     y_n = Re(q_n · S_n)

**Real form.** Write a_n = exp(g_n + i θ_n) and, inside a chunk, the cumulative log-gates G_n = Σ g_j and
phases P_n = Σ θ_j. Because q, k, v are real and only Re is read out,

    y_n = Σ_{m ≤ n} Σ_κ q_nκ k_mκ exp(G_nκ - G_mκ) cos(P_nκ - P_mκ) v_m   (+ the carried-state term)

and cos(P_n - P_m) = cos P_n cos P_m + sin P_n sin P_m, so with q' = [q cos P, q sin P] and
k' = [k cos P, k sin P] (key width 2K) GateLoop is a real gated linear attention with per-key decay: the
within-chunk work is real matmuls. Phases are kept chunk-local and reduced mod 2π in float64 before cos/sin,
because cos of a phase that grew over many steps has lost its low digits in float32.

**Numerics.** exp(G_n - G_m) must never be formed as exp(G_n) · exp(-G_m): for |a| = 1e-3 the second factor
overflows float32 after 13 steps. Inside a chunk we split the (query, key) pairs recursively: for a block of
length b, the pairs with the key in the first half and the query in the second half factor exactly through
the block's midpoint r as exp(G_n - G_r) · exp(G_r - G_m), both exponents ≤ 0; a (b/2 × b/2) matmul handles
them all, and the two halves recurse. Every pair is counted once, at the level where it is split (the pair
n = m at the leaves, with decay 1). Across chunks only exp(G_n), exp(G_C - G_m) and exp(G_C) are needed, all
≤ 1. So every exponential in this file is of a non-positive number and |a| may be anywhere in (0, 1], without
bounding log|a|.

**Cost.** Per chunk of length C: log2(C) levels of batched matmuls, O(C · K · log C) elementwise gate work,
O(C² (K + V)) matmul flops; the K×V state is materialised once per chunk, not per step. The loop over
chunks is sequential (L / C small steps).
"""
from __future__ import annotations

import math

import torch

from gateloop._inputs import check_scan_inputs


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _twice(x: torch.Tensor) -> torch.Tensor:
    """A per-key factor (..., K) applied to both halves of the real form (..., 2K)."""
    return torch.cat([x, x], -1)


def _intra_chunk(
    q: torch.Tensor, k: torch.Tensor, qr: torch.Tensor, kr: torch.Tensor, v: torch.Tensor, G: torch.Tensor
) -> torch.Tensor:
    """Within-chunk outputs Σ_{m ≤ n} (q'_n ⊙ exp(G_n - G_m)) · k'_m v_m, chunk length a power of two.

    q, k (..., C, K); qr, kr (..., C, 2K) their real forms; v (..., C, V); G (..., C, K) cumulative log|a| (float64).
    """
    C = qr.shape[-2]
    # Leaves, m = n: decay 1 and cos(0) = 1, so the term is (q · k) v. Written with q, k rather than
    # q' · k' = q k (cos² + sin²): that form has the same value but a gradient in the phase that is zero
    # only up to rounding, and the phase gradient is divided by |a| on its way back to a.
    y = (q * k).sum(-1, keepdim=True) * v  # (..., C, V)
    b = 2
    while b <= C:
        h = b // 2
        lead = qr.shape[:-2]
        # (..., C/b, 2, h, ·): block index, half, position in half
        q2 = qr.reshape(*lead, C // b, 2, h, qr.shape[-1])[..., 1, :, :]
        k1 = kr.reshape(*lead, C // b, 2, h, kr.shape[-1])[..., 0, :, :]
        v1 = v.reshape(*lead, C // b, 2, h, v.shape[-1])[..., 0, :, :]
        Gb = G.reshape(*lead, C // b, 2, h, G.shape[-1])
        G_mid = Gb[..., 0, h - 1 : h, :]  # (..., C/b, 1, K): the last position of the first half
        decay_q = _twice(torch.exp((Gb[..., 1, :, :] - G_mid).to(qr.dtype)))  # (..., C/b, h, 2K), ≤ 1
        decay_k = _twice(torch.exp((G_mid - Gb[..., 0, :, :]).to(qr.dtype)))  # (..., C/b, h, 2K), ≤ 1
        scores = (q2 * decay_q) @ (k1 * decay_k).transpose(-1, -2)  # (..., C/b, h, h)
        y.view(*lead, C // b, 2, h, v.shape[-1])[..., 1, :, :] += scores @ v1
        b *= 2
    return y


def gateloop_scan_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GateLoop by chunks of `chunk_size` steps; same signature and results as `gateloop_scan_ref`.

    q, k (B, L, H, K) real; v (B, L, H, V) real; a (B, L, H, K) complex, 0 < |a| <= 1;
    initial_state (B, H, K, V) complex or None. Returns y (B, L, H, V) and the final state (B, H, K, V).
    Any chunk_size >= 1 works; inside a chunk the recursion runs on the next power of two, the extra
    positions being identity steps (a = 1, k = v = 0).
    """
    state = check_scan_inputs(q, k, v, a, initial_state)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
    B, L, H, K = q.shape
    V = v.shape[-1]
    out_dtype, real = q.dtype, a.real.dtype
    C = min(chunk_size, L)
    Cp = _next_power_of_two(C)
    nc = -(-L // C)

    def chunks(x: torch.Tensor) -> torch.Tensor:
        # (B, L, H, X) -> (B, H, nc, Cp, X), zero-padded: zeros are identity steps for every input here.
        x = x.transpose(1, 2)
        x = torch.nn.functional.pad(x, (0, 0, 0, nc * C - L))
        x = x.reshape(B, H, nc, C, x.shape[-1])
        return torch.nn.functional.pad(x, (0, 0, 0, Cp - C))

    q, k, v = chunks(q.to(real)), chunks(k.to(real)), chunks(v.to(real))
    # Cumulative log-gates and phases inside each chunk, in float64: they are only ever used through
    # differences, which are formed in float64 and then cast. In float32 the difference of two sums of
    # ~C log-gates loses digits, and the gradient of a small gate (divided by |a| on its way back to a)
    # is made of exactly the terms that lose them.
    G = chunks(torch.log(a.abs())).to(torch.float64).cumsum(-2)  # (B, H, nc, Cp, K), non-increasing
    P = chunks(torch.angle(a)).to(torch.float64).cumsum(-2)
    P_mod = torch.remainder(P, 2 * math.pi).to(real)
    cos_P, sin_P = torch.cos(P_mod), torch.sin(P_mod)
    qr = torch.cat([q * cos_P, q * sin_P], -1)  # (B, H, nc, Cp, 2K)
    kr = torch.cat([k * cos_P, k * sin_P], -1)

    y = _intra_chunk(q, k, qr, kr, v, G)  # (B, H, nc, Cp, V)

    # What each chunk adds to the state: U = Σ_m (A_C / A_m) k_mᵀ v_m, A_C / A_m = e^{E_m + i Φ_m}, written
    # with Φ_m (not as e^{i P_C} e^{-i P_m}) so that the m = C term has phase exactly 0, not 0 up to rounding.
    G_end, P_end = G[..., -1:, :], P[..., -1:, :]  # (B, H, nc, 1, K)
    k_decayed = k * torch.exp((G_end - G).to(real))
    Phi = torch.remainder(P_end - P, 2 * math.pi).to(real)
    XY = torch.cat([k_decayed * torch.cos(Phi), k_decayed * torch.sin(Phi)], -1).transpose(-1, -2) @ v
    U = torch.complex(XY[..., :K, :], XY[..., K:, :])  # (B, H, nc, K, V)
    # The chunk's total transition A_C = e^{G_C + i P_C}, (B, H, nc, K, 1).
    A_end = torch.polar(torch.exp(G_end), torch.remainder(P_end, 2 * math.pi)).to(a.dtype).transpose(-1, -2)

    incoming = []
    for c in range(nc):
        incoming.append(state)
        state = A_end[:, :, c] * state + U[:, :, c]
    S_in = torch.stack(incoming, 2)  # (B, H, nc, K, V): the state entering each chunk

    # Re(q_n A_n S) with A_n = e^{G_n + i P_n}: q' e^{G_n} against [Re S; -Im S].
    R = torch.cat([S_in.real, -S_in.imag], -2)  # (B, H, nc, 2K, V)
    y = y + (qr * _twice(torch.exp(G.to(real)))) @ R

    y = y[..., :C, :].reshape(B, H, nc * C, V)[:, :, :L].transpose(1, 2)  # (B, L, H, V)
    return y.to(out_dtype), state
