"""The capability study under protocol v2 (issue 24, "used by the capability study"): a tiny v2 Study — two
task variants at smoke sizes, two models, one ablation — run end to end on a fake trainer, and its report;
the study data's checks; the v2 prediction rule on known answers; and v1's CPU study unchanged, its plan
against the configs the committed storage holds.

The fake trainer (`CapabilityFake`) scores each model's tuning seeds on the validation rows by a peak in
log10(lr): gateloop_kv at -3 (one extension below the start grid, then refined), gateloop_max at -2.3
(interior: refined only), the fixed-phase ablation at -3.6 (two extensions below). On the confirm seeds
gateloop_kv solves every seed and gateloop_max none; at 2× the ablation's seeds split.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from pathlib import Path

import optuna
import pytest
from scipy import stats

from studies.ablate.configs import build_ablation_configs
from studies.experiments.capability.design import Prediction, judge_v2, model_label, task_variant
from studies.experiments.capability.plan import ablation_plan, ablation_specs, dry_run, main_plan, step_ms, sweep_plan
from studies.experiments.capability.report import build_capability_report
from studies.experiments.capability.run import copy_sqlite, model_specs, run_study
from studies.experiments.capability.seeds import floor
from studies.experiments.capability.study import CPU_STUDY, Study, SweepPoint
from studies.stats import solve_rate, solve_rate_test
from studies.tables import human_count
from studies.train import EvalRecord, TrainResult
from studies.tune import objectives
from studies.tune.lr_search import LrSearch, same_lr
from studies.tune.queries import best_lr
from studies.tune.samplers import rule_scores
from studies.tune.storage import as_storage
from studies.tune.study import CONFIRM_SEED_OFFSET, open_confirm_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[1]
STEPS = 500  # the fake trains nothing: steps only place its evaluations and the pruner's rungs
PARITY = task_variant("parity", "state_tracking", STEPS, "tiny parity, read at 2×", group="cyclic", modulus=2,
                      seq_len=16, min_len_frac=0.5, no_prune_before=400, confirm_seeds=6, early_stop=False)
MQAR = task_variant("mqar_tiny", "mqar", STEPS, "tiny MQAR", seq_len=16, vocab=16, num_kv_pairs=2,
                    no_prune_before=200)
MODELS = (model_label("gateloop_kv", "gateloop", "kv", "test", d_model=16, num_heads=2),
          model_label("gateloop_max", "gateloop", "diagonal", "test", d_model=16, num_heads=None))
PEAKS = {"gateloop_kv": -3.0, "gateloop_max": -2.3, "gateloop_kv@fixed_phase": -3.6}  # log10 of the best lr


def tiny_v2(**changes) -> Study:
    base = dict(
        preset="capability", description="tiny v2 test study", models=MODELS, variants=(PARITY, MQAR),
        predictions=(Prediction("kv_beats_max", "beats", ("parity", "mqar_tiny"), ("gateloop_kv",), ("gateloop_max",),
                                1, "t"),
                     Prediction("max_fails_at_2x", "fails", ("parity",), ("gateloop_max",), (), 2, "t")),
        sweep_variant="parity", sweep=(SweepPoint("gateloop_kv", (("d_model", 16),)),), ablation_variants=("parity",),
        ablations=("full", "fixed_phase"), ablations_by_variant=(), ablation_base="gateloop_kv", tuning_seeds=2,
        confirm_seeds=5, sweep_seeds=2, prefix="cap-v2", protocol="v2")
    return dataclasses.replace(CPU_STUDY, **{**base, **changes})


def label_of(config) -> str:
    if config.mixer.num_heads is None:
        return "gateloop_max"
    return "gateloop_kv@fixed_phase" if config.mixer.phase == "fixed" else "gateloop_kv"


def tuning_score(label: str, lr: float, seed: int) -> float:
    """A seed's validation score at `lr`: a peak at the label's best lr, seeds a little apart."""
    return 0.5 + 0.45 / (1 + 16 * (math.log10(lr) - PEAKS[label]) ** 2) + 0.01 * (seed % 2)


def confirm_scores(label: str, seed: int) -> tuple[float, float]:
    """(test score at L, at every longer length) of a confirm seed."""
    if label == "gateloop_max":
        return 0.3 + 0.01 * (seed % 3), 0.3
    if label == "gateloop_kv@fixed_phase":
        return 0.995, 0.99 if seed % 2 == 0 else 0.6
    return 1.0, 0.995


class CapabilityFake:
    """Stands in for studies.train.train under v2: validation scores apart from test scores, curves."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, int, float]] = []  # (variant task, label, lr, seed, target)

    def __call__(self, config, on_eval=None, progress=True) -> TrainResult:
        label, lr, seed, steps = label_of(config), config.train.lr, config.train.seed, config.train.steps
        self.calls.append((config.task_name, label, lr, seed, config.train.target_accuracy))
        if seed < CONFIRM_SEED_OFFSET:
            validation = test = tuning_score(label, lr, seed)
            longer = test
        else:
            test, longer = confirm_scores(label, seed)
            validation = test
        curve = [0.5, 0.5 + 0.6 * (validation - 0.5), validation]
        history = [EvalRecord(s, 1.0 - v, v, 0.0) for s, v in zip((steps // 3, 2 * steps // 3, steps), curve)]
        for record in history:
            if on_eval is not None:
                on_eval(record)
        final = {config.task.seq_len: {"accuracy": test, "sequence_accuracy": 0.0},
                 **{n: {"accuracy": longer, "sequence_accuracy": 0.0} for n in config.eval_lengths}}
        return TrainResult("completed", steps, None, history, final, 100, 200, 10, 0.01, config.to_dict(),
                           validation={"accuracy": validation, "sequence_accuracy": 0.0})


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Study, str, Path, str, CapabilityFake]:
    """(study, storage URL, report directory, report text, fake) of the tiny v2 study run end to end."""
    root = tmp_path_factory.mktemp("capability_v2")
    study, url, fake = tiny_v2(), f"sqlite:///{root / 'studies.db'}", CapabilityFake()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(objectives, "train", fake)
        run_study(study, url, root / "report", "cpu", None, progress=False, report=False)
    text = build_capability_report(url, study, root / "report")
    return study, url, root / "report", text, fake


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def replay(search: LrSearch, stored: dict[float, float]) -> set[float]:
    """The learning rates the rule asks for, one trial at a time, when each scores as stored."""
    scores: dict[float, float] = {}
    while points := search.next_points(scores):
        for lr in points:
            match = [s for tried, s in stored.items() if same_lr(tried, lr)]
            assert match, f"the rule asks for {lr}, which was never tried"
            scores[lr] = match[0]
    return set(scores)


TUNED = [("parity", "gateloop_kv"), ("parity", "gateloop_max"), ("mqar_tiny", "gateloop_kv"),
         ("mqar_tiny", "gateloop_max")]


@pytest.mark.parametrize("prefix,variant,label", [("cap-v2", v, m) for v, m in TUNED]
                         + [("cap-v2-ablate", "parity", "gateloop_kv@fixed_phase")])
def test_each_model_and_ablation_tried_exactly_the_rules_points(ran, prefix, variant, label):
    study, url, *_ = ran
    tuned = load(url, f"{prefix}/{variant}/{label}")
    stored = rule_scores(tuned.get_trials(deepcopy=False))
    assert len(stored) == len(tuned.trials)  # no surplus or failed trial: one worker
    assert {round(math.log10(lr), 6) for lr in replay(study.lr_search, stored)} == \
        {round(math.log10(lr), 6) for lr in stored}
    assert len(stored) <= study.lr_search.max_trials()
    # the rule's best is the fake's peak, to its final resolution (a quarter decade)
    assert abs(math.log10(best_lr(tuned)) - PEAKS[label]) <= 0.125 + 1e-9
    attrs = tuned.user_attrs
    assert attrs["sampler"]["name"].startswith("studies.tune.samplers.LrRuleSampler")
    assert attrs["seeds_per_trial"] == 2 and "validation set (256 rows per seed" in attrs["decision_rows"]
    window = study.variant(variant).no_prune_before
    assert attrs["pruner"]["no_prune_before"] == window
    assert attrs["pruner"]["min_resource"] == max(STEPS // 4, window)


def test_the_ablation_is_tuned_on_its_own_not_at_the_full_models_lr(ran):
    _, url, *_ = ran
    full = best_lr(load(url, "cap-v2/parity/gateloop_kv"))
    ablation = load(url, "cap-v2-ablate/parity/gateloop_kv@fixed_phase")
    # two extensions below the start grid found its peak at 10^-3.6, half a decade from the full model's
    assert len(ablation.trials) == 7 and best_lr(ablation) == pytest.approx(10 ** -3.5)
    assert full == pytest.approx(1e-3)
    names = set(optuna.get_all_study_names(url))
    assert "cap-v2-ablate/parity/gateloop_kv@fixed_phase/confirm" in names
    assert not any(name.startswith("cap-v2-ablate/parity/gateloop_kv@full") for name in names)  # the main study
    confirm_config = load(url, "cap-v2-ablate/parity/gateloop_kv@fixed_phase/confirm").trials[0].user_attrs["config"]
    assert confirm_config["model"]["phase"] == "fixed" and confirm_config["train"]["lr"] == pytest.approx(10 ** -3.5)


def test_confirm_seeds_and_equal_training_per_variant(ran):
    _, url, _, _, fake = ran
    for variant, seeds in (("parity", 6), ("mqar_tiny", 5)):
        for label in ("gateloop_kv", "gateloop_max"):
            trials = load(url, f"cap-v2/{variant}/{label}/confirm").trials
            assert sorted(t.user_attrs["seed"] for t in trials) == list(range(CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + seeds))
            # confirm runs never stop early (target 1.0), on MQAR too, whose tuning trials stop at the preset's
            assert {t.user_attrs["config"]["train"]["target_accuracy"] for t in trials} == {1.0}
            assert {t.user_attrs["config"]["train"]["validation_size"] for t in trials} == {256}
    tuning = [call for call in fake.calls if call[3] < CONFIRM_SEED_OFFSET]
    confirming = [call for call in fake.calls if call[3] >= CONFIRM_SEED_OFFSET]
    # parity's predictions read 2×: its tuning runs train every step too; MQAR's stop at the preset's 0.99
    assert {call[4] for call in tuning if call[0] == "state_tracking"} == {1.0}
    assert {call[4] for call in tuning if call[0] == "mqar"} == {0.99}
    assert {call[4] for call in confirming} == {1.0} and {call[0] for call in confirming} == {"state_tracking", "mqar"}
    ablation = load(url, "cap-v2-ablate/parity/gateloop_kv@fixed_phase/confirm").trials
    assert len(ablation) == 6  # the variant's confirm seeds, like every model there


def test_a_confirm_study_refuses_runs_stopped_at_another_target(ran, tmp_path):
    _, url, *_ = ran
    copy = tmp_path / "studies.db"
    copy_sqlite(Path(url.removeprefix("sqlite:///")), copy)
    storage, spec = as_storage(f"sqlite:///{copy}"), model_specs(tiny_v2(), "mqar_tiny")[0]  # gateloop_kv
    # its runs trained every step; confirming the tuning's config as it stands (stop at 0.99) would mix the two
    with pytest.raises(SystemExit, match=r"cap-v2/mqar_tiny/gateloop_kv/confirm' holds re-trainings with "
                                         r"train.target_accuracy \[1.0\], this command's is 0.99"):
        open_confirm_study(storage, "cap-v2", "mqar", spec, [CONFIRM_SEED_OFFSET], "cpu", "mqar_tiny", every_step=False)
    study, config, _ = open_confirm_study(storage, "cap-v2", "mqar", spec, [CONFIRM_SEED_OFFSET], "cpu", "mqar_tiny",
                                          every_step=True)
    assert config.train.target_accuracy == 1.0 and len(study.trials) == 5


def test_report_shows_per_seed_scores_solve_rates_and_the_v2_verdicts(ran):
    _, _, out, text, _ = ran
    assert text.startswith("# Capability study `cap-v2` (protocol v2, preset `capability`)")
    assert "| parity | state_tracking | 500 | 400 | 6 | every step (equal training) | full, fixed_phase |" in text
    assert "| mqar_tiny | mqar | 500 | 200 | 5 | tuning stops at 0.99, confirm every step | – |" in text
    assert "## Main part" in text and "### Tuning report: `cap-v2`" in text
    assert "per seed (seeds 1000–1005)" in text and "per seed (seeds 1000–1004)" in text
    assert "6/6 [0.54, 1.00]" in text and "0/6 [0.00, 0.46]" in text  # solve rates with exact intervals
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith(("| kv_beats_max", "| max_fails_at_2x"))}
    # confirmed on both variants; the evidence names the comparison with the largest p: MQAR's 5/5 against 0/5
    # (the seeds together split, so solve rates: Boschloo's one-sided p = 0.5^10)
    assert "**confirmed**" in rows["kv_beats_max"]
    assert "on mqar_tiny: solved 5/5 [0.48, 1.00] vs 0/5 [0.00, 0.52], Boschloo, p=0.000977" in rows["kv_beats_max"]
    assert "**confirmed**" in rows["max_fails_at_2x"] and "6 of 6 seeds below" in rows["max_fails_at_2x"]
    assert "Rule: Protocol v2" in text and "one-sided" in text
    ablations = text[text.index("## Ablations"):]
    assert "gateloop_kv@fixed_phase" in ablations and "| gateloop_kv |" in ablations  # the full model, reference
    assert "0.995, 0.995, 0.995, 0.995, 0.995, 0.995" in ablations  # the ablation's confirm seeds, each shown
    assert "## State-size sweep (parity)" in text and "## Cost" in text
    for part in ("main", "ablations"):
        for name in ("report.md", "trials.jsonl", "confirm.jsonl", "lr_sensitivity.png", "scores_by_model.png"):
            assert (out / part / name).stat().st_size > 0, (part, name)
        assert f"![lr_sensitivity]({part}/lr_sensitivity.png)" in text
    assert (out / "report.md").read_text() == text


def test_at_a_glance_reads_each_length_a_prediction_reads_with_its_floor(ran):
    study, url, out, text, _ = ran
    section = text[text.index("## At a glance"):text.index("## Pre-registered predictions")]
    table = [line for line in section.splitlines() if line.startswith("|")]
    # kv_beats_max reads parity and MQAR at 1×, max_fails_at_2x parity at 2×: three columns, variants in order.
    assert table[0] == "| model | family | state | params | parity @1×L | parity @2×L | mqar_tiny @1×L |"
    rows = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in table[2:]}
    max_scores = [confirm_scores("gateloop_max", seed)[0] for seed in range(CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 6)]
    assert rows["gateloop_kv"][4:] == ["6/6 · 1.000", "6/6 · 0.995", "5/5 · 1.000"]
    assert rows["gateloop_max"][4:] == [f"0/6 · {sum(max_scores) / 6:.3f}", "0/6 · 0.300",
                                        f"0/5 · {sum(max_scores[:5]) / 5:.3f}"]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:  # state and parameters as the runs stored them
        stored = dict(db.execute("SELECT key, value_json FROM trial_user_attributes WHERE key IN "
                                 "('state_size', 'num_parameters') AND trial_id = (SELECT MIN(trial_id) FROM trials "
                                 "JOIN studies USING (study_id) WHERE study_name = 'cap-v2/parity/gateloop_max')"))
    assert rows["gateloop_max"][2] == human_count(int(stored["state_size"]))
    assert rows["gateloop_max"][3].split("–")[0] == human_count(int(stored["num_parameters"]))
    floors = [floor(study, "parity", 1, 6)[1], floor(study, "parity", 2, 6)[1], floor(study, "mqar_tiny", 1, 5)[1]]
    assert rows["*floor*"][4:] == [f"{f:.3f}" for f in floors]
    assert (out / "headline.png").stat().st_size > 10_000 and "![headline](headline.png)" in section
    # Capability: gateloop_kv, the best at L, solved every seed of both variants.
    assert "- parity: best gateloop_kv, mean 1.000, lowest seed 1.000: every seed reached 0.99" in section
    assert "- mqar_tiny: best gateloop_kv, mean 1.000, lowest seed 1.000: every seed reached 0.99" in section


def test_capability_is_judged_once_every_seed_is_in_and_says_when_not_reached(ran):
    study, _, _, _, _ = ran
    from studies.experiments.capability.report_v2 import capability_lines

    def row(model, seed, score):
        return {"task": "parity", "model": model, "seed": seed, "accuracy": score, "target": 0.99}

    seeds = range(CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 6)
    rows = [row("gateloop_kv", s, 0.995 if s % 3 else 0.9) for s in seeds] + [row("gateloop_max", s, 0.5) for s in seeds]
    lines = capability_lines(study, rows)
    mean = (4 * 0.995 + 2 * 0.9) / 6  # seeds 1002 and 1005 at 0.9
    assert (f"- parity: best gateloop_kv, mean {mean:.3f}, lowest seed 0.900: **not** every seed reached 0.99: its "
            f"gaps are gaps at this step budget") in lines
    assert "- mqar_tiny: not judged yet (0 of 10 confirm seeds in)" in lines
    assert "- parity: not judged yet (11 of 12 confirm seeds in)" in capability_lines(study, rows[:-1])


def test_a_rerun_trains_nothing(ran, monkeypatch, tmp_path):
    study, url, *_ = ran

    def no_training(*args, **kwargs):
        raise AssertionError("every run is stored: a resume must not train")

    monkeypatch.setattr(objectives, "train", no_training)
    run_study(study, url, tmp_path, "cpu", None, progress=False, report=False)


def test_dry_run_says_protocol_v2_and_the_rules_upper_bound():
    study = tiny_v2()
    text = dry_run(study, workers=2, device="cpu", measure_steps=1)
    assert text.startswith("capability study `capability`, protocol v2: tiny v2 test study")
    assert "at most 8 trials per model (an upper bound, LrSearch.max_trials)" in text
    assert "| main | parity | gateloop_kv | kv | 16 |" in text
    assert "| 22 (≤ 8 rule trials × 2 seeds + 6 confirm seeds) |" in text
    assert "| 21 (≤ 8 rule trials × 2 seeds + 5 confirm seeds) |" in text
    assert "| ablations | parity | gateloop_kv@fixed_phase | ablation | 16 |" in text
    assert "every tuned model or ablation the rule's most trials, 8" in text
    print(text)


def test_dry_run_times_gateloop_in_its_slower_exact_form(monkeypatch):
    """A fresh GateLoop's gates take the chunked engine's cheaper direct form, trained ones the split form:
    the step the dry run bounds a run with is the split form's (the direct form, refused here, is never run)."""
    from gateloop import chunked

    def refuse(*args, **kwargs):
        raise AssertionError("the dry run timed the direct form")

    monkeypatch.setattr(chunked, "_direct_terms", refuse)
    config = main_plan(tiny_v2(), "cpu")[0].config
    assert config.mixer.mode == "chunked" and step_ms(config, steps=1) > 0
    assert "GateLoop's chunked engine in its slower exact form" in dry_run(tiny_v2(), 1, "cpu", 1, labels=("gateloop_kv",))


def test_ablation_specs_train_what_the_ablation_builder_builds():
    study = tiny_v2(ablations=("full", "fixed_phase", "no_output_gate", "fixed_all"))
    specs = {spec.label: (spec, config) for spec, config in ablation_specs(study, "parity", "cpu")}
    # "full" (the base itself) is the main study's model: not tuned again
    assert set(specs) == {"gateloop_kv@fixed_phase", "gateloop_kv@no_output_gate", "gateloop_kv@fixed_all"}
    base = study.model("gateloop_kv")
    built = dict(build_ablation_configs(["no_output_gate", "fixed_all"], ["state_tracking"], "capability", 1,
                                        [*study.overrides(PARITY), *base.override_strings()], "cpu"))
    for name in ("no_output_gate", "fixed_all"):
        spec, config = specs[f"gateloop_kv@{name}"]
        assert config.to_dict() == built[name].to_dict() and spec.model == "gateloop"
    assert "mixer.output_gate=False" in specs["gateloop_kv@no_output_gate"][0].overrides
    assert all("/" not in label for label in specs)  # a study name PREFIX-ablate/VARIANT/LABEL the report reads


# ------------------------------------------------------------------------------------------ study data


@pytest.mark.parametrize("change,fragment", [
    (dict(confirm_seeds=4), "at least 5 fresh seeds"),
    (dict(variants=(dataclasses.replace(PARITY, confirm_seeds=3), MQAR)), "'parity': 3"),
    (dict(tuning_seeds=1), "at least 2 seeds"),
    (dict(protocol="v3"), "protocol='v3'"),
    (dict(predictions=(Prediction("far", "beats", ("mqar_tiny",), ("gateloop_kv",), ("gateloop_max",), 3, "t"),)),
     "never evaluates"),
    (dict(protocol="v1"), "protocol v2's"),  # v1 declares no escape window, confirm seeds or early stop
])
def test_study_data_is_checked(change, fragment):
    with pytest.raises(ValueError, match=fragment):
        tiny_v2(**change)


def test_a_variants_window_lies_within_its_steps():
    with pytest.raises(ValueError, match=r"no_prune_before=600 must be a step in \[0, 500\]"):
        dataclasses.replace(PARITY, no_prune_before=600)
    assert PARITY.override_strings()[-1] == "train.target_accuracy=1.0" and "train.target_accuracy" not in \
        " ".join(MQAR.override_strings())


# -------------------------------------------------------------------------------------- rule of v2


SEEDS = range(CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 8)


def by_seed(values: list[float]) -> dict[int, float]:
    return dict(zip(SEEDS, values))


def verdict(kind: str, winners: dict[int, float], losers: dict[int, float] | None = None, floor: float = 0.5):
    p = Prediction("p", kind, ("v",), ("a",), ("b",) if kind == "beats" else (), 1, "t")
    scores = {("v", "a"): winners, **({("v", "b"): losers} if losers is not None else {})}
    return judge_v2(p, scores, {"v": floor}, {"v": 0.99})


def test_beats_where_no_seed_splits_reads_the_paired_test_one_sided():
    # Neither model solves a seed (no seed reaches 0.99): their seeds do not split, so the paired test decides.
    high, low = [0.95, 0.93, 0.97, 0.94, 0.96], [0.5, 0.52, 0.51, 0.5, 0.55]
    got = verdict("beats", by_seed(high), by_seed(low))
    assert got[0] == "confirmed" and "p=0.0312" in got[1]  # all 5 pairs for the winner: 1/2^5, one-sided
    assert verdict("beats", by_seed(low), by_seed(high))[0] == "refuted"
    # 4 pairs cannot reach 0.05 (1/16): a sample too small to decide anything
    assert verdict("beats", by_seed(high[:4]), by_seed(low[:4]))[0] == "inconclusive"
    # both solve every seed: equal by the rule, whatever the third decimal says
    assert verdict("beats", by_seed([1.0] * 5), by_seed([0.995] * 5)) == \
        ("inconclusive", "a vs b on v: both solve every seed (5 and 5), p=1")


def test_beats_where_seeds_split_reads_boschloos_test_of_the_solve_rates():
    winner, loser = [1.0] * 8, [1.0, 0.3, 0.995, 0.3, 0.3, 0.3, 0.3, 0.3]
    p = stats.boschloo_exact([[8, 0], [2, 6]], alternative="greater").pvalue
    assert solve_rate_test(solve_rate(winner, 0.99), solve_rate(loser, 0.99), "greater") == pytest.approx(p)
    got = verdict("beats", by_seed(winner), by_seed(loser))
    assert got[0] == "confirmed" and "solved 8/8 [0.63, 1.00] vs 2/8 [0.03, 0.65], Boschloo" in got[1]
    assert verdict("beats", by_seed(loser), by_seed(winner))[0] == "refuted"


def test_fails_reads_the_exact_sign_test_against_floor_plus_margin():
    assert verdict("fails", by_seed([0.5, 0.52, 0.55, 0.5, 0.58]))[0] == "confirmed"  # 5 of 5 below 0.6
    assert verdict("fails", by_seed([0.9, 0.95, 0.99, 0.7, 0.8]))[0] == "refuted"
    assert verdict("fails", by_seed([0.5, 0.52, 0.9, 0.5, 0.95]))[0] == "inconclusive"  # 3 of 5: p = 0.5
    assert verdict("fails", by_seed([0.5] * 7 + [0.9]))[0] == "confirmed"  # 7 of 8: p = 9/256
    assert verdict("fails", {})[0] == "inconclusive"


# ----------------------------------------------------------------------------------------- v1 unchanged


def test_v1_cpu_study_plans_exactly_the_committed_runs():
    """CPU_STUDY (protocol v1) is untouched: its overrides are its variants', and every planned config of the
    main part, the sweep and the ablations is the one the committed storage trained (at its stored lr,
    seed and device), with the v1 run counts."""
    assert CPU_STUDY.protocol == "v1" and all(CPU_STUDY.overrides(v) == v.override_strings() for v in CPU_STUDY.variants)
    db = REPO / "results" / "capability" / "studies.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        trials = connection.execute(
            "select s.study_name, a.value_json from trial_user_attributes a join trials t using(trial_id) "
            "join studies s using(study_id) where a.key = 'config' and t.state = 'COMPLETE'").fetchall()
    stored: dict[str, dict] = {}
    for name, value in trials:
        stored.setdefault(name, json.loads(value))

    def same(planned, config) -> bool:
        train = dataclasses.replace(planned.train, lr=config["train"]["lr"], seed=config["train"]["seed"],
                                    device=config["train"]["device"])
        return dataclasses.replace(planned, train=train).to_dict() == config

    main = main_plan(CPU_STUDY, "cpu")
    assert {item.runs for item in main} == {11} and len(main) == 32
    for item in main:
        assert same(item.config, stored[f"capability/{item.variant}/{item.label}/confirm"]), (item.variant, item.label)
    for item in sweep_plan(CPU_STUDY, "cpu"):
        label, size = item.label.split("@")
        assert item.runs == 3 and same(item.config, stored[f"capability-sweep/{item.variant}/{label}/{size}"]), item.label
    ablations = ablation_plan(CPU_STUDY, "cpu")
    assert [(item.variant, item.label, item.runs) for item in ablations] == [
        (v, a, 3) for v in ("parity", "z3") for a in ("fixed_magnitude", "fixed_phase", "unit_magnitude")] + [
        ("mqar_k4", a, 3) for a in ("fixed_magnitude", "fixed_phase", "unit_magnitude", "modulus_sigmoid",
                                    "no_output_gate")]
    for item in ablations:
        name = f"capability-ablate/{item.variant}/{item.label}"
        if name in stored:  # the ablations the committed storage has run so far
            assert same(item.config, stored[name]), name


# ------------------------------------------------------------------------------------------------ study v2


def test_study_v2_holds_what_issue_25_asks():
    """The v2 study's data: every named model at matched state (signed real gates on GateLoop's engine, S4D, S5,
    mamba's d_state 16 as a labelled reference), the (a)-(c) variants in priority order, 8 confirm seeds,
    equal training wherever a prediction reads another length, the Mamba-2/3 layout among its ablations."""
    from studies.experiments.capability.study import CPU_STUDY_V2 as V2

    assert V2.protocol == "v2" and V2.prefix == "capability-v2" and V2.validation_size > 0
    assert [m.label for m in V2.models] == [
        "gateloop_kv", "gateloop_kv_real", "gateloop_kv_signed", "gateloop_kv_fixed", "retnet", "gateloop_max",
        "gateloop_max_signed", "lru", "s4d", "s5", "mamba", "mamba_d16", "attention"]
    assert dict(V2.model("gateloop_kv_signed").overrides)["phase"] == "sign"
    assert dict(V2.model("gateloop_max_signed").overrides) == {"d_model": 48, "num_heads": None, "phase": "sign"}
    assert V2.model("mamba_d16").family == "reference" and dict(V2.model("mamba_d16").overrides)["d_state"] == 16
    assert [v.label for v in V2.variants] == ["parity", "z3", "selective_copy", "mqar_k4", "induction_heads", "s3"]
    assert all(V2.confirm_seeds_for(v.label) >= 8 for v in V2.variants)
    for p in V2.predictions:
        if p.multiplier != 1:  # read beyond the training length: every model trains every step there
            assert not any(V2.variant(v).early_stop for v in p.variants), p.name
    assert "head_magnitude" in V2.ablations and set(V2.ablation_variants) == {"parity", "z3", "mqar_k4"}
    # The plan builds: each variant's models once, each ablation a model of its own, no sweep.
    main = main_plan(V2, "cpu")
    assert len(main) == sum(len(V2.models_for(v.label)) for v in V2.variants) and not sweep_plan(V2, "cpu")
    for v in ("parity", "z3", "selective_copy", "mqar_k4"):  # priority (a): every matched model
        assert {m.label for m in V2.models if m.family != "reference"} <= {m.label for m in V2.models_for(v)}
    assert "mamba_d16" in {m.label for m in V2.models_for("mqar_k4")}
    signed = next(item.config for item in main if item.label == "gateloop_kv_signed")
    assert signed.mixer.phase == "sign" and signed.mixer.num_heads == 4 and signed.train.validation_size > 0
    labels = {item.label for item in ablation_plan(V2, "cpu")}
    assert labels == {"gateloop_kv@head_magnitude", "gateloop_kv@fixed_magnitude", "gateloop_kv@fixed_phase"}


def test_a_variant_runs_only_its_declared_models_and_a_prediction_only_compares_those():
    study = tiny_v2(variants=(dataclasses.replace(PARITY, models=("gateloop_kv",)), MQAR),
                    predictions=(Prediction("kv_beats_max", "beats", ("mqar_tiny",), ("gateloop_kv",), ("gateloop_max",),
                                            1, "t"),))
    assert [m.label for m in study.models_for("parity")] == ["gateloop_kv"]
    assert [(i.variant, i.label) for i in main_plan(study, "cpu")] == [
        ("parity", "gateloop_kv"), ("mqar_tiny", "gateloop_kv"), ("mqar_tiny", "gateloop_max")]
    with pytest.raises(ValueError, match=r"compares \['gateloop_max'\] on parity, which does not run them"):
        tiny_v2(variants=(dataclasses.replace(PARITY, models=("gateloop_kv",)), MQAR))
    with pytest.raises(ValueError, match=r"variant parity runs unknown models \['nosuch'\]"):
        tiny_v2(variants=(dataclasses.replace(PARITY, models=("nosuch",)), MQAR))
