"""GateLoop ablations: every named ablation builds and trains; switches act on the gate; the smoke
ablation study writes its table and figures and resumes."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from studies.ablate.ablations import ABLATIONS
from studies.ablate.configs import build_ablation_configs
from studies.ablate.table import ablation_table
from studies.cli import main
from studies.train import build_model, train
from test_suite import _refused

SMOKE = ["ablate", "--preset", "smoke", "--quiet", "--workers", "1", "train.device=cpu"]


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


def _record(run_id: str, accuracy: float, params: int = 100) -> dict:
    return {"run_id": run_id, "config": {"task": {"name": "mqar", "seq_len": 16}}, "status": "completed",
            "final": {"16": {"accuracy": accuracy}}, "num_parameters": params, "state_size": 10}


def test_distinct_ablations_that_tie_with_full_keep_their_difference():
    # fixed_phase's runs are not full's although their accuracies are equal: identity is by run id.
    records = [_record("f0", 0.5), _record("f1", 0.7), _record("p0", 0.5), _record("p1", 0.7),
               _record("o0", 0.5, 90), _record("o1", 0.7, 90)]
    names = {"f0": ["full", "max_heads"], "f1": ["full", "max_heads"], "p0": ["fixed_phase"], "p1": ["fixed_phase"],
             "o0": ["no_output_gate"], "o1": ["no_output_gate"]}
    rows = {line.split(" | ")[0].strip("| "): line for line in ablation_table(records, names, "").splitlines()
            if line.startswith("| ")}
    for tied in ("fixed_phase", "no_output_gate"):
        assert "Δ +0.000, p=1" in rows[tied] and "runs of `full`" not in rows[tied], rows[tied]
    assert "(≠ full)" in rows["no_output_gate"]
    assert "the runs of `full`" in rows["max_heads"] and "Δ" not in rows["max_heads"]


def test_progress_lines_name_the_ablation(tmp_path, capsys):
    assert main([*SMOKE, "--ablations", "full,max_heads,real_gates", "--tasks", "mqar", "--seeds", "1",
                 "--out", str(tmp_path)]) == 0
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(progress) == 2
    assert any("full = max_heads" in line for line in progress)
    assert any("real_gates" in line for line in progress)


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "0"], "--seeds 0 must be >= 1"),
    (["--workers", "0"], "--workers 0 must be >= 1"),
    (["--threads", "-1"], "--threads -1 must be >= 1"),
    (["--ablations", ","], "names no ablation"),
    (["--ablations", "full,nosuch"], "unknown ablation(s) ['nosuch']"),
    (["--tasks", "selective_copy"], "'selective_copy' is not in the smoke preset"),
])
def test_bad_input_is_refused_first(tmp_path, capsys, extra, message):
    _refused(capsys, [*SMOKE, *extra, "--out", str(tmp_path / "o")], message)
    assert not (tmp_path / "o").exists()


def test_out_path_that_is_a_file_is_refused_first(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _refused(capsys, [*SMOKE, "--out", str(tmp_path / "file")], "is a file, not a directory")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_refused_first(tmp_path, capsys):
    _refused(capsys, [*SMOKE[:-1], "--device", "cuda", "--out", str(tmp_path / "o")], "CUDA is not available")


def _inside(fig, *artists) -> bool:
    fig.canvas.draw()
    box = fig.bbox
    return all(box.x0 - 1 <= b.x0 and b.x1 <= box.x1 + 1 and box.y0 - 1 <= b.y0 and b.y1 <= box.y1 + 1
               for b in (a.get_window_extent() for a in artists))


def test_heatmap_title_and_colorbar_label_fit_with_one_task():
    from studies.ablate.figures import heatmap_figure

    records = [_record("f0", 0.5), _record("p0", 0.7)]
    fig = heatmap_figure(records, {"f0": ["full"], "p0": ["fixed_phase"]})
    ax, colorbar = fig.axes
    assert _inside(fig, ax.title, colorbar.yaxis.label)
