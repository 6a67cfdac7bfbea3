"""Run configuration: frozen dataclasses, dotted `section.key=value` overrides, stable run ids.

A run is fully described by a `RunConfig`: the task (its own frozen dataclass), the mixer name and
config, the backbone config and the training config. Overrides are parsed against the dataclass field
types, so a typo or a wrong type raises instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from baselines import get_mixer
from gateloop import LMConfig, MixerConfig
from tasks import TASKS, make_task

# Bump when the meaning of a stored result changes (metrics, defaults that are not in the config...):
# output directories and studies written under another version are refused rather than mixed.
# Version 2: the CPU thread count joined the config (version-1 runs used torch's default, all cores).
CONFIG_VERSION = 2


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    transition_lr_factor: float = 1.0  # lr multiplier of transition parameters (gates, eigenvalues, Δ)
    eval_every: int = 100
    test_size: int = 256
    # Protocol v2 (issue 24): rows of a validation set, disjoint from the test set, that every decision reads
    # (the evaluations every `eval_every` steps, early stopping, pruning, learning-rate choice); the test set
    # then gives only reported scores. 0 is protocol v1: decisions read the test set.
    validation_size: int = 0
    target_accuracy: float = 1.0  # early stop once the task's metric on the decision rows reaches this (1.0: never)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA only; recurrences stay fp32/complex64 inside the mixers
    # Intra-op threads of a CPU run. Part of the config because the thread count changes the order of
    # float reductions and hence results; one by default, since one single-threaded run per core
    # beats one multi-threaded run on small models (and parallel runs are `--workers`).
    threads: int = 1
    # Knobs added after runs were stored, at the value their absence means (see `task_knobs`).
    knobs_added_later: ClassVar[dict[str, Any]] = {"validation_size": 0}

    def __post_init__(self) -> None:
        check_types(self)
        if self.validation_size < 0:
            raise ValueError(f"TrainConfig: validation_size={self.validation_size} must be >= 0 (0: decisions read "
                             f"the test set, as in protocol v1); e.g. train.validation_size=256")
        positive = ("steps", "batch_size", "eval_every", "test_size", "threads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: {name}={getattr(self, name)} must be >= 1")
        if self.seed < 0:
            raise ValueError(f"TrainConfig: seed={self.seed} must be >= 0 (seeds 0, 1, 2, ... name the data streams "
                             f"and the initialisation); e.g. train.seed=0")
        # Floats must be finite: inf or nan would train nonsense (or diverge) instead of being refused.
        for name, low, fix in (("lr", "> 0", "e.g. train.lr=3e-3"),
                               ("weight_decay", ">= 0", "0 turns weight decay off"),
                               ("grad_clip", "> 0", ("it is the largest gradient norm a step may take, and "
                                                     "clipping is always on: to clip only outliers, set a large "
                                                     "value such as train.grad_clip=100")),
                               ("transition_lr_factor", ">= 0", ("the transition parameters' lr is lr × it; "
                                                                 "1 is the others' lr, 0 freezes them"))):
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > 0 if low == "> 0" else value >= 0)):
                raise ValueError(f"TrainConfig: {name}={value} must be {low} and finite ({fix})")
        if self.warmup_steps < 0 or self.warmup_steps >= self.steps:
            raise ValueError(f"TrainConfig: warmup_steps={self.warmup_steps} must be in [0, steps={self.steps})")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig: min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"TrainConfig: target_accuracy={self.target_accuracy} must be in (0, 1]")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"TrainConfig: device={self.device!r} must be auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class RunConfig:
    task_name: str
    task: Any  # the task's frozen dataclass (tasks.Task)
    model: str  # mixer name in baselines.MIXERS
    mixer: MixerConfig
    lm: LMConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_lengths: tuple[int, ...] = ()  # extra held-out lengths (length extrapolation)

    def __post_init__(self) -> None:
        needed = self.task.vocab_size
        if self.lm.vocab_size < needed:
            # Token ids at or above the embedding's size would fail in the middle of training.
            raise ValueError(f"lm.vocab_size={self.lm.vocab_size} is smaller than the {self.task_name} task's "
                             f"{needed} token ids; leave lm.vocab_size out (it follows the task) or set it >= {needed}")
        # The C++ computation paths run on the CPU only: a run that would train on CUDA with one is refused
        # here, when its config is built, before anything is created or trained.
        device = self.train.device
        for knob in (k for k in ("scan", "mode") if getattr(self.mixer, k, None) == "fused"):
            if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
                fix = "mixer.scan=torch" if knob == "scan" else "mixer.mode=chunked"
                raise ValueError(f"{self.model}: {knob}='fused' runs on the CPU only and this run's device is "
                                 f"{device!r} (CUDA): use {fix}, or --device cpu")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CONFIG_VERSION,
            "task": {"name": self.task_name, **task_knobs(self.task)},
            "model": {"name": self.model, **task_knobs(self.mixer)},
            "lm": dataclasses.asdict(self.lm),
            "train": task_knobs(self.train),
            "eval_lengths": list(self.eval_lengths),
        }

    def run_id(self) -> str:
        """Deterministic id of the resolved config (the seed included): equal configs, equal ids."""
        return config_hash(self.to_dict())

    def group_id(self) -> str:
        """Id of the config without its seed: the runs that are seeds of one another share it."""
        return group_hash(self.to_dict())


def task_knobs(task: Any) -> dict[str, Any]:
    """The knobs of a task (or mixer config) as a config stores them: all, but a knob added later while it
    is at the value that reproduces the behaviour from before it (`knobs_added_later`), whose absence
    means that value — so the ids of runs made before the knob existed do not change."""
    later = getattr(task, "knobs_added_later", {})
    return {k: v for k, v in dataclasses.asdict(task).items() if not (k in later and v == later[k])}


def config_hash(config: dict[str, Any]) -> str:
    """Hash of a `RunConfig.to_dict()`, also as read back from JSON (tuples and lists dump alike)."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def group_hash(config: dict[str, Any]) -> str:
    """`config_hash` of the config with `train.seed` removed."""
    train = {k: v for k, v in config["train"].items() if k != "seed"}
    return config_hash({**config, "train": train})


# ---------------------------------------------------------------------------------------------- overrides


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if origin is tuple:
        args = typing.get_args(tp)
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def check_types(obj: Any) -> None:
    """Raise TypeError if a field of the dataclass instance does not have its annotated type."""
    for name, tp in _field_types(type(obj)).items():
        value = getattr(obj, name)
        if not _matches(value, tp):
            raise TypeError(f"{type(obj).__name__}: {name}={value!r} is not of type {tp}")


def parse_value(raw: str, tp: Any, where: str) -> Any:
    """Parse the text of one override against a field's type; ValueError naming `where` if it does not parse.

    The one parser of override text (`testbed suite train.lr=...`, `testbed tasks show mqar vocab=8`):
    bool is true/yes/1 or false/no/0 (any case), None is none/null where the type allows it, a tuple is
    comma-separated with no empty entry."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and raw.lower() in ("none", "null"):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(raw, arg, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{where}: cannot parse {raw!r} as {tp}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise ValueError(f"{where}: {raw!r} is not one of {list(choices)}")
        return raw
    if origin is tuple:
        (inner, *_) = typing.get_args(tp)
        if raw == "":
            return ()
        if "" in (parts := [part.strip() for part in raw.split(",")]):
            raise ValueError(f"{where}: {raw!r} has an empty entry; remove the extra comma")
        return tuple(parse_value(part, inner, where) for part in parts)
    if tp is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{where}: {raw!r} is not a bool (true/false)")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{where}: {raw!r} is not an int") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{where}: {raw!r} is not a float") from None
    if tp is str:
        return raw
    raise ValueError(f"{where}: overriding fields of type {tp} is not supported")


def replace_from_strings(obj: Any, overrides: dict[str, str], section: str) -> Any:
    """dataclasses.replace with values given as text, parsed against the field types.

    Unknown keys raise with the valid keys listed; the dataclass's own __post_init__ then validates.
    """
    if not overrides:
        return obj
    return dataclasses.replace(obj, **parse_fields(type(obj), overrides, section))


def parse_fields(cls: type, overrides: dict[str, str], section: str) -> dict[str, Any]:
    """Values given as text parsed against the field types of dataclass `cls`; unknown keys raise."""
    types_ = _field_types(cls)
    unknown = sorted(set(overrides) - set(types_))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
                         f"valid keys for {section}: {', '.join(sorted(types_))}")
    return {k: parse_value(v, types_[k], f"{section}.{k}") for k, v in overrides.items()}


SECTIONS = ("task", "model", "mixer", "lm", "train")


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """['train.lr=1e-3', 'mixer.num_heads=4'] -> {'train': {'lr': '1e-3'}, 'mixer': {'num_heads': '4'}}.

    `model.x` is an alias of `mixer.x` (the mixer is the model's only variable part).
    """
    out: dict[str, dict[str, str]] = {s: {} for s in SECTIONS if s != "model"}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"override {item!r} must look like section.key=value with section in {list(SECTIONS)}")
        section = "mixer" if section == "model" else section
        if section not in out:
            raise ValueError(f"override {item!r}: unknown section {section!r}; valid sections: {list(SECTIONS)}")
        out[section][name] = value
    return out


def parse_mixer_overrides(items: list[str], why: str) -> dict[str, str]:
    """The `mixer.key=value` (or `model.key=value`) settings of `items`; ValueError naming every key of another
    section, followed by `why` (where only the mixer's own settings are accepted)."""
    parsed = parse_overrides(items)
    others = [f"{section}.{key}" for section, names in parsed.items() if section != "mixer" for key in names]
    if others:
        raise ValueError(f"{', '.join(others)}: {why}")
    return parsed["mixer"]


def stored_knobs(cls: type | None, knobs: dict[str, Any]) -> dict[str, Any]:
    """The knobs of a stored task or mixer config of class `cls`, with every knob added later that it
    lacks at the value its absence means (`knobs_added_later`), which need not be today's default."""
    return {**getattr(cls, "knobs_added_later", {}), **knobs}


def as_stored(config: RunConfig, stored: dict[str, Any]) -> RunConfig:
    """`config`, rebuilt from what a study stored (preset and override strings), with every knob added
    later that the `stored` config (`RunConfig.to_dict()` output) lacks set to the value its absence
    means: override strings stored before a knob existed do not name it, and today's default may differ."""
    def fill(obj: Any, section: dict[str, Any]) -> Any:
        missing = {k: v for k, v in getattr(obj, "knobs_added_later", {}).items() if k not in section}
        return dataclasses.replace(obj, **missing) if missing else obj

    return dataclasses.replace(config, task=fill(config.task, stored["task"]), mixer=fill(config.mixer, stored["model"]),
                               train=fill(config.train, stored["train"]))


def task_from_dict(data: dict[str, Any]) -> Any:
    """The task (tasks.Task) of a stored config (`RunConfig.to_dict()` output): its name and knobs."""
    knobs = {k: v for k, v in data["task"].items() if k != "name"}
    return make_task(data["task"]["name"], **stored_knobs(TASKS.get(data["task"]["name"]), knobs))


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `RunConfig.to_dict()` output (e.g. read back from a stored result)."""
    if data.get("version") != CONFIG_VERSION:
        raise ValueError(f"stored config has version {data.get('version')}, this testbed reads {CONFIG_VERSION}")
    task = dict(data["task"])
    task_name = task.pop("name")
    mixer = dict(data["model"])
    model = mixer.pop("name")
    mixer_class = get_mixer(model).config_class
    return RunConfig(
        task_name=task_name,
        task=make_task(task_name, **stored_knobs(TASKS.get(task_name), task)),
        model=model,
        mixer=mixer_class(**stored_knobs(mixer_class, {k: tuple(v) if isinstance(v, list) else v
                                                      for k, v in mixer.items()})),
        lm=LMConfig(**data["lm"]),
        train=TrainConfig(**stored_knobs(TrainConfig, data["train"])),
        eval_lengths=tuple(data["eval_lengths"]),
    )
