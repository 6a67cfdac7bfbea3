"""One more model beside a committed capability study, without retraining the committed ones.

    testbed capability --add-model SPEC [--label LABEL] --from-storage COMMITTED.db --storage sqlite:///COPY.db
                       [--out DIR] [--workers N] [--device ...] [--dry-run] [mixer.key=value ...]

SPEC is any mixer name (a registered one, an installed one, or an import path: `pkg.module:Class`,
`path/to/file.py:Class`). The model joins the study as one more label (family "added"), at the width
the study's models share (d_model 48 in the CPU study) unless `mixer.d_model=N` says otherwise, with any
other `mixer.key=value` overrides checked against its config class. On the study's variants it is tuned
and confirmed under the study's own protocol: the lr grid, `tuning_seeds` seeds per trial, the
successive-halving pruner, the step budgets, `confirm_seeds` fresh seeds (run.py's main part, run on a
study whose only model it is, `solo`; a study under protocol v2 runs v2's). It trains into a copy of the
study's storage, made with SQLite's backup API from the committed file opened read-only; the committed
models' runs are read from the copy and never trained again (only the added model's studies are opened to
train). The report is rebuilt from the copy with the study's floors, statistics and figures, the new model
beside the others (the study's description, printed under the report's title, says what was added and how).

`--dry-run` prints the plan of the added model's runs with a measured wall-time estimate and what the copy
holds, and creates nothing. Rerunning the same command resumes: an existing copy is kept (it must hold
every study of the committed storage). The copy is never the committed file, and the report never goes
to the committed report's directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import sqlite3
from collections import Counter
from pathlib import Path

from sqlalchemy.engine import make_url

from baselines import get_mixer
from baselines.import_path import mixer_label
from studies.checks import check_at_least_one, check_device, check_out_dir, check_storage_url
from studies.config import parse_fields, parse_mixer_overrides
from studies.experiments.capability.design import ModelLabel
from studies.experiments.capability.plan import dry_run, main_plan
from studies.experiments.capability.report import build_capability_report
from studies.experiments.capability.run import copy_sqlite, run_study, stopped_in_one_line
from studies.experiments.capability.study import STUDIES, Study
from studies.pool import default_workers, run_parallel
from studies.suite.configs import check_configs
from studies.tune.storage import open_storage

ADDED = "added"  # the family of an added model, in every table beside the study's own families


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `testbed capability --add-model` (the others are the study's own)."""
    parser.add_argument("--add-model", default=None, metavar="MIXER",
                        help="tune and confirm this mixer (a name, pkg.module:Class or path/to/file.py:Class) under the "
                             "study's protocol beside the committed models, into a copy of --from-storage")
    parser.add_argument("--label", default=None, help="--add-model's label in the report (default: its class name)")
    parser.add_argument("--from-storage", default=None,
                        help="--add-model: the committed study's storage to copy (e.g. results/capability/studies.db); "
                             "opened read-only")
    parser.add_argument("overrides", nargs="*", help="--add-model: mixer.key=value settings of the added model")


def added_model(study: Study, spec: str, label: str | None, overrides: list[str]) -> ModelLabel:
    """The model label for mixer `spec` with `mixer.key=value` overrides, at the study's shared width unless
    they set d_model. ValueError (one line) for an unknown mixer, a label the study has, a bad override."""
    cls = get_mixer(spec)  # the one-line refusal of a path that does not import or a class off the contract
    label = label if label is not None else mixer_label(spec)
    if not label or "/" in label or label.strip() != label:
        raise ValueError(f"--label {label!r}: a label names studies PREFIX/VARIANT/LABEL, so it must be a non-empty "
                         f"name without '/' or surrounding spaces")
    if label in {m.label for m in study.models}:
        raise ValueError(f"--label {label!r} is a model the study `{study.preset}` already has; give the added model "
                         f"another --label")
    mixer_overrides = parse_mixer_overrides(overrides, "the added model trains on the study's tasks, steps and "
                                            "backbone; only mixer.key=value settings are its own")
    fields = parse_fields(cls.config_class, mixer_overrides, f"mixer ({spec})")
    if "d_model" not in fields:
        fields = {"d_model": shared_width(study), **fields}
    cls.config_class(**fields)  # the config's own validation, before anything is created
    settings = ", ".join(f"{k}={v}" for k, v in fields.items())
    return ModelLabel(label, spec, tuple(fields.items()), ADDED, f"{spec} with {settings}")


def shared_width(study: Study) -> int:
    """The d_model most of the study's models share (every one of the CPU study's: 48)."""
    widths = Counter(dict(m.overrides).get("d_model") for m in study.models)
    ((width, _),) = widths.most_common(1)
    return width


def extend(study: Study, model: ModelLabel) -> Study:
    """The study with `model` as its last label, and its description saying what was added and how (the
    report prints it under its title); predictions, sweep and ablations unchanged."""
    note = (f"Added beside the committed models: `{model.label}` ({model.note}), tuned and confirmed under this "
            f"study's protocol (its learning rates, seeds, pruner, step budgets and confirm seeds) into a copy of "
            f"the study's storage; every other model's runs are the committed ones, read from that copy, not "
            f"retrained. Floors, statistics and figures are the study's own; p values are Holm-corrected over each "
            f"table's comparisons, the added model's among them; the pre-registered predictions do not name it.")
    return dataclasses.replace(study, models=(*study.models, model), description=f"{study.description}\n\n{note}")


def solo(study: Study, model: ModelLabel) -> Study:
    """`study` with `model` as its only model and its main part only (no predictions, sweep or ablations):
    what is trained for an added model, under the study's protocol, in the study's own study names."""
    return dataclasses.replace(study, models=(model,), predictions=(), sweep=(), ablation_variants=(),
                               ablations_by_variant=(), ablation_base=model.label)


def _train(study: Study, url: str, out: str, device: str | None, progress: bool) -> None:
    """One worker's share of the added model's main part (a module-level function: workers are spawned)."""
    run_study(study, url, Path(out), device, "main", progress, report=False)


def train_added(study: Study, model: ModelLabel, url: str, out: Path, device: str | None, workers: int,
                progress: bool) -> None:
    """Tune and confirm `model` on every variant of `study` in the storage `url`, on `workers` processes
    sharing it (resumable); the report is the caller's."""
    alone = solo(study, model)
    if workers == 1:
        _train(alone, url, str(out), device, progress)
        return
    open_storage(url)  # create the schema once, before the workers race to
    run_parallel(_train, [(alone, url, str(out), device, False) for _ in range(workers)], workers,
                 report=lambda position, result: None)


def source_path(text: str) -> Path:
    """--from-storage as a file: a path, or an sqlite:/// URL; it must exist."""
    path = Path(make_url(text).database or "") if "://" in text else Path(text)
    if not path.is_file():
        raise ValueError(f"--from-storage {text!r}: no such file (give the committed storage, e.g. "
                         f"results/capability/studies.db)")
    return path


def study_names(path: Path) -> dict[str, int]:
    """Study name -> its COMPLETE trials, read from the SQLite storage at `path` opened read-only."""
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT s.study_name, COUNT(t.trial_id) FROM studies s LEFT JOIN trials t "
                              "ON t.study_id = s.study_id AND t.state = 'COMPLETE' GROUP BY s.study_name").fetchall()
        db.close()
    except sqlite3.Error as e:
        raise ValueError(f"{str(path)!r} cannot be read as an Optuna storage ({e})") from None
    return dict(rows)


def check_source(study: Study, source: Path) -> dict[str, int]:
    """The committed storage's studies; ValueError where it holds none of `study`'s main part."""
    names = study_names(source)
    if not any(name.startswith(f"{study.prefix}/") for name in names):
        raise ValueError(f"--from-storage {str(source)!r} holds no study of the capability study `{study.preset}` "
                         f"(none named {study.prefix}/...): give that study's storage, or pick its --preset")
    return names


def copy_target(url: str, source: Path) -> Path:
    """The file of --storage: an SQLite URL, not the committed file; an existing one must be a copy of it (a
    resumed run). Its directory need not exist yet (the copy creates it); ValueError otherwise."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise ValueError(f"--storage {url!r}: with --add-model it names the SQLite file the committed storage is "
                         f"copied to, e.g. sqlite:///runs/mine/studies.db")
    target = Path(parsed.database)
    if target.resolve() == source.resolve():
        raise ValueError(f"--storage {url!r} is the committed storage itself; the added model trains into a copy: "
                         f"name another file, e.g. sqlite:///runs/mine/studies.db")
    if target.is_dir():
        raise ValueError(f"--storage {url!r}: {str(target)!r} is a directory; name a file in it")
    check_out_dir(target.parent, "--storage's directory")
    if target.exists():
        missing = sorted(set(study_names(source)) - set(study_names(target)))
        if missing:
            raise ValueError(f"--storage {url!r} exists and is not a copy of {str(source)!r} (it lacks {len(missing)} "
                             f"of its studies, e.g. {missing[0]!r}): remove it, or name another file")
    return target


def check_out(out: Path, source: Path) -> Path:
    """The report directory: not the committed storage's (its report.md is the committed report)."""
    check_out_dir(out)
    if out.resolve() == source.resolve().parent:
        raise ValueError(f"--out {str(out)!r} holds the committed storage and its report; the report with the added "
                         f"model goes elsewhere (default: the directory of --storage)")
    return out


def plan_lines(study: Study, model: ModelLabel, source: Path, target: Path, names: dict[str, int], out: Path,
               device: str | None) -> str:
    """What the command copies, reads and trains, and where the report goes."""
    committed = [m.label for m in study.models if m.label != model.label]
    confirmed = sum(names.get(f"{study.prefix}/{v.label}/{label}/confirm", 0)
                    for v in study.variants for label in committed)
    mine = [item for item in main_plan(study, device) if item.label == model.label]
    copy = "exists: resumed" if target.exists() else "made by the run"
    runs, steps = sum(i.runs for i in mine), sum(i.runs * i.config.train.steps for i in mine)
    return "\n".join([
        f"added model `{model.label}`: {model.note}",
        f"storage: {source} (opened read-only, never written) copied to {target} ({copy})",
        f"read from the copy, not retrained: {len(committed)} models × {len(study.variants)} variants, "
        f"{confirmed} confirm runs",
        f"trained: `{model.label}` on {len(mine)} variants, {runs} runs ({mine[0].detail} per variant), at most "
        f"{steps:,} steps",
        f"report: {out / 'report.md'}, `{model.label}` beside the committed models",
    ])


def run(args: argparse.Namespace) -> int:
    """`testbed capability --add-model ...`: check everything, then the dry run, or copy, train and report."""
    study = STUDIES[args.preset]
    workers = default_workers() if args.workers is None else args.workers
    try:
        if args.add_model is None:
            given = [flag for flag, value in (("--label", args.label), ("--from-storage", args.from_storage),
                                              ("mixer.key=value settings", args.overrides)) if value]
            raise ValueError(f"{', '.join(given)} go with --add-model MIXER")
        for flag, value in (("--snapshot", args.snapshot), ("--only", args.only)):
            if value:
                raise ValueError(f"{flag} does not go with --add-model (which runs the main part for the added model)")
        if args.from_storage is None or args.storage is None:
            raise ValueError("--add-model needs --from-storage (the committed storage, e.g. "
                             "results/capability/studies.db) and --storage (the copy it trains into, e.g. "
                             "sqlite:///runs/mine/studies.db)")
        check_at_least_one("--workers", workers)
        check_device(args.device)
        source = source_path(args.from_storage)
        names = check_source(study, source)
        target = copy_target(args.storage, source)
        out = check_out(Path(args.out) if args.out is not None else target.parent, source)
        model = added_model(study, args.add_model, args.label, args.overrides)
        extended = extend(study, model)
        check_configs([item.config for item in main_plan(extended, args.device) if item.label == model.label])
    except (ValueError, TypeError) as e:
        raise SystemExit(f"testbed capability: {e}") from None
    print(plan_lines(extended, model, source, target, names, out, args.device), flush=True)
    if args.dry_run:
        print(dry_run(extended, workers, args.device, only="main", labels=(model.label,)))
        return 0
    if not target.exists():
        copy_sqlite(source, target)
    url = check_storage_url(f"sqlite:///{target}")
    with stopped_in_one_line():
        train_added(extended, model, url, out, args.device, workers, progress=not args.quiet)
    print(build_capability_report(open_storage(url), extended, out))
    return 0
