"""The suite runner end to end: table, tidy results and figures; resumes after a kill; clear errors."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from studies.cli import main
from studies.config import CONFIG_VERSION
from studies.results import read_jsonl

SMOKE = ["suite", "--model", "gateloop", "--preset", "smoke", "--quiet", "train.device=cpu"]


def test_smoke_suite_writes_table_results_and_figures(tmp_path, capsys):
    assert main([*SMOKE, "--tasks", "mqar,state_tracking", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| mqar | gateloop |" in table and "| state_tracking | gateloop |" in table
    rows = read_jsonl(tmp_path / "results.jsonl")
    # 2 tasks × 2 lengths (L, 2L) × 2 metrics, each row carrying the sizes the fairness rules require.
    assert len(rows) == 8
    assert {r["length"] // r["train_length"] for r in rows} == {1, 2}
    assert all(r["num_parameters"] > 0 and r["state_size"] > 0 for r in rows)
    assert (tmp_path / "accuracy_by_task.png").stat().st_size > 0
    assert (tmp_path / "accuracy_by_length.png").stat().st_size > 0
    assert "| task | model |" in capsys.readouterr().out


def test_rerun_skips_finished_runs(tmp_path, capsys):
    args = [*SMOKE, "--tasks", "mqar", "--out", str(tmp_path)]
    main(args)
    (run_file,) = (tmp_path / "runs").glob("*.json")
    before = run_file.read_text()
    capsys.readouterr()
    main(args)
    assert "1 already finished" in capsys.readouterr().out
    assert run_file.read_text() == before


def test_killed_suite_resumes_without_redoing_finished_runs(tmp_path):
    cmd = [sys.executable, "-m", "studies", *SMOKE, "--tasks", "mqar,state_tracking,memory_horizon",
           "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 300
    while not (runs.exists() and any(runs.glob("*.json"))):
        assert proc.poll() is None, "the suite ended before a run finished"
        assert time.monotonic() < deadline, "no run finished in time"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.read_text() for p in runs.glob("*.json")}
    assert 1 <= len(finished) < 3
    for text in finished.values():
        json.loads(text)  # every stored run is complete JSON

    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert f"{len(finished)} already finished" in out
    assert {p.name: p.read_text() for p in runs.glob("*.json") if p.name in finished} == finished
    assert len(list(runs.glob("*.json"))) == 3


def test_output_dir_of_another_config_version_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"version": CONFIG_VERSION + 1}))
    with pytest.raises(SystemExit, match="config version"):
        main([*SMOKE, "--tasks", "mqar", "--out", str(tmp_path)])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gatelop"], "valid mixers"),
        (["--model", "gateloop", "--tasks", "mqarr"], "valid tasks"),
        (["--model", "gateloop", "--tasks", "mqar", "task.num_kv_pairs=100"], "num_kv_pairs"),
        (["--model", "gateloop", "--tasks", "mqar", "task.nope=1"], "match no selected task"),
        (["--model", "gateloop", "--tasks", "mqar", "train.lr=fast"], "train.lr"),
    ],
)
def test_bad_input_names_the_problem(tmp_path, args, message):
    with pytest.raises(SystemExit, match=message):
        main(["suite", "--preset", "smoke", "--out", str(tmp_path), *args])
