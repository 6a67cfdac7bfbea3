"""The GateLoop mixer: a causal token mixer whose complex state transition is computed from the input.

Katsch, "GateLoop: Fully Data-Controlled Linear Recurrence for Sequence Modeling" (ICLR 2024 workshop,
arXiv:2311.01927). Per head h, with key width K and value width V, input x_n ∈ R^D:

    q_n, k_n = W_q x_n, W_k x_n / √K  ∈ R^K          v_n = W_v x_n ∈ R^V
    a_n      = σ(W_α x_n + b_α) · exp(i (W_β x_n + b_β))  ∈ C^K      (0 < |a_n| < 1)
    S_n      = diag(a_n) S_{n-1} + k_nᵀ v_n  ∈ C^{K×V}               (S_0 = 0)
    y_n      = Re(q_n S_n)  ∈ R^V
    out_n    = W_o [ GroupNorm(y_n) ⊙ SiLU(W_g x_n) ]                (norm and gate optional)

Heads range from "max-headed" (H = D, K = V = 1: everything elementwise, the paper's setting) to a few
wide heads (K = V = D / H, a matrix state per head). The recurrence is run by `gateloop_scan` in the
configured computation mode; decoding uses `gateloop_step` on the same gates and projections.

Ablation switches (`GateLoopConfig`), one component of the gate at a time:
    magnitude  "data"  |a_n| = σ(W_α x_n + b_α)            (GateLoop)
               "data_head" |a_n| = σ(w_α,h · x_n + b_α,h): one data magnitude per head, shared by its K
                       channels (Mamba-2's scalar decay per head; with a data phase per channel, the
                       Mamba-3 layout on GateLoop's engine)
               "fixed" |a|   = σ(λ), λ ∈ R^{H×K} learned, independent of x
               "one"   |a|   = 1: no decay at all (with a data phase the state never forgets; that is
                       the point of the ablation)
    phase      "data"  arg a_n = W_β x_n + b_β              (GateLoop)
               "fixed" arg a   = θ ∈ R^{H×K} learned, independent of x
               "zero"  arg a   = 0: real gates
               "sign"  arg a_n ∈ {0, π}: a signed real gate a_n = 2σ(W_α x_n + b_α) − 1 ∈ (−1, 1), its
                       sign and magnitude from one pre-activation. This is Grazzi et al.'s range extension
                       ("Unlocking state-tracking in linear RNNs through negative eigenvalues", ICLR 2025:
                       a gate in (0, 1) mapped to 2·gate − 1), applied to GateLoop's sigmoid magnitude;
                       it needs magnitude = "data". Computed as tanh(u/2), which equals 2σ(u) − 1 without
                       the cancellation near a = 0.
    magnitude_param "sigmoid_of_modulus": one complex pre-activation z_n = W_z x_n + b_z with
               |a_n| = σ(|z_n|) and arg a_n = arg z_n, as in some public GateLoop code. It confines
               |a| to [0.5, 1) and couples magnitude and phase, so it is offered only with
               magnitude = phase = "data".
Special cases: magnitude "fixed" + phase "fixed" is a learned complex diagonal (S4D/S5/LRU family; with
one decay per head, RetNet retention); magnitude "data" + phase "zero" is GLA/Mamba-2-like gating;
magnitude "one" + phase "zero" is causal linear attention; phase "sign" is the negative-eigenvalue gate
of Grazzi et al. (a real a_n that can flip the state's sign: enough for parity, not for Z_3's rotation).
Because q, k, v are real and only Re(q S) is read out, conjugating one channel's gates at every step
leaves y unchanged: the sign of a channel's phase is not identifiable (keep that in mind when inspecting
learned gates).

Initialisation (our choice; the paper does not pin one down):
  - Magnitude: σ(b_α) is spread deterministically over the H·K channels from `magnitude_init_min` = 0.9
    to `magnitude_init_max` = 0.99, geometrically in 1 − |a|, i.e. memory timescales 1/(1 − |a|)
    log-spaced from 10 to 100 tokens. Long memory at init is what LRU (ring init, r_min ≈ 0.9 to
    r_max ≈ 0.999) and RetNet (γ_h = 1 − 2^(−5−h), also geometric in 1 − γ) do; spreading it gives the
    model several timescales to choose from before any gate has learned to depend on x. With phase
    "sign" the bias is logit((1 + m)/2) for the same spread m, so that every gate variant starts from the
    same |a| (the variants differ in one thing); with magnitude "data_head" the spread runs over the H heads.
  - Phase: b_β spread linearly over (0, `phase_init_max`], the fastest rotation on the fastest-decaying
    channel and the slowest on the longest memory, as rotary/RetNet frequencies are ordered. The
    default π/10 is LRU's small max_phase for long-range tasks: at init the gate is close to a real
    decay (GLA-like) and rotation is learned where it helps, instead of starting from the aliasing of
    fast phases over long memories.
  - Gate weights W_α, W_β (or W_z) start small: N(0, (gain/√D)²) with gain `gate_init_gain` = 0.1, so
    for unit-RMS inputs (the backbone pre-normalises) the data-controlled part of each pre-activation
    has std ≈ 0.1 and the initial gates stay near the spread above. Their gradient does not depend on
    their scale, so data control is learned at full speed.
  - Gate parameters are transition parameters (no weight decay; optional lr factor in the backbone).

Departures from the paper, with reasons:
  - k is scaled by 1/√K as in RetNet/linear attention, so state magnitudes do not grow with K.
  - The output GroupNorm is per head when V > 1. A per-head norm of a single scalar (V = 1, max-headed)
    is identically zero, so there one group spans all H·V channels (a LayerNorm over D).
  - Gates are computed in fp32 even under autocast and the recurrence in complex64 (autocast does not
    cover complex dtypes, and low-precision gates compound over thousands of steps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gateloop._build import build_refusal
from gateloop.mixer import MixerConfig, is_int, is_real, mark_transition
from gateloop.real_form import fla_refusal
from gateloop.scan import COMPILED_MODES, GPU_MODES, MODES, gateloop_scan, gateloop_step

MAGNITUDES = ("data", "data_head", "fixed", "one")
PHASES = ("data", "fixed", "zero", "sign")
MAGNITUDE_PARAMS = ("sigmoid", "sigmoid_of_modulus")


@dataclass(frozen=True)
class GateLoopConfig(MixerConfig):
    """GateLoop mixer configuration. `num_heads=None` is max-headed (H = D, K = V = 1)."""

    num_heads: int | None = None
    magnitude: str = "data"
    phase: str = "data"
    magnitude_param: str = "sigmoid"
    output_gate: bool = True
    norm: bool = True
    mode: str = "chunked"
    chunk_size: int = 64
    # Initialisation knobs, explained in the module docstring.
    magnitude_init_min: float = 0.9
    magnitude_init_max: float = 0.99
    phase_init_max: float = math.pi / 10
    gate_init_gain: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if self.num_heads is not None:
            if not is_int(self.num_heads) or self.num_heads < 1:
                raise ValueError(f"{name}: num_heads={self.num_heads!r} must be None (max-headed) or a positive int")
            if self.d_model % self.num_heads != 0:
                raise ValueError(
                    f"{name}: num_heads={self.num_heads} must divide d_model={self.d_model} "
                    f"(remainder {self.d_model % self.num_heads})"
                )
        for field, choices in (("magnitude", MAGNITUDES), ("phase", PHASES), ("magnitude_param", MAGNITUDE_PARAMS)):
            if getattr(self, field) not in choices:
                raise ValueError(f"{name}: {field}={getattr(self, field)!r} must be one of {choices}")
        if self.magnitude_param == "sigmoid_of_modulus" and (self.magnitude, self.phase) != ("data", "data"):
            raise ValueError(
                f"{name}: magnitude_param='sigmoid_of_modulus' derives magnitude and phase from one complex "
                f"pre-activation, so it needs magnitude='data' and phase='data' "
                f"(got magnitude={self.magnitude!r}, phase={self.phase!r})"
            )
        if self.phase == "sign" and self.magnitude != "data":
            raise ValueError(
                f"{name}: phase='sign' is the signed real gate 2σ(W_α x + b_α) − 1, whose sign and magnitude come "
                f"from one data-controlled pre-activation, so it needs magnitude='data' (got {self.magnitude!r})"
            )
        for field in ("output_gate", "norm"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{name}: {field}={getattr(self, field)!r} must be a bool")
        modes = [*MODES, *GPU_MODES, *COMPILED_MODES]
        if not isinstance(self.mode, str) or self.mode not in modes:
            raise ValueError(f"{name}: mode={self.mode!r} must be one of the gateloop_scan modes {sorted(modes)}")
        if self.mode == "fla" and fla_refusal():
            raise ValueError(f"{name}: {fla_refusal()}")
        if self.mode == "fused":
            if self.num_heads is not None and self.num_heads != self.d_model:
                raise ValueError(f"{name}: mode='fused' is for max-headed GateLoop (num_heads = d_model = "
                                 f"{self.d_model}, not {self.num_heads}): use mode='chunked'")
            refusal = build_refusal("mode='chunked'")
            if refusal:
                raise ValueError(f"{name}: mode='fused': {refusal}")
        if not is_int(self.chunk_size) or self.chunk_size < 1:
            raise ValueError(f"{name}: chunk_size={self.chunk_size!r} must be a positive int")
        lo, hi = self.magnitude_init_min, self.magnitude_init_max
        if not (is_real(lo) and is_real(hi) and 0.0 < lo <= hi < 1.0):
            raise ValueError(
                f"{name}: magnitude_init_min={lo!r}, magnitude_init_max={hi!r} must satisfy 0 < min <= max < 1"
            )
        if self.magnitude_param == "sigmoid_of_modulus" and lo < 0.5:
            raise ValueError(
                f"{name}: with magnitude_param='sigmoid_of_modulus' |a| = σ(|z|) >= 0.5, so "
                f"magnitude_init_min={lo} must be >= 0.5"
            )
        if not is_real(self.phase_init_max) or not 0.0 <= self.phase_init_max <= math.pi:
            raise ValueError(f"{name}: phase_init_max={self.phase_init_max!r} must lie in [0, π]")
        if not is_real(self.gate_init_gain) or self.gate_init_gain < 0.0:
            raise ValueError(f"{name}: gate_init_gain={self.gate_init_gain!r} must be a real number >= 0")

    @property
    def heads(self) -> int:
        """H: D when max-headed, else num_heads."""
        return self.d_model if self.num_heads is None else self.num_heads

    @property
    def head_dim(self) -> int:
        """K = V = D / H."""
        return self.d_model // self.heads


class GateLoop(nn.Module):
    """GateLoop mixer, (B, L, D) -> (B, L, D), causal; decodes token by token via `init_cache` / `step`.

    Parameters: `qkv` (W_q, W_k, W_v stacked), `gate` (W_g, if output_gate), `norm` (if norm), `out` (W_o),
    and the transition parameters, tagged with `mark_transition` (no weight decay), whichever the config
    has: `magnitude_proj` (W_α, b_α; also for "data_head" and phase "sign") or `magnitude_logit` (λ, "fixed");
    `phase_proj` (W_β, b_β) or `phase_angle` (θ, "fixed"); `modulus_proj` (W_z, b_z, "sigmoid_of_modulus").
    """

    config_class = GateLoopConfig

    def __init__(self, config: GateLoopConfig) -> None:
        super().__init__()
        self.config = config
        D, H, K = config.d_model, config.heads, config.head_dim
        V = K
        self.H, self.K, self.V = H, K, V
        self.qkv = nn.Linear(D, H * (2 * K + V), bias=False)

        magnitude_bias, phase_bias = self._initial_gate_biases()  # (H, K) each
        self.magnitude_proj = self.magnitude_logit = self.phase_proj = self.phase_angle = self.modulus_proj = None
        if config.magnitude_param == "sigmoid_of_modulus":
            # One complex pre-activation z = W_z x + b_z, stored as real and imaginary halves.
            self.modulus_proj = self._gate_projection(2 * H * K)
            with torch.no_grad():
                # |b_z| = logit of the target magnitude, so σ(|z|) at x = 0 matches the spread of b_α.
                re, im = magnitude_bias * phase_bias.cos(), magnitude_bias * phase_bias.sin()
                self.modulus_proj.bias.copy_(torch.cat([re.flatten(), im.flatten()]))
            mark_transition(self.modulus_proj.weight, self.modulus_proj.bias)
        else:
            if config.magnitude in ("data", "data_head"):
                if config.magnitude == "data_head":  # one magnitude per head, spread over the H heads
                    magnitude_bias = self._magnitude_logits(H)
                elif config.phase == "sign":  # 2σ(b) − 1 = m: the same initial |a| as the other gates
                    magnitude_bias = torch.logit((1.0 + torch.sigmoid(magnitude_bias.double())) / 2).float()
                self.magnitude_proj = self._gate_projection(magnitude_bias.numel())
                with torch.no_grad():
                    self.magnitude_proj.bias.copy_(magnitude_bias.flatten())
                mark_transition(self.magnitude_proj.weight, self.magnitude_proj.bias)
            elif config.magnitude == "fixed":
                self.magnitude_logit = nn.Parameter(magnitude_bias.clone())
                mark_transition(self.magnitude_logit)
            if config.phase == "data":
                self.phase_proj = self._gate_projection(H * K)
                with torch.no_grad():
                    self.phase_proj.bias.copy_(phase_bias.flatten())
                mark_transition(self.phase_proj.weight, self.phase_proj.bias)
            elif config.phase == "fixed":
                self.phase_angle = nn.Parameter(phase_bias.clone())
                mark_transition(self.phase_angle)

        # A per-head norm over V = 1 scalar is identically 0: max-headed normalises across all channels.
        self.norm = nn.GroupNorm(H if V > 1 else 1, H * V) if config.norm else None
        self.gate = nn.Linear(D, H * V, bias=False) if config.output_gate else None
        self.out = nn.Linear(H * V, D, bias=False)

    def _initial_gate_biases(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Magnitude logits and phases at init, spread over the H·K channels: (H, K) each."""
        channels = self.H * self.K
        # Fastest rotation on the fastest-forgetting channel; the longest memory rotates slowest.
        phase = self.config.phase_init_max * torch.arange(channels, 0, -1, dtype=torch.float64) / channels
        return self._magnitude_logits(channels).view(self.H, self.K), phase.float().view(self.H, self.K)

    def _magnitude_logits(self, channels: int) -> torch.Tensor:
        """logit |a| at init for `channels` gates: (channels,), |a| from min to max, geometric in 1 − |a|."""
        lo, hi = self.config.magnitude_init_min, self.config.magnitude_init_max
        t = torch.linspace(0.0, 1.0, channels, dtype=torch.float64)
        forget = (1.0 - lo) ** (1.0 - t) * (1.0 - hi) ** t  # 1 − |a|, geometric from 1 − lo to 1 − hi
        return torch.logit(1.0 - forget).float()

    def _gate_projection(self, out_features: int) -> nn.Linear:
        layer = nn.Linear(self.config.d_model, out_features)
        nn.init.normal_(layer.weight, std=self.config.gate_init_gain / math.sqrt(self.config.d_model))
        return layer

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """The transition: (B, L, D) -> a (B, L, H, K) complex64 (any leading dims, e.g. (B, D) -> (B, H, K)).

        Computed in fp32 with autocast off: complex dtypes are outside autocast, and a gate rounded to
        bf16 (|a| = 0.99 has 2 significant digits there) compounds its error over every later step.
        """
        shape = (*x.shape[:-1], self.H, self.K)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if self.modulus_proj is not None:
                z = F.linear(x, self.modulus_proj.weight.float(), self.modulus_proj.bias.float())
                re, im = z.view(*x.shape[:-1], 2, self.H, self.K).unbind(-3)  # (..., H, K) each
                modulus = torch.hypot(re, im)
                # z / |z| is the unit phasor; the clamp only guards the measure-zero point z = 0.
                scale = torch.sigmoid(modulus) / modulus.clamp_min(torch.finfo(x.dtype).tiny)
                return torch.complex(scale * re, scale * im)
            if self.magnitude_proj is not None:
                logit = F.linear(x, self.magnitude_proj.weight.float(), self.magnitude_proj.bias.float())
                if self.config.phase == "sign":  # a = 2σ(u) − 1 = tanh(u/2) ∈ (−1, 1), exactly real
                    signed = torch.tanh(0.5 * logit).view(shape)
                    return torch.complex(signed, torch.zeros_like(signed))
                # (..., H·K), or (..., H) for "data_head": one magnitude per head, broadcast over its K keys
                magnitude = torch.sigmoid(logit).view(*x.shape[:-1], self.H, -1).expand(shape)
            elif self.magnitude_logit is not None:
                magnitude = torch.sigmoid(self.magnitude_logit.float()).expand(shape)
            else:
                magnitude = x.new_ones(()).expand(shape)
            if self.phase_proj is not None:
                phase = F.linear(x, self.phase_proj.weight.float(), self.phase_proj.bias.float()).view(shape)
            elif self.phase_angle is not None:
                phase = self.phase_angle.float().expand(shape)
            else:
                # Real gates: build the complex number directly so that imag(a) is exactly 0.
                return torch.complex(magnitude, torch.zeros_like(magnitude))
            return torch.polar(magnitude.contiguous(), phase.contiguous())

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., D) -> q, k (..., H, K) and v (..., H, V), in fp32 for the recurrence."""
        H, K, V = self.H, self.K, self.V
        q, k, v = self.qkv(x).float().split([H * K, H * K, H * V], dim=-1)
        lead = x.shape[:-1]
        return q.view(*lead, H, K), k.view(*lead, H, K) * K**-0.5, v.view(*lead, H, V)

    def _output(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y (..., H, V) and the input x (..., D) -> (..., D): norm, output gate, output projection."""
        y = y.flatten(-2).to(x.dtype)  # (..., H·V), back from the fp32 recurrence to the stream's dtype
        if self.norm is not None:
            # GroupNorm wants (N, C): fold every leading dim into N; each position is normalised alone.
            y = self.norm(y.reshape(-1, y.shape[-1])).view(y.shape)
        if self.gate is not None:
            y = y * F.silu(self.gate(x))
        return self.out(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D)."""
        q, k, v = self._project(x)  # (B, L, H, K), (B, L, H, K), (B, L, H, V)
        a = self.gates(x)  # (B, L, H, K) complex64
        with torch.autocast(device_type=x.device.type, enabled=False):
            y, _ = gateloop_scan(q, k, v, a, mode=self.config.mode, chunk_size=self.config.chunk_size)  # (B, L, H, V)
        return self._output(y, x)

    def init_cache(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The state S_0 = 0: (B, H, K, V) complex64."""
        return torch.zeros(batch_size, self.H, self.K, self.V, dtype=torch.complex64, device=device)

    def step(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: x (B, D) and the state (B, H, K, V) -> (B, D) and the next state."""
        q, k, v = self._project(x)  # (B, H, K), (B, H, K), (B, H, V)
        a = self.gates(x)  # (B, H, K)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y, cache = gateloop_step(q, k, v, a, cache)  # (B, H, V)
        return self._output(y, x), cache

    def state_size(self, seq_len: int) -> int:
        """Real scalars of the decoding state: one complex K×V matrix per head, independent of seq_len."""
        return 2 * self.H * self.K * self.V
