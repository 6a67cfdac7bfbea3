"""The tuning report under protocol v2 (issue 24 parts 2 and 5): per-seed test scores, bootstrap and exact
intervals inside [0, 1], solve rates where seeds split, paired exact tests with their smallest attainable p,
Holm, plateau-escape survival, the learning-rate sensitivity figure — all rebuilt from the jsonl alone — while
v1 studies render as before (tests/test_results_consistency.py rebuilds the committed v1 reports).

One storage is made for the module by `testbed tune` (protocol v2, the default) with the fake trainer below:
gateloop peaks at lr 1e-3 (inside the rule's search), attention at 0.1 (its upper bound); on the confirm
seeds every gateloop seed solves mqar while attention's odd seeds stay on the plateau.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest
from test_tune import TINY, FakeTrain, fake_accuracy

from studies import cli
from studies.atomic_io import read_jsonl
from studies.stats import holm, paired_permutation, solve_rate, solve_rate_test
from studies.train import EvalRecord, TrainResult
from studies.tune import objectives, queries, samplers
from studies.tune import report as report_mod
from studies.tune import report_figures, report_rows, report_tables
from studies.tune.study import CONFIRM_SEED_OFFSET

optuna.logging.set_verbosity(optuna.logging.WARNING)

PREFIX = "v2"
SEEDS = list(range(CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + 5))


class SplitTrain(FakeTrain):
    """FakeTrain as protocol v2 sees it: a validation score apart from the test score, and learning curves.

    Tuning seeds: the validation score peaks at lr 1e-3 (gateloop) or 0.1 (attention), the test score is
    0.01 lower. Confirm seeds: gateloop solves every seed (escaping the plateau at step 4 on even seeds,
    8 on odd ones); attention solves its even seeds (escaping at step 12) and leaves its odd seeds on the
    plateau. Longer lengths score 0.8 of the training length."""

    def __call__(self, config, on_eval=None, progress=True) -> TrainResult:
        lr, seed, steps = config.train.lr, config.train.seed, config.train.steps
        self.calls.append((lr, seed))
        if seed < CONFIRM_SEED_OFFSET:
            score = fake_accuracy(lr if config.model == "gateloop" else lr / 100) * (0.97 + 0.01 * (seed % 2))
            curve = [0.5 * score, 0.8 * score, score]
        elif config.model == "gateloop":
            score = 0.999 - 0.001 * (seed % 5)
            curve = [0.9, 1.0, score] if seed % 2 == 0 else [0.55, 0.9, score]
        elif seed % 2 == 0:
            score, curve = 0.992, [0.5, 0.6, 0.992]
        else:
            score = 0.55 + 0.01 * (seed % 3)
            curve = [0.5, 0.52, score]
        history = [EvalRecord(s, 1.0 - v, v, 0.0) for s, v in zip((steps // 3, 2 * steps // 3, steps), curve)]
        for record in history:
            if on_eval is not None:
                on_eval(record)
        test = score - 0.01 if seed < CONFIRM_SEED_OFFSET else score
        length = config.task.seq_len
        final = {length: {"accuracy": test, "sequence_accuracy": 0.0},
                 2 * length: {"accuracy": 0.8 * test, "sequence_accuracy": 0.0}}
        return TrainResult("completed", steps, None, history, final, 100, 200, 10, 0.01, config.to_dict(),
                           validation={"accuracy": score, "sequence_accuracy": 0.0})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[str, Path, str]:
    """(storage URL, report directory, report text) of gateloop and attention tuned and confirmed under v2."""
    root = tmp_path_factory.mktemp("v2")
    url = f"sqlite:///{root / 'studies.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(objectives, "train", SplitTrain())
        assert cli.main(["tune", "--task", "mqar", "--models", "gateloop,attention", "--preset", "smoke",
                         "--final-seeds", "5", "--quiet", "--storage", url, "--study-prefix", PREFIX, *TINY]) == 0
    text = report_mod.build_report(url, PREFIX, root / "report")
    return url, root / "report", text


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def confirmed(url: str, model: str) -> dict[int, optuna.trial.FrozenTrial]:
    return queries.earliest_by_seed(load(url, f"{PREFIX}/mqar/{model}/confirm"))


def table_rows(text: str, task: str = "mqar") -> dict[str, list[str]]:
    """The cells of each row of a task's table, by its first cell."""
    section = text.split(f"### {task}\n\n", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_v2_table_shows_each_seed_its_intervals_and_solve_rates(tuned):
    url, _, text = tuned
    rows = table_rows(text)
    assert list(rows) == ["*floor: most_frequent_value*", "gateloop", "attention"]  # the reference first
    for model in ("gateloop", "attention"):
        scores = [t.value for t in confirmed(url, model).values()]
        assert len(scores) == 5
        cell = rows[model]["per seed (seeds 1000–1004)"]
        assert cell == ", ".join(f"{s:.3f}" for s in scores)  # the stored test scores, in seed order
        assert rows[model]["test score, mean [95% bootstrap CI]"].startswith(f"{sum(scores) / 5:.3f} [")
    # Attention's seeds split at 0.99: 3 of 5 solved, with the Clopper–Pearson interval of 3/5
    # (0.1466, 0.9473: the textbook value); gateloop solved all 5 (exact interval [0.478, 1]).
    assert rows["attention"]["solved (≥ 0.99), k/n [95% exact CI]"] == "3/5 [0.15, 0.95]"
    assert rows["gateloop"]["solved (≥ 0.99), k/n [95% exact CI]"] == "5/5 [0.48, 1.00]"
    # Every interval of the report's tables lies inside [0, 1].
    tables = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    intervals = [(float(a), float(b)) for a, b in re.findall(r"\[(-?[\d.]+), (-?[\d.]+)\]", tables)]
    assert intervals and all(0 <= a <= b <= 1 for a, b in intervals)
    # Longer lengths with their own interval, and the floor there.
    assert rows["gateloop"]["@2×L, mean [95% CI]"].startswith(
        f"{0.8 * sum(t.value for t in confirmed(url, 'gateloop').values()) / 5:.3f} [")
    assert re.fullmatch(r"0\.\d{3}", rows["*floor: most_frequent_value*"]["@2×L, mean [95% CI]"])
    assert "Welch" not in text and "MWU" not in text


def test_v2_comparisons_are_paired_exact_and_holm_corrected(tuned):
    url, _, text = tuned
    ref = {s: t.value for s, t in confirmed(url, "gateloop").items()}
    other = {s: t.value for s, t in confirmed(url, "attention").items()}
    p = holm([paired_permutation([ref[s] for s in SEEDS], [other[s] for s in SEEDS])])[0]
    row = table_rows(text)["attention"]
    assert row["p vs gateloop: paired sign-flip on scores (Holm)"] == f"p={p:.3g} (min 0.0625, 5 pairs)"
    boschloo = solve_rate_test(solve_rate(list(ref.values()), 0.99), solve_rate(list(other.values()), 0.99))
    assert row["p vs gateloop: solve rate, Boschloo (Holm)"] == f"p={boschloo:.3g}"
    assert "gateloop vs attention: **solve rate** (seeds split at 0.99)" in text
    assert table_rows(text)["gateloop"]["p vs gateloop: paired sign-flip on scores (Holm)"] == "–"


def test_holm_runs_over_a_tasks_comparisons():
    """A third model (rows made by hand): each column's p-values are the Holm adjustment of the raw ones."""
    def rows_of(model: str, scores: list[float]) -> list[dict]:
        return [{"task": "t", "model": model, "seed": s, "accuracy": v, "target": 0.99, "escaped": None,
                 "escape_step": None} for s, v in zip(SEEDS, scores)]

    ref, a, b = [1.0, 0.995, 1.0, 0.999, 1.0], [0.2, 0.3, 0.25, 0.31, 0.22], [0.99, 0.5, 0.992, 0.6, 0.4]
    rows = rows_of("gateloop", ref) + rows_of("a", a) + rows_of("b", b)
    got = {c["model"]: c for c in report_tables.v2_comparisons("t", rows, "gateloop")}
    raw = [paired_permutation(ref, a), paired_permutation(ref, b)]
    assert [got["a"]["paired_p"], got["b"]["paired_p"]] == pytest.approx(holm(raw))
    # With the reference's, both models' seeds split (a: 0/5 against 5/5, the case a paired test on 5 seeds
    # cannot resolve below 0.0625; b: 2/5): two solve-rate tests, Holm over both.
    raw = [solve_rate_test(solve_rate(ref, 0.99), solve_rate(x, 0.99)) for x in (a, b)]
    assert [got["a"]["solve_p"], got["b"]["solve_p"]] == pytest.approx(holm(raw))
    assert got["a"]["primary"] == got["b"]["primary"] == "solve rate"
    # Where every seed of both is solved (or none is), the paired test on scores is primary.
    both = rows_of("gateloop", ref) + rows_of("c", [0.995, 1.0, 0.999, 0.99, 1.0])
    (c,) = report_tables.v2_comparisons("t", both, "gateloop")
    assert math.isnan(c["solve_p"]) and c["primary"] == "paired test on scores"


def test_v2_header_states_the_protocol_the_studies_stored(tuned):
    url, _, text = tuned
    attrs = load(url, f"{PREFIX}/mqar/gateloop").user_attrs
    assert f"- Decision rows: {attrs['decision_rows']}." in text
    assert "start grid 0.001, 0.00316, 0.01 (decades -3, -2.5, -2)" in text
    assert "bounds [3.16e-05, 0.1] (decades [-4.5, -1])" in text and "at most 0.25 decades away" in text
    assert f"no rung before step {attrs['pruner']['no_prune_before']} (the escape window)" in text
    assert "- Seeds per tuning trial: 2" in text
    assert "- Confirm seeds: 1000–1004 (5 per model)" in text


def test_tuned_lr_and_a_best_at_a_bound_are_marked(tuned):
    url, _, text = tuned
    rows = table_rows(text)
    assert rows["gateloop"]["lr (rule's best)"] == f"{queries.best_lr(load(url, f'{PREFIX}/mqar/gateloop')):.3g}"
    attention = load(url, f"{PREFIX}/mqar/attention")
    assert queries.best_lr(attention) == pytest.approx(0.1)
    assert queries.stored_search(attention).at_bound(samplers.rule_scores(attention.trials))
    assert rows["attention"]["lr (rule's best)"] == "0.1 **at bound**"
    assert "**At bound**: the rule's best learning rate of attention" in text
    finished = [t for t in attention.trials if t.state.is_finished() and t.state.name != "FAIL"]
    pruned = sum(t.state.name == "PRUNED" for t in finished)
    assert rows["attention"]["trials (pruned, diverged)"] == f"{len(finished)} ({pruned}, 0)"


def test_escape_steps_match_a_hand_computation(tuned):
    url, out, text = tuned
    rows = read_jsonl(out / "confirm.jsonl")
    floor = rows[0]["floor"]
    threshold = floor + (1 - floor) / 2
    for model, seed in (("gateloop", 1001), ("attention", 1002), ("attention", 1003)):
        trial = confirmed(url, model)[seed]
        curve = [(m["step"], m["accuracy"]) for m in trial.user_attrs["metrics"]]
        escaped = [step for step, score in curve if score >= threshold]
        row = next(r for r in rows if (r["model"], r["seed"]) == (model, seed))
        assert (row["escape_step"], row["escaped"]) == ((escaped[0], True) if escaped else (curve[-1][0], False))
    assert floor == 0.5  # mqar's most frequent value on these rows: gateloop 1001 escapes at 8, attention 1003 never
    by = {(r["model"], r["seed"]): (r["escape_step"], r["escaped"]) for r in rows}
    assert by[("gateloop", 1001)] == (8, True) and by[("attention", 1003)] == (12, False)
    curves = report_figures.survival_rows(rows)
    assert [(c["step"], c["on_plateau"]) for c in curves if c["model"] == "attention"] == [(0.0, 1.0), (12.0, 0.4)]
    assert "attention 3/5 escaped" in text and "log-rank p vs gateloop (Holm)" in text


def test_figures_exist_and_the_report_rebuilds_from_the_jsonl(tuned):
    url, out, text = tuned
    for name in ("lr_sensitivity.png", "scores_by_model.png", "escape_survival.png"):
        assert (out / name).stat().st_size > 10_000, name
    for name in ("accuracy_by_model.png", "optimization_history.png", "best_so_far.png"):
        assert not (out / name).exists()  # v1's figures are for v1 studies
    trials, confirms = read_jsonl(out / "trials.jsonl"), read_jsonl(out / "confirm.jsonl")
    assert (out / "report.md").read_text() == text == report_tables.report_markdown(trials, confirms, PREFIX)
    assert all(r["protocol"] == "v2" for r in trials + confirms)
    # What the lr figure plots: each finished trial's per-seed validation scores, as stored.
    study = load(url, f"{PREFIX}/mqar/gateloop")
    best = queries.best_trial(study)
    row = next(r for r in trials if (r["model"], r["number"]) == ("gateloop", best.number))
    assert row["best"] and row["validation_scores"] == best.user_attrs["validation_scores"] and row["seeds"] == [0, 1]
    for t in study.trials:
        if t.state.name == "PRUNED":
            r = next(r for r in trials if (r["model"], r["number"]) == ("gateloop", t.number))
            assert r["validation_scores"] == t.user_attrs["seed_values"]
    # Before confirmation (--final-seeds 0) the report says so, and shows the tuning side alone.
    unconfirmed = report_tables.report_markdown(trials, [], PREFIX)
    assert "No confirm runs for this task" in unconfirmed and "0.1 **at bound**" in unconfirmed
    # The figures rebuild from the rows alone too.
    again = out.parent / "again"
    again.mkdir()
    assert {p.name for p in report_figures.figures(trials, confirms, again)} == {
        "lr_sensitivity.png", "scores_by_model.png", "escape_survival.png"}


def test_a_mix_of_protocols_is_refused():
    v1 = {"task": "a", "model": "gateloop"}
    v2 = {"task": "b", "model": "gateloop", "protocol": "v2"}
    assert report_tables.protocol_of([v1], []) == "v1" and report_tables.protocol_of([v2], [v2]) == "v2"
    with pytest.raises(ValueError, match="mix protocol v1 and v2 .*a/gateloop: v1, b/gateloop: v2"):
        report_tables.protocol_of([v1], [v2])
    assert json.loads(json.dumps(v2)) == v2


def test_a_report_mid_study_reads_every_model_against_one_floor(tuned, tmp_path, monkeypatch):
    """While a study runs, one model may have confirmed fewer seeds than another: the floor (and the escape
    threshold read from it) is computed on the task's confirm seeds together, the same for every model, and
    the report builds (it refused, the models' escape thresholds differing, when each read its own seeds)."""
    url, _, _ = tuned
    copy = tmp_path / "mid.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    with sqlite3.connect(copy) as db:  # attention's last two confirm seeds back to "still training"
        db.execute("""UPDATE trials SET state = 'RUNNING' WHERE study_id =
                          (SELECT study_id FROM studies WHERE study_name = ?)
                      AND trial_id IN (SELECT trial_id FROM trial_user_attributes
                                       WHERE key = 'seed' AND value_json IN ('1003', '1004'))""",
                   (f"{PREFIX}/mqar/attention/confirm",))
    asked = []
    floor = report_rows.stored_floor
    monkeypatch.setattr(report_rows, "stored_floor",
                        lambda config, seeds, n=None: (asked.append(seeds), floor(config, seeds, n))[1])
    _, confirms = report_rows.load_rows(optuna.storages.RDBStorage(f"sqlite:///{copy}"), PREFIX)
    assert sorted(r["seed"] for r in confirms if r["model"] == "attention") == SEEDS[:3]
    assert set(asked) == {tuple(SEEDS)}  # every model's floor on all five seeds, attention's included
    assert len({(r["floor"], r["escape_threshold"]) for r in confirms}) == 1
    text = report_mod.build_report(f"sqlite:///{copy}", PREFIX, tmp_path / "report")
    assert table_rows(text)["attention"]["per seed (seeds 1000–1004)"].endswith("–, –")


@pytest.mark.parametrize("protocol, confirm_target", [("v2", 1.0), ("v1", 0.95)])
def test_tune_confirms_every_step_under_v2_and_as_tuned_under_v1(tmp_path, monkeypatch, protocol, confirm_target):
    """With a preset that stops early, `testbed tune`'s tuning trials stop at its target under both protocols;
    v2's re-trainings train every step (one stopped at its validation target would sit at it, its test score
    either side by sampling alone) and are judged solved at the target tuning used; v1's stop as its tuning
    trials did (as the committed v1 studies ran)."""
    monkeypatch.setattr(objectives, "train", SplitTrain())
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    budget = ["--trials", "2"] if protocol == "v1" else []
    assert cli.main(["tune", "--task", "mqar", "--models", "attention", "--preset", "smoke", "--protocol", protocol,
                     *budget, "--final-seeds", "2", "--quiet", "--storage", url, "--study-prefix", "t",
                     *TINY, "train.target_accuracy=0.95"]) == 0
    tuning = [t for t in load(url, "t/mqar/attention").trials if "config" in t.user_attrs]
    confirms = load(url, "t/mqar/attention/confirm").trials
    assert tuning and {t.user_attrs["config"]["train"]["target_accuracy"] for t in tuning} == {0.95}
    assert sorted(t.user_attrs["seed"] for t in confirms) == SEEDS[:2]
    assert {t.user_attrs["config"]["train"]["target_accuracy"] for t in confirms} == {confirm_target}
    if protocol == "v2":
        _, rows = report_rows.load_rows(optuna.storages.get_storage(url), "t")
        assert [r["target"] for r in rows] == [0.95, 0.95]
