"""GateLoop as a real gated linear attention of key width 2K, and the "fla" mode that runs it on fla's kernels.

With a_n = exp(g_n + i θ_n) per key channel and the cumulative phase P_n = Σ_{j≤n} θ_j, q, k, v real and the
Re readout,

    y_n = Re(q_n S_n),   S_n = diag(a_n) S_{n-1} + k_nᵀ v_n                  S_n ∈ C^{K×V}

is exactly the real gated linear attention (GLA, Yang et al. 2024) with per-key log-decay g'

    y_n = q'_n S'_n,     S'_n = diag(exp(g'_n)) S'_{n-1} + k'_nᵀ v_n          S'_n ∈ R^{2K×V}
    q'_n = [q_n cos P_n, q_n sin P_n],  k'_n = [k_n cos P_n, k_n sin P_n],  g'_n = [g_n, g_n]

because q'_n · k'_m = q_n k_m (cos P_n cos P_m + sin P_n sin P_m) = q_n k_m cos(P_n - P_m) per channel. The
states correspond as S_n = e^{i P_n} (S'_cos - i S'_sin), S'_cos and S'_sin the first and last K rows of S'_n
(P_0 = 0 gives S'_0 = [Re S_0; -Im S_0] for an initial state).

Precision. The identity holds for any representative of each P_n mod 2π, so P is summed in float64 and each
P_n reduced mod 2π in float64 before cos and sin are taken in the working precision: cos of a float32 phase
that has grown to ~2000 rad (1 rad per step over 2000 steps) is off by ~1e-4, the reduced one by ~1e-7
(tests/test_real_form.py measures both). Unlike the chunked engine, the phase here cannot be chunk-local:
a GLA kernel carries S' across chunks in one fixed frame, so P is global — its float64 sum keeps ~1e-16·L
relative error, far below float32's resolution for any trainable L.
One cost is inherent to any real form in float32: the gradient of a's phase sums float32 terms that cancel
(cos² P_n + sin² P_n for every diagonal pair) and is divided by |a| on its way to a, so grad a carries
~1e-7 / |a| relative error (6e-4 at |a| = 1e-3); everything else stays at ~1e-7. The chunked engine's split
form, which never meets those cancellations, is the precise path for gates that forget fast.

- `gla_ref` is the GLA recurrence written as a loop over time: the spec for whatever GLA kernel is used.
- `gateloop_scan_real_form(..., gla=gla_ref)` is GateLoop through the real form with any GLA engine of that
  signature; tested against the chunked engine on CPU.
- `gateloop_scan_fla` is the "fla" computation mode: the same with flash-linear-attention's Triton chunked
  GLA (`fla.ops.gla.chunk_gla`), CUDA only, imported lazily (`pip install -e '.[gpu]'`).
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable

import torch

from gateloop._inputs import check_scan_inputs, log_polar

GLA = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (q, k, v, g, initial_state) -> (y, final_state)


def log_gates(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log|a| in a's real precision and the global cumulative phase P (float64), both (B, L, H, K)."""
    log_abs, angle = log_polar(a)  # a vanishing gate reads as |a| = 1.1e-19 (log_polar)
    return log_abs, angle.to(torch.float64).cumsum(1)


def to_real_form(
    q: torch.Tensor, k: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k (B, L, H, K) real and a (B, L, H, K) complex -> q', k', g' (B, L, H, 2K) and P_L (B, H, K).

    q', k' and g' are in a's real precision (cos part first, then sin part); P_L is the last cumulative phase,
    reduced mod 2π in float64, for `state_from_real_form`.
    """
    real = a.real.dtype
    g, P = log_gates(a)
    reduced = torch.remainder(P, 2 * math.pi)  # (B, L, H, K) float64, each P_n in [0, 2π)
    cos, sin = torch.cos(reduced).to(real), torch.sin(reduced).to(real)
    q, k = q.to(real), k.to(real)
    q_r = torch.cat([q * cos, q * sin], -1)
    k_r = torch.cat([k * cos, k * sin], -1)
    return q_r, k_r, torch.cat([g, g], -1), reduced[:, -1]


def state_to_real_form(state: torch.Tensor) -> torch.Tensor:
    """A complex state (B, H, K, V) at P = 0 -> the real state [Re S; -Im S] (B, H, 2K, V)."""
    return torch.cat([state.real, -state.imag], -2)


def state_from_real_form(state: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """The real state S' (B, H, 2K, V) at cumulative phase P (B, H, K) -> S = e^{iP} (S'_cos - i S'_sin)."""
    K = phase.shape[-1]
    phase = phase.to(state.dtype)  # reduced to [0, 2π), so the cast keeps its absolute precision
    rotation = torch.polar(torch.ones_like(phase), phase)  # e^{iP}
    return rotation.unsqueeze(-1) * torch.complex(state[..., :K, :], -state[..., K:, :])


def gla_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention as a loop over time: S_n = diag(exp(g_n)) S_{n-1} + k_nᵀ v_n, y_n = q_n S_n.

    q, k, g (B, L, H, K) real, g ≤ 0 the per-key log-decay; v (B, L, H, V); initial_state (B, H, K, V) or
    None (zeros). Returns y (B, L, H, V) and the final state (B, H, K, V). No 1/√K scale on q.
    """
    B, L, H, K = q.shape
    state = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)
    ys = []
    for q_n, k_n, v_n, g_n in zip(q.unbind(1), k.unbind(1), v.unbind(1), g.unbind(1)):
        state = torch.exp(g_n).unsqueeze(-1) * state + k_n.unsqueeze(-1) * v_n.unsqueeze(-2)
        ys.append(torch.einsum("bhk,bhkv->bhv", q_n, state))
    return torch.stack(ys, 1), state


def gateloop_scan_real_form(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    gla: GLA = gla_ref,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GateLoop through its real form with the GLA engine `gla`; same signature and results as `gateloop_scan_ref`.

    q, k (B, L, H, K) real; v (B, L, H, V) real; a (B, L, H, K) complex; initial_state (B, H, K, V) complex or
    None. Returns y (B, L, H, V) in q's dtype and the final state (B, H, K, V) in a's.
    """
    state = check_scan_inputs(q, k, v, a, initial_state)
    q_r, k_r, g_r, phase_end = to_real_form(q, k, a)  # (B, L, H, 2K) ×3, (B, H, K)
    y, final = gla(q_r, k_r, v.to(q_r.dtype), g_r, state_to_real_form(state))
    return y.to(q.dtype), state_from_real_form(final, phase_end).to(a.dtype)


def fla_refusal(device: torch.device | None = None) -> str:
    """Why the "fla" mode cannot run (on `device`, if given), as one line naming the fix; "" if it can."""
    if importlib.util.find_spec("fla") is None:
        return ("mode='fla' needs flash-linear-attention, which is not installed: pip install -e '.[gpu]' "
                "(on a CUDA machine), or use mode='chunked'")
    if importlib.util.find_spec("triton") is None:
        return "mode='fla' needs triton, which is not installed (it comes with CUDA builds of torch); use mode='chunked'"
    if device is not None and device.type != "cuda":
        return f"mode='fla' runs Triton kernels on CUDA tensors, got tensors on {device.type}: use mode='chunked' there"
    return ""


def _fla_chunk_gla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, initial_state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """fla's chunked GLA behind `gla_ref`'s signature: (B, L, H, K) layout, no 1/√K scale, float32 state."""
    from fla.ops.gla import chunk_gla  # lazily: an optional, CUDA-only dependency

    return chunk_gla(q, k, v, g, scale=1.0, initial_state=initial_state.float(), output_final_state=True)


def gateloop_scan_fla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The "fla" mode: GateLoop on fla's Triton chunked GLA through the real form (CUDA, `.[gpu]` extra).

    Same signature and results as `gateloop_scan_ref`; chunk_size is unused (fla picks its own chunks).
    Triton's tl.dot defaults to TF32 for float32 inputs and fla asks for IEEE precision only in some of its
    matmuls, so this mode agrees with the others to TF32 accuracy (~1e-3 relative), not to 1e-5; and the
    gradient of a, whose phase part is a small difference divided by |a| (module docstring), has ~5e-4 / |a|
    relative error: only approximate for gates that forget within a few steps.
    """
    why_not = fla_refusal(q.device)
    if why_not:
        raise ValueError(why_not)
    return gateloop_scan_real_form(q, k, v, a, initial_state, gla=_fla_chunk_gla)
