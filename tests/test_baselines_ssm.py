"""S4D, S5, LRU, Mamba and their shared scan engine: every fast path against its plain-loop twin.

Equivalences compare values and gradients (random cotangents, w.r.t. inputs and every parameter) in
float64, so any disagreement beyond rounding is a bug rather than noise. Registry-driven contract tests
(causality, decode in the LM, parameter matching, ...) for these mixers live in tests/test_mixers.py.
"""
from __future__ import annotations

import json

import dataclasses
import math

import pytest
import torch
from torch import nn

from baselines.lru import LRU, LRUConfig
from baselines.mamba import (Mamba, MambaConfig, fused_refusal, scan_in_use, selective_scan, selective_scan_fused,
                             selective_scan_ref)
from baselines.s4d import S4D, S4DConfig
from baselines.s5 import S5, S5Config, hippo_n
from baselines.scan import KERNELS, linear_scan, linear_scan_ref
from gateloop.mixer import Mixer, is_transition, num_real_parameters


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


def _build(cls: type[nn.Module], config, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


def _assert_close_all(fast: tuple[torch.Tensor, ...], ref: tuple[torch.Tensor, ...], names: list[str], rtol: float) -> None:
    """Each pair equal to rtol relative to the reference's largest entry (gradients vary in scale)."""
    assert len(fast) == len(ref) == len(names)
    for f, r, name in zip(fast, ref, names):
        assert f is not None and r is not None, name
        scale = r.abs().max().item()
        torch.testing.assert_close(f, r, rtol=0, atol=rtol * scale + 1e-300, msg=lambda m: f"{name}: {m}")


# ------------------------------------------------------------------------------------------ linear_scan


def _gates(shape: tuple[int, ...], regime: str, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """a with |a| at the regime: "near_one" 1 − 1e-3, "near_zero" 1e-3, "mixed" uniform in (0, 1)."""
    g = _gen(seed)
    if regime == "near_one":
        magnitude = torch.full(shape, 1 - 1e-3, dtype=torch.float64)
    elif regime == "near_zero":
        magnitude = torch.full(shape, 1e-3, dtype=torch.float64)
    else:
        magnitude = torch.rand(shape, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        phase = 2 * math.pi * torch.rand(shape, generator=g, dtype=torch.float64)
        return torch.polar(magnitude, phase).to(dtype)
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    return (sign * magnitude).to(dtype)


def _scan_outputs(fn, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, seed: int) -> tuple[torch.Tensor, ...]:
    """h, h_last and the gradients of <h, G> + <h_last, g> w.r.t. a, b (and h0), random cotangents."""
    inputs = [t.detach().requires_grad_() for t in (a, b) + ((h0,) if h0 is not None else ())]
    h, h_last = fn(*inputs[:2], inputs[2] if h0 is not None else None)
    # Drawn in double precision and rounded, so fp32 and fp64 runs see the same cotangents.
    wide = torch.complex128 if h.is_complex() else torch.float64
    cot_h = _randn(*h.shape, seed=seed, dtype=wide).to(h.dtype)
    cot_last = _randn(*h_last.shape, seed=seed + 1, dtype=wide).to(h.dtype)
    # Re<h, G> is the real loss whose gradient PyTorch defines for complex tensors.
    loss = (h * cot_h.conj()).real.sum() + (h_last * cot_last.conj()).real.sum()
    return (h.detach(), h_last.detach(), *torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("L", [1, 2, 7, 33])
def test_linear_scan_matches_loop(kernel: str, dtype: torch.dtype, L: int) -> None:
    for i, (regime, with_h0) in enumerate([("mixed", False), ("near_one", True), ("near_zero", True), ("mixed", True)]):
        a = _gates((2, L, 3, 4), regime, dtype, seed=10 + i)
        b = _randn(2, L, 3, 4, seed=20 + i, dtype=dtype)
        h0 = _randn(2, 3, 4, seed=30 + i, dtype=dtype) if with_h0 else None
        fast = _scan_outputs(lambda *t: linear_scan(*t, kernel=kernel), a, b, h0, seed=40 + i)
        ref = _scan_outputs(linear_scan_ref, a, b, h0, seed=40 + i)
        names = ["h", "h_last", "grad a", "grad b", "grad h0"][: len(ref)]
        _assert_close_all(fast, ref, [f"{regime}, h0={with_h0}: {n}" for n in names], rtol=1e-12)


@pytest.mark.parametrize("kernel", ["odd_even", "sequential"])
@pytest.mark.parametrize("a_shape", [(1, 1, 1, 4), (1, 9, 3, 1), (2, 1, 3, 4)])
def test_linear_scan_broadcasts_a_constant_transition(kernel: str, a_shape: tuple[int, ...]) -> None:
    """S5/LRU pass one Λ̄ for all steps and batch items; its gradient must sum over what it broadcast."""
    a = _gates(a_shape, "mixed", torch.complex128, seed=1)
    b = _randn(2, 9, 3, 4, seed=2, dtype=torch.complex128)
    h0 = _randn(2, 3, 4, seed=3, dtype=torch.complex128)
    fast = _scan_outputs(lambda *t: linear_scan(*t, kernel=kernel), a, b, h0, seed=4)
    ref = _scan_outputs(linear_scan_ref, a, b, h0, seed=4)
    assert fast[2].shape == a_shape
    _assert_close_all(fast, ref, ["h", "h_last", "grad a", "grad b", "grad h0"], rtol=1e-12)


@pytest.mark.parametrize("kernel", ["odd_even", "sequential"])
def test_linear_scan_single_precision_long_sequence(kernel: str) -> None:
    """complex64 at an odd length of 257 with |a| = 1 − 1e-3: no error growth beyond fp32 rounding."""
    a = _gates((2, 257, 5), "near_one", torch.complex64, seed=5)
    b = _randn(2, 257, 5, seed=6, dtype=torch.complex64)
    fast = _scan_outputs(lambda *t: linear_scan(*t, kernel=kernel), a, b, None, seed=7)
    ref = _scan_outputs(linear_scan_ref, a.to(torch.complex128), b.to(torch.complex128), None, seed=7)
    _assert_close_all(tuple(t.to(torch.complex128) for t in fast), ref, ["h", "h_last", "grad a", "grad b"], rtol=1e-5)


def test_linear_scan_mixed_real_gate_complex_input() -> None:
    a = _gates((2, 6, 3), "mixed", torch.float64, seed=8)
    b = _randn(2, 6, 3, seed=9, dtype=torch.complex128)
    fast = _scan_outputs(linear_scan, a, b, None, seed=10)
    ref = _scan_outputs(linear_scan_ref, a, b, None, seed=10)
    assert fast[0].dtype == torch.complex128 and fast[2].dtype == torch.float64  # grad a is real, like a
    _assert_close_all(fast, ref, ["h", "h_last", "grad a", "grad b"], rtol=1e-12)


def test_linear_scan_rejects_bad_shapes_and_kernels() -> None:
    b = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="equal ndim"):
        linear_scan(torch.zeros(5, 3), b)
    with pytest.raises(ValueError, match="length 4 along dim 1.*L=5"):
        linear_scan(torch.zeros(2, 4, 3), b)
    with pytest.raises(ValueError, match=r"h0 has shape \(2, 4\), expected"):
        linear_scan(torch.zeros(2, 5, 3), b, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown kernel 'tree'"):
        linear_scan(torch.zeros(2, 5, 3), b, kernel="tree")


# ---------------------------------------------------------------------- per-model fast path == loop twin


def _fast_vs_ref(module: nn.Module, fast, ref, x: torch.Tensor, seed: int, rtol: float = 1e-10) -> None:
    """fast(x) == ref(x) in values and in gradients w.r.t. x and every parameter."""
    names = ["y", "grad x"] + [f"grad {n}" for n, _ in module.named_parameters()]
    inputs = [x.detach().requires_grad_()] + list(module.parameters())
    results = []
    for fn in (fast, ref):
        y = fn(inputs[0])
        cotangent = _randn(*y.shape, seed=seed, dtype=y.dtype).to(y.device)
        results.append((y.detach(), *torch.autograd.grad((y * cotangent).sum(), inputs)))
    _assert_close_all(results[0], results[1], names, rtol=rtol)


S4D_CASES = [
    S4DConfig(d_model=6, d_state=8),
    S4DConfig(d_model=6, d_state=8, init="inv"),
    S4DConfig(d_model=5, d_state=4, mode="scan", dt_min=0.01, dt_max=0.5),
]


@pytest.mark.parametrize("config", S4D_CASES, ids=lambda c: f"{c.init}-{c.mode}")
def test_s4d_convolution_equals_recurrence(config: S4DConfig, device: str) -> None:
    model = _build(S4D, config).double().to(device)
    for L in (1, 11, 32):
        _fast_vs_ref(model, model, model.forward_ref, _randn(2, L, config.d_model, seed=L).to(device), seed=100 + L)


def test_s4d_kernel_is_the_impulse_response() -> None:
    """K_l = 2 Re(Σ C B̄ Ā^l): feeding a unit impulse through the recurrence must print K."""
    model = _build(S4D, S4DConfig(d_model=3, d_state=6)).double()
    impulse = torch.zeros(1, 9, 3, dtype=torch.float64)
    impulse[:, 0] = 1.0
    with torch.no_grad():
        response = model._ssm_recurrent(impulse)[0].T  # (D, L)
        torch.testing.assert_close(model.kernel(9), response, rtol=1e-12, atol=1e-14)


S5_CASES = [
    S5Config(d_model=6, d_state=8, blocks=2),
    S5Config(d_model=5, d_state=12, blocks=3, conj_sym=False, clip_eigs=False, activation="full_glu"),
    S5Config(d_model=4, d_state=8, blocks=1, activation="half_glu2"),
    S5Config(d_model=4, d_state=4, blocks=2, activation="gelu"),
]


@pytest.mark.parametrize("config", S5_CASES, ids=lambda c: f"P{c.d_state}J{c.blocks}-{c.activation}")
def test_s5_scan_equals_loop(config: S5Config, device: str) -> None:
    model = _build(S5, config).double().to(device)
    for L in (1, 13):
        _fast_vs_ref(model, model, model.forward_ref, _randn(2, L, config.d_model, seed=L).to(device), seed=200 + L)


@pytest.mark.parametrize("config", [LRUConfig(d_model=6, d_state=8), LRUConfig(d_model=5, d_state=3, r_min=0.0, r_max=0.5, max_phase=0.3)])
def test_lru_scan_equals_loop(config: LRUConfig, device: str) -> None:
    model = _build(LRU, config).double().to(device)
    for L in (1, 13):
        _fast_vs_ref(model, model, model.forward_ref, _randn(2, L, config.d_model, seed=L).to(device), seed=300 + L)


def _compare_scan_with_loop(fast, L: int, with_h0: bool, zero_in_A: bool, rtol: float, seed: int) -> None:
    """`fast` against `selective_scan_ref` in fp64: y, final state and the gradients w.r.t. u, Δ, A, B, C (and h0)
    under random cotangents; optionally with an entry of A exactly 0."""
    B, E, N = 2, 5, 3
    g = _gen(seed)
    tensors = {
        "u": torch.randn(B, L, E, generator=g, dtype=torch.float64),
        "delta": torch.rand(B, L, E, generator=g, dtype=torch.float64) * 0.5,
        "A": -torch.rand(E, N, generator=g, dtype=torch.float64) * 4,
        "B": torch.randn(B, L, N, generator=g, dtype=torch.float64),
        "C": torch.randn(B, L, N, generator=g, dtype=torch.float64),
        "h0": torch.randn(B, E, N, generator=g, dtype=torch.float64),
    }
    if not with_h0:
        del tensors["h0"]
    if zero_in_A:
        tensors["A"][1, 2] = 0.0
    results = []
    for fn in (fast, selective_scan_ref):
        inputs = [t.clone().requires_grad_() for t in tensors.values()]
        y, h = fn(*inputs)
        loss = (y * _randn(*y.shape, seed=seed + 1)).sum() + (h * _randn(*h.shape, seed=seed + 2)).sum()
        results.append((y.detach(), h.detach(), *torch.autograd.grad(loss, inputs)))
    _assert_close_all(results[0], results[1], ["y", "h_last"] + [f"grad {n}" for n in tensors], rtol=rtol)


@pytest.mark.parametrize("zero_in_A", [False, True])
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("L", [1, 11])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_selective_scan_equals_loop(chunk_size: int, L: int, with_h0: bool, zero_in_A: bool) -> None:
    """One chunk and across chunk boundaries; also with an entry of A exactly 0, which backward cannot
    divide by (its other branch)."""
    _compare_scan_with_loop(lambda *t: selective_scan(*t, chunk_size=chunk_size), L, with_h0, zero_in_A, 1e-12, 400)


needs_compiler = pytest.mark.skipif(bool(fused_refusal()), reason=fused_refusal() or "compiler found")


@needs_compiler
@pytest.mark.parametrize("zero_in_A", [False, True])
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("L", [1, 11, 150])  # 150: three of the fused backward's 64-step checkpoint chunks
def test_selective_scan_fused_equals_loop(L: int, with_h0: bool, zero_in_A: bool) -> None:
    """The C++ scan, fp64: its sums over N are reordered by the compiler, hence rounding-level, not
    bit-level, agreement."""
    _compare_scan_with_loop(selective_scan_fused, L, with_h0, zero_in_A, 1e-10, 430)


@needs_compiler
def test_selective_scan_fused_only_y_or_only_the_state_has_a_gradient() -> None:
    """Backward with ∂y missing (only the final state used) and with ∂(final state) missing."""
    g = _gen(440)
    B, L, E, N = 2, 9, 4, 3
    tensors = [torch.randn(B, L, E, generator=g, dtype=torch.float64), torch.rand(B, L, E, generator=g, dtype=torch.float64),
               -torch.rand(E, N, generator=g, dtype=torch.float64), torch.randn(B, L, N, generator=g, dtype=torch.float64),
               torch.randn(B, L, N, generator=g, dtype=torch.float64)]
    for pick in (0, 1):
        grads = []
        for fn in (selective_scan_fused, selective_scan_ref):
            inputs = [t.clone().requires_grad_() for t in tensors]
            grads.append(torch.autograd.grad(fn(*inputs)[pick].square().sum(), inputs, materialize_grads=True))
        _assert_close_all(grads[0], grads[1], ["grad u", "grad delta", "grad A", "grad B", "grad C"], rtol=1e-10)


@needs_compiler
def test_loading_the_fused_scan_keeps_denormals() -> None:
    """Built with -ffast-math at compile time only: had crtfastmath.o been linked into the extension, loading
    it would flush denormals to zero for the whole process (every other op's numbers would change)."""
    selective_scan_fused(*(torch.ones(1, 1, 1),) * 2, -torch.ones(1, 1), *(torch.ones(1, 1, 1),) * 2)
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert (tiny * 1.0).item() != 0.0


def test_selective_scan_fp32_matches_the_loop_in_fp64() -> None:
    """The fp32 fast paths (torch: exp taken as exp2; fused C++: vectorised exp, reordered sums) stay at fp32
    rounding of the exact answer, gradients included."""
    B, L, E, N = 2, 40, 6, 4
    g = _gen(410)
    tensors = [
        torch.randn(B, L, E, generator=g, dtype=torch.float64),
        torch.rand(B, L, E, generator=g, dtype=torch.float64) * 2,  # Δ A down to −32: gates near 1e-14
        -torch.rand(E, N, generator=g, dtype=torch.float64) * 16,
        torch.randn(B, L, N, generator=g, dtype=torch.float64),
        torch.randn(B, L, N, generator=g, dtype=torch.float64),
    ]
    fast_paths = [lambda *t: selective_scan(*t, chunk_size=16)] + ([] if fused_refusal() else [selective_scan_fused])
    results = []
    for fn, dtype in ((selective_scan_ref, torch.float64), *((fast, torch.float32) for fast in fast_paths)):
        inputs = [t.to(dtype).requires_grad_() for t in tensors]
        y, h = fn(*inputs)
        loss = (y * _randn(*y.shape, seed=411).to(dtype)).sum() + (h * _randn(*h.shape, seed=412).to(dtype)).sum()
        results.append(tuple(t.double() for t in (y.detach(), h.detach(), *torch.autograd.grad(loss, inputs))))
    for fast in results[1:]:
        _assert_close_all(fast, results[0], ["y", "h_last", "grad u", "grad delta", "grad A", "grad B", "grad C"], rtol=1e-5)


@pytest.mark.parametrize("L", [2, 7])
def test_mamba_causal_conv_equals_conv1d(L: int) -> None:
    """`_causal_conv` gives nn.Conv1d's numbers (padding d_conv − 1, first L outputs), values and gradients,
    also for sequences shorter than the kernel."""
    for config in (MambaConfig(d_model=6, d_conv=4), MambaConfig(d_model=4, d_conv=1, conv_bias=False)):
        model = _build(Mamba, config).double()
        x = _randn(2, L, config.d_inner, seed=420)
        cot = _randn(2, L, config.d_inner, seed=421)
        params = [p for p in model.conv1d.parameters()]
        results = []
        for fn in (model._causal_conv, lambda t: model.conv1d(t.transpose(1, 2))[..., : t.shape[1]].transpose(1, 2)):
            inp = x.clone().requires_grad_()
            out = fn(inp)
            results.append((out.detach(), *torch.autograd.grad((out * cot).sum(), [inp, *params])))
        names = ["out", "grad x"] + [f"grad {n}" for n, _ in model.conv1d.named_parameters()]
        _assert_close_all(results[0], results[1], names, rtol=1e-12)


@pytest.mark.parametrize("config", [MambaConfig(d_model=8, d_state=4, chunk_size=5, scan="torch"), MambaConfig(d_model=6, d_conv=1, expand=1, dt_rank=3, dt_init="constant", bias=True, conv_bias=False, scan="torch")])
def test_mamba_scan_equals_loop(config: MambaConfig, device: str) -> None:
    model = _build(Mamba, config).double().to(device)
    for L in (1, 12):
        _fast_vs_ref(model, model, model.forward_ref, _randn(2, L, config.d_model, seed=L).to(device), seed=500 + L)


@needs_compiler
def test_mamba_with_the_fused_scan_equals_loop() -> None:
    """The layer with scan='fused': forward and parameter gradients against `forward_ref` (the loop)."""
    config = MambaConfig(d_model=8, d_state=4, scan="fused")
    model = _build(Mamba, config).double()
    for L in (1, 12):
        _fast_vs_ref(model, model, model.forward_ref, _randn(2, L, config.d_model, seed=L), seed=510 + L)


def test_mamba_scan_option_is_checked_and_keeps_old_run_ids() -> None:
    """scan is one of ('auto', 'torch', 'fused'); at 'torch', the value of every run before the option
    existed, it is left out of a run's config, so those runs keep their ids, and a stored config without
    it is read back as 'torch', not as today's default 'auto'; 'auto' and 'fused' are part of the config."""
    from studies.config import run_config_from_dict, task_knobs
    from studies.tune.study import base_config

    with pytest.raises(ValueError, match="scan='nope' must be one of"):
        MambaConfig(d_model=8, scan="nope")
    assert "scan" not in task_knobs(MambaConfig(d_model=8, scan="torch"))
    assert task_knobs(MambaConfig(d_model=8))["scan"] == "auto"
    if not fused_refusal():
        assert task_knobs(MambaConfig(d_model=8, scan="fused"))["scan"] == "fused"
    old = base_config("mqar", "mamba", "smoke", ["mixer.scan=torch"], "cpu")
    stored = json.loads(json.dumps(old.to_dict()))
    assert "scan" not in stored["model"]
    again = run_config_from_dict(stored)
    assert again.mixer.scan == "torch" and again.run_id() == old.run_id()


def test_mamba_auto_scan_is_fused_on_the_cpu_where_it_can_be_built(monkeypatch) -> None:
    assert scan_in_use("torch", "cpu") == "torch" and scan_in_use("fused", "cpu") == "fused"
    assert scan_in_use("auto", "cuda") == "torch"
    assert scan_in_use("auto", "cpu") == ("torch" if fused_refusal() else "fused")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert scan_in_use("auto", "cpu") == "torch"
    MambaConfig(d_model=8)  # "auto" is not refused where "fused" would be: it falls back


def test_fused_scan_refused_in_one_line_without_a_compiler(monkeypatch) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(ValueError, match=r"no C\+\+ compiler .* or use scan='torch'"):
        MambaConfig(d_model=8, scan="fused")


def test_mamba_scan_keeps_chunk_states_not_the_full_state_sequence() -> None:
    """What autograd keeps for backward must stay well below one (B, L, E·D, N) tensor in total.

    Without checkpointing it would hold exp(Δ A) and h for every step (two such tensors and more);
    with it, the chunk inputs (B, L, E·D or N) and one (B, E·D, N) state per chunk.
    """
    config = MambaConfig(d_model=16, d_state=64, chunk_size=16, scan="torch")
    model = _build(Mamba, config)
    B, L = 2, 128
    x = _randn(B, L, 16, seed=6, dtype=torch.float32).requires_grad_()
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    full_state_sequence = B * L * config.d_inner * config.d_state
    assert 0 < sum(saved) < full_state_sequence / 2, f"saved {sum(saved)} scalars vs {full_state_sequence}"


# ---------------------------------------------------------------------------------- decode == forward

DECODE_CASES = [
    (S4D, S4DConfig(d_model=6, d_state=8)),
    (S4D, S4DConfig(d_model=6, d_state=8, init="inv", mode="scan")),
    (S5, S5Config(d_model=6, d_state=8, blocks=2)),
    (S5, S5Config(d_model=6, d_state=6, blocks=3, conj_sym=False, activation="full_glu")),
    (LRU, LRUConfig(d_model=6, d_state=5)),
    (Mamba, MambaConfig(d_model=8, d_state=4, chunk_size=4)),
    (Mamba, MambaConfig(d_model=8, d_conv=1, expand=1)),
]


@pytest.mark.parametrize("cls, config", DECODE_CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_decode_equals_forward(cls: type[nn.Module], config, device: str) -> None:
    model = _build(cls, config).double().to(device)
    assert isinstance(model, Mixer)
    x = _randn(3, 10, config.d_model, seed=7).to(device)
    with torch.no_grad():
        full = model(x)
        cache = model.init_cache(3, device)
        steps = []
        for n in range(x.shape[1]):
            y, cache = model.step(x[:, n], cache)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- the authors' initialisation


def test_s4d_init_lin_and_inv() -> None:
    N, D = 8, 4
    lin = _build(S4D, S4DConfig(d_model=D, d_state=N))
    n = torch.arange(N // 2, dtype=torch.float32)
    torch.testing.assert_close(-torch.exp(lin.log_A_real), torch.full((D, N // 2), -0.5))
    torch.testing.assert_close(lin.A_imag, (math.pi * n).expand(D, -1))
    inv = _build(S4D, S4DConfig(d_model=D, d_state=N, init="inv"))
    torch.testing.assert_close(inv.A_imag, (N / math.pi * (N / (2 * n + 1) - 1)).expand(D, -1))
    wide = _build(S4D, S4DConfig(d_model=512))
    dt = torch.exp(wide.log_dt)
    assert dt.min() >= 1e-3 and dt.max() <= 1e-1 and dt.max() / dt.min() > 50  # log-uniform over the range


def test_hippo_n_is_the_normal_part_of_legs() -> None:
    size = 10
    Lambda, V = hippo_n(size)
    n = torch.arange(size, dtype=torch.float64)
    legs = -torch.where(n[:, None] > n[None, :], torch.sqrt((2 * n[:, None] + 1) * (2 * n[None, :] + 1)), torch.diag(n + 1))
    p = torch.sqrt(n + 0.5)
    S = (legs + p[:, None] * p[None, :]).to(torch.complex128)
    torch.testing.assert_close(V @ torch.diag(Lambda) @ V.conj().T, S, rtol=0, atol=1e-10)
    torch.testing.assert_close(V.conj().T @ V, torch.eye(size, dtype=torch.complex128), rtol=0, atol=1e-10)
    torch.testing.assert_close(Lambda.real, torch.full((size,), -0.5, dtype=torch.float64))
    # conjugate pairs, sorted by imaginary part: the first half holds one of each pair
    torch.testing.assert_close(Lambda.imag[: size // 2], -Lambda.imag.flip(0)[: size // 2])
    assert (Lambda.imag[: size // 2] < 0).all()


def test_s5_init_blocks_and_steps() -> None:
    model = _build(S5, S5Config(d_model=4, d_state=16, blocks=2))
    block_eigs, _ = hippo_n(8)
    expected = block_eigs[:4].repeat(2)
    torch.testing.assert_close(torch.complex(model.Lambda_re, model.Lambda_im), expected.to(torch.complex64))
    assert model.B.shape == (8, 4, 2) and model.C.shape == (4, 8, 2) and model.state_size(1) == 16
    steps = torch.exp(_build(S5, S5Config(d_model=4, d_state=512, blocks=8)).log_step)
    assert steps.min() >= 1e-3 and steps.max() <= 1e-1
    assert _build(S5, S5Config(d_model=4, d_state=16, conj_sym=False)).state_size(1) == 32


def test_lru_ring_init_and_normalisation() -> None:
    config = LRUConfig(d_model=4, d_state=2048, r_min=0.4, r_max=0.8, max_phase=math.pi / 10)
    model = _build(LRU, config)
    magnitude = torch.exp(-torch.exp(model.nu_log.double()))
    phase = torch.exp(model.theta_log.double())
    assert magnitude.min() >= 0.4 - 1e-6 and magnitude.max() <= 0.8 + 1e-6
    assert magnitude.min() < 0.45 and magnitude.max() > 0.75  # the whole ring is covered
    assert phase.min() >= 0 and phase.max() <= math.pi / 10 + 1e-6 and phase.max() > 0.9 * math.pi / 10
    torch.testing.assert_close(torch.exp(model.gamma_log.double()), torch.sqrt(1 - magnitude**2), rtol=1e-5, atol=0)
    default = LRUConfig()
    assert (default.r_min, default.r_max, default.max_phase) == (0.9, 0.999, 2 * math.pi)


def test_mamba_init_dt_bias_and_s4d_real() -> None:
    config = MambaConfig(d_model=128, d_state=6)
    model = _build(Mamba, config)
    dt = nn.functional.softplus(model.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 1e-1 * (1 + 1e-4) and dt.max() / dt.min() > 20
    torch.testing.assert_close(-torch.exp(model.A_log), -torch.arange(1.0, 7.0).expand(256, -1))
    bound = config.rank**-0.5
    assert model.dt_proj.weight.abs().max() <= bound and model.dt_proj.weight.abs().max() > 0.9 * bound
    assert config.rank == 8 and torch.equal(model.D, torch.ones(256))


# ---------------------------------------------------------- counts, state sizes, tags and validation


def test_parameter_counts_count_complex_twice() -> None:
    D, N = 6, 5
    lru = _build(LRU, LRUConfig(d_model=D, d_state=N))
    # ν, θ, γ (N each); B (N×D complex) and C (D×N complex); D skip; the GLU's two D×D layers with biases
    assert num_real_parameters(lru) == 3 * N + 2 * N * D + 2 * D * N + D + 2 * (D * D + D)
    s4d = _build(S4D, S4DConfig(d_model=D, d_state=2 * N))
    assert num_real_parameters(s4d) == D + 2 * D * N + 2 * D * N + D + (D * 2 * D + 2 * D)
    s5 = _build(S5, S5Config(d_model=D, d_state=2 * N, blocks=1))
    assert num_real_parameters(s5) == 3 * N + 2 * N * D + 2 * D * N + D + (D * D + D)


def test_state_sizes() -> None:
    assert _build(S4D, S4DConfig(d_model=6, d_state=8)).state_size(64) == 6 * 8
    assert _build(S5, S5Config(d_model=6, d_state=8, blocks=2)).state_size(64) == 8
    assert _build(LRU, LRUConfig(d_model=6, d_state=5)).state_size(64) == 10
    # SSM state E·D·N plus the conv buffer's d_conv − 1 past inputs per inner channel
    assert _build(Mamba, MambaConfig(d_model=8, d_state=4)).state_size(64) == 16 * 4 + 16 * 3


TAGS = [
    (S4D, S4DConfig(d_model=4), {"log_dt", "log_A_real", "A_imag"}),
    (S5, S5Config(d_model=4, d_state=8), {"Lambda_re", "Lambda_im", "log_step", "B"}),
    (LRU, LRUConfig(d_model=4, d_state=4), {"nu_log", "theta_log", "gamma_log", "B"}),
    (Mamba, MambaConfig(d_model=4), {"A_log", "dt_proj.weight", "dt_proj.bias"}),
]


@pytest.mark.parametrize("cls, config, expected", TAGS, ids=lambda v: getattr(v, "__name__", ""))
def test_transition_parameters_are_tagged(cls: type[nn.Module], config, expected: set[str]) -> None:
    model = _build(cls, config)
    assert {n for n, p in model.named_parameters() if is_transition(p)} == expected
    assert cls.config_class is type(config)


@pytest.mark.parametrize(
    "config_class, field, value, message",
    [
        (S4DConfig, "d_state", 7, "d_state=7 must be an even int"),
        (S4DConfig, "init", "legs", "init='legs' must be one of"),
        (S4DConfig, "mode", "loop", "mode='loop' must be one of"),
        (S4DConfig, "dt_min", 0.5, "dt_min=0.5, dt_max=0.1 must satisfy 0 < dt_min <= dt_max"),
        (S5Config, "blocks", 3, "blocks=3 must divide d_state=128"),
        (S5Config, "d_state", 12, "block size d_state/blocks=3 must be even"),
        (S5Config, "activation", "relu", "activation='relu' must be one of"),
        (S5Config, "conj_sym", 1, "conj_sym=1 must be a bool"),
        (LRUConfig, "r_max", 1.0, "r_min=0.9, r_max=1.0 must satisfy 0 <= r_min <= r_max < 1"),
        (LRUConfig, "max_phase", 7.0, r"max_phase=7.0 must lie in \(0, 2π\]"),
        (LRUConfig, "d_state", 0, "d_state=0 must be a positive int"),
        (MambaConfig, "expand", 0, "expand=0 must be a positive int"),
        (MambaConfig, "dt_rank", 0, "dt_rank=0 must be None"),
        (MambaConfig, "dt_init", "zeros", "dt_init='zeros' must be one of"),
        (MambaConfig, "chunk_size", 2.0, "chunk_size=2.0 must be a positive int"),
    ],
)
def test_configs_reject_invalid_values(config_class, field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_class(**{field: value})
    assert dataclasses.is_dataclass(config_class) and config_class.__dataclass_params__.frozen


@needs_compiler
def test_a_cuda_run_with_a_cpu_only_scan_is_refused_when_its_config_is_built(monkeypatch) -> None:
    from gateloop import GateLoopConfig, LMConfig
    from studies.config import RunConfig, TrainConfig
    from tasks import make_task

    task = make_task("mqar")
    lm = LMConfig(vocab_size=task.vocab_size)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "auto" then means CUDA
    for model, mixer, fix in (("mamba", MambaConfig(d_model=8, scan="fused"), "mixer.scan=torch"),
                              ("gateloop", GateLoopConfig(d_model=8, mode="fused"), "mixer.mode=chunked")):
        with pytest.raises(ValueError, match=f"runs on the CPU only and this run's device is 'auto' .*use {fix}"):
            RunConfig("mqar", task, model, mixer, lm, TrainConfig(device="auto"))
        RunConfig("mqar", task, model, mixer, lm, TrainConfig(device="cpu"))  # accepted
