"""GateLoop ablations: every named ablation builds and trains; switches act on the gate; the smoke
ablation study writes its table and figures and resumes."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from studies.ablate import build_ablation_configs
from studies.cli import main
from studies.experiments.ablations import ABLATIONS
from studies.train import build_model, train

SMOKE = ["ablate", "--preset", "smoke", "--quiet", "train.device=cpu"]


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_each_ablation_builds_and_trains_a_few_steps(name):
    ((_, config),) = build_ablation_configs([name], ["mqar"], "smoke", 1)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=3, warmup_steps=0, eval_every=3,
                                                                   test_size=8, device="cpu"))
    for key, value in ABLATIONS[name].items():
        assert getattr(config.mixer, key) == value
    result = train(config, progress=False)
    assert result.status == "completed" and len(result.history) == 1


def _gates(name: str, x: torch.Tensor) -> torch.Tensor:
    ((_, config),) = build_ablation_configs([name], ["mqar"], "smoke", 1)
    torch.manual_seed(0)
    mixer = build_model(config).blocks[0].mixer
    return mixer.gates(x)


def test_fixed_all_gate_does_not_depend_on_the_input():
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(0))
    a, b = _gates("fixed_all", x), _gates("fixed_all", x + torch.randn_like(x))
    assert torch.equal(a, b)
    assert not torch.equal(_gates("full", x), _gates("full", x + 1.0))  # the control: full gates do move


def test_real_gates_have_zero_imaginary_part():
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(1))
    a = _gates("real_gates", x)
    assert torch.all(a.imag == 0) and torch.all((a.real > 0) & (a.real < 1))


def test_unknown_ablation_lists_valid_ones():
    with pytest.raises(ValueError, match="valid ablations: .*fixed_all"):
        build_ablation_configs(["no_such"], ["mqar"], "smoke", 1)


def test_smoke_ablation_writes_table_figures_and_resumes(tmp_path, capsys):
    args = [*SMOKE, "--ablations", "full,real_gates,fixed_all", "--tasks", "memory_horizon,state_tracking",
            "--seeds", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    table = (tmp_path / "ablations.md").read_text()
    for name in ("full", "real_gates", "fixed_all"):
        assert f"| {name} |" in table
    assert "Δ" in table and "not tuned" in table
    assert (tmp_path / "ablation_heatmap.png").stat().st_size > 0
    assert (tmp_path / "gates.png").stat().st_size > 0  # from the kept weights of full, seed 0
    assert len(list((tmp_path / "runs").glob("*.pt"))) == 2
    capsys.readouterr()
    assert main(args) == 0
    assert "12 already finished" in capsys.readouterr().out
    # A run whose kept weights went missing is not finished: it is rerun (deterministically).
    weights = sorted((tmp_path / "runs").glob("*.pt"))[0]
    def stored() -> dict:
        return {k: v for k, v in json.loads(weights.with_suffix(".json").read_text()).items() if k != "wall_time"}

    before = stored()
    weights.unlink()
    assert main(args) == 0
    assert "11 already finished" in capsys.readouterr().out
    assert weights.exists() and stored() == before


def test_ablations_with_identical_configs_share_runs(tmp_path, capsys):
    # max_heads is the default head layout: the same runs stand for both names, trained once.
    args = [*SMOKE, "--ablations", "full,max_heads", "--tasks", "mqar", "--seeds", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "1 runs: 0 already finished" in capsys.readouterr().out
    table = (tmp_path / "ablations.md").read_text()
    assert "| full |" in table and "| max_heads |" in table and "`full = max_heads`" in table
