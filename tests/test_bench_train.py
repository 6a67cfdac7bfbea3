"""`python -m studies.bench train`: its step timing runs end to end on a tiny preset, and its comparison of
two suite outputs tells identical results from different ones. Timings are printed, never asserted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from studies.bench.train import compare_runs, mamba_scan_share, step_table, step_times


def test_step_times_and_table_on_the_smoke_preset() -> None:
    times = step_times("smoke", ["attention", "mamba"], repeats=2, warmup=1, batch_size=4)
    assert [t.name for t in times] == ["attention", "mamba"]
    assert all(len(t.seconds) == len(t.cpu_seconds) == 2 and min(t.seconds) > 0 for t in times)
    table = step_table(times)
    assert table.count("\n") == 3 and "| attention |" in table and "| 1.00 |" in table


def test_mamba_scan_share_runs_on_the_smoke_preset() -> None:
    line = mamba_scan_share("smoke", repeats=1)
    assert line.startswith("mamba with scan='torch' (smoke): selective scan forward + backward") and "without the scan" in line


def _write_run(out: Path, run_id: str, accuracy: float, wall_time: float) -> None:
    (out / "runs").mkdir(parents=True, exist_ok=True)
    record = {"run_id": run_id, "status": "completed", "steps": 2, "steps_to_target": None, "history": [],
              "final": {"16": {"accuracy": accuracy}}, "num_parameters": 10, "wall_time": wall_time}
    (out / "runs" / f"{run_id}.json").write_text(json.dumps(record))


def test_compare_runs_ignores_wall_time_and_names_differing_runs(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    assert compare_runs(first, second).startswith("no runs stored")
    for out, wall in ((first, 1.0), (second, 2.0)):
        _write_run(out, "a", 0.5, wall)
        _write_run(out, "b", 0.7, wall)
    assert compare_runs(first, second).startswith("identical (2 runs")
    _write_run(second, "b", 0.8, 2.0)
    _write_run(second, "c", 0.1, 2.0)
    assert compare_runs(first, second) == "DIFFER in 2 of 3 runs: ['b', 'c']"


def test_bench_cli_defaults_to_every_section_and_refuses_unknown_ones():
    import argparse

    from studies.bench import __main__ as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args([]).sections == list(bench.SECTIONS)  # argparse refused this default before
    with pytest.raises(SystemExit, match="unknown section"):
        bench.run(parser.parse_args(["nosuch"]))
