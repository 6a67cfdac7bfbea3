"""Check the CUDA path on one GPU in one command and write one report: `testbed check-gpu [SECTION ...] [--out FILE]`.

Made to be run once, unattended, in the few minutes a GPU is available: every section has a time limit
(the total stays under ~8 minutes), a failing section does not stop the others, and the report says
what ran, what failed and what was not available. Sections, in this order (the most important first):

  environment  torch, CUDA, cuDNN, triton and fla versions; device name, capability and memory
  tests        the device-aware tests on CUDA: `python -m pytest --device cuda` (tests/conftest.py), which
               runs exactly the tests taking the `device` fixture or marked `cuda` — engine equivalences,
               mixer contract, decode == forward, training steps, the fla mode against the chunked engine
  mixers       every registered mixer (and one-head GateLoop in the chunked and fla modes) trained
               MIXER_STEPS steps by `studies.train.train` on CUDA in bf16 autocast: the loss must stay finite
  fla          GateLoop's fla mode (real form + fla's chunk_gla) against fla's own chunk_gla on the same
               real inputs and against our chunked mode: fwd+bwd time and the largest relative error
               (goals: within 2× of chunk_gla, faster than chunked)
  tune         two workers of `testbed tune --preset smoke --device cuda` on one SQLite file: both exit 0
               and the study ends with exactly the budget of finished trials
  bench        `python -m studies.bench gateloop` (it runs on CUDA when present)
  bench-train  `python -m studies.bench train --quick`, where this checkout has it

Exit code 0 when every section that ran passed ("not available" and a missed speed goal, "goal missed",
are not failures), 1 otherwise. On a machine without CUDA it exits at once with one line saying so. The
report is Markdown, printed and written atomically to --out (default results/gpu/check.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import optuna
import torch

from baselines import MIXERS, get_mixer
from gateloop import LMConfig
from gateloop.chunked import gateloop_scan_chunked
from gateloop.real_form import fla_refusal, gateloop_scan_fla, to_real_form
from studies.config import RunConfig, TrainConfig
from studies.atomic_io import write_atomic
from studies.tables import markdown_table
from studies.train import train
from studies.tune.budget import COUNTED
from studies.tune.storage import study_name
from tasks import make_task

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = "results/gpu/check.md"
# Seconds each subprocess section may take, and the budget of the in-process mixer section.
LIMITS = {"tests": 200, "tune": 80, "bench": 70, "bench-train": 45, "mixers": 50}
MIXER_STEPS = 200
TUNE_TRIALS = 4
FLA_SHAPES = ((8, 1024, 4, 32, 32), (8, 4096, 4, 32, 32))  # (B, L, H, K, V), the bench's matrix-state shape
FLA_TOLERANCE = 1e-2  # largest relative error of the fla mode against chunked (TF32 inside fla's kernels)
TAIL_LINES = 40


@dataclass
class Section:
    """One section's outcome: status "ok", "FAILED", "timed out", "not available" or "goal missed", and its
    Markdown body."""

    status: str
    body: str
    seconds: float = 0.0


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "```\n" + "\n".join(kept) + "\n```\n"


def _subprocess(cmd: list[str], timeout: float) -> tuple[int | None, str]:
    """Run cmd in the repository root; (return code or None on timeout, stdout and stderr interleaved)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              env=env)
        return done.returncode, done.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:  # its output is bytes whatever the text mode
        return None, (e.output or b"").decode(errors="replace")


def _command_section(cmd: list[str], timeout: float, full_output: bool = False) -> Section:
    code, output = _subprocess(cmd, timeout)
    shown = "`" + " ".join(cmd[2:] if cmd[0] == sys.executable else cmd) + "`\n\n"
    body = shown + ("```\n" + output.rstrip() + "\n```\n" if full_output else _tail(output))
    if code is None:
        return Section("timed out", f"stopped after {timeout:.0f} s; output so far:\n\n" + body)
    return Section("ok" if code == 0 else "FAILED", (f"exit code {code}\n\n" if code else "") + body)


# ------------------------------------------------------------------------------------------------ sections


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> Section:
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    rows = [
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("CUDA (torch built with)", torch.version.cuda),
        ("cuDNN", torch.backends.cudnn.version()),
        ("devices", torch.cuda.device_count()),
        ("device 0", f"{props.name}, compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs"),
        ("memory", f"{total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free"),
        ("triton", _version("triton")),
        ("flash-linear-attention", _version("flash-linear-attention")),
        ("fla-core", _version("fla-core")),
    ]
    return Section("ok", "\n".join(f"- {name}: {value}" for name, value in rows) + "\n")


def tests() -> Section:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", "cuda", "tests"]
    if importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", "4"]  # ~300 small tests, each mostly kernel launches: four processes share the GPU well
    return _command_section(cmd, LIMITS["tests"])


def _mixer_runs() -> list[tuple[str, str, dict]]:
    """(label, mixer name, mixer overrides): every registered mixer at its defaults, plus GateLoop with a
    matrix state (the chunked engine; max-headed runs the elementwise one) and, where fla is installed, in
    fla mode."""
    runs = [(name, name, {}) for name in sorted(MIXERS)]
    # One head of K = V = 32 at d_model = 32: fla's kernels compiled for those widths by the tests are reused.
    runs.append(("gateloop, 1 head (K=V=32), chunked", "gateloop", {"num_heads": 1}))
    if not fla_refusal():
        runs.append(("gateloop, 1 head (K=V=32), fla", "gateloop", {"num_heads": 1, "mode": "fla"}))
    return runs


def mixers() -> Section:
    task = make_task("mqar", vocab=32, seq_len=32, num_kv_pairs=4)
    train_config = TrainConfig(steps=MIXER_STEPS, batch_size=32, lr=3e-3, warmup_steps=20, eval_every=50,
                               test_size=256, device="cuda", amp=True)
    rows, failed, started = [], False, time.perf_counter()
    for label, name, overrides in _mixer_runs():
        if time.perf_counter() - started > LIMITS["mixers"]:
            rows.append((label, "not run: the section's time budget is spent", "", "", ""))
            failed = True
            continue
        mixer = get_mixer(name).config_class(d_model=32, **overrides)
        config = RunConfig("mqar", task, name, mixer, LMConfig(vocab_size=task.vocab_size, n_layers=2), train_config)
        try:
            result = train(config, progress=False)
        except Exception as e:  # a CUDA-path bug in one mixer must not hide the others
            first_line = (str(e).splitlines() or [""])[0][:200]
            rows.append((label, f"FAILED: {type(e).__name__}: {first_line}", "", "", ""))
            failed = True
            continue
        losses = [r.loss for r in result.history]
        finite = result.status != "diverged" and all(math.isfinite(x) for x in losses)
        failed |= not finite
        rows.append((label, result.status if finite else f"FAILED: {result.status}",
                     " → ".join(f"{x:.3f}" for x in (losses[0], losses[-1])) if losses else "—",
                     f"{result.accuracy:.3f}", f"{result.wall_time:.1f} s"))
    head = (f"MQAR (L=32, 4 pairs), d_model=32, 2 layers, {MIXER_STEPS} steps of batch 32, bf16 autocast on "
            f"cuda; held-out loss at the first and last evaluation.\n\n")
    table = markdown_table(("mixer", "status", "held-out loss", "accuracy", "wall time"), rows)
    return Section("FAILED" if failed else "ok", head + table)


def _cuda_inputs(B: int, L: int, H: int, K: int, V: int) -> tuple[torch.Tensor, ...]:
    """q, k (B, L, H, K), v (B, L, H, V), a (B, L, H, K) complex64 on cuda, as in studies/bench/gateloop.py."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, L, H, K, generator=g) / math.sqrt(K)
    k = torch.randn(B, L, H, K, generator=g)
    v = torch.randn(B, L, H, V, generator=g)
    a = torch.polar(0.8 + 0.2 * torch.rand(B, L, H, K, generator=g), 2 * math.pi * torch.rand(B, L, H, K, generator=g))
    return tuple(x.cuda() for x in (q, k, v, a))


def _fwd_bwd(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], inputs: tuple[torch.Tensor, ...],
             repeats: int = 5) -> tuple[float, list[torch.Tensor]]:
    """Median seconds of forward + backward (after one warm-up call, where Triton compiles and autotunes)
    and [y, final state, grads of the inputs] of the warm-up call, under fixed random cotangents."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    cotangents: list[torch.Tensor] = []

    def call() -> tuple[float, list[torch.Tensor]]:
        for x in leaves:
            x.grad = None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        outputs = fn(*leaves)
        if not cotangents:
            g = torch.Generator(device="cuda").manual_seed(1)
            cotangents.extend(torch.randn(o.shape, generator=g, device="cuda", dtype=o.dtype) for o in outputs)
        sum((o * c.conj()).real.sum() for o, c in zip(outputs, cotangents)).backward()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, [o.detach() for o in outputs] + [x.grad for x in leaves]

    _, results = call()
    return statistics.median(call()[0] for _ in range(repeats)), results


def _max_rel_error(results: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return max(((x - r).norm() / r.norm()).item() for x, r in zip(results, reference) if r.norm() > 0)


def fla() -> Section:
    why_not = fla_refusal(torch.device("cuda"))
    if why_not:
        return Section("not available", why_not + "\n")
    from fla.ops.gla import chunk_gla  # lazily: optional and CUDA-only

    def own_gla(q_r, k_r, v, g_r):  # fla's real-valued GLA on inputs already in real form
        return chunk_gla(q_r, k_r, v, g_r, scale=1.0, output_final_state=True)

    rows, wrong, slow = [], False, False
    for B, L, H, K, V in FLA_SHAPES:
        q, k, v, a = _cuda_inputs(B, L, H, K, V)
        t_chunked, chunked = _fwd_bwd(gateloop_scan_chunked, (q, k, v, a))
        t_fla, ours = _fwd_bwd(gateloop_scan_fla, (q, k, v, a))
        q_r, k_r, g_r, _ = to_real_form(q, k, a)
        t_own, _ = _fwd_bwd(own_gla, (q_r, k_r, v, g_r))
        error = _max_rel_error(ours, chunked)
        within, faster = t_fla <= 2 * t_own, t_fla < t_chunked
        wrong |= not error <= FLA_TOLERANCE
        slow |= not (within and faster)
        rows.append((f"B={B} L={L} H={H} K={K} V={V}", f"{t_fla * 1e3:.1f} ms", f"{t_own * 1e3:.1f} ms",
                     f"{t_chunked * 1e3:.1f} ms", f"{t_fla / t_own:.2f} ({'met' if within else 'MISSED'})",
                     f"{t_chunked / t_fla:.1f}× ({'met' if faster else 'MISSED'})", f"{error:.1e}"))
    head = ("Forward + backward (median of 5 after a warm-up), float32, |a| in [0.8, 1), random phases. "
            "chunk_gla alone runs on the real form's inputs (key width 2K) precomputed; the error is the largest "
            "relative error of fla mode vs chunked over y, the final state and the gradients of q, k, v, a "
            f"(FAILED above {FLA_TOLERANCE:g}: fla runs float32 matmuls partly as TF32).\n\n")
    table = markdown_table(("shape", "fla mode", "chunk_gla alone", "chunked", "fla / chunk_gla (goal ≤ 2)",
                            "chunked / fla (goal > 1)", "max rel. error"), rows)
    return Section("FAILED" if wrong else "goal missed" if slow else "ok", head + table)


def tune() -> Section:
    with tempfile.TemporaryDirectory(prefix="check-gpu-tune-") as tmp:
        url = f"sqlite:///{tmp}/studies.db"
        cmd = [sys.executable, "-m", "studies.cli", "tune", "--task", "mqar", "--models", "gateloop",
               "--trials", str(TUNE_TRIALS), "--storage", url, "--study-prefix", "check-gpu", "--preset", "smoke",
               "--final-seeds", "0", "--device", "cuda", "--quiet"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        workers = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
                   for _ in range(2)]
        deadline, outputs, codes = time.monotonic() + LIMITS["tune"], [], []
        for worker in workers:
            try:
                outputs.append(worker.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
                codes.append(worker.returncode)
            except subprocess.TimeoutExpired:
                worker.kill()
                outputs.append(worker.communicate()[0])
                codes.append(None)
        shown = "`" + " ".join(cmd[2:]) + "` (twice, concurrently)\n\n"
        logs = "".join(f"worker {i} (exit code {c}):\n\n{_tail(o.decode(errors='replace'), 15)}\n"
                       for i, (c, o) in enumerate(zip(codes, outputs)))
        if None in codes:
            return Section("timed out", f"stopped after {LIMITS['tune']} s\n\n" + shown + logs)
        study = optuna.load_study(study_name=study_name("check-gpu", "mqar", "gateloop"), storage=url)
        finished = sum(t.state in COUNTED for t in study.get_trials(deepcopy=False))
    ok = codes == [0, 0] and finished == TUNE_TRIALS
    summary = f"finished trials in the study: {finished} (budget {TUNE_TRIALS}); exit codes {codes}\n\n"
    return Section("ok" if ok else "FAILED", shown + summary + logs)


def bench() -> Section:
    return _command_section([sys.executable, "-m", "studies.bench", "gateloop"], LIMITS["bench"], full_output=True)


def bench_train() -> Section:
    if importlib.util.find_spec("studies.bench.train") is None:
        return Section("not available", "studies/bench/train.py is not in this checkout\n")
    cmd = [sys.executable, "-m", "studies.bench", "train", "--quick"]
    return _command_section(cmd, LIMITS["bench-train"], full_output=True)


SECTIONS: dict[str, Callable[[], Section]] = {
    "environment": environment,
    "tests": tests,
    "mixers": mixers,
    "fla": fla,
    "tune": tune,
    "bench": bench,
    "bench-train": bench_train,
}


# ------------------------------------------------------------------------------------------------- command


def check_out_file(path: str | Path) -> Path:
    """--out must be a file path: not a directory, and under no existing file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a directory; pass a file path such as {DEFAULT_OUT}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {str(path)!r}: {str(parent)!r} is a file; pass a path under a directory")
    return path


def report(results: dict[str, Section], started: datetime, seconds: float) -> str:
    lines = [
        "# GPU check",
        "",
        f"`testbed check-gpu {' '.join(results)}` on {started:%Y-%m-%d %H:%M} UTC, {seconds:.0f} s in total.",
        "",
        markdown_table(("section", "status", "time"), ((n, s.status, f"{s.seconds:.0f} s") for n, s in results.items())),
    ]
    for name, section in results.items():
        lines += [f"## {name}: {section.status}", "", section.body]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Checked in run(), not by `choices`: Python 3.11's argparse checks an empty nargs="*" against choices.
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"sections to run, from {', '.join(SECTIONS)} (default: all, in that order)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"file the report is written to (default {DEFAULT_OUT})")


def run(args: argparse.Namespace) -> int:
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"testbed check-gpu: unknown section {unknown[0]!r}; valid sections: {', '.join(SECTIONS)}")
    try:
        out = check_out_file(args.out)
    except ValueError as e:
        raise SystemExit(f"testbed check-gpu: {e}") from None
    if not torch.cuda.is_available():
        raise SystemExit("testbed check-gpu: no CUDA device (torch.cuda.is_available() is False); "
                         "run it on a machine with an NVIDIA GPU and a CUDA build of torch")
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    results: dict[str, Section] = {}
    for name in dict.fromkeys(args.sections or SECTIONS):  # in the given order, each once
        print(f"check-gpu: {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            section = SECTIONS[name]()
        except Exception:  # the report must still be written, with what went wrong
            section = Section("FAILED", _tail(traceback.format_exc()))
        results[name] = dataclasses.replace(section, seconds=time.perf_counter() - t)
        print(f"check-gpu: {name}: {section.status} ({results[name].seconds:.0f} s)", file=sys.stderr, flush=True)
    text = report(results, started, time.perf_counter() - t0)
    write_atomic(out, text)
    print(text)
    print(f"report written to {out}", file=sys.stderr)
    return 0 if all(s.status in ("ok", "not available", "goal missed") for s in results.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m studies.gpu_check", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
