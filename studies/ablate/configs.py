"""Each ablation's run configs: the suite's configs of the full model, with the ablation's overrides of
the mixer (the width parameter matching chose for the full model is kept) and, where given, a learning
rate per task; and the refusal of user overrides that an ablation would replace or cannot take."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from studies.ablate.ablations import ABLATIONS
from studies.config import RunConfig, parse_fields, parse_overrides
from studies.presets import get_preset
from studies.suite.configs import build_configs


def build_ablation_configs(
    ablations: Sequence[str],
    tasks: Sequence[str],
    preset_name: str,
    seeds: int,
    overrides: Sequence[str] = (),
    device: str | None = None,
    lr_by_task: dict[str, float] | None = None,
    threads: int | None = None,
) -> list[tuple[str, RunConfig]]:
    if not ablations:
        raise ValueError(f"the ablation list names no ablation; pass some of {list(ABLATIONS)}")
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; valid ablations: {list(ABLATIONS)}")
    base = build_configs(["gateloop"], tasks, get_preset(preset_name), seeds, overrides, device, threads)
    check_ablation_clashes(ablations, base, overrides)
    out = []
    for name in ablations:
        for config in base:
            train_cfg = config.train
            if lr_by_task is not None:
                train_cfg = dataclasses.replace(train_cfg, lr=lr_by_task[config.task_name])
            mixer = dataclasses.replace(config.mixer, **ABLATIONS[name])
            out.append((name, dataclasses.replace(config, mixer=mixer, train=train_cfg)))
    return out


def check_ablation_clashes(ablations: Sequence[str], base: Sequence[RunConfig], overrides: Sequence[str]) -> None:
    """Refuse mixer overrides that an ablation would silently replace (it sets the same knob to another
    value) or cannot be combined with (its config raises), naming each such ablation and the fix."""
    given = parse_overrides(list(overrides))["mixer"]
    if not given:
        return
    chosen = parse_fields(type(base[0].mixer), given, "model")
    clashes = {}
    for name in ablations:
        replaced = [f"sets {k}={v!r}" for k, v in ABLATIONS[name].items() if k in chosen and chosen[k] != v]
        if replaced:
            clashes[name] = ", ".join(replaced)
            continue
        for config in base:
            try:
                dataclasses.replace(config.mixer, **ABLATIONS[name])
            except ValueError as e:
                clashes[name] = str(e)
                break
    if clashes:
        kept = [a for a in ablations if a not in clashes]
        fix = f"or keep to the ablations it leaves alone: --ablations {','.join(kept)}" if kept else \
            "no selected ablation leaves it alone"
        raise ValueError(f"{' '.join(f'model.{k}={v}' for k, v in given.items())} clashes with ablation(s) "
                         + "; ".join(f"{name} ({why})" for name, why in clashes.items())
                         + f"; drop the override, {fix}")
