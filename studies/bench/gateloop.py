"""GateLoop engines: forward and forward+backward time, peak memory and error of every computation mode.

Two shapes, each at L ∈ {256, 1024, 4096} (`quick`: L ∈ {64, 256}):
  matrix state  B=8, H=4,   K=V=32   (the shape the chunked engine is for)
  max-headed    B=8, H=256, K=V=1    (D = 256; elementwise, the paper's setting)

Inputs: q, k, v ~ N(0, 1) (q scaled by 1/sqrt(K)), |a| uniform in [0.8, 1), phases uniform in [0, 2π).
Such gates (near 1, as GateLoop is initialised) let the chunked engine take its direct form; the row
"chunked, split form forced" shows what gates that forget fast (a chunk decaying by > 20 nats) cost.
One timed call is a forward and a backward of a fixed random cotangent into q, k, v and a; "fwd" is the
time until the forward returned (with autograd recording, as in training), "fwd+bwd" until the backward
finished. Each figure is the median of 5 calls after a warm-up call; of 3 where the warm-up took over
1.5 s, and the warm-up call alone where it took over 6 s (the loop and the associative scan at large L),
so that the whole benchmark stays under 5 minutes; the "runs" column says how many. Modes projected to
take over 20 s per call (×4 of the previous length) are not run. Ratios are the recurrent loop's
time divided by the mode's, both measured in this process.
Modes whose memory would exceed a budget are not run: "scan" stores every K×V state several times over,
"attention" a (L, L, K) decay tensor per head. For the 15× target the scan at L=4096 is extrapolated
linearly (×4) from L=1024, as its work is O(L) — printed as such.

Peak memory, of the warm-up call: on CUDA, the allocator's peak above what was allocated before the call;
on the CPU (Linux, glibc) the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)
minus its resident set before the call, after `malloc_trim` returned glibc's cached free memory to the
system so that everything the call allocates is paged in and counted. Resolution: a few MiB.

Timings are taken with glibc keeping freed memory in the process (`studies.train.keep_freed_memory`,
as every training run does): otherwise each fresh state-sized tensor is page-faulted in again per call.

Error: the largest relative error (‖x - x_loop‖ / ‖x_loop‖) over y, the final state and the four input
gradients, against the loop on the same inputs in the same (single) precision.

The machine's matmul rate is measured as the median of float32 (1024 × 1024) @ (1024 × 1024) products; the
chunked forward's attained fraction counts the matmul FLOPs of the form it took (within-chunk scores and
their product with v, chunk summaries, carried-state readout) over its measured forward time.
"""
from __future__ import annotations

import ctypes
import math
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gateloop.chunked import chunked_form, gateloop_scan_chunked
from gateloop.fused import fused_refusal
from gateloop.scan import gateloop_scan
from studies.train import keep_freed_memory

SHAPES = {"matrix state": (8, 4, 32, 32), "max-headed": (8, 256, 1, 1)}  # (B, H, K, V)
MODES = ("recurrent", "chunked", "chunked/split", "elementwise", "scan", "attention", "fused")
MEMORY_BUDGET = 3 * 2**30  # bytes a mode may be expected to need before it is skipped
SCAN_BYTES_PER_STATE_ELEMENT = 8 * 8  # complex64 K×V states, about eight live copies in forward+backward
ATTENTION_BYTES_PER_DECAY_ELEMENT = 40  # float64 differences and float32 decay, phase and saved tensors
FAST_CALL_S, SLOW_CALL_S = 1.5, 6.0
SKIP_PROJECTED_S = 20.0  # a mode whose call, projected linearly from the previous length, would take longer


@dataclass
class Cell:
    """One (shape, L, mode) measurement."""

    fwd: float = math.nan
    fwd_bwd: float = math.nan
    peak_bytes: float = math.nan
    error: float = math.nan
    calls: int = 0
    skipped: str = ""
    results: list[torch.Tensor] = field(default_factory=list, repr=False)


def _make_inputs(B: int, L: int, H: int, K: int, V: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, L, H, K, generator=g) / math.sqrt(K)
    k = torch.randn(B, L, H, K, generator=g)
    v = torch.randn(B, L, H, V, generator=g)
    a = torch.polar(0.8 + 0.2 * torch.rand(B, L, H, K, generator=g), 2 * math.pi * torch.rand(B, L, H, K, generator=g))
    grad_y = torch.randn(B, L, H, V, generator=g)
    grad_state = torch.randn(B, H, K, V, generator=g, dtype=torch.complex64)
    return tuple(x.to(device) for x in (q, k, v, a, grad_y, grad_state))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field_name}:\s+(\d+)", status.read()).group(1))


def _start_peak_memory(device: torch.device) -> Callable[[], float]:
    """Start measuring; the returned function gives the peak bytes allocated since, above the level at start."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        return lambda: float(torch.cuda.max_memory_allocated(device) - before)
    try:
        # Hand memory glibc keeps cached back to the system first, so that what the call allocates has
        # to be paged in and shows up in the peak resident set.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current resident set
        before = _rss_kib("VmRSS")
    except OSError:
        return lambda: math.nan
    return lambda: float(_rss_kib("VmHWM") - before) * 1024


def _engine(mode: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    if mode == "chunked/split":
        return lambda q, k, v, a: gateloop_scan_chunked(q, k, v, a, form="split")
    return lambda q, k, v, a: gateloop_scan(q, k, v, a, mode=mode)


def _measure(mode: str, inputs: tuple[torch.Tensor, ...], device: torch.device, max_calls: int) -> Cell:
    q, k, v, a, grad_y, grad_state = inputs
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v, a)]
    engine = _engine(mode)

    def call() -> tuple[float, float, list[torch.Tensor]]:
        for x in leaves:
            x.grad = None
        _sync(device)
        t0 = time.perf_counter()
        y, state = engine(*leaves)
        _sync(device)
        t1 = time.perf_counter()
        ((y * grad_y).sum() + (state.conj() * grad_state).real.sum()).backward()
        _sync(device)
        return t1 - t0, time.perf_counter() - t0, [y.detach(), state.detach(), *(x.grad for x in leaves)]

    # The warm-up call measures memory (its first-touch costs would distort a timing) and gives the results
    # the error is computed from.
    stop_memory = _start_peak_memory(device)
    warm_up = call()
    peak = stop_memory()
    if warm_up[1] > SLOW_CALL_S or max_calls == 1:
        timings = [warm_up]  # first-call costs are negligible next to a call this slow
    else:
        timings = [call() for _ in range(max_calls if warm_up[1] < FAST_CALL_S else 3)]
    return Cell(
        fwd=statistics.median(t[0] for t in timings),
        fwd_bwd=statistics.median(t[1] for t in timings),
        peak_bytes=peak,
        calls=len(timings),
        results=warm_up[2],
    )


def _skip_reason(mode: str, B: int, L: int, H: int, K: int, V: int, previous: Cell | None) -> str:
    if mode == "scan":
        need = B * L * H * K * V * SCAN_BYTES_PER_STATE_ELEMENT
    elif mode == "attention":
        need = B * L * L * H * K * ATTENTION_BYTES_PER_DECAY_ELEMENT
    else:
        need = 0
    if need > MEMORY_BUDGET:
        return f"needs ~{need / 2**30:.0f} GiB"
    if mode != "recurrent" and previous is not None and not previous.skipped:
        growth = 4 if mode != "attention" else 16  # the lengths grow ×4; attention is O(L²)
        projected = previous.fwd_bwd * growth
        if projected > SKIP_PROJECTED_S:
            return f"~{projected:.0f} s per call (×{growth} of the previous length)"
    return ""


def _rel_error(results: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    errors = [((x - r).norm() / r.norm()).item() for x, r in zip(results, reference) if r.norm() > 0]
    return max(errors)


def _matmul_gflops(device: torch.device, repeats: int) -> float:
    n = 1024
    x, y = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        x @ y
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times[1:]) / 1e9


def _chunked_forward_flops(B: int, L: int, H: int, K: int, V: int, form: str, C: int = 64) -> float:
    """Matmul FLOPs of the chunked engine's forward in the given form (see gateloop/chunked.py)."""
    C = min(C, L)
    nc = -(-L // C)
    Cp = 1 << (C - 1).bit_length()
    if form == "direct":
        within = 2 * Cp * Cp * (2 * K + V)  # one masked C × C score matmul and its product with v
    else:
        within = sum((Cp // b) * 2 * (b // 2) ** 2 * (2 * K + V) for b in (2**i for i in range(1, Cp.bit_length())))
    summaries_and_readout = 2 * (2 * 2 * K * Cp * V)
    return B * H * nc * (within + summaries_and_readout)


def _fmt_time(seconds: float) -> str:
    return "—" if math.isnan(seconds) else f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _fmt_bytes(n: float) -> str:
    return "—" if math.isnan(n) else f"{n / 2**20:.0f} MiB"


def _fmt_ratio(reference: float, value: float) -> str:
    return "—" if math.isnan(reference) or math.isnan(value) else f"{reference / value:.1f}×"


def main(quick: bool) -> None:
    keep_freed_memory()  # as `studies.train.train` does: the engines are timed as training runs them
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lengths = (64, 256) if quick else (256, 1024, 4096)
    max_calls = 1 if quick else 5
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    gflops = _matmul_gflops(device, repeats=3 if quick else 9)
    print(
        f"## gateloop engines on {device.type} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
        f"load average at start {load[0]:.1f}; matmul {gflops:.1f} GFLOP/s (float32, 1024²)"
    )
    print(
        "(Ops on tensors above torch's grain size run on all threads; when other processes hold the cores that"
        " is slower than one thread, so on a shared machine compare with OMP_NUM_THREADS=1.)"
    )
    started = time.perf_counter()
    table: dict[tuple[str, int, str], Cell] = {}
    for shape_name, (B, H, K, V) in SHAPES.items():
        print(f"\n### {shape_name}: B={B}, H={H}, K={K}, V={V}")
        print("| L | mode | runs | fwd | fwd+bwd | fwd× | fwd+bwd× | peak memory | max rel. error |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for L in lengths:
            inputs = _make_inputs(B, L, H, K, V, device)
            form = chunked_form(inputs[3])
            chunked_label = "chunked (elementwise engine)" if K == V == 1 else f"chunked ({form} form)"
            for mode in MODES:
                if K == V == 1 and mode in ("elementwise", "chunked/split"):
                    continue  # "chunked" runs the elementwise engine when K = V = 1
                if mode == "fused" and fused_refusal(inputs[0], inputs[2]):
                    continue  # the C++ mode: max-headed layout, CPU and a compiler only
                previous = table.get((shape_name, lengths[lengths.index(L) - 1], mode)) if L != lengths[0] else None
                reason = _skip_reason(mode, B, L, H, K, V, previous)
                cell = Cell(skipped=reason) if reason else _measure(mode, inputs, device, max_calls)
                table[shape_name, L, mode] = cell
                loop = table[shape_name, L, "recurrent"]
                if not reason:
                    cell.error = _rel_error(cell.results, loop.results)
                label = {"chunked": chunked_label, "chunked/split": "chunked, split form forced"}.get(mode, mode)
                if reason:
                    print(f"| {L} | {label} | 0 | skipped: {reason} | | | | | |")
                    continue
                print(
                    f"| {L} | {label} | {cell.calls} | {_fmt_time(cell.fwd)} | {_fmt_time(cell.fwd_bwd)} | "
                    f"{_fmt_ratio(loop.fwd, cell.fwd)} | {_fmt_ratio(loop.fwd_bwd, cell.fwd_bwd)} | "
                    f"{_fmt_bytes(cell.peak_bytes)} | {cell.error:.1e} |"
                )
            for cell in (table[shape_name, L, mode] for mode in MODES if (shape_name, L, mode) in table):
                cell.results.clear()  # the loop's results were the reference for this length only
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    print(f"\nwall time {time.perf_counter() - started:.0f} s; load average at end {load_end[0]:.1f}")

    print("\n### chunked forward against the machine's matmul rate (matrix state)")
    B, H, K, V = SHAPES["matrix state"]
    for L in lengths:
        cell = table["matrix state", L, "chunked"]
        flops = _chunked_forward_flops(B, L, H, K, V, chunked_form(_make_inputs(B, L, H, K, V, device)[3]))
        attained = flops / cell.fwd / 1e9
        print(
            f"L={L}: {flops / 1e9:.2f} GFLOP in {_fmt_time(cell.fwd)} = {attained:.1f} GFLOP/s, "
            f"{attained / gflops:.1%} of matmul"
        )

    if quick:
        return
    _targets(table)


def _targets(table: dict[tuple[str, int, str], Cell]) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print("\n### targets")
    m_loop, m_chunk = table["matrix state", 4096, "recurrent"], table["matrix state", 4096, "chunked"]
    speedup = m_loop.fwd_bwd / m_chunk.fwd_bwd
    print(f"matrix state L=4096, chunked fwd+bwd vs loop: {speedup:.1f}× (target ≥ 6×) {verdict(speedup >= 6)}")
    scan_4096 = table["matrix state", 4096, "scan"]
    if scan_4096.skipped:
        scan_time, how = 4 * table["matrix state", 1024, "scan"].fwd_bwd, "extrapolated ×4 from L=1024"
    else:
        scan_time, how = scan_4096.fwd_bwd, "measured"
    speedup = scan_time / m_chunk.fwd_bwd
    print(
        f"matrix state L=4096, chunked fwd+bwd vs scan ({how}): {speedup:.1f}× (target ≥ 15×) "
        f"{verdict(speedup >= 15)}"
    )
    e_loop, e_chunk = table["max-headed", 4096, "recurrent"], table["max-headed", 4096, "chunked"]
    speedup = e_loop.fwd_bwd / e_chunk.fwd_bwd
    print(
        f"max-headed L=4096, chunked (elementwise) fwd+bwd vs loop: {speedup:.1f}× (target ≥ 10×) "
        f"{verdict(speedup >= 10)}"
    )
    if ("max-headed", 4096, "fused") in table:
        speedup = e_loop.fwd_bwd / table["max-headed", 4096, "fused"].fwd_bwd
        print(f"max-headed L=4096, fused (C++, mode='fused') fwd+bwd vs loop: {speedup:.1f}× (target ≥ 10×) "
              f"{verdict(speedup >= 10)}")
    for shape in SHAPES:
        growth = table[shape, 4096, "chunked"].fwd_bwd / table[shape, 1024, "chunked"].fwd_bwd
        print(f"{shape}: chunked t(4096)/t(1024) = {growth:.2f} (target ≤ 4.6) {verdict(growth <= 4.6)}")
    worst = max(c.error for c in table.values() if not c.skipped)
    print(f"largest relative error of any mode vs the loop: {worst:.1e} (target ≤ 1e-5) {verdict(worst <= 1e-5)}")


if __name__ == "__main__":
    main(quick=False)
