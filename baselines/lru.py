"""LRU: the Linear Recurrent Unit, a complex diagonal recurrence in exponential parameterisation.

Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu, De, "Resurrecting Recurrent Neural Networks for Long
Sequences" (ICML 2023, arXiv:2303.06349); init and block follow the paper's Appendix A code and the
reference implementation it endorses (NicolasZucchet/minimal-LRU, `lru/model.py`). With N complex
states and input u_l ∈ R^D:

    λ = exp(−exp(ν) + i exp(θ_log))                    |λ| = exp(−exp(ν)) ∈ (0, 1) by construction
    ring init: |λ|² ~ U[r_min², r_max²], arg λ ~ U[0, max_phase]
    γ = exp(γ_log),  γ_log init log √(1 − |λ|²)        (normalises the state's variance at init)
    x_l = λ ⊙ x_{l−1} + γ ⊙ (B u_l)                     B ∈ C^{N×D}, entries CN with std 1/√(2D) per part
    y_l = Re(C x_l) + D ⊙ u_l                           C ∈ C^{D×N}, std 1/√N per part;  D ~ N(0, 1)
    out = W₁ GELU(y) ⊙ σ(W₂ GELU(y))                    (the block's GLU, as in minimal-LRU)

The recurrence runs through `baselines.scan.linear_scan`; `forward_ref` runs it as a plain loop.

Defaults for this testbed: r_min = 0.9, r_max = 0.999, max_phase = 2π. The paper's code defaults are
r_min = 0, r_max = 1; its own ablations (and its LRA settings) move r_min up to 0.9 or higher for
long-range dependencies. Memory tasks at L ≈ 64–1024 need timescales 1/(1 − |λ|) of 10–1000 tokens,
which is this ring; the full 2π phase keeps many distinct rotation frequencies, which recall tasks use
to tell positions apart (the paper shrinks max_phase to π/10 only for PathX). All three are options.

Departures, with reasons:
  - No dropout and no norm here: the shared backbone owns normalisation and the residual.
  - The recurrence runs in fp32/complex64 with autocast off (complex dtypes are outside autocast).
Transition parameters: ν, θ_log, γ_log — and B, because the authors train exactly these five
(nu_log, theta_log, gamma_log, B_re, B_im) with the smaller SSM learning rate and no weight decay;
all are tagged with `mark_transition` so the backbone's optimiser does the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.scan import Scan, linear_scan, linear_scan_ref
from gateloop.mixer import MixerConfig, at_least_fp32, is_int, is_real, mark_transition


@dataclass(frozen=True)
class LRUConfig(MixerConfig):
    """LRU mixer: d_state = N complex states; λ initialised on the ring r_min <= |λ| <= r_max."""

    d_state: int = 64
    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if not is_int(self.d_state) or self.d_state < 1:
            raise ValueError(f"{name}: d_state={self.d_state!r} must be a positive int")
        if not (is_real(self.r_min) and is_real(self.r_max) and 0.0 <= self.r_min <= self.r_max < 1.0):
            raise ValueError(
                f"{name}: r_min={self.r_min!r}, r_max={self.r_max!r} must satisfy 0 <= r_min <= r_max < 1 "
                f"(|λ| = 1 would make γ = √(1 − |λ|²) zero)"
            )
        if not is_real(self.max_phase) or not 0.0 < self.max_phase <= 2 * math.pi:
            raise ValueError(f"{name}: max_phase={self.max_phase!r} must lie in (0, 2π]")


class LRU(nn.Module):
    """LRU mixer, (B, L, D) -> (B, L, D), causal; decodes token by token with the recurrence.

    Parameters: `nu_log`, `theta_log`, `gamma_log` (N,) and `B` (N, D, 2) — tagged; `C` (D, N, 2)
    complex as real pairs; `D` (D,) skip; `out1`, `out2` (D → D) the GLU.
    """

    config_class = LRUConfig

    def __init__(self, config: LRUConfig) -> None:
        super().__init__()
        self.config = config
        D, N = config.d_model, config.d_state
        r_min, r_max = config.r_min, config.r_max
        u1, u2 = torch.rand(N, dtype=torch.float64), torch.rand(N, dtype=torch.float64)
        # |λ|² uniform on [r_min², r_max²] is uniform over the ring's area; ν = log(−log|λ|).
        nu_log = torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        # u2 = 0 would give θ_log = −inf; the smallest positive double is as good a draw from U[0, 1).
        theta_log = torch.log(config.max_phase * u2.clamp_min(torch.finfo(torch.float64).tiny))
        magnitude = torch.exp(-torch.exp(nu_log))
        gamma_log = torch.log(torch.sqrt(1 - magnitude**2))
        self.nu_log = nn.Parameter(nu_log.float())
        self.theta_log = nn.Parameter(theta_log.float())
        self.gamma_log = nn.Parameter(gamma_log.float())
        self.B = nn.Parameter(torch.randn(N, D, 2) / math.sqrt(2 * D))
        mark_transition(self.nu_log, self.theta_log, self.gamma_log, self.B)
        self.C = nn.Parameter(torch.randn(D, N, 2) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(D))
        self.out1 = nn.Linear(D, D)
        self.out2 = nn.Linear(D, D)

    def _transition(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """λ (N,), γ-normalised B (N, D), C (D, N): complex, at least complex64."""
        lam = torch.exp(torch.complex(-torch.exp(at_least_fp32(self.nu_log)), torch.exp(at_least_fp32(self.theta_log))))
        B = torch.view_as_complex(at_least_fp32(self.B)) * torch.exp(at_least_fp32(self.gamma_log)).unsqueeze(-1)
        return lam, B, torch.view_as_complex(at_least_fp32(self.C))

    def _readout(self, h: torch.Tensor, C: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y = Re(C h) + D ⊙ u: h (..., N), x (..., D) -> (..., D), at least fp32."""
        return (h @ C.T).real + at_least_fp32(self.D) * at_least_fp32(x)

    def _glu(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        g = F.gelu(y).to(dtype)
        return self.out1(g) * torch.sigmoid(self.out2(g))

    def _mix(self, x: torch.Tensor, scan: Scan) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            lam, B, C = self._transition()
            h, _ = scan(lam[None, None], at_least_fp32(x).to(B.dtype) @ B.T)  # (B, L, N)
            y = self._readout(h, C, x)
        return self._glu(y, x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D) with the recurrence run by `linear_scan`."""
        return self._mix(x, linear_scan)

    def forward_ref(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` with the recurrence as a plain loop over time (the spec)."""
        return self._mix(x, linear_scan_ref)

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """x before the first token: (B, N) complex64 zeros."""
        return torch.zeros(batch_size, self.config.d_state, dtype=torch.complex64, device=device)

    def step(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: x (B, D) and the state (B, N) -> (B, D) and the next state."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            lam, B, C = self._transition()
            h = lam * cache + at_least_fp32(x).to(B.dtype) @ B.T
            y = self._readout(h, C, x)
        return self._glu(y, x.dtype), h

    def state_size(self, seq_len: int) -> int:
        """N complex states = 2N real scalars, independent of seq_len."""
        return 2 * self.config.d_state
