"""The GateLoop engines agree with the reference loop, and the loop agrees with the special cases it claims.

Every mode runs in complex64 and is compared with the loop run in complex128 on the same inputs (the loop
in float64 is the ground truth; a float32 loop would itself be off by ~1e-7), in outputs, final state and
the gradients of q, k, v, a and the initial state under random cotangents. A second, float64 comparison
at a tight tolerance catches mistakes that a 1e-5 tolerance could hide. Every equivalence takes the
`device` fixture (conftest.py): the mode runs there, the float64 reference loop always on the CPU.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch

from gateloop import chunked
from gateloop._build import build_refusal
from gateloop.chunked import gateloop_scan_chunked
from gateloop.elementwise import gateloop_scan_elementwise
from gateloop.fused import fused_refusal, gateloop_scan_fused
from gateloop.scan import (
    MODES,
    gateloop_scan,
    gateloop_scan_assoc,
    gateloop_scan_attention,
    gateloop_scan_ref,
    gateloop_step,
)

FAST_MODES = {
    "scan": gateloop_scan_assoc,
    "chunked": gateloop_scan_chunked,
    "attention": gateloop_scan_attention,
    "elementwise": gateloop_scan_elementwise,
}
LENGTHS = (1, 7, 64, 200, 1000)
# Per length: a chunk size that divides L and one that does not (7 and 24 are not powers of two either).
CHUNKS = {1: (1, 4), 7: (7, 4), 64: (16, 24), 200: (8, 64), 1000: (8, 64)}
MAGNITUDES = (1e-3, 0.5, 1 - 1e-3)
TOL32 = 1e-5  # relative error of a complex64 mode against the complex128 loop
TOL64 = 1e-10  # the same comparison with the mode in complex128


def make_inputs(
    B: int, L: int, H: int, K: int, V: int, magnitude: float, random_phase: bool, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """q, k (B, L, H, K), v (B, L, H, V), a (B, L, H, K), s0 (B, H, K, V) in float64 / complex128.

    |a| is `magnitude` with a ±10 % log-normal jitter (capped at 1); phases uniform on [0, 2π) or zero.
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, L, H, K, generator=g, dtype=torch.float64)
    k = torch.randn(B, L, H, K, generator=g, dtype=torch.float64)
    v = torch.randn(B, L, H, V, generator=g, dtype=torch.float64)
    jitter = torch.exp(0.1 * torch.randn(B, L, H, K, generator=g, dtype=torch.float64))
    mag = (magnitude * jitter).clamp(max=1.0)
    phase = 2 * math.pi * torch.rand(B, L, H, K, generator=g, dtype=torch.float64) * float(random_phase)
    a = torch.polar(mag, phase)
    s0 = torch.randn(B, H, K, V, generator=g, dtype=torch.complex128)
    return q, k, v, a, s0


def cotangents(y_shape: tuple[int, ...], state_shape: tuple[int, ...], seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Random cotangents for y (real) and the final state (complex)."""
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y_shape, generator=g, dtype=torch.float64)
    gs = torch.randn(state_shape, generator=g, dtype=torch.complex128)
    return gy, gs


def run_with_grads(
    fn, inputs: tuple[torch.Tensor, ...], gy: torch.Tensor, gs: torch.Tensor, device: str = "cpu", **kwargs
) -> list[torch.Tensor]:
    """[y, final_state, grad q, grad k, grad v, grad a, (grad s0)] of fn on `device` under cotangents (gy, gs),
    returned on the CPU."""
    leaves = [x.detach().to(device).requires_grad_() for x in inputs]
    y, state = fn(*leaves, **kwargs)
    loss = (y * gy.to(device, y.dtype)).sum() + (state.conj() * gs.to(device, state.dtype)).real.sum()
    grads = torch.autograd.grad(loss, leaves)
    return [x.detach().cpu() for x in (y, state, *grads)]


def to_single(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex64) if x.is_complex() else x.to(torch.float32)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """‖x - ref‖ / ‖ref‖; where the reference is exactly zero (e.g. the gradient of a at L = 1 without an
    initial state), the absolute ‖x‖, the inputs and cotangents being O(1)."""
    diff = (x.to(ref.dtype) - ref).norm()
    return (diff / ref.norm() if ref.norm() > 0 else diff).item()


def assert_close_to(results: list[torch.Tensor], reference: list[torch.Tensor], tol: float, what: str) -> None:
    names = ["y", "final_state", "grad_q", "grad_k", "grad_v", "grad_a", "grad_s0"]
    for name, x, ref in zip(names, results, reference):
        assert torch.isfinite(torch.view_as_real(x) if x.is_complex() else x).all(), f"{what}: {name} not finite"
        err = rel_err(x, ref)
        assert err <= tol, f"{what}: {name} relative error {err:.2e} > {tol:.0e}"


@functools.lru_cache(maxsize=None)
def reference(L: int, magnitude: float, random_phase: bool, with_state: bool, shape: tuple[int, ...]):
    """Inputs, cotangents and the loop's results in float64, shared by every mode that is compared to them."""
    B, H, K, V = shape
    q, k, v, a, s0 = make_inputs(B, L, H, K, V, magnitude, random_phase)
    inputs = (q, k, v, a, s0) if with_state else (q, k, v, a)
    gy, gs = cotangents((B, L, H, V), (B, H, K, V))
    return inputs, gy, gs, run_with_grads(gateloop_scan_ref, inputs, gy, gs)


def cases(L: int, mode: str = ""):
    """(|a|, random phase, initial state) combinations. The O(L²·K) attention mode at L = 1000 takes
    only the combinations with random phases and an initial state, to keep the file fast."""
    for magnitude in MAGNITUDES:
        for random_phase in (False, True):
            for with_state in (False, True):
                if mode == "attention" and L >= 1000 and not (random_phase and with_state):
                    continue
                yield magnitude, random_phase, with_state


MATRIX = (1, 2, 2, 3)  # (B, H, K, V): matrix state per head
ELEMENTWISE = (2, 3, 1, 1)  # max-headed: K = V = 1


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("mode", sorted(FAST_MODES))
def test_mode_matches_loop_complex64(mode: str, L: int, device: str) -> None:
    fn = FAST_MODES[mode]
    chunk_sizes = CHUNKS[L] if mode in ("chunked", "elementwise") else (64,)
    for magnitude, random_phase, with_state in cases(L, mode):
        inputs, gy, gs, expected = reference(L, magnitude, random_phase, with_state, MATRIX)
        for chunk_size in chunk_sizes:
            got = run_with_grads(fn, tuple(map(to_single, inputs)), gy, gs, device, chunk_size=chunk_size)
            what = f"{mode} L={L} C={chunk_size} |a|={magnitude} phase={random_phase} s0={with_state}"
            assert_close_to(got, expected, TOL32, what)


@pytest.mark.parametrize("L", (7, 200))
@pytest.mark.parametrize("mode", sorted(FAST_MODES))
def test_mode_matches_loop_float64(mode: str, L: int, device: str) -> None:
    for magnitude, random_phase, with_state in cases(L):
        inputs, gy, gs, expected = reference(L, magnitude, random_phase, with_state, MATRIX)
        got = run_with_grads(FAST_MODES[mode], inputs, gy, gs, device, chunk_size=CHUNKS[L][1])
        assert_close_to(got, expected, TOL64, f"{mode} float64 L={L} |a|={magnitude}")


@pytest.mark.parametrize("L", (7, 200))
@pytest.mark.parametrize("mode", sorted(FAST_MODES))
def test_mode_matches_loop_max_headed(mode: str, L: int, device: str) -> None:
    for magnitude, random_phase, with_state in cases(L):
        inputs, gy, gs, expected = reference(L, magnitude, random_phase, with_state, ELEMENTWISE)
        got = run_with_grads(FAST_MODES[mode], tuple(map(to_single, inputs)), gy, gs, device, chunk_size=CHUNKS[L][1])
        assert_close_to(got, expected, TOL32, f"{mode} K=V=1 L={L} |a|={magnitude}")


needs_compiler = pytest.mark.skipif(bool(build_refusal("mode='chunked'")), reason=build_refusal("mode='chunked'") or "-")


@needs_compiler
@pytest.mark.parametrize("L", (1, 7, 128, 200, 1000))  # 128, 200, 1000: across the kernel's 64-step checkpoints (128: an exact multiple)
def test_fused_mode_matches_loop_max_headed(L: int) -> None:
    """mode='fused' (C++): complex64 at the float32 tolerance and complex128 at the float64 one, every gate
    magnitude, with and without phases and an initial state; through the dispatcher."""
    for magnitude, random_phase, with_state in cases(L):
        inputs, gy, gs, expected = reference(L, magnitude, random_phase, with_state, ELEMENTWISE)
        got = run_with_grads(gateloop_scan, tuple(map(to_single, inputs)), gy, gs, mode="fused")
        assert_close_to(got, expected, TOL32, f"fused K=V=1 L={L} |a|={magnitude} phase={random_phase} s0={with_state}")
        got = run_with_grads(gateloop_scan_fused, inputs, gy, gs)
        assert_close_to(got, expected, TOL64, f"fused float64 L={L} |a|={magnitude}")


@needs_compiler
def test_fused_mode_with_only_the_output_or_only_the_state_used() -> None:
    inputs, _, _, _ = reference(70, 0.5, True, True, ELEMENTWISE)
    for pick in (0, 1):
        grads = []
        for fn in (gateloop_scan_fused, gateloop_scan_ref):
            leaves = [x.detach().clone().requires_grad_() for x in inputs]
            out = fn(*leaves)[pick]
            loss = (out.abs() ** 2).sum()
            grads.append(torch.autograd.grad(loss, leaves, materialize_grads=True))
        for got, ref in zip(*grads):
            assert rel_err(got, ref) <= TOL64


def test_fused_mode_refuses_other_layouts_and_devices_in_one_line() -> None:
    inputs, _, _, _ = reference(7, 0.5, True, True, MATRIX)
    with pytest.raises(ValueError, match=r"max-headed GateLoop \(K = V = 1\), not K=2, V=3: use mode='chunked'"):
        gateloop_scan(*inputs, mode="fused")
    q = torch.zeros(1, 1, 1, 1, device="meta")
    assert fused_refusal(q, q).startswith("mode='fused' runs on the CPU only")


def test_dispatcher_runs_every_mode_and_routes_max_headed_chunked_to_elementwise(monkeypatch, device: str) -> None:
    inputs, gy, gs, expected = reference(7, 0.5, True, True, ELEMENTWISE)
    for mode in MODES:
        got = run_with_grads(gateloop_scan, inputs, gy, gs, device, mode=mode, chunk_size=4)
        assert_close_to(got, expected, TOL64, f"gateloop_scan(mode={mode!r})")
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["chunk_size"])
        return gateloop_scan_elementwise(*args, **kwargs)

    monkeypatch.setitem(MODES, "elementwise", spy)
    gateloop_scan(*inputs, mode="chunked", chunk_size=4)
    assert calls == [4]
    matrix_inputs = reference(7, 0.5, True, True, MATRIX)[0]
    gateloop_scan(*matrix_inputs, mode="chunked", chunk_size=4)
    assert calls == [4], "a matrix state must run the chunked engine, not the elementwise one"


@pytest.mark.parametrize("form", ("direct", "split"))
def test_chunked_forms_agree_with_loop(form: str, device: str) -> None:
    """Both within-chunk forms on the same inputs, at the edge of the direct form's domain."""
    B, L, H, K, V = 1, 200, 2, 2, 3
    q, k, v, _, s0 = make_inputs(B, L, H, K, V, 0.5, True, seed=9)
    g = torch.Generator().manual_seed(9)
    # Total decay per 64-step chunk just under DIRECT_MAX_DECAY, with two gates per chunk at DIRECT_MIN_GATE.
    log_mag = torch.full((B, L, H, K), -(chunked.DIRECT_MAX_DECAY - 0.5 - 2 * 3.0) / 62, dtype=torch.float64)
    log_mag[:, 5::64] = log_mag[:, 40::64] = math.log(chunked.DIRECT_MIN_GATE) + 1e-3
    a = torch.polar(log_mag.exp(), 2 * math.pi * torch.rand(B, L, H, K, generator=g, dtype=torch.float64))
    inputs = (q, k, v, a, s0)
    gy, gs = cotangents((B, L, H, V), (B, H, K, V))
    expected = run_with_grads(gateloop_scan_ref, inputs, gy, gs)
    got = run_with_grads(gateloop_scan_chunked, tuple(map(to_single, inputs)), gy, gs, device, chunk_size=64, form=form)
    assert_close_to(got, expected, TOL32, f"chunked, {form} form")


@pytest.mark.parametrize(("magnitude", "expected_form"), ((0.99, "direct"), (0.5, "split"), (1e-3, "split")))
def test_chunked_auto_form_choice(magnitude: float, expected_form: str) -> None:
    """"auto" runs the direct form for gates near 1 and the split form once chunks decay by > 20 nats."""
    inputs = tuple(map(to_single, make_inputs(1, 128, 2, 2, 3, magnitude, True)[:4]))
    y_auto, _ = gateloop_scan_chunked(*inputs)
    y_form, _ = gateloop_scan_chunked(*inputs, form=expected_form)
    assert torch.equal(y_auto, y_form)


def test_chunked_direct_form_refuses_where_it_is_not_exact() -> None:
    q, k, v, a, _ = make_inputs(1, 64, 1, 2, 2, 1e-3, True)
    with pytest.raises(ValueError, match="total decay <= 20.0 nats"):
        gateloop_scan_chunked(q, k, v, a, form="direct")
    one_small_gate = torch.ones_like(a)
    one_small_gate[:, 10] = 0.01  # 4.6 nats in total, but one gate below DIRECT_MIN_GATE
    with pytest.raises(ValueError, match="every \\|a\\| >= 0.05"):
        gateloop_scan_chunked(q, k, v, one_small_gate, form="direct")
    assert chunked.chunked_form(a) == chunked.chunked_form(one_small_gate) == "split"
    assert chunked.chunked_form(torch.ones_like(a)) == "direct"
    one_fast_chunk = torch.ones(1, 256, 1, 2, dtype=a.dtype)
    one_fast_chunk[:, 130:150] = 0.3  # 24 nats inside the third chunk of 64, every gate >= 0.05
    assert chunked.chunked_form(one_fast_chunk) == "split"
    assert chunked.chunked_form(one_fast_chunk[:, :128]) == "direct"


def test_always_split_makes_auto_take_the_split_form(monkeypatch) -> None:
    """Gates near 1 take the direct form; inside always_split (what the capability dry run times) the split
    form, with the same results; the setting ends with the block."""
    q, k, v, _, _ = make_inputs(1, 64, 1, 2, 2, 1e-3, True)
    a = torch.full((1, 64, 1, 2), 0.95, dtype=torch.complex64)
    assert chunked.chunked_form(a) == "direct"
    expected = gateloop_scan_chunked(q, k, v, a, form="split")

    def refuse(*args, **kwargs):
        raise AssertionError("the direct form was taken")

    monkeypatch.setattr(chunked, "_direct_terms", refuse)
    with chunked.always_split():
        got = gateloop_scan_chunked(q, k, v, a)
    assert all(torch.equal(x, y) for x, y in zip(got, expected))
    with pytest.raises(AssertionError, match="the direct form was taken"):
        gateloop_scan_chunked(q, k, v, a)


def test_default_mode_is_chunked(device: str) -> None:
    inputs, gy, gs, expected = reference(64, 0.5, True, True, MATRIX)
    got = run_with_grads(gateloop_scan, tuple(map(to_single, inputs)), gy, gs, device)
    assert_close_to(got, expected, TOL32, "gateloop_scan defaults")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_state_passing(mode: str, device: str) -> None:
    """Scanning x[:t] and then x[t:] from the carried state equals scanning x (t inside a chunk)."""
    q, k, v, a, s0 = (x.to(device) for x in make_inputs(1, 50, 2, 2, 3, 0.9, True, seed=3))
    y, final = gateloop_scan(q, k, v, a, s0, mode=mode, chunk_size=8)
    t = 21
    y1, mid = gateloop_scan(q[:, :t], k[:, :t], v[:, :t], a[:, :t], s0, mode=mode, chunk_size=8)
    y2, final2 = gateloop_scan(q[:, t:], k[:, t:], v[:, t:], a[:, t:], mid, mode=mode, chunk_size=8)
    assert rel_err(torch.cat([y1, y2], 1), y) < TOL64
    assert rel_err(final2, final) < TOL64


def test_step_continues_a_scan(device: str) -> None:
    """Decoding with gateloop_step from the state a chunked scan returns reproduces the longer scan."""
    q, k, v, a, s0 = (x.to(device) for x in make_inputs(2, 30, 2, 2, 3, 0.9, True, seed=4))
    y, final = gateloop_scan(q, k, v, a, s0, mode="chunked", chunk_size=8)
    _, state = gateloop_scan(q[:, :20], k[:, :20], v[:, :20], a[:, :20], s0, mode="chunked", chunk_size=8)
    for n in range(20, 30):
        y_n, state = gateloop_step(q[:, n], k[:, n], v[:, n], a[:, n], state)
        assert rel_err(y_n, y[:, n]) < TOL64
    assert rel_err(state, final) < TOL64


@pytest.mark.parametrize("mode", sorted(MODES))
def test_gradcheck_complex128(mode: str, device: str) -> None:
    """Finite differences (torch.autograd.gradcheck, complex inputs checked as Wirtinger pairs)."""
    q, k, v, a, s0 = make_inputs(1, 5, 1, 2, 2, 0.7, True, seed=5)
    inputs = tuple(x.to(device).requires_grad_() for x in (q, k, v, a, s0))
    assert torch.autograd.gradcheck(lambda *xs: gateloop_scan(*xs, mode=mode, chunk_size=2), inputs)


def test_gradcheck_chunked_split_form_complex128(device: str) -> None:
    """gradcheck above takes the direct form at these gates; the split form and its hand-written backward."""
    q, k, v, a, s0 = make_inputs(1, 6, 1, 2, 2, 0.7, True, seed=5)
    inputs = tuple(x.to(device).requires_grad_() for x in (q, k, v, a, s0))
    assert torch.autograd.gradcheck(lambda *xs: gateloop_scan_chunked(*xs, chunk_size=4, form="split"), inputs)


def naive_surrogate_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The form to avoid: D_nm = P_n / P_m with P = cumprod(a). B = H = K = 1: q, k, v, a (L,)."""
    P = torch.cumprod(a, 0)
    D = torch.tril(P[:, None] / P[None, :])
    return ((q[:, None] * k[None, :] * D) @ v.to(D.dtype)).real


def test_attention_is_finite_and_correct_where_cumprod_divide_is_nan() -> None:
    L = 2048
    q, k, v, a, _ = make_inputs(1, L, 1, 1, 1, 0.5, True, seed=6)
    a = torch.polar(torch.full_like(a.abs(), 0.5), a.angle())  # |a| = 0.5 exactly: cumprod underflows
    single = tuple(map(to_single, (q, k, v, a)))
    naive = naive_surrogate_attention(*(x[0, :, 0, 0] for x in single))
    assert torch.isnan(naive).any(), "the naive form was expected to produce NaN at this length"
    y_ref, state_ref = gateloop_scan_ref(q, k, v, a)
    leaves = [x.clone().requires_grad_() for x in single]
    y, state = gateloop_scan_attention(*leaves)
    assert rel_err(y, y_ref) < TOL32 and rel_err(state, state_ref) < TOL32
    grads = torch.autograd.grad(y.sum() + state.real.sum(), leaves)
    assert all(torch.isfinite(torch.view_as_real(g) if g.is_complex() else g).all() for g in grads)


def retention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor, theta: torch.Tensor
) -> torch.Tensor:
    """RetNet's parallel retention, written independently of the engines.

    y_n = Σ_{m ≤ n} Σ_κ γ^{n-m} cos((n - m) θ_κ) q_nκ k_mκ v_m per head, i.e. γ^{n-m} times
    Re((q_n e^{inθ}) · conj(k_m e^{imθ})). q, k (B, L, H, K); v (B, L, H, V); gamma (H,); theta (H, K).
    """
    L = q.shape[1]
    n = torch.arange(L, dtype=torch.float64)
    lag = (n[:, None] - n[None, :]).clamp_min(0)  # (n, m)
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    decay = torch.where(causal[None], gamma[:, None, None] ** lag[None], 0.0)  # (H, n, m)
    rot = torch.cos(lag[None, :, :, None] * theta[:, None, None, :])  # (H, n, m, K)
    scores = torch.einsum("bnhk,bmhk,hnmk,hnm->bhnm", q, k, rot, decay)
    return torch.einsum("bhnm,bmhv->bnhv", scores, v)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_fixed_gate_is_retention(mode: str, device: str) -> None:
    B, L, H, K, V = 2, 40, 3, 2, 3
    q, k, v, _, _ = make_inputs(B, L, H, K, V, 0.5, False, seed=7)
    run = functools.partial(gateloop_scan, mode=mode, chunk_size=16)
    gamma = 1 - 2.0 ** (-torch.arange(H, dtype=torch.float64) - 2)  # RetNet-style per-head decays
    theta = torch.linspace(0.1, 1.3, H * K, dtype=torch.float64).reshape(H, K)
    real_gate = gamma[:, None].expand(H, K).to(torch.complex128).expand(B, L, H, K)
    y, _ = run(*(x.to(device) for x in (q, k, v, real_gate)))
    assert rel_err(y.cpu(), retention(q, k, v, gamma, torch.zeros(H, K, dtype=torch.float64))) < TOL64
    rotating_gate = torch.polar(gamma[:, None].expand(H, K), theta).expand(B, L, H, K)
    y, _ = run(*(x.to(device) for x in (q, k, v, rotating_gate)))
    assert rel_err(y.cpu(), retention(q, k, v, gamma, theta)) < TOL64


@pytest.mark.parametrize("mode", sorted(MODES))
def test_unit_gate_is_causal_linear_attention(mode: str, device: str) -> None:
    B, L, H, K, V = 2, 37, 2, 3, 2
    q, k, v, _, _ = make_inputs(B, L, H, K, V, 0.5, False, seed=8)
    ones = torch.ones(B, L, H, K, dtype=torch.complex128)
    y, state = (x.cpu() for x in gateloop_scan(*(x.to(device) for x in (q, k, v, ones)), mode=mode, chunk_size=8))
    scores = torch.einsum("bnhk,bmhk->bhnm", q, k).tril()
    assert rel_err(y, torch.einsum("bhnm,bmhv->bnhv", scores, v)) < TOL64
    assert rel_err(state, torch.einsum("blhk,blhv->bhkv", k, v).to(state.dtype)) < TOL64


def test_bad_inputs_raise() -> None:
    q, k, v, a, s0 = make_inputs(1, 5, 2, 2, 3, 0.5, True)
    with pytest.raises(ValueError, match="unknown gateloop_scan mode"):
        gateloop_scan(q, k, v, a, mode="fft")
    with pytest.raises(ValueError, match="must be complex"):
        gateloop_scan(q, k, v, a.abs())
    with pytest.raises(ValueError, match="share one shape"):
        gateloop_scan(q, k[..., :1], v, a)
    with pytest.raises(ValueError, match="initial_state has shape"):
        gateloop_scan(q, k, v, a, s0[..., :2])
    with pytest.raises(ValueError, match="chunk_size"):
        gateloop_scan(q, k, v, a, chunk_size=0)


@pytest.mark.parametrize("shape", (MATRIX, ELEMENTWISE), ids=("matrix", "max-headed"))
@pytest.mark.parametrize("mode", sorted(FAST_MODES))
def test_vanishing_and_zero_gates_stay_finite_and_match_the_loop(mode: str, shape: tuple[int, ...]) -> None:
    """A real gate that crosses 0 (the signed gate 2σ(u) − 1 does, and in float32 u lands exactly on 0 about
    once in 10^7 sums) once turned the log-space engines' output and gradients into NaN (log 0 = −inf, atan2's
    0/0): study v2's signed-gate runs diverged after they had learned parity. Gates exactly 0 and below
    float32's smallest normal |a|² now give the loop's output, finite gradients, and the loop's gradients in
    q, k, v; the gradient in those gates themselves is 0 (log_polar), in every other gate the loop's."""
    B, H, K, V = shape
    L = 13
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(B, L, H, n, generator=g) for n in (K, K, V))
    u = 2 * torch.rand(B, L, H, K, generator=g) - 1  # real gates of both signs
    vanishing = torch.zeros(B, L, H, K, dtype=torch.bool)
    for (b, n, h, j), value in zip(((0, 2, 0, 0), (B - 1, 6, H - 1, K - 1), (0, 11, H - 1, 0)), (0.0, -1e-30, 1e-25)):
        u[b, n, h, j] = value
        vanishing[b, n, h, j] = True
    results = []
    for run in ("recurrent", mode):
        inputs = [x.clone().requires_grad_() for x in (q, k, v, u)]
        a = torch.complex(inputs[3], torch.zeros_like(inputs[3]))
        y, state = (gateloop_scan_ref(*inputs[:3], a) if run == "recurrent"
                    else gateloop_scan(*inputs[:3], a, mode=mode, chunk_size=4))
        (y * torch.cos(torch.arange(y.numel()).view(y.shape))).sum().add(state.real.sum()).backward()
        results.append((y.detach(), state.detach(), *(x.grad for x in inputs)))
    (y_ref, s_ref, *g_ref), (y_got, s_got, *g_got) = results
    for got in (y_got, s_got, *g_got):
        assert torch.isfinite(torch.view_as_real(got) if got.is_complex() else got).all(), mode
    torch.testing.assert_close(y_got, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_got, s_ref, atol=1e-5, rtol=1e-5)
    for got, ref in zip(g_got[:3], g_ref[:3]):  # q, k, v
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    keep = ~vanishing
    torch.testing.assert_close(g_got[3][keep], g_ref[3][keep], atol=1e-4, rtol=1e-4)
