"""Rebuild a suite directory's reports — results.jsonl, table.md and the figures — from DIR/runs alone."""
from __future__ import annotations

from pathlib import Path

from studies.atomic_io import write_atomic, write_jsonl
from studies.config import group_hash
from studies.suite.records import load_records
from studies.suite.rows import tidy_rows, with_floors
from studies.suite.table import suite_table


def rebuild_reports(out: Path) -> str:
    """Rebuild results.jsonl, table.md and figures from DIR/runs alone; returns the table."""
    # Imported here: matplotlib, pandas and seaborn take seconds to load, and only the figures need them
    # (a command refused on bad input, `--help`, the workers that train do not).
    from studies.suite.figures import suite_figures

    records = load_records(out)
    configs = {group_hash(r["config"]): r["config"] for r in records}
    rows = with_floors([row for record in records for row in tidy_rows(record)], configs)
    write_jsonl(out / "results.jsonl", rows)
    table = suite_table(rows, configs)
    write_atomic(out / "table.md", table)
    suite_figures(rows, out)
    return table
