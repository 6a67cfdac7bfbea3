"""Running the capability study: its three parts, each resumable (rerunning the same command continues
where it stopped) and shared by any number of workers pointed at the same storage; and the snapshot
that copies a live SQLite storage for the report.

1. main: per task variant, in the order of `Study.variants`, every model label is tuned and confirmed:
   - a seeded grid over the learning rate shared by every model (`Study.lr_grid`: 1e-3, 3.16e-3, 1e-2
     in the CPU study, from 3.16e-4 in the gpu one; optuna's GridSampler with seed `sampler_seed`, one
     trial per grid point; weight decay, warmup and the transition-lr factor stay at the preset's values,
     as zoology does), each trial scored by its mean held-out accuracy over `tuning_seeds` (2) seeds;
   - successive-halving pruning (studies.tune `TolerantHalvingPruner`: optuna's asynchronous
     SuccessiveHalvingPruner rule, rungs at steps/4 and steps/2, reduction factor 2, with a margin: a
     trial stops only if it is more than 0.02 below the rung's top half, so that on a plateau, where
     learning rates differ by noise, nothing is pruned) on the mean accuracy over those seeds, reported
     only while the last seed trains, so no trial is pruned on one seed's curve;
   - the best grid point re-trained with `confirm_seeds` (5) fresh seeds (tune.confirm).
   The report (report.py) is rebuilt after every variant.
2. sweep: MQAR accuracy vs state size — each model at the three sizes of `Study.sweep`, `sweep_seeds`
   (3) seeds per point, at the learning rate tuned at the main size (whose point is the main study's
   first confirm seeds, not trained again).
3. ablations: GateLoop's gate components (`Study.ablations`, per variant `Study.ablations_for`, named in
   studies/ablate/ablations.py) of the 4-head model on `Study.ablation_variants` with
   `ablation_seeds` (3) seeds, at the full model's tuned learning rate, built by studies/ablate/configs.py's
   `build_ablation_configs`; the "full" row is the main study's confirm seeds of that model (the same
   config and seeds), not trained twice.

All three store into one Optuna storage (studies `capability/...`, `capability-sweep/...`,
`capability-ablate/...`), so the report is rebuilt from the storage alone.

That is protocol v1, which the committed study ran. A study with `protocol="v2"` (design §6.1, issue 24)
runs the same three parts thus:
1. main: every model tuned by the learning-rate rule (`Study.lr_search`, sampler "lr_rule": the study ends
   when the rule asks for no more points), each trial on `tuning_seeds` seeds scored on the validation
   rows (`Study.validation_size`), pruned by plateau-safe halving (pruner "safe_sha") with no rung before
   the variant's escape window (`TaskVariant.no_prune_before`); the rule's best re-trained on the
   variant's confirm seeds (`Study.confirm_seeds_for`), with no early stop where the variant says so.
2. sweep: as under v1, at each model's rule-tuned learning rate.
3. ablations: tuned like models — each ablation of `ablation_base` is a model of its own
   (`plan.ablation_specs`: label BASE@ABLATION) tuned by the same rule and confirmed on the same seeds, in
   the studies PREFIX-ablate/VARIANT/LABEL(/confirm), which `studies.tune.report` renders; "full" is the
   base model's main study.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.engine import make_url

from studies.experiments.capability.design import TaskVariant
from studies.experiments.capability.plan import PlannedRuns, ablation_plan, ablation_specs, sweep_plan
from studies.experiments.capability.report import build_capability_report
from studies.experiments.capability.study import Study
from studies.pool import WorkerDied, run_parallel
from studies.tune.budget import stop_on_signals, work
from studies.tune.jobs import confirm, retrain_job, tune_models
from studies.tune.queries import best_lr, find_study
from studies.tune.storage import GRACE_PERIOD, open_storage, study_name
from studies.tune.study import CONFIRM_SEED_OFFSET, ModelSpec


def tuned_lrs(storage: optuna.storages.BaseStorage, study: Study, variant: str, labels: list[str]) -> dict[str, float]:
    """label -> the learning rate of its best trial in the main study of `variant`."""
    lrs = {}
    for label in labels:
        name = study_name(study.prefix, variant, label)
        tuned = find_study(storage, name)
        lr = None if tuned is None else best_lr(tuned)
        if lr is None:
            raise SystemExit(f"no finished tuning study {name!r}: run `testbed capability --only main` first "
                             f"(the sweep and the ablations take their learning rates from it)")
        lrs[label] = lr
    return lrs


def model_specs(study: Study, variant: str) -> list[ModelSpec]:
    """The models run on `variant` as tune's model specs: a label, a mixer and its overrides."""
    return [ModelSpec(m.label, m.mixer, tuple(m.override_strings())) for m in study.models_for(variant)]


def _seed_jobs(storage: optuna.storages.BaseStorage, study: Study, part: str, plan: list[PlannedRuns],
               progress: bool) -> list[Any]:
    """One re-training job per planned config of the sweep or the ablations, on the plan's seeds (the first
    confirm seeds), each into its own seed study."""
    seeds = [CONFIRM_SEED_OFFSET + i for i in range(plan[0].runs)] if plan else []
    prefix = f"{study.prefix}-{'sweep' if part == 'sweep' else 'ablate'}"
    jobs = []
    for item in plan:
        name = f"{prefix}/{item.variant}/{item.label.replace('@', '/')}"
        attrs = {"part": part, "variant": item.variant, "label": item.label, "task": item.config.task_name,
                 "model": item.config.model, "lr": item.config.train.lr}
        jobs.append(retrain_job(storage, name, item.config, seeds, attrs, progress))
    return jobs


def tune_and_confirm_v2(study: Study, storage: optuna.storages.BaseStorage, variant: TaskVariant,
                        specs: list[ModelSpec], prefix: str, device: str | None, progress: bool) -> None:
    """Protocol v2 on one variant: every spec tuned by the learning-rate rule with plateau-safe pruning
    (the variant's escape window) on the validation rows, the rule's best re-trained on the variant's
    confirm seeds for every step (tuning trials may stop at the preset's target; a confirm run that stopped
    there would leave its test score either side of the solve target), in the studies
    PREFIX/VARIANT/LABEL(/confirm) (resumable)."""
    tune_models(variant.task, specs, None, storage, prefix, study.preset, study.tuning_seeds, study.overrides(variant),
                device, study.sampler_seed, progress, task_label=variant.label, sampler="lr_rule", pruner="safe_sha",
                lr_search=study.lr_search, no_prune_before=variant.no_prune_before)
    confirm(variant.task, specs, storage, prefix, study.confirm_seeds_for(variant.label), device, progress,
            task_label=variant.label, every_step=True)


def run_variant(study: Study, storage: optuna.storages.BaseStorage, variant: TaskVariant, device: str | None,
                progress: bool) -> None:
    """The main part on one task variant: every model tuned on the lr grid, its best re-trained on the
    confirm seeds (resumable: what the storage holds is not trained again)."""
    specs = model_specs(study, variant.label)
    if study.protocol == "v2":
        tune_and_confirm_v2(study, storage, variant, specs, study.prefix, device, progress)
        return
    tune_models(variant.task, specs, len(study.lr_grid), storage, study.prefix, study.preset,
                study.tuning_seeds, variant.override_strings(), device, study.sampler_seed, progress,
                task_label=variant.label, sampler="grid", pruner="sha", grid={"lr": study.lr_grid})
    confirm(variant.task, specs, storage, study.prefix, study.confirm_seeds, device, progress,
            task_label=variant.label)


def partial_report(storage: optuna.storages.BaseStorage, study: Study, out: Path) -> None:
    """The report of a study in progress (another worker may still be training a variant's last confirm seeds:
    the report reads what is stored). A refusal of the report (say, models of one variant stored under
    different solve targets) is printed in one line here and the run goes on; the last report, after every
    worker, is whole."""
    try:
        build_capability_report(storage, study, out)
    except ValueError as e:
        print(f"partial report not rebuilt yet ({e}); the next one will be", flush=True)


def run_study(study: Study, url: str, out: Path, device: str | None, only: str | None, progress: bool,
              report: bool = True) -> None:
    """Main, sweep and ablations (or only one part), resumable; the report after every variant and part."""
    storage = open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if only in (None, "main"):
        for variant in study.variants:
            run_variant(study, storage, variant, device, progress)
            if report:
                partial_report(storage, study, out)  # partial results after every variant
    if only in (None, "sweep"):
        lrs = tuned_lrs(storage, study, study.sweep_variant, sorted({p.label for p in study.sweep}))
        work(_seed_jobs(storage, study, "sweep", sweep_plan(study, device, lrs), progress))
        if report:
            partial_report(storage, study, out)
    if only in (None, "ablations"):
        if study.protocol == "v2":  # tuned like models, each by the rule
            for label in study.ablation_variants:
                specs = [spec for spec, _ in ablation_specs(study, label, device)]
                if specs:
                    tune_and_confirm_v2(study, storage, study.variant(label), specs, f"{study.prefix}-ablate", device,
                                        progress)
        else:
            lrs = {v: tuned_lrs(storage, study, v, [study.ablation_base])[study.ablation_base]
                   for v in study.ablation_variants}
            work(_seed_jobs(storage, study, "ablations", ablation_plan(study, device, lrs), progress))
        if report:
            partial_report(storage, study, out)


def _worker_run(study: Study, url: str, out: str, device: str | None, only: str | None, index: int) -> None:
    # Worker 0 writes the partial reports; the parent writes the last one.
    run_study(study, url, Path(out), device, only, progress=False, report=index == 0)


def run_workers(study: Study, url: str, out: Path, device: str | None, only: str | None, workers: int,
                progress: bool = True) -> None:
    """`run_study` in this process (workers=1) or on `workers` processes sharing the storage `url`."""
    if workers == 1:
        run_study(study, url, out, device, only, progress)
        return
    open_storage(url)  # create the schema once, before the workers race to
    run_parallel(_worker_run, [(study, url, str(out), device, only, i) for i in range(workers)], workers,
                 report=lambda position, result: None)


def copy_sqlite(source: Path, target: Path) -> None:
    """`source` copied to `target` by SQLite's backup API (a consistent copy even while workers write to it),
    the source opened read-only (nothing can be written to it), through a temporary file renamed into place
    (a reader never sees half a copy): the snapshot, and --add-model's copy of the committed storage."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial")
    partial.unlink(missing_ok=True)
    committed, copy = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True), sqlite3.connect(partial)
    try:
        committed.backup(copy)
    finally:
        copy.close()
        committed.close()
    partial.replace(target)


def snapshot(url: str | None, out: Path) -> str:
    """Copy the SQLite study at `url` to out/studies.db with SQLite's backup API (a consistent copy even
    while workers write to it) and return the copy's URL. Where the live storage is not SQLite, or is
    out/studies.db itself, there is nothing to copy: ValueError."""
    if url is None:
        raise ValueError("--snapshot needs --storage: the live study to copy (e.g. sqlite:///runs/capability/studies.db)")
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise ValueError(f"--snapshot copies a SQLite file; --storage {url!r} is not one (a PostgreSQL study needs no "
                         f"snapshot: read the report from it with the same command without --snapshot)")
    source, target = Path(parsed.database).resolve(), (out / "studies.db").resolve()
    if not source.exists():
        raise ValueError(f"--storage {url!r}: no such file {source}")
    if source == target:
        raise ValueError(f"--storage is {target} itself; point --storage at the live study (e.g. under runs/)")
    copy_sqlite(source, target)
    return f"sqlite:///{target}"


@contextmanager
def stopped_in_one_line() -> Iterator[None]:
    """Around a command's study workers: Ctrl-C or SIGTERM (`stop_on_signals`: once, as Ctrl-C) and a worker's
    death end the command in one line that says what happened to the running trials and how to resume."""
    try:
        with stop_on_signals():  # SIGTERM as Ctrl-C: one line, the workers stopped, a single worker's trial failed
            yield
    except KeyboardInterrupt:
        raise SystemExit("testbed capability: interrupted (the trials it was running do not count: failed at "
                         "once with one worker, by the heartbeat check of the next run with several); rerun the "
                         "same command to resume") from None
    except WorkerDied as death:  # killed (kill -9, the out-of-memory killer): the others were stopped with it
        raise SystemExit(f"testbed capability: a worker died ({death.cause}) and the others were stopped; the trials "
                         f"they were running are failed and trained again once their heartbeats are {GRACE_PERIOD} s "
                         f"old: rerun the same command to resume") from None
