"""The suite's figures, read from the tidy rows: every seed's score as a dot, the mean with its 95 %
percentile-bootstrap interval (the table's), and the task's floor dashed.

    accuracy_by_task.png     the score at the training length, per task and model
    accuracy_by_length.png   the score against evaluated length / training length, one panel per task

Figures are made without pyplot (matplotlib's Figure on an Agg canvas): no backend to choose, no global
state, nothing to close.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from studies.stats import bootstrap_ci
from studies.suite.rows import labelled

FLOOR_STYLE = {"color": "black", "ls": "--", "lw": 1.2}
FLOOR_LABEL = "best no-solve baseline"


def _palette(labels: list[str]) -> dict[str, tuple[float, float, float]]:
    """A colour per label, all distinct (the default cycle of ten repeats beyond ten labels)."""
    return dict(zip(labels, sns.color_palette(None if len(labels) <= 10 else "tab20", n_colors=len(labels))))


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The task's own metric rows, labelled, with the length multiple as a column."""
    df = pd.DataFrame([r for r in labelled(rows) if r["metric"] == r["task_metric"]])
    df["length ×"] = df["length"] // df["train_length"]
    return df


def length_intervals(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per (task, label, length multiple): the mean score and the table's 95 % percentile-bootstrap
    interval of the mean over seeds (a DataFrame with columns task, label, "length ×", mean, low, high, n)."""
    out = []
    for (task, label, multiple), part in _frame(rows).groupby(["task", "label", "length ×"], sort=True):
        mean, low, high = bootstrap_ci(part["value"].tolist())
        out.append({"task": task, "label": label, "length ×": multiple, "mean": mean, "low": low, "high": high,
                    "n": len(part)})
    return pd.DataFrame(out)


def _floors(df: pd.DataFrame) -> pd.Series | None:
    """The floor a model must beat, per task and length multiple (one value per group; groups of a task
    share a test size in a suite, so the first is drawn)."""
    return df.dropna(subset=["floor"]).groupby(["task", "length ×"])["floor"].first() if "floor" in df else None


def _spread(n: int, start: float, stop: float) -> np.ndarray:
    """Fixed offsets in [start, stop] for n dots (the seeds, in seed order), so that equal scores stay
    visible beside the mean's marker and a figure rebuilds identically."""
    return np.full(n, (start + stop) / 2) if n == 1 else np.linspace(start, stop, n)


def task_figure(rows: list[dict[str, Any]]) -> Figure:
    """The score at the training length: per task, each label's seeds as dots and its mean as a larger
    marker with the bootstrap interval; the floor dashed across the task."""
    df = _frame(rows)
    floors = _floors(df)
    labels = sorted(df["label"].unique())
    palette = _palette(labels)
    seeds = df[df["length ×"] == 1]
    means = length_intervals(rows)
    means = means[means["length ×"] == 1]
    tasks = sorted(means["task"].unique())
    fig = Figure(figsize=(max(6, 1.2 * len(tasks) * max(1, len(labels)) ** 0.5) + 2, 4), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas, whose draw() lays the figure out
    ax = fig.subplots()
    # Each task's labels side by side, only the labels it has (a config group belongs to one task).
    width = 0.8 / max(means.groupby("task")["label"].nunique())
    for i, task in enumerate(tasks):
        part = means[means["task"] == task].sort_values("label")
        for j, (_, m) in enumerate(part.iterrows()):
            x = i + width * (j - (len(part) - 1) / 2)
            values = seeds[(seeds["task"] == task) & (seeds["label"] == m["label"])].sort_values("seed")["value"]
            # The seeds left of centre, the mean and its interval right of it, so that neither hides the other.
            if len(values) > 1:  # one seed is its own mean
                ax.scatter(x + _spread(len(values), -0.4 * width, -0.1 * width), values, s=18,
                           color=palette[m["label"]], alpha=0.7, lw=0, zorder=2)
            ax.errorbar(x + 0.15 * width, m["mean"], yerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]], fmt="D", ms=6,
                        color=palette[m["label"]], mec="black", ecolor="black", elinewidth=1, capsize=3, zorder=3)
        if floors is not None and (task, 1) in floors.index:
            ax.hlines(floors[task, 1], i - 0.45, i + 0.45, colors=FLOOR_STYLE["color"],
                      linestyles=FLOOR_STYLE["ls"], lw=FLOOR_STYLE["lw"], zorder=1)
    handles = [Line2D([], [], color=palette[label], marker="D", mec="black", ls="", label=label)
               for label in labels]
    if floors is not None:
        handles.append(Line2D([], [], **FLOOR_STYLE, label=FLOOR_LABEL))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set(ylabel="held-out score (each task's metric)", ylim=(-0.02, 1.02),
           title="Score at the training length\n(dots: seeds; diamond: mean, 95% bootstrap interval; dashed: floor)")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
    return fig


def length_figure(rows: list[dict[str, Any]]) -> Figure:
    """The score against evaluated length / training length, one panel per task: each label's mean with
    its bootstrap band, each seed as a dot; the floor dashed."""
    df = _frame(rows)
    floors = _floors(df)
    labels = sorted(df["label"].unique())
    palette = _palette(labels)
    intervals = length_intervals(rows)
    tasks = sorted(df["task"].unique())
    cols = min(4, len(tasks))
    nrows = -(-len(tasks) // cols)
    # Constrained layout keeps the two-line title, the shared labels and the legend inside the figure
    # (tight_layout cut the title off at both edges when one task made the figure narrow).
    fig = Figure(figsize=(3.4 * cols + 2.6, 2.9 * nrows + 1.2), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas, whose draw() lays the figure out
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)
    multipliers = sorted(df["length ×"].unique())
    for ax, task in zip(axes.flat, tasks):
        part = intervals[intervals["task"] == task]
        for label in labels:
            line = part[part["label"] == label].sort_values("length ×")
            if line.empty:
                continue
            ax.plot(line["length ×"], line["mean"], marker="o", color=palette[label], label=label, zorder=3)
            ax.fill_between(line["length ×"], line["low"], line["high"], color=palette[label], alpha=0.2, lw=0)
            # Each seed a dot just right of its length (the x axis is logarithmic: offsets are factors).
            for multiple, dots in df[(df["task"] == task) & (df["label"] == label)].groupby("length ×"):
                if len(dots) == 1:  # one seed is its own mean
                    continue
                dots = dots.sort_values("seed")
                ax.scatter(multiple * np.exp(_spread(len(dots), 0.04, 0.1)), dots["value"], s=12,
                           color=palette[label], alpha=0.7, lw=0, zorder=2)
        if floors is not None and task in floors.index.get_level_values(0):
            line = floors[task].sort_index()
            ax.plot(line.index, line.values, **FLOOR_STYLE, label=FLOOR_LABEL)
        ax.set(xscale="log", ylim=(-0.02, 1.02), title=task)
        ax.set_xticks(multipliers, [f"{m}×" for m in multipliers])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("score (task's metric)")
    fig.supxlabel("evaluated length / training length")
    fig.suptitle("Score by evaluated length\n(line: mean, band: 95% bootstrap interval, dots: seeds; dashed: floor)")
    by_label = {n: h for ax in axes.flat for h, n in zip(*ax.get_legend_handles_labels())}
    by_label = {n: by_label[n] for n in [*labels, FLOOR_LABEL] if n in by_label}  # the labels' order, the floor last
    # On the first row's last panel, beside it: constrained layout makes room for an axes' legend.
    axes[0, cols - 1].legend(list(by_label.values()), list(by_label), loc="upper left", fontsize=8, frameon=False,
                             bbox_to_anchor=(1.02, 1))
    return fig


def suite_figures(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write accuracy_by_task.png, and accuracy_by_length.png where more than one length was evaluated."""
    figures = {"accuracy_by_task.png": task_figure(rows)}
    if _frame(rows)["length ×"].nunique() > 1:
        figures["accuracy_by_length.png"] = length_figure(rows)
    paths = []
    for name, fig in figures.items():
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=120)
    return paths
