"""The contract every sequence mixer (GateLoop and each baseline) meets to sit in the shared backbone.

A mixer is a causal map (B, L, D) -> (B, L, D): output n depends on inputs 0..n only. Recurrent mixers
also decode token by token through `init_cache` / `step`, which must reproduce `forward` exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class MixerConfig:
    """Base of every mixer config; subclasses add their own fields (all with defaults)."""

    d_model: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.d_model, int) or self.d_model < 1:
            raise ValueError(f"{type(self).__name__}: d_model={self.d_model!r} must be a positive int")


@runtime_checkable
class Mixer(Protocol):
    config: MixerConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), causal."""

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> Any:
        """The decoding state before the first token (for attention: an empty KV cache)."""

    def step(self, x: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """One token: (B, D) and the cache -> (B, D) and the updated cache."""

    def state_size(self, seq_len: int) -> int:
        """Real scalars per sequence the decoding cache holds after seq_len tokens (complex counts 2)."""


def mark_transition(*params: nn.Parameter) -> None:
    """Tag parameters that define a state transition (gates, eigenvalues, Δ).

    The optimiser exempts them from weight decay and may scale their learning rate, as the authors of
    each model do. Tagging is explicit: inferring it from tensor rank mislabels e.g. a gate's bias.
    """
    for p in params:
        p.is_transition = True  # type: ignore[attr-defined]


def is_transition(p: nn.Parameter) -> bool:
    return bool(getattr(p, "is_transition", False))


def num_real_parameters(module: nn.Module) -> int:
    """Trainable parameter count with complex parameters counted twice (real and imaginary part)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters() if p.requires_grad)


# Validation and precision helpers shared by every mixer config and mixer.


def is_int(value: object) -> bool:
    """An int that is not a bool (True is an int in Python, never a valid width)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """t in fp32, or kept in fp64: recurrences never run below single precision (autocast may hand bf16)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
