"""The ablation study's figures, from stored runs only (they train nothing):

    ablation_heatmap.png   mean score (the task's metric) per (ablation, task)
    gates.png              |a_n| and arg a_n along one held-out sequence, for the trained `full` models kept

Figures are made without pyplot (matplotlib's Figure on an Agg canvas): no backend to choose, no global
state, nothing to close.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from studies.ablate.ablations import ABLATIONS
from studies.ablate.table import ablation_runs
from studies.config import run_config_from_dict
from studies.floors import metric_label
from studies.train import build_model
from tasks import TaskData


def heatmap_figure(records: list[dict[str, Any]], names: dict[str, list[str]]) -> Figure:
    """Mean score (the task's metric) per (ablation, task) as a heatmap."""
    runs = ablation_runs(records, names)
    frame = pd.DataFrame([{"ablation": a, "task": t, "accuracy": float(np.mean(list(v.values())))}
                          for (a, t), v in runs.items()])
    grid = frame.pivot(index="ablation", columns="task", values="accuracy")
    grid = grid.reindex([a for a in ABLATIONS if a in grid.index])
    # Constrained layout makes room for the title and the colorbar's label, which tight_layout clipped
    # when one task made the figure narrow.
    fig = Figure(figsize=(max(5.5, 1.6 * grid.shape[1] + 3), 0.45 * grid.shape[0] + 1.8), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas, whose draw() lays the figure out
    ax = fig.subplots()
    sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax,
                cbar_kws={"label": "held-out score (task's metric)"})
    ax.set_title("GateLoop ablations\nmean held-out score over seeds")
    ax.set(xlabel="task", ylabel="")
    ax.tick_params(axis="y", rotation=0)  # ablation names read horizontally, one per row
    return fig


def ablation_heatmap(records: list[dict[str, Any]], names: dict[str, list[str]], path: Path) -> None:
    heatmap_figure(records, names).savefig(path, dpi=120)


def gate_figure(out: Path, records: list[dict[str, Any]], path: Path, channels: int = 4) -> bool:
    """|a_n| and arg a_n over positions of one held-out sequence, for the trained `full` models kept.

    Shows the first layer's gates for the `channels` channels whose |a| varies most along the sequence
    (the most data-controlled ones), with the input tokens on the x axis. Reads stored weights only.
    """
    kept = [r for r in records if (out / "runs" / f"{r['run_id']}.pt").exists()]
    kept = sorted(kept, key=lambda r: r["config"]["task"]["name"])
    if not kept:
        return False
    length = max(r["config"]["task"]["seq_len"] for r in kept)
    # Wide enough for one readable token label per position; the legend goes beside the axes, not on the lines.
    fig = Figure(figsize=(max(10.0, 0.24 * length + 2.5), 4.2 * len(kept)), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas, whose draw() lays the figure out
    axes = fig.subplots(2 * len(kept), 1, squeeze=False)
    for i, record in enumerate(kept):
        config = run_config_from_dict(record["config"])
        model = build_model(config)
        model.load_state_dict(torch.load(out / "runs" / f"{record['run_id']}.pt", weights_only=True))
        model.eval()
        tokens = TaskData(config.task, seed=config.train.seed, test_size=1).test.inputs[:1]  # (1, L)
        block = model.blocks[0]
        with torch.no_grad():
            a = block.mixer.gates(block.mixer_norm(model.embedding(tokens)))[0]  # (L, H, K)
        a = a.reshape(a.shape[0], -1)  # (L, H·K)
        magnitude, angle = a.abs(), a.angle()
        chosen = magnitude.std(0).argsort(descending=True)[:channels]
        token_names = config.task.token_names()
        labels = [token_names[t] for t in tokens[0].tolist()]
        ax_m, ax_p = axes[2 * i, 0], axes[2 * i + 1, 0]
        for c in chosen.tolist():
            ax_m.plot(magnitude[:, c].numpy(), marker=".", label=f"channel {c}")
            ax_p.plot(angle[:, c].numpy(), marker=".", label=f"channel {c}")
        score = ablation_runs([record], {record["run_id"]: ["full"]})["full", config.task_name][record["run_id"]]
        ax_m.set(ylabel="|a_n|", title=f"{config.task_name}: layer-1 gates of the trained full GateLoop "
                                       f"({metric_label(config.task.metric)} {score:.2f})")
        ax_p.set(ylabel="arg a_n (rad)", xlabel="input token at position n (one held-out sequence)")
        ax_m.set_xticks(range(len(labels)), [])
        ax_p.set_xticks(range(len(labels)), labels, fontsize=8, rotation=90)
        for ax in (ax_m, ax_p):
            ax.set_xlim(-0.5, len(labels) - 0.5)
            ax.grid(alpha=0.3)
        ax_m.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.savefig(path, dpi=120)
    return True
