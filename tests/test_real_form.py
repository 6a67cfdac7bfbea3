"""GateLoop's real form (gateloop/real_form.py): a real GLA of key width 2K gives GateLoop's outputs, final
state and gradients, and the "fla" mode that runs it on flash-linear-attention's kernels (CUDA only).

On the CPU the real form runs with `gla_ref`, the plain GLA loop; it is compared with the complex128 loop
(the ground truth, as in test_scan.py) and with the chunked engine. On CUDA with fla installed, the fla mode
is compared with the chunked engine on the same device.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest
import torch

from gateloop import GateLoop, GateLoopConfig
from gateloop.chunked import gateloop_scan_chunked
from gateloop.real_form import (
    gateloop_scan_fla,
    gateloop_scan_real_form,
    gla_ref,
    state_from_real_form,
    state_to_real_form,
    to_real_form,
)
from gateloop.scan import gateloop_scan, gateloop_scan_ref
from test_scan import TOL32, TOL64, assert_close_to, cotangents, make_inputs, rel_err, run_with_grads, to_single

MATRIX = (1, 2, 2, 3)  # (B, H, K, V)
HAS_FLA = importlib.util.find_spec("fla") is not None


def reference_results(L: int, magnitude: float, with_state: bool, shape=MATRIX, seed: int = 0):
    """Inputs (float64), cotangents and the complex128 loop's [y, state, grads...]."""
    B, H, K, V = shape
    q, k, v, a, s0 = make_inputs(B, L, H, K, V, magnitude, True, seed=seed)
    inputs = (q, k, v, a, s0) if with_state else (q, k, v, a)
    gy, gs = cotangents((B, L, H, V), (B, H, K, V))
    return inputs, gy, gs, run_with_grads(gateloop_scan_ref, inputs, gy, gs)


@pytest.mark.parametrize("with_state", (False, True))
@pytest.mark.parametrize("magnitude", (1e-3, 0.5, 1 - 1e-3))
@pytest.mark.parametrize("L", (1, 7, 200))
def test_real_form_matches_chunked_and_loop(L: int, magnitude: float, with_state: bool) -> None:
    """Values, final state and every gradient, in float32 against the chunked engine and the complex128 loop,
    and in float64 against the loop."""
    inputs, gy, gs, expected = reference_results(L, magnitude, with_state)
    what = f"real form L={L} |a|={magnitude} s0={with_state}"
    single = tuple(map(to_single, inputs))
    got = run_with_grads(gateloop_scan_real_form, single, gy, gs)
    chunked = run_with_grads(gateloop_scan_chunked, single, gy, gs, chunk_size=16)
    grad_a = got.pop(5)
    del chunked[5]  # grad_a is compared with the loop: at L = 1 without s0 it is exactly 0 there
    assert_close_to(got, chunked, 2 * TOL32, f"{what} vs chunked")
    assert_close_to(got, expected[:5] + expected[6:], TOL32, f"{what} vs loop")
    # The gradient of a's phase is a sum of float32 terms that cancel (every pair's cos(P_n - P_m), the
    # diagonal's cos² + sin² above all) and is divided by |a| on its way to a: ~1e-7 / |a| relative.
    grad_a_err = rel_err(grad_a, expected[5])
    assert grad_a_err <= max(TOL32, 1e-6 / magnitude), f"{what}: grad_a relative error {grad_a_err:.2e}"
    assert_close_to(run_with_grads(gateloop_scan_real_form, inputs, gy, gs), expected, TOL64, f"{what}, float64")


def test_state_maps_between_complex_and_real_forms() -> None:
    """S'_0 = [Re S; -Im S] at P = 0, and S = e^{iP}(S'_cos - i S'_sin) at any P: round trip and a rotation."""
    g = torch.Generator().manual_seed(0)
    state = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.complex128)
    zero = torch.zeros(2, 3, 4, dtype=torch.float64)
    assert state_to_real_form(state).shape == (2, 3, 8, 5)
    assert torch.equal(state_from_real_form(state_to_real_form(state), zero), state)
    phase = 2 * math.pi * torch.rand(2, 3, 4, generator=g, dtype=torch.float64)
    rotated = state_from_real_form(state_to_real_form(state), phase)
    assert rel_err(rotated, torch.polar(torch.ones_like(phase), phase).unsqueeze(-1) * state) < 1e-15


def test_real_form_is_the_documented_transformation() -> None:
    """q' = [q cos P, q sin P], k' = [k cos P, k sin P], g' = [log|a|, log|a|], P the cumulative phase."""
    q, k, _, a, _ = make_inputs(1, 9, 2, 3, 1, 0.5, True, seed=1)
    q_r, k_r, g_r, phase_end = to_real_form(q, k, a)
    P = torch.angle(a).cumsum(1)
    torch.testing.assert_close(q_r, torch.cat([q * P.cos(), q * P.sin()], -1), rtol=0, atol=1e-13)
    torch.testing.assert_close(k_r, torch.cat([k * P.cos(), k * P.sin()], -1), rtol=0, atol=1e-13)
    torch.testing.assert_close(g_r, torch.cat([a.abs().log()] * 2, -1), rtol=0, atol=1e-13)
    torch.testing.assert_close(torch.polar(torch.ones_like(phase_end), phase_end), torch.exp(1j * P[:, -1]))


def naive_real_form(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The form to avoid: the cumulative phase summed in float32 and never reduced before cos/sin."""
    P = torch.angle(a).cumsum(1)  # float32, grows by ~1 rad per step
    cos, sin = P.cos(), P.sin()
    g = torch.cat([a.abs().log()] * 2, -1)
    y, _ = gla_ref(torch.cat([q * cos, q * sin], -1), torch.cat([k * cos, k * sin], -1), v, g)
    return y


def test_long_sequence_phases_need_the_float64_reduction() -> None:
    """L = 2000 with ~1 rad of phase per step and |a| near 1: P reaches ~2000 rad. Reduced mod 2π in float64
    the real form stays at float32 accuracy (values, state, gradients: ~2e-7 here); with cos/sin of the
    float32 cumulative phase (~1e-4 absolute off at 2000 rad) the outputs miss by 3e-5, beyond the 1e-5
    every engine must meet."""
    B, L, H, K, V = 1, 2000, 1, 2, 2
    q, k, v, a, s0 = make_inputs(B, L, H, K, V, 1 - 1e-3, False, seed=2)
    phase = 1.0 + 0.1 * torch.randn(B, L, H, K, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = torch.polar(a.abs(), phase)
    inputs = (q, k, v, a, s0)
    gy, gs = cotangents((B, L, H, V), (B, H, K, V))
    expected = run_with_grads(gateloop_scan_ref, inputs, gy, gs)
    single = tuple(map(to_single, inputs))
    reduced = run_with_grads(gateloop_scan_real_form, single, gy, gs)
    assert_close_to(reduced, expected, 2 * TOL32, "real form at L=2000, phases ~1 rad/step")
    assert_close_to(run_with_grads(gateloop_scan_chunked, single, gy, gs), expected, 2 * TOL32, "chunked, same inputs")
    y_reduced_err = rel_err(reduced[0], expected[0])
    y_naive_err = rel_err(naive_real_form(*single[:4]), gateloop_scan_ref(*inputs[:4])[0])
    assert y_naive_err > TOL32 and y_naive_err > 30 * y_reduced_err, (y_naive_err, y_reduced_err)


def test_fla_mode_refuses_cleanly_without_fla_or_cuda() -> None:
    q, k, v, a, _ = map(to_single, make_inputs(1, 5, 2, 2, 3, 0.5, True))
    expected = "pip install -e '.\\[gpu\\]'" if not HAS_FLA else "CUDA tensors, got tensors on cpu"
    with pytest.raises(ValueError, match=expected):
        gateloop_scan(q, k, v, a, mode="fla")
    if not HAS_FLA:
        with pytest.raises(ValueError, match="GateLoopConfig: mode='fla' needs flash-linear-attention"):
            GateLoopConfig(d_model=8, mode="fla")


FLA_TOL = 1e-2  # fla's kernels run float32 matmuls partly as TF32 (~5e-4 relative each)


def fla_skip_reason() -> str:
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if not HAS_FLA:
        return "flash-linear-attention is not installed (pip install -e '.[gpu]')"
    return ""


def needs_fla(test):
    """CUDA-only (kept by `pytest --device cuda`), skipped with the reason where CUDA or fla is missing."""
    test = pytest.mark.skipif(bool(fla_skip_reason()), reason=fla_skip_reason() or "fla available")(test)
    return pytest.mark.cuda(test)


@needs_fla
@pytest.mark.parametrize("with_state", (False, True))
@pytest.mark.parametrize("magnitude", (1e-3, 0.5, 1 - 1e-3))
@pytest.mark.parametrize("L", (1, 7, 200, 1000))
def test_fla_mode_matches_chunked_on_cuda(L: int, magnitude: float, with_state: bool) -> None:
    B, H, K, V = 2, 2, 32, 32  # key width 2K = 64 in fla; the widths check-gpu benchmarks (compiled once)
    q, k, v, a, s0 = make_inputs(B, L, H, K, V, magnitude, True, seed=4)
    inputs = tuple(map(to_single, (q, k, v, a, s0) if with_state else (q, k, v, a)))
    gy, gs = cotangents((B, L, H, V), (B, H, K, V))
    expected = run_with_grads(gateloop_scan_chunked, inputs, gy, gs, "cuda")
    got = run_with_grads(gateloop_scan_fla, inputs, gy, gs, "cuda")
    what = f"fla L={L} |a|={magnitude} s0={with_state}"
    grad_a, expected_grad_a = got.pop(5), expected.pop(5)
    assert_close_to(got, expected, FLA_TOL, what)
    # The phase part of grad a is a small difference of O(1) terms divided by |a| (see test_real_form_matches_
    # chunked_and_loop): with TF32 rounding (~5e-4) in fla's matmuls it is only meaningful for gates far from 0.
    assert torch.isfinite(torch.view_as_real(grad_a)).all()
    if magnitude >= 0.5:
        assert rel_err(grad_a, expected_grad_a) <= FLA_TOL, f"{what}: grad_a {rel_err(grad_a, expected_grad_a):.2e}"


@needs_fla
def test_gateloop_layer_in_fla_mode_matches_chunked_on_cuda() -> None:
    torch.manual_seed(0)
    chunked = GateLoop(GateLoopConfig(d_model=64, num_heads=2, mode="chunked")).cuda()
    fla = GateLoop(dataclasses.replace(chunked.config, mode="fla")).cuda()
    fla.load_state_dict(chunked.state_dict())
    x = torch.randn(2, 300, 64, generator=torch.Generator().manual_seed(1)).cuda()
    results = []
    for layer in (chunked, fla):
        x_ = x.clone().requires_grad_()
        y = layer(x_)
        y.square().sum().backward()
        results.append([y.detach(), x_.grad, *(p.grad for p in layer.parameters())])
    for got, expected in zip(*reversed(results)):
        assert rel_err(got, expected) < FLA_TOL
