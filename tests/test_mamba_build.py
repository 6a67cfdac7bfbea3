"""Mamba's fused scan is built once per machine and source, and says "building" only when it builds
(issue 27): checked against a fake extensions root, without compiling anything."""
from __future__ import annotations

import os

import pytest

from baselines import mamba

FLAGS = ["-O3"]


def test_the_name_depends_on_the_source_contents_not_its_path(tmp_path):
    one, two = tmp_path / "checkout1" / "scan.cpp", tmp_path / "checkout2" / "scan.cpp"
    for path in (one, two):
        path.parent.mkdir()
        path.write_text("int f() { return 1; }\n")
    name = mamba.extension_name("ext", one.read_bytes(), FLAGS)
    assert name == mamba.extension_name("ext", two.read_bytes(), FLAGS)  # two checkouts share one build
    assert name.startswith("ext_") and name.isidentifier()  # also the Python module's name
    assert name != mamba.extension_name("ext", b"int f() { return 2; }\n", FLAGS)  # an edit gets its own build
    assert name != mamba.extension_name("ext", one.read_bytes(), ["-O2"])


def test_a_build_is_found_where_it_is_made_and_its_source_copy_is_never_rewritten(tmp_path):
    source = tmp_path / "checkout" / "scan.cpp"
    source.parent.mkdir()
    source.write_text("int f() { return 1; }\n")
    root = tmp_path / "torch_extensions"
    build_dir, copy, to_build = mamba.prepare_build(root, "ext_abc", source)
    assert (build_dir, copy, to_build) == (root / "ext_abc", root / "ext_abc" / "scan.cpp", True)
    assert copy.read_bytes() == source.read_bytes() and sorted(p.name for p in build_dir.iterdir()) == ["scan.cpp"]
    # torch's own layout would be ROOT/py311_cpu/NAME: a library there is not this build.
    (root / "py311_cpu" / "ext_abc").mkdir(parents=True)
    (root / "py311_cpu" / "ext_abc" / "ext_abc.so").touch()
    assert mamba.prepare_build(root, "ext_abc", source)[2]
    (build_dir / "ext_abc.so").touch()
    os.utime(copy, (0, 0))
    other = tmp_path / "checkout2" / "scan.cpp"  # a second checkout of the same source
    other.parent.mkdir()
    other.write_bytes(source.read_bytes())
    assert mamba.prepare_build(root, "ext_abc", other) == (build_dir, copy, False)
    assert copy.stat().st_mtime == 0  # untouched: a new mtime would make ninja rebuild


@pytest.fixture
def fake_torch_build(tmp_path, monkeypatch):
    """`_fused_extension` against an empty extensions root, with torch's `load` recorded instead of run."""
    calls = []
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: calls.append(kwargs) or "module")
    mamba._fused_extension.cache_clear()
    yield calls
    mamba._fused_extension.cache_clear()  # later tests load the real build


def test_building_is_announced_only_when_the_library_is_missing(fake_torch_build, tmp_path, capsys):
    assert mamba._fused_extension() == "module"
    (call,) = fake_torch_build
    build_dir = tmp_path / call["name"]
    assert call["build_directory"] == str(build_dir) and call["sources"] == [str(build_dir / "selective_scan.cpp")]
    assert "building Mamba's fused selective scan" in capsys.readouterr().err
    (build_dir / f"{call['name']}.so").touch()  # what the build leaves
    mamba._fused_extension.cache_clear()
    assert mamba._fused_extension() == "module"
    assert capsys.readouterr().err == ""
    assert fake_torch_build[1] == call  # the same build, from the same copy of the source


def test_a_second_process_waits_for_the_first_ones_build_in_silence(fake_torch_build, tmp_path, capsys):
    # Two workers of one command: the one that builds says so, the other waits on torch's lock.
    name = mamba.extension_name("testbed_selective_scan", mamba._FUSED_SOURCE.read_bytes(), mamba._FUSED_CFLAGS)
    (tmp_path / name).mkdir()
    (tmp_path / name / "lock").touch()  # torch's lock file while another process builds
    assert mamba._fused_extension() == "module"
    assert capsys.readouterr().err == ""
