"""`testbed check-gpu`: on a machine without CUDA it refuses in one line with a non-zero exit; with CUDA it
runs its sections, survives a failing one, and writes one report (checked here with stand-in sections)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from studies import gpu_check
from studies.cli import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_exits_nonzero_with_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "check.md"
    with pytest.raises(SystemExit) as exit_:
        main(["check-gpu", "--out", str(out)])
    # SystemExit with a message prints it to stderr and exits with status 1.
    assert exit_.value.code == ("testbed check-gpu: no CUDA device (torch.cuda.is_available() is False); "
                                "run it on a machine with an NVIDIA GPU and a CUDA build of torch")
    assert capsys.readouterr().out == "" and not out.exists()


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown section 'gpu'; valid sections: environment, tests, mixers"):
        main(["check-gpu", "tests", "gpu"])
    with pytest.raises(SystemExit, match="--out .* is a directory; pass a file path such as results/gpu/check.md"):
        main(["check-gpu", "--out", str(tmp_path)])
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="is a file; pass a path under a directory"):
        main(["check-gpu", "--out", str(tmp_path / "file" / "check.md")])


def test_report_has_every_section_and_the_exit_code_reflects_failures(tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:
    def broken() -> gpu_check.Section:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    sections = {
        "environment": lambda: gpu_check.Section("ok", "- torch: x\n"),
        "fla": lambda: gpu_check.Section("not available", "flash-linear-attention is not installed\n"),
        "tests": broken,
    }
    monkeypatch.setattr(gpu_check, "SECTIONS", sections)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = tmp_path / "gpu" / "check.md"
    assert main(["check-gpu", "environment", "fla", "--out", str(out)]) == 0
    assert main(["check-gpu", "environment", "tests", "fla", "--out", str(out)]) == 1
    text = out.read_text()
    assert text.startswith("# GPU check") and text in capsys.readouterr().out
    assert "| environment | ok |" in text and "| tests | FAILED |" in text and "| fla | not available |" in text
    assert "## tests: FAILED" in text and "illegal memory access" in text  # the traceback's tail
    assert text.index("## environment") < text.index("## tests") < text.index("## fla")


def test_a_command_section_keeps_the_output_of_a_timed_out_command() -> None:
    cmd = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"]
    section = gpu_check._command_section(cmd, timeout=1)
    assert section.status == "timed out" and "started" in section.body
    failing = gpu_check._command_section([sys.executable, "-c", "raise SystemExit(3)"], timeout=30)
    assert failing.status == "FAILED" and "exit code 3" in failing.body
