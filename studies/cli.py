"""`testbed` command line: one subcommand per module, each exposing `add_arguments` and `run`."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module with `add_arguments(parser)` and `run(args) -> int`
COMMANDS: dict[str, str] = {
    "tasks": "studies.tasks_cli",
    "suite": "studies.suite",
    "ablate": "studies.ablate",
    "capability": "studies.experiments.capability",
    "headline": "studies.experiments.headline",
    "bench": "studies.bench.__main__",
    "tune": "studies.tune",
    "report": "studies.report",
    "check-gpu": "studies.gpu_check",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
