"""A mixer of one's own (issue 26): named by import path wherever a model is accepted, checked by
`testbed check-mixer` against the one contract (baselines/contract.py), refused in one line where it
cannot be used, run by the suite and tune. The worked example is examples/gla_mixer.py (docs/own-model.md),
exercised here at smoke size; beside a committed capability study: tests/test_capability_added.py."""
from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import optuna
import pytest

from baselines import get_mixer, import_path
from baselines.lru import LRU
from studies.cli import main
from studies.config import run_config_from_dict
from studies.presets import get_preset
from studies.suite.configs import build_configs
from studies.tune.jobs import confirm, tune_models
from studies.tune.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/gla_mixer.py:GLA"

# A mixer to break in two ways: `causal` mixes in the sequence's mean (the future included) unless
# `causal` is set, `honest` reports the cache it returns unless it is unset.
MIXER_SOURCE = '''
from dataclasses import dataclass

import torch
from torch import nn

from gateloop.mixer import MixerConfig, mark_transition


@dataclass(frozen=True)
class RunningMeanConfig(MixerConfig):
    pass


class RunningMean(nn.Module):
    """y_n = W (x_n + mean of x_0..x_n): the running sum is the decoding state."""

    config_class = RunningMeanConfig
    causal, honest = True, True

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.decay = nn.Parameter(torch.zeros(1))  # unused by the maths below; a tagged transition
        mark_transition(self.decay)

    def forward(self, x):  # (B, L, D)
        n = torch.arange(1, x.shape[1] + 1, device=x.device)[:, None]
        mean = x.cumsum(1) / n if self.causal else x.mean(1, keepdim=True).expand_as(x)
        return self.proj(x + mean) + 0 * self.decay

    def init_cache(self, batch_size, device="cpu"):
        return (torch.zeros(batch_size, self.config.d_model, device=device), 0)

    def step(self, x, cache):  # (B, D)
        total, n = cache
        total = total + x
        return self.proj(x + total / (n + 1)) + 0 * self.decay, (total, n + 1)

    def state_size(self, seq_len):
        return self.config.d_model if self.honest else self.config.d_model // 2


class NotCausal(RunningMean):
    causal = False


class MisreportsState(RunningMean):
    honest = False


class NoConfig(RunningMean):
    config_class = None


@dataclass(frozen=True, kw_only=True)
class NeedsWidthConfig(MixerConfig):
    heads: int  # keyword-only: a field without a default may follow d_model's


class ConfigWithoutDefaults(RunningMean):
    config_class = NeedsWidthConfig


class NotAModule:
    config_class = RunningMeanConfig
'''


@pytest.fixture(autouse=True)
def _own_sys_path(monkeypatch):
    """Each test's mixer files put their directories on sys.path (as a command does, for its workers); the
    next test starts from the path as it was."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def mixers(tmp_path) -> Path:
    """The file of the small mixers above, outside any package (its module name unique per test)."""
    path = tmp_path / f"own_mixers_{''.join(c if c.isalnum() else '_' for c in tmp_path.name)}.py"
    path.write_text(MIXER_SOURCE)
    return path


def checklist(capsys, argv: list[str]) -> tuple[str, str | None]:
    """(stdout, the exit message or None) of `testbed check-mixer ...`."""
    try:
        code = main(["check-mixer", *argv])
        message = None
        assert code == 0
    except SystemExit as stop:
        message = str(stop.code)
    return capsys.readouterr().out, message


# ----------------------------------------------------------------------------------------------- check-mixer


def test_check_mixer_passes_the_example(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the docs' command, from the repository root
    out, message = checklist(capsys, [EXAMPLE, "--device", "cpu"])
    assert message is None, out
    lines = out.splitlines()
    for title in ("loads", "parameter matching to quick's budget", "finite values and gradients [cpu]", "causal [cpu]",
                  "decoding token by token equals the forward pass [cpu]",
                  "state_size agrees with the decoding cache [cpu]", "transition parameters tagged",
                  "its own init survives building the backbone [cpu]"):
        assert any(line.startswith(f"✓ {title}: ") for line in lines), (title, out)
    assert not any(line.startswith("✗") for line in lines) and lines[-1] == f"{EXAMPLE}: every check passed"


def test_check_mixer_refuses_a_mixer_that_breaks_causality(capsys, mixers):
    out, message = checklist(capsys, [f"{mixers}:NotCausal", "mixer.d_model=16", "--device", "cpu"])
    assert message.endswith("2 check(s) failed: causal [cpu]; decoding token by token equals the forward pass [cpu]")
    causal, decode = [line for line in out.splitlines() if line.startswith("✗")]
    assert causal.startswith("✗ causal [cpu]: changing positions 9..16 moved the output at position 0")
    assert decode.startswith("✗ decoding token by token equals the forward pass [cpu]: logits decoded token by token "
                             "differ from the forward pass from position 0")  # its decoding is causal, its forward not


def test_check_mixer_refuses_a_mixer_that_misreports_its_state_size(capsys, mixers):
    out, message = checklist(capsys, [f"{mixers}:MisreportsState", "mixer.d_model=16", "--device", "cpu"])
    assert message.endswith("1 check(s) failed: state_size agrees with the decoding cache [cpu]")
    (line,) = [line for line in out.splitlines() if line.startswith("✗")]
    assert "holds 16 real scalars per sequence" in line and "state_size(1) = 8" in line
    assert "✓ causal [cpu]" in out and "– parameter matching: skipped: mixer.d_model=16 fixes the width" in out


def test_the_small_mixer_passes_when_it_is_neither(capsys, mixers):
    out, message = checklist(capsys, [f"{mixers}:RunningMean", "--device", "cpu", "--preset", "smoke"])
    assert message is None, out


@pytest.mark.parametrize("name, fragment", [
    ("{dir}/nosuch.py:X", "no such file"),
    ("{file}:Missing", "has no 'Missing'; its nn.Module classes: ['ConfigWithoutDefaults', 'MisreportsState'"),
    ("{file}:NoConfig", "declares no config_class"),
    ("{file}:ConfigWithoutDefaults", "has no default for heads"),
    ("{file}:NotAModule", "is not a torch.nn.Module subclass"),
    ("no_such_package.mixers:X", "no module named 'no_such_package'"),
    ("{syntax}:X", "importing"),
])
def test_a_mixer_that_cannot_be_used_is_one_line_and_nothing_is_created(tmp_path, mixers, name, fragment):
    syntax = mixers.with_name(f"broken_{mixers.name}")
    syntax.write_text("def (:\n")
    name = name.format(dir=tmp_path, file=mixers, syntax=syntax)
    out = tmp_path / "out"
    commands = [["suite", "--model", name, "--preset", "smoke", "--out", str(out), "--quiet"], ["check-mixer", name]]
    for argv in commands:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        message = str(stop.value.code)
        assert fragment in message and message.count("\n") == 0, (argv[0], message)
        assert not out.exists()


def test_import_paths_modules_and_entry_points_resolve(monkeypatch):
    assert get_mixer("baselines.lru:LRU") is LRU  # pkg.module:Class
    monkeypatch.setattr(import_path, "installed_mixers", lambda: {
        "my_lru": importlib.metadata.EntryPoint("my_lru", "baselines.lru:LRU", import_path.ENTRY_POINT_GROUP)})
    assert get_mixer("my_lru") is LRU  # an installed package's mixer, by name
    with pytest.raises(ValueError, match=r"unknown mixer 'gpt'; valid mixers: \[.*\], installed: \['my_lru'\]"):
        get_mixer("gpt")


# ----------------------------------------------------------------------------------------- suite and tune


def test_the_example_runs_in_the_suite_and_its_stored_run_rebuilds(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "suite"
    assert main(["suite", "--model", EXAMPLE, "--preset", "smoke", "--tasks", "state_tracking", "--workers", "1",
                 "--quiet", "--out", str(out), "mixer.temperature=8", "train.steps=8", "train.eval_every=4",
                 "train.warmup_steps=2"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert record["config"]["model"]["name"] == EXAMPLE and record["config"]["model"]["temperature"] == 8.0
    rebuilt = run_config_from_dict(record["config"])  # the stored import path rebuilds the run
    assert rebuilt.model == EXAMPLE and rebuilt.run_id() == record["run_id"]
    assert f"| {EXAMPLE} |" in (out / "table.md").read_text()
    with pytest.raises(ValueError, match=r"mixer \(examples/gla_mixer.py:GLA\)\.heads"):  # checked like any other
        build_configs([EXAMPLE], ["mqar"], get_preset("smoke"), 1, ["mixer.heads=2"])


def test_the_example_tunes_in_a_study_named_after_its_class(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    overrides = ["train.steps=6", "train.eval_every=3"]
    tune_models("state_tracking", [EXAMPLE], 1, storage, "p", "smoke", overrides=overrides, device="cpu",
                progress=False)
    confirm("state_tracking", [EXAMPLE], storage, "p", seeds=1, device="cpu", progress=False)
    names = optuna.get_all_study_names(open_storage(storage))
    assert sorted(names) == ["p/state_tracking/GLA", "p/state_tracking/GLA/confirm"]
    tuned = optuna.load_study(study_name="p/state_tracking/GLA", storage=storage)
    assert tuned.user_attrs["model"] == EXAMPLE
