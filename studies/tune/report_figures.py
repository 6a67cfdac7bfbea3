"""The tuning report's figures from its rows alone (`report_rows`): protocol v1's `accuracy_by_model.png`,
`optimization_history.png` and `best_so_far.png`; protocol v2's `lr_sensitivity.png`, `scores_by_model.png`
and `escape_survival.png` (`figures` picks by the rows' protocol).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from studies.stats import bootstrap_ci, expected_max, kaplan_meier
from studies.tune.report_rows import V2
from studies.tune.report_tables import DEFAULT_REFERENCE, protocol_of


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
    if protocol_of(trial_rows, confirm_rows) == V2:
        if any(r["finished_index"] is not None and r.get("lr") is not None for r in trial_rows):
            made.append(("lr_sensitivity.png", lr_sensitivity_figure(trial_rows, confirm_rows, models)))
        if confirm_rows:
            made.append(("scores_by_model.png", scores_figure(confirm_rows, models)))
        if any(r["escaped"] is not None for r in confirm_rows):
            made.append(("escape_survival.png", survival_figure(confirm_rows, models)))
    else:
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


# ----------------------------------------------------------------------------- protocol v2's figures


def _task_floors(confirm_rows: list[dict[str, Any]]) -> dict[str, float]:
    """task -> its floor on the confirm seeds' test rows (the tables' floor row)."""
    known: dict[str, list[float]] = {}
    for r in confirm_rows:
        if r.get("floor") is not None:
            known.setdefault(r["task"], []).append(r["floor"])
    return {task: sum(v) / len(v) for task, v in known.items()}


def lr_sensitivity_figure(trial_rows: list[dict[str, Any]], confirm_rows: list[dict[str, Any]], models: list[str]):
    """Score against learning rate, one panel per (task, model): every finished tuning trial's per-seed
    validation scores (pruned trials hollow, at the step they were pruned; diverged ones as crosses), the
    mean per learning rate, the rule's best learning rate, and the task's floor."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    rows = [r for r in trial_rows if r["finished_index"] is not None and r.get("lr") is not None]
    tasks = sorted({r["task"] for r in rows})
    shown = [m for m in models if any(r["model"] == m for r in rows)]
    colors = dict(zip(shown, sns.color_palette(n_colors=len(shown))))
    floors = _task_floors(confirm_rows)
    fig, axes = plt.subplots(len(tasks), len(shown), figsize=(1.0 + 3.2 * len(shown), 0.6 + 2.8 * len(tasks)),
                             squeeze=False, sharey=True)
    for i, task in enumerate(tasks):
        for j, model in enumerate(shown):
            ax, color = axes[i][j], colors[model]
            mine = sorted((r for r in rows if (r["task"], r["model"]) == (task, model)), key=lambda r: r["lr"])
            for r in mine:
                xs = [r["lr"]] * len(r["validation_scores"])
                if r["status"] == "diverged":
                    ax.scatter(xs, r["validation_scores"], marker="x", color=color, s=22, zorder=3)
                else:
                    ax.scatter(xs, r["validation_scores"], s=22, zorder=3, edgecolors=color, linewidths=1.2,
                               facecolors="none" if r["state"] == "PRUNED" else color)
            means = [(r["lr"], float(np.mean(r["validation_scores"]))) for r in mine if r["validation_scores"]]
            if means:
                ax.plot(*zip(*means), color=color, lw=1.2, zorder=2)
            for r in mine:
                if r["best"]:
                    ax.axvline(r["lr"], color=color, ls=":", lw=1.2)
            if task in floors:
                ax.axhline(floors[task], color="black", ls="--", lw=1)
            lrs = [r["lr"] for r in mine]
            if lrs and min(lrs) == max(lrs):  # one point tried so far: a decade around it, not a zero-width axis
                ax.set_xlim(lrs[0] / 10 ** 0.5, lrs[0] * 10 ** 0.5)
            ax.set_xscale("log")  # after the limits: a log scale on a zero-width axis warns
            ax.set(ylim=(-0.02, 1.02), title=f"{task} · {model}", xlabel="learning rate" if i == len(tasks) - 1 else None)
        axes[i][0].set_ylabel("validation score\n(task's metric)")
    legend = [Line2D([], [], marker="o", ls="", color="grey", label="seed of a finished trial"),
              Line2D([], [], marker="o", ls="", mfc="none", color="grey", label="seed of a pruned trial (when pruned)"),
              Line2D([], [], marker="x", ls="", color="grey", label="seed of a diverged trial"),
              Line2D([], [], color="grey", label="mean over seeds"),
              Line2D([], [], color="grey", ls=":", label="rule's best learning rate"),
              Line2D([], [], color="black", ls="--", label="floor (test rows)")]
    fig.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 0.98))
    fig.suptitle("Learning-rate sensitivity: every learning rate the rule tried, every seed")
    fig.tight_layout()
    return fig


def scores_figure(confirm_rows: list[dict[str, Any]], models: list[str]):
    """Confirmed test scores, one panel per task: every seed as a point, the mean with its 95 % bootstrap
    interval as an error bar (no bars: a bar's height is a mean no bimodal seed is near), the floor dashed."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    tasks = sorted({r["task"] for r in confirm_rows})
    floors = _task_floors(confirm_rows)
    shown = [m for m in models if any(r["model"] == m for r in confirm_rows)]
    colors = dict(zip(shown, sns.color_palette(n_colors=len(shown))))
    fig, axes = plt.subplots(1, len(tasks), figsize=(0.8 + (1.0 + 0.9 * len(shown)) * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        present = [m for m in shown if any((r["task"], r["model"]) == (task, m) for r in confirm_rows)]
        for x, model in enumerate(present):
            scores = [r["accuracy"] for r in sorted(confirm_rows, key=lambda r: r["seed"])
                      if (r["task"], r["model"]) == (task, model)]
            # Seeds spread side by side in seed order (deterministic, unlike a random jitter).
            offsets = np.linspace(-0.18, 0.18, len(scores)) if len(scores) > 1 else [0.0]
            ax.scatter(x + np.asarray(offsets), scores, color=colors[model], s=24, zorder=3)
            mean, low, high = bootstrap_ci(scores)
            ax.errorbar([x + 0.3], [mean], yerr=[[mean - low], [high - mean]], fmt="D", color="black", ms=4,
                        capsize=3, zorder=4)
        if task in floors:
            ax.axhline(floors[task], color="black", ls="--", lw=1, label="floor")
        ax.set_xticks(range(len(present)), present, rotation=30, ha="right")
        ax.set(ylim=(-0.02, 1.02), title=task, xlim=(-0.6, len(present) - 0.4))
    axes[0][0].set_ylabel("test score (task's metric)")
    fig.suptitle("Confirm seeds: every seed's test score; ◆ mean with 95% bootstrap CI; dashed: floor")
    fig.tight_layout()
    return fig


def survival_rows(confirm_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Kaplan–Meier curve of each (task, model)'s plateau-escape steps: rows (task, model, step, on_plateau),
    a step function from (0, 1) that drops at each escape step."""
    out = []
    for task, model in sorted({(r["task"], r["model"]) for r in confirm_rows if r.get("escaped") is not None}):
        mine = [r for r in confirm_rows if (r["task"], r["model"]) == (task, model) and r["escaped"] is not None]
        for step, s in kaplan_meier([r["escape_step"] for r in mine], [r["escaped"] for r in mine]):
            out.append({"task": task, "model": model, "step": step, "on_plateau": s})
    return out


def survival_figure(confirm_rows: list[dict[str, Any]], models: list[str]):
    """Per task, each model's Kaplan–Meier curve of the step its confirm seeds leave the plateau (the fraction
    still on it), censored runs as + at their last step."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = [r for r in confirm_rows if r.get("escaped") is not None]
    curves = survival_rows(rows)
    tasks = sorted({r["task"] for r in rows})
    shown = [m for m in models if any(r["model"] == m for r in rows)]
    colors = dict(zip(shown, sns.color_palette(n_colors=len(shown))))
    fig, axes = plt.subplots(1, len(tasks), figsize=(1.5 + 4.0 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for model in shown:
            mine = [r for r in rows if (r["task"], r["model"]) == (task, model)]
            if not mine:
                continue
            points = [(c["step"], c["on_plateau"]) for c in curves if (c["task"], c["model"]) == (task, model)]
            end = max(r["escape_step"] for r in mine)
            steps, levels = zip(*points, (max(end, points[-1][0]), points[-1][1]))
            ax.step(steps, levels, where="post", color=colors[model], lw=1.5,
                    label=f"{model} ({sum(r['escaped'] for r in mine)}/{len(mine)} escaped)")
            for r in mine:
                if not r["escaped"]:
                    level = [s for t, s in points if t <= r["escape_step"]][-1]
                    ax.plot([r["escape_step"]], [level], marker="+", ms=10, color=colors[model])
        threshold = rows[[r["task"] for r in rows].index(task)]["escape_threshold"]
        ax.set(ylim=(-0.02, 1.05), xlabel="training step", title=f"{task}: escape at ≥ {threshold:.3f} (validation)")
        ax.legend(loc="lower left", fontsize="small")
    axes[0][0].set_ylabel("fraction still on the plateau")
    fig.suptitle("Plateau escape over the confirm seeds (Kaplan–Meier; + censored)")
    fig.tight_layout()
    return fig
