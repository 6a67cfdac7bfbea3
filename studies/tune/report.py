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

Written to DIR: `report.md`, `trials.jsonl` (one row per tuning trial), `confirm.jsonl` (one row per
final seed) and the PNGs.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from studies.atomic_io import write_atomic, write_jsonl
from studies.checks import check_out_dir
from studies.floors import metric_label, stored_floor, stored_metric
from studies.stats import bootstrap_ci, compare, expected_max, holm
from studies.tables import human_count, markdown_table
from studies.tune.budget import COUNTED
from studies.tune.cli import set_optuna_verbosity
from studies.tune.queries import earliest_by_seed
from studies.tune.storage import check_prefix, open_existing_storage

DEFAULT_REFERENCE = "gateloop"  # the model under study: every other model is tested against it


# -------------------------------------------------------------------------------------------- loading


def load_rows(storage: optuna.storages.BaseStorage, prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tidy rows of every tuning trial and every confirmed seed under `prefix`."""
    trial_rows, confirm_rows = [], []
    names = optuna.get_all_study_names(storage)
    pattern = re.compile(rf"^{re.escape(prefix)}/([^/]+)/([^/]+)(/confirm)?$")
    for name in sorted(names):
        match = pattern.match(name)
        if not match:
            continue
        task, model, is_confirm = match.groups()
        study = optuna.load_study(study_name=name, storage=storage)
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if is_confirm:
            # Rows in the order the runs were made (trial numbers), as the committed reports were written.
            by_seed = dict(sorted(earliest_by_seed(study).items(), key=lambda item: item[1].number))
            if not by_seed:
                continue
            # One floor per study: the best baseline on all its seeds' held-out sets pooled, as the suite,
            # the audit and the ablation table compute it (a mean of per-seed bests would be biased up).
            # Runs stored under another config version were made with other task generators: no floor.
            config = next(iter(by_seed.values())).user_attrs["config"]
            floor = stored_floor(config, tuple(by_seed))
            metric = stored_metric(config) if floor is None else floor[2]
            floor_name, floor_score = (None, None) if floor is None else floor[:2]
            for seed, t in by_seed.items():
                confirm_rows.append({
                    "task": task, "model": model, "seed": seed, "accuracy": float(t.value),
                    "metric": metric, "floor": floor_score, "floor_name": floor_name,
                    "status": t.user_attrs.get("status"), "num_parameters": t.user_attrs.get("num_parameters"),
                    "state_size": t.user_attrs.get("state_size"), "run_id": t.user_attrs.get("run_id"),
                    "source_trial": study.user_attrs.get("source_trial"),
                    "train_length": t.user_attrs["config"]["task"]["seq_len"],
                    # the objective's metric at the training length and at the longer evaluated lengths
                    "by_length": {str(f["length"]): f[metric] for f in t.user_attrs.get("final") or []},
                })
            continue
        finished = 0
        for t in trials:
            counted = t.state in COUNTED
            finished += counted
            trial_rows.append({
                "task": task, "model": model, "number": t.number, "state": t.state.name,
                "finished_index": finished if counted else None,
                # A pruned trial's value is its last reported accuracy (a lower bound of where it would
                # have ended); a diverged one is stored as 0.
                "value": None if t.value is None else float(t.value),
                "status": t.user_attrs.get("status"), "params": t.params,
                "num_parameters": t.user_attrs.get("num_parameters"), "state_size": t.user_attrs.get("state_size"),
                "surplus": bool(t.user_attrs.get("surplus", False)), "retry_of": t.system_attrs.get("failed_trial"),
                "budget": study.user_attrs.get("budget"),
            })
    return trial_rows, confirm_rows


def _floor_cell(rows: list[dict[str, Any]]) -> str:
    """The rows' floor (one per study; studies of a task share their seeds and test sets, hence the
    floor) with the baseline that sets it; "–" where it is unknown."""
    known = [r for r in rows if r.get("floor") is not None]
    if not known:
        return "–"
    names = sorted({r["floor_name"] for r in known})
    return f"{sum(r['floor'] for r in known) / len(known):.3f} ({', '.join(names)})"


# --------------------------------------------------------------------------------------------- tables


def _fmt_p(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _fmt_params(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in sorted(params.items()))


def task_table(task: str, trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]],
               reference: str) -> str:
    trials = [r for r in trial_rows if r["task"] == task]
    confirmed = [r for r in confirm_rows if r["task"] == task]
    models = sorted({r["model"] for r in trials} | {r["model"] for r in confirmed},
                    key=lambda m: (m != reference, m))
    acc = {m: [r["accuracy"] for r in confirmed if r["model"] == m] for m in models}
    others = [m for m in models if m != reference and reference in models]
    raw = [compare(acc[reference], acc[m]) for m in others]
    welch = dict(zip(others, holm([w for w, _ in raw])))
    mwu = dict(zip(others, holm([u for _, u in raw])))

    multipliers = sorted({int(length) // r["train_length"] for r in confirmed for length in r["by_length"]} - {1})
    header = ["model", "score, mean [95% bootstrap CI]", *[f"@{k}×L" for k in multipliers], "seeds", "params", "state",
              f"p vs {reference} (Welch, Holm)", f"p vs {reference} (MWU, Holm)",
              "trials (pruned, diverged)", "best tuning score", "best hyperparameters"]
    body = []
    for m in models:
        rows = [r for r in confirmed if r["model"] == m]
        finished = [r for r in trials if r["model"] == m and r["finished_index"] is not None]
        complete = [r for r in finished if r["state"] == "COMPLETE"]
        # The trial the confirm study re-trained; before confirmation, the best complete trial so far.
        source = rows[0]["source_trial"] if rows else None
        best = next((r for r in complete if r["number"] == source), None) or \
            max(complete, key=lambda r: (r["value"], -r["number"]), default=None)
        if acc[m]:
            mean, low, high = bootstrap_ci(acc[m])
            cell = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        else:
            cell = "not confirmed"
        diverged = sum(r["status"] == "diverged" for r in rows)
        sized = rows or complete
        longer = []
        for k in multipliers:
            values = [r["by_length"][str(k * r["train_length"])] for r in rows if str(k * r["train_length"]) in r["by_length"]]
            longer.append(f"{sum(values) / len(values):.3f}" if values else "–")
        body.append([
            m, cell, *longer, f"{len(rows)}" + (f" ({diverged} diverged)" if diverged else ""),
            human_count(sized[0]["num_parameters"]) if sized and sized[0]["num_parameters"] else "–",
            human_count(sized[0]["state_size"]) if sized and sized[0]["state_size"] else "–",
            _fmt_p(welch[m]) if m in welch else "–", _fmt_p(mwu[m]) if m in mwu else "–",
            f"{len(finished)} ({sum(r['state'] == 'PRUNED' for r in finished)}, "
            f"{sum(r['status'] == 'diverged' for r in finished)})",
            f"{best['value']:.3f}" if best else "–", _fmt_params(best["params"]) if best else "–",
        ])
    if confirmed:
        metric = confirmed[0].get("metric", "accuracy")
        notes = [f"Metric: {metric_label(metric)}. "
                 f"Floor (best no-solve baseline on the same held-out sets, mean over the seeds): {_floor_cell(confirmed)}"
                 + ("" if any(r.get("floor") is not None for r in confirmed) else
                    " — not computable: these runs were made under an older config version, with other task generators")
                 + "."]
    else:
        # The floor is read on the confirm seeds' held-out sets: without confirm runs there is none to read.
        notes = ["No confirm runs for this task (tuned with --final-seeds 0, or not confirmed yet): no confirmed "
                 "score and no floor; rerun the same `testbed tune` command with --final-seeds 5 to re-train each "
                 "best configuration."]
    budgets = {len([r for r in trials if r["model"] == m and r["finished_index"] is not None]) for m in models}
    if len(budgets) > 1:
        notes.append(f"**Unequal budgets**: finished trials per model differ ({sorted(budgets)}); the comparison "
                     f"is not fair until every study is complete.")
    if reference not in models:
        notes.append(f"No `{reference}` study for this task: no p-values.")
    return f"### {task}\n\n" + markdown_table(header, body) + "\n" + "\n".join(notes) + "\n"


# -------------------------------------------------------------------------------------------- figures


def best_so_far_rows(trial_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, model): best value after n finished trials, and its expectation (Dodge et al.)."""
    out = []
    for task, model in sorted({(r["task"], r["model"]) for r in trial_rows}):
        values = [r["value"] or 0.0 for r in trial_rows
                  if (r["task"], r["model"]) == (task, model) and r["finished_index"] is not None]
        best = -math.inf
        for n, v in enumerate(values, 1):
            best = max(best, v)
            out.append({"task": task, "model": model, "trials": n, "accuracy": best, "curve": "best so far"})
            out.append({"task": task, "model": model, "trials": n, "accuracy": expected_max(values, n),
                        "curve": "expected best of n"})
    return out


# matplotlib, pandas and seaborn are imported in the figure functions, not at the top: they take seconds
# to import, and the tables (`report_markdown`, which the results test rebuilds) need none of them.


def figures(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], out: Path,
            reference: str = DEFAULT_REFERENCE) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in trial_rows} | {r["model"] for r in confirm_rows},
                    key=lambda m: (m != reference, m))
    made = []
    if confirm_rows:
        made.append(("accuracy_by_model.png", accuracy_figure(confirm_rows, models)))
    if any(r["finished_index"] is not None for r in trial_rows):
        made.append(("optimization_history.png", history_figure(trial_rows, models).figure))
        made.append(("best_so_far.png", best_so_far_figure(trial_rows, models).figure))
    paths = []
    for name, fig in made:
        paths.append(out / name)
        # "tight" grows the saved area to every artist: a title or legend wider than the axes (one
        # task, two models) is not clipped.
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def accuracy_figure(confirm_rows: list[dict[str, Any]], models: list[str]):
    """Confirmed accuracy per task and model: bars with 95 % CIs, the seeds as dots."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame(confirm_rows)
    fig, ax = plt.subplots(figsize=(2.5 + 0.6 * df["task"].nunique() * len(models), 4))
    sns.barplot(data=df, x="task", y="accuracy", hue="model", hue_order=models, errorbar=("ci", 95), seed=0,
                alpha=0.6, ax=ax)
    sns.stripplot(data=df, x="task", y="accuracy", hue="model", hue_order=models, dodge=True, legend=False,
                  size=4, palette={m: "black" for m in models}, ax=ax)
    tasks = [tick.get_text() for tick in ax.get_xticklabels()]
    floors = df.dropna(subset=["floor"]).groupby("task")["floor"].mean() if "floor" in df else {}
    for i, task in enumerate(tasks):
        if task in floors:
            ax.hlines(floors[task], i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1.2,
                      label="best no-solve baseline" if i == 0 else None)
    ax.set(ylim=(0, 1.02), ylabel="held-out score (each task's metric)",
           title="Best config re-trained: mean, 95% CI, seeds; dashed: floor")
    ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def history_figure(trial_rows: list[dict[str, Any]], models: list[str]):
    """Every finished trial's value (by outcome) and the best so far, one panel per (task, model)."""
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame([r for r in trial_rows if r["finished_index"] is not None])
    df["outcome"] = np.where(df["status"] == "diverged", "diverged", df["state"].str.lower())
    df["value"] = df["value"].fillna(0.0)
    df["best so far"] = df.groupby(["task", "model"])["value"].cummax()
    grid = sns.relplot(data=df, x="finished_index", y="value", hue="outcome", col="model", row="task",
                       col_order=[m for m in models if m in set(df["model"])],
                       height=2.6, aspect=1.2, facet_kws={"sharex": False})
    for (task, model), ax in grid.axes_dict.items():  # keys are (row, col) = (task, model)
        part = df[(df["task"] == task) & (df["model"] == model)]
        ax.step(part["finished_index"], part["best so far"], where="post", color="black", lw=1)
    grid.set_axis_labels("finished trial", "held-out score (task's metric)")
    _integer_x_ticks(grid)
    return grid


def best_so_far_figure(trial_rows: list[dict[str, Any]], models: list[str]):
    """Best accuracy after n finished trials and its expectation over orderings, one panel per task."""
    import pandas as pd
    import seaborn as sns

    curves = pd.DataFrame(best_so_far_rows(trial_rows))
    grid = sns.relplot(data=curves, x="trials", y="accuracy", hue="model", style="curve", col="task",
                       hue_order=[m for m in models if m in set(curves["model"])],
                       kind="line", height=3, aspect=1.3, col_wrap=min(3, curves["task"].nunique()))
    grid.set_axis_labels("finished trials", "best held-out score")
    _integer_x_ticks(grid)
    return grid


def _integer_x_ticks(grid) -> None:
    """Trials are counted: no tick at 1.5 trials (matplotlib's default with 2 or 3 trials)."""
    from matplotlib.ticker import MaxNLocator

    for ax in grid.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# ---------------------------------------------------------------------------------------------- entry


def summary_table(confirm_rows: list[dict[str, Any]], reference: str = DEFAULT_REFERENCE) -> str:
    """Task × model: mean confirmed score [95% bootstrap CI], the best mean of each task in bold; then the
    task's floor (best no-solve baseline on the same held-out sets)."""
    tasks = sorted({r["task"] for r in confirm_rows})
    models = sorted({r["model"] for r in confirm_rows}, key=lambda m: (m != reference, m))
    body = []
    for task in tasks:
        cells, means = [], {}
        for m in models:
            acc = [r["accuracy"] for r in confirm_rows if r["task"] == task and r["model"] == m]
            if acc:
                means[m], low, high = bootstrap_ci(acc)
                cells.append(f"{means[m]:.3f} [{low:.3f}, {high:.3f}]")
            else:
                cells.append("–")
        best = max(means.values(), default=None)
        floor = _floor_cell([r for r in confirm_rows if r["task"] == task])
        body.append([task, *[f"**{c}**" if m in means and means[m] == best else c for m, c in zip(models, cells)],
                     floor])
    return markdown_table(["task", *models, "floor"], body)


def report_markdown(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], prefix: str,
                    reference: str = DEFAULT_REFERENCE) -> str:
    """The Markdown report from the tidy rows alone (so it can be rebuilt from trials/confirm.jsonl)."""
    tasks = sorted({r["task"] for r in trial_rows} | {r["task"] for r in confirm_rows})
    return (f"## Tuning report: `{prefix}`\n\n"
            "Score: each task's metric (token accuracy, or sequence exact match where named), held out, of each "
            "model's best tuning trial re-trained with fresh seeds; diverged seeds count as 0; `@k×L`: the same "
            "runs on held-out sequences k times the training length; floor: the best no-solve baseline "
            "(`testbed tasks audit`) on the same held-out sets — a model at the floor has learned nothing. "
            "p-values: two-sided, Holm-corrected over the comparisons of a task.\n\n"
            "### Summary: mean score [95% bootstrap CI] over the final seeds (best of each task in bold)\n\n"
            + summary_table(confirm_rows, reference) + "\n"
            + "\n".join(task_table(t, trial_rows, confirm_rows, reference) for t in tasks))


def build_report(storage: str | optuna.storages.BaseStorage, prefix: str, out: str | Path,
                 reference: str = DEFAULT_REFERENCE, reference_required: bool = True) -> str:
    """Write report.md, trials.jsonl, confirm.jsonl and the figures to `out`; return the Markdown.

    Raises ValueError (before writing anything) if there is nothing under `prefix`, or if `reference` is
    not one of the reported models and `reference_required` (the user named it). Otherwise a report
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
    out = Path(args.out or f"runs/report-{re.sub(r'[^A-Za-z0-9_.-]+', '_', args.study_prefix)}")
    try:
        check_prefix(args.study_prefix)
        check_out_dir(out)
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
