"""Training throughput: ms per optimiser step of every mixer, and a short suite at 1 and 2 workers.

Step time: the LM of each registered mixer at its defaults (Mamba's `scan="auto"`: its fused C++ scan
where a compiler is found; also with the pure-torch scan, as the row `mamba:scan=torch`), its width
matched (`baselines.matching.match_width`) to a preset's parameter budget, trained on one fixed MQAR
batch of that preset's size by `studies.train.train_step`, the step `studies.train.train` takes
(forward, loss, backward, gradient clipping, the AdamW step and the schedule's), with the data
generation left out. Sizes: the "headline" preset (~50k parameters, L=32, batch 32) and the
"standard" preset (~90k, L=64, batch 64). Every mixer is warmed up, then the mixers take turns one
step at a time for `repeats` rounds, so that a change in the machine's load hits every mixer alike;
printed are the median, min and max wall ms per step and the median's ratio to attention's, and the
median CPU ms of this process per step (less sensitive to other processes on a shared machine) with
its ratio, all measured in this process at one intra-op thread (the default of CPU runs, docs/design.md §6),
with glibc keeping freed memory as `studies.train.train` asks it to (`keep_freed_memory`).

Where Mamba's step goes (`mamba_scan_share`): its selective scan, forward and backward at the shapes
of its layers, timed beside its whole step and attention's; the step without the scan, as a ratio to
attention's, is the most that any faster scan (a fused kernel included) could give at that size.

Suite wall time: `python -m studies.cli suite --model gateloop,lru --tasks mqar,state_tracking,
memory_horizon --preset quick train.steps=200` run as a subprocess with `--workers 1` and with
`--workers 2`, each into a fresh directory; printed are both wall times, their ratio, and whether the
two runs stored the same runs with the same results (run ids, status, steps, history, final metrics).
The same suite at 2 steps a run (no warm-up) at both worker counts gives the suite's fixed cost; the
time the further steps add, at 1 worker over 2, is the speed-up of the training itself.

The machine's load average is printed beside the numbers: on a shared machine they are only as good
as the quiet they were measured in.

    python -m studies.bench train [--quick]
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from baselines import MIXERS, get_mixer
from baselines.mamba import fused_refusal, selective_scan, selective_scan_fused
from baselines.matching import match_width
from gateloop.backbone import LM, LMConfig
from studies.config import TrainConfig
from studies.presets import get_preset
from studies.train import keep_freed_memory, make_optimizer, train_step
from tasks import make_task

SIZES = ("headline", "standard")
CPU = torch.device("cpu")
REFERENCE = "attention"
SUITE_ARGS = ("suite", "--model", "gateloop,lru", "--tasks", "mqar,state_tracking,memory_horizon", "--preset", "quick")
SUITE_STEPS = 200
FIXED_COST_STEPS = 2  # the suite at this many steps a run measures its fixed cost
# Fields of a stored run that must agree between two runs of the same config (wall_time need not).
COMPARED_FIELDS = ("run_id", "status", "steps", "steps_to_target", "history", "final", "num_parameters")


@dataclass(frozen=True)
class StepTimes:
    """Seconds per training step of one mixer over the timed rounds: wall clock, and this process's CPU time."""

    name: str
    d_model: int
    num_parameters: int
    seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def _task(preset_name: str, seq_len: int | None = None) -> Any:
    """The preset's MQAR task (at seq_len if given)."""
    knobs = dict(get_preset(preset_name).tasks["mqar"])
    if seq_len is not None:
        knobs["seq_len"] = seq_len
    return make_task("mqar", **knobs)


class _Stepper:
    """One model, optimiser and fixed batch; `step()` is one `studies.train.train_step`."""

    def __init__(self, label: str, preset_name: str, batch_size: int | None, seq_len: int | None) -> None:
        # label: a mixer name, or "name:knob=value" for a non-default computation path (e.g. mamba:scan=fused)
        name, _, knob = label.partition(":")
        preset = get_preset(preset_name)
        task = _task(preset_name, seq_len)
        lm = LMConfig(vocab_size=task.vocab_size, **preset.lm)
        mixer = match_width(name, preset.param_budget, lm, preset.mixer.get(name))
        if knob:
            key, value = knob.split("=")
            mixer = dataclasses.replace(mixer, **{key: value})
        self.train = TrainConfig(**{**preset.train, "device": "cpu"})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = LM(lm, get_mixer(name), mixer)
        self.batch = task.sample(batch_size or self.train.batch_size, torch.Generator().manual_seed(0))
        self.inputs, self.targets = self.batch.inputs, self.batch.targets
        self.optimizer, self.schedule = make_optimizer(self.model, self.train)
        self.name, self.d_model = label, mixer.d_model

    def step(self) -> tuple[float, float]:
        """(wall, CPU) seconds of one training step."""
        start, cpu = time.perf_counter(), time.process_time()
        train_step(self.model, self.optimizer, self.schedule, self.batch, self.train, CPU)
        return time.perf_counter() - start, time.process_time() - cpu


def step_times(
    preset_name: str, names: list[str], repeats: int, warmup: int = 3, batch_size: int | None = None,
    seq_len: int | None = None,
) -> list[StepTimes]:
    """Seconds per training step of each mixer in `names` at the preset's size, in interleaved rounds."""
    steppers = [_Stepper(name, preset_name, batch_size, seq_len) for name in names]
    for stepper in steppers:
        for _ in range(warmup):
            stepper.step()
    times: list[list[tuple[float, float]]] = [[] for _ in steppers]
    for _ in range(repeats):
        for row, stepper in zip(times, steppers):
            row.append(stepper.step())
    return [
        StepTimes(s.name, s.d_model, s.model.num_parameters(), *map(tuple, zip(*row))) for s, row in zip(steppers, times)
    ]


def step_table(times: list[StepTimes]) -> str:
    """Markdown rows: mixer, width, parameters, wall ms median (min, max), its ratio to attention's, and
    the same for CPU ms (what the step cost this process: less sensitive to other processes' load)."""
    ref = next((t for t in times if t.name == REFERENCE), None)
    lines = [
        "| mixer | d_model | params | ms/step median | min | max | × attention | CPU ms median | × attention |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in times:
        cpu = statistics.median(t.cpu_seconds)
        ratio = f"{t.median / ref.median:.2f}" if ref else "–"
        cpu_ratio = f"{cpu / statistics.median(ref.cpu_seconds):.2f}" if ref else "–"
        lines.append(
            f"| {t.name} | {t.d_model} | {t.num_parameters:,} | {t.median * 1e3:.1f} | {min(t.seconds) * 1e3:.1f} | "
            f"{max(t.seconds) * 1e3:.1f} | {ratio} | {cpu * 1e3:.1f} | {cpu_ratio} |"
        )
    return "\n".join(lines)


def mamba_scan_share(preset_name: str, repeats: int) -> str:
    """Where Mamba's training step goes: its selective scan (forward + backward, at the exact shapes of
    its layers) against the whole step, and what the step would cost with the scan free, as ratios to
    attention's whole step: the most any faster scan could give at this size."""
    mamba = _Stepper("mamba:scan=torch", preset_name, None, None)  # the step whose scan is the pure-torch one
    attention = _Stepper(REFERENCE, preset_name, None, None)
    config = mamba.model.mixer_config
    B, L = mamba.inputs.shape
    E, N, layers = config.d_inner, config.d_state, len(mamba.model.blocks)
    gen = torch.Generator().manual_seed(0)
    u, Bt, Ct = torch.randn(B, L, E, generator=gen), torch.randn(B, L, N, generator=gen), torch.randn(B, L, N, generator=gen)
    delta = F.softplus(torch.randn(B, L, E, generator=gen) - 4.0)  # ~ the authors' Δ range at init
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)
    inputs = [t.requires_grad_() for t in (u, delta, A, Bt, Ct)]

    def layers_of(fn) -> Callable[[], tuple[float, float]]:
        """(wall, CPU) seconds of `fn`'s forward + backward once per layer."""
        def call() -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(layers):
                y, _ = fn(*inputs)
                y.backward(torch.ones_like(y))
            return time.perf_counter() - start, time.process_time() - cpu
        return call

    scan = layers_of(lambda *args: selective_scan(*args, chunk_size=config.chunk_size))  # scan='torch'
    fused = layers_of(selective_scan_fused)
    calls = {"mamba": mamba.step, REFERENCE: attention.step, "scan": scan, **({} if fused_refusal() else {"fused": fused})}
    cpu: dict[str, list[float]] = {key: [] for key in calls}
    for round_ in range(3 + repeats):
        for key, call in calls.items():
            seconds = call()[1]
            if round_ >= 3:  # warm-up rounds
                cpu[key].append(seconds)
    step, ref, scan_ms = (statistics.median(cpu[k]) * 1e3 for k in ("mamba", REFERENCE, "scan"))
    fused_note = ""
    if "fused" in cpu:
        fused_ms = statistics.median(cpu["fused"]) * 1e3
        fused_note = f"; the fused C++ scan (scan='fused', the default's choice here) takes {fused_ms:.1f} ms, {scan_ms / fused_ms:.2f}× faster"
    return (
        f"mamba with scan='torch' ({preset_name}): selective scan forward + backward, {layers} layers at (B, L, E·D, N) = "
        f"({B}, {L}, {E}, {N}): {scan_ms:.1f} CPU ms of its {step:.1f} ms step ({scan_ms / step:.0%}); "
        f"the step is {step / ref:.2f}× attention's {ref:.1f} ms, and without the scan it would be "
        f"{(step - scan_ms) / ref:.2f}×{fused_note} (median of {repeats} interleaved rounds)"
    )


def _stored_runs(out: Path) -> dict[str, dict[str, Any]]:
    records = (json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json")))
    return {r["run_id"]: {field: r.get(field) for field in COMPARED_FIELDS} for r in records}


def run_suite(workers: int, out: Path, steps: int = SUITE_STEPS, extra: tuple[str, ...] = ()) -> tuple[float | None, str]:
    """(wall seconds or None if the command failed, its last output line) of the short suite at `steps`
    steps a run, with the `extra` overrides."""
    command = [sys.executable, "-m", "studies.cli", *SUITE_ARGS, f"train.steps={steps}", *extra, "--workers",
               str(workers), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    lines = (done.stdout + done.stderr).strip().splitlines()
    return (seconds if done.returncode == 0 else None), (lines[-1] if lines else f"exit status {done.returncode}")


def suite_comparison(steps: int = SUITE_STEPS, extra: tuple[str, ...] = ()) -> str:
    """The short suite at --workers 1 and 2: wall times, ratio, and whether their stored results agree;
    then the same suite at FIXED_COST_STEPS steps a run (no warm-up), whose wall time is the suite's fixed
    cost (imports, worker start-up, the final evaluation at every length, floors, figures) at either
    worker count, and the speed-up of the time the further steps (with their periodic evaluations) add."""
    if steps <= FIXED_COST_STEPS:
        raise ValueError(f"the suite comparison needs more than {FIXED_COST_STEPS} steps a run, got {steps}")
    fixed = (FIXED_COST_STEPS, ("train.warmup_steps=0",))
    lines = [f"`python -m studies.cli {' '.join(SUITE_ARGS)} train.steps={steps}{''.join(' ' + e for e in extra)} "
             f"--workers N --out <tmp>`", ""]
    walls: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run_steps, run_extra in ((steps, extra), fixed):
            label = "" if run_steps == steps else f" at train.steps={run_steps} {' '.join(run_extra)}"
            for workers in (1, 2):
                seconds, last = run_suite(workers, Path(tmp) / f"{run_steps}-{workers}", run_steps, run_extra)
                if seconds is None:
                    return "\n".join([*lines, f"- --workers {workers}{label}: failed: {last}"])
                walls[run_steps, workers] = seconds
                lines.append(f"- --workers {workers}{label}: {seconds:.1f} s wall ({_load()})")
            if run_steps == steps:
                lines.append(f"- speed-up --workers 2 over --workers 1: {walls[steps, 1] / walls[steps, 2]:.2f}×")
                lines.append(f"- results: {compare_runs(Path(tmp) / f'{steps}-1', Path(tmp) / f'{steps}-2')}")
    added = {w: walls[steps, w] - walls[FIXED_COST_STEPS, w] for w in (1, 2)}
    lines.append(f"- fixed cost (the {FIXED_COST_STEPS}-step suite): {walls[FIXED_COST_STEPS, 1]:.1f} s on 1 worker, "
                 f"{walls[FIXED_COST_STEPS, 2]:.1f} s on 2; the further {steps - FIXED_COST_STEPS} steps a run add "
                 f"{added[1]:.1f} s on 1 and {added[2]:.1f} s on 2: {added[1] / added[2]:.2f}×")
    return "\n".join(lines)


def compare_runs(first_out: Path, second_out: Path) -> str:
    """Whether two suite output directories stored the same runs with the same results, in words."""
    first, second = _stored_runs(first_out), _stored_runs(second_out)
    if not first and not second:
        return "no runs stored (nothing to compare)"
    if first == second:
        return f"identical ({len(first)} runs: same run ids, status, steps, history, final metrics)"
    differing = sorted(set(first) ^ set(second) | {k for k in set(first) & set(second) if first[k] != second[k]})
    return f"DIFFER in {len(differing)} of {len(set(first) | set(second))} runs: {differing}"


def main(quick: bool) -> None:
    torch.set_num_threads(1)
    keep_freed_memory()  # as `studies.train.train` does
    # Mamba also with the pure-torch scan, which its default (scan='auto') is where no compiler is found.
    names = [*MIXERS, *([] if fused_refusal() else ["mamba:scan=torch"])]
    repeats = 5 if quick else 30
    print(f"\n## train: ms per training step, 1 thread, median of {repeats} interleaved rounds (torch {torch.__version__})")
    for preset_name in SIZES[:1] if quick else SIZES:
        preset = get_preset(preset_name)
        print(
            f"\n### {preset_name}: ~{preset.param_budget:,} non-embedding parameters, MQAR L={_task(preset_name).seq_len}, "
            f"batch {preset.train['batch_size']}\n"
        )
        print(step_table(step_times(preset_name, names, repeats)))
        print(f"\n{mamba_scan_share(preset_name, repeats)}")
        print(f"\n{_load()}", flush=True)
    print("\n### short suite, --workers 1 vs 2\n")
    print(suite_comparison(20, ("train.warmup_steps=0",)) if quick else suite_comparison(), flush=True)
