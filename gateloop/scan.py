"""GateLoop recurrence engines: one signature, several computation modes, the same numbers.

    S_n = diag(a_n) · S_{n-1} + k_nᵀ v_n,     y_n = Re(q_n · S_n)

Shapes: q, k (B, L, H, K) real; v (B, L, H, V) real; a (B, L, H, K) complex with |a| <= 1;
state (B, H, K, V) complex; y (B, L, H, V) real.

`gateloop_scan_ref` is the plain loop over time: the spec every other mode is tested against. The modes
(`MODES`, chosen by `gateloop_scan(..., mode=...)`):

- "recurrent"   `gateloop_scan_ref`: O(L) sequential steps; `gateloop_step` is its single step, for decoding.
- "scan"        `gateloop_scan_assoc`: associative scan, log depth, materialises every K×V state.
- "chunked"     `gateloop_scan_chunked` (chunked.py): real matmuls inside chunks (a direct or a split form,
                chosen by the gates), the K×V state carried across chunks.
- "attention"   `gateloop_scan_attention`: O(L²) surrogate attention with a masked decay tensor.
- "elementwise" `gateloop_scan_elementwise` (elementwise.py): B·H·K·V scalar recurrences with a
                hand-written backward; what "chunked" runs when K = V = 1.

`GPU_MODES` are accepted by `gateloop_scan` too but kept out of `MODES`, which every test runs on the CPU:
- "fla"         `gateloop_scan_fla` (real_form.py): the real form (a real GLA of key width 2K) on
                flash-linear-attention's Triton chunked GLA; CUDA tensors and the `.[gpu]` extra only.
`COMPILED_MODES`, likewise accepted and kept out of `MODES`:
- "fused"       `gateloop_scan_fused` (fused.py): max-headed GateLoop (K = V = 1) as one C++ loop with its
                adjoint as backward; CPU tensors and a C++ compiler (built on first use).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from gateloop._inputs import check_scan_inputs, log_polar
from gateloop.chunked import gateloop_scan_chunked
from gateloop.elementwise import gateloop_scan_elementwise
from gateloop.fused import gateloop_scan_fused
from gateloop.real_form import gateloop_scan_fla


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
    # unbind, not q[:, n]: autograd turns every index into a full-size zero gradient, O(L²) in backward.
    for q_n, k_n, v_n, a_n in zip(q.unbind(1), k.unbind(1), v.unbind(1), a.unbind(1)):
        y, state = gateloop_step(q_n, k_n, v_n, a_n, state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


def _associative_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All prefix combinations along dim 1 under (a_i, S_i) • (a_j, S_j) = (a_j a_i, a_j S_i + S_j).

    a (B, L, H, K, 1) complex, b (B, L, H, K, V) complex; returns the states S (B, L, H, K, V).
    Odd–even recursion: combine neighbouring pairs, scan the half-length sequence of pairs (which yields
    the states at odd positions), then fill in the even positions with one step each. O(L) work, depth
    2 log2(L), every K×V state materialised.
    """
    L = b.shape[1]
    if L == 1:
        return b
    half = L // 2
    a_even, a_odd = a[:, 0 : 2 * half : 2], a[:, 1 : 2 * half : 2]
    b_even, b_odd = b[:, 0 : 2 * half : 2], b[:, 1 : 2 * half : 2]
    S_odd = _associative_scan(a_odd * a_even, a_odd * b_even + b_odd)  # states at 1, 3, 5, ...
    # States at 2, 4, ...: one step from the odd state before each; position 0 is b_0 itself.
    S_even = torch.cat([b[:, :1], a[:, 2::2] * S_odd[:, : (L - 1) // 2] + b[:, 2::2]], 1)
    S = torch.stack([S_even[:, :half], S_odd], 2).flatten(1, 2)
    return torch.cat([S, S_even[:, half:]], 1) if L % 2 else S


def gateloop_scan_assoc(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "scan" mode: a log-depth associative scan over (a_n, k_nᵀ v_n) pairs. chunk_size is unused.

    Memory-bound: it materialises the K×V state at every step, several times over (B·L·H·K·V complex).
    """
    state = check_scan_inputs(q, k, v, a, initial_state)
    out_dtype, real = q.dtype, a.real.dtype
    q, k, v = q.to(real), k.to(real), v.to(real)
    kv = (k.unsqueeze(-1) * v.unsqueeze(-2)).to(a.dtype)  # (B, L, H, K, V)
    # The initial state enters as part of the first step's input: S_0' = a_0 S_init + k_0ᵀ v_0.
    kv = torch.cat([a[:, :1].unsqueeze(-1) * state.unsqueeze(1) + kv[:, :1], kv[:, 1:]], 1)
    S = _associative_scan(a.unsqueeze(-1), kv)  # (B, L, H, K, V)
    y = torch.einsum("blhk,blhkv->blhv", q, S.real)
    return y.to(out_dtype), S[:, -1]


def gateloop_scan_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "attention" mode: Y = Re((Q Kᵀ ⊙ D) V) with D_nm = Π_{m<j≤n} a_j, O(L²·K) time and memory.

    a varies per key channel, so D is (L, L, K) per head and the scores are Σ_κ q_nκ k_mκ D_nmκ.
    D is exp of differences of cumulative log-gates, masked to -inf above the diagonal *before* exp, so
    only exponents ≤ 0 are ever taken; the naive P_n / P_m with P = cumprod(a) underflows P to 0 after
    ~100 steps at |a| = 0.5 and gives 0/0 = NaN. Cumulative log-gates and phases are summed in float64
    (a phase summed over thousands of steps has no float32 digits left to difference); log-gates are
    differenced in float64 and phase differences reduced mod 2π in float64, then cast to the working
    precision. chunk_size is unused.
    """
    state = check_scan_inputs(q, k, v, a, initial_state)
    out_dtype, real = q.dtype, a.real.dtype
    q, k, v = q.to(real), k.to(real), v.to(real)
    L = q.shape[1]
    log_abs, angle = log_polar(a)  # a vanishing gate reads as |a| = 1.1e-19 (log_polar)
    G = log_abs.to(torch.float64).cumsum(1)  # (B, L, H, K), non-increasing
    P = angle.to(torch.float64).cumsum(1)
    causal = torch.ones(L, L, dtype=torch.bool, device=a.device).tril()[None, :, :, None, None]  # (1, n, m, 1, 1)
    # Magnitudes: the float64 difference of cumulative log-gates, masked before exp (≤ 0 where kept).
    log_D = (G[:, :, None] - G[:, None, :]).to(real).masked_fill(~causal, -torch.inf)  # (B, n, m, H, K)
    # Phases: differenced in float64 and reduced mod 2π before the cast, like the log-gates. (Reducing
    # each cumulative phase first and differencing in float32 leaves ~1e-7 absolute error per pair;
    # with |a| = 1 nothing decays, all L² pairs count, and the gradients miss 1e-5 relative.)
    dP = torch.remainder(P[:, :, None] - P[:, None, :], 2 * torch.pi).to(real)  # (B, n, m, H, K)
    D_real = torch.exp(log_D) * torch.cos(dP)  # Re D
    # V is real, so Re(scores V) = Re(scores) V.
    scores = (D_real * k[:, None] * q[:, :, None]).sum(-1)  # (B, n, m, H)
    y = torch.einsum("bnmh,bmhv->bnhv", scores, v)
    # The initial state decays by the full prefix A_n = Π_{j≤n} a_j = exp(G_n + i P_n), |A_n| <= 1.
    A = torch.polar(torch.exp(G), torch.remainder(P, 2 * torch.pi)).to(a.dtype)  # (B, L, H, K)
    # Re(q A_n S) = (q Re A_n) Re S - (q Im A_n) Im S, q real.
    y = y + torch.einsum("bnhk,bhkv->bnhv", q * A.real, state.real)
    y = y - torch.einsum("bnhk,bhkv->bnhv", q * A.imag, state.imag)
    # Final state: the last row of D in full complex form, plus the decayed initial state.
    D_last = torch.polar(torch.exp(G[:, -1:] - G), torch.remainder(P[:, -1:] - P, 2 * torch.pi)).to(a.dtype)
    final = torch.einsum("bmhk,bmhv->bhkv", D_last * k, v.to(a.dtype)) + A[:, -1].unsqueeze(-1) * state
    return y.to(out_dtype), final


MODES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "recurrent": gateloop_scan_ref,
    "scan": gateloop_scan_assoc,
    "chunked": gateloop_scan_chunked,
    "attention": gateloop_scan_attention,
    "elementwise": gateloop_scan_elementwise,
}
# Modes with an optional dependency and a device requirement (see the module docstring).
GPU_MODES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {"fla": gateloop_scan_fla}
# Modes built from C++ on first use, for one head layout and the CPU only (see the module docstring).
COMPILED_MODES: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {"fused": gateloop_scan_fused}


def gateloop_scan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    mode: str = "chunked",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the GateLoop recurrence with the chosen computation mode; returns (y, final_state).

    q, k (B, L, H, K) real; v (B, L, H, V) real; a (B, L, H, K) complex, 0 < |a| <= 1;
    initial_state (B, H, K, V) complex or None (zeros). y (B, L, H, V) has q's dtype; the final state
    (B, H, K, V) has a's. All modes agree with "recurrent" and are differentiable in every input.

    "chunked" is the training default. With K = V = 1 (max-headed) there is no matmul for it to use, and
    it runs the "elementwise" engine instead (chunk_size then sets that engine's within-chunk loop).
    "fla" (a GPU_MODES entry) needs CUDA tensors and flash-linear-attention, and raises otherwise.
    """
    extra = {**GPU_MODES, **COMPILED_MODES}
    if mode in extra:
        return extra[mode](q, k, v, a, initial_state, chunk_size=chunk_size)
    if mode not in MODES:
        raise ValueError(f"unknown gateloop_scan mode {mode!r}; valid modes: {sorted([*MODES, *extra])}")
    if mode == "recurrent":
        return gateloop_scan_ref(q, k, v, a, initial_state)
    if mode == "chunked" and q.shape[-1] == 1 and v.shape[-1] == 1:
        mode = "elementwise"
    return MODES[mode](q, k, v, a, initial_state, chunk_size=chunk_size)
