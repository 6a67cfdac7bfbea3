"""Benchmarks that print numbers: `testbed bench {tasks,gateloop,baselines,train,compiled}` (= `python -m studies.bench ...`).

Each section lives in its own module here with `main(quick: bool) -> None`; timings are medians of
repeated runs and are printed beside a reference measured in the same process.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SECTIONS = ("tasks", "gateloop", "baselines", "train", "compiled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # No `choices` here: argparse checks a list default of an optional positional against them as one
    # value and refuses it (Python 3.11); `run` checks the names instead.
    parser.add_argument("sections", nargs="*", metavar="section", default=list(SECTIONS),
                        help=f"what to benchmark: some of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (a smoke run)")


def run(args: argparse.Namespace) -> int:
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"testbed bench: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for section in args.sections:
        importlib.import_module(f"studies.bench.{section}").main(quick=args.quick)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.bench", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
