"""Input checks shared by every GateLoop engine, so that all modes accept and reject the same things."""
from __future__ import annotations

import torch


def check_scan_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, initial_state: torch.Tensor | None
) -> torch.Tensor:
    """Validate shapes and dtypes of one `gateloop_scan` call; return the initial state (B, H, K, V) complex.

    q, k (B, L, H, K) real; v (B, L, H, V) real; a (B, L, H, K) complex; initial_state (B, H, K, V) or None.
    """
    if q.dim() != 4 or k.shape != q.shape or a.shape != q.shape:
        raise ValueError(
            f"q, k and a must share one shape (B, L, H, K); got q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"a {tuple(a.shape)}"
        )
    B, L, H, K = q.shape
    if v.dim() != 4 or v.shape[:3] != (B, L, H):
        raise ValueError(f"v has shape {tuple(v.shape)}, expected (B, L, H, V) with (B, L, H)={(B, L, H)}")
    if L < 1:
        raise ValueError(f"sequence length L={L} must be at least 1")
    if not a.is_complex():
        raise ValueError(f"a must be complex (the transition's phase is part of the model); got dtype {a.dtype}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.is_complex() or not x.is_floating_point():
            raise ValueError(f"{name} must be a real floating tensor; got dtype {x.dtype}")
    V = v.shape[-1]
    if initial_state is None:
        return torch.zeros(B, H, K, V, dtype=a.dtype, device=a.device)
    if initial_state.shape != (B, H, K, V):
        raise ValueError(f"initial_state has shape {tuple(initial_state.shape)}, expected (B, H, K, V)={(B, H, K, V)}")
    return initial_state.to(a.dtype)


def log_polar(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log|a| and arg a (each a's real dtype, a's shape) for the engines that work in log space.

    A gate may be 0 (the signed real gate 2σ(u) − 1 crosses it) or smaller than any log can take: |a|² below
    the smallest normal float (|a| < 1.1e-19 in float32) reads as |a| = √tiny and phase 0, with zero gradient
    there. That changes the state by less than 1e-19 of itself, where log(0) = −inf and atan2's gradient at
    the origin (0/0) would turn the whole output and every gradient into NaN. Elsewhere it is the exact
    0.5·log(re² + im²) and atan2(im, re), computed from contiguous real and imaginary planes (log and atan2
    on strided views of a complex tensor run several times slower).
    """
    re, im = torch.view_as_real(a).movedim(-1, 0).contiguous()
    squared = re.square() + im.square()
    tiny = torch.finfo(re.dtype).tiny
    vanishing = squared < tiny
    # The where()s feed atan2 a harmless point (1, 0) at vanishing gates, so its backward never forms 0/0.
    phase = torch.atan2(torch.where(vanishing, torch.zeros_like(im), im), torch.where(vanishing, torch.ones_like(re), re))
    return 0.5 * torch.log(squared.clamp_min(tiny)), phase
