"""The suite runner end to end: table, tidy results and figures; resumes after a kill; clear errors."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from studies.cli import main
from studies.config import CONFIG_VERSION
from studies.presets import get_preset
from studies.atomic_io import read_jsonl
from studies.stats import bootstrap_ci, solve_rate
from studies.suite.records import load_records

# In-process runs (--workers 1) unless a test is about workers: spawning costs a torch import per worker.
SMOKE = ["suite", "--model", "gateloop", "--preset", "smoke", "--quiet", "--workers", "1", "train.device=cpu"]


def test_smoke_suite_writes_table_results_and_figures(tmp_path, capsys):
    assert main([*SMOKE, "--tasks", "mqar,state_tracking", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| mqar | token acc. | gateloop |" in table and "| state_tracking | token acc. | gateloop |" in table
    rows = read_jsonl(tmp_path / "results.jsonl")
    # 2 tasks × 2 lengths (L, 2L) × 2 metrics, each row carrying the sizes the fairness rules require.
    assert len(rows) == 8
    assert {r["length"] // r["train_length"] for r in rows} == {1, 2}
    assert all(r["num_parameters"] > 0 and r["state_size"] > 0 for r in rows)
    assert (tmp_path / "accuracy_by_task.png").stat().st_size > 0
    assert (tmp_path / "accuracy_by_length.png").stat().st_size > 0
    assert "| task | metric | model |" in capsys.readouterr().out
    # Every score is read against its floor: the task's own metric rows carry the best no-solve
    # baseline on the very test sets the runs were scored on, and the table shows it.
    floored = [r for r in rows if r["metric"] == r["task_metric"]]
    assert floored and all(0 <= r["floor"] <= 1 and r["floor_name"] for r in floored)
    assert all("floor" not in r for r in rows if r["metric"] != r["task_metric"])
    assert "| floor @1×L |" in table.splitlines()[0]


def test_rerun_skips_finished_runs(tmp_path, capsys):
    args = [*SMOKE, "--tasks", "mqar", "--out", str(tmp_path)]
    main(args)
    (run_file,) = (tmp_path / "runs").glob("*.json")
    before = run_file.read_text()
    capsys.readouterr()
    main(args)
    assert "1 already finished" in capsys.readouterr().out
    assert run_file.read_text() == before


@pytest.mark.parametrize("workers", ["1", "2"])
def test_killed_suite_resumes_without_redoing_finished_runs(tmp_path, workers):
    # 6 runs, killed when the first is stored: on 2 workers the other 5 need at least two more run
    # lengths, far longer than one poll (with 3 runs a fast machine finished all of them within one).
    cmd = [sys.executable, "-m", "studies", *[a for a in SMOKE if a not in ("--workers", "1")], "--workers", workers,
           "--tasks", "mqar,state_tracking,memory_horizon", "--seeds", "2", "--out", str(tmp_path)]
    total = 6
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 300
    while not (runs.exists() and any(runs.glob("*.json"))):
        assert proc.poll() is None, "the suite ended before a run finished"
        assert time.monotonic() < deadline, "no run finished in time"
        time.sleep(0.02)
    children = _children(proc.pid) if os.path.exists(f"/proc/{proc.pid}/task") else []
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # A SIGKILLed parent cannot stop its workers; the kernel does (they must not train on, unowned).
    _wait_until_gone(children)
    finished = {p.name: p.read_text() for p in runs.glob("*.json")}
    assert 1 <= len(finished) < total
    for text in finished.values():
        json.loads(text)  # every stored run is complete JSON

    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert f"{len(finished)} already finished" in out
    assert {p.name: p.read_text() for p in runs.glob("*.json") if p.name in finished} == finished
    assert len(list(runs.glob("*.json"))) == total


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


def _refused(capsys, args: list[str], message: str) -> None:
    """The command stops with one line naming `message`, before printing, creating or training anything."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    text = str(exit_info.value.code)
    assert message in text and "\n" not in text, text
    assert capsys.readouterr().out == ""


def test_out_path_that_is_a_file_is_refused_first(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _refused(capsys, [*SMOKE, "--tasks", "mqar", "--out", str(tmp_path / "file")], "is a file, not a directory")
    _refused(capsys, [*SMOKE, "--tasks", "mqar", "--out", str(tmp_path / "file" / "sub")], "is a file")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_refused_first(tmp_path, capsys):
    out = tmp_path / "out"
    _refused(capsys, [*SMOKE[:-1], "--tasks", "mqar", "--device", "cuda", "--out", str(out)], "CUDA is not available")
    _refused(capsys, [*SMOKE[:-1], "--tasks", "mqar", "--out", str(out), "train.device=cuda"], "CUDA is not available")
    assert not out.exists()


@pytest.mark.parametrize("models, message", [("", "names no model"), (",", "names no model"),
                                             ("gateloop,nosuch", "unknown mixer 'nosuch'")])
def test_bad_model_lists_are_refused_first(tmp_path, capsys, models, message):
    _refused(capsys, ["suite", "--model", models, "--preset", "smoke", "--out", str(tmp_path / "o")], message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--seeds", "--workers", "--threads"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_numeric_flags_below_one_are_refused_first(tmp_path, capsys, flag, value):
    _refused(capsys, [*SMOKE, "--tasks", "mqar", flag, value, "--out", str(tmp_path / "o")], f"{flag} {value}")
    assert not (tmp_path / "o").exists()


def test_task_outside_the_preset_is_refused_naming_the_presets_tasks(tmp_path, capsys):
    # Trained at the task's default size it would not be a smoke run at all.
    _refused(capsys, [*SMOKE, "--tasks", "mqar,selective_copy", "--out", str(tmp_path / "o")],
             "'selective_copy' is not in the smoke preset (its tasks: mqar, state_tracking, memory_horizon)")


def test_threads_flag_is_stored_in_the_config(tmp_path):
    # A few steps only: two threads on a busy 2-core machine are slow.
    assert main([*SMOKE, "train.steps=6", "train.eval_every=6", "--tasks", "mqar", "--threads", "2",
                 "--out", str(tmp_path)]) == 0
    (record,) = load_records(tmp_path)
    assert record["config"]["train"]["threads"] == 2


def test_reused_out_with_another_config_keeps_the_groups_apart(tmp_path, capsys):
    assert main([*SMOKE, "--tasks", "mqar", "--out", str(tmp_path)]) == 0
    assert main([*SMOKE, "train.lr=0.03", "--tasks", "mqar", "--out", str(tmp_path)]) == 0
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert len({r["group"] for r in rows}) == 2
    table = (tmp_path / "table.md").read_text()
    # Two rows of one seed each, told apart by a config column, the differing key listed below -
    # never one row pooling lr 0.003 and lr 0.03 as "2 seeds".
    lines = [line for line in table.splitlines() if line.startswith("| mqar | token acc. | gateloop |")]
    assert len(lines) == 2 and all("| 1 |" in line for line in lines), table
    groups = sorted({r["group"][:6] for r in rows})
    assert all(any(g in line for line in lines) for g in groups)
    assert "train.lr=0.003" in table and "train.lr=0.03" in table


def test_one_config_per_model_and_task_has_no_config_column(tmp_path):
    assert main([*SMOKE, "--tasks", "mqar", "--seeds", "2", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "config" not in table.splitlines()[0] and "| 2 |" in table


@pytest.mark.parametrize("content, reason", [("{\"run_id\": \"abc", "not valid JSON"), ("{}", "lacks"),
                                             ("[1, 2]", "not a JSON object")])
def test_corrupt_run_file_is_named_moved_aside_and_rerun(tmp_path, capsys, content, reason):
    args = [*SMOKE, "--tasks", "mqar", "--out", str(tmp_path)]
    assert main(args) == 0
    (run_file,) = (tmp_path / "runs").glob("*.json")
    good = json.loads(run_file.read_text())
    run_file.write_text(content)
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if str(run_file) in line]
    assert len(warnings) == 1 and reason in warnings[0] and ".corrupt-1" in warnings[0], captured.err
    assert "0 already finished" in captured.out
    assert (tmp_path / "runs" / f"{run_file.name}.corrupt-1").read_text() == content  # kept, not deleted
    rerun = json.loads(run_file.read_text())
    assert {k: v for k, v in rerun.items() if k != "wall_time"} == {k: v for k, v in good.items() if k != "wall_time"}


def test_run_file_that_does_not_match_its_config_is_not_finished(tmp_path, capsys):
    assert main([*SMOKE, "--tasks", "mqar", "--out", str(tmp_path)]) == 0
    (run_file,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(run_file.read_text())
    record["config"]["train"]["lr"] = 0.5  # e.g. edited by hand: the id no longer describes it
    run_file.write_text(json.dumps(record))
    assert load_records(tmp_path) == []
    assert "does not match its config" in capsys.readouterr().err
    assert (tmp_path / "runs" / f"{run_file.name}.corrupt-1").exists() and not run_file.exists()


def _rows(by_length: dict[int, tuple[float, ...]], task: str = "t", model: str = "m") -> list[dict]:
    """Tidy rows of one config group, seed i scoring by_length[length][i] (token accuracy, training length 8)."""
    return [{"task": task, "model": model, "group": "g" * 16, "seed": seed, "metric": "accuracy",
             "task_metric": "accuracy", "length": length, "train_length": 8, "value": v, "status": "completed",
             "steps_to_target": None, "wall_time": 1.0, "num_parameters": 1000, "state_size": 10}
            for length, vals in by_length.items() for seed, v in enumerate(vals)]


def test_length_band_is_the_tables_bootstrap_interval():
    from studies.suite.figures import length_intervals

    rows = _rows({8: (0.2, 0.5, 0.9), 16: (0.1, 0.15, 0.4)})
    frame = length_intervals(rows).set_index("length ×")
    for multiplier, vals in ((1, (0.2, 0.5, 0.9)), (2, (0.1, 0.15, 0.4))):
        mean, low, high = bootstrap_ci(vals)
        assert frame.loc[multiplier, "mean"] == pytest.approx(mean)
        assert frame.loc[multiplier, "low"] == pytest.approx(low)
        assert frame.loc[multiplier, "high"] == pytest.approx(high)
        # Inside the seeds' range (to rounding: a mean of equal floats), so inside [0, 1].
        assert min(vals) - 1e-12 <= low <= mean <= high <= max(vals) + 1e-12


def test_a_cell_of_several_seeds_shows_each_seed_a_bootstrap_interval_and_a_split_solve_rate():
    from studies.suite.table import suite_table

    config = {"train": {"target_accuracy": 0.99}}
    table = suite_table(_rows({8: (1.0, 0.995, 0.5), 16: (0.76, 0.95, 0.58)}), {"g" * 16: config})
    row = next(line for line in table.splitlines() if line.startswith("| t |"))
    at_1, at_2 = row.split(" | ")[3:5]
    mean, low, high = bootstrap_ci([1.0, 0.995, 0.5])
    assert at_1 == (f"{mean:.3f} [{low:.3f}, {high:.3f}]<br>seeds: 1.000 0.995 0.500"
                    f"<br>solved {solve_rate([1.0, 0.995, 0.5], 0.99)}")
    assert "solved 2/3 [0.09, 0.99]" in at_1
    assert "solved" not in at_2 and at_2.endswith("<br>seeds: 0.760 0.950 0.580")  # no seed at the target: no split
    assert "bootstrap" in table and "±" not in table
    # One seed: the value alone, and no note on how several seeds read.
    single = suite_table(_rows({8: (0.7,)}), {"g" * 16: {"train": {"target_accuracy": 1.0}}})
    assert "| 0.700 |" in single and "bootstrap" not in single


def test_a_run_without_a_target_of_its_own_counts_solved_at_0_99():
    from studies.suite.table import solve_target

    assert solve_target({"train": {"target_accuracy": 1.0}}) == 0.99
    assert solve_target({"train": {"target_accuracy": 0.9}}) == 0.9


def test_figures_keep_their_titles_inside_with_one_task():
    from studies.suite.figures import length_figure, task_figure

    rows = _rows({8: (0.2, 0.5, 0.9), 16: (0.1, 0.15, 0.4)}, task="state_tracking")
    for fig in (task_figure(rows), length_figure(rows)):
        fig.canvas.draw()
        titles = [t for t in (fig._suptitle, *[ax.title for ax in fig.axes]) if t is not None and t.get_text()]
        assert titles
        for title in titles:
            box = title.get_window_extent()
            assert fig.bbox.x0 - 1 <= box.x0 and box.x1 <= fig.bbox.x1 + 1 and box.y1 <= fig.bbox.y1 + 1, \
                title.get_text()


def _without_wall_time(out) -> dict:
    return {r["run_id"]: {k: v for k, v in r.items() if k != "wall_time"} for r in load_records(out)}


def test_two_workers_give_the_same_runs_as_one(tmp_path):
    args = [a for a in SMOKE if a not in ("--workers", "1")] + ["--tasks", "mqar,state_tracking"]
    assert main([*args, "--workers", "1", "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = _without_wall_time(tmp_path / "one"), _without_wall_time(tmp_path / "two")
    assert len(one) == 2 and one == two


def test_workers_take_the_longest_runs_first(tmp_path, monkeypatch, capsys):
    """LPT order: the costliest run (memory_horizon in the smoke preset) first, and each finished job's
    progress line names that job's own config (positions map back through the order)."""
    from studies.suite import run as suite_run
    from studies.suite.configs import build_configs

    seen = []

    def fake_parallel(fn, jobs, workers, report, gpus=0):
        seen.extend(job[0] for job in jobs)
        for position in (2, 0, 1):  # completion order differs from the queue's
            report(position, {"status": "completed", "score": 0.0, "steps": 0,
                              "wall_time": 0.0})

    monkeypatch.setattr(suite_run, "run_parallel", fake_parallel)
    configs = build_configs(["gateloop"], ["mqar", "memory_horizon", "state_tracking"], get_preset("smoke"), 1,
                            ["train.device=cpu"])
    suite_run.run_configs(configs, tmp_path, progress=False, workers=2)
    costs = [suite_run.run_cost(c) for c in seen]
    assert costs == sorted(costs, reverse=True) and seen[0].task_name == "memory_horizon"
    lines = [line for line in capsys.readouterr().out.splitlines() if "(run " in line]
    assert [line.split("(run ")[1].split(")")[0] for line in lines] == [seen[i].run_id() for i in (2, 0, 1)]
    assert all(seen[i].task_name in line for i, line in zip((2, 0, 1), lines))
    assert suite_run.run_cost(dataclasses.replace(configs[0], train=dataclasses.replace(configs[0].train, steps=99))) < \
        suite_run.run_cost(dataclasses.replace(configs[0], train=dataclasses.replace(configs[0].train, steps=100)))


def _running(pid: int) -> bool:
    try:
        return "zombie" not in open(f"/proc/{pid}/status").read().lower()
    except FileNotFoundError:
        return False


def _wait_until_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _running(pid)], "orphan processes left behind"


def _children(pid: int) -> list[int]:
    tasks = f"/proc/{pid}/task"
    return [int(c) for t in os.listdir(tasks) for c in open(f"{tasks}/{t}/children").read().split()]


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task"), reason="needs Linux /proc to find workers")
def test_ctrl_c_stops_every_worker_and_a_rerun_resumes(tmp_path):
    # 6 runs, interrupted when the first is stored (see the test above for why not 3)
    cmd = [sys.executable, "-m", "studies", *[a for a in SMOKE if a not in ("--workers", "1")], "--workers", "2",
           "--tasks", "mqar,state_tracking,memory_horizon", "--seeds", "2", "--out", str(tmp_path)]
    total = 6
    # A session of its own, so that the SIGINT goes to the whole group as a terminal's Ctrl-C does; SIGINT
    # at its default, as in a terminal (pytest started in the background of a shell inherits it ignored).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 300
    while not (runs.exists() and any(runs.glob("*.json"))):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no run finished in time"
        time.sleep(0.02)
    workers = _children(proc.pid)
    assert workers
    os.killpg(proc.pid, signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "rerun the same command to resume" in stderr
    # Workers are joined before the command exits; multiprocessing's resource tracker ends at its EOF.
    _wait_until_gone(workers)
    assert not [p for p in runs.iterdir() if not p.name.endswith(".json")]  # no half-written temporaries
    finished = {p.name: p.read_text() for p in runs.glob("*.json")}
    assert 1 <= len(finished) < total and all(json.loads(t)["run_id"] for t in finished.values())
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert f"{len(finished)} already finished" in out
    assert {p.name: p.read_text() for p in runs.glob("*.json") if p.name in finished} == finished
    assert len(list(runs.glob("*.json"))) == total


def test_state_tracking_is_evaluated_to_8x_and_other_tasks_at_the_preset_lengths():
    from studies.presets import PRESETS
    from studies.suite.configs import build_configs

    for preset in ("quick", "headline", "standard"):
        configs = {c.task_name: c for c in build_configs(["lru"], ["state_tracking", "mqar"], PRESETS[preset], 1)}
        L = configs["state_tracking"].task.seq_len
        assert configs["state_tracking"].eval_lengths == (2 * L, 4 * L, 8 * L), preset
        assert configs["mqar"].eval_lengths == tuple(m * configs["mqar"].task.seq_len
                                                     for m in PRESETS[preset].eval_multipliers), preset
