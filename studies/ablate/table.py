"""The ablation table: one row per ablation; per task the mean ± 95 % CI over seeds and the difference to
`full` (Welch p); the floor in the last row."""
from __future__ import annotations

from typing import Any

import numpy as np

from studies.ablate.ablations import ABLATIONS
from studies.config import CONFIG_VERSION
from studies.floors import metric_label, stored_floor, stored_metric
from studies.stats import compare
from studies.tables import fmt_mean_ci, human_count, markdown_table


def ablation_runs(records: list[dict[str, Any]], names: dict[str, list[str]]) -> dict[tuple[str, str], dict[str, float]]:
    """(ablation, task) -> {run id: final score on the task's metric} over seeds; a run shared by several
    names counts for each. Runs of an older config version (other task generators) were read on token
    accuracy (`stored_metric`)."""
    runs: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        value = r["final"][str(r["config"]["task"]["seq_len"])][stored_metric(r["config"])] if r["final"] else 0.0
        for name in names[r["run_id"]]:
            runs.setdefault((name, r["config"]["task"]["name"]), {})[r["run_id"]] = value
    return runs


def ablation_table(records: list[dict[str, Any]], names: dict[str, list[str]], lr_note: str) -> str:
    """Markdown: one row per ablation; per task mean ± 95% CI and the difference to `full` (Welch p).

    `names` maps each run id to the ablations it stands for (several when their configs coincide,
    e.g. `max_heads` is the default head layout, so it shares the runs of `full`). Whether an
    ablation's runs are full's is decided by run id: distinct runs that happen to tie keep their Δ and p.
    """
    runs = ablation_runs(records, names)
    ablations = [a for a in ABLATIONS if any(k[0] == a for k in runs)]
    tasks = sorted({t for _, t in runs})
    params = {n: r["num_parameters"] for r in records for n in names[r["run_id"]]}
    states = {n: r["state_size"] for r in records for n in names[r["run_id"]]}
    header = ["ablation", *tasks, "params", "state"]
    rows = []
    for a in ablations:
        cells = []
        for t in tasks:
            own = runs.get((a, t), {})
            if not own:
                cells.append("–")
                continue
            vals, full = list(own.values()), list(runs.get(("full", t), {}).values())
            cell = f"{fmt_mean_ci(vals)} (n={len(vals)})"
            if a != "full" and set(own) == set(runs.get(("full", t), {})):
                cell += "<br>(the runs of `full`)"
            elif a != "full" and len(full) >= 2 and len(vals) >= 2:
                diff = np.mean(vals) - np.mean(full)

                p = compare(vals, full)[0]  # Welch's t, without scipy's warning for one constant sample
                cell += f"<br>Δ {diff:+.3f}, p={p:.2g}" if np.isfinite(p) else f"<br>Δ {diff:+.3f}, p=–"
            cells.append(cell)
        flag = "" if params.get(a) == params.get("full") or "full" not in params else " (≠ full)"
        rows.append([a, *cells, human_count(params[a]) + flag, human_count(states[a])])
    rows.append(["*floor* (best no-solve baseline)", *[_floor_cell(records, t) for t in tasks], "", ""])
    metrics = {r["config"]["task"]["name"]: stored_metric(r["config"]) for r in records}
    shared = sorted({tuple(n) for n in names.values() if len(n) > 1})
    same = "".join(f" `{' = '.join(group)}`: identical configurations, one set of runs." for group in shared)
    scored = ", ".join(f"{t}: {metric_label(metrics[t])}" for t in tasks)
    note = (f"Held-out score at the training length ({scored}), mean ± 95% t-interval over seeds; Δ = difference "
            f"to `full`, p = Welch t-test (not corrected for multiple comparisons); floor: the best no-solve "
            f"baseline on the same held-out sets (– for runs of an older config version, made with other task "
            f"generators). {lr_note}{same}\n\n")
    return note + markdown_table(header, rows)


def _floor_cell(records: list[dict[str, Any]], task: str) -> str:
    """The floor of `task` on the held-out sets of full's seeds (every ablation shares them), from the runs
    of this config version (an older one's generators are gone: –)."""
    mine = [r for r in records if r["config"]["task"]["name"] == task and r["config"].get("version") == CONFIG_VERSION]
    if not mine:
        return "–"
    name, score, _ = stored_floor(mine[0]["config"], tuple({r["config"]["train"]["seed"] for r in mine}))
    return f"{score:.3f} ({name})"
