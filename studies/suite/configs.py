"""A suite's runs as full configs: every (model, task, seed) resolved from a preset and the user's overrides,
with mixer widths matched to the preset's parameter budget; and the checks that only resolved configs allow."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from baselines import MIXERS, get_mixer
from baselines.matching import match_width
from gateloop import LMConfig
from studies.checks import check_device, check_memory
from studies.config import RunConfig, TrainConfig, parse_fields, parse_overrides, replace_from_strings
from studies.presets import Preset
from tasks import TASKS, TaskData, make_task


def build_configs(
    models: Sequence[str],
    task_names: Sequence[str],
    preset: Preset,
    seeds: int,
    overrides: Sequence[str] = (),
    device: str | None = None,
    threads: int | None = None,
) -> list[RunConfig]:
    """Resolve every (model, task, seed) run of a suite into a full RunConfig.

    Mixer widths are chosen by parameter matching to the preset's budget unless the user fixes
    `mixer.d_model`; task overrides apply to every selected task that has the knob. `device` and
    `threads` (the --device and --threads flags) set train.device and train.threads.
    """
    if not models:
        raise ValueError(f"the model list names no model; pass one of {sorted(MIXERS)}")
    for model in models:
        get_mixer(model)
    unknown = [t for t in task_names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks: {sorted(TASKS)}")
    parsed = parse_overrides(list(overrides))
    task_keys = set(parsed["task"])
    fields_by_task = {t: {f.name for f in dataclasses.fields(TASKS[t])} for t in task_names}
    orphan = sorted(k for k in task_keys if not any(k in f for f in fields_by_task.values()))
    if orphan:
        raise ValueError(f"task override(s) {orphan} match no selected task; knobs: "
                         + "; ".join(f"{t}: {sorted(f)}" for t, f in fields_by_task.items()))
    train_overrides = dict(parsed["train"])
    for key, flag in ((device, "device"), (threads, "threads")):
        if key is None:
            continue
        if flag in train_overrides and train_overrides[flag] != str(key):
            raise ValueError(f"--{flag} {key} and train.{flag}={train_overrides[flag]} disagree; give only one")
        train_overrides[flag] = str(key)

    configs = []
    for task_name in task_names:
        task = make_task(task_name, **preset.tasks.get(task_name, {}))
        task = replace_from_strings(task, {k: v for k, v in parsed["task"].items() if k in fields_by_task[task_name]},
                                    f"task ({task_name})")
        lm = replace_from_strings(LMConfig(vocab_size=task.vocab_size, **preset.lm), parsed["lm"], "lm")
        eval_lengths = tuple(m * task.seq_len for m in preset.multipliers(task_name)) if task.extrapolates else ()
        for model in models:
            mixer = _mixer_config(model, lm, preset, parsed["mixer"])
            for seed in range(seeds):
                train_cfg = replace_from_strings(TrainConfig(**{**preset.train, "seed": seed}), train_overrides, "train")
                configs.append(RunConfig(task_name, task, model, mixer, lm, train_cfg, eval_lengths))
    return configs


def _mixer_config(model: str, lm: LMConfig, preset: Preset, overrides: dict[str, str]):
    cls = get_mixer(model)
    default = cls.config_class(**preset.mixer.get(model, {}))
    if "d_model" in overrides:
        return replace_from_strings(default, overrides, f"mixer ({model})")  # never override the user's width
    # Not validated at the class's default width: matching chooses the width among those the overrides allow.
    fixed = {k: v for k, v in dataclasses.asdict(default).items() if k != "d_model"}
    fixed.update(parse_fields(cls.config_class, overrides, f"mixer ({model})"))
    return match_width(model, preset.param_budget, lm, fixed)


def check_configs(configs: Sequence[RunConfig]) -> None:
    """What only the resolved configs tell: a device set by train.device=..., a held-out set that leaves the
    training stream too little to draw (`TaskData.check_training_room`), a run too large for memory."""
    for device in sorted({c.train.device for c in configs}):
        check_device(device, "train.device")
    for config in configs:
        check_memory(config)  # first: the held-out sets drawn next would be allocated at the size refused here
    held_out = dict.fromkeys((c.task, c.train.seed, c.train.test_size, c.train.validation_size) for c in configs)
    for task, seed, test_size, validation_size in held_out:
        TaskData(task, seed, test_size, validation_size).check_training_room()
