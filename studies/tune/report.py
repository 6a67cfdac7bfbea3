"""Build the tuning report (tables, significance tests, figures) from an Optuna storage alone.

    testbed report [--storage URL] [--study-prefix P] [--out DIR] [--reference gateloop]

Reads the studies `P/<task>/<model>` and `P/<task>/<model>/confirm` written by `testbed tune`; trains
nothing. Per task a Markdown table: each model's confirmed accuracy (mean and 95 % percentile-bootstrap
interval over the final seeds), parameters, state size, its tuning budget and best hyperparameters,
and the p-value of the reference model (GateLoop) against it — Welch's t-test and the Mann–Whitney U
test, two-sided, each Holm-corrected over the comparisons of that task. Figures (seaborn):
`accuracy_by_model.png` (confirmed accuracy with 95 % CIs and the seeds as dots),
`optimization_history.png` (every trial's value, and the best so far, per model), `best_so_far.png`
(best accuracy after n finished trials, and its expectation over random orderings of the same trials,
the expected-validation-performance curve of Dodge et al., 2019).

Protocol v2 studies (issue 24; docs/design.md §6.1: their decisions read a validation set) get their own report,
chosen by the rows (`"protocol": "v2"`; v1 rows carry no such key and render as above): the header states
the protocol the studies stored; per task a table with the floor as its first row and, per model, the test
score's mean [95 % bootstrap CI], every seed's score, the solve rate k/n at the target with its exact
interval, the longer lengths likewise, the rule's learning rate (marked where it sits at a bound of the
search), and against the reference the exact paired sign-flip test on seed-matched scores (with the
smallest p its pairs allow) and, where seeds split at the target, Boschloo's test of the solve rates,
each Holm-corrected; notes say which statistic is primary and give plateau-escape times (Kaplan–Meier,
log-rank). Figures: `lr_sensitivity.png`, `scores_by_model.png`, `escape_survival.png`.

Written to DIR: `report.md`, `trials.jsonl` (one row per tuning trial), `confirm.jsonl` (one row per
final seed) and the PNGs; the report and the figures rebuild from the two jsonl files alone.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import optuna

from studies.atomic_io import write_atomic, write_jsonl
from studies.checks import check_out_dir
from studies.tune.cli import set_optuna_verbosity
from studies.tune.report_figures import figures
from studies.tune.report_rows import load_rows
from studies.tune.report_tables import DEFAULT_REFERENCE, protocol_of, report_markdown
from studies.tune.storage import check_prefix, open_existing_storage


def build_report(storage: str | optuna.storages.BaseStorage, prefix: str, out: str | Path,
                 reference: str = DEFAULT_REFERENCE, reference_required: bool = True) -> str:
    """Write report.md, trials.jsonl, confirm.jsonl and the figures to `out`; return the Markdown.

    Raises ValueError (before writing anything) if there is nothing under `prefix`, if its studies mix
    protocols v1 and v2, or if `reference` is not one of the reported models and `reference_required` (the
    user named it). Otherwise a report
    without the reference says so under each task's table, and has no p-values.
    """
    if isinstance(storage, str):
        storage = open_existing_storage(storage)
    trial_rows, confirm_rows = load_rows(storage, prefix)
    if not trial_rows and not confirm_rows:
        raise ValueError(f"no studies named {prefix}/<task>/<model> in the storage; "
                         f"found: {sorted(optuna.get_all_study_names(storage))}")
    models = sorted({r["model"] for r in trial_rows} | {r["model"] for r in confirm_rows})
    if reference_required and reference not in models:
        raise ValueError(f"--reference {reference!r} is not a model of the studies {prefix}/*; "
                         f"models: {', '.join(models)}")
    return write_report(trial_rows, confirm_rows, prefix, out, reference)


def write_report(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], prefix: str, out: str | Path,
                 reference: str = DEFAULT_REFERENCE) -> str:
    """Write report.md, trials.jsonl, confirm.jsonl and the figures of these rows (`load_rows`'s, or a
    selection of them, e.g. the capability study's ablations beside their full model) to `out`; return the
    Markdown. A mix of protocols v1 and v2 is refused (ValueError) before anything is written."""
    protocol_of(trial_rows, confirm_rows)  # a mix of v1 and v2 studies is refused before anything is written
    out = check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    text = report_markdown(trial_rows, confirm_rows, prefix, reference)
    write_atomic(out / "report.md", text)
    write_jsonl(out / "trials.jsonl", trial_rows)
    write_jsonl(out / "confirm.jsonl", confirm_rows)
    figures(trial_rows, confirm_rows, out, reference)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default="sqlite:///runs/tune/studies.db", help="SQLAlchemy URL of the studies")
    parser.add_argument("--study-prefix", default="tune", help="report the studies named PREFIX/TASK/MODEL")
    parser.add_argument("--out", default=None, help="output directory (default: runs/report-<prefix>)")
    parser.add_argument("--reference", default=None,
                        help=f"model every other model is tested against (default: {DEFAULT_REFERENCE}, where it "
                             f"was tuned; a report without it has no p-values and says so)")
    parser.add_argument("--verbose", action="store_true", help="Optuna's INFO log lines (default: warnings only)")


def run(args: argparse.Namespace) -> int:
    set_optuna_verbosity(args.verbose)
    default_out = f"runs/report-{re.sub(r'[^A-Za-z0-9_.-]+', '_', args.study_prefix)}"
    try:
        check_prefix(args.study_prefix)
        out = check_out_dir(default_out if args.out is None else args.out)  # --out '' is refused, not the default
        storage = open_existing_storage(args.storage)
        text = build_report(storage, args.study_prefix, out, args.reference or DEFAULT_REFERENCE,
                            reference_required=args.reference is not None)
    except ValueError as e:
        raise SystemExit(f"testbed report: {e}") from None
    print(text)
    print(f"report: {out / 'report.md'}, figures: {out}/*.png")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.tune.report", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
