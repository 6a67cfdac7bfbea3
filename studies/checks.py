"""Checks of command-line input that every subcommand shares, run before anything is created or trained.

Each raises ValueError with one line that names the problem and the fix; the subcommand turns it into
`SystemExit("testbed <command>: <message>")`, so a user never sees a traceback for a bad argument.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def check_device(device: str | None, flag: str = "--device") -> None:
    """`device` (None: the preset's, i.e. auto) must exist on this machine; `flag` is how the user gave it."""
    if device is None or device in ("auto", "cpu"):
        return
    if not device.startswith("cuda"):
        raise ValueError(f"{flag} {device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        fix = "--device cpu" if flag == "--device" else f"{flag}=cpu"
        raise ValueError(f"{flag} {device!r} but CUDA is not available on this machine; use {fix} (or auto)")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ValueError(f"{flag} {device!r}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """`path` must be a directory or not exist yet (it is created later, when there is something to write)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a directory; pass a directory path (or move the file)")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is a file; pass a path under a directory")
    return path


def check_at_least_one(flag: str, value: int) -> None:
    """A count flag (--seeds, --workers, --threads ...) must be >= 1."""
    if value < 1:
        raise ValueError(f"{flag} {value} must be >= 1")


def check_preset_tasks(preset_name: str, preset_tasks: Sequence[str], tasks: Sequence[str]) -> None:
    """Every task must be one the preset sizes: outside it a task would run at its default size, which is
    not what the preset promises (a smoke run would not be seconds)."""
    outside = [t for t in tasks if t not in preset_tasks]
    if outside:
        raise ValueError(
            f"task {', '.join(map(repr, outside))} is not in the {preset_name} preset (its tasks: "
            f"{', '.join(preset_tasks)}); choose among those, or a preset that has it")
