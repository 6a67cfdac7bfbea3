"""Causal multi-head softmax attention with rotary position embeddings: the recall ceiling.

    q, k, v = W_q x, W_k x, W_v x                      split into H heads of width K = D / H
    q_n, k_m ← R(n) q_n, R(m) k_m                      rotary (Su et al. 2021, RoFormer)
    y_n = W_o Σ_{m≤n} softmax_m(q_n · k_m / √K) v_m

R(n) rotates channel pairs (j, j + K/2) by the angle n·ω_j, ω_j = base^(-2j/K) (the "rotate half"
layout of GPT-NeoX / Llama), so q_n · k_m depends on positions only through n - m.

The fast path is `torch.nn.functional.scaled_dot_product_attention(is_causal=True)`; `causal_attention_ref`
beside it writes the masked softmax out. Decoding keeps a KV cache: `step` rotates the new query and key
at the cache's length, appends the key and value, and attends over everything cached, so its state
grows with the sequence: 2·L·D real scalars after L tokens. Attention has no transition, so nothing is
tagged with `mark_transition`. Projections have no biases and use nn.Linear's default init.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gateloop.mixer import MixerConfig


@dataclass(frozen=True)
class AttentionConfig(MixerConfig):
    """H = num_heads heads of width K = d_model / H; K must be even for the rotary pairs."""

    num_heads: int = 4
    rotary_base: float = 10000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_heads, int) or isinstance(self.num_heads, bool) or self.num_heads < 1:
            raise ValueError(f"AttentionConfig: num_heads={self.num_heads!r} must be a positive int")
        if self.d_model % self.num_heads != 0 or (self.d_model // self.num_heads) % 2 != 0:
            raise ValueError(
                f"AttentionConfig: d_model={self.d_model} must be num_heads={self.num_heads} × an even head width"
            )
        if not isinstance(self.rotary_base, (int, float)) or self.rotary_base <= 1:
            raise ValueError(f"AttentionConfig: rotary_base={self.rotary_base!r} must be a number > 1")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


@dataclass(frozen=True)
class KVCache:
    """Rotated keys and values of every token so far, (B, H, T, K) each; T is the next token's position."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def length(self) -> int:
        return self.k.shape[2]


def apply_rotary(x: torch.Tensor, start: int, base: float) -> torch.Tensor:
    """Rotate x (B, H, L, K) at positions start..start+L-1: pair (j, j + K/2) turns by position · base^(-2j/K)."""
    L, K = x.shape[-2], x.shape[-1]
    # Angles in float32 at least: position · ω in low precision loses the phase after a few hundred tokens.
    real = torch.float64 if x.dtype == torch.float64 else torch.float32
    freq = base ** (-torch.arange(0, K // 2, device=x.device, dtype=real) * 2 / K)  # (K/2,)
    pos = torch.arange(start, start + L, device=x.device, dtype=real)  # (L,)
    angle = pos[:, None] * freq[None, :]  # (L, K/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., : K // 2], x[..., K // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √K + causal mask) v for q, k, v (B, H, L, K); the query at n sees keys 0..n."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def causal_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`causal_attention` written out: scores, a -inf mask above the diagonal, softmax, weighted sum."""
    L = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, L, L)
    future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v


class Attention(nn.Module):
    """Causal multi-head softmax attention with rotary positions as a mixer: (B, L, D) -> (B, L, D)."""

    config_class = AttentionConfig
    no_learned_transition = "softmax attention has no state transition"  # so nothing is tagged (baselines/contract.py)

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.config = config
        D = config.d_model
        self.qkv_proj = nn.Linear(D, 3 * D, bias=False)
        self.out_proj = nn.Linear(D, D, bias=False)

    def _heads(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, L, D) -> rotated q, rotated k and v, each (B, H, L, K)."""
        B, L, _ = x.shape
        H, K = self.config.num_heads, self.config.head_dim
        q, k, v = self.qkv_proj(x).view(B, L, 3, H, K).permute(2, 0, 3, 1, 4)  # 3 × (B, H, L, K)
        base = self.config.rotary_base
        return apply_rotary(q, start, base), apply_rotary(k, start, base), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        B, L, D = x.shape
        q, k, v = self._heads(x, start=0)
        y = causal_attention(q, k, v)  # (B, H, L, K)
        return self.out_proj(y.transpose(1, 2).reshape(B, L, D))

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> KVCache:
        """An empty cache: zero cached tokens."""
        H, K = self.config.num_heads, self.config.head_dim
        empty = torch.zeros(batch_size, H, 0, K, dtype=self.qkv_proj.weight.dtype, device=device)
        return KVCache(empty, empty)

    def step(self, x: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:  # (B, D)
        q, k, v = self._heads(x[:, None], start=cache.length)  # (B, H, 1, K) each
        cache = KVCache(torch.cat((cache.k, k), dim=2), torch.cat((cache.v, v), dim=2))
        # The one query is the newest token, so it may see every cached key: no mask.
        y = F.scaled_dot_product_attention(q, cache.k, cache.v)  # (B, H, 1, K)
        return self.out_proj(y.reshape(x.shape)), cache

    def state_size(self, seq_len: int) -> int:
        """The KV cache after seq_len tokens: keys and values, D each per token, 2·L·D real scalars."""
        return 2 * seq_len * self.config.d_model


__all__ = ["Attention", "AttentionConfig", "KVCache", "apply_rotary", "causal_attention", "causal_attention_ref"]
