"""Baselines benchmark: forward+backward time and peak memory of one mixer, for every registered mixer.

Each mixer runs at its default config with d_model = D, on x (B, L, D) with B = 8, D ∈ {64, 128} and
L ∈ {256, 1024} (`quick`: D = 64, L = 256 only). One timed call is forward, a fixed random cotangent,
and backward into the input and every parameter. Time: the median of 5 calls after a warm-up. Peak
memory: what one call allocates above what was live before it — on CUDA from the allocator's peak
statistics, on the CPU from the profiler's allocation events (which slow that one call down, so it is
measured apart from the timing). Ratios are against GateLoop at the same (D, L), measured in the same
process, with glibc keeping freed memory in the process as training runs do (`keep_freed_memory`).

    python -m studies.bench baselines [--quick]          (CPU)
    python -m studies.bench.baselines --device cuda      (any device)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from baselines import MIXERS
from gateloop.mixer import num_real_parameters
from studies.train import keep_freed_memory

BATCH = 8
REPEATS = 5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ backend prints start/stop lines straight to file descriptor 2; hide them."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Bytes allocated at the peak of fn() above those live when it started."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    # Each allocation or free event carries the allocator's running total of live bytes after it.
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0), key=lambda e: e["ts"]
    )
    if not memory:
        return 0
    before = memory[0]["args"]["Total Allocated"] - memory[0]["args"]["Bytes"]
    return max(e["args"]["Total Allocated"] for e in memory) - before


def measure(mixer: nn.Module, d_model: int, seq_len: int, device: torch.device) -> tuple[float, int]:
    """(median seconds of one forward+backward, peak bytes of one) for x (BATCH, seq_len, d_model)."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(BATCH, seq_len, d_model, generator=gen, device=device).requires_grad_()
    cotangent = torch.randn(BATCH, seq_len, d_model, generator=gen, device=device)

    def fwd_bwd() -> None:
        x.grad = None
        mixer.zero_grad(set_to_none=True)
        (mixer(x) * cotangent).sum().backward()

    fwd_bwd()  # warm-up: first-call allocations, kernel selection, lazy init
    times = []
    for _ in range(REPEATS):
        _sync(device)
        start = time.perf_counter()
        fwd_bwd()
        _sync(device)
        times.append(time.perf_counter() - start)
    x.grad = None
    mixer.zero_grad(set_to_none=True)
    return statistics.median(times), _peak_bytes(fwd_bwd, device)


def main(quick: bool, device: str = "cpu") -> None:
    keep_freed_memory()  # as `studies.train.train` does: the engines are timed as training runs them
    dev = torch.device(device)
    widths, lengths = ((64,), (256,)) if quick else ((64, 128), (256, 1024))
    names = ["gateloop"] + [n for n in MIXERS if n != "gateloop"]
    print(
        f"\n## baselines: one mixer, forward+backward, B={BATCH}, median of {REPEATS} "
        f"({dev}, {torch.get_num_threads()} threads, torch {torch.__version__})\n"
    )
    print("| mixer | D | L | params | state | fwd+bwd ms | × GateLoop | peak MiB | × GateLoop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for d_model in widths:
        for seq_len in lengths:
            reference: tuple[float, int] | None = None
            for name in names:
                cls = MIXERS[name]
                with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                    torch.manual_seed(0)
                    mixer = cls(cls.config_class(d_model=d_model)).to(dev)
                seconds, peak = measure(mixer, d_model, seq_len, dev)
                reference = reference or (seconds, peak)
                print(
                    f"| {name} | {d_model} | {seq_len} | {num_real_parameters(mixer):,} | "
                    f"{mixer.state_size(seq_len):,} | {seconds * 1e3:.1f} | {seconds / reference[0]:.2f} | "
                    f"{peak / 2**20:.1f} | {peak / max(reference[1], 1):.2f} |",
                    flush=True,
                )
                del mixer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.bench.baselines", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="D=64, L=256 only")
    parser.add_argument("--device", default="cpu", help="torch device to benchmark on (default cpu)")
    args = parser.parse_args()
    main(quick=args.quick, device=args.device)
