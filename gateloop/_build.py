"""Building the C++ extensions (gateloop/fused_scan.cpp, baselines/selective_scan.cpp) once per machine and source.

torch.utils.cpp_extension builds into a directory named after the extension and rebuilds whenever ninja's
build command changes. Two checkouts that share torch's extensions cache would name the same extension
with their own source paths and rebuild it in turn, each undoing the other; and a build looked for
outside torch's own folder (ROOT/py311_cpu/NAME) is never found, so "building" would print on every run.
Here each build gets a directory of its own, named by a hash of everything that makes two builds differ
(`extension_name`), and compiles a copy of the source kept in that directory (`prepare_build`), so the
build command is the same from every checkout; "building" is said only when a build is about to run.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import torch


def build_refusal(instead: str) -> str:
    """Why a C++ extension cannot be built here, in one line naming `instead` as the way out; "" if it can
    (a C++ compiler and ninja are found)."""
    missing = _missing_build_tool(os.environ.get("CXX", "c++"))
    return f"{missing}, or use {instead}" if missing else ""


@functools.cache
def _missing_build_tool(compiler: str) -> str:
    # Cached: Mamba's scan="auto" asks on every forward, and torch's ninja check starts a process.
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH): install one (e.g. g++)"
    from torch.utils.cpp_extension import is_ninja_available  # here: the module is slow to import

    if not is_ninja_available():
        return "ninja is not installed (torch builds C++ extensions with it): pip install ninja"
    return ""


def extension_name(stem: str, source: bytes, cflags: list[str]) -> str:
    """`<stem>_<hash>`: the hash covers everything that makes two builds differ — the source's contents (not
    its path, so that checkouts share one build), the compiler flags, torch's version and accelerator, and
    the Python ABI — so a machine builds once per source, and a changed source gets a build of its own
    instead of replacing (and, alternating with another checkout, rebuilding) the one build."""
    abi = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    parts = [source, " ".join(cflags).encode(), torch.__version__.encode(), str(torch.version.cuda).encode(),
             str(torch.version.hip).encode(), abi.encode(), platform.machine().encode()]
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()
    return f"{stem}_{digest[:16]}"


def extensions_root() -> Path:
    """Where torch caches C++ extensions: $TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions. Each of our
    builds has its own directory right under it, named by `extension_name` (torch's own layout would add
    a py311_cpu-like folder, which the name already covers)."""
    from torch.utils.cpp_extension import get_default_build_root  # here: the module is slow to import

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def prepare_build(root: Path, name: str, source: Path) -> tuple[Path, Path, bool]:
    """(build directory, the source copy to build from, whether the library is yet to be built) of extension
    `name` under `root`. The copy sits in the build directory, so that the build command names the same
    file from every checkout: ninja rebuilds whenever the command changes, even when the contents do not.
    Creates the directory and the copy (first writer wins; a copy is never rewritten, since a new mtime
    would make ninja rebuild)."""
    build_dir = root / name
    build_dir.mkdir(parents=True, exist_ok=True)
    copy = build_dir / source.name
    if not copy.exists():
        tmp = build_dir / f".{source.name}.{os.getpid()}.tmp"
        tmp.write_bytes(source.read_bytes())
        try:
            os.link(tmp, copy)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    built = any((build_dir / f"{name}{suffix}").is_file() for suffix in (".so", ".pyd"))
    return build_dir, copy, not built


def load_extension(stem: str, source: Path, cflags: list[str], what: str) -> Any:
    """The extension compiled from `source` with `cflags`: built on first use (about a minute) into
    `extensions_root()/<extension_name>`, loaded from there by later processes, from any checkout of the
    same source. `what` names it in the one line printed, to stderr, when this process is the one to build it."""
    from torch.utils.cpp_extension import load  # here: the module is slow to import

    name = extension_name(stem, source.read_bytes(), cflags)
    build_dir, copy, to_build = prepare_build(extensions_root(), name, source)
    # Where torch's lock file exists another process (a second worker) is building it and said so; this one
    # waits for that build in silence.
    if to_build and not (build_dir / "lock").exists():
        print(f"building {what} (C++, once per machine and source, about a minute) in {build_dir}",
              file=sys.stderr, flush=True)
    return load(name=name, sources=[str(copy)], extra_cflags=cflags, build_directory=str(build_dir), verbose=False)
