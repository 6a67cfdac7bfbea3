"""The C++ extensions (GateLoop's and Mamba's fused scans) are built once per machine and source, and say
"building" only when they build (issue 27): checked against a fake extensions root, without compiling anything."""
from __future__ import annotations

import os

import pytest

from baselines import mamba
from gateloop import fused
from gateloop._build import extension_name, prepare_build

FLAGS = ["-O3"]

# (the function that loads the extension, the stem of its name, its source, its flags, what "building" names)
EXTENSIONS = {
    "gateloop": (fused._extension, "testbed_gateloop_fused", fused._SOURCE, fused._CFLAGS, "GateLoop's fused scan"),
    "mamba": (mamba._fused_extension, "testbed_selective_scan", mamba._FUSED_SOURCE, mamba._FUSED_CFLAGS,
              "Mamba's fused selective scan"),
}


def test_the_name_depends_on_the_source_contents_not_its_path(tmp_path):
    one, two = tmp_path / "checkout1" / "scan.cpp", tmp_path / "checkout2" / "scan.cpp"
    for path in (one, two):
        path.parent.mkdir()
        path.write_text("int f() { return 1; }\n")
    name = extension_name("ext", one.read_bytes(), FLAGS)
    assert name == extension_name("ext", two.read_bytes(), FLAGS)  # two checkouts share one build
    assert name.startswith("ext_") and name.isidentifier()  # also the Python module's name
    assert name != extension_name("ext", b"int f() { return 2; }\n", FLAGS)  # an edit gets its own build
    assert name != extension_name("ext", one.read_bytes(), ["-O2"])


def test_a_build_is_found_where_it_is_made_and_its_source_copy_is_never_rewritten(tmp_path):
    source = tmp_path / "checkout" / "scan.cpp"
    source.parent.mkdir()
    source.write_text("int f() { return 1; }\n")
    root = tmp_path / "torch_extensions"
    build_dir, copy, to_build = prepare_build(root, "ext_abc", source)
    assert (build_dir, copy, to_build) == (root / "ext_abc", root / "ext_abc" / "scan.cpp", True)
    assert copy.read_bytes() == source.read_bytes() and sorted(p.name for p in build_dir.iterdir()) == ["scan.cpp"]
    # torch's own layout would be ROOT/py311_cpu/NAME: a library there is not this build.
    (root / "py311_cpu" / "ext_abc").mkdir(parents=True)
    (root / "py311_cpu" / "ext_abc" / "ext_abc.so").touch()
    assert prepare_build(root, "ext_abc", source)[2]
    (build_dir / "ext_abc.so").touch()
    os.utime(copy, (0, 0))
    other = tmp_path / "checkout2" / "scan.cpp"  # a second checkout of the same source
    other.parent.mkdir()
    other.write_bytes(source.read_bytes())
    assert prepare_build(root, "ext_abc", other) == (build_dir, copy, False)
    assert copy.stat().st_mtime == 0  # untouched: a new mtime would make ninja rebuild


@pytest.fixture(params=sorted(EXTENSIONS))
def fake_torch_build(request, tmp_path, monkeypatch):
    """One extension's loader against an empty extensions root, with torch's `load` recorded instead of run:
    (the loader, its stem, source, flags and what it says it builds, the recorded calls)."""
    calls = []
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: calls.append(kwargs) or "module")
    loader, *described = EXTENSIONS[request.param]
    loader.cache_clear()
    yield (loader, *described, calls)
    loader.cache_clear()  # later tests load the real build


def test_building_is_announced_only_when_the_library_is_missing(fake_torch_build, tmp_path, capsys):
    loader, stem, source, flags, what, calls = fake_torch_build
    assert loader() == "module"
    (call,) = calls
    build_dir = tmp_path / call["name"]
    assert call["name"] == extension_name(stem, source.read_bytes(), flags) and call["extra_cflags"] == flags
    assert call["build_directory"] == str(build_dir) and call["sources"] == [str(build_dir / source.name)]
    assert f"building {what} (C++, once per machine and source" in capsys.readouterr().err
    (build_dir / f"{call['name']}.so").touch()  # what the build leaves
    loader.cache_clear()
    assert loader() == "module"
    assert capsys.readouterr().err == ""
    assert calls[1] == call  # the same build, from the same copy of the source


def test_a_second_process_waits_for_the_first_ones_build_in_silence(fake_torch_build, tmp_path, capsys):
    # Two workers of one command: the one that builds says so, the other waits on torch's lock.
    loader, stem, source, flags, what, calls = fake_torch_build
    name = extension_name(stem, source.read_bytes(), flags)
    (tmp_path / name).mkdir()
    (tmp_path / name / "lock").touch()  # torch's lock file while another process builds
    assert loader() == "module"
    assert capsys.readouterr().err == ""
