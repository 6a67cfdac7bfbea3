"""The one backbone every model is trained in, so that only the mixer differs between models.

    embedding -> n_layers × [x + mixer(norm x); x + MLP(norm x) (optional)] -> norm -> tied head

Pre-norm residual blocks as in nanoGPT, RMSNorm, GELU MLP. The head shares the embedding matrix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gateloop.mixer import MixerConfig, is_transition, num_real_parameters


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int
    n_layers: int = 2
    mlp: bool = True
    mlp_ratio: int = 2

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layers", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LMConfig: {name}={value!r} must be a positive int")
        if not isinstance(self.mlp, bool):
            raise ValueError(f"LMConfig: mlp={self.mlp!r} must be a bool")


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, ratio * d_model)
        self.down = nn.Linear(ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, mixer: nn.Module, d_model: int, config: LMConfig) -> None:
        super().__init__()
        self.mixer_norm = nn.RMSNorm(d_model)
        self.mixer = mixer
        self.mlp_norm = nn.RMSNorm(d_model) if config.mlp else None
        self.mlp = MLP(d_model, config.mlp_ratio) if config.mlp else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        x = x + self.mixer(self.mixer_norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x

    def step(self, x: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:  # (B, D)
        y, cache = self.mixer.step(self.mixer_norm(x), cache)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, cache


class LM(nn.Module):
    """A causal language model over token ids with a pluggable mixer.

    `mixer_cls(mixer_config)` is called once per layer; D is `mixer_config.d_model`.
    """

    def __init__(self, config: LMConfig, mixer_cls: type[nn.Module], mixer_config: MixerConfig) -> None:
        super().__init__()
        self.config = config
        self.mixer_config = mixer_config
        d_model = mixer_config.d_model
        self.embedding = nn.Embedding(config.vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(mixer_cls(mixer_config), d_model, config) for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 -> logits (B, L, vocab)."""
        x = self.embedding(tokens)  # (B, L, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.embedding.weight.T

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> list[Any]:
        return [block.mixer.init_cache(batch_size, device) for block in self.blocks]

    def step(self, token: torch.Tensor, cache: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """(B,) int64 and the per-layer caches -> logits (B, vocab) and the updated caches."""
        x = self.embedding(token)  # (B, D)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block.step(x, layer_cache)
            new_cache.append(layer_cache)
        return self.norm(x) @ self.embedding.weight.T, new_cache

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Real trainable parameters (complex counted twice); the tied embedding excluded by default."""
        total = num_real_parameters(self)
        return total - self.embedding.weight.numel() if non_embedding else total

    def state_size(self, seq_len: int) -> int:
        """Real scalars per sequence of decoding state over all layers after seq_len tokens."""
        return sum(block.mixer.state_size(seq_len) for block in self.blocks)

    def param_groups(self, weight_decay: float, lr: float, transition_lr_factor: float = 1.0) -> list[dict]:
        """AdamW groups: decayed weights; undecayed biases/norms/embedding; transition parameters.

        Transition parameters (tagged by their mixer) get no weight decay and lr × transition_lr_factor,
        as the authors of S4/S5/LRU/Mamba/GateLoop treat their state-transition parameters.
        """
        decay, no_decay, transition = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if is_transition(p):
                transition.append(p)
            elif p.ndim >= 2 and not name.startswith("embedding"):
                decay.append(p)
            else:
                no_decay.append(p)
        groups = [
            {"params": decay, "weight_decay": weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
            {"params": transition, "weight_decay": 0.0, "lr": lr * transition_lr_factor},
        ]
        return [g for g in groups if g["params"]]
