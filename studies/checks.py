"""Checks of command-line input that every subcommand shares, run before anything is created or trained.

Each raises ValueError with one line that names the problem and the fix; the subcommand turns it into
`SystemExit("testbed <command>: <message>")`, so a user never sees a traceback for a bad argument.
"""
from __future__ import annotations

from pathlib import Path

import torch


def check_device(device: str | None) -> None:
    """`device` (None: the preset's, i.e. auto) must exist on this machine."""
    if device is None or device in ("auto", "cpu"):
        return
    if not device.startswith("cuda"):
        raise ValueError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device!r} but CUDA is not available on this machine; use --device cpu (or auto)")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ValueError(f"--device {device!r}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """`path` must be a directory or not exist yet (it is created later, when there is something to write)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a directory; pass a directory path (or move the file)")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is a file; pass a path under a directory")
    return path
