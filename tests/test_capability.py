"""The capability study: matched families, predictions that name real labels, grid + successive-halving
tuning with seed-mean reports, the dry-run estimate, and the report rebuilt from a tiny storage."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from studies import tune
from studies.ablate import build_ablation_configs
from studies.cli import build_parser
from studies.experiments.capability import cli as capability_cli
from studies.experiments.capability.design import (HEADS, Prediction, applicable, judge, matched_models, model_label,
                                                   predictions, task_variant)
from studies.experiments.capability.plan import ablation_plan, dry_run, main_plan, sizes
from studies.experiments.capability.report import _cost_lines, _fmt, _late_gain, build_capability_report, capability_line
from studies.experiments.capability.run import run_study, run_variant, snapshot
from studies.experiments.capability.seeds import load_seeds
from studies.experiments.capability.study import CPU_STUDY, STUDIES, Study, SweepPoint
from studies.presets import get_preset
from tasks import make_task
from tasks.shortcuts import floor
from studies.train import EvalRecord, TrainResult

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY_VARIANT = task_variant("parity", "state_tracking", 6, "tiny", group="cyclic", modulus=2, seq_len=16,
                            min_len_frac=0.5)
TINY_MODELS = (model_label("gateloop_kv", "gateloop", "kv", "test", d_model=16, num_heads=2),
               model_label("gateloop_max", "gateloop", "diagonal", "test", d_model=16, num_heads=None))


def tiny_study(**changes) -> Study:
    """Two models × one smoke-sized task; no sweep point to train (the main size is read from the main part)."""
    base = dict(
        preset="smoke", models=TINY_MODELS, variants=(TINY_VARIANT,),
        predictions=(Prediction("kv_beats_max", "beats", ("parity",), ("gateloop_kv",), ("gateloop_max",), 1, "t"),),
        sweep_variant="parity", sweep=(SweepPoint("gateloop_kv", (("d_model", 16),)),),
        ablation_variants=(), ablations_by_variant=(), ablation_base="gateloop_kv", lr_grid=(1e-3, 1e-2),
        tuning_seeds=2, confirm_seeds=2, sweep_seeds=2, ablation_seeds=2)
    return dataclasses.replace(CPU_STUDY, **{**base, **changes})


# ------------------------------------------------------------------------------------------ the families


@pytest.mark.parametrize("study", list(STUDIES.values()), ids=list(STUDIES))
def test_kv_family_shares_width_heads_and_state(study):
    plan = {item.label: item.config for item in main_plan(study, "cpu") if item.variant == study.variants[0].label}
    kv = [m.label for m in study.models if m.family == "kv"]
    assert kv == ["gateloop_kv", "gateloop_kv_real", "gateloop_kv_fixed", "retnet"]
    widths = {plan[label].mixer.d_model for label in kv}
    heads = {plan[label].mixer.num_heads for label in kv}
    states = {label: sizes(plan[label])[1] for label in kv}
    assert len(widths) == 1 and heads == {HEADS}
    d = widths.pop()
    assert set(states.values()) == {2 * 2 * HEADS * (d // HEADS) ** 2}, states  # 2 layers × 2·H·K·V


@pytest.mark.parametrize("study", list(STUDIES.values()), ids=list(STUDIES))
def test_diagonal_family_state_sizes_as_documented(study):
    plan = {item.label: item.config for item in main_plan(study, "cpu") if item.variant == study.variants[0].label}
    diagonal = [m.label for m in study.models if m.family == "diagonal"]
    d = {plan[label].mixer.d_model for label in diagonal}
    assert len(d) == 1  # one shared width
    d = d.pop()
    for label in diagonal:
        params, state = sizes(plan[label])
        print(f"{study.preset} {label}: d_model={d}, state {state}, params {params}")
        # 2·D per layer everywhere but mamba, whose conv buffer and expand make it 4× (the module docstring)
        assert state == 2 * 2 * d * (4 if label == "mamba" else 1), label


def test_every_prediction_names_existing_variants_and_labels():
    for study in STUDIES.values():
        labels, variants = {m.label for m in study.models}, {v.label for v in study.variants}
        assert study.predictions
        for p in study.predictions:
            assert set(p.variants) <= variants and {*p.winners, *p.losers} <= labels, p.name
    bad = Prediction("typo", "beats", ("parity",), ("gateloop_kv",), ("nosuch",), 1, "t")
    with pytest.raises(ValueError, match="nosuch"):
        dataclasses.replace(CPU_STUDY, predictions=(bad,))


def test_judge_applies_the_rule():
    beats = Prediction("p", "beats", ("v",), ("a",), ("b",), 1, "t")
    high, low = [0.98, 0.99, 1.0], [0.5, 0.52, 0.51]
    assert judge(beats, {("v", "a"): high, ("v", "b"): low}, {"v": 0.5})[0] == "confirmed"
    assert judge(beats, {("v", "a"): low, ("v", "b"): high}, {"v": 0.5})[0] == "refuted"
    assert judge(beats, {("v", "a"): [0.5, 0.9, 0.7], ("v", "b"): low}, {"v": 0.5})[0] == "inconclusive"
    assert judge(beats, {("v", "a"): high}, {"v": 0.5})[0] == "inconclusive"  # no data for b
    fails = Prediction("f", "fails", ("v",), ("a",), (), 1, "t")
    assert judge(fails, {("v", "a"): low}, {"v": 0.5})[0] == "confirmed"
    assert judge(fails, {("v", "a"): high}, {"v": 0.5})[0] == "refuted"
    # One seed has no interval: it decides nothing, however far apart the values are.
    assert judge(beats, {("v", "a"): [1.0], ("v", "b"): low}, {"v": 0.5})[0] == "inconclusive"
    assert judge(fails, {("v", "a"): [0.99]}, {"v": 0.5})[0] == "inconclusive"


# ------------------------------------------------------------------------------------------------ tuning


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


def test_the_studys_mamba_runs_keep_the_torch_scan_and_their_stored_configs():
    """Mamba's default scan became 'auto' after the study's Mamba runs were made with the pure-torch scan:
    the study sets scan='torch', so its configs (and run ids) are those stored in the committed storage."""
    import json
    import sqlite3
    from pathlib import Path

    from studies.config import run_config_from_dict

    db = Path(__file__).resolve().parent.parent / "results" / "capability" / "studies.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "select s.study_name, a.key, a.value_json from trial_user_attributes a join trials t using(trial_id) "
            "join studies s using(study_id) where s.study_name like 'capability/%/mamba/confirm' "
            "and a.key in ('config', 'run_id') and t.state = 'COMPLETE'").fetchall()
    stored: dict[str, dict] = {}
    for name, key, value in rows:
        stored.setdefault(name, {}).setdefault(key, []).append(json.loads(value))
    assert len(stored) >= 3, sorted(stored)
    plan = {item.variant: item.config for item in main_plan(CPU_STUDY, "cpu") if item.label == "mamba"}
    for name, attrs in stored.items():
        variant = name.split("/")[1]
        for config, run_id in zip(attrs["config"], attrs["run_id"]):
            assert "scan" not in config["model"]
            planned = plan[variant]
            train = dataclasses.replace(planned.train, lr=config["train"]["lr"], seed=config["train"]["seed"],
                                        device=config["train"]["device"])
            planned = dataclasses.replace(planned, train=train)
            assert planned.mixer.scan == "torch"
            assert planned.to_dict() == config and planned.run_id() == run_id == run_config_from_dict(config).run_id()


def test_the_committed_study_resumes_its_mamba_confirm_runs_without_training(tmp_path, monkeypatch):
    """Resuming the main part on the committed storage rebuilds every best trial's config from the
    override strings its tuning study stored (made before Mamba's `scan` knob existed, so they do not
    name it) and must find it identical to the stored config: nothing to train, nothing refused."""
    import shutil
    from pathlib import Path

    db = tmp_path / "studies.db"
    shutil.copy(Path(__file__).resolve().parent.parent / "results" / "capability" / "studies.db", db)

    def no_training(*args, **kwargs):
        raise AssertionError("every parity run is stored: a resume must not train")

    monkeypatch.setattr(tune, "train", no_training)
    run_variant(CPU_STUDY, tune.open_storage(f"sqlite:///{db}"), CPU_STUDY.variant("parity"), "cpu", progress=False)


def test_late_gain_tells_plateaued_from_cut_off():
    rising = [(250, 0.3), (500, 0.5), (750, 0.6), (1000, 0.8)]  # 0.6 at 3/4 of 1000 steps, 0.8 at the end
    flat = [(250, 0.3), (500, 0.31), (750, 0.3), (1000, 0.3)]
    solved = [(250, 0.5), (500, 0.995)]  # stopped at the target: not counted
    assert _late_gain([rising, flat, solved], 0.99, 1000) == "+0.100 (2)"  # median of +0.2 and 0.0
    assert _late_gain([flat], 0.99, 1000) == "+0.000 (1)"
    assert _late_gain([solved, [], rising[:2]], 0.99, 1000) == "–"  # rising[:2] ended at step 500


def test_capability_line_says_whether_every_seed_reached_the_target():
    assert "is compared at capability" in capability_line("a", [0.995, 1.0], 0.99)
    line = capability_line("a", [1.0, 0.3], 0.99)
    assert "not at capability" in line and "lowest seed 0.300" in line and "mean 0.650" in line


def test_grid_sampler_and_sha_pruner_with_two_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "train", fake_train)
    storage = tune.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    grid = {"lr": (1e-4, 1e-3, 1e-2, 3e-2)}
    overrides = ["train.steps=16", "train.eval_every=4"]
    spec = tune.ModelSpec("gl_real", "gateloop", ("mixer.phase=zero",))
    with pytest.raises(ValueError, match="exactly 4 trials"):
        tune.tune_models("mqar", [spec], 3, storage, "g", "smoke", 2, overrides, "cpu", progress=False,
                         sampler="grid", pruner="sha", grid=grid)
    # sampler seed 4 orders the grid so that the best point (1e-3) comes second: the later, worse points
    # meet a learner at the rungs and are pruned (before any learner, a rung on the floor prunes nothing)
    studies = tune.tune_models("mqar", [spec], 4, storage, "g", "smoke", 2, overrides, "cpu", sampler_seed=4,
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
    confirmed = tune.confirm("mqar", [spec], storage, "g", seeds=2, progress=False, task_label="mqar_tiny")
    assert len(confirmed["gl_real"]) == 2  # rebuilt from the stored (grid) space


def run_curve(study: optuna.Study, curve: dict[int, float]) -> TrialState:
    """One trial of `study` that reports `curve` (step -> value), stopping where the pruner says; its state."""
    def objective(trial):
        for step, value in curve.items():
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return curve[max(curve)]
    study.optimize(objective, n_trials=1)
    return study.trials[-1].state


def test_halving_prunes_nothing_while_the_rung_is_on_the_floor():
    """Parity's plateau alternates between the majority levels: a 0.05 gap there is noise, not a verdict.
    With a floor, a rung prunes only once its best is more than 0.1 above it (defaults: margin 0.05)."""
    run = run_curve
    on_floor = optuna.create_study(direction="maximize", pruner=tune.TolerantHalvingPruner(4, 16, floor=0.543))
    assert run(on_floor, {4: 0.602, 8: 0.65, 16: 0.95}) == TrialState.COMPLETE  # mamba's lr 1e-2 on parity
    assert run(on_floor, {4: 0.545, 8: 0.9, 16: 0.99}) == TrialState.COMPLETE  # 0.057 behind: rung best 0.06 up
    assert run(on_floor, {4: 0.95, 8: 0.99, 16: 0.99}) == TrialState.COMPLETE  # one has learned...
    assert run(on_floor, {4: 0.50, 8: 0.5, 16: 0.5}) == TrialState.PRUNED  # ...so one still on the floor stops
    no_floor = optuna.create_study(direction="maximize", pruner=tune.TolerantHalvingPruner(4, 16, margin=0.02))
    run(no_floor, {4: 0.602, 8: 0.65, 16: 0.95})
    assert run(no_floor, {4: 0.545, 8: 0.9, 16: 0.99}) == TrialState.PRUNED  # what happened before the floor rule


def test_halving_does_not_count_a_failed_trial_next_to_its_requeued_copy():
    """A killed trial's rung values are copied into its re-queued copy: counted twice they would make one
    lr the whole top half (with 3 trials: [0.602, 0.602, 0.559] prunes the third; [0.602, 0.559] keeps it,
    within the margin)."""
    pruner = tune.TolerantHalvingPruner(4, 16, margin=0.05, floor=0.4)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    failed = study.ask()
    failed.report(0.602, 4)
    assert not failed.should_prune()
    study.tell(failed, state=TrialState.FAIL)
    copy = study.ask()
    copy.report(0.602, 4)
    assert not copy.should_prune()
    study.tell(copy, 0.95)
    third = study.ask()
    third.report(0.559, 4)
    assert not third.should_prune()


def test_sha_tuning_records_the_floor_it_prunes_against(tmp_path):
    storage = tune.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study, config, _ = tune.open_tuning_study(storage, "f", "state_tracking", "gateloop", "smoke", ["train.steps=16"], 2,
                                              2, sampler="grid", pruner="sha", grid={"lr": (1e-3, 1e-2)})
    expected = tune.shortcut_floor(config.task, config.train.test_size, (0, 1))[1]
    assert study.user_attrs["pruner"]["floor"] == round(expected, 6) and study.pruner.floor == expected
    assert study.user_attrs["pruner"]["plateau_margin"] == 0.1


def test_an_interrupted_grid_trial_has_its_point_tried_again(tmp_path, monkeypatch):
    """Ctrl-C fails the running trial on the spot (no re-queue). The rerun must try that grid point, not
    fill the budget with a duplicate of another (optuna's GridSampler counts a FAILED trial as visited)."""
    calls = {"n": 0}

    def interrupted_once(config, on_eval=None, progress=True):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return fake_train(config, on_eval, progress)

    monkeypatch.setattr(tune, "train", interrupted_once)
    storage = tune.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    grid = {"lr": (1e-4, 1e-3, 1e-2)}
    args = ("mqar", ["gateloop"], 3, storage, "g", "smoke", 1, ["train.steps=16", "train.eval_every=4"], "cpu")
    kwargs = dict(progress=False, sampler="grid", pruner="median", grid=grid)
    with pytest.raises(KeyboardInterrupt):
        tune.tune_models(*args, **kwargs)
    study = tune.tune_models(*args, **kwargs)["gateloop"]
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1
    done = [t.params["lr"] for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sorted(done) == sorted(grid["lr"])  # every point once, the interrupted one included


def test_a_requeued_grid_trial_keeps_its_point_and_a_racing_duplicate_is_surplus():
    """A killed worker's trial comes back WAITING (Optuna's retry callback copies its grid id): no new
    trial may take its point meanwhile. A trial whose point is not stored yet holds point `number`."""
    sampler = tune.make_grid_sampler({"lr": (1e-3, 1e-2, 1e-1)}, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    first = study.ask()
    first_lr = first.suggest_float("lr", 1e-4, 1.0, log=True)
    study.tell(first, state=TrialState.FAIL)
    retry = next(iter(tune._retry_callback().values()))  # the callback the studies install (either spelling)
    retry(study, study.trials[0])  # as for a stale heartbeat
    requeued = study.ask()  # the WAITING copy runs next, with the failed trial's point
    assert requeued.suggest_float("lr", 1e-4, 1.0, log=True) == first_lr
    assert sampler._get_unvisited_grid_ids(study) == [1, 2]
    # a trial numbered within the grid whose before_trial has not stored its point yet holds point 2
    # (trial numbers 0..2 are taken; a fresh storage-level trial 2 would be grid point 2 by its number)
    others = [study.ask() for _ in range(2)]
    lrs = sorted(t.suggest_float("lr", 1e-4, 1.0, log=True) for t in others)
    assert len(set([first_lr, *lrs])) == 3  # three distinct points, none repeated
    assert not any(tune.grid_point_taken_before(study, t) for t in (requeued, *others))


def test_two_trials_on_one_grid_point_the_later_is_surplus(tmp_path):
    storage = tune.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, direction="maximize",
                                sampler=tune.make_grid_sampler({"lr": (1e-3, 1e-2)}, seed=0))
    a, b = study.ask(), study.ask()
    # as if two workers raced: b was given a's point before a's was stored
    storage.set_trial_system_attr(b._trial_id, "grid_id", storage.get_trial_system_attrs(a._trial_id)["grid_id"])
    assert not tune.grid_point_taken_before(study, a) and tune.grid_point_taken_before(study, b)


def test_halving_prunes_only_beyond_the_margin():
    """Rungs at 4 and 8 of a 16-step run: a trial more than 0.02 below the rung's top half stops there;
    one within the margin (plateau noise) continues; nothing is pruned at the last step."""
    study = optuna.create_study(direction="maximize", pruner=tune.TolerantHalvingPruner(4, 16, 2, 0.02))

    def run(curve):
        return run_curve(study, curve)

    assert run({4: 0.33, 8: 0.34, 16: 0.9}) == TrialState.COMPLETE  # alone at every rung
    assert run({4: 0.32, 8: 0.335, 16: 0.4}) == TrialState.COMPLETE  # within 0.02 at both rungs
    assert run({4: 0.25, 8: 0.9, 16: 0.9}) == TrialState.PRUNED  # 0.08 below the best at step 4
    assert run({4: 0.34, 8: 0.30, 16: 0.30}) == TrialState.PRUNED  # fine at 4, 0.04 below at 8
    assert run({4: 0.33, 8: 0.34, 12: 0.34, 16: 0.1}) == TrialState.COMPLETE  # step 16 is no rung


# ----------------------------------------------------------------------------------- dry run and report


def test_dry_run_prints_plan_and_estimate():
    study = tiny_study(sweep=(SweepPoint("gateloop_kv", (("d_model", 8),)),), ablation_variants=("parity",),
                       ablations=("full", "real_gates"), budget_hours=0.0)
    text = dry_run(study, workers=2, device="cpu", measure_steps=1)
    lines = [line for line in text.splitlines() if line.startswith("| main | parity |")]
    assert len(lines) == 2 and "| gateloop_kv | kv | 16 |" in lines[0]
    assert "| sweep | parity | gateloop_kv@d_model=8 |" in text
    assert "| ablations | parity | real_gates |" in text
    assert "| ablations | parity | full |" not in text  # its runs are the main study's confirm seeds
    assert "estimated device-hours: main" in text and "wall on 2 worker(s):" in text
    assert "WARNING: the estimate" in text  # the budget is said to be exceeded, nothing refused


def test_rerun_trains_nothing_and_report_builds_from_a_tiny_storage(tmp_path, monkeypatch):
    study = tiny_study()
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_study(study, url, tmp_path, "cpu", None, progress=False, report=False)

    def no_training(*args, **kwargs):
        raise AssertionError("the report must not train")

    monkeypatch.setattr(tune, "train", no_training)
    run_study(study, url, tmp_path, "cpu", None, progress=False, report=False)  # a rerun: all done, resumes
    text = build_capability_report(url, study, tmp_path / "report")
    table = text[text.index("### parity"):].splitlines()
    assert "best no-solve baseline" in table[2]
    rows = [line for line in table if line.startswith("| gateloop_")]
    assert len(rows) >= 2 and all("window_" in row for row in rows[:2])  # the floor column names the shortcut
    assert "last-¼ gain (seeds below target)" in table[2]
    assert any(line.startswith("Best model: gateloop_") for line in table)
    partial = build_capability_report(url, dataclasses.replace(study, confirm_seeds=3), tmp_path / "partial")
    assert "Capability not judged yet: 4 of 6 confirm runs done." in partial and "Best model:" not in partial
    assert "confirm runs still to finish for gateloop_kv on parity, gateloop_max on parity" in partial
    assert "| kv_beats_max | beats | parity |" in text
    lengths = text[text.index("parity beyond the training length"):].splitlines()
    assert lengths[2] == "| model | 2× |"  # the smoke preset evaluates state tracking at 2× only
    assert [line.split(" | ")[0] for line in lengths[4:7]] == ["| gateloop_kv", "| gateloop_max", "| best no-solve baseline"]
    sweep = text[text.index("## State-size sweep (parity)"):text.index("## Figures")].splitlines()
    assert sweep[4].startswith("| gateloop_kv | d_model=16 |")
    name, score, _ = floor(make_task("state_tracking", **dict(TINY_VARIANT.knobs)), get_preset("smoke").train["test_size"],
                           (tune.CONFIRM_SEED_OFFSET, tune.CONFIRM_SEED_OFFSET + 1))
    assert sweep[5] == f"| best no-solve baseline | – | – | – | {name} {score:.3f} | – | – |"  # on the sweep's seeds
    main_seeds = load_seeds(tune.open_storage(url), "capability/parity/gateloop_kv/confirm").scores("accuracy")
    assert sweep[4].endswith(f" | 2 | {main_seeds[0]:.3f}, {main_seeds[1]:.3f} |")  # per seed, in seed order
    one = build_capability_report(url, dataclasses.replace(study, sweep_seeds=1), tmp_path / "one")
    sweep = one[one.index("## State-size sweep (parity)"):one.index("## Figures")].splitlines()
    name, score, _ = floor(make_task("state_tracking", **dict(TINY_VARIANT.knobs)), get_preset("smoke").train["test_size"],
                           (tune.CONFIRM_SEED_OFFSET,))
    assert sweep[4].endswith(f" | 1 | {main_seeds[0]:.3f} |")
    assert sweep[5] == f"| best no-solve baseline | – | – | – | {name} {score:.3f} | – | – |"
    progress = text[text.index("## Progress (main part)"):text.index("## Main table")]
    assert "| parity | gateloop_kv | 2 (" in progress and progress.count("| 2 of 2 |") == 2  # both confirmed
    assert "RetryingGridSampler (optuna.samplers.GridSampler" in text and "TolerantHalvingPruner" in text
    for name in ("report.md", "accuracy_by_model.png", "learning_curves.png", "state_size.png", "extrapolation.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name


def test_ablation_full_row_is_the_main_confirm_study(tmp_path):
    """"full" is not trained again: the ablation table reads the base model's confirm seeds, whose config
    (tuned lr, confirm seeds) is exactly the ablation's, and the Δ column is against them."""
    study = tiny_study(ablation_variants=("parity",), ablations=("full", "fixed_phase"), ablation_seeds=2)
    plan = ablation_plan(study, "cpu", {"parity": 1e-3})
    assert [item.label for item in plan] == ["fixed_phase"]
    url = f"sqlite:///{tmp_path / 's.db'}"
    run_study(study, url, tmp_path, "cpu", None, progress=False, report=False)
    storage = tune.open_storage(url)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert "capability-ablate/parity/fixed_phase" in names and "capability-ablate/parity/full" not in names
    lr = optuna.load_study(study_name="capability/parity/gateloop_kv", storage=storage).best_trial.params["lr"]
    confirm_config = optuna.load_study(study_name="capability/parity/gateloop_kv/confirm",
                                       storage=storage).trials[0].user_attrs["config"]
    (fixed_phase,) = ablation_plan(study, "cpu", {"parity": lr})
    assert confirm_config["train"]["lr"] == lr
    # the claim behind not training "full": its runs would be the confirm runs, id for id
    base = study.model("gateloop_kv")
    overrides = [*study.variant("parity").override_strings(), *base.override_strings()]
    ((_, full),) = build_ablation_configs(["full"], ["state_tracking"], study.preset, 1, overrides, "cpu",
                                          {"state_tracking": lr})
    confirm_ids = {t.user_attrs["seed"]: t.user_attrs["run_id"] for t in optuna.load_study(
        study_name="capability/parity/gateloop_kv/confirm", storage=storage).trials}
    for seed in (tune.CONFIRM_SEED_OFFSET, tune.CONFIRM_SEED_OFFSET + 1):
        assert dataclasses.replace(full, train=dataclasses.replace(full.train, seed=seed)).run_id() == confirm_ids[seed]
    assert {**confirm_config["model"], "phase": "fixed"} == fixed_phase.config.to_dict()["model"]
    text = build_capability_report(url, study, tmp_path / "report")
    table = text[text.index("### parity (accuracy, at the full model's tuned lr)"):].splitlines()
    full = next(line for line in table if line.startswith("| full (gateloop_kv, main confirm seeds) |"))
    assert "| +0.000 |" in full and any(line.startswith("| fixed_phase |") for line in table)
    name, score, _ = floor(make_task("state_tracking", **dict(TINY_VARIANT.knobs)), get_preset("smoke").train["test_size"],
                           (tune.CONFIRM_SEED_OFFSET, tune.CONFIRM_SEED_OFFSET + 1))
    beyond = floor(make_task("state_tracking", **dict(TINY_VARIANT.knobs)), get_preset("smoke").train["test_size"],
                   (tune.CONFIRM_SEED_OFFSET, tune.CONFIRM_SEED_OFFSET + 1), 2 * TINY_VARIANT.knobs_dict()["seq_len"])
    assert table[2].endswith("| state | 2× | Δ vs full (1×) |")  # the smoke preset evaluates state tracking at 2×
    # the floors on the 2 ablation seeds, at 1× and at 2×
    assert table[6] == f"| best no-solve baseline | {name} {score:.3f} | – | – | – | – | {beyond[0]} {beyond[1]:.3f} | – |"
    at_2x = load_seeds(storage, "capability-ablate/parity/fixed_phase").scores("accuracy", 2)
    assert f" | {_fmt(at_2x)} | " in next(line for line in table if line.startswith("| fixed_phase |"))


def test_cli_registers_capability_and_refuses_bad_workers():
    args = build_parser().parse_args(["capability", "--workers", "0", "--dry-run"])
    with pytest.raises(SystemExit, match="--workers"):
        args._run(args)


def test_recorded_tuner_survives_a_budget_extension_and_refuses_another_pruner(tmp_path):
    storage = tune.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    args = (storage, "e", "mqar", "gateloop", "smoke", ["train.steps=16"])
    tune.open_tuning_study(*args, 4)
    study, _, _ = tune.open_tuning_study(*args, 16)  # TPE's start-up rule is stored as a rule, not a count
    assert study.user_attrs["pruner"]["name"] == "optuna.pruners.MedianPruner"
    with pytest.raises(SystemExit, match="pruner"):
        tune.open_tuning_study(*args, 16, pruner="sha")


def test_a_malformed_storage_url_is_one_line_before_anything_runs(capsys):
    from studies.cli import main

    for extra in ([], ["--dry-run"]):  # a dry run measures for minutes: a bad URL is refused before that too
        with pytest.raises(SystemExit, match="testbed capability: --storage 'sqlite//x.db' is not a database URL"):
            main(["capability", "--storage", "sqlite//x.db", "--quiet", *extra])


def test_ctrl_c_is_one_line_with_how_to_resume(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(capability_cli, "run_workers", interrupted)
    args = build_parser().parse_args(["capability", "--workers", "1", "--out", str(tmp_path), "--quiet"])
    with pytest.raises(SystemExit, match="testbed capability: interrupted .*rerun the same command to resume"):
        args._run(args)


def test_snapshot_copies_the_live_storage_consistently_and_refuses_what_it_cannot_copy(tmp_path):
    live = tmp_path / "runs" / "live.db"
    live.parent.mkdir()
    storage = tune.open_storage(f"sqlite:///{live}")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    out = tmp_path / "results"
    url = snapshot(f"sqlite:///{live}", out)
    assert url == f"sqlite:///{(out / 'studies.db').resolve()}" and not list(out.glob("*.partial"))
    copied = optuna.load_study(study_name="s", storage=url)
    assert [t.value for t in copied.trials] == [t.value for t in study.trials]
    for bad, message in [(None, "needs --storage"), ("postgresql://u@h/db", "not one"),
                         (f"sqlite:///{tmp_path / 'nosuch.db'}", "no such file"), (url, "itself")]:
        with pytest.raises(ValueError, match=message):
            snapshot(bad, out)
    args = build_parser().parse_args(["capability", "--snapshot", "--out", str(out)])
    with pytest.raises(SystemExit, match="testbed capability: --snapshot needs --storage"):
        args._run(args)


def test_a_narrowed_prediction_says_what_it_no_longer_judges():
    registered = predictions(("mqar_k4", "mqar_k8", "mqar_k10"))
    kept = {p.name: p for p in applicable(registered, ("parity", "mqar_k4"), ("gateloop_kv", "retnet", "lru"))}
    recall = kept["recall_needs_kv_state"]
    assert recall.variants == ("mqar_k4",) and recall.losers == ("lru",)
    assert recall.not_judged == "variants mqar_k8, mqar_k10; losers gateloop_max, s4d, s5"
    assert "selective_copy_needs_selection" not in kept  # none of its variants is in the study
    assert all(p.not_judged == "" for p in applicable(registered, ("parity", "z3", "mqar_k4", "mqar_k8",
                                                                 "mqar_k10", "s3", "a5", "memory_horizon",
                                                                 "selective_copy"),
                                                      tuple(m.label for m in matched_models(48))))


def test_per_variant_ablations_must_name_an_ablated_variant_and_known_ablations():
    with pytest.raises(ValueError, match="not among ablation_variants"):
        tiny_study(ablations_by_variant=(("parity", ("fixed_phase",)),))
    with pytest.raises(ValueError, match="unknown ablation"):
        tiny_study(ablation_variants=("parity",), ablations_by_variant=(("parity", ("nosuch",)),))


@pytest.mark.parametrize("field", ["sweep_seeds", "ablation_seeds"])
def test_sweep_and_ablation_seeds_are_among_the_confirm_seeds(field):
    # Their main-size points and "full" rows are the first confirm seeds' runs: more seeds than those is refused.
    with pytest.raises(ValueError, match=f"{field}=3 exceeds confirm_seeds=2"):
        tiny_study(**{field: 3})


def test_cost_sums_finished_trial_times_per_part_and_skips_other_studies():
    """The report's cost table: per part, end − start and wall_time summed over complete and pruned trials;
    a failed trial is counted and not timed; another study's trials in the same storage are not counted."""
    from datetime import datetime, timedelta

    storage = optuna.storages.InMemoryStorage()
    t0 = datetime(2026, 12, 2, 10, 0)

    def add(name, state, minutes, wall):
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
        study.add_trial(optuna.trial.FrozenTrial(
            number=0, state=state, value=0.5 if state == TrialState.COMPLETE else None, datetime_start=t0,
            datetime_complete=t0 + timedelta(minutes=minutes), params={}, distributions={},
            user_attrs={"wall_time": wall}, system_attrs={}, intermediate_values={}, trial_id=0))

    add("capability/parity/gateloop_kv", TrialState.COMPLETE, 30, 1680.0)
    add("capability/parity/gateloop_kv/confirm", TrialState.COMPLETE, 60, 3000.0)
    add("capability/parity/gateloop_kv/confirm", TrialState.FAIL, 600, 0.0)
    add("capability-sweep/mqar_k4/lru/d_state=4", TrialState.PRUNED, 90, 5400.0)
    add("capability-gpu/parity/gateloop_kv", TrialState.COMPLETE, 6000, 1.0)  # another study's
    text = "\n".join(_cost_lines(storage, CPU_STUDY))
    assert "| main: parity | 2 | 1 | 1.5 | 1.3 | 2026-12-02 10:00 | 2026-12-02 11:00 |" in text
    assert "| sweep | 1 | 0 | 1.5 | 1.5 | 2026-12-02 10:00 | 2026-12-02 11:30 |" in text
    assert "| all | 3 | 1 | 3.0 | 2.8 | – | – |" in text
    assert "main: z3" not in text  # a part without finished trials has no row
