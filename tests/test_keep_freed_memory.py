"""`studies.train.keep_freed_memory` asks glibc to keep freed memory (trim threshold 1 GiB) and to serve
blocks under 32 MiB from the heap, so a training step's large activations are reused instead of being
page-faulted in again every step.

Only the request is tested. Its effect (page faults avoided) depends on the heap's history: a fault
count measured here passed inside a long test session and failed in a fresh interpreter, so it is a
benchmark matter (`python -m studies.bench train` runs with it, as training does), not a test."""
from __future__ import annotations

import sys

import pytest

from studies import train as train_mod


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning (a no-op elsewhere)")
def test_keep_freed_memory_sets_the_trim_and_mmap_thresholds(monkeypatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(train_mod.ctypes, "CDLL", lambda name: libc)
    train_mod.keep_freed_memory()
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    assert libc.calls == [(M_TRIM_THRESHOLD, 1 << 30), (M_MMAP_THRESHOLD, 32 << 20)]


def test_keep_freed_memory_is_a_no_op_without_mallopt(monkeypatch) -> None:
    monkeypatch.setattr(train_mod.ctypes, "CDLL", lambda name: object())  # a C library without mallopt
    train_mod.keep_freed_memory()  # must not raise
