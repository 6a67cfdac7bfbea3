"""A diagonal linear recurrence, the engine shared by the S5, LRU and Mamba baselines.

    h_n = a_n ⊙ h_{n-1} + b_n,      h_{-1} = h0 (zeros when not given),   n = 0 .. L-1

along dim 1 of tensors shaped (B, L, ...), real or complex. `a` may broadcast against `b` in every
dim but time (a constant transition, as in S5 and LRU, is passed as shape (1, L, N) or (1, 1, N)).

`linear_scan_ref` is the plain loop over time with autograd: the spec. `linear_scan` computes the
same numbers with one of two kernels and a hand-written backward:
- odd-even (Blelloch-style) reduction: pair neighbours, solve the half-length problem recursively,
  fill in the other half. O(L) work in log2(L) levels of batched ops: what a GPU wants, and what a
  CPU wants when a time slice is narrow and per-op overhead dominates;
- sequential: the loop, stepped outside autograd into one preallocated output. On CPU with wide time
  slices (Mamba's (B, E·D, N) state) the recurrence is memory-bound and this makes the fewest passes.
The backward is analytic because the adjoint of a linear recurrence is the same recurrence run
backwards with conjugated coefficients:

    g_n = dh_n + conj(a_{n+1}) g_{n+1},   d b_n = g_n,   d a_n = g_n conj(h_{n-1}),   d h0 = conj(a_0) g_0

so backward is one more scan and saves only a and h (autograd through the loop or the recursion
would keep every step's or level's intermediates).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

# (a, b, h0) -> (h, h_last): the signature `linear_scan` and `linear_scan_ref` share.
Scan = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


def _broadcast(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if a.ndim != b.ndim or a.ndim < 2:
        raise ValueError(f"linear_scan: a {tuple(a.shape)} and b {tuple(b.shape)} must both be (B, L, ...) with equal ndim")
    L = b.shape[1]
    if a.shape[1] not in (1, L):
        raise ValueError(f"linear_scan: a has length {a.shape[1]} along dim 1, b has L={L}; need 1 or L")
    shape = torch.broadcast_shapes(a.shape, b.shape)
    if h0 is not None and h0.shape != shape[:1] + shape[2:]:
        raise ValueError(f"linear_scan: h0 has shape {tuple(h0.shape)}, expected (B, ...)={shape[:1] + shape[2:]}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
        h0 = h0.to(dtype)
    # a keeps its own (possibly size-1) non-time dims: products of a constant transition stay small.
    a = a.to(dtype).expand(a.shape[0], L, *a.shape[2:])
    return a, b.to(dtype).expand(shape), h0


def linear_scan_ref(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence as a loop over time. a, b: (B, L, ...); h0: (B, ...). Returns h (B, L, ...), h_last (B, ...)."""
    a, b, h0 = _broadcast(a, b, h0)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    hs = []
    # unbind, not a[:, n]: one backward node for all steps instead of a full-size gradient per step.
    for a_n, b_n in zip(a.unbind(1), b.unbind(1)):
        h = a_n * h + b_n
        hs.append(h)
    return torch.stack(hs, dim=1), h


def _odd_even_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_n = a_n h_{n-1} + b_n from h_{-1} = 0 by recursive pairing: log2(L) levels of batched ops."""
    L = b.shape[1]
    if L == 1:
        return b.clone()  # a fresh tensor: the caller may hand b in as an (expanded) input view
    # Compose neighbours (2k, 2k+1): their combined step maps h_{2k-1} to h_{2k+1}.
    a_even, a_odd = a[:, 0 : L - 1 : 2], a[:, 1::2]  # (B, L//2, ...) each
    b_even, b_odd = b[:, 0 : L - 1 : 2], b[:, 1::2]
    h_odd = _odd_even_scan(a_odd * a_even, torch.addcmul(b_odd, a_odd, b_even))  # h_1, h_3, ...
    # h_{2k} = a_{2k} h_{2k-1} + b_{2k} for k >= 1; h_0 = b_0.
    n_rest = (L - 1) // 2
    h_even = torch.cat([b[:, :1], torch.addcmul(b[:, 2::2], a[:, 2::2], h_odd[:, :n_rest])], dim=1)
    m = L // 2
    h = torch.stack([h_even[:, :m], h_odd], dim=2).flatten(1, 2)  # interleave
    return h if L % 2 == 0 else torch.cat([h, h_even[:, m:]], dim=1)


def _sequential_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """The same recurrence stepped outside autograd, each step written straight into the output."""
    h = torch.empty_like(b)
    h_steps, a_steps, b_steps = h.unbind(1), a.unbind(1), b.unbind(1)
    if h0 is None:
        h_steps[0].copy_(b_steps[0])
    else:
        torch.addcmul(b_steps[0], a_steps[0], h0, out=h_steps[0])
    for n in range(1, b.shape[1]):
        torch.addcmul(b_steps[n], a_steps[n], h_steps[n - 1], out=h_steps[n])
    return h


KERNELS = ("auto", "odd_even", "sequential")
# Elements in one time slice (b[:, n].numel(), batch included) from which the sequential kernel wins
# on CPU: the recurrence is memory-bound and stepping makes the fewest passes over memory, while the
# odd-even kernel pays strided copies at every level. Forward ms, 2 CPU cores, torch 2.13:
#   b shape                    slice    odd-even  sequential
#   (8, 256, 128·16) real      16384        25       10
#   (8, 256, 2048) complex     16384       111       23
#   (32, 256, 64) complex       2048       4.3      3.6
#   (8, 1024, 64) complex        512        10       17
# On accelerators the per-step launch cost dominates instead, so there odd-even is always used.
_SEQUENTIAL_MIN_WIDTH = 1024


def _pick_kernel(kernel: str, b: torch.Tensor) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"linear_scan: unknown kernel {kernel!r}; valid: {KERNELS}")
    if kernel != "auto":
        return kernel
    width = b[:, 0].numel()
    return "sequential" if b.device.type == "cpu" and width >= _SEQUENTIAL_MIN_WIDTH else "odd_even"


def _sequential_adjoint(a: torch.Tensor, grad_h: torch.Tensor) -> torch.Tensor:
    """g_n = dh_n + conj(a_{n+1}) g_{n+1} from g_{L-1} = dh_{L-1}, stepped backwards."""
    g = torch.empty_like(grad_h)
    g_steps, a_steps, d_steps = g.unbind(1), a.unbind(1), grad_h.unbind(1)
    g_steps[-1].copy_(d_steps[-1])
    for n in range(grad_h.shape[1] - 2, -1, -1):
        torch.addcmul(d_steps[n], a_steps[n + 1].conj(), g_steps[n + 1], out=g_steps[n])
    return g


def _odd_even_adjoint(a: torch.Tensor, grad_h: torch.Tensor) -> torch.Tensor:
    """The same adjoint as a forward scan over reversed time with coefficients conj(a_{n+1})."""
    a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1).conj()
    return _odd_even_scan(a_next.flip(1), grad_h.flip(1)).flip(1)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, kernel: str) -> torch.Tensor:
        if kernel == "sequential":
            h = _sequential_scan(a, b, h0)
        else:
            if h0 is not None:
                # Fold the initial state into the first input: h_0 = a_0 h0 + b_0.
                b = torch.cat([torch.addcmul(b[:, :1], a[:, :1], h0.unsqueeze(1)), b[:, 1:]], dim=1)
            h = _odd_even_scan(a, b)
        ctx.save_for_backward(a, h, h0)
        ctx.kernel = kernel
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, h, h0 = ctx.saved_tensors
        adjoint = _sequential_adjoint if ctx.kernel == "sequential" else _odd_even_adjoint
        g = adjoint(a, grad_h)  # (B, L, ...): the gradient w.r.t. b
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.empty_like(g)
            grad_a[:, 1:] = g[:, 1:] * h[:, :-1].conj()
            grad_a[:, 0] = 0 if h0 is None else g[:, 0] * h0.conj()
            grad_a = grad_a.sum_to_size(a.shape)
        if h0 is not None and ctx.needs_input_grad[2]:
            grad_h0 = a[:, 0].conj() * g[:, 0]
        return grad_a, g, grad_h0, None


def linear_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, *, kernel: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments and numbers as `linear_scan_ref`, with an analytic backward.

    kernel: "odd_even" (log depth), "sequential" (stepped without an autograd graph) or "auto"
    (sequential on CPU for wide time slices, odd-even otherwise; see `_SEQUENTIAL_MIN_WIDTH`).
    """
    a, b, h0 = _broadcast(a, b, h0)
    kernel = _pick_kernel(kernel, b)
    h = _LinearScan.apply(a, b, h0, kernel)  # (B, L, ...)
    return h, h[:, -1]
