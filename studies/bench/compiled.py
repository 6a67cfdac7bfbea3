"""Does `torch.compile` pay on this machine? Eager vs compiled, for training steps and for the scans' loops.

Two measurements, each against the eager path in the same process, at one intra-op thread:

1. **Training step** at the headline size, every registered mixer: the LM as `bench train` builds it
   (`studies.bench.train._Stepper`, same seed, same fixed MQAR batch) and a twin whose model is wrapped in
   `torch.compile` (inductor; on the CPU it generates C++). Printed: the compile time (its first forward+backward and step),
   the median CPU ms per step of each after warm-up, their ratio (> 1: compiled is faster), and how far
   the compiled step's loss and gradients are from the eager ones (max |Δ| over max |eager|, on the
   first step from identical weights).
2. **Scan loops** (the elementwise recurrences `h_t = a_t h_{t-1} + b_t` inside one chunk, as Mamba's
   selective scan runs them in real fp32, and GateLoop's max-headed engine in complex64): the eager
   in-place loop vs the same recurrence written functionally and compiled (the loop over the chunk
   unrolled, fused by inductor), at the training size and at the `bench gateloop` size.

Compile times are as measured in this process: inductor caches compiled code on disk (under /tmp), so a
second run of this benchmark compiles in a fraction of the first run's time.

The compiled path would be a candidate default only where it is faster *and* its numbers agree with
eager's to float32 rounding; the printed verdicts say where that holds.

    python -m studies.bench compiled [--quick]
"""
from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from baselines import MIXERS
from studies.bench.train import _load, _Stepper
from studies.train import keep_freed_memory

ROUNDING = 1e-4  # relative agreement below this counts as float32 rounding (long reductions reorder sums)


def _median_cpu_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1e3


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _first_step_gap(eager: _Stepper, twin: _Stepper) -> float:
    """Max relative gap of loss and every gradient between one eager and one compiled forward+backward
    (twin.model is the compiled one; both steppers start from the same seed, so from the same weights)."""
    def grads(stepper: _Stepper) -> list[torch.Tensor]:
        stepper.model.zero_grad(set_to_none=True)
        logits = stepper.model(stepper.inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), stepper.targets.flatten(), ignore_index=-100)
        loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in stepper.model.parameters() if p.grad is not None]
    return max(_rel(x, r) for x, r in zip(grads(twin), grads(eager)))


def step_rows(names: list[str], repeats: int) -> list[str]:
    lines = [
        "| mixer | compile s | eager CPU ms/step | compiled CPU ms/step | eager ÷ compiled | max rel. gap (loss, grads) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        eager = _Stepper(name, "headline", None, None)
        twin = _Stepper(name, "headline", None, None)
        twin.model = torch.compile(twin.model)
        start = time.perf_counter()
        try:
            gap = _first_step_gap(eager, twin)  # the compiled model's first forward+backward: it compiles here
            twin.step()
        except Exception as error:  # a mixer inductor cannot compile is a measured outcome, not a crash
            lines.append(f"| {name} | failed: {type(error).__name__}: {str(error).splitlines()[0][:80]} | | | | |")
            continue
        compile_s = time.perf_counter() - start
        for _ in range(3):
            eager.step()
        e = _median_cpu_ms(eager.step, repeats)
        c = _median_cpu_ms(twin.step, repeats)
        lines.append(f"| {name} | {compile_s:.1f} | {e:.1f} | {c:.1f} | {e / c:.2f} | {gap:.1e} |")
    return lines


def _loop_in_place(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The eager chunk loop as the engines run it: states written over b's copy, one addcmul per step."""
    h = b.clone()
    for t in range(1, h.shape[0]):
        h[t].addcmul_(a[t], h[t - 1])
    return h


def _loop_functional(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same recurrence without in-place writes, for inductor to fuse."""
    states = [b[0]]
    for t in range(1, b.shape[0]):
        states.append(a[t] * states[-1] + b[t])
    return torch.stack(states)


def scan_rows(repeats: int) -> list[str]:
    # (what, chunk steps C, elements per step M, dtype): Mamba's headline chunk (C = L = 32,
    # B·N·E·D = 32·16·88) and GateLoop's max-headed chunk at the `bench gateloop` size (C = 64, the
    # 64 chunks of L = 4096 at once, B·H = 8·256).
    cases = [
        ("Mamba selective scan, headline chunk", 32, 32 * 16 * 88, torch.float32),
        ("max-headed GateLoop, L=4096 chunk", 64, 64 * 8 * 256, torch.complex64),
    ]
    lines = [
        "| recurrence | C × M | dtype | compile s | eager ms | compiled ms | eager ÷ compiled | max rel. gap |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for what, C, M, dtype in cases:
        gen = torch.Generator().manual_seed(0)
        a = torch.rand(C, M, generator=gen)
        b = torch.randn(C, M, generator=gen)
        if dtype.is_complex:
            a = torch.polar(a, torch.randn(C, M, generator=gen))
            b = torch.complex(b, torch.randn(C, M, generator=gen))
        compiled = torch.compile(_loop_functional, dynamic=False, fullgraph=True)
        start = time.perf_counter()
        try:
            out = compiled(a, b)
        except Exception as error:
            lines.append(f"| {what} | {C} × {M} | {dtype} | failed: {type(error).__name__} | | | | |")
            continue
        compile_s = time.perf_counter() - start
        gap = _rel(out, _loop_in_place(a, b))
        e = _median_cpu_ms(lambda: _loop_in_place(a, b), repeats)
        c = _median_cpu_ms(lambda: compiled(a, b), repeats)
        lines.append(f"| {what} | {C} × {M:,} | {str(dtype).removeprefix('torch.')} | {compile_s:.1f} | {e:.2f} | "
                     f"{c:.2f} | {e / c:.2f} | {gap:.1e} |")
    return lines


def main(quick: bool) -> None:
    torch.set_num_threads(1)
    keep_freed_memory()
    # Dynamo reports every graph break (in-place ops, autograd Functions) as a warning; the ratios say what they cost.
    warnings.filterwarnings("ignore")
    torch._logging.set_logs(dynamo=logging.ERROR)
    names = ["attention", "gateloop", "mamba"] if quick else list(MIXERS)
    print(f"## torch.compile vs eager (torch {torch.__version__}, 1 thread, {_load()})\n")
    print("### training step, headline size (compiled: torch.compile(model), inductor)\n")
    print("\n".join(step_rows(names, 5 if quick else 30)), flush=True)
    print("\n### one chunk of the elementwise recurrence h_t = a_t h_{t-1} + b_t\n")
    print("\n".join(scan_rows(5 if quick else 50)), flush=True)
    print(f"\n{_load()}")
    print(f"\nA compiled path is worth a default only where eager ÷ compiled > 1 and the gap is under {ROUNDING:g}.")
