"""The GateLoop mixer: shapes, causality, decode == forward, modes agree, and every ablation switch."""
from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from gateloop import MODES, GateLoop, GateLoopConfig, Mixer, is_transition
from gateloop._build import build_refusal

D = 8
HEADS = [None, 2]  # max-headed (H = 8, K = V = 1) and two wide heads (K = V = 4)
ABLATIONS = [
    *({"magnitude": m, "phase": p} for m in ("data", "fixed", "one") for p in ("data", "fixed", "zero")),
    {"magnitude": "data_head", "phase": "data"},
    {"phase": "sign"},
    {"magnitude_param": "sigmoid_of_modulus"},
    {"output_gate": False, "norm": False},
]
OTHER_MODES = [m for m in MODES if m != "recurrent"]


def ablation_id(kwargs: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in kwargs.items())


def make(seed: int = 0, randomise: bool = True, **kwargs) -> GateLoop:
    """A GateLoop with D = 8. `randomise` perturbs every parameter so that gates depend strongly on x
    and no two channels coincide; the perturbation keeps |a| well inside (0, 1)."""
    kwargs.setdefault("mode", "recurrent")
    torch.manual_seed(seed)  # nn.Module init draws from the global generator
    layer = GateLoop(GateLoopConfig(d_model=D, **kwargs))
    if randomise:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return layer


def inputs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def with_mode(layer: GateLoop, mode: str) -> GateLoop:
    twin = GateLoop(dataclasses.replace(layer.config, mode=mode))
    twin.load_state_dict(layer.state_dict())
    return twin.to(layer.out.weight.device)


@pytest.mark.parametrize("num_heads", HEADS)
def test_output_shape_and_state(num_heads):
    layer = make(num_heads=num_heads)
    assert isinstance(layer, Mixer)
    y = layer(inputs(2, 7, D))
    assert y.shape == (2, 7, D) and y.dtype == torch.float32 and torch.isfinite(y).all()
    H, K = (D, 1) if num_heads is None else (num_heads, D // num_heads)
    cache = layer.init_cache(3)
    assert cache.shape == (3, H, K, K) and cache.dtype == torch.complex64 and not cache.any()
    assert layer.state_size(1000) == 2 * H * K * K
    assert layer.gates(inputs(2, 7, D)).shape == (2, 7, H, K)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("num_heads", HEADS)
def test_causal(mode, num_heads):
    layer = make(num_heads=num_heads, mode=mode, chunk_size=4)
    x = inputs(2, 11, D)
    t = 6
    x_future = x.clone()
    x_future[:, t:] = inputs(2, 11 - t, D, seed=1)
    y, y_future = layer(x), layer(x_future)
    torch.testing.assert_close(y_future[:, :t], y[:, :t], atol=1e-6, rtol=0)
    assert (y_future[:, t:] - y[:, t:]).abs().amax() > 1e-3  # the perturbation is visible where allowed


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("ablation", ABLATIONS, ids=ablation_id)
@pytest.mark.parametrize("num_heads", HEADS)
def test_decode_matches_forward(num_heads, ablation, mode, device):
    layer = make(num_heads=num_heads, mode=mode, chunk_size=4, **ablation).to(device)
    x = inputs(2, 9, D).to(device)
    expected = layer(x)
    cache = layer.init_cache(2, device)
    steps = []
    for n in range(x.shape[1]):
        y, cache = layer.step(x[:, n], cache)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", OTHER_MODES)
@pytest.mark.parametrize(
    "ablation",
    [
        {},
        {"magnitude": "fixed", "phase": "fixed"},
        {"magnitude": "one", "phase": "data"},
        {"magnitude": "data_head", "phase": "data"},
        {"phase": "sign"},
        {"magnitude_param": "sigmoid_of_modulus"},
    ],
    ids=ablation_id,
)
@pytest.mark.parametrize("num_heads", HEADS)
def test_modes_agree_with_recurrent(num_heads, ablation, mode, device):
    # L = 13 with chunk 4: the last chunk is partial.
    reference = make(num_heads=num_heads, mode="recurrent", chunk_size=4, **ablation).to(device)
    if ablation.get("phase") == "sign":
        with torch.no_grad():  # gates of both signs, and some near 0, through every engine
            reference.magnitude_proj.bias.zero_()
        assert (reference.gates(inputs(2, 13, D).to(device)).real < 0).any()
    other = with_mode(reference, mode)
    x = inputs(2, 13, D).to(device)
    cotangent = inputs(2, 13, D, seed=2).to(device)
    grads = []
    for layer in (reference, other):
        x_ = x.clone().requires_grad_()
        y = layer(x_)
        (y * cotangent).sum().backward()
        grads.append((y.detach(), x_.grad, {n: p.grad for n, p in layer.named_parameters()}))
    (y_ref, dx_ref, dp_ref), (y_other, dx_other, dp_other) = grads
    # With |a| = 1 nothing decays: every gradient sums all later positions' terms undamped, and two fp32
    # paths differ by more (measured on an AVX-512 CPU, dx against a .double() copy of the layer: recurrent
    # 1.6e-5, attention 3.0e-5 of its scale, so 4.6e-5 apart at worst); with decay, 1e-5 holds.
    tol = 1e-4 if ablation.get("magnitude") == "one" else 1e-5
    assert_close_relative(y_other, y_ref, "y", tol)
    assert_close_relative(dx_other, dx_ref, "dx", tol)
    assert dp_other.keys() == dp_ref.keys()
    for name in dp_ref:
        assert_close_relative(dp_other[name], dp_ref[name], name, tol)


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, name: str, tol: float = 1e-5) -> None:
    """Agreement to `tol` relative to the tensor's scale: fp32 sums in a different order leave ~1e-7 of
    the largest entry in every entry, which is large relative to the entries that nearly cancel."""
    scale = expected.abs().amax().item()
    torch.testing.assert_close(actual, expected, atol=tol * scale, rtol=tol, msg=lambda m: f"{name}: {m}")


def test_gate_formula_sigmoid():
    """a = σ(W_α x + b_α) · exp(i (W_β x + b_β)), written out independently in float64."""
    layer = make()
    x = inputs(3, 5, D)
    m, p = layer.magnitude_proj, layer.phase_proj
    magnitude = torch.sigmoid(x.double() @ m.weight.double().T + m.bias.double())
    phase = x.double() @ p.weight.double().T + p.bias.double()
    expected = (magnitude * torch.exp(1j * phase)).view(3, 5, D, 1)
    torch.testing.assert_close(layer.gates(x).to(torch.complex128), expected, atol=1e-6, rtol=1e-6)


def test_gate_formula_sigmoid_of_modulus():
    """|a| = σ(|z|), arg a = arg z for one complex pre-activation z; so |a| ∈ [0.5, 1)."""
    layer = make(num_heads=2, magnitude_param="sigmoid_of_modulus")
    x = inputs(3, 5, D)
    z = x.double() @ layer.modulus_proj.weight.double().T + layer.modulus_proj.bias.double()
    z = torch.complex(z[..., :D], z[..., D:])
    expected = (torch.sigmoid(z.abs()) * torch.exp(1j * z.angle())).view(3, 5, 2, 4)
    a = layer.gates(x)
    torch.testing.assert_close(a.to(torch.complex128), expected, atol=1e-6, rtol=1e-6)
    assert (a.abs() >= 0.5).all() and (a.abs() < 1).all()
    # The floor: however x pushes z towards 0, |a| never drops below σ(0) = 0.5.
    with torch.no_grad():
        layer.modulus_proj.bias.zero_()
    a_small = layer.gates(1e-3 * x)
    assert (a_small.abs() >= 0.5).all() and (a_small.abs() < 0.51).all()
    # Far from 0, σ(|z|) rounds to 1.0 in fp32 (|z| > ~17) and |a| to 1 within an ulp of a unit phasor.
    a_big = layer.gates(100 * x)
    assert (a_big.abs() >= 0.5).all() and (a_big.abs() <= 1 + 1e-6).all()


def test_gate_formula_signed():
    """phase "sign": a = 2σ(W_α x + b_α) − 1, real, in (−1, 1), both signs reached (Grazzi et al.)."""
    layer = make(num_heads=2, phase="sign")
    assert layer.phase_proj is None and layer.phase_angle is None
    with torch.no_grad():
        layer.magnitude_proj.bias.zero_()  # so that x alone sets the sign: both signs occur
    x = inputs(3, 5, D)
    m = layer.magnitude_proj
    expected = (2 * torch.sigmoid(x.double() @ m.weight.double().T + m.bias.double()) - 1).view(3, 5, 2, 4)
    a = layer.gates(x)
    torch.testing.assert_close(a.real.double(), expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(a.imag, torch.zeros_like(a.imag))
    assert (a.real.abs() < 1).all() and (a.real < 0).any() and (a.real > 0).any()


def test_signed_gate_gradient_matches_float64_autograd():
    """The signed gate's gradient (through tanh(u/2)) equals autograd of 2σ(u) − 1 in float64."""
    layer = make(num_heads=2, phase="sign")
    x = inputs(2, 4, D)
    cotangent = inputs(2, 4, 2, 4, seed=3)
    (layer.gates(x).real * cotangent).sum().backward()
    w = layer.magnitude_proj.weight.detach().double().requires_grad_()
    b = layer.magnitude_proj.bias.detach().double().requires_grad_()
    ((2 * torch.sigmoid(x.double() @ w.T + b) - 1).view(2, 4, 2, 4) * cotangent.double()).sum().backward()
    torch.testing.assert_close(layer.magnitude_proj.weight.grad.double(), w.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(layer.magnitude_proj.bias.grad.double(), b.grad, atol=1e-6, rtol=1e-5)


def test_signed_gate_counts_parity_where_a_positive_gate_cannot():
    """A gate of −1 on odd tokens and +1 on even ones keeps the running parity in the state's sign; a gate
    in (0, 1) keeps the same sign whatever the tokens. Set by hand: W_α reads a parity feature of x."""
    for phase, expected_flips in (("sign", True), ("zero", False)):
        layer = make(randomise=False, num_heads=None, phase=phase, output_gate=False, norm=False)
        with torch.no_grad():
            layer.magnitude_proj.weight.zero_()
            layer.magnitude_proj.bias.zero_()
            layer.magnitude_proj.weight[:, 0] = -40.0  # x_0 = +1 (odd token): u = −40, a ≈ −1 (or ≈ 0)
            layer.magnitude_proj.bias.fill_(20.0)  # x_0 = 0 (even token): u = +20, a ≈ +1
        x = torch.zeros(1, 6, D)
        x[0, [0, 2, 3], 0] = 1.0  # odd tokens at 0, 2, 3
        a = layer.gates(x)[0, :, 0, 0].real  # one channel's gate at every step
        signs = torch.cumprod(torch.sign(a), 0)
        assert torch.equal(signs < 0, torch.tensor([True, True, False, True, True, True])) == expected_flips


def test_head_shared_magnitude_is_one_per_head_with_a_phase_per_channel():
    """magnitude "data_head": |a| is the same for the K channels of a head (Mamba-2/3's layout); the
    phase still differs per channel; the magnitude projection has H outputs."""
    layer = make(num_heads=2, magnitude="data_head")
    assert layer.magnitude_proj.out_features == 2 and layer.phase_proj.out_features == D
    x = inputs(3, 5, D)
    a = layer.gates(x)  # (3, 5, 2, 4)
    expected = torch.sigmoid(x.double() @ layer.magnitude_proj.weight.double().T
                             + layer.magnitude_proj.bias.double())  # (3, 5, 2)
    torch.testing.assert_close(a.abs().double(), expected.unsqueeze(-1).expand(3, 5, 2, 4), atol=1e-6, rtol=1e-6)
    assert (a.angle()[..., 0] != a.angle()[..., 1]).all()


@pytest.mark.parametrize("phase", ["data", "fixed", "zero"])
def test_fixed_magnitude_does_not_depend_on_x(phase):
    layer = make(magnitude="fixed", phase=phase)
    x, x_other = inputs(2, 6, D), inputs(2, 6, D, seed=1)
    a, a_other = layer.gates(x), layer.gates(x_other)
    # |polar(r, θ)| rounds differently for different θ: equal to an ulp, not bit for bit.
    torch.testing.assert_close(a.abs(), a_other.abs(), atol=1e-6, rtol=0)
    torch.testing.assert_close(a.abs()[0, 0], torch.sigmoid(layer.magnitude_logit), atol=1e-6, rtol=0)
    if phase == "data":
        assert not torch.equal(a.angle(), a_other.angle())
    else:
        assert torch.equal(a, a_other)  # fully input-independent: a learned diagonal


@pytest.mark.parametrize("magnitude", ["data", "fixed", "one"])
def test_fixed_phase_does_not_depend_on_x(magnitude):
    layer = make(magnitude=magnitude, phase="fixed")
    x, x_other = inputs(2, 6, D), inputs(2, 6, D, seed=1)
    a, a_other = layer.gates(x), layer.gates(x_other)
    torch.testing.assert_close(a.angle(), a_other.angle(), atol=1e-6, rtol=0)
    torch.testing.assert_close(a.angle()[0, 0], layer.phase_angle, atol=1e-6, rtol=0)
    if magnitude == "data":
        assert not torch.equal(a.abs(), a_other.abs())
    if magnitude != "data":
        assert torch.equal(a, a_other)  # fully input-independent: a learned complex diagonal


@pytest.mark.parametrize("magnitude", ["data", "fixed", "one"])
def test_zero_phase_gives_real_gates(magnitude):
    layer = make(magnitude=magnitude, phase="zero")
    a = layer.gates(inputs(2, 6, D))
    assert a.dtype == torch.complex64
    assert torch.equal(a.imag, torch.zeros_like(a.imag))
    assert (a.real > 0).all() and (a.real <= 1).all()


@pytest.mark.parametrize("phase", ["data", "fixed", "zero"])
def test_magnitude_one_gives_unit_gates(phase):
    layer = make(magnitude="one", phase=phase)
    a = layer.gates(inputs(2, 6, D))
    torch.testing.assert_close(a.abs(), torch.ones(a.shape), atol=1e-6, rtol=0)
    if phase != "zero":
        assert a.angle().abs().amax() > 1e-2  # the phase is really there


@pytest.mark.parametrize("num_heads", HEADS)
def test_norm_is_per_head_and_across_channels_when_max_headed(num_heads):
    """With W_o = I and no output gate the output is the normalised y: zero mean and unit variance over
    each head's V channels, or over all D channels when V = 1 (a per-head norm of one scalar is 0)."""
    layer = make(randomise=False, num_heads=num_heads, output_gate=False)
    with torch.no_grad():
        layer.out.weight.copy_(torch.eye(D))
    layer.norm.eps = 0.0  # so that the variance is exactly 1, however small y is
    y = layer(inputs(2, 7, D))
    groups = y.view(2, 7, num_heads, D // num_heads) if num_heads else y.view(2, 7, 1, D)
    torch.testing.assert_close(groups.mean(-1), torch.zeros(groups.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(groups.var(-1, unbiased=False), torch.ones(groups.shape[:-1]), atol=1e-3, rtol=0)


def test_magnitude_one_phase_zero_is_causal_linear_attention():
    """With a ≡ 1 the layer is y_n = W_o Σ_{m≤n} (q_n · k_m) v_m, computed here as masked attention."""
    layer = make(num_heads=2, magnitude="one", phase="zero", output_gate=False, norm=False)
    x = inputs(2, 7, D)
    q, k, v = (t.view(2, 7, 2, 4).transpose(1, 2) for t in layer.qkv(x).split(D, dim=-1))  # (B, H, L, K)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(4)).tril()  # (B, H, L, L), causal, unnormalised
    y = (scores @ v).transpose(1, 2).reshape(2, 7, D)
    torch.testing.assert_close(layer(x), layer.out(y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_heads": 2}, {"magnitude": "fixed", "phase": "fixed"}, {"magnitude_param": "sigmoid_of_modulus"},
     {"phase": "sign"}],
    ids=ablation_id,
)
def test_initial_gates_in_documented_range(kwargs):
    config = GateLoopConfig(d_model=64, mode="recurrent", **kwargs)
    torch.manual_seed(0)
    layer = GateLoop(config)
    with torch.no_grad():
        a0 = layer.gates(torch.zeros(64))  # at x = 0 only the biases (or fixed parameters) remain
        a = layer.gates(inputs(32, 64))
    magnitude, phase = a0.abs().flatten().tolist(), a0.angle().flatten()
    # Spread over the channels: from exactly 0.9 to exactly 0.99 (geometric in 1 − |a|).
    assert min(magnitude) == pytest.approx(0.9, abs=1e-5) and max(magnitude) == pytest.approx(0.99, abs=1e-5)
    assert len(set(magnitude)) == 64
    if kwargs.get("phase") == "sign":  # the same |a| at init as every other gate, all positive, no phase
        assert (a0.real > 0).all() and not a0.imag.any()
        return
    assert phase.min() > 0 and phase.max().item() == pytest.approx(math.pi / 10, abs=1e-5)
    # The longest memory rotates slowest.
    assert phase[magnitude.index(max(magnitude))] == phase.min()
    if kwargs.get("magnitude") == "fixed":
        return
    # For unit-RMS inputs the data-controlled part of the logit has std ≈ gate_init_gain = 0.1.
    shift = torch.logit(a.abs().double()) - torch.logit(a0.abs().double())
    assert 0.05 < shift.std() < 0.2


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {"magnitude_proj.weight", "magnitude_proj.bias", "phase_proj.weight", "phase_proj.bias"}),
        ({"magnitude": "fixed", "phase": "data"}, {"magnitude_logit", "phase_proj.weight", "phase_proj.bias"}),
        ({"magnitude": "data", "phase": "fixed"}, {"magnitude_proj.weight", "magnitude_proj.bias", "phase_angle"}),
        ({"magnitude": "fixed", "phase": "fixed"}, {"magnitude_logit", "phase_angle"}),
        ({"magnitude": "one", "phase": "zero"}, set()),
        ({"magnitude_param": "sigmoid_of_modulus"}, {"modulus_proj.weight", "modulus_proj.bias"}),
        ({"phase": "sign"}, {"magnitude_proj.weight", "magnitude_proj.bias"}),
        ({"magnitude": "data_head"}, {"magnitude_proj.weight", "magnitude_proj.bias", "phase_proj.weight",
                                      "phase_proj.bias"}),
    ],
    ids=lambda v: ablation_id(v) if isinstance(v, dict) else None,
)
def test_transition_parameters_tagged(kwargs, expected):
    layer = make(randomise=False, num_heads=2, **kwargs)
    assert {name for name, p in layer.named_parameters() if is_transition(p)} == expected
    # Everything else (q, k, v, output gate, norm, output projection) is an ordinary parameter.
    assert {"qkv.weight", "gate.weight", "out.weight", "norm.weight"} <= {n for n, _ in layer.named_parameters()}


@pytest.mark.parametrize(
    ("kwargs", "constraint"),
    [
        ({"d_model": 8, "num_heads": 3}, "num_heads=3 must divide d_model=8"),
        ({"num_heads": 0}, "num_heads=0"),
        ({"num_heads": True}, "num_heads=True"),
        ({"magnitude": "learned"}, "magnitude='learned' must be one of"),
        ({"phase": "random"}, "phase='random' must be one of"),
        ({"magnitude_param": "tanh"}, "magnitude_param='tanh'"),
        ({"magnitude_param": "sigmoid_of_modulus", "phase": "zero"}, "needs magnitude='data' and phase='data'"),
        ({"phase": "sign", "magnitude": "fixed"}, "phase='sign' is the signed real gate"),
        ({"phase": "sign", "magnitude": "data_head"}, "needs magnitude='data' (got 'data_head')"),
        ({"norm": 1}, "norm=1 must be a bool"),
        ({"output_gate": "yes"}, "output_gate='yes' must be a bool"),
        ({"mode": "fft"}, "mode='fft' must be one of"),
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"magnitude_init_min": 0.99, "magnitude_init_max": 0.9}, "0 < min <= max < 1"),
        ({"magnitude_init_max": 1.0}, "0 < min <= max < 1"),
        ({"magnitude_param": "sigmoid_of_modulus", "magnitude_init_min": 0.3}, "must be >= 0.5"),
        ({"phase_init_max": 4.0}, "phase_init_max=4.0 must lie in [0, π]"),
        ({"gate_init_gain": -1.0}, "gate_init_gain=-1.0"),
        ({"d_model": 0}, "d_model=0"),
    ],
    ids=lambda v: ablation_id(v) if isinstance(v, dict) else None,
)
def test_invalid_config_names_the_constraint(kwargs, constraint):
    kwargs.setdefault("mode", "recurrent")
    with pytest.raises(ValueError, match=re.escape(constraint)):
        GateLoopConfig(**kwargs)


def test_gates_stay_fp32_under_autocast():
    layer = make(num_heads=2)
    x = inputs(2, 5, D)
    expected_a, expected_y = layer.gates(x), layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = layer.gates(x)
        y = layer(x)
    assert a.dtype == torch.complex64 and torch.equal(a, expected_a)
    # Only the projections ran in bf16 (~3 significant digits); the recurrence did not compound it.
    torch.testing.assert_close(y.float(), expected_y, atol=5e-2, rtol=5e-2)


@pytest.mark.skipif(bool(build_refusal("mode='chunked'")), reason="no C++ compiler or ninja")
@pytest.mark.parametrize("ablation", [{}, {"phase": "zero"}, {"magnitude": "fixed", "phase": "fixed"}, {"phase": "sign"}],
                         ids=ablation_id)
def test_max_headed_layer_in_fused_mode_agrees_with_recurrent(ablation):
    """mode='fused' (C++, max-headed only): output, input and parameter gradients against the loop."""
    test_modes_agree_with_recurrent(None, ablation, "fused", "cpu")


def test_fused_mode_needs_the_max_headed_layout() -> None:
    with pytest.raises(ValueError, match=r"mode='fused' is for max-headed GateLoop \(num_heads = d_model = 8, not 2\)"):
        GateLoopConfig(d_model=8, num_heads=2, mode="fused")
