"""The capability report's figures, drawn from what the report read (it trains nothing):
- accuracy_by_model.png: each model's confirmed score per variant (mean, 95 % CI), the floors dashed.
- learning_curves.png: median and range over the confirm seeds of the held-out task metric against the
  step, per variant and model, the floor dashed. A seed that stopped at the target keeps its last value.
- state_size.png: the sweep's accuracy against state size, one line per model, the floor dashed.
- extrapolation.png: state-tracking variants at 1×, 2×, 4×, 8× the training length, the floors dashed.
Protocol v2's study adds `headline_figure` (headline.png): every confirm seed's test score at each length a
prediction reads, the mean with its bootstrap interval, floor and solve target.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from studies.experiments.capability.design import ci_bounds
from studies.experiments.capability.seeds import Seeds, floor
from studies.experiments.capability.study import Study
from studies.stats import bootstrap_ci
from studies.presets import get_preset


def write_figures(study: Study, main: dict[tuple[str, str], Seeds], sweep_rows: list[dict[str, Any]],
                  out: Path) -> list[Path]:
    """The figures of the confirmed runs `main` ((variant, label) -> Seeds) and the sweep's rows (as the
    report's sweep table has them), written to `out`; returns their paths, those with nothing to draw left out."""
    # Imported here: matplotlib, pandas and seaborn take seconds to load, and only the figures need them
    # (the dry run and `--help` do not).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import pandas as pd
    import seaborn as sns

    paths = []
    order = [m.label for m in study.models]
    variants = [v.label for v in study.variants if any(k[0] == v.label for k in main)]
    if variants:
        df = pd.DataFrame([{"variant": variant, "model": label, "score": s}
                           for (variant, label), seeds in main.items()
                           for s in seeds.scores(study.variant(variant).metric)])
        hue = [m for m in order if m in set(df["model"])]
        fig, ax = plt.subplots(figsize=(max(8.0, 2.5 + 0.35 * len(variants) * len(hue)), 4.2))
        sns.barplot(data=df, x="variant", y="score", hue="model", order=variants, hue_order=hue,
                    errorbar=ci_bounds, alpha=0.7, ax=ax)
        for i, variant in enumerate(variants):
            ax.hlines(floor(study, variant)[1], i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1)
        ax.set(ylim=(0, 1.02), xlabel="", ylabel="task metric (accuracy or exact match)",
               title="Confirmed score: mean and 95% Student-t CI over seeds (as in the tables); dashed: best no-solve baseline")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        paths.append(out / "accuracy_by_model.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

        rows = []
        for (variant, label), seeds in main.items():
            steps = sorted({s for c in seeds.curves for s, _ in c})
            for i, curve in enumerate(seeds.curves):
                values, last = dict(curve), 0.0
                for step in steps:  # a seed that stopped at its target keeps its last value
                    last = values.get(step, last)
                    rows.append({"variant": variant, "model": label, "seed": i, "step": step, "accuracy": last})
        df = pd.DataFrame(rows)
        cols = min(3, len(variants))
        grid = sns.relplot(data=df, x="step", y="accuracy", hue="model", col="variant", col_order=variants,
                           hue_order=[m for m in order if m in set(df["model"])], kind="line", estimator="median",
                           errorbar=("pi", 100), col_wrap=cols, height=2.8, aspect=1.3, facet_kws={"sharex": False})
        for variant, ax in grid.axes_dict.items():
            ax.axhline(floor(study, variant)[1], ls="--", color="black", lw=1)
            ax.set_ylim(0, 1.02)
        grid.set_axis_labels("step", "held-out score (task's metric)")
        grid.figure.suptitle("Learning curves: median and range over confirm seeds; dashed: best no-solve baseline",
                             y=1.02)
        paths.append(out / "learning_curves.png")
        grid.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(grid.figure)

    if sweep_rows:
        variant = study.sweep_variant
        metric = study.variant(variant).metric
        df = pd.DataFrame([{"model": r["label"], "state size": r["state"], metric: s} for r in sweep_rows
                           for s in r["scores"]])
        fig, ax = plt.subplots(figsize=(7, 4.2))
        sns.lineplot(data=df, x="state size", y=metric, hue="model", hue_order=[m for m in order if m in set(df["model"])],
                     marker="o", errorbar=ci_bounds, ax=ax)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on a short axis
        ax.axhline(floor(study, variant, 1, study.sweep_seeds)[1], ls="--", color="black", lw=1,
                   label="best no-solve baseline")
        ax.set(ylim=(0, 1.02), xlabel="decoding state (real scalars)", title=f"{variant}: accuracy vs state size")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        paths.append(out / "state_size.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)

    tracked = [v for v in variants if study.variant(v).task == "state_tracking"]
    if tracked:
        rows = []
        multipliers = (1, *get_preset(study.preset).multipliers("state_tracking"))
        for variant in tracked:
            metric = study.variant(variant).metric
            for label in order:
                seeds = main.get((variant, label))
                if seeds is None:
                    continue
                for m in multipliers:
                    rows += [{"variant": variant, "model": label, "× training length": m, "accuracy": s}
                             for s in seeds.scores(metric, m)]
        df = pd.DataFrame(rows)
        grid = sns.relplot(data=df, x="× training length", y="accuracy", hue="model", col="variant",
                           col_order=tracked, hue_order=[m for m in order if m in set(df["model"])], kind="line",
                           marker="o", errorbar=ci_bounds, col_wrap=min(4, len(tracked)), height=2.8)
        for variant, ax in grid.axes_dict.items():
            ax.plot(multipliers, [floor(study, variant, m)[1] for m in multipliers], ls="--", color="black", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xticks(multipliers, [f"{m}×" for m in multipliers])
            ax.set_ylim(0, 1.02)
        grid.figure.suptitle("State tracking beyond the training length: mean, 95% CI; dashed: best no-solve "
                             "baseline", y=1.03)
        paths.append(out / "extrapolation.png")
        grid.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(grid.figure)
    return paths


def headline_figure(study: Study, rows: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per column of `report_v2.headline_rows` (a variant at a length a prediction reads), the
    models down the side in the study's order: every confirm seed's test score as a point, ◆ the mean with its
    95 % bootstrap interval, the floor dashed, the solve target dotted. None (nothing drawn) without rows."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    columns = list(dict.fromkeys(r["column"] for r in rows))
    models = [m.label for m in study.models]
    colors = dict(zip(models, sns.color_palette(n_colors=len(models))))
    ncols = min(4, len(columns))
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols + 1.2, 0.3 * len(models) * nrows + 1.0),
                             sharey=True, squeeze=False)
    for ax, column in zip(axes.flat, columns):
        mine = [r for r in rows if r["column"] == column]
        for y, model in enumerate(models):
            scores = [r["score"] for r in mine if r["model"] == model]  # in seed order (headline_rows sorts)
            if not scores:
                continue
            # Seeds spread top to bottom in seed order (deterministic, unlike a random jitter).
            offsets = np.linspace(-0.25, 0.25, len(scores)) if len(scores) > 1 else [0.0]
            ax.scatter(scores, y + np.asarray(offsets), color=colors[model], s=9, zorder=3)
            mean, low, high = bootstrap_ci(scores)
            ax.errorbar([mean], [y], xerr=[[mean - low], [high - mean]], fmt="D", color="black", ms=3.5, capsize=2,
                        zorder=4)
        if mine[0]["floor"] is not None:
            ax.axvline(mine[0]["floor"], color="black", ls="--", lw=1)
        ax.axvline(mine[0]["target"], color="grey", ls=":", lw=1)
        ax.set(xlim=(-0.02, 1.02), title=column, ylim=(len(models) - 0.5, -0.5))
        ax.set_yticks(range(len(models)), models)
        ax.grid(axis="y", lw=0.3, alpha=0.5)
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("test score")
    fig.suptitle("Confirm seeds' test scores at the lengths the predictions read: each seed a point, ◆ mean with "
                 "95% bootstrap CI; dashed: floor; dotted: solve target")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
