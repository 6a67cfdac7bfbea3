"""A model added beside a committed capability study (studies/experiments/capability/added.py): tuned and
confirmed under the study's protocol into a copy of its storage, the committed models read from the copy and
never trained again, the report rebuilt with it; the dry run's plan and cost; what would touch the committed
study refused in one line, with nothing created. The added model is the worked example, examples/gla_mixer.py."""
from __future__ import annotations

import hashlib
from pathlib import Path

import optuna
import pytest

from studies.cli import main
from studies.experiments.capability import added
from studies.experiments.capability import report as report_module
from studies.experiments.capability.report import build_capability_report
from studies.experiments.capability.run import run_study
from studies.train import EvalRecord, TrainResult
from studies.tune import objectives

from test_capability import TINY_MODELS, tiny_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/gla_mixer.py:GLA"
COMMITTED = ROOT / "results" / "capability" / "studies.db"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main_rows(text: str, variant: str) -> dict[str, list[str]]:
    """label -> the cells of its row in `variant`'s main table, the p column left out."""
    table = text[text.index(f"### {variant} "):].split("\n\n")[1]
    return {row.split(" | ")[0][2:]: row.split(" | ")[:-1] for row in table.splitlines()[2:]}


def fake_train(config, on_eval=None, progress=True) -> TrainResult:
    """Stands in for studies.train.train: a score that is a pure function of the model, lr and seed, evaluated
    at every length the config reads (so every table of the report has its cells)."""
    score = 0.5 + 0.4 * (config.model == EXAMPLE) + 0.01 * (config.train.seed % 7) - 10 * config.train.lr
    steps = config.train.steps
    history = [EvalRecord(s, 1.0 - score * f, score * f, 0.0) for s, f in ((steps // 2, 0.5), (steps, 1.0))]
    for record in history:
        if on_eval is not None:
            on_eval(record)
    final = {length: {"accuracy": score, "sequence_accuracy": 0.0}
             for length in (config.task.seq_len, *config.eval_lengths)}
    return TrainResult("completed", steps, None, history, final, 100, 200, 10, 0.01, config.to_dict())


def test_a_model_is_added_beside_a_study_without_retraining_it(tmp_path, monkeypatch, capsys):
    """On a tiny study trained by a fake trainer (its figures not drawn: figures.py is tested with the study)."""
    monkeypatch.chdir(ROOT)
    drawn = []
    monkeypatch.setattr(report_module, "write_figures", lambda study, main, sweep, out: drawn.append(sorted(main)) or [])
    monkeypatch.setattr(objectives, "train", fake_train)
    study = tiny_study(models=TINY_MODELS[:1], predictions=())  # one committed model: fewer storage writes
    source = tmp_path / "committed" / "studies.db"
    source.parent.mkdir()
    run_study(study, f"sqlite:///{source}", tmp_path / "committed", "cpu", "main", progress=False, report=False)
    committed_report = build_capability_report(f"sqlite:///{source}", study, tmp_path / "committed")
    before = digest(source)
    monkeypatch.setattr(added, "STUDIES", {"capability": study})
    copy = tmp_path / "mine" / "studies.db"
    argv = ["capability", "--add-model", EXAMPLE, "--label", "gla", "--from-storage", str(source),
            "--storage", f"sqlite:///{copy}", "--workers", "1", "--quiet", "mixer.d_model=16", "mixer.num_heads=2"]

    assert main([*argv, "--dry-run"]) == 0  # the plan and its cost, and nothing created
    plan = capsys.readouterr().out
    assert "read from the copy, not retrained: 1 models × 1 variants, 2 confirm runs" in plan
    assert "trained: `gla` on 1 variants, 6 runs (2 grid trials × 2 seeds + 2 confirm seeds per variant)" in plan
    assert "| main | parity | gla | added | 16 |" in plan and "| main | parity | gateloop_kv |" not in plan
    assert not copy.parent.exists() and digest(source) == before

    trained = []

    def only_the_added_model(config, **kwargs):
        assert config.model == EXAMPLE, f"{config.model} was trained again"
        trained.append(config.train.seed)
        return fake_train(config, **kwargs)

    monkeypatch.setattr(objectives, "train", only_the_added_model)
    assert main(argv) == 0
    assert sorted(trained) == [0, 0, 1, 1, 1000, 1001]  # 2 lr points × 2 seeds, then 2 confirm seeds
    assert digest(source) == before  # the committed storage is only read
    report = (tmp_path / "mine" / "report.md").read_text()
    assert "Added beside the committed models: `gla` (examples/gla_mixer.py:GLA with d_model=16, num_heads=2)" in report
    rows, committed = main_rows(report, "parity"), main_rows(committed_report, "parity")
    assert rows["gla"][1] == "added" and {k: v for k, v in rows.items() if k != "gla"} == committed
    assert rows["gla"][2].startswith("0.9")  # the fake trainer's score of the example
    assert drawn[-1] == [("parity", "gateloop_kv"), ("parity", "gla")]  # the added model is in the figures

    monkeypatch.setattr(objectives, "train", lambda *a, **k: pytest.fail("a rerun must resume, not train"))
    assert main(argv) == 0


@pytest.mark.parametrize("change, fragment", [
    ({"--storage": "sqlite:///{source}"}, "is the committed storage itself"),
    ({"--out": "{source_dir}"}, "holds the committed storage and its report"),
    ({"--label": "gateloop_kv"}, "is a model the study `capability` already has"),
    ({"--from-storage": None}, "--add-model needs --from-storage"),
    ({"--add-model": None}, "--label, --from-storage go with --add-model"),
    ({"--only": "sweep"}, "--only does not go with --add-model"),
    ({"extra": "train.lr=0.1"}, "train.lr: the added model trains on the study's tasks"),
    ({"extra": "mixer.heads=2"}, "unknown key(s) mixer (examples/gla_mixer.py:GLA).heads"),
])
def test_adding_a_model_refuses_what_would_touch_the_committed_study(tmp_path, monkeypatch, change, fragment):
    monkeypatch.chdir(ROOT)
    copy = tmp_path / "mine" / "studies.db"
    options = {"--add-model": EXAMPLE, "--label": "gla", "--from-storage": str(COMMITTED),
               "--storage": f"sqlite:///{copy}", "--workers": "1"}
    extra = change.pop("extra", None)
    options.update({k: v.format(source=COMMITTED, source_dir=COMMITTED.parent) if v else v for k, v in change.items()})
    argv = ["capability", "--dry-run", *[x for k, v in options.items() if v is not None for x in (k, v)],
            *([extra] if extra else [])]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    message = str(stop.value.code)
    assert message.startswith("testbed capability: ") and fragment in message and "\n" not in message, message
    assert not copy.parent.exists()


def test_the_dry_run_against_the_committed_study_estimates_the_added_model_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    before = digest(COMMITTED)
    copy = tmp_path / "mine" / "studies.db"
    assert main(["capability", "--add-model", EXAMPLE, "--label", "gla", "--from-storage", str(COMMITTED),
                 "--storage", f"sqlite:///{copy}", "--workers", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "read from the copy, not retrained: 8 models × 4 variants, 160 confirm runs" in out
    rows = [line for line in out.splitlines() if line.startswith("| main |")]
    assert [row.split(" | ")[1:4] for row in rows] == [[v, "gla", "added"] for v in
                                                       ("parity", "z3", "selective_copy", "mqar_k4")]
    assert "wall on 2 worker(s)" in out and "| gla | examples/gla_mixer.py:GLA | added | 48 |" in out
    assert digest(COMMITTED) == before and not copy.parent.exists()
