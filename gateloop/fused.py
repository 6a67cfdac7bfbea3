"""Max-headed GateLoop (K = V = 1) as one fused C++ loop on the CPU: the "fused" mode of `gateloop_scan`.

For K = V = 1 every channel h is a scalar complex recurrence S_n = a_n S_{n-1} + k_n v_n, y_n = q_n Re S_n,
and the torch engines spend their time on passes over memory and per-step dispatch (elementwise.py's
docstring). Here each sequence's H states stay in a buffer while a loop walks the L steps, vectorised over
the channels; the backward is the adjoint recurrence of elementwise.py, with states recomputed chunk by
chunk from the state entering each chunk of 64 steps, which the forward stores (so the inputs and L/64
states per sequence are kept between forward and backward). The kernels are gateloop/fused_scan.cpp, compiled on
first use by torch.utils.cpp_extension (about a minute; once per machine and source, under
~/.cache/torch_extensions: gateloop/_build.py).

It is an opt-in mode (`mode="fused"`, CPU, K = V = 1), kept out of `MODES`, which every test runs for
every head layout; `gateloop_scan_ref` is its reference, as for every mode.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from gateloop._build import build_refusal, load_extension
from gateloop._inputs import check_scan_inputs

# As for Mamba's fused scan (baselines/mamba.py): optimisation flags at compile time only, never -ffast-math
# at link time (crtfastmath.o would flush denormals in the whole process). No -ffast-math at all here:
# nothing needs a vectorised libm call, and the recurrence's operations then keep their order.
_CFLAGS = ["-O3", "-march=native"]
_SOURCE = Path(__file__).with_name("fused_scan.cpp")


def fused_refusal(q: torch.Tensor, v: torch.Tensor) -> str:
    """Why the fused mode cannot run on these inputs, in one line; "" if it can."""
    if q.device.type != "cpu":
        return f"mode='fused' runs on the CPU only (inputs on {q.device}): use mode='chunked'"
    if q.shape[-1] != 1 or v.shape[-1] != 1:
        return f"mode='fused' is for max-headed GateLoop (K = V = 1), not K={q.shape[-1]}, V={v.shape[-1]}: use mode='chunked'"
    return build_refusal("mode='chunked'")


@functools.cache
def _extension() -> Any:
    """The kernels of gateloop/fused_scan.cpp, built once per machine and source (gateloop._build)."""
    return load_extension("testbed_gateloop_fused", _SOURCE, _CFLAGS, "GateLoop's fused scan")


class _FusedGateLoop(torch.autograd.Function):
    """(q, k, v, a, s0) on (B, L, H) channels -> (y, final state), with the C++ adjoint recurrence as backward."""

    @staticmethod
    def forward(ctx, q, k, v, a, s0):  # type: ignore[override]
        a_real = torch.view_as_real(a.resolve_conj().contiguous())  # (B, L, H, 2), no copy when contiguous
        sr0, si0 = (q.new_empty(0), q.new_empty(0)) if s0 is None else (s0.real.contiguous(), s0.imag.contiguous())
        y, sr, si, er, ei = _extension().forward(q, k, v, a_real, sr0, si0)  # er, ei: backward's checkpoints
        ctx.save_for_backward(q, k, v, a_real, er, ei)
        ctx.has_s0 = s0 is not None
        return y, torch.complex(sr, si)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_final):  # type: ignore[override]
        q, k, v, a_real, er, ei = ctx.saved_tensors
        grad_y = torch.zeros_like(q) if grad_y is None else grad_y.contiguous()
        if grad_final is None:
            glr = gli = q.new_empty(0)
        else:
            glr, gli = grad_final.real.contiguous(), grad_final.imag.contiguous()
        gq, gk, gv, ga, gsr0, gsi0 = _extension().backward(q, k, v, a_real, er, ei, grad_y, glr, gli)
        return gq, gk, gv, torch.view_as_complex(ga), torch.complex(gsr0, gsi0) if ctx.has_s0 else None


def gateloop_scan_fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-headed GateLoop in C++; same signature and results as `gateloop_scan_ref` (to rounding).

    q, k, v (B, L, H, 1) real; a (B, L, H, 1) complex; initial_state (B, H, 1, 1) or None. chunk_size is
    accepted for the common signature and unused (the kernel's checkpoint interval is fixed at 64).
    """
    check_scan_inputs(q, k, v, a, initial_state)
    refusal = fused_refusal(q, v)
    if refusal:
        raise ValueError(refusal)
    real = a.real.dtype
    B, L, H, _ = q.shape
    flat = [t.to(real).reshape(B, L, H).contiguous() for t in (q, k, v)]
    s0 = None if initial_state is None else initial_state.to(a.dtype).reshape(B, H)
    y, final = _FusedGateLoop.apply(*flat, a.reshape(B, L, H), s0)
    return y.reshape(B, L, H, 1).to(q.dtype), final.reshape(B, H, 1, 1)
