"""The mixer contract, defined once: what a mixer must be and do to sit in the shared backbone.

`testbed check-mixer` prints it as a checklist for any mixer; tests/test_mixers.py runs the same checks on
every registered one. Two parts:

Static, `check_class` (run whenever a mixer is named by import path or entry point, before anything is
built or created): an nn.Module subclass with `forward`, `init_cache`, `step` and `state_size`
(gateloop.mixer.Mixer) and a `config_class` that is a frozen MixerConfig dataclass with a default for
every field, so that a run is its defaults plus `mixer.key=value` overrides.

Behavioural, `CHECKS` (each a function of a `Subject`: a mixer class, a config, a device; each returns a
one-line detail or raises `ContractViolation` with a one-line reason), plus `check_matching`:
    finite     finite outputs of the input's shape, dtype and device; finite gradients for the input and
               every parameter
    causal     perturbing positions >= 9 of 17 leaves outputs 0..8 unchanged (and does move 9..16)
    seeded     the same seed gives the same parameters and outputs, another seed another init
    decode     token-by-token decoding in a 2-layer LM (init_cache, step) equals the forward pass
    state      state_size is a positive int, non-decreasing in the length, summed by the LM, and equal to
               the real scalars per sequence (complex counts 2) of the cache `step` returns after 1 and 7 tokens
    tagged     transition parameters tagged with gateloop.mixer.mark_transition (a class with no learned
               transition says why in `no_learned_transition`, and tags none), and the LM's optimiser
               groups exempt exactly those from weight decay
    init       the mixer's own init survives building the backbone (nothing in LM's construction, or the
               move to the device, overwrites a parameter the mixer set)
    bf16       under bf16 autocast it runs, keeps finite gradients, and stays within 5 % of fp32
    matching   `baselines.matching.match_width` finds a width within ±10 % of a parameter budget, without
               touching the global RNG or the other config fields
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gateloop.backbone import LM, LMConfig
from gateloop.mixer import Mixer, MixerConfig, is_transition

PROTOCOL_METHODS = ("forward", "init_cache", "step", "state_size")


class ContractViolation(AssertionError):
    """A behavioural check failed; the message is the one-line reason."""


# ------------------------------------------------------------------------------------------------ static


def check_class(cls: Any, where: str) -> None:
    """ValueError with one line naming `where` (how the mixer was named) if `cls` fails the static contract."""
    if not isinstance(cls, type):
        raise ValueError(f"mixer {where!r} is a {type(cls).__name__}, not a class: name the mixer's nn.Module class")
    if not issubclass(cls, nn.Module):
        raise ValueError(f"mixer {where!r}: class {cls.__name__} is not a torch.nn.Module subclass")
    missing = [m for m in PROTOCOL_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise ValueError(f"mixer {where!r}: class {cls.__name__} lacks {', '.join(missing)} (the mixer protocol, "
                         f"gateloop.mixer.Mixer: forward, init_cache, step, state_size)")
    config_class = getattr(cls, "config_class", None)
    if config_class is None:
        raise ValueError(f"mixer {where!r}: class {cls.__name__} declares no config_class (set `config_class = "
                         f"MyConfig`, a frozen dataclass subclassing gateloop.mixer.MixerConfig)")
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)
            and issubclass(config_class, MixerConfig)):
        raise ValueError(f"mixer {where!r}: {cls.__name__}.config_class = {config_class!r} is not a dataclass "
                         f"subclassing gateloop.mixer.MixerConfig")
    if not config_class.__dataclass_params__.frozen:
        raise ValueError(f"mixer {where!r}: config class {config_class.__name__} is not frozen "
                         f"(@dataclass(frozen=True): a run's config is hashed into its id)")
    no_default = [f.name for f in dataclasses.fields(config_class)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if no_default:
        raise ValueError(f"mixer {where!r}: config class {config_class.__name__} has no default for "
                         f"{', '.join(no_default)} (a run is the defaults plus mixer.key=value overrides)")
    try:
        config_class()
    except Exception as e:  # its own validation refuses its own defaults
        raise ValueError(f"mixer {where!r}: {config_class.__name__}() with its defaults raises "
                         f"{type(e).__name__}: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    """An exception's message in one line (its first), for one-line refusals."""
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


# ------------------------------------------------------------------------------------------- behavioural


@dataclass(frozen=True)
class Subject:
    """What the behavioural checks run on: a mixer class at one config, on one device."""

    cls: type[nn.Module]
    config: MixerConfig
    device: str = "cpu"

    @property
    def d(self) -> int:
        return self.config.d_model

    def mixer(self, seed: int = 0) -> nn.Module:
        """The mixer built under `seed` (global RNG forked, so the caller's stream is untouched), on the device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.cls(self.config).to(self.device)

    def lm(self, seed: int = 0, vocab_size: int = 11, n_layers: int = 2) -> LM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return LM(LMConfig(vocab_size=vocab_size, n_layers=n_layers), self.cls, self.config).to(self.device)


def _randn(*shape: int, seed: int, device: str) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise ContractViolation(reason)


def check_finite(s: Subject) -> str:
    mixer = s.mixer()
    _require(isinstance(mixer, Mixer), f"{s.cls.__name__} does not meet gateloop.mixer.Mixer (config, forward, "
                                       f"init_cache, step, state_size)")
    x = _randn(2, 13, s.d, seed=1, device=s.device).requires_grad_()
    y = mixer(x)
    _require(isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype and y.device == x.device,
             f"forward maps a {tuple(x.shape)} {x.dtype} input to "
             + (f"{tuple(y.shape)} {y.dtype} on {y.device}" if isinstance(y, torch.Tensor) else type(y).__name__)
             + "; it must return (B, L, D) of the input's dtype and device")
    _require(bool(torch.isfinite(y).all()), f"the output holds {int((~torch.isfinite(y)).sum())} non-finite values")
    (y * _randn(2, 13, s.d, seed=2, device=s.device)).sum().backward()
    _require(bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0,
             "the input's gradient is " + ("not finite" if not torch.isfinite(x.grad).all() else "zero"))
    params = list(mixer.named_parameters())
    for name, p in params:
        _require(p.grad is not None, f"parameter {name} gets no gradient (unused, or cut from the graph)")
        _require(bool(torch.isfinite(p.grad).all()), f"parameter {name} has a non-finite gradient")
    return f"(2, 13, {s.d}) -> (2, 13, {s.d}); finite gradients for the input and all {len(params)} parameter tensors"


def check_causal(s: Subject) -> str:
    mixer = s.mixer()
    x = _randn(2, 17, s.d, seed=3, device=s.device)
    perturbed = x.clone()
    perturbed[:, 9:] += 3 * _randn(2, 8, s.d, seed=4, device=s.device)
    with torch.no_grad():
        y, y_perturbed = mixer(x), mixer(perturbed)
    past = (y_perturbed[:, :9] - y[:, :9]).abs().amax(dim=(0, 2))  # (9,) largest change per position
    moved = [n for n in range(9) if past[n] > 1e-6]
    if moved:
        raise ContractViolation(f"changing positions 9..16 moved the output at position {moved[0]} by "
                                f"{float(past[moved[0]]):.3g} (largest {float(past.max()):.3g} over positions 0..8): "
                                f"output n must depend on inputs 0..n only")
    future = float((y_perturbed[:, 9:] - y[:, 9:]).abs().max())
    _require(future > 1e-4, f"changing positions 9..16 moved no output there (largest change {future:.3g}): the "
                            f"output does not depend on its own input")
    return f"positions 0..8 unchanged (to 1e-6) when 9..16 change; 9..16 move by up to {future:.3g}"


def check_seeded(s: Subject) -> str:
    x = _randn(2, 7, s.d, seed=5, device=s.device)
    first, again, other = (s.mixer(seed) for seed in (0, 0, 1))
    for (name, p), q in zip(first.named_parameters(), again.parameters()):
        _require(torch.equal(p, q), f"parameter {name} differs between two inits under the same seed (an RNG "
                                    f"other than torch's global one, or one not seeded)")
    with torch.no_grad():
        _require(torch.equal(first(x), again(x)) and torch.equal(first(x), first(x)),
                 "two forward passes of the same init on the same input differ")
        _require(not torch.equal(first(x), other(x)), "a different seed gives the same outputs: the init is not random")
    return "the same seed gives the same parameters and outputs; another seed another init"


def check_decode(s: Subject) -> str:
    lm = s.lm().eval()
    tokens = torch.randint(0, 11, (3, 12), generator=torch.Generator().manual_seed(6)).to(s.device)
    with torch.no_grad():
        logits = lm(tokens)  # (B, L, vocab)
        cache = lm.init_cache(3, s.device)
        steps = []
        for n in range(tokens.shape[1]):
            step_logits, cache = lm.step(tokens[:, n], cache)
            steps.append(step_logits)
    decoded = torch.stack(steps, dim=1)
    error = (decoded - logits).abs()
    bad = error > 1e-4 + 1e-4 * logits.abs()
    if bad.any():
        first = int(bad.any(dim=(0, 2)).nonzero()[0])
        raise ContractViolation(f"logits decoded token by token differ from the forward pass from position {first} "
                                f"of 12 (largest difference {float(error.max()):.3g}; tolerance 1e-4 + 1e-4·|logit|)")
    return f"12 tokens decoded one at a time in a 2-layer LM match the forward pass (largest difference {float(error.max()):.2g})"


def cache_scalars(cache: Any) -> tuple[int, list[tuple[int, ...]]]:
    """Real scalars held by the tensors of a decoding cache (complex counts 2), and their shapes; tensors are
    found in tuples, lists, dicts and dataclasses, to any depth."""
    if isinstance(cache, torch.Tensor):
        return cache.numel() * (2 if cache.is_complex() else 1), [tuple(cache.shape)]
    if dataclasses.is_dataclass(cache) and not isinstance(cache, type):
        items = [getattr(cache, f.name) for f in dataclasses.fields(cache)]
    elif isinstance(cache, dict):
        items = list(cache.values())
    elif isinstance(cache, (tuple, list)):
        items = list(cache)
    else:
        return 0, []
    total, shapes = 0, []
    for item in items:
        n, s = cache_scalars(item)
        total, shapes = total + n, shapes + s
    return total, shapes


def check_state(s: Subject) -> str:
    mixer = s.mixer().eval()
    size = mixer.state_size(64)
    _require(isinstance(size, int) and not isinstance(size, bool) and size > 0,
             f"state_size(64) = {size!r}: it must be a positive int (real scalars per sequence)")
    _require(mixer.state_size(128) >= size, f"state_size(128) = {mixer.state_size(128)} < state_size(64) = {size}: "
                                            f"a decoding state does not shrink as the sequence grows")
    lm_size = s.lm().state_size(64)
    _require(lm_size == 2 * size, f"a 2-layer LM reports state_size(64) = {lm_size}, not 2 × {size}")
    B = 3
    x = _randn(B, 7, s.d, seed=9, device=s.device)
    with torch.no_grad():
        cache = mixer.init_cache(B, s.device)
        for n in range(7):
            _, cache = mixer.step(x[:, n], cache)
            if n + 1 in (1, 7):
                held, shapes = cache_scalars(cache)
                claimed = mixer.state_size(n + 1)
                _require(held == B * claimed,
                         f"after {n + 1} token(s) the cache step returns holds {held / B:g} real scalars per "
                         f"sequence (tensors {shapes}, batch {B}; complex counts 2) but state_size({n + 1}) = {claimed}")
    return (f"state_size = the cache's real scalars per sequence after 1 and 7 tokens "
            f"({mixer.state_size(1):,} and {mixer.state_size(7):,}); {size:,} at L=64")


def check_tagged(s: Subject) -> str:
    lm = s.lm()
    tagged = {n for n, p in lm.named_parameters() if is_transition(p)}
    why_none = getattr(s.cls, "no_learned_transition", None)
    if why_none:
        _require(not tagged, f"{s.cls.__name__} says it has no learned transition ({why_none}), yet "
                             f"{sorted(tagged)} are tagged")
        return f"no learned transition, none tagged ({why_none})"
    _require(bool(tagged), "no parameter is tagged: tag the transition parameters (gates, eigenvalues, Δ) with "
                           "gateloop.mixer.mark_transition, or, if there is no learned transition, say why in a class "
                           "attribute `no_learned_transition`")
    groups = lm.param_groups(weight_decay=0.1, lr=1e-3, transition_lr_factor=0.5)
    transition_group = [g for g in groups if g["lr"] == 0.5e-3]
    _require(len(transition_group) == 1 and transition_group[0]["weight_decay"] == 0.0
             and {id(p) for p in transition_group[0]["params"]} == {id(p) for n, p in lm.named_parameters() if n in tagged},
             "the LM's optimiser groups do not exempt exactly the tagged parameters from weight decay")
    names = sorted({n.split(".", 3)[-1] for n in tagged})
    return f"{len(tagged)} tagged in a 2-layer LM ({', '.join(names)}), no weight decay on them"


def check_init(s: Subject) -> str:
    built: list[dict[str, torch.Tensor]] = []

    def make(config: MixerConfig) -> nn.Module:
        mixer = s.cls(config)
        built.append({k: v.detach().clone() for k, v in mixer.state_dict().items()})
        return mixer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lm = LM(LMConfig(vocab_size=11, n_layers=2), make, s.config).to(s.device)
    for i, block in enumerate(lm.blocks):
        for name, value in block.mixer.state_dict().items():
            _require(torch.equal(value.cpu(), built[i][name]),
                     f"layer {i}'s {name} changed between the mixer's construction and the built model (the "
                     f"backbone, or the move to {s.device}, overwrote the mixer's own init)")
    return f"every mixer tensor of a 2-layer LM is as the mixer initialised it ({len(built[0])} per layer)"


def check_bf16(s: Subject) -> str:
    mixer = s.mixer()
    x = _randn(2, 9, s.d, seed=7, device=s.device).requires_grad_()
    with torch.autocast(torch.device(s.device).type, dtype=torch.bfloat16):
        y = mixer(x)
    y.float().sum().backward()
    _require(bool(torch.isfinite(y).all()) and bool(torch.isfinite(x.grad).all()),
             "under bf16 autocast the output or the input's gradient is not finite")
    with torch.no_grad():
        exact = mixer(x)
    error, bound = float((y.detach().float() - exact).abs().max()), 0.05 * float(exact.abs().max()) + 1e-3
    _require(error <= bound, f"under bf16 autocast the output differs from fp32 by {error:.3g} (> 5 % of its largest "
                             f"value, {bound:.3g}): keep the recurrence in fp32 inside the mixer")
    return f"runs under bf16 autocast, within {error:.2g} of fp32"


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    run: Callable[[Subject], str]
    per_device: bool  # run on every device (else once, on the CPU)


CHECKS: tuple[Check, ...] = (
    Check("finite", "finite values and gradients", check_finite, True),
    Check("causal", "causal", check_causal, True),
    Check("seeded", "seeded init", check_seeded, True),
    Check("decode", "decoding token by token equals the forward pass", check_decode, True),
    Check("state", "state_size agrees with the decoding cache", check_state, True),
    Check("tagged", "transition parameters tagged", check_tagged, False),
    Check("init", "its own init survives building the backbone", check_init, True),
    Check("bf16", "bf16 autocast", check_bf16, True),
)


def check_matching(name: str, target_params: int, lm_config: LMConfig, overrides: dict[str, Any] | None = None,
                   seq_len: int | None = None) -> tuple[MixerConfig, str]:
    """`match_width` of the mixer named `name` to `target_params` on `lm_config`, with `overrides` fixed: the
    config, and `describe`'s line. ContractViolation if no width fits (match_width's reason), if matching
    moved the global RNG, or if it changed a field other than d_model."""
    from baselines import get_mixer  # here: baselines/__init__ imports this module's loader
    from baselines.matching import TOLERANCE, count_parameters, describe, match_width

    cls = get_mixer(name)
    overrides = dict(overrides or {})
    rng_before = torch.get_rng_state()
    try:
        config = match_width(name, target_params, lm_config, overrides)
    except ValueError as e:
        raise ContractViolation(first_line(e)) from None
    _require(torch.equal(torch.get_rng_state(), rng_before), "matching consumed the global RNG (building the mixer "
                                                             "must draw from torch's generator, which matching forks)")
    _require(isinstance(config, cls.config_class) and
             config == cls.config_class(d_model=config.d_model, **overrides),
             "matching changed config fields other than d_model")
    count = count_parameters(cls, config, lm_config)
    _require(abs(count - target_params) <= TOLERANCE * target_params,
             f"d_model={config.d_model} gives {count:,} parameters, outside ±{TOLERANCE:.0%} of {target_params:,}")
    return config, describe(name, config, lm_config, target_params, seq_len)


__all__ = ["CHECKS", "Check", "ContractViolation", "Subject", "cache_scalars", "check_class",
           "check_matching"]
