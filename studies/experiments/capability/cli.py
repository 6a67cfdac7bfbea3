"""The capability study (issue 14): matched model families, trained until they learn, tuned on a grid.

    testbed capability [--storage URL] [--out results/PREFIX] [--workers N] [--device ...]
                       [--preset capability|v2|gpu] [--dry-run] [--only main|sweep|ablations] [--quiet]
                       [--snapshot]

Everything the study is — which models, at which widths and state sizes; which task variants, at which
step budgets; the tuning protocol; the state-size sweep; the ablations; and the predictions, written
down before the run — is Python data in this package (design.py, study.py). The command runs it in three
parts (run.py), each resumable and shared by any number of workers pointed at the same `--storage`
(`--workers N` starts N of them on this machine), and rebuilds the report (report.py) from the storage.
`--dry-run` prints the plan with state sizes, parameter counts and a wall-time estimate (plan.py).
`--snapshot` copies a live SQLite storage to OUT/studies.db and rebuilds OUT's report from the copy.
`--add-model MIXER --from-storage DB --storage sqlite:///COPY.db` tunes and confirms one more model under
the study's protocol, in a copy of the committed storage, and rebuilds the report with it (added.py).
"""
from __future__ import annotations

import argparse
import sys

import optuna
from sqlalchemy.engine import make_url

from studies.checks import check_at_least_one, check_device, check_out_dir, check_storage_url
from studies.experiments.capability import added
from studies.experiments.capability.plan import dry_run, family_table
from studies.experiments.capability.report import build_capability_report
from studies.experiments.capability.run import run_workers, snapshot, stopped_in_one_line
from studies.experiments.capability.study import STUDIES, Study
from studies.pool import default_workers
from studies.tune.storage import open_existing_storage, open_storage, storage_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="capability", choices=sorted(STUDIES),
                        help="which study (capability: v1, the committed record; v2: study v2 under protocol v2; "
                             "gpu: zoology's scale)")
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite:///OUT/studies.db)")
    parser.add_argument("--out", default=None,
                        help="report directory (default: results/PREFIX, the study's prefix: results/capability, "
                             "results/capability-v2, results/capability-gpu; with --add-model the copy's directory)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes on this machine sharing the storage (default: the usable CPU cores)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the preset's)")
    parser.add_argument("--only", default=None, choices=("main", "sweep", "ablations"), help="run one part only")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the estimated wall time; train nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--snapshot", action="store_true",
                        help="train nothing: copy the SQLite --storage consistently to OUT/studies.db (SQLite's "
                             "backup API, safe while the study runs) and rebuild OUT's report from that copy")
    added.add_arguments(parser)  # --add-model: one more model beside the committed study (added.py)


def default_out(study: Study) -> str:
    """Each study reports into its own folder, named by its prefix (v1's stays results/capability)."""
    return f"results/{study.prefix}"


def check_holds_study(url: str, study: Study) -> None:
    """A snapshot rebuilds `study`'s report from `url`: refuse a storage that holds none of its studies (the
    report would be empty), naming the preset whose studies it holds where it holds another study's."""
    prefixes = {name.split("/")[0] for name in optuna.get_all_study_names(open_existing_storage(url))}

    def holds(other: Study) -> bool:
        return bool(prefixes & {other.prefix, f"{other.prefix}-sweep", f"{other.prefix}-ablate"})

    if holds(study):
        return
    others = [preset for preset, other in STUDIES.items() if holds(other)]
    fix = f"pass --preset {others[0]}" if others else "point --storage at the database the study ran in"
    shown = make_url(url).render_as_string(hide_password=True)
    raise ValueError(f"--storage {shown!r} holds no study of the capability study `{study.preset}` (studies named "
                     f"{study.prefix}/...; it holds {', '.join(f'{p}/...' for p in sorted(prefixes)) or 'none'}); "
                     f"{fix}")


def run(args: argparse.Namespace) -> int:
    if args.add_model is not None or args.label is not None or args.from_storage is not None or args.overrides:
        return added.run(args)
    study = STUDIES[args.preset]
    workers = default_workers() if args.workers is None else args.workers
    try:
        check_at_least_one("--workers", workers)
        check_device(args.device)
        out = check_out_dir(args.out if args.out is not None else default_out(study))
        if args.storage is not None:  # before a dry run too: it takes minutes to measure
            # A snapshot only reads its storage, which may be a read-only archive; a run writes to it.
            check_storage_url(args.storage, must_exist=args.snapshot)
    except ValueError as e:
        raise SystemExit(f"testbed capability: {e}") from None
    if args.dry_run:
        print(dry_run(study, workers, args.device, only=args.only))
        return 0
    if args.snapshot:
        try:
            if args.storage is not None:
                check_holds_study(args.storage, study)
            copy = snapshot(args.storage, out)
        except ValueError as e:
            raise SystemExit(f"testbed capability: {e}") from None
        build_capability_report(copy, study, out)
        print(f"copied {args.storage} to {copy} and rebuilt {out / 'report.md'} from the copy")
        return 0
    try:
        url = storage_url(args.storage, out)
    except ValueError as e:
        raise SystemExit(f"testbed capability: {e}") from None
    print(f"capability study `{study.preset}`: {study.description}\n{family_table(study, args.device)}", flush=True)
    with stopped_in_one_line():
        run_workers(study, url, out, args.device, args.only, workers, progress=not args.quiet)
    print(build_capability_report(open_storage(url), study, out))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.experiments.capability.cli", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
