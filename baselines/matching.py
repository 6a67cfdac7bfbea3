"""Parameter matching: give every mixer the width at which its LM has the same parameter budget.

A fair comparison trains every model with (about) the same number of non-embedding parameters
(docs/design.md §6). `match_width` picks `d_model` for one mixer so that

    LM(lm_config, mixer_cls, config).num_parameters()      (non-embedding; complex counted twice)

lies within ±10 % of the target, the closest count winning. Widths are searched among multiples of 4
(tidy widths, and at D ≈ 64 a step of 4 changes a D²-sized count by ~13 %, fine enough to land within a
few per cent; multiples of 8 landed some models at ±9 %), falling back to multiples of 2 and then 1 only
if no multiple of 4 fits, always among the widths the mixer's config accepts (e.g. divisible by its
heads). Other config fields (`overrides`) are kept fixed.

`DEFAULT_PARAM_BUDGET` = 90,000: GateLoop's count at d_model = 64, max-headed, on the default
backbone (2 layers, MLP ratio 2) — 91,328 when this was written — rounded to two significant figures.

Counting builds the LM on the CPU with a one-token vocabulary (the tied embedding is excluded from the
count, and nothing else depends on the vocabulary) under a forked RNG, so matching never moves the
global random stream a training run seeds; results are cached.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any

import torch
from torch import nn

from baselines import get_mixer
from gateloop.backbone import LM, LMConfig
from gateloop.mixer import MixerConfig

DEFAULT_PARAM_BUDGET = 90_000
TOLERANCE = 0.10
WIDTH_STEPS = (4, 2, 1)  # grids tried in order; the first with a width inside the tolerance wins
MAX_WIDTH = 4096

_COUNTS: dict[Any, int] = {}


def count_parameters(mixer_cls: type[nn.Module], config: MixerConfig, lm_config: LMConfig) -> int:
    """Non-embedding real parameters of LM(lm_config, mixer_cls, config); cached."""
    lm_config = dataclasses.replace(lm_config, vocab_size=1)
    key = (mixer_cls, config, lm_config)
    try:
        hash(key)
    except TypeError:  # a config holding an unhashable value: count without caching
        key = None
    if key is None or key not in _COUNTS:
        # fork_rng: building initialises weights from the global generator; put its state back.
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            count = LM(lm_config, mixer_cls, config).num_parameters(non_embedding=True)
        if key is None:
            return count
        _COUNTS[key] = count
    return _COUNTS[key]


def _config_at(config_class: type[MixerConfig], d_model: int, overrides: dict[str, Any]) -> MixerConfig | None:
    try:
        return config_class(d_model=d_model, **overrides)
    except ValueError:  # a width this mixer's constraints rule out (e.g. not divisible by its heads)
        return None


def match_width(
    name: str, target_params: int, lm_config: LMConfig, overrides: dict[str, Any] | None = None
) -> MixerConfig:
    """The config of mixer `name` (with `overrides` fixed) whose LM is closest to target_params, within ±10 %.

    Raises ValueError naming the model, the target and the closest achievable count if no width fits.
    Assumes the count grows with d_model (true of every registered mixer), so each grid is searched by
    galloping up from the smallest width and then bisecting.
    """
    cls = get_mixer(name)
    config_class: type[MixerConfig] = cls.config_class
    overrides = dict(overrides or {})
    field_names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - field_names)
    if unknown:
        raise ValueError(f"match_width({name!r}): unknown config field(s) {unknown}; valid: {sorted(field_names)}")
    if "d_model" in overrides:
        raise ValueError(f"match_width({name!r}): d_model is what is being chosen; do not pass it in overrides")
    if not isinstance(target_params, int) or target_params < 1:
        raise ValueError(f"match_width({name!r}): target_params={target_params!r} must be a positive int")

    closest: tuple[float, MixerConfig, int] | None = None  # (|relative error|, config, count) over all grids
    for step in WIDTH_STEPS:
        configs = [c for d in range(step, MAX_WIDTH + 1, step) if (c := _config_at(config_class, d, overrides))]
        if not configs:
            continue
        # Find the first width whose count reaches the target; the best lies on either side of it.
        counts: dict[int, int] = {}

        def count_at(i: int) -> int:
            if i not in counts:
                counts[i] = count_parameters(cls, configs[i], lm_config)
            return counts[i]

        # Gallop up from the smallest width, then bisect: building wide LMs just to count them is slow.
        lo, hi = 0, 1
        while hi < len(configs) and count_at(hi) < target_params:
            lo, hi = hi, 2 * hi
        first = bisect.bisect_left(range(len(configs)), target_params, lo=lo, hi=min(hi + 1, len(configs)), key=count_at)
        best: tuple[float, MixerConfig, int] | None = None
        for i in (first - 1, first):
            if 0 <= i < len(configs):
                error = abs(count_at(i) - target_params) / target_params
                if best is None or error < best[0]:
                    best = (error, configs[i], count_at(i))
        if best is not None and (closest is None or best[0] < closest[0]):
            closest = best
        if best is not None and best[0] <= TOLERANCE:
            return best[1]
    if closest is None:
        config_class(d_model=MAX_WIDTH, **overrides)  # raises the settings' own complaint, if they have one
        raise ValueError(f"match_width({name!r}): no d_model in 1..{MAX_WIDTH} is valid with overrides {overrides}")
    _, config, count = closest
    raise ValueError(
        f"match_width({name!r}): d_model is chosen by parameter matching, and no width these mixer settings allow "
        f"is within ±{TOLERANCE:.0%} of target_params={target_params:,}; the closest achievable is "
        f"d_model={config.d_model} with {count:,} parameters ({(count - target_params) / target_params:+.1%}): set "
        f"the width yourself (mixer.d_model=N) or change the settings that constrain it (e.g. a num_heads that "
        f"divides widths near the match)"
    )


def match_all(
    target_params: int, lm_config: LMConfig, overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, MixerConfig]:
    """`match_width` for every registered mixer; `overrides` maps a mixer name to its fixed fields."""
    from baselines import MIXERS

    overrides = overrides or {}
    return {name: match_width(name, target_params, lm_config, overrides.get(name)) for name in MIXERS}


def describe(
    name: str, config: MixerConfig, lm_config: LMConfig, target_params: int | None = None, seq_len: int | None = None
) -> str:
    """One line for logs: width, parameter count (and its distance to the target), state size at seq_len."""
    cls = get_mixer(name)
    count = count_parameters(cls, config, lm_config)
    text = f"{name}: d_model={config.d_model}, {count:,} non-embedding parameters"
    if target_params is not None:
        text += f" (target {target_params:,}, {(count - target_params) / target_params:+.1%})"
    if seq_len is not None:
        with torch.random.fork_rng(devices=[]):
            state = LM(dataclasses.replace(lm_config, vocab_size=1), cls, config).state_size(seq_len)
        text += f", decoding state {state:,} real scalars per sequence at L={seq_len}"
    return text


__all__ = ["DEFAULT_PARAM_BUDGET", "TOLERANCE", "count_parameters", "describe", "match_all", "match_width"]
