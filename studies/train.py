"""`train(config, on_eval=None) -> TrainResult`: the one training loop every model and task goes through.

No task- or model-specific branches: the task gives batches, the registry gives the mixer, the backbone
is shared. AdamW with parameter groups (transition parameters without weight decay, optional lr factor),
linear warmup then cosine decay, gradient clipping, evaluation on a fixed held-out set every
`eval_every` steps, early stop at a target accuracy, and a non-finite loss ends the run as `diverged`.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

import torch
from torch.nn import functional as F
from tqdm import tqdm

from baselines import get_mixer
from gateloop import LM
from studies.checks import check_memory
from studies.config import RunConfig, TrainConfig
from tasks import Batch, TaskData, sequence_accuracy, token_accuracy


@dataclass
class EvalRecord:
    step: int
    loss: float
    accuracy: float  # token accuracy on scored positions of the decision rows (TaskData.validation) at the training length
    sequence_accuracy: float

    def score(self, metric: str) -> float:
        """The value of `metric` ("accuracy" or "sequence_accuracy": a task's `metric`)."""
        return getattr(self, metric)


@dataclass
class TrainResult:
    status: str  # "completed" | "reached_target" | "diverged"
    steps: int  # optimiser steps taken
    steps_to_target: int | None  # first eval step at which the task's metric >= target_accuracy
    history: list[EvalRecord]
    final: dict[int, dict[str, float]]  # seq_len -> {"accuracy", "sequence_accuracy"} on the test sets
    num_parameters: int  # non-embedding, complex counted twice
    num_parameters_total: int
    state_size: int  # real scalars of recurrent state per sequence at the training length
    wall_time: float
    config: dict[str, Any] = field(default_factory=dict)
    model: LM | None = field(default=None, repr=False, compare=False)  # the trained model, if kept
    # {"accuracy", "sequence_accuracy"} of the final model on the decision rows (`TaskData.validation`): what
    # tuning reads under protocol v2. Without a validation set (protocol v1) they are the test rows.
    validation: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, as JSON-ready data."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "model"}

    metric: str = "accuracy"  # the task's metric: what early stopping, tuning and reports read

    @property
    def accuracy(self) -> float:
        """Final held-out token accuracy at the training length (0 for a diverged run)."""
        return self.final[min(self.final)]["accuracy"] if self.final else 0.0

    @property
    def score(self) -> float:
        """Final held-out value of the task's metric at the training length (0 for a diverged run)."""
        return self.final[min(self.final)][self.metric] if self.final else 0.0

    @property
    def validation_score(self) -> float:
        """Final value of the task's metric on the decision rows (0 for a diverged run): what a tuner reads.
        A result that recorded none (made by hand, or stored before protocol v2) decided on its test rows."""
        return self.validation.get(self.metric, self.score)


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return asdict(value) if is_dataclass(value) else value


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available here; use device=cpu or auto")
    return torch.device(name)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory in the process instead of handing it back to the OS.

    A training step allocates and frees the same large activations every step; by default glibc returns
    freed memory at the top of the heap to the OS, and every step then page-faults it in again — for
    Mamba's (B, L, N, E·D) states at the headline size, ~3k faults and ~1/5 of the step. Process-wide and
    idempotent; a no-op off Linux and where the C library has no `mallopt` (not glibc, e.g. musl).
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if hasattr(libc, "mallopt"):
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # keep up to 1 GiB of free heap
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # blocks under 32 MiB (glibc's maximum) come from the heap


def build_model(config: RunConfig) -> LM:
    return LM(config.lm, get_mixer(config.model), config.mixer)


def make_optimizer(model: LM, tc: TrainConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model's parameter groups (transition parameters without weight decay, at their lr
    factor) and its schedule: linear warmup, then cosine decay to `min_lr_ratio` at `tc.steps`."""
    optimizer = torch.optim.AdamW(
        model.param_groups(tc.weight_decay, tc.lr, tc.transition_lr_factor), lr=tc.lr, betas=(0.9, 0.98)
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, tc.warmup_steps, tc.steps, tc.min_lr_ratio)
    )
    return optimizer, schedule


def autocast(device: torch.device, tc: TrainConfig) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `tc.amp` asks for it; nothing elsewhere."""
    if device.type == "cuda" and tc.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model: LM, optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
               batch: Batch, tc: TrainConfig, device: torch.device) -> torch.Tensor:
    """One training step on `batch`, the one `train` takes (and the benchmarks and the capability dry run
    time): forward under `autocast`, cross-entropy over scored positions, then — only if the loss is
    finite — backward, gradient clipping at `tc.grad_clip`, the optimiser's step and the schedule's.
    Returns the loss; a non-finite one leaves model, optimiser and schedule as they were."""
    inputs, targets = batch.inputs.to(device), batch.targets.to(device)
    with autocast(device, tc):
        logits = model(inputs)
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
    if not torch.isfinite(loss):
        return loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    schedule.step()
    return loss


@torch.no_grad()
def evaluate(model: LM, batch: Batch, device: torch.device, batch_size: int = 128) -> dict[str, float]:
    """Loss, token accuracy and sequence exact match of the model on a held-out batch."""
    model.eval()
    preds, losses, counts = [], 0.0, 0
    for start in range(0, batch.inputs.shape[0], batch_size):
        inputs = batch.inputs[start:start + batch_size].to(device)
        targets = batch.targets[start:start + batch_size].to(device)
        logits = model(inputs).float()
        losses += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum").item()
        counts += int((targets != -100).sum())
        preds.append(logits.argmax(-1).cpu())
    model.train()
    pred = torch.cat(preds)
    return {
        "loss": losses / max(1, counts),
        "accuracy": token_accuracy(pred, batch.targets),
        "sequence_accuracy": sequence_accuracy(pred, batch.targets),
    }


def train(
    config: RunConfig,
    on_eval: Callable[[EvalRecord], None] | None = None,
    progress: bool = True,
    keep_model: bool = False,
) -> TrainResult:
    """Train `config.model` on `config.task`; `on_eval` is called after each evaluation (it may raise,
    e.g. optuna.TrialPruned, to stop the run). `keep_model` returns the trained model in the result."""
    tc = config.train
    device = resolve_device(tc.device)
    check_memory(config)  # an oversized batch is refused here rather than killed by the kernel mid-step
    if device.type != "cpu":
        return _train(config, device, on_eval, progress, keep_model)
    previous = torch.get_num_threads()
    torch.set_num_threads(tc.threads)
    try:
        return _train(config, device, on_eval, progress, keep_model)
    finally:
        torch.set_num_threads(previous)  # the caller's setting, e.g. a test session's


def _train(config: RunConfig, device: torch.device, on_eval: Callable[[EvalRecord], None] | None,
           progress: bool, keep_model: bool) -> TrainResult:
    tc = config.train
    start = time.perf_counter()
    keep_freed_memory()
    # Seed a private copy of the global RNG (module init draws from it) so library code leaves the
    # caller's RNG untouched and equal seeds give equal runs.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(tc.seed)
        model = build_model(config).to(device)
    data = TaskData(config.task, seed=tc.seed, test_size=tc.test_size, validation_size=tc.validation_size)
    data.check_training_room()  # ValueError now, not a RuntimeError from a redraw many steps in
    optimizer, schedule = make_optimizer(model, tc)

    history: list[EvalRecord] = []
    status, steps_to_target, step = "completed", None, 0
    bar = tqdm(range(1, tc.steps + 1), disable=not progress, leave=False,
               desc=f"{config.model}/{config.task_name}/seed{tc.seed}")
    for step in bar:
        loss = train_step(model, optimizer, schedule, data.train_batch(tc.batch_size), tc, device)
        if not torch.isfinite(loss):
            status = "diverged"
            break

        if step % tc.eval_every == 0 or step == tc.steps:
            with autocast(device, tc):
                metrics = evaluate(model, data.validation, device)
            if not math.isfinite(metrics["loss"]):
                status = "diverged"
                break
            record = EvalRecord(step, metrics["loss"], metrics["accuracy"], metrics["sequence_accuracy"])
            history.append(record)
            bar.set_postfix(loss=f"{loss.item():.3f}", **{config.task.metric: f"{record.score(config.task.metric):.3f}"})
            if on_eval is not None:
                on_eval(record)
            if steps_to_target is None and record.score(config.task.metric) >= tc.target_accuracy:
                steps_to_target = step
                if tc.target_accuracy < 1.0:  # 1.0 never stops a run early: every run trains all its steps
                    status = "reached_target"
                    break
    bar.close()

    final: dict[int, dict[str, float]] = {}
    validation: dict[str, float] = {}
    if status != "diverged":
        with autocast(device, tc):
            if tc.validation_size:
                m = evaluate(model, data.validation, device)
                validation = {"accuracy": m["accuracy"], "sequence_accuracy": m["sequence_accuracy"]}
            m = evaluate(model, data.test, device)
            if not tc.validation_size:
                validation = {"accuracy": m["accuracy"], "sequence_accuracy": m["sequence_accuracy"]}
            final[config.task.seq_len] = {"accuracy": m["accuracy"], "sequence_accuracy": m["sequence_accuracy"]}
            for length in config.eval_lengths:
                m = evaluate(model, data.test_at_length(length, tc.test_size), device)
                final[length] = {"accuracy": m["accuracy"], "sequence_accuracy": m["sequence_accuracy"]}
    return TrainResult(
        status=status,
        steps=step,
        steps_to_target=steps_to_target,
        history=history,
        final=final,
        num_parameters=model.num_parameters(),
        num_parameters_total=model.num_parameters(non_embedding=False),
        state_size=model.state_size(config.task.seq_len),
        wall_time=time.perf_counter() - start,
        config=config.to_dict(),
        metric=config.task.metric,
        model=model if keep_model else None,
        validation=validation,
    )
