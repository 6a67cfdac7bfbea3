"""The pruners (studies/tune/pruners.py): tolerant successive halving prunes only beyond its margin, never while a
rung is on the task's floor, counts a failed trial once next to its re-queued copy, and records the floor it
prunes against. (Moved here from tests/test_capability.py.)"""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from studies.tune.pruners import SEED_VALUES, PlateauSafeHalvingPruner, TolerantHalvingPruner
from studies.tune.storage import open_storage
from studies.tune.study import open_tuning_study
from tasks.shortcuts import floor

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_seeds(study: optuna.Study, curve: dict[int, float], seed_values: dict[int, list[float]] | None = None) -> TrialState:
    """One trial of `study` that reports `curve` (step -> value), stopping where the pruner says; its state.
    With `seed_values` (step -> each seed's value), they are stored before each report as the tuning
    objective stores them."""
    def objective(trial):
        for step, value in curve.items():
            if seed_values is not None:
                trial.set_user_attr(SEED_VALUES, seed_values[step])
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return curve[max(curve)]
    study.optimize(objective, n_trials=1)
    return study.trials[-1].state


def run_curve(study: optuna.Study, curve: dict[int, float]) -> TrialState:
    return run_seeds(study, curve)


def test_halving_prunes_nothing_while_the_rung_is_on_the_floor():
    """Parity's plateau alternates between the majority levels: a 0.05 gap there is noise, not a verdict.
    With a floor, a rung prunes only once its best is more than 0.1 above it (defaults: margin 0.05)."""
    run = run_curve
    on_floor = optuna.create_study(direction="maximize", pruner=TolerantHalvingPruner(4, 16, floor=0.543))
    assert run(on_floor, {4: 0.602, 8: 0.65, 16: 0.95}) == TrialState.COMPLETE  # mamba's lr 1e-2 on parity
    assert run(on_floor, {4: 0.545, 8: 0.9, 16: 0.99}) == TrialState.COMPLETE  # 0.057 behind: rung best 0.06 up
    assert run(on_floor, {4: 0.95, 8: 0.99, 16: 0.99}) == TrialState.COMPLETE  # one has learned...
    assert run(on_floor, {4: 0.50, 8: 0.5, 16: 0.5}) == TrialState.PRUNED  # ...so one still on the floor stops
    no_floor = optuna.create_study(direction="maximize", pruner=TolerantHalvingPruner(4, 16, margin=0.02))
    run(no_floor, {4: 0.602, 8: 0.65, 16: 0.95})
    assert run(no_floor, {4: 0.545, 8: 0.9, 16: 0.99}) == TrialState.PRUNED  # what happened before the floor rule


def test_halving_does_not_count_a_failed_trial_next_to_its_requeued_copy():
    """A killed trial's rung values are copied into its re-queued copy: counted twice they would make one
    lr the whole top half (with 3 trials: [0.602, 0.602, 0.559] prunes the third; [0.602, 0.559] keeps it,
    within the margin)."""
    pruner = TolerantHalvingPruner(4, 16, margin=0.05, floor=0.4)
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
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study, config, _ = open_tuning_study(storage, "f", "state_tracking", "gateloop", "smoke", ["train.steps=16"], 2,
                                              2, sampler="grid", pruner="sha", grid={"lr": (1e-3, 1e-2)})
    expected = floor(config.task, config.train.test_size, (0, 1))[1]
    assert study.user_attrs["pruner"]["floor"] == round(expected, 6) and study.pruner.floor == expected
    assert study.user_attrs["pruner"]["plateau_margin"] == 0.1


def test_under_v2_the_pruners_floor_reads_the_validation_rows_and_an_older_study_keeps_its_own(tmp_path):
    """No decision reads the rows that report: with a validation set the floor is the best baseline on the
    trials' validation rows (and the study says so); a v2 study stored before that (no "floor_rows") reopens
    with the test-row floor it ran with, so that it resumes unchanged."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    args = (storage, "v", "state_tracking", "gateloop", "smoke", ["train.steps=16", "train.validation_size=100"], None, 2)
    study, config, _ = open_tuning_study(*args, sampler="lr_rule", pruner="safe_sha", no_prune_before=8)
    on_validation = floor(config.task, config.train.test_size, (0, 1), validation_size=100)[1]
    on_test = floor(config.task, config.train.test_size, (0, 1))[1]
    assert on_validation != on_test  # different rows, so the check below can tell them apart
    assert study.pruner.floor == on_validation and study.user_attrs["pruner"]["floor"] == round(on_validation, 6)
    assert study.user_attrs["floor_rows"] == "validation rows of the trials' seeds"
    # An older v2 study: its stored attrs as they were, with the test rows' floor and no floor_rows.
    old = optuna.create_study(storage=storage, study_name="old/state_tracking/gateloop", direction="maximize")
    for key, value in study.user_attrs.items():
        if key != "floor_rows":
            old.set_user_attr(key, {**value, "floor": round(on_test, 6)} if key == "pruner" else value)
    reopened, _, _ = open_tuning_study(*((storage, "old") + args[2:]), sampler="lr_rule", pruner="safe_sha",
                                       no_prune_before=8)
    assert reopened.pruner.floor == on_test and "floor_rows" not in reopened.user_attrs


def test_halving_prunes_only_beyond_the_margin():
    """Rungs at 4 and 8 of a 16-step run: a trial more than 0.02 below the rung's top half stops there;
    one within the margin (plateau noise) continues; nothing is pruned at the last step."""
    study = optuna.create_study(direction="maximize", pruner=TolerantHalvingPruner(4, 16, 2, 0.02))

    def run(curve):
        return run_curve(study, curve)

    assert run({4: 0.33, 8: 0.34, 16: 0.9}) == TrialState.COMPLETE  # alone at every rung
    assert run({4: 0.32, 8: 0.335, 16: 0.4}) == TrialState.COMPLETE  # within 0.02 at both rungs
    assert run({4: 0.25, 8: 0.9, 16: 0.9}) == TrialState.PRUNED  # 0.08 below the best at step 4
    assert run({4: 0.34, 8: 0.30, 16: 0.30}) == TrialState.PRUNED  # fine at 4, 0.04 below at 8
    assert run({4: 0.33, 8: 0.34, 12: 0.34, 16: 0.1}) == TrialState.COMPLETE  # step 16 is no rung


# ------------------------------------------------------------------------- protocol v2: plateau-safe halving


def test_safe_halving_never_prunes_a_trial_with_a_seed_above_the_bar():
    """v1's MQAR case: one seed at 0.991, the other on the 0.25 plateau, mean 0.62 — plain tolerant halving
    prunes it behind a learned trial; the plateau-safe rule keeps it while that seed is at or above the bar."""
    def study(pruner):
        s = optuna.create_study(direction="maximize", pruner=pruner)
        assert run_seeds(s, {4: 0.99, 8: 0.99, 16: 0.99}, {4: [0.99, 0.99], 8: [0.99, 0.99], 16: [0.99, 0.99]}) \
            == TrialState.COMPLETE
        return s

    split = ({4: 0.62, 8: 0.62, 16: 0.99}, {4: [0.991, 0.25], 8: [0.991, 0.25], 16: [0.991, 0.99]})
    assert run_seeds(study(TolerantHalvingPruner(4, 16, floor=0.254)), *split) == TrialState.PRUNED
    assert run_seeds(study(PlateauSafeHalvingPruner(4, 16, floor=0.254)), *split) == TrialState.COMPLETE
    # Every seed below the bar: pruned as before (the rule spares learners, not laggards).
    both_low = ({4: 0.5, 8: 0.5, 16: 0.5}, {4: [0.5, 0.5], 8: [0.5, 0.5], 16: [0.5, 0.5]})
    assert run_seeds(study(PlateauSafeHalvingPruner(4, 16, floor=0.254)), *both_low) == TrialState.PRUNED


def test_safe_halving_has_no_rung_before_the_escape_window():
    """Seeds leave MQAR's plateau as late as step ~6k: with the window at 8 of 16 steps, the rung at 4 is
    gone, and a trial still on the plateau at step 4 that learns by step 8 is never judged at 4."""
    late = ({4: 0.25, 8: 0.99, 16: 0.99}, {4: [0.25, 0.25], 8: [0.99, 0.99], 16: [0.99, 0.99]})
    for pruner, expected in ((TolerantHalvingPruner(4, 16, floor=0.254), TrialState.PRUNED),
                             (PlateauSafeHalvingPruner(4, 16, no_prune_before=8, floor=0.254), TrialState.COMPLETE)):
        s = optuna.create_study(direction="maximize", pruner=pruner)
        run_seeds(s, {4: 0.99, 8: 0.99, 16: 0.99}, {4: [0.99] * 2, 8: [0.99] * 2, 16: [0.99] * 2})
        assert run_seeds(s, *late) == expected
    assert PlateauSafeHalvingPruner(4, 16, no_prune_before=8).min_resource == 8
    assert PlateauSafeHalvingPruner(4, 16, no_prune_before=16).prune  # a window at the end: no rung at all
