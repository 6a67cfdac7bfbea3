"""The samplers (studies/tune/samplers.py): the grid sampler with successive halving over two seeds, a
failed or re-queued grid trial keeps its point, two trials racing for one point leave the later surplus, and
the recorded sampler and pruner survive a budget extension. (Moved here from tests/test_capability.py.)"""
from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from studies.train import EvalRecord, TrainResult
from studies.tune import objectives
from studies.tune.jobs import confirm, tune_models
from studies.tune.optuna_private import trial_id
from studies.tune.samplers import grid_point_taken_before, make_grid_sampler
from studies.tune.storage import open_storage, retry_callback
from studies.tune.study import ModelSpec, open_tuning_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def fake_train(config, on_eval=None, progress=True) -> TrainResult:
    """Accuracy rises to a known function of lr (peak at 1e-3) plus a seed offset: values are checkable."""
    target = 1.0 / (1.0 + (math.log10(config.train.lr) + 3.0) ** 2) - 0.05 * (config.train.seed % 2)
    steps = config.train.steps
    # most of the final value at once, so that the first rung is already above the task's floor (no pruning
    # on the floor: TolerantHalvingPruner)
    history = [EvalRecord(s, 0.0, target * (0.8 + 0.2 * s / steps), 0.0) for s in range(steps // 4, steps + 1, steps // 4)]
    for record in history:
        if on_eval is not None:
            on_eval(record)
    final = {config.task.seq_len: {"accuracy": target, "sequence_accuracy": 0.0}}
    return TrainResult("completed", steps, None, history, final, 100, 200, 10, 0.01, config.to_dict())


def test_grid_sampler_and_sha_pruner_with_two_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(objectives, "train", fake_train)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    grid = {"lr": (1e-4, 1e-3, 1e-2, 3e-2)}
    overrides = ["train.steps=16", "train.eval_every=4"]
    spec = ModelSpec("gl_real", "gateloop", ("mixer.phase=zero",))
    with pytest.raises(ValueError, match="exactly 4 trials"):
        tune_models("mqar", [spec], 3, storage, "g", "smoke", 2, overrides, "cpu", progress=False,
                         sampler="grid", pruner="sha", grid=grid)
    # sampler seed 4 orders the grid so that the best point (1e-3) comes second: the later, worse points
    # meet a learner at the rungs and are pruned (before any learner, a rung on the floor prunes nothing)
    studies = tune_models("mqar", [spec], 4, storage, "g", "smoke", 2, overrides, "cpu", sampler_seed=4,
                               progress=False, task_label="mqar_tiny", sampler="grid", pruner="sha", grid=grid)
    study = studies["gl_real"]
    assert study.study_name == "g/mqar_tiny/gl_real"
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.params["lr"] for t in trials) == sorted(grid["lr"])  # every grid point exactly once
    assert all(set(t.params) == {"lr"} for t in trials)
    assert study.user_attrs["sampler"]["name"].startswith("studies.tune.RetryingGridSampler (optuna.samplers.GridSampler")
    pruner = study.user_attrs["pruner"]
    assert pruner["name"].startswith("studies.tune.TolerantHalvingPruner")
    assert {k: pruner[k] for k in ("min_resource", "max_resource", "reduction_factor", "margin")} == \
        {"min_resource": 4, "max_resource": 16, "reduction_factor": 2, "margin": 0.05}
    assert any(t.state == TrialState.PRUNED for t in trials)  # worse grid points stop at a rung
    for t in trials:
        by_seed = {}
        for m in t.user_attrs["metrics"]:
            by_seed.setdefault(m["seed"], {})[m["step"]] = m["accuracy"]
        # what the pruner saw: at each step the mean over both seeds, never one seed alone
        assert set(by_seed) == {0, 1}
        for step, value in t.intermediate_values.items():
            assert value == pytest.approx(np.mean([by_seed[0][step], by_seed[1][step]]))
        assert t.state == TrialState.PRUNED or t.value == pytest.approx(np.mean(t.user_attrs["accuracies"]))
    assert study.best_trial.params["lr"] == 1e-3
    confirmed = confirm("mqar", [spec], storage, "g", seeds=2, progress=False, task_label="mqar_tiny")
    assert len(confirmed["gl_real"]) == 2  # rebuilt from the stored (grid) space


def test_an_interrupted_grid_trial_has_its_point_tried_again(tmp_path, monkeypatch):
    """Ctrl-C fails the running trial on the spot (no re-queue). The rerun must try that grid point, not
    fill the budget with a duplicate of another (optuna's GridSampler counts a FAILED trial as visited)."""
    calls = {"n": 0}

    def interrupted_once(config, on_eval=None, progress=True):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return fake_train(config, on_eval, progress)

    monkeypatch.setattr(objectives, "train", interrupted_once)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    grid = {"lr": (1e-4, 1e-3, 1e-2)}
    args = ("mqar", ["gateloop"], 3, storage, "g", "smoke", 1, ["train.steps=16", "train.eval_every=4"], "cpu")
    kwargs = dict(progress=False, sampler="grid", pruner="median", grid=grid)
    with pytest.raises(KeyboardInterrupt):
        tune_models(*args, **kwargs)
    study = tune_models(*args, **kwargs)["gateloop"]
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1
    done = [t.params["lr"] for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sorted(done) == sorted(grid["lr"])  # every point once, the interrupted one included


def test_a_requeued_grid_trial_keeps_its_point_and_a_racing_duplicate_is_surplus():
    """A killed worker's trial comes back WAITING (Optuna's retry callback copies its grid id): no new
    trial may take its point meanwhile. A trial whose point is not stored yet holds point `number`."""
    sampler = make_grid_sampler({"lr": (1e-3, 1e-2, 1e-1)}, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    first = study.ask()
    first_lr = first.suggest_float("lr", 1e-4, 1.0, log=True)
    study.tell(first, state=TrialState.FAIL)
    retry = retry_callback()  # the callback the studies install
    retry(study, study.trials[0])  # as for a stale heartbeat
    requeued = study.ask()  # the WAITING copy runs next, with the failed trial's point
    assert requeued.suggest_float("lr", 1e-4, 1.0, log=True) == first_lr
    assert sampler.unvisited_grid_ids(study) == [1, 2]
    # a trial numbered within the grid whose before_trial has not stored its point yet holds point 2
    # (trial numbers 0..2 are taken; a fresh storage-level trial 2 would be grid point 2 by its number)
    others = [study.ask() for _ in range(2)]
    lrs = sorted(t.suggest_float("lr", 1e-4, 1.0, log=True) for t in others)
    assert len(set([first_lr, *lrs])) == 3  # three distinct points, none repeated
    assert not any(grid_point_taken_before(study, t) for t in (requeued, *others))


def test_two_trials_on_one_grid_point_the_later_is_surplus(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, direction="maximize",
                                sampler=make_grid_sampler({"lr": (1e-3, 1e-2)}, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ask() outside optimize() warns about heartbeats
        a, b = study.ask(), study.ask()
    # as if two workers raced: b was given a's point before a's was stored
    storage.set_trial_system_attr(trial_id(b), "grid_id", storage.get_trial_system_attrs(trial_id(a))["grid_id"])
    assert not grid_point_taken_before(study, a) and grid_point_taken_before(study, b)


def test_recorded_tuner_survives_a_budget_extension_and_refuses_another_pruner(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    args = (storage, "e", "mqar", "gateloop", "smoke", ["train.steps=16"])
    open_tuning_study(*args, 4)
    study, _, _ = open_tuning_study(*args, 16)  # TPE's start-up rule is stored as a rule, not a count
    assert study.user_attrs["pruner"]["name"] == "optuna.pruners.MedianPruner"
    with pytest.raises(SystemExit, match="pruner"):
        open_tuning_study(*args, 16, pruner="sha")
