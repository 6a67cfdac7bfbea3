"""Gated linear attention (GLA: Yang, Wang, Shen, Panda, Kim, ICML 2024, arXiv:2312.06635) in plain torch:
a mixer that lives outside the testbed's package, the worked example of docs/own-model.md.

Per head, with key and value width K = D / H and input x_n ∈ R^D:

    S_n = diag(a_n) S_{n-1} + k_nᵀ v_n        S_n ∈ R^{K×K}, S_0 = 0
    a_n = σ(W_a x_n + b_a)^(1/τ) ∈ (0, 1)^K     a data-controlled, real, diagonal decay (τ = 16, the paper's)
    y_n = q_n S_n
    out = W_o (GroupNorm_h(y) ⊙ SiLU(W_g x))

`forward` is the parallel form y_n = Σ_{m≤n} (q_n ⊙ exp(G_n − G_m)) · k_m v_m with G the cumulative
log-decay (only differences G_n − G_m ≤ 0 are exponentiated, masked before `exp`); `step` is the
recurrence. They are two computations of one map: `testbed check-mixer` checks that they agree. The
gate projection W_a is the transition, tagged for no weight decay. Departure from the paper: full-rank
W_a (the paper's is low rank), and no short convolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gateloop.mixer import MixerConfig, mark_transition


@dataclass(frozen=True)
class GLAConfig(MixerConfig):
    # 2 heads: at the capability study's d_model = 48 a real 24×24 state per head, 1152 real scalars per
    # layer, the same as the K×V family's complex 4 × 12×12 (2·H·K·V), so it sits beside them at equal state.
    num_heads: int = 2
    temperature: float = 16.0  # τ: a = σ(·)^(1/τ) starts near 0.96, a long memory

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_heads < 1 or self.d_model % self.num_heads:
            raise ValueError(f"GLAConfig: num_heads={self.num_heads} must divide d_model={self.d_model}")
        if not self.temperature >= 1:
            raise ValueError(f"GLAConfig: temperature={self.temperature} must be >= 1")


class GLA(nn.Module):
    config_class = GLAConfig

    def __init__(self, config: GLAConfig) -> None:
        super().__init__()
        self.config = config
        D = config.d_model
        self.H, self.K = config.num_heads, D // config.num_heads
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.gate_proj = nn.Linear(D, D)  # W_a, b_a: one decay per key channel
        self.out_gate = nn.Linear(D, D, bias=False)
        self.out_proj = nn.Linear(D, D, bias=False)
        mark_transition(self.gate_proj.weight, self.gate_proj.bias)

    def _heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(..., D) -> q, k, v, log a: (..., H, K) each, in fp32."""
        q, k, v = self.qkv(x).float().chunk(3, dim=-1)
        log_a = F.logsigmoid(self.gate_proj(x).float()) / self.config.temperature
        return [t.unflatten(-1, (self.H, self.K)) for t in (q * self.K**-0.5, k, v, log_a)]

    def _out(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y (..., H, K) -> (..., D): per-head GroupNorm, SiLU output gate, W_o."""
        y = F.group_norm(y.flatten(-2).reshape(-1, self.config.d_model), self.H).reshape(x.shape)
        return self.out_proj((y * F.silu(self.out_gate(x).float())).to(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        q, k, v, log_a = (t.transpose(1, 2) for t in self._heads(x))  # (B, H, L, K)
        L = x.shape[1]
        with torch.autocast(x.device.type, enabled=False):  # the decay products in fp32
            G = log_a.cumsum(dim=2)
            keep = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()[..., None]  # (L, L, 1): m <= n
            decay = (G[:, :, :, None] - G[:, :, None]).masked_fill(~keep, float("-inf")).exp()  # (B, H, L, L, K)
            scores = (q[:, :, :, None] * k[:, :, None] * decay).sum(-1)  # (B, H, L, L): n attends to m
            y = (scores @ v).transpose(1, 2)  # (B, L, H, K)
        return self._out(y, x)

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch_size, self.H, self.K, self.K, device=device)  # S_0 = 0, (B, H, K, V)

    def step(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, D)
        q, k, v, log_a = self._heads(x)  # (B, H, K)
        with torch.autocast(x.device.type, enabled=False):
            S = log_a.exp()[..., None] * cache + k[..., None] * v[..., None, :]
            y = torch.einsum("bhk,bhkv->bhv", q, S)
        return self._out(y, x), S

    def state_size(self, seq_len: int) -> int:
        return self.H * self.K * self.K  # a real K×V state per head, whatever the length
