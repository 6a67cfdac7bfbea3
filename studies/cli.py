"""`testbed` command line: one subcommand per module, each exposing `add_arguments` and `run`."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module with `add_arguments(parser)` and `run(args) -> int`
COMMANDS: dict[str, str] = {
    "tasks": "studies.tasks_cli",
    "suite": "studies.suite.cli",
    "ablate": "studies.ablate.cli",
    "capability": "studies.experiments.capability.cli",
    "bench": "studies.bench.__main__",
    "tune": "studies.tune.cli",
    "report": "studies.tune.report",
    "check-gpu": "studies.gpu_check",
    "check-mixer": "studies.check_mixer",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or with `command` only that one's in full: the other
    subcommands' modules (and what only they import, scipy.stats among it) are then not loaded."""
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        parsed = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(parsed)
        parsed.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
    return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
