"""RetNet: multi-scale retention (Sun et al. 2023, "Retentive Network: A Successor to Transformer for Large
Language Models", arXiv:2307.08621), run on GateLoop's engines with a fixed gate.

Per head h, with key width K and value width V (Eq. 1-5 of the paper):

    S_n = γ_h e^{iθ} ⊙ S_{n-1} + k_nᵀ v_n          S_n ∈ C^{K×V},   γ_h = 1 - 2^(-5-h)
    o_n = Re(q_n · S_n)
        = Σ_{m≤n} γ_h^{n-m} Σ_k q_{n,k} k_{m,k} cos((n-m) θ_k) v_m
    Y   = W_o ( GroupNorm_h(o) ⊙ SiLU(W_g x) ),    q = W_q x,  k = W_k x / √K,  v = W_v x

This is GateLoop's recurrence with the input-independent gate a_{h,k} = γ_h e^{iθ_k}, so the layer calls
`gateloop_scan` (mode from the config: "recurrent", "scan", "chunked" or "attention" = the paper's
parallel form) and decodes with `gateloop_step`.

Why the complex gate equals RetNet's rotated q/k form: Π_{m<j≤n} a_j = γ^{n-m} e^{i(n-m)θ}, and with real
q, k the Re readout gives q_n k_m γ^{n-m} cos((n-m)θ) = γ^{n-m} (q_n cos nθ · k_m cos mθ + q_n sin nθ ·
k_m sin mθ). That is the parallel form (Q' K'ᵀ ⊙ D) V with D_nm = γ^{n-m} (m ≤ n) and q, k rotated by
their own position: q'_n = [q_n cos nθ, q_n sin nθ], k'_m = [k_m cos mθ, k_m sin mθ]. The test file
writes that parallel form out plainly and checks the layer against it.

Departures from the reference implementation (microsoft/torchscale), and why:
- Rotation per key channel, not per channel pair. torchscale rotates pairs (x_{2i}, x_{2i+1}) as one
  complex number (xPos), which adds sin((n-m)θ) cross terms between the two channels of a pair. The
  paper's Eq. (3)-(5) put one phase e^{inθ} on each real channel, which is exactly what a fixed complex
  gate on GateLoop's real-q/k engine computes; we implement the paper's equations so that RetNet is a
  special case of GateLoop (docs/design.md §3.2), differing only in the gate being fixed. θ_k = 10000^{-k/K}
  spreads the frequencies over the K channels as rotary embeddings do.
- No score normalisation (torchscale divides the decay rows by their √sum and the retention scores by
  max(Σ|·|, 1)). Both rescale each (position, head) by one positive scalar s, and the per-head norm
  maps s·o to (o - μ) / √(σ² + eps / s²): it removes s only while the head's variance σ² (after the
  rescaling, s²σ²) is far above eps. At our init it is not far above torchscale's eps of 1e-5 (σ² ≈
  2.4e-5 with θ = 0 at D = 64, and the decay normalisation divides it by up to Σγ^j ≈ 2^(5+h)), so
  the norm uses NORM_EPS = 1e-12, negligible at these scales and harmless in fp32 (σ² = 0, a constant
  head, still maps to 0). With it this layer equals a torchscale-style layer with both normalisations
  and the same weights (a test, at the init scale). They exist for fp16 range; our recurrence runs in
  fp32/complex64.
- The per-head norm is a GroupNorm without affine parameters, i.e. torchscale's original per-head
  LayerNorm (since 2023-09 torchscale uses an RMSNorm there): a per-channel scale before the gate
  product and W_o is absorbed by W_o.
Initialisation follows torchscale: Xavier-uniform with gain 2^-2.5 for W_q, W_k, W_v, W_g and gain 1 for
W_o; no biases. Value width is `value_factor` × the key width (2 in the paper).

RetNet has no learned transition parameters: γ and θ are fixed buffers, so nothing is tagged with
`mark_transition`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gateloop.mixer import MixerConfig
from gateloop.scan import MODES, gateloop_scan, gateloop_step

# The per-head norm's eps: far below the per-head variance at any scale this layer meets (see the
# module docstring), so the norm is scale-invariant and torchscale's score normalisations are moot.
NORM_EPS = 1e-12


@dataclass(frozen=True)
class RetNetConfig(MixerConfig):
    """Multi-scale retention; H = num_heads, K = d_model / H, V = value_factor · K."""

    num_heads: int = 4
    value_factor: int = 2
    mode: str = "chunked"
    chunk_size: int = 64
    rotary_base: float = 10000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_heads", "value_factor", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RetNetConfig: {name}={value!r} must be a positive int")
        if self.d_model % self.num_heads != 0:
            raise ValueError(
                f"RetNetConfig: d_model={self.d_model} must be divisible by num_heads={self.num_heads}"
            )
        if self.mode not in MODES:
            raise ValueError(f"RetNetConfig: mode={self.mode!r} is not one of {sorted(MODES)}")
        if not isinstance(self.rotary_base, (int, float)) or self.rotary_base <= 1:
            raise ValueError(f"RetNetConfig: rotary_base={self.rotary_base!r} must be a number > 1")

    @property
    def key_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def value_dim(self) -> int:
        return self.value_factor * self.key_dim


def retention_decays(num_heads: int) -> torch.Tensor:
    """γ_h = 1 - 2^(-5-h), h = 0..H-1: the heads' memory spans 32, 64, 128, ... tokens. (H,) float64."""
    return 1.0 - 2.0 ** (-5.0 - torch.arange(num_heads, dtype=torch.float64))


def retention_angles(key_dim: int, base: float = 10000.0) -> torch.Tensor:
    """θ_k = base^(-k/K), k = 0..K-1: rotary-style frequencies from 1 rad/token down to ~1/base. (K,)"""
    return base ** (-torch.arange(key_dim, dtype=torch.float64) / key_dim)


class RetNet(nn.Module):
    """Multi-scale retention as a mixer: (B, L, D) -> (B, L, D)."""

    config_class = RetNetConfig
    no_learned_transition = "γ_h and θ are fixed buffers"  # so nothing is tagged (baselines/contract.py)

    def __init__(self, config: RetNetConfig) -> None:
        super().__init__()
        self.config = config
        D, H, K, V = config.d_model, config.num_heads, config.key_dim, config.value_dim
        self.q_proj = nn.Linear(D, H * K, bias=False)
        self.k_proj = nn.Linear(D, H * K, bias=False)
        self.v_proj = nn.Linear(D, H * V, bias=False)
        self.g_proj = nn.Linear(D, H * V, bias=False)
        self.out_proj = nn.Linear(H * V, D, bias=False)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.g_proj):
            nn.init.xavier_uniform_(proj.weight, gain=2**-2.5)
        nn.init.xavier_uniform_(self.out_proj.weight)
        # Fixed transition, kept in float64 and cast per call so a float64 model gets a complex128 gate.
        self.register_buffer("log_decay", retention_decays(H).log(), persistent=False)  # (H,)
        self.register_buffer("angle", retention_angles(K, config.rotary_base), persistent=False)  # (K,)

    def gate(self, dtype: torch.dtype) -> torch.Tensor:
        """The fixed transition a_{h,k} = γ_h e^{iθ_k}, (H, K) complex, at least fp32 (docs/design.md §3.5:
        gates in fp32)."""
        real = torch.float64 if dtype == torch.float64 else torch.float32
        magnitude = self.log_decay.to(real).exp()[:, None].expand(-1, self.angle.numel())  # (H, K)
        return torch.polar(magnitude, self.angle.to(real).expand_as(magnitude))

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., D) -> q, k (..., H, K) and v (..., H, V) in the recurrence's precision."""
        H, K, V = self.config.num_heads, self.config.key_dim, self.config.value_dim
        shape = x.shape[:-1]
        # The recurrence runs in fp32/complex64 even under bf16 autocast (float64 for a float64 model).
        real = torch.float64 if x.dtype == torch.float64 else torch.float32
        q = self.q_proj(x).to(real).view(*shape, H, K)
        k = self.k_proj(x).to(real).view(*shape, H, K) * K**-0.5  # the paper scales k, not the scores
        v = self.v_proj(x).to(real).view(*shape, H, V)
        return q, k, v

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o (..., H, V) retention readout and x (..., D) -> (..., D)."""
        H, V = self.config.num_heads, self.config.value_dim
        shape = o.shape[:-2]
        o = F.group_norm(o.reshape(-1, H * V), H, eps=NORM_EPS).view(*shape, H * V).to(x.dtype)  # per head
        return self.out_proj(o * F.silu(self.g_proj(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        q, k, v = self._qkv(x)  # (B, L, H, K), (B, L, H, K), (B, L, H, V)
        a = self.gate(q.dtype).expand(*q.shape)  # (B, L, H, K), a view: the gate is the same at every step
        with torch.autocast(device_type=x.device.type, enabled=False):  # autocast does not cover complex
            o, _ = gateloop_scan(q, k, v, a, mode=self.config.mode, chunk_size=self.config.chunk_size)
        return self._output(o, x)  # (B, L, D)

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The zero state S_0, (B, H, K, V) complex."""
        complex_dtype = torch.complex128 if self.q_proj.weight.dtype == torch.float64 else torch.complex64
        H, K, V = self.config.num_heads, self.config.key_dim, self.config.value_dim
        return torch.zeros(batch_size, H, K, V, dtype=complex_dtype, device=device)

    def step(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, D)
        q, k, v = self._qkv(x)  # (B, H, K), (B, H, K), (B, H, V)
        # No position index is needed: the rotation lives in the gate, so it accumulates in the state.
        with torch.autocast(device_type=x.device.type, enabled=False):
            o, cache = gateloop_step(q, k, v, self.gate(q.dtype).expand(*q.shape), cache)
        return self._output(o, x), cache

    def state_size(self, seq_len: int) -> int:
        """2·H·K·V real scalars (a complex K×V state per head), whatever the length."""
        c = self.config
        return 2 * c.num_heads * c.key_dim * c.value_dim


__all__ = ["NORM_EPS", "RetNet", "RetNetConfig", "retention_angles", "retention_decays"]
