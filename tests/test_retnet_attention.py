"""RetNet and softmax attention: each against a plainly written twin, its forms against each other.

The registry-wide contract (shape, causality, determinism, decode == forward in the LM, parameter
matching) lives in test_mixers.py; here are the per-model equivalences and a fit-a-trivial-task check.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines.attention import Attention, AttentionConfig, apply_rotary, causal_attention, causal_attention_ref
from baselines.retnet import NORM_EPS, RetNet, RetNetConfig
from gateloop.layer import GateLoop, GateLoopConfig
from gateloop.scan import MODES, gateloop_scan

ENGINE_MODES = ("recurrent", "scan", "chunked", "attention")


def _need(mode: str) -> None:
    if mode not in MODES:
        pytest.skip(f"gateloop_scan mode {mode!r} is not implemented yet (have {sorted(MODES)})")


def _retnet(mode: str = "recurrent", d_model: int = 12, num_heads: int = 3, seed: int = 0, **kw) -> RetNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return RetNet(RetNetConfig(d_model=d_model, num_heads=num_heads, mode=mode, **kw)).double()


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def retnet_parallel_plain(layer: RetNet, x: torch.Tensor) -> torch.Tensor:
    """RetNet's parallel form from the paper, written independently of the layer's own code.

    Per head: Q K'ᵀ ⊙ D with D_nm = γ^(n-m) for m ≤ n (0 above), q and k rotated by their own positions
    through cos/sin (one phase per key channel), k scaled by 1/√K; then GroupNorm per head, SiLU gate, W_o.
    """
    B, L, _ = x.shape
    H, K, V = layer.config.num_heads, layer.config.key_dim, layer.config.value_dim
    q = (x @ layer.q_proj.weight.T).view(B, L, H, K)
    k = (x @ layer.k_proj.weight.T).view(B, L, H, K) / math.sqrt(K)
    v = (x @ layer.v_proj.weight.T).view(B, L, H, V)
    theta = torch.tensor([10000.0 ** (-j / K) for j in range(K)], dtype=x.dtype)  # (K,)
    pos = torch.arange(L, dtype=x.dtype)[:, None] * theta  # (L, K): n·θ_k
    q_rot = torch.cat([q * pos.cos()[:, None], q * pos.sin()[:, None]], dim=-1)  # (B, L, H, 2K)
    k_rot = torch.cat([k * pos.cos()[:, None], k * pos.sin()[:, None]], dim=-1)
    heads = []
    for h in range(H):
        gamma = 1.0 - 2.0 ** (-5 - h)
        n = torch.arange(L)[:, None]
        m = torch.arange(L)[None, :]
        decay = torch.where(m <= n, gamma ** (n - m).clamp(min=0).to(x.dtype), torch.zeros((), dtype=x.dtype))
        scores = q_rot[:, :, h] @ k_rot[:, :, h].transpose(-1, -2) * decay  # (B, L, L)
        o = scores @ v[:, :, h]  # (B, L, V)
        mean = o.mean(-1, keepdim=True)
        var = o.var(-1, unbiased=False, keepdim=True)
        heads.append((o - mean) / torch.sqrt(var + NORM_EPS))
    o = torch.cat(heads, dim=-1)  # (B, L, H·V)
    gate = F.silu(x @ layer.g_proj.weight.T)
    return (o * gate) @ layer.out_proj.weight.T


def retnet_torchscale_style(layer: RetNet, x: torch.Tensor) -> torch.Tensor:
    """microsoft/torchscale's MultiScaleRetention.parallel_forward with its two score normalisations,
    written here from the paper and that code's equations, on this layer's weights.

    D_nm = γ^(n-m) / √(Σ_{m'≤n} γ^(n-m')) (decay rows divided by the root of their sum), scores
    S = Q' K'ᵀ ⊙ D divided per row by max(Σ_m |S_nm|, 1) (detached, capped at 5e4), o = S V, then the
    per-head norm (torchscale's LayerNorm without affine; since 2023-09 an RMSNorm), SiLU gate, W_o.
    The rotation is this layer's (one phase per key channel), a separate documented departure, so
    that the comparison isolates the normalisations.
    """
    B, L, _ = x.shape
    H, K, V = layer.config.num_heads, layer.config.key_dim, layer.config.value_dim
    q = (x @ layer.q_proj.weight.T).view(B, L, H, K).transpose(1, 2)  # (B, H, L, K)
    k = (x @ layer.k_proj.weight.T).view(B, L, H, K).transpose(1, 2) * K**-0.5
    v = (x @ layer.v_proj.weight.T).view(B, L, H, V).transpose(1, 2)  # (B, H, L, V)
    pos = torch.arange(L, dtype=x.dtype)[:, None] * layer.angle.to(x.dtype)  # (L, K)
    q_rot = torch.cat([q * pos.cos(), q * pos.sin()], dim=-1)  # (B, H, L, 2K)
    k_rot = torch.cat([k * pos.cos(), k * pos.sin()], dim=-1)
    n, m = torch.arange(L)[:, None], torch.arange(L)[None, :]
    log_gamma = layer.log_decay.to(x.dtype)[:, None, None]  # (H, 1, 1)
    decay = torch.where(m <= n, ((n - m).clamp(min=0) * log_gamma).exp(), torch.zeros((), dtype=x.dtype))
    decay = decay / decay.sum(-1, keepdim=True).sqrt()  # (H, L, L)
    scores = q_rot @ k_rot.transpose(-1, -2) * decay  # (B, H, L, L)
    scores = scores / scores.detach().abs().sum(-1, keepdim=True).clamp(min=1, max=5e4)
    o = (scores @ v).transpose(1, 2)  # (B, L, H, V)
    o = (o - o.mean(-1, keepdim=True)) / torch.sqrt(o.var(-1, unbiased=False, keepdim=True) + NORM_EPS)
    return (o.reshape(B, L, H * V) * F.silu(x @ layer.g_proj.weight.T)) @ layer.out_proj.weight.T


@pytest.mark.parametrize("rotation", ["zero", "default"])
def test_retnet_without_score_normalisations_equals_torchscale_style_at_init_scale(rotation: str) -> None:
    """Both normalisations rescale each (position, head) by a positive scalar, which the per-head norm
    removes only while that head's variance is far above the norm's eps. At our init (D = 64, 4 heads,
    unit-variance input as the pre-norm backbone gives) the variance is ~1e-5-scale, and after
    torchscale's decay normalisation smaller still: the eps must be negligible there."""
    layer = _retnet("attention", d_model=64, num_heads=4)
    if rotation == "zero":
        layer.angle.zero_()  # the case measured in issue 12: per-head variance ≈ 2.4e-5
    x = _randn(2, 64, 64, seed=21)
    q, k, v = layer._qkv(x)
    o, _ = gateloop_scan(q, k, v, layer.gate(q.dtype).expand(*q.shape), mode="attention")
    assert o.var(-1, unbiased=False).median() < 1e-3  # the small scale this test is about
    torch.testing.assert_close(layer(x), retnet_torchscale_style(layer, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ENGINE_MODES)
def test_retnet_equals_plain_parallel_form(mode: str) -> None:
    _need(mode)
    layer = _retnet(mode, chunk_size=4)
    x = _randn(2, 11, 12, seed=1)
    torch.testing.assert_close(layer(x), retnet_parallel_plain(layer, x), rtol=1e-9, atol=1e-9)


def test_retnet_gate_is_fixed_decay_times_rotation() -> None:
    layer = _retnet(d_model=16, num_heads=4)
    a = layer.gate(torch.float64)  # (H, K)
    torch.testing.assert_close(a.abs(), (1 - 2.0 ** (-5 - torch.arange(4.0, dtype=torch.float64)))[:, None].expand(4, 4))
    torch.testing.assert_close(a.angle(), (10000.0 ** (-torch.arange(4.0, dtype=torch.float64) / 4)).expand(4, 4))
    assert not [p for p in layer.parameters() if getattr(p, "is_transition", False)]


@pytest.mark.parametrize("mode", ["recurrent", "chunked"])
def test_retnet_is_gateloop_with_a_fixed_gate(mode: str) -> None:
    """GateLoop with learned-but-input-independent gates, set to σ(λ) = γ_h and θ_k, is RetNet (V = K).

    In float32: GateLoop runs its gates and recurrence in fp32 whatever the model's dtype.
    """
    _need(mode)
    retnet = _retnet(mode, d_model=16, num_heads=4, value_factor=1).float()
    gateloop = GateLoop(GateLoopConfig(d_model=16, num_heads=4, magnitude="fixed", phase="fixed", mode=mode))
    gate = retnet.gate(torch.float32)  # (H, K)
    with torch.no_grad():
        gateloop.qkv.weight.copy_(torch.cat([retnet.q_proj.weight, retnet.k_proj.weight, retnet.v_proj.weight]))
        gateloop.magnitude_logit.copy_(torch.logit(gate.abs()))
        gateloop.phase_angle.copy_(gate.angle())
        gateloop.gate.weight.copy_(retnet.g_proj.weight)
        gateloop.out.weight.copy_(retnet.out_proj.weight)
    gateloop.norm.eps = NORM_EPS  # the same norm: at this init scale GateLoop's eps of 1e-5 is not negligible
    x = _randn(2, 13, 16, seed=14).float()
    torch.testing.assert_close(gateloop(x), retnet(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [m for m in ENGINE_MODES if m != "recurrent"])
def test_retnet_modes_agree_values_and_gradients(mode: str) -> None:
    """Odd length across several chunks; float32 as trained; gradients under a random cotangent."""
    _need(mode)
    x = _randn(2, 23, 12, seed=2).float()
    cot = _randn(2, 23, 12, seed=3).float()
    outs, grads = [], []
    for m in ("recurrent", mode):
        layer = _retnet(m, chunk_size=8).float()
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * cot).sum().backward()
        outs.append(y.detach())
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for g_mode, g_ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_mode, g_ref, rtol=1e-4, atol=1e-5)


def test_retnet_decode_equals_forward_float64() -> None:
    layer = _retnet("recurrent")
    x = _randn(3, 9, 12, seed=4)
    cache = layer.init_cache(3)
    assert cache.dtype == torch.complex128 and cache.shape == (3, 3, 4, 8)
    steps = []
    for n in range(9):
        y, cache = layer.step(x[:, n], cache)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), layer(x), rtol=1e-10, atol=1e-10)
    assert layer.state_size(9) == 2 * 3 * 4 * 8 == layer.state_size(10_000)


def test_retnet_config_names_violated_constraint() -> None:
    with pytest.raises(ValueError, match="d_model=10 must be divisible by num_heads=4"):
        RetNetConfig(d_model=10, num_heads=4)
    with pytest.raises(ValueError, match="mode='fast'"):
        RetNetConfig(mode="fast")
    with pytest.raises(ValueError, match="value_factor=0"):
        RetNetConfig(value_factor=0)


# ---------------------------------------------------------------------------------------------- attention


def _attention(d_model: int = 16, num_heads: int = 2, seed: int = 0) -> Attention:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Attention(AttentionConfig(d_model=d_model, num_heads=num_heads)).double()


def test_sdpa_equals_written_out_softmax_values_and_gradients() -> None:
    q, k, v = (_randn(2, 3, 13, 8, seed=s).requires_grad_() for s in (5, 6, 7))
    cot = _randn(2, 3, 13, 8, seed=8)
    fast = causal_attention(q, k, v)
    grads_fast = torch.autograd.grad((fast * cot).sum(), (q, k, v))
    ref = causal_attention_ref(q, k, v)
    grads_ref = torch.autograd.grad((ref * cot).sum(), (q, k, v))
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    for g_fast, g_ref in zip(grads_fast, grads_ref):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-10)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    q, k = _randn(1, 1, 5, 8, seed=9), _randn(1, 1, 5, 8, seed=10)
    scores = apply_rotary(q, 0, 10000.0) @ apply_rotary(k, 0, 10000.0).transpose(-1, -2)
    shifted = apply_rotary(q, 1000, 10000.0) @ apply_rotary(k, 1000, 10000.0).transpose(-1, -2)
    torch.testing.assert_close(shifted, scores, rtol=1e-9, atol=1e-9)
    # and positions do matter: the same q, k at different offsets give a different score
    at_0 = (apply_rotary(q[..., :1, :], 0, 10000.0) * apply_rotary(k[..., :1, :], 0, 10000.0)).sum()
    at_3 = (apply_rotary(q[..., :1, :], 3, 10000.0) * apply_rotary(k[..., :1, :], 0, 10000.0)).sum()
    assert (at_0 - at_3).abs() > 1e-3
    # rotation preserves norms
    torch.testing.assert_close(apply_rotary(q, 7, 10000.0).norm(dim=-1), q.norm(dim=-1))


def test_attention_rotary_decode_equals_forward() -> None:
    layer = _attention()
    x = _randn(2, 10, 16, seed=11)
    cache = layer.init_cache(2)
    steps = []
    for n in range(10):
        y, cache = layer.step(x[:, n], cache)
        steps.append(y)
        assert cache.length == n + 1
    torch.testing.assert_close(torch.stack(steps, dim=1), layer(x), rtol=1e-10, atol=1e-10)
    assert layer.state_size(10) == 2 * 10 * 16 == cache.k.numel() // 2 + cache.v.numel() // 2


def test_attention_is_causal_and_position_aware() -> None:
    layer = _attention()
    x = _randn(1, 12, 16, seed=12)
    y = layer(x)
    future = x.clone()
    future[:, 6:] += _randn(1, 6, 16, seed=13)
    torch.testing.assert_close(layer(future)[:, :6], y[:, :6], rtol=0, atol=1e-12)
    assert (layer(future)[:, 6:] - y[:, 6:]).abs().max() > 1e-3
    # Rotary makes attention order-aware: swapping two earlier tokens changes a later output.
    swapped = x.clone()
    swapped[:, [2, 3]] = x[:, [3, 2]]
    assert (layer(swapped)[:, -1] - y[:, -1]).abs().max() > 1e-6


def test_attention_config_names_violated_constraint() -> None:
    with pytest.raises(ValueError, match="d_model=12 must be num_heads=8"):
        AttentionConfig(d_model=12, num_heads=8)
    with pytest.raises(ValueError, match="even head width"):
        AttentionConfig(d_model=12, num_heads=4)  # head width 3 cannot be rotated in pairs
