"""The capability study: matched families, predictions that name real labels and their rule, the committed
study's configs and resume, the dry-run estimate, and the report rebuilt from a tiny storage. (The grid
sampler and the halving pruner it tunes with are tested beside their modules: test_tune_samplers.py,
test_tune_pruners.py.)"""
from __future__ import annotations

import dataclasses

import optuna
import pytest
from optuna.trial import TrialState

from studies.ablate.configs import build_ablation_configs
from studies.cli import build_parser
from studies.experiments.capability import cli as capability_cli
from studies.experiments.capability.design import (HEADS, Prediction, applicable, judge, matched_models, model_label,
                                                   predictions, task_variant)
from studies.experiments.capability.plan import ablation_plan, dry_run, main_plan, sizes
from studies.experiments.capability.parts import cost_lines
from studies.experiments.capability.report import (_fmt, _late_gain, build_capability_report,
                                                   capability_line)
from studies.experiments.capability.run import run_study, run_variant, snapshot
from studies.experiments.capability.seeds import load_seeds
from studies.experiments.capability.study import CPU_STUDY, STUDIES, Study, SweepPoint
from studies.presets import get_preset
from studies.tune import objectives
from studies.tune.storage import open_storage
from studies.tune.study import CONFIRM_SEED_OFFSET
from tasks import make_task
from tasks.shortcuts import floor

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY_VARIANT = task_variant("parity", "state_tracking", 6, "tiny", group="cyclic", modulus=2, seq_len=16,
                            min_len_frac=0.5)
TINY_MODELS = (model_label("gateloop_kv", "gateloop", "kv", "test", d_model=16, num_heads=2),
               model_label("gateloop_max", "gateloop", "diagonal", "test", d_model=16, num_heads=None))


def tiny_floor(seeds: tuple[int, ...], seq_len: int | None = None) -> tuple[str, float, str]:
    """The best no-solve baseline of TINY_VARIANT on the held-out rows of `seeds` (at `seq_len`, if given)."""
    task = make_task(TINY_VARIANT.task, **TINY_VARIANT.knobs_dict())
    return floor(task, get_preset("smoke").train["test_size"], seeds, seq_len)


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
    signed = ["gateloop_kv_signed"] if study.protocol == "v2" else []  # study v2 adds the signed real gate
    assert kv == ["gateloop_kv", "gateloop_kv_real", *signed, "gateloop_kv_fixed", "retnet"]
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


@pytest.mark.parametrize("study", list(STUDIES.values()), ids=list(STUDIES))
def test_every_studys_ablations_build(study):
    """Every study's ablation plan builds (the gpu study's once asked for max_heads on its 4-head base, which
    the ablation builder refuses, so its dry run ended in a traceback)."""
    assert ablation_plan(study, "cpu")


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

    monkeypatch.setattr(objectives, "train", no_training)
    run_variant(CPU_STUDY, open_storage(f"sqlite:///{db}"), CPU_STUDY.variant("parity"), "cpu", progress=False)


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

    monkeypatch.setattr(objectives, "train", no_training)
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
    name, score, _ = tiny_floor((CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 1))
    assert sweep[5] == f"| best no-solve baseline | – | – | – | {name} {score:.3f} | – | – |"  # on the sweep's seeds
    main_seeds = load_seeds(open_storage(url), "capability/parity/gateloop_kv/confirm").scores("accuracy")
    assert sweep[4].endswith(f" | 2 | {main_seeds[0]:.3f}, {main_seeds[1]:.3f} |")  # per seed, in seed order
    one = build_capability_report(url, dataclasses.replace(study, sweep_seeds=1), tmp_path / "one")
    sweep = one[one.index("## State-size sweep (parity)"):one.index("## Figures")].splitlines()
    name, score, _ = tiny_floor((CONFIRM_SEED_OFFSET,))
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
    storage = open_storage(url)
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
    for seed in (CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 1):
        assert dataclasses.replace(full, train=dataclasses.replace(full.train, seed=seed)).run_id() == confirm_ids[seed]
    assert {**confirm_config["model"], "phase": "fixed"} == fixed_phase.config.to_dict()["model"]
    text = build_capability_report(url, study, tmp_path / "report")
    table = text[text.index("### parity (accuracy, at the full model's tuned lr)"):].splitlines()
    full = next(line for line in table if line.startswith("| full (gateloop_kv, main confirm seeds) |"))
    assert "| +0.000 |" in full and any(line.startswith("| fixed_phase |") for line in table)
    name, score, _ = tiny_floor((CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 1))
    beyond = tiny_floor((CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 1), 2 * TINY_VARIANT.knobs_dict()["seq_len"])
    assert table[2].endswith("| state | 2× | Δ vs full (1×) |")  # the smoke preset evaluates state tracking at 2×
    # the floors on the 2 ablation seeds, at 1× and at 2×
    assert table[6] == f"| best no-solve baseline | {name} {score:.3f} | – | – | – | – | {beyond[0]} {beyond[1]:.3f} | – |"
    at_2x = load_seeds(storage, "capability-ablate/parity/fixed_phase").scores("accuracy", 2)
    assert f" | {_fmt(at_2x)} | " in next(line for line in table if line.startswith("| fixed_phase |"))


def test_cli_registers_capability_and_refuses_bad_workers():
    args = build_parser().parse_args(["capability", "--workers", "0", "--dry-run"])
    with pytest.raises(SystemExit, match="--workers"):
        args._run(args)


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
    storage = open_storage(f"sqlite:///{live}")
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


def test_a_snapshot_of_another_studys_storage_names_its_preset(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(storage=url, study_name="capability-gpu-sweep/mqar_k4/gateloop_kv@64")
    capability_cli.check_holds_study(url, STUDIES["gpu"])  # its sweep's studies are the gpu study's
    with pytest.raises(ValueError, match=r"holds no study of the capability study `capability` \(studies named "
                                         r"capability/\.\.\.; it holds capability-gpu-sweep/\.\.\.\); pass --preset gpu"):
        capability_cli.check_holds_study(url, CPU_STUDY)


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
    text = "\n".join(cost_lines(storage, CPU_STUDY))
    assert "| main: parity | 2 | 1 | 1.5 | 1.3 | 2026-12-02 10:00 | 2026-12-02 11:00 |" in text
    assert "| sweep | 1 | 0 | 1.5 | 1.5 | 2026-12-02 10:00 | 2026-12-02 11:30 |" in text
    assert "| all | 3 | 1 | 3.0 | 2.8 | – | – |" in text
    assert "main: z3" not in text  # a part without finished trials has no row
