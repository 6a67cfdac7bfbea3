"""`studies.train.keep_freed_memory`: after it, freeing and reallocating a large tensor reuses the process's
memory instead of page-faulting fresh pages in (what made Mamba's training step slow)."""
from __future__ import annotations

import resource
import sys

import pytest
import torch

from studies.train import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning (a no-op elsewhere)")
def test_a_freed_large_tensor_is_reused_without_page_faults() -> None:
    keep_freed_memory()
    keep_freed_memory()  # idempotent
    pages = 2**23 // resource.getpagesize()  # an 8 MiB tensor, above glibc's default mmap threshold
    for _ in range(2):  # the first round may grow the heap; the second must reuse it
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        pair = [torch.ones(2**21) for _ in range(2)]  # 2 × 8 MiB, then freed together
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del pair
    assert faults < pages / 4, f"{faults} page faults re-allocating {2 * pages} pages"
