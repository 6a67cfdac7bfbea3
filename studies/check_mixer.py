"""Check a mixer against the contract every registered mixer passes, printed as a checklist.

    testbed check-mixer PATH [mixer.key=value ...] [--preset quick] [--device all|cpu|cuda]

PATH is a mixer by import path (`pkg.module:Class`, `path/to/file.py:Class`), an installed name (entry
points `testbed.mixers`) or a registered name. The contract is defined once, in baselines/contract.py,
and tests/test_mixers.py runs the same checks on every registered mixer: it loads and meets the static
part (an nn.Module with a frozen config class with defaults); its width is matched to the preset's
parameter budget (skipped where `mixer.d_model` fixes it), and at that config, on the CPU and on CUDA
where present: finite values and gradients, causality, a seeded init, decoding token by token equal to
the forward pass, state_size equal to the decoding cache it returns, its own init surviving the
backbone, bf16 autocast; and its transition parameters tagged. One line per check, ✓ or ✗ with the
reason; the exit status is 1 if any check failed, and the last line names the failed ones.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

import torch

from baselines import get_mixer
from baselines.contract import CHECKS, ContractViolation, Subject
from baselines.contract import check_matching as match_to_budget
from gateloop import LMConfig
from studies.checks import check_device
from studies.config import parse_fields, parse_mixer_overrides
from studies.presets import PRESETS, get_preset

PASS, FAIL, SKIP = "✓", "✗", "–"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the mixer: pkg.module:Class, path/to/file.py:Class, or a name")
    parser.add_argument("--preset", default="quick",
                        help=f"whose parameter budget and backbone the width is matched to; one of {sorted(PRESETS)}")
    parser.add_argument("--device", default="all", choices=("all", "cpu", "cuda"),
                        help="where the behavioural checks run (default all: the CPU, and CUDA where present)")
    parser.add_argument("overrides", nargs="*", help="mixer.key=value (model.key=value): the config checked")


def _outcome(run: Callable[[], str]) -> tuple[bool, str]:
    """(passed, the detail or the one-line reason) of one check; an exception the mixer raises is a failure."""
    try:
        return True, run()
    except ContractViolation as e:
        return False, str(e)
    except Exception as e:
        lines = str(e).strip().splitlines()
        return False, f"raised {type(e).__name__}: {lines[0] if lines else '(no message)'}"


def run(args: argparse.Namespace) -> int:
    name = args.path
    try:
        preset = get_preset(args.preset)
        mixer_overrides = parse_mixer_overrides(list(args.overrides), "check-mixer takes mixer.key=value overrides only")
        if args.device == "cuda":
            check_device("cuda")
    except ValueError as e:
        raise SystemExit(f"testbed check-mixer: {e}") from None
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else \
        ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]

    failed: list[str] = []

    def report(mark: str, title: str, detail: str) -> None:
        print(f"{mark} {title}: {detail}", flush=True)
        if mark == FAIL:
            failed.append(title)

    print(f"testbed check-mixer {name} (preset {args.preset}: budget {preset.param_budget:,} parameters)", flush=True)
    try:
        cls = get_mixer(name)
    except ValueError as e:
        report(FAIL, "loads", str(e))
        raise SystemExit(f"testbed check-mixer: failed: loads: {e}") from None
    fields = [f.name for f in dataclasses.fields(cls.config_class)]
    report(PASS, "loads", f"class {cls.__name__} (an nn.Module with forward, init_cache, step, state_size); config "
                          f"{cls.config_class.__name__}, frozen, a default for every field ({', '.join(fields)})")
    try:
        fixed = {**preset.mixer.get(name, {}), **parse_fields(cls.config_class, mixer_overrides, f"mixer ({name})")}
        cls.config_class(**fixed)  # the overrides' own complaint (a width matching would otherwise hunt for)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"testbed check-mixer: {e}") from None

    if "d_model" in fixed:
        config = cls.config_class(**fixed)
        report(SKIP, "parameter matching", f"skipped: mixer.d_model={config.d_model} fixes the width")
    else:
        lm = LMConfig(vocab_size=32, **preset.lm)
        matched: dict = {}
        ok, detail = _outcome(lambda: _match(name, preset.param_budget, lm, fixed, matched))
        report(PASS if ok else FAIL, f"parameter matching to {args.preset}'s budget", detail)
        config = matched.get("config") or cls.config_class(**fixed)  # the rest run at the default width if it failed

    for check in CHECKS:
        for device in devices if check.per_device else ["cpu"]:
            title = f"{check.title} [{device}]" if check.per_device else check.title
            ok, detail = _outcome(lambda check=check, device=device: check.run(Subject(cls, config, device)))
            report(PASS if ok else FAIL, title, detail)
    if args.device == "all" and "cuda" not in devices:
        print(f"{SKIP} cuda: not present on this machine (torch.cuda.is_available() is False); checked on the CPU only")
    if failed:
        raise SystemExit(f"testbed check-mixer: {name}: {len(failed)} check(s) failed: {'; '.join(failed)}")
    print(f"{name}: every check passed")
    return 0


def _match(name: str, budget: int, lm: LMConfig, fixed: dict, out: dict) -> str:
    config, line = match_to_budget(name, budget, lm, fixed, seq_len=64)
    out["config"] = config
    return line


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.check_mixer", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
