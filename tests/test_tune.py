"""Tuning studies on SQLite: exact budgets (also across concurrent workers), diverged trials, surplus
trials, refusal of a changed search space, confirmation over fresh seeds, and the report from storage.

Most tests replace `studies.tune.objectives.train` by a fake whose accuracy is a known function of the learning
rate, so budgets and tables can be checked exactly without CPU cost; the two-worker test trains for
real (smoke preset, tiny overrides) through `python -m studies tune`.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from studies.atomic_io import read_jsonl
from studies.train import EvalRecord, TrainResult
from studies.tune import budget, jobs, objectives, queries, samplers
from studies.tune import report as report_mod
from studies.tune import report_figures, report_rows
from studies.tune import storage as tune_storage
from studies.tune import study as tune_study
from studies.tune.search_spaces import COMMON, SEARCH_SPACE_VERSION, Knob, SearchSpace, get_search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

TASK = "mqar"
TINY = ["train.steps=12", "train.eval_every=4", "train.batch_size=4", "train.test_size=16"]
REPO = Path(__file__).resolve().parents[1]


def fake_accuracy(lr: float) -> float:
    """Peaks at lr = 1e-3 (log scale); a pure function of the hyperparameter, so results are checkable."""
    return 1.0 / (1.0 + (math.log10(lr) + 3.0) ** 2)


class FakeTrain:
    """Stands in for studies.train.train: reports three evaluations rising to `fake_accuracy(lr)`."""

    def __init__(self, diverge_above: float = math.inf) -> None:
        self.diverge_above = diverge_above
        self.calls: list[tuple[float, int]] = []

    def __call__(self, config, on_eval=None, progress=True) -> TrainResult:
        lr, seed = config.train.lr, config.train.seed
        self.calls.append((lr, seed))
        target = fake_accuracy(lr) + 0.01 * (seed % 7)  # seeds differ a little, deterministically
        steps = config.train.steps
        if lr > self.diverge_above:
            return TrainResult("diverged", 3, None, [], {}, 100, 200, 10, 0.0, config.to_dict())
        history = [EvalRecord(s, 1.0 - target * f, target * f, 0.0) for s, f in
                   ((steps // 3, 0.5), (2 * steps // 3, 0.8), (steps, 1.0))]
        for record in history:
            if on_eval is not None:
                on_eval(record)
        final = {config.task.seq_len: {"accuracy": target, "sequence_accuracy": 0.0}}
        return TrainResult("completed", steps, None, history, final, 100, 200, 10, 0.01, config.to_dict())


@pytest.fixture
def storage(tmp_path):
    return tune_storage.open_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=1, grace_period=5)


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state in budget.COUNTED]


def frozen(number: int, state: TrialState, **attrs) -> FrozenTrial:
    return FrozenTrial(number=number, state=state, value=0.5 if state == TrialState.COMPLETE else None,
                       datetime_start=None, datetime_complete=None, params={}, distributions={},
                       user_attrs=attrs, system_attrs={}, intermediate_values={}, trial_id=number)


# --------------------------------------------------------------------------------------- search spaces


def test_search_space_applies_knobs_to_the_config():
    config = tune_study.base_config(TASK, "gateloop", "smoke", TINY)
    space = get_search_space("gateloop")
    assert [k.name for k in space.knobs] == ["lr", "weight_decay", "warmup_fraction", "transition_lr_factor"]
    applied = space.apply(config, {"lr": 2e-3, "weight_decay": 0.05, "warmup_fraction": 0.25 / 3,
                                   "transition_lr_factor": 0.5})
    assert applied.train.lr == 2e-3 and applied.train.weight_decay == 0.05
    assert applied.train.warmup_steps == 1  # 12 steps * 1/12, rounded to whole steps
    assert applied.train.transition_lr_factor == 0.5
    assert applied.mixer == config.mixer and applied.task == config.task
    with pytest.raises(ValueError, match="missing"):
        space.apply(config, {"lr": 1e-3})
    assert get_search_space("attention") is COMMON
    assert get_search_space("some_future_mixer") is COMMON
    assert space.fingerprint() != COMMON.fingerprint()
    assert space.fingerprint() == get_search_space("s4d").fingerprint()
    lru = get_search_space("lru").apply(tune_study.base_config(TASK, "lru", "smoke", TINY),
                                        {"lr": 1e-3, "weight_decay": 0.0, "warmup_fraction": 0.0,
                                         "transition_lr_factor": 1.0, "r_min": 0.5})
    assert lru.mixer.r_min == 0.5 and lru.train.warmup_steps == 0


def test_knob_validation_names_the_constraint():
    with pytest.raises(ValueError, match="low > 0"):
        Knob("lr", "train.lr", 0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="section.key"):
        Knob("lr", "optimizer.lr", 1e-4, 1.0)
    with pytest.raises(ValueError, match="unique"):
        SearchSpace((Knob("a", "train.lr", 0.1, 1.0), Knob("b", "train.lr", 0.1, 1.0)))


# -------------------------------------------------------------------------------------- budget logic


def test_slot_rule_counts_finished_and_live_trials_before_this_one():
    trials = [frozen(0, TrialState.COMPLETE), frozen(1, TrialState.FAIL), frozen(2, TrialState.RUNNING),
              frozen(3, TrialState.PRUNED), frozen(4, TrialState.WAITING)]
    assert budget.has_slot(trials, 2, budget=2)  # only trial 0 is ahead of it
    assert not budget.has_slot(trials, 3, budget=2)  # 0 and 2 are ahead
    assert budget.has_slot(trials, 5, budget=5) and not budget.has_slot(trials, 5, budget=4)
    seeds = [1000, 1001, 1002]
    held = [frozen(0, TrialState.COMPLETE, seed=1000), frozen(1, TrialState.FAIL, seed=1001),
            frozen(2, TrialState.RUNNING, seed=1002)]
    assert budget.free_seed(held, 3, seeds) == 1001  # a failed trial releases its seed
    assert budget.free_seed(held + [frozen(3, TrialState.WAITING, seed=1001)], 4, seeds) is None
    assert budget.seed_taken_before(held, 5, 1002) and not budget.seed_taken_before(held, 1, 1002)


def test_exact_budget_per_model_resume_and_extension(storage, monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(objectives, "train", fake)
    studies = jobs.tune_models(TASK, ["gateloop", "attention"], 4, storage, prefix="p", preset="smoke",
                               overrides=TINY, progress=False)
    for model, study in studies.items():
        done = finished(study)
        assert len(done) == 4, model
        assert study.study_name == f"p/{TASK}/{model}"
        for t in done:
            if t.state == TrialState.COMPLETE:
                assert t.value == pytest.approx(fake_accuracy(t.params["lr"]))
                assert t.user_attrs["status"] == "completed"
                assert t.user_attrs["config"]["train"]["lr"] == t.params["lr"]
                assert [m["step"] for m in t.user_attrs["metrics"]] == [4, 8, 12]
        assert study.user_attrs["search_space_version"] == SEARCH_SPACE_VERSION
        assert study.user_attrs["budget"] == 4
    assert len(fake.calls) == 8
    # Rerunning the same command finds every study complete and trains nothing.
    jobs.tune_models(TASK, ["gateloop", "attention"], 4, storage, prefix="p", preset="smoke", overrides=TINY,
                     progress=False)
    assert len(fake.calls) == 8
    # A larger budget continues the same studies up to exactly the new count.
    studies = jobs.tune_models(TASK, ["attention"], 6, storage, prefix="p", preset="smoke", overrides=TINY,
                               progress=False)
    assert len(finished(studies["attention"])) == 6 and len(fake.calls) == 10


def test_sampler_is_reproducible_for_one_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(objectives, "train", FakeTrain())
    runs = []
    for name in ("a", "b"):
        storage = tune_storage.open_storage(f"sqlite:///{tmp_path / name}.db", heartbeat_interval=1, grace_period=5)
        study = jobs.tune_models(TASK, ["attention"], 5, storage, prefix="p", preset="smoke", overrides=TINY,
                                 sampler_seed=3, progress=False)["attention"]
        runs.append([t.params for t in study.get_trials()])
    assert runs[0] == runs[1]
    assert len({p["lr"] for p in runs[0]}) == 5


def test_diverged_trial_counts_with_the_worst_value(storage, monkeypatch):
    # Every learning rate above 1e-3 diverges: those trials finish COMPLETE with 0.0 and use budget.
    monkeypatch.setattr(objectives, "train", FakeTrain(diverge_above=1e-3))
    study = jobs.tune_models(TASK, ["attention"], 6, storage, prefix="d", preset="smoke", overrides=TINY,
                             progress=False)["attention"]
    done = finished(study)
    assert len(done) == 6
    diverged = [t for t in done if t.params["lr"] > 1e-3]
    assert diverged, "the search space should have proposed some lr above 1e-3 in 6 trials"
    for t in diverged:
        assert t.state == TrialState.COMPLETE and t.value == 0.0 and t.user_attrs["status"] == "diverged"
    for t in done:
        if t.params["lr"] <= 1e-3 and t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(fake_accuracy(t.params["lr"]))


def test_trial_beyond_the_budget_is_surplus_and_does_not_train(storage, monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(objectives, "train", fake)
    study, config, space = tune_study.open_tuning_study(storage, "s", TASK, "attention", "smoke", TINY, trials=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ask() outside optimize() warns about heartbeats
        live = study.ask()  # another worker's running trial holds the only slot
        late = study.ask()
    with pytest.raises(budget.SurplusTrial):
        objectives.run_tuning_trial(late, study, config, space, budget=1, seeds=1, progress=False)
    assert fake.calls == []
    study.tell(late, state=TrialState.FAIL)
    study.tell(live, 0.5)
    assert budget.tuning_state(1)(study.get_trials()) == "done"


def test_two_workers_that_both_saw_a_free_slot_do_not_overshoot(storage, monkeypatch):
    # The race the slot rule exists for: both workers look, both see the last slot free, both start.
    monkeypatch.setattr(objectives, "train", FakeTrain())
    study, config, space = tune_study.open_tuning_study(storage, "race", TASK, "attention", "smoke", TINY, trials=1)
    other = optuna.load_study(study_name=study.study_name, storage=storage, sampler=samplers.make_sampler(0, 1))
    jobs = [budget.Job(s, lambda t, s=s: objectives.run_tuning_trial(t, s, config, space, 1, 1, False),
                      budget.tuning_state(1)) for s in (study, other)]
    assert [job.state() for job in jobs] == ["free", "free"]
    for job in jobs:
        job.run_one()
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs["surplus"] and "config" not in trials[1].user_attrs  # refused before training
    assert [job.state() for job in jobs] == ["done", "done"]


def test_refuses_a_study_made_with_another_search_space(storage, monkeypatch):
    monkeypatch.setattr(objectives, "train", FakeTrain())
    study = jobs.tune_models(TASK, ["attention"], 1, storage, prefix="v", preset="smoke", overrides=TINY,
                             progress=False)["attention"]
    study.set_user_attr("search_space_fingerprint", "0123456789abcdef")
    with pytest.raises(SystemExit, match="search_space_fingerprint.*not comparable"):
        jobs.tune_models(TASK, ["attention"], 2, storage, prefix="v", preset="smoke", overrides=TINY, progress=False)
    # Other preset overrides change the base config: refused as well; the same ones reordered are not.
    jobs.tune_models(TASK, ["attention"], 1, storage, prefix="w", preset="smoke", overrides=TINY, progress=False)
    # The refusal names each differing key with both values, not two truncated configs.
    with pytest.raises(SystemExit, match=r"another base_config \(base_config\.train\.grad_clip: stored 1\.0, "
                                         r"this command 0\.5\)"):
        jobs.tune_models(TASK, ["attention"], 1, storage, prefix="w", preset="smoke",
                         overrides=[*TINY, "train.grad_clip=0.5"], progress=False)
    jobs.tune_models(TASK, ["attention"], 1, storage, prefix="w", preset="smoke", overrides=TINY[::-1],
                     progress=False)


def test_studies_name_their_metric_also_when_reopened(storage, monkeypatch):
    monkeypatch.setattr(objectives, "train", FakeTrain())
    study = jobs.tune_models(TASK, ["attention"], 1, storage, prefix="m", preset="smoke", overrides=TINY,
                             progress=False)["attention"]
    assert optuna.load_study(study_name=study.study_name, storage=storage).metric_names == ["accuracy"]
    jobs.confirm(TASK, ["attention"], storage, prefix="m", seeds=1, progress=False)
    confirm_study = optuna.load_study(study_name=f"m/{TASK}/attention/confirm", storage=storage)
    assert confirm_study.metric_names == ["accuracy"]
    # A study made before metric names were stored gets its name when a worker opens it.
    old = optuna.create_study(storage=storage, study_name=f"old/{TASK}/attention", direction="maximize")
    assert old.metric_names is None
    jobs.tune_models(TASK, ["attention"], 1, storage, prefix="old", preset="smoke", overrides=TINY, progress=False)
    assert optuna.load_study(study_name=old.study_name, storage=storage).metric_names == ["accuracy"]


def test_optuna_logs_warnings_only_unless_verbose(tmp_path):
    from studies import cli

    argv = ["tune", "--task", TASK, "--models", "attention", "--trials", "0", "--out", str(tmp_path)]
    for extra, level in (([], optuna.logging.WARNING), (["--verbose"], optuna.logging.INFO)):
        optuna.logging.set_verbosity(optuna.logging.DEBUG)
        with pytest.raises(SystemExit):
            cli.main(argv + extra)
        assert optuna.logging.get_verbosity() == level
    optuna.logging.set_verbosity(optuna.logging.WARNING)


_DIE_BEFORE_HEARTBEAT = """
import os, signal, sys
from studies.tune import storage as tune_storage, study as tune_study
storage = tune_storage.open_storage(sys.argv[1], heartbeat_interval=1, grace_period=2)
study, _, _ = tune_study.open_tuning_study(storage, sys.argv[2], "mqar", "attention", "smoke", sys.argv[3:], trials=2)
study.ask()  # what Study.optimize does first: a RUNNING trial, before its heartbeat thread starts
os.kill(os.getpid(), signal.SIGKILL)
"""


def check_trial_without_heartbeat_is_reaped(url: str, prefix: str, monkeypatch) -> None:
    """A worker SIGKILLed between creating a trial and its first heartbeat: the trial is kept while
    younger than the grace period, then failed and re-queued, and the study ends with its budget."""
    victim = subprocess.run([sys.executable, "-c", _DIE_BEFORE_HEARTBEAT, url, prefix, *TINY], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert victim.returncode == -9, victim.stderr[-2000:]
    # Younger than the grace period, the trial may belong to a live worker: kept. (A 60 s grace period here,
    # so that the check does not depend on how fast this busy machine got here after the kill.)
    patient = tune_storage.open_storage(url, heartbeat_interval=1, grace_period=60)
    study = optuna.load_study(study_name=f"{prefix}/{TASK}/attention", storage=patient)
    (orphan,) = study.get_trials()
    assert orphan.state == TrialState.RUNNING
    budget.reap(study)
    assert study.get_trials()[0].state == TrialState.RUNNING
    time.sleep(2.5)  # older than a 2 s grace period now
    storage = tune_storage.open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name=f"{prefix}/{TASK}/attention", storage=storage)
    budget.reap(study)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] == [TrialState.WAITING] and trials[1].system_attrs["failed_trial"] == 0
    # The freed slot is used: the study ends with exactly its budget, the orphan not among them.
    monkeypatch.setattr(objectives, "train", FakeTrain())
    study = jobs.tune_models(TASK, ["attention"], 2, storage, prefix=prefix, preset="smoke", overrides=TINY,
                             progress=False)["attention"]
    assert len(finished(study)) == 2 and 0 not in [t.number for t in finished(study)]


def test_worker_killed_before_its_first_heartbeat_frees_the_slot(tmp_path, monkeypatch):
    check_trial_without_heartbeat_is_reaped(f"sqlite:///{tmp_path / 'studies.db'}", "gap", monkeypatch)


# ------------------------------------------------------------------------------------ confirm + report


def test_confirm_and_report_from_storage_only(storage, tmp_path, monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(objectives, "train", fake)
    models = ["gateloop", "attention"]
    studies = jobs.tune_models(TASK, models, 3, storage, prefix="r", preset="smoke", overrides=TINY, progress=False)
    confirmed = jobs.confirm(TASK, models, storage, prefix="r", seeds=3, progress=False)
    for model in models:
        best_lr = studies[model].best_trial.params["lr"]
        expected = [fake_accuracy(best_lr) + 0.01 * (s % 7) for s in (1000, 1001, 1002)]
        assert confirmed[model] == pytest.approx(expected)
        confirm_study = optuna.load_study(study_name=f"r/{TASK}/{model}/confirm", storage=storage)
        assert sorted(t.user_attrs["seed"] for t in confirm_study.get_trials()) == [1000, 1001, 1002]
    calls = len(fake.calls)
    assert jobs.confirm(TASK, models, storage, prefix="r", seeds=3, progress=False) == confirmed
    assert len(fake.calls) == calls  # resumed: nothing left to train

    def no_training(*args, **kwargs):
        raise AssertionError("the report must not train")

    monkeypatch.setattr(objectives, "train", no_training)
    out = tmp_path / "report"
    text = report_mod.build_report(storage, "r", out)
    assert "| task | gateloop | attention | floor |" in text  # the summary table, reference model first
    lines = [line for line in text[text.index(f"### {TASK}\n"):].splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| model | score, mean [95% bootstrap CI] |")
    # Every score is read against its floor: the best no-solve baseline on the final seeds' held-out sets.
    confirm_rows = read_jsonl(out / "confirm.jsonl")
    assert all(r["floor"] is not None and r["floor_name"] and r["metric"] == "accuracy" for r in confirm_rows)
    # One floor per task: the best baseline on the final seeds' held-out sets pooled (as the audit computes it).
    from tasks import make_task
    from tasks.shortcuts import floor

    config = optuna.load_study(study_name=f"r/{TASK}/gateloop/confirm", storage=storage).trials[0].user_attrs["config"]
    task = make_task(TASK, **{k: v for k, v in config["task"].items() if k != "name"})
    name, score, _ = floor(task, config["train"]["test_size"], (1000, 1001, 1002))
    assert {(r["floor_name"], r["floor"]) for r in confirm_rows} == {(name, score)}
    assert "Floor (best no-solve baseline on the same held-out sets" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[1:]}
    assert set(rows) == {"gateloop", "attention"}
    mean = sum(confirmed["attention"]) / 3
    assert f"{mean:.3f} [" in rows["attention"]
    assert "| 3 (" in rows["attention"]  # three finished tuning trials
    for name in ("report.md", "accuracy_by_model.png", "optimization_history.png", "best_so_far.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(read_jsonl(out / "confirm.jsonl")) == 6
    assert len(read_jsonl(out / "trials.jsonl")) == 6


def test_report_figures_with_one_task_and_few_trials(storage, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image
    import matplotlib.pyplot as plt

    monkeypatch.setattr(objectives, "train", FakeTrain())
    models = ["gateloop", "attention"]
    jobs.tune_models(TASK, models, 2, storage, prefix="f", preset="smoke", overrides=TINY, progress=False)
    jobs.confirm(TASK, models, storage, prefix="f", seeds=2, progress=False)
    out = tmp_path / "report"
    report_mod.build_report(storage, "f", out)
    # The accuracy figure's title is wider than its one-task axes. Anything cut off by the image's
    # edge leaves ink on the edge; a figure that holds everything has a blank border.
    for name in ("accuracy_by_model.png", "optimization_history.png", "best_so_far.png"):
        rgb = matplotlib.image.imread(out / name)[..., :3]  # (rows, columns, 3) in [0, 1]
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        assert border.min() > 0.95, f"{name}: something is clipped at the image's edge"
    # Two trials: ticks at whole trials only, not 1.2, 1.4, ...
    trial_rows, _ = report_rows.load_rows(storage, "f")
    for grid in (report_figures.history_figure(trial_rows, models), report_figures.best_so_far_figure(trial_rows, models)):
        grid.figure.canvas.draw()
        for ax in grid.axes.flat:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
        plt.close(grid.figure)


# ---------------------------------------------------------------------------- real training, 2 workers


def worker_command(storage_url: str, prefix: str, trials: int, models: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "studies", "tune", "--task", TASK, "--models", models, "--protocol", "v1",
            "--trials", str(trials),
            "--storage", storage_url, "--study-prefix", prefix, "--preset", "smoke", "--quiet",
            "--heartbeat-interval", "1", "--grace-period", "6", *extra, *TINY]


def run_workers(commands: list[list[str]], timeout: float = 240) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for c in commands]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
    return outputs


def worker_trials(outputs: list[str], study: str) -> list[list[int]]:
    """The trial numbers each worker reports having finished (COMPLETE or PRUNED) in a study."""
    per_worker = []
    for output in outputs:
        numbers = []
        for line in output.splitlines():
            if line.startswith(f"[{study}] trial ") and (" COMPLETE" in line or " PRUNED" in line):
                numbers.append(int(line.split(" trial ")[1].split()[0]))
        per_worker.append(numbers)
    return per_worker


@pytest.mark.slow
def test_two_concurrent_workers_on_sqlite_end_with_exactly_n(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    n = 3
    outputs = run_workers([worker_command(url, "w", n, "gateloop", "--final-seeds", "2")] * 2)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=f"w/{TASK}/gateloop", storage=storage)
    done = finished(study)
    assert len(done) == n
    per_worker = worker_trials(outputs, study.study_name)
    claimed = [x for numbers in per_worker for x in numbers]
    assert sorted(claimed) == sorted(t.number for t in done)  # each finished trial run by exactly one worker
    for t in done:
        assert t.user_attrs["run_id"] and t.user_attrs["config"]["train"]["steps"] == 12
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["num_parameters"] > 0 and t.user_attrs["state_size"] > 0
    confirm_study = optuna.load_study(study_name=f"w/{TASK}/gateloop/confirm", storage=storage)
    seeds = [t.user_attrs["seed"] for t in confirm_study.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(seeds) == [1000, 1001]

    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "studies", "report", "--storage", url, "--study-prefix", "w",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| gateloop |" in (out / "report.md").read_text()
    assert (out / "best_so_far.png").stat().st_size > 0


class SequenceMetricTrain(FakeTrain):
    """Like FakeTrain, but the runs' sequence exact match (half the token accuracy) differs from their token
    accuracy, and the result names the task's metric as `train` does."""

    def __call__(self, config, on_eval=None, progress=True) -> TrainResult:
        lr, seed = config.train.lr, config.train.seed
        self.calls.append((lr, seed))
        target = fake_accuracy(lr) + 0.01 * (seed % 7)
        steps = config.train.steps
        history = [EvalRecord(s, 1.0 - target * f, target * f, target * f / 2) for s, f in
                   ((steps // 3, 0.5), (2 * steps // 3, 0.8), (steps, 1.0))]
        for record in history:
            if on_eval is not None:
                on_eval(record)
        final = {config.task.seq_len: {"accuracy": target, "sequence_accuracy": target / 2}}
        return TrainResult("completed", steps, None, history, final, 100, 200, 10, 0.01, config.to_dict(),
                           metric=config.task.metric)


def test_a_sequence_metric_task_is_tuned_pruned_confirmed_and_reported_on_that_metric(storage, tmp_path, monkeypatch):
    # memory_horizon is scored on sequence exact match (token accuracy is 0.5 for free there): the objective,
    # what the pruner sees, the confirmed values and the report must all be that metric, not token accuracy.
    monkeypatch.setattr(objectives, "train", SequenceMetricTrain())
    study = jobs.tune_models("memory_horizon", ["gateloop"], 2, storage, prefix="sm", preset="smoke", overrides=TINY,
                             progress=False)["gateloop"]
    for t in finished(study):
        assert t.value == pytest.approx(fake_accuracy(t.params["lr"]) / 2)
        assert max(t.intermediate_values.values()) == pytest.approx(t.value)
    assert study.metric_names == ["sequence_accuracy"]
    confirmed = jobs.confirm("memory_horizon", ["gateloop"], storage, prefix="sm", seeds=2, progress=False)
    best_lr = study.best_trial.params["lr"]
    assert confirmed["gateloop"] == pytest.approx([(fake_accuracy(best_lr) + 0.01 * (s % 7)) / 2 for s in (1000, 1001)])
    text = report_mod.build_report(storage, "sm", tmp_path / "report")
    assert "Metric: sequence exact match." in text


# ------------------------------------------------------------------------ protocol v2: the lr rule


def test_rule_study_tries_what_the_rule_asks_and_ends_with_an_interior_best(storage, monkeypatch):
    """fake_accuracy peaks at 1e-3, the start grid's lower edge: the rule steps to 10^-3.5, finds 1e-3
    interior, refines to a quarter decade on both sides, and stops. The study's best (what confirm
    re-trains) is the rule's."""
    fake = FakeTrain()
    monkeypatch.setattr(objectives, "train", fake)
    (study,) = jobs.tune_models(TASK, ["gateloop"], None, storage, "rule", "smoke", seeds=2, overrides=TINY,
                                progress=False, sampler="lr_rule", pruner="safe_sha").values()
    tried = sorted(round(math.log10(t.params["lr"]), 6) for t in finished(study))
    assert tried == [-3.5, -3.25, -3.0, -2.75, -2.5, -2.0]
    assert study.user_attrs["budget"] is None and study.user_attrs["sampler"]["start_decades"] == [-3.0, -2.5, -2.0]
    assert queries.best_lr(study) == pytest.approx(1e-3)
    assert sorted({seed for _, seed in fake.calls}) == [0, 1]
    # Rerunning the finished study trains nothing.
    calls = len(fake.calls)
    jobs.tune_models(TASK, ["gateloop"], None, storage, "rule", "smoke", seeds=2, overrides=TINY, progress=False,
                     sampler="lr_rule", pruner="safe_sha")
    assert len(fake.calls) == calls
    with pytest.raises(ValueError, match="decides how many trials"):
        jobs.tune_models(TASK, ["gateloop"], 8, storage, "rule", "smoke", overrides=TINY, sampler="lr_rule")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_rule_sampler_refuses_a_duplicate_point_as_surplus(storage, monkeypatch):
    """The sampler gives a new trial the first open point no live trial holds; two trials that still end up
    with one learning rate (two workers in the same instant, or a point fixed twice) are caught before
    training: the later is refused as surplus."""
    monkeypatch.setattr(objectives, "train", FakeTrain())
    study, config, space = tune_study.open_tuning_study(storage, "dup", TASK, "gateloop", "smoke", TINY, None,
                                                        sampler="lr_rule", pruner="safe_sha")
    first, second = study.ask(), study.ask()
    lrs = [t.suggest_float("lr", 10 ** -4.5, 0.1, log=True) for t in (first, second)]
    assert lrs == pytest.approx([1e-3, 10 ** -2.5])  # the second sees the first's point held
    for _ in range(2):
        study.enqueue_trial({"lr": 1e-2})
    third, fourth = study.ask(), study.ask()
    assert third.suggest_float("lr", 10 ** -4.5, 0.1, log=True) == fourth.suggest_float("lr", 10 ** -4.5, 0.1, log=True)
    with pytest.raises(budget.SurplusTrial):
        objectives.run_tuning_trial(fourth, study, config, space, None, 1, False)
    assert fourth.user_attrs["surplus"]
