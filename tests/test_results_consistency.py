"""The committed results cannot drift from their data: every committed report table is rebuilt here
from the committed tidy results and must match the committed Markdown."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from studies.ablate.report import STUDY_FILE
from studies.ablate.table import ablation_table
from studies.tune.report_tables import report_markdown
from studies.atomic_io import read_jsonl
from studies.suite.records import load_records

RESULTS = Path(__file__).resolve().parent.parent / "results"
# Tuning reports (`testbed report`); the capability study's report is checked against its storage below.
REPORTS = sorted(p.parent for p in RESULTS.glob("**/report.md") if p.read_text().startswith("## Tuning report"))
CAPABILITY = RESULTS / "capability"
ABLATIONS = sorted(p.parent for p in RESULTS.glob("**/ablations.md"))


def test_there_are_committed_results_to_check():
    assert REPORTS, f"no report.md under {RESULTS}"


@pytest.mark.parametrize("directory", REPORTS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_report_matches_its_tidy_results(directory: Path):
    committed = (directory / "report.md").read_text()
    prefix = re.match(r"## Tuning report: `([^`]+)`", committed).group(1)
    # The model the report compares every other with, as its tables name it (a capability study's main part
    # compares with its first model, not the default).
    reference = re.search(r"\| p vs ([^:| ]+):", committed)
    rebuilt = report_markdown(read_jsonl(directory / "trials.jsonl"), read_jsonl(directory / "confirm.jsonl"), prefix,
                              *([reference.group(1)] if reference else []))
    assert rebuilt == committed


@pytest.mark.parametrize("directory", ABLATIONS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_ablation_table_matches_its_stored_runs(directory: Path):
    study = json.loads((directory / STUDY_FILE).read_text())
    records = [r for r in load_records(directory) if r["run_id"] in study["ablations"]]
    assert ablation_table(records, study["ablations"], study["lr_note"]) == (directory / "ablations.md").read_text()


@pytest.mark.skipif(not (CAPABILITY / "report.md").exists(), reason="the capability study has no committed report yet")
def test_capability_report_matches_its_committed_storage(tmp_path: Path):
    """results/capability/report.md is what the report builder makes of the committed storage snapshot
    (results/capability/studies.db, see results/capability/README.md), nothing edited by hand."""
    from studies.experiments.capability.report import build_capability_report
    from studies.experiments.capability.study import CPU_STUDY

    rebuilt = build_capability_report(f"sqlite:///{CAPABILITY / 'studies.db'}", CPU_STUDY, tmp_path)
    assert rebuilt == (CAPABILITY / "report.md").read_text()


CAPABILITY_V2 = RESULTS / "capability-v2"


@pytest.mark.skipif(not (CAPABILITY_V2 / "studies.db").exists(), reason="study v2 has no committed snapshot yet")
def test_capability_v2_report_matches_its_committed_snapshot(tmp_path: Path):
    """results/capability-v2/report.md is what the report builder makes of the committed snapshot of the running
    study (results/capability-v2/studies.db, made by `testbed capability --preset v2 --snapshot`), read from a
    read-only copy so that the committed file is never written."""
    from studies.experiments.capability.report import build_capability_report
    from studies.experiments.capability.run import copy_sqlite
    from studies.experiments.capability.study import CPU_STUDY_V2

    copy_sqlite(CAPABILITY_V2 / "studies.db", tmp_path / "studies.db")
    rebuilt = build_capability_report(f"sqlite:///{tmp_path / 'studies.db'}", CPU_STUDY_V2, tmp_path / "out")
    assert rebuilt == (CAPABILITY_V2 / "report.md").read_text()


ROOT = RESULTS.parent
README = ROOT / "README.md"
QUOTE_START = re.compile(r"^<!-- quoted from ", re.M)  # a marker opens a line; inline mentions do not count
QUOTE = re.compile(r"<!-- quoted from (\S+) -->\n(.*?)<!-- end quote -->", re.S)


def quoting_pages() -> list[Path]:
    """The pages whose quotes are checked: the README, every docs/ page and every README under results/."""
    return [README, *sorted((ROOT / "docs").glob("*.md")), *sorted(RESULTS.glob("**/README.md"))]


def test_readme_quotes_a_results_table():
    assert QUOTE.findall(README.read_text()), "the README quotes no results"


@pytest.mark.parametrize("page", quoting_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_quotes_results_verbatim(page: Path):
    """Every table a page quotes (between `<!-- quoted from FILE -->` and `<!-- end quote -->`, FILE
    relative to the repository root) stands verbatim in that committed file, so the numbers of the
    README, docs/ and the results READMEs cannot drift from the data."""
    text = page.read_text()
    quotes = QUOTE.findall(text)
    # A marker without its end, or with a malformed path, would otherwise leave its table unchecked.
    assert len(quotes) == len(QUOTE_START.findall(text)), f"{page.relative_to(ROOT)}: a quote marker is not closed"
    for source, quoted in quotes:
        assert quoted.strip(), f"{page.relative_to(ROOT)}: an empty quote from {source}"
        assert quoted.strip() in (ROOT / source).read_text(), f"{page.relative_to(ROOT)}: quote from {source} is not in it"


RUN_FILES = sorted(RESULTS.glob("**/runs/*.json"))


def test_every_committed_run_rebuilds_to_its_own_run_id():
    """A knob added to a task or model must not change the id of a committed run (whose config predates
    it): a rerun of the command that made it would find no such run and train it again, or move the
    committed file aside as not matching its config."""
    from studies.config import run_config_from_dict

    from studies.config import CONFIG_VERSION

    current = [(p, r) for p in RUN_FILES if (r := json.loads(p.read_text()))["config"]["version"] == CONFIG_VERSION]
    assert current  # runs of an older config version are refused as a whole (the manifest), not rebuilt
    for path, record in current:
        assert run_config_from_dict(record["config"]).run_id() == record["run_id"] == path.stem, path


@pytest.mark.skipif(not (CAPABILITY / "studies.db").exists(), reason="no committed capability storage")
def test_readme_count_of_edge_winners_is_the_storages():
    """The README says how many of the v1 study's tuned learning rates sit at an edge of its 3-point grid:
    recounted here from the committed storage (each main tuning study's best trial, studies.tune.queries)."""
    import optuna

    from studies.experiments.capability.study import CPU_STUDY
    from studies.tune.queries import best_lr

    url = f"sqlite:///{CAPABILITY / 'studies.db'}"
    names = [n for n in optuna.get_all_study_names(url) if n.startswith(f"{CPU_STUDY.prefix}/") and n.count("/") == 2]
    lrs = [best_lr(optuna.load_study(study_name=n, storage=url)) for n in names]
    edges = sum(lr in (min(CPU_STUDY.lr_grid), max(CPU_STUDY.lr_grid)) for lr in lrs)
    assert f"{edges} of {len(lrs)} winners at an edge" in README.read_text()
