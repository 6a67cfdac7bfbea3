"""The learning rate every ablation of a task trains at, with --lr-from-storage: the full model's tuned one,
read as every report reads a tuning study's learning rate (studies.tune.queries: its best trial's)."""
from __future__ import annotations

from collections.abc import Sequence

from studies.tune.queries import best_lr, find_study
from studies.tune.storage import open_existing_storage, study_name


def tuned_learning_rates(storage: str, prefix: str, tasks: Sequence[str]) -> dict[str, float]:
    """The best `train.lr` of the full model's tuning study per task (`testbed tune --models gateloop`)."""
    opened = open_existing_storage(storage)
    lrs = {}
    for task in tasks:
        name = study_name(prefix, task, "gateloop")
        study = find_study(opened, name)
        if study is None:
            raise ValueError(f"no study {name!r} in {storage}: run `testbed tune --task {task} --models gateloop "
                             f"--study-prefix {prefix}` first, or drop --lr-from-storage")
        try:
            lr = best_lr(study)
        except ValueError as e:  # its best trial searched no learning rate
            raise ValueError(f"{e}; use a study that tunes train.lr, or drop --lr-from-storage") from None
        if lr is None:
            raise ValueError(f"study {name!r} in {storage} has no finished trial yet: let `testbed tune` finish "
                             f"one, or drop --lr-from-storage")
        lrs[task] = lr
    return lrs
