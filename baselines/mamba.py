"""Mamba (Mamba-1): a selective SSM — a real diagonal recurrence whose transition depends on the input.

Gu, Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv:2312.00752); the
layer follows the authors' `mamba_simple.Mamba` and `selective_scan_ref` (state-spaces/mamba). With
E = expand, inner width E·D, state size N per inner channel and input u ∈ R^D:

    [x, z]  = W_in u                                     x, z ∈ R^{E·D}
    x       = SiLU(causal depthwise conv_{d_conv}(x))
    [δ, B_t, C_t] = W_x x                                δ ∈ R^{dt_rank}, B_t, C_t ∈ R^N
    Δ       = softplus(W_Δ δ + b_Δ)                      Δ ∈ R^{E·D}
    A       = −exp(A_log)                                 A ∈ R^{E·D×N}, S4D-Real init A_{d,n} = −(n+1)
    h_t     = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) B_tᵀ      h ∈ R^{E·D×N}  (ZOH for A, Euler for B, as the authors)
    y_t     = h_t C_t + D ⊙ x_t
    out     = W_out (y ⊙ SiLU(z))

Init as the authors: Δ-bias b_Δ = softplus⁻¹(Δ₀) with Δ₀ log-uniform in [dt_min, dt_max] (floored at
dt_init_floor), W_Δ ~ U[±dt_rank^−½ · dt_scale] ("random") or constant; D = 1; other projections and
the conv keep PyTorch's default init.

The selective scan is pure torch. `selective_scan` walks the sequence in chunks of `chunk_size`: per
chunk it builds exp(Δ A) and Δ x Bᵀ, shaped (B, C, E·D, N), runs `baselines.scan.linear_scan` from
the carried state and contracts with C_t at once, so the (B, L, E·D, N) tensors never exist whole;
under autograd each chunk is checkpointed (recomputed in backward), so what is kept for backward is
the chunk inputs and one (B, E·D, N) state per chunk — the recomputation the authors' fused kernel
also does. `selective_scan_ref` is the plain loop over time (the spec).

Departures, with reasons:
  - The authors rescale W_out by 1/√n_layers at the model level; the shared backbone initialises
    every mixer alike and has no such hook, so it is not done here.
  - Δ and the scan run in fp32 with autocast off (the authors' kernel also computes in fp32).
Transition parameters, tagged with `mark_transition`: A_log (the authors exempt it from weight decay)
and the Δ projection W_Δ, b_Δ (the data-controlled step size, which is what makes the transition
selective; treated like GateLoop's gate projections).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from baselines.scan import linear_scan
from gateloop.mixer import MixerConfig, at_least_fp32, is_int, is_real, mark_transition

DT_INITS = ("random", "constant")


@dataclass(frozen=True)
class MambaConfig(MixerConfig):
    """Mamba-1 mixer. dt_rank=None means ceil(d_model / 16), the authors' "auto"."""

    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | None = None
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    chunk_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        for field in ("d_state", "expand", "d_conv", "chunk_size"):
            value = getattr(self, field)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name}: {field}={value!r} must be a positive int")
        if self.dt_rank is not None and (not is_int(self.dt_rank) or self.dt_rank < 1):
            raise ValueError(f"{name}: dt_rank={self.dt_rank!r} must be None (auto: ceil(d_model/16)) or a positive int")
        if not (is_real(self.dt_min) and is_real(self.dt_max) and 0.0 < self.dt_min <= self.dt_max):
            raise ValueError(f"{name}: dt_min={self.dt_min!r}, dt_max={self.dt_max!r} must satisfy 0 < dt_min <= dt_max")
        if not is_real(self.dt_init_floor) or self.dt_init_floor < 0.0:
            raise ValueError(f"{name}: dt_init_floor={self.dt_init_floor!r} must be a real number >= 0")
        if not is_real(self.dt_scale) or self.dt_scale <= 0.0:
            raise ValueError(f"{name}: dt_scale={self.dt_scale!r} must be a real number > 0")
        if self.dt_init not in DT_INITS:
            raise ValueError(f"{name}: dt_init={self.dt_init!r} must be one of {DT_INITS}")
        for field in ("conv_bias", "bias"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{name}: {field}={getattr(self, field)!r} must be a bool")

    @property
    def d_inner(self) -> int:
        """E·D."""
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        """dt_rank, resolved."""
        return math.ceil(self.d_model / 16) if self.dt_rank is None else self.dt_rank


def selective_scan_ref(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective SSM as a loop over time: h_t = exp(Δ_t A) h_{t−1} + Δ_t u_t B_tᵀ, y_t = h_t C_t.

    u, delta (B, L, E·D); A (E·D, N); B, C (B, L, N); h0 (B, E·D, N) or None.
    Returns y (B, L, E·D) and the final state (B, E·D, N).
    """
    h = u.new_zeros(u.shape[0], *A.shape) if h0 is None else h0
    ys = []
    for u_t, delta_t, B_t, C_t in zip(u.unbind(1), delta.unbind(1), B.unbind(1), C.unbind(1)):
        h = torch.exp(delta_t.unsqueeze(-1) * A) * h + (delta_t * u_t).unsqueeze(-1) * B_t.unsqueeze(1)
        ys.append(torch.einsum("bdn,bn->bd", h, C_t))
    return torch.stack(ys, dim=1), h


def _scan_chunk(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of `selective_scan`: the same shapes with L = chunk length, h0 required."""
    a = torch.exp(delta.unsqueeze(-1) * A)  # (B, C, E·D, N)
    b = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # (B, C, E·D, N)
    h, h_last = linear_scan(a, b, h0)
    return (h * C.unsqueeze(2)).sum(-1), h_last  # (B, C, E·D): a batched matvec is slower as bmm


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments and numbers as `selective_scan_ref`, chunk by chunk through `linear_scan`.

    Each chunk materialises (B, chunk_size, E·D, N); under autograd it is checkpointed, so backward
    keeps only the chunk inputs and the state entering each chunk.
    """
    h = u.new_zeros(u.shape[0], *A.shape) if h0 is None else h0
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, h))
    ys = []
    for start in range(0, u.shape[1], chunk_size):
        window = slice(start, start + chunk_size)
        chunk = (u[:, window], delta[:, window], A, B[:, window], C[:, window], h)
        y, h = checkpoint(_scan_chunk, *chunk, use_reentrant=False) if recompute else _scan_chunk(*chunk)
        ys.append(y)
    return torch.cat(ys, dim=1), h


class Mamba(nn.Module):
    """Mamba-1 mixer, (B, L, D) -> (B, L, D), causal; decodes with a conv buffer and the SSM state.

    Parameters: `in_proj` (D → 2·E·D), `conv1d` (depthwise, d_conv taps), `x_proj` (E·D → dt_rank + 2N),
    `dt_proj` (dt_rank → E·D, with the Δ-bias) and `A_log` (E·D, N) — the last two tagged —,
    `D` (E·D,) skip, `out_proj` (E·D → D).
    """

    config_class = MambaConfig

    def __init__(self, config: MambaConfig) -> None:
        super().__init__()
        self.config = config
        D, E, N, R = config.d_model, config.d_inner, config.d_state, config.rank
        self.in_proj = nn.Linear(D, 2 * E, bias=config.bias)
        self.conv1d = nn.Conv1d(E, E, config.d_conv, groups=E, padding=config.d_conv - 1, bias=config.conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        # W_Δ keeps the variance of Δ's pre-activation at init; b_Δ puts softplus(b_Δ) log-uniformly in [dt_min, dt_max].
        std = R**-0.5 * config.dt_scale
        with torch.no_grad():
            if config.dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
            dt = torch.exp(torch.rand(E) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min))
            dt = dt.clamp(min=config.dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(Δ₀)
        # S4D-Real: A_{d,n} = −(n + 1) for every inner channel d.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        mark_transition(self.A_log, self.dt_proj.weight, self.dt_proj.bias)
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, D, bias=config.bias)

    def _ssm_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conv'd inner activations x (..., E·D) -> Δ (..., E·D), A (E·D, N), B_t, C_t (..., N), at least fp32."""
        N, R = self.config.d_state, self.config.rank
        dt_low, B_t, C_t = at_least_fp32(self.x_proj(x)).split([R, N, N], dim=-1)
        delta = F.softplus(F.linear(dt_low, at_least_fp32(self.dt_proj.weight), at_least_fp32(self.dt_proj.bias)))
        return delta, -torch.exp(at_least_fp32(self.A_log)), B_t, C_t

    def _mix(self, x: torch.Tensor, ssm: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        L = x.shape[1]
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E·D) each
        xs = F.silu(self.conv1d(xs.transpose(1, 2))[..., :L].transpose(1, 2))  # causal: keep the first L outputs
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = at_least_fp32(xs)
            delta, A, B_t, C_t = self._ssm_inputs(u)
            y, _ = ssm(u, delta, A, B_t, C_t)  # (B, L, E·D)
            y = y + at_least_fp32(self.D) * u
        return self.out_proj(y.to(z.dtype) * F.silu(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D) with the chunked `selective_scan`."""
        return self._mix(x, lambda *args: selective_scan(*args, chunk_size=self.config.chunk_size))

    def forward_ref(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` with `selective_scan_ref`, the loop over time (the spec)."""
        return self._mix(x, selective_scan_ref)

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(conv buffer: the last d_conv − 1 inner inputs (B, E·D, d_conv − 1), SSM state (B, E·D, N)), zeros."""
        E, N, W = self.config.d_inner, self.config.d_state, self.config.d_conv - 1
        return (torch.zeros(batch_size, E, W, device=device), torch.zeros(batch_size, E, N, device=device))

    def step(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One token: x (B, D) and (conv buffer, state) -> (B, D) and the updated pair."""
        conv_buffer, h = cache
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, E·D) each
        window = torch.cat([conv_buffer.to(xs.dtype), xs.unsqueeze(-1)], dim=-1)  # (B, E·D, d_conv)
        xs = (window * self.conv1d.weight.squeeze(1)).sum(-1)
        if self.conv1d.bias is not None:
            xs = xs + self.conv1d.bias
        xs = F.silu(xs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            u = at_least_fp32(xs)
            delta, A, B_t, C_t = self._ssm_inputs(u)
            h = torch.exp(delta.unsqueeze(-1) * A) * h + (delta * u).unsqueeze(-1) * B_t.unsqueeze(1)
            y = torch.einsum("bdn,bn->bd", h, C_t) + at_least_fp32(self.D) * u
        return self.out_proj(y.to(z.dtype) * F.silu(z)), (window[..., 1:], h)

    def state_size(self, seq_len: int) -> int:
        """E·D·N SSM state plus E·D·(d_conv − 1) conv buffer, independent of seq_len."""
        c = self.config
        return c.d_inner * (c.d_state + c.d_conv - 1)
