"""Task generation throughput: tokens generated per second per task at L=1024, batch 256.

Each task keeps its default knobs and is posed at L=1024 (`at_length`). Timings are medians of
repeated `sample` calls after a warm-up, at the process's torch thread count and at one thread (on a
shared machine the single-threaded figure is often the faster one). The reference row is
`torch.randint` filling the same (B, L) int64 tensor: the floor of producing that many random tokens.
Zoology's MQAR layout (filler="random", which also counts decoys per query) gets its own row.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from tasks import TASKS, TaskData

LENGTH, BATCH = 1024, 256
MQAR_TARGET = 5e6  # tokens/s


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _at_threads(threads: int, fn: Callable[[], object], repeats: int) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _median_seconds(fn, repeats)
    finally:
        torch.set_num_threads(previous)


def main(quick: bool) -> None:
    repeats = 3 if quick else 11
    threads = torch.get_num_threads()
    tokens = BATCH * LENGTH
    print(f"## tasks: generation throughput, L={LENGTH}, batch {BATCH}, median of {repeats}, torch {torch.__version__}")
    print(f"| {'generator':<26} | {'ms/batch':>9} | {f'M tok/s ({threads} thr)':>16} | {'M tok/s (1 thr)':>16} |")
    print(f"|{'-' * 28}|{'-' * 10}:|{'-' * 17}:|{'-' * 17}:|")

    def row(label: str, fn: Callable[[], object]) -> tuple[float, float]:
        """Tokens per second at the process's thread count and at one thread."""
        rates = (tokens / _at_threads(threads, fn, repeats), tokens / _at_threads(1, fn, repeats))
        print(f"| {label:<26} | {tokens / rates[0] * 1e3:>9.2f} | {rates[0] / 1e6:>16.1f} | {rates[1] / 1e6:>16.1f} |")
        return rates

    generator = torch.Generator().manual_seed(0)
    row("reference: torch.randint", lambda: torch.randint(0, 64, (BATCH, LENGTH), generator=generator))
    rates: dict[str, tuple[float, float]] = {}
    for name, cls in TASKS.items():
        task = cls().at_length(LENGTH)
        rates[name] = row(name, lambda task=task: task.sample(BATCH, generator))
    decoys = TASKS["mqar"](filler="random").at_length(LENGTH)
    row("mqar, filler=random", lambda: decoys.sample(BATCH, generator))
    data = TaskData(TASKS["mqar"]().at_length(LENGTH), seed=0, test_size=1000)
    row("mqar via TaskData (dedup)", lambda: data.train_batch(BATCH))

    verdicts = [
        f"{label}: {'met' if rate >= MQAR_TARGET else 'MISSED'} ({rate / 1e6:.1f} M)"
        for label, rate in zip((f"{threads} threads", "1 thread"), rates["mqar"])
    ]
    print(f"target: mqar >= {MQAR_TARGET / 1e6:.0f} M tokens/s -> {'; '.join(verdicts)}")


if __name__ == "__main__":
    main(quick=False)
