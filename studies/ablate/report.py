"""Rebuild an ablation directory's report — ablations.md and the figures — from DIR/runs and
DIR/ablation_study.json (which runs stand for which ablation, and the learning-rate note) alone."""
from __future__ import annotations

import json
from pathlib import Path

from studies.ablate.table import ablation_table
from studies.atomic_io import write_atomic
from studies.suite.records import load_records

STUDY_FILE = "ablation_study.json"  # run id -> ablation names, and the learning-rate note


def rebuild_ablation_report(out: Path) -> str:
    """Rebuild ablations.md and the figures from DIR/runs and DIR/ablation_study.json alone."""
    # Imported here: matplotlib, pandas and seaborn take seconds to load, and only the figures need them
    # (a command refused on bad input, `--help`, the workers that train do not).
    from studies.ablate.figures import ablation_heatmap, gate_figure

    study = json.loads((out / STUDY_FILE).read_text())
    names = study["ablations"]
    records = [r for r in load_records(out) if r["run_id"] in names]
    table = ablation_table(records, names, study["lr_note"])
    write_atomic(out / "ablations.md", table)
    ablation_heatmap(records, names, out / "ablation_heatmap.png")
    gate_figure(out, [r for r in records if "full" in names[r["run_id"]]], out / "gates.png")
    return table
