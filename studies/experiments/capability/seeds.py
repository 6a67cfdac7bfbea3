"""What the report reads back from the storage: the runs of one config, seed by seed (`Seeds`), and the
floor they are read against, on exactly their held-out rows (`floor`)."""
from __future__ import annotations

from dataclasses import dataclass

import optuna

from studies.experiments.capability.study import Study
from studies.presets import get_preset
from studies.tune.queries import earliest_by_seed, find_study
from studies.tune.study import CONFIRM_SEED_OFFSET
from tasks import TASKS, make_task
from tasks.shortcuts import floor as shortcut_floor


@dataclass(frozen=True)
class Seeds:
    """The confirmed runs of one config: one entry per seed."""

    final: list[dict[int, dict[str, float]]]  # per seed: length -> {"accuracy", "sequence_accuracy"}
    curves: list[list[tuple[int, float]]]  # per seed: (step, held-out score on the task's metric)
    num_parameters: int
    state_size: int
    train_length: int

    def scores(self, metric: str, multiplier: int = 1) -> list[float]:
        """Per seed, the metric at `multiplier` × L. A diverged run has no final metrics: it scores 0, it is
        not dropped; a length a finished run was never evaluated at is an error, not a 0."""
        length = self.train_length * multiplier
        out = []
        for f in self.final:
            if f and length not in f:
                raise ValueError(f"no result at length {length} (evaluated: {sorted(f)})")
            out.append(f[length][metric] if f else 0.0)
        return out


def load_seeds(storage: optuna.storages.BaseStorage, name: str, seeds: int | None = None) -> Seeds | None:
    """The earliest COMPLETE trial per seed of the seed study `name` (confirm, sweep or ablation), of its
    first `seeds` confirm seeds when given; None where the study or its trials are missing."""
    study = find_study(storage, name)
    if study is None:
        return None
    trials = list(earliest_by_seed(study, None if seeds is None else range(CONFIRM_SEED_OFFSET + seeds)).values())
    if not trials:
        return None
    metric = TASKS[trials[0].user_attrs["config"]["task"]["name"]].metric
    return Seeds(
        final=[{int(f["length"]): f for f in t.user_attrs.get("final") or []} for t in trials],
        curves=[[(m["step"], m[metric]) for m in t.user_attrs.get("metrics") or []] for t in trials],
        num_parameters=trials[0].user_attrs["num_parameters"],
        state_size=trials[0].user_attrs["state_size"],
        train_length=trials[0].user_attrs["config"]["task"]["seq_len"],
    )


def floor(study: Study, variant: str, multiplier: int = 1, runs: int | None = None) -> tuple[str, float]:
    """(best no-solve baseline, its score) on `variant`'s metric at `multiplier` × L, on the held-out rows
    of the first `runs` confirm seeds (default: all of them), which the sweep's and the ablations' runs
    share: their test sets at L, their `test_at_length` sets beyond (`tasks.shortcuts.floor`, cached)."""
    v = study.variant(variant)
    task = make_task(v.task, **v.knobs_dict())
    runs = study.confirm_seeds if runs is None else runs
    seeds = tuple(CONFIRM_SEED_OFFSET + i for i in range(runs))
    name, score, _ = shortcut_floor(task, get_preset(study.preset).train["test_size"], seeds,
                                    None if multiplier == 1 else task.seq_len * multiplier)
    return name, score
