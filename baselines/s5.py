"""S5: one multi-input multi-output complex diagonal SSM over all D channels, run by a parallel scan.

Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence Modeling" (ICLR 2023,
arXiv:2208.04933); init and layer follow the authors' code (lindermanlab/S5: `ssm_init.py`, `ssm.py`,
`layers.py`). With latent size P split into J blocks and input u_l ∈ R^D:

    HiPPO-N per block (size P/J): S = A_LegS + p pᵀ (the normal part of HiPPO-LegS), S = V Λ V*
    Λ = Λ_re + iΛ_im      (init: Λ_re = mean diag S = −1/2, Λ_im = eigenvalues of the skew part)
    B̃ = V⁻¹ B,  B ~ lecun_normal (P, D);   C̃ = C V,  C ~ lecun_normal per row (D, P), complex
    Δ_p = exp(log Δ_p),  log Δ ~ U[log dt_min, log dt_max] per state
    Λ̄ = exp(Λ Δ),  B̄ = ((Λ̄ − 1) / Λ) ⊙ B̃                            (zero-order hold)
    x_l = Λ̄ ⊙ x_{l−1} + B̄ u_l,   y_l = 2 Re(C̃ x_l) + D ⊙ u_l          (conjugate-symmetric)
    out = activation(y):  half_glu1: g = GELU(y), g ⊙ σ(W g)             (the authors' default)
                          half_glu2: y ⊙ σ(W GELU(y));  full_glu: W₁ g ⊙ σ(W₂ g);  gelu: GELU(y)

Block-diagonal init (J > 1) puts a copy of the size-P/J HiPPO-N eigendecomposition on each block;
conjugate symmetry keeps P/2 of the P eigenvalues (one of each conjugate pair) and doubles the real
part at the readout, so the state holds P/2 complex numbers. The recurrence runs through
`baselines.scan.linear_scan`; `forward_ref` runs it as a plain loop (the spec).

Departures, with reasons:
  - `clip_eigs` (Re Λ ≤ −1e−4) is on by default: the authors recommend it for autoregressive tasks,
    where an eigenvalue drifting into the right half-plane makes the state blow up with length.
  - No dropout and no norm here: the shared backbone owns normalisation and the residual.
  - The SSM runs in fp32/complex64 with autocast off (complex dtypes are outside autocast).
Transition parameters: Λ_re, Λ_im, log Δ — and B̃, because the authors train B with the SSM's
learning rate and no weight decay (`train_helpers.py`: B, Lambda_re, Lambda_im, log_step); all four
are tagged with `mark_transition` so the backbone's optimiser treats them the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.scan import Scan, linear_scan, linear_scan_ref
from gateloop.mixer import MixerConfig, at_least_fp32, is_int, is_real, mark_transition

ACTIVATIONS = ("half_glu1", "half_glu2", "full_glu", "gelu")


@dataclass(frozen=True)
class S5Config(MixerConfig):
    """S5 mixer: latent size d_state = P in `blocks` = J HiPPO-N blocks; P/2 complex states when conj_sym."""

    d_state: int = 128
    blocks: int = 4
    conj_sym: bool = True
    clip_eigs: bool = True
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    activation: str = "half_glu1"

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        for field in ("d_state", "blocks"):
            value = getattr(self, field)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name}: {field}={value!r} must be a positive int")
        if self.d_state % self.blocks:
            raise ValueError(
                f"{name}: blocks={self.blocks} must divide d_state={self.d_state} (remainder {self.d_state % self.blocks})"
            )
        for field in ("conj_sym", "clip_eigs"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{name}: {field}={getattr(self, field)!r} must be a bool")
        if self.conj_sym and (self.d_state // self.blocks) % 2:
            raise ValueError(
                f"{name}: conj_sym keeps half of each block's eigenvalues, so the block size "
                f"d_state/blocks={self.d_state // self.blocks} must be even"
            )
        if not (is_real(self.dt_min) and is_real(self.dt_max) and 0.0 < self.dt_min <= self.dt_max):
            raise ValueError(f"{name}: dt_min={self.dt_min!r}, dt_max={self.dt_max!r} must satisfy 0 < dt_min <= dt_max")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{name}: activation={self.activation!r} must be one of {ACTIVATIONS}")

    @property
    def modes(self) -> int:
        """Complex states held: P/2 with conjugate symmetry, else P."""
        return self.d_state // 2 if self.conj_sym else self.d_state


def hippo_n(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigendecomposition of HiPPO-N, the normal part of HiPPO-LegS: Λ (size,), V (size, size), complex128.

    A_LegS[n, k] = −√(2n+1)√(2k+1) for n > k, −(n+1) on the diagonal, 0 above; adding p pᵀ with
    p_n = √(n + 1/2) leaves −1/2 on the diagonal and a skew-symmetric rest, so S is normal:
    Λ = −1/2 + i·eig(−i·skew(S)), with orthonormal eigenvectors V. Eigenvalues come in conjugate pairs,
    sorted by imaginary part (negative first), as the authors' `eigh` returns them.
    """
    n = torch.arange(size, dtype=torch.float64)
    root = torch.sqrt(2 * n + 1)
    A = -(torch.tril(root[:, None] * root[None, :]) - torch.diag(n))
    p = torch.sqrt(n + 0.5)
    S = A + p[:, None] * p[None, :]
    skew = (S - S.T) / 2
    imag, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    real = torch.diagonal(S).mean()
    return torch.complex(real.expand(size).clone(), imag), V


def _lecun_normal(*shape: int, fan_in: int) -> torch.Tensor:
    """Truncated normal (±2σ before scaling) with std 1/√fan_in after truncation, as jax's lecun_normal."""
    # 0.87962566... is the std of a standard normal truncated to [−2, 2].
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(torch.empty(*shape, dtype=torch.float64), std=std, a=-2 * std, b=2 * std)


class S5(nn.Module):
    """S5 mixer, (B, L, D) -> (B, L, D), causal; decodes token by token with the recurrence.

    Parameters: `Lambda_re`, `Lambda_im`, `log_step` (P/2,) and `B` (P/2, D, 2) — tagged; `C` (D, P/2, 2)
    complex as real pairs; `D` (D,) skip; `out1` / `out2` (D → D) as the activation needs.
    """

    config_class = S5Config

    def __init__(self, config: S5Config) -> None:
        super().__init__()
        self.config = config
        D, P, J = config.d_model, config.d_state, config.blocks
        block = P // J
        Lambda, V = hippo_n(block)  # (block,), (block, block)
        keep = block // 2 if config.conj_sym else block
        Lambda, V = Lambda[:keep], V[:, :keep]  # one of each conjugate pair when conj_sym
        Lambda = Lambda.repeat(J)  # (M,) with M = J·keep complex states
        V_full = torch.block_diag(*[V] * J)  # (P, M)
        V_inv = torch.block_diag(*[V.conj().T] * J)  # (M, P)
        B = V_inv @ _lecun_normal(P, D, fan_in=P).to(torch.complex128)  # (M, D)
        C_raw = torch.complex(_lecun_normal(D, P, fan_in=P), _lecun_normal(D, P, fan_in=P))
        C = C_raw @ V_full  # (D, M)
        log_step = torch.rand(len(Lambda), dtype=torch.float64) * (
            math.log(config.dt_max) - math.log(config.dt_min)
        ) + math.log(config.dt_min)

        self.Lambda_re = nn.Parameter(Lambda.real.float())
        self.Lambda_im = nn.Parameter(Lambda.imag.float())
        self.log_step = nn.Parameter(log_step.float())
        self.B = nn.Parameter(torch.view_as_real(B).float().contiguous())
        mark_transition(self.Lambda_re, self.Lambda_im, self.log_step, self.B)
        self.C = nn.Parameter(torch.view_as_real(C).float().contiguous())
        self.D = nn.Parameter(torch.randn(D))
        self.out1 = nn.Linear(D, D) if config.activation == "full_glu" else None
        self.out2 = nn.Linear(D, D) if config.activation != "gelu" else None

    def _discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Λ̄ (M,), B̄ (M, D), C̃ (D, M): complex, at least complex64."""
        real = at_least_fp32(self.Lambda_re)
        if self.config.clip_eigs:
            real = real.clamp(max=-1e-4)
        Lambda = torch.complex(real, at_least_fp32(self.Lambda_im))
        Lambda_bar = torch.exp(Lambda * torch.exp(at_least_fp32(self.log_step)))
        B_bar = ((Lambda_bar - 1) / Lambda).unsqueeze(-1) * torch.view_as_complex(at_least_fp32(self.B))
        return Lambda_bar, B_bar, torch.view_as_complex(at_least_fp32(self.C))

    def _readout(self, h: torch.Tensor, C: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """y = 2 Re(C̃ h) + D u (factor 1 without conj_sym): h (..., M), u (..., D) -> (..., D)."""
        y = (h @ C.T).real
        return (2 * y if self.config.conj_sym else y) + at_least_fp32(self.D) * u

    def _activation(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        g = F.gelu(y).to(dtype)
        match self.config.activation:
            case "half_glu1":
                return g * torch.sigmoid(self.out2(g))
            case "half_glu2":
                return y.to(dtype) * torch.sigmoid(self.out2(g))
            case "full_glu":
                return self.out1(g) * torch.sigmoid(self.out2(g))
            case _:
                return g

    def _mix(self, x: torch.Tensor, scan: Scan) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = at_least_fp32(x)
            Lambda_bar, B_bar, C = self._discretize()
            h, _ = scan(Lambda_bar[None, None], u.to(B_bar.dtype) @ B_bar.T)  # (B, L, M)
            y = self._readout(h, C, u)
        return self._activation(y, x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D) with the recurrence run by `linear_scan`."""
        return self._mix(x, linear_scan)

    def forward_ref(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` with the recurrence as a plain loop over time (the spec)."""
        return self._mix(x, linear_scan_ref)

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """x before the first token: (B, M) complex64 zeros."""
        return torch.zeros(batch_size, self.config.modes, dtype=torch.complex64, device=device)

    def step(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: x (B, D) and the state (B, M) -> (B, D) and the next state."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = at_least_fp32(x)
            Lambda_bar, B_bar, C = self._discretize()
            h = Lambda_bar * cache + u.to(B_bar.dtype) @ B_bar.T
            y = self._readout(h, C, u)
        return self._activation(y, x.dtype), h

    def state_size(self, seq_len: int) -> int:
        """M complex states (P/2 with conjugate symmetry) = 2M real scalars, independent of seq_len."""
        return 2 * self.config.modes
