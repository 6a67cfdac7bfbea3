"""Mixers that are not registered in baselines.MIXERS: named by import path, or installed under a name.

    pkg.module:Class          imported as `python -m` would from the current directory
    path/to/file.py:Class     a file outside any package (relative to the current directory)
    NAME                      an entry point of the group `testbed.mixers` of an installed package
                              (in its pyproject.toml: [project.entry-points."testbed.mixers"] NAME = "pkg.module:Class")

A file is imported as a module named after it (`examples/gla_mixer.py` -> `gla_mixer`), its directory
appended to `sys.path`: worker processes are spawned with the parent's path, so they import the same
module under the same name, and a pickled config of the class loads there. A file whose name another
module already holds (a `tasks.py`, say) is refused: rename it.

Whatever names it, the class must meet the static part of the contract (`baselines.contract.check_class`);
every failure is a ValueError of one line that names the mixer as the user wrote it. A stored run
records the name as written, so it rebuilds wherever the same name imports (the same working directory,
for a relative file path).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from torch import nn

from baselines.contract import check_class, first_line

ENTRY_POINT_GROUP = "testbed.mixers"
IMPORT_PATH_FORMS = "pkg.module:Class or path/to/file.py:Class"

_LOADED: dict[str, type[nn.Module]] = {}


def is_import_path(name: str) -> bool:
    return ":" in name


def mixer_label(name: str) -> str:
    """A short name for tables and study names, which cannot hold '/': a registered or installed name as it is,
    an import path's class name (`examples/gla_mixer.py:GLA` -> `GLA`)."""
    return name.rpartition(":")[2] if is_import_path(name) else name


def installed_mixers() -> dict[str, importlib.metadata.EntryPoint]:
    """The mixers installed packages declare under the entry-point group `testbed.mixers`, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_mixer(name: str, registered: list[str]) -> type[nn.Module]:
    """The mixer class an import path or an installed name points to, checked (`check_class`); cached.
    `registered` names the registry's mixers, for the refusal of an unknown name."""
    if name in _LOADED:
        return _LOADED[name]
    if is_import_path(name):
        target, _, attr = name.rpartition(":")
        if not target or not attr.isidentifier():
            raise ValueError(f"mixer {name!r}: an import path is {IMPORT_PATH_FORMS}")
        module = _import_file(target, name) if target.endswith(".py") else _import_module(target, name)
        cls = getattr(module, attr, None)
        if cls is None:
            classes = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
                             and v.__module__ == module.__name__)
            raise ValueError(f"mixer {name!r}: {target} has no {attr!r}; its nn.Module classes: {classes or 'none'}")
    else:
        entry = installed_mixers().get(name)
        if entry is None:
            installed = sorted(installed_mixers())
            raise ValueError(f"unknown mixer {name!r}; valid mixers: {registered}"
                             + (f", installed: {installed}" if installed else "")
                             + f"; or a mixer by import path, {IMPORT_PATH_FORMS}")
        try:
            cls = entry.load()
        except Exception as e:
            raise ValueError(f"mixer {name!r} (entry point {entry.value}): importing it failed: "
                             f"{type(e).__name__}: {first_line(e)}") from None
    check_class(cls, name)
    _LOADED[name] = cls
    return cls


def _import_module(target: str, name: str):
    if not all(part.isidentifier() for part in target.split(".")):
        raise ValueError(f"mixer {name!r}: {target!r} is not a module path; an import path is {IMPORT_PATH_FORMS}")
    top = target.split(".")[0]
    # A console script has its own directory on the path, not the current one; `python -m` has the latter.
    if top not in sys.modules and importlib.util.find_spec(top) is None and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name is not None and target.startswith(e.name):
            raise ValueError(f"mixer {name!r}: no module named {e.name!r} (from {os.getcwd()!r}); for a file outside "
                             f"any package use path/to/file.py:Class") from None
        raise ValueError(f"mixer {name!r}: importing {target} failed: {type(e).__name__}: {first_line(e)}") from None
    except Exception as e:
        raise ValueError(f"mixer {name!r}: importing {target} failed: {type(e).__name__}: {first_line(e)}") from None


def _import_file(target: str, name: str):
    path = Path(target)
    if not path.is_file():
        raise ValueError(f"mixer {name!r}: no such file {target!r} (from {os.getcwd()!r})")
    path = path.resolve()
    module_name = path.stem
    if not module_name.isidentifier():
        raise ValueError(f"mixer {name!r}: {path.name!r} cannot be imported as a module; rename it to a Python "
                         f"identifier (e.g. {module_name.replace('-', '_')}.py)")
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == path:
            return loaded
        raise ValueError(f"mixer {name!r}: the module name {module_name!r} is already taken by "
                         f"{getattr(loaded, '__file__', None) or 'a built-in module'}; rename the file")
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.append(directory)  # at the end: the file's neighbours shadow no module imported later
    importlib.invalidate_caches()  # a file written since its directory was last listed
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or Path(spec.origin).resolve() != path:
        found = "a built-in module" if spec is None or spec.origin is None else spec.origin
        raise ValueError(f"mixer {name!r}: the module name {module_name!r} is already taken by {found}; "
                         f"rename the file")
    try:
        return importlib.import_module(module_name)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise ValueError(f"mixer {name!r}: importing {target} failed: {type(e).__name__}: {first_line(e)}") from None


__all__ = ["ENTRY_POINT_GROUP", "installed_mixers", "is_import_path", "load_mixer", "mixer_label"]
