"""The mixer contract, checked for every registered mixer (baselines.MIXERS).

A mixer is tested here the moment it is registered, by the one definition of the contract
(baselines/contract.py, which `testbed check-mixer` prints for any mixer): the static part (an nn.Module
with a frozen config class with defaults), shape and finiteness with gradients, causality, deterministic
init, decode == forward inside the LM, state_size equal to the decoding cache, tagged transition
parameters, its own init surviving the backbone, bf16 autocast, and parameter matching to the default
budget; and here, beside them, a "fits predict-the-previous-token" check that gradients flow end to end.
Per-model equivalences (convolution == recurrence, scans == loops, ...) live in the per-model files
(test_gateloop_layer.py, test_baselines_ssm.py, test_retnet_attention.py). The behavioural checks take the
`device` fixture (conftest.py): on CPU always, on CUDA where present.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from baselines import MIXERS, get_mixer
from baselines.contract import CHECKS, Subject, check_class, check_matching
from baselines.matching import DEFAULT_PARAM_BUDGET, count_parameters, match_width
from gateloop.backbone import LM, LMConfig
from gateloop.mixer import MixerConfig

NAMES = sorted(MIXERS)
D = 16


def test_registry_holds_the_seven_mixers() -> None:
    assert set(MIXERS) == {"gateloop", "s4d", "s5", "lru", "retnet", "mamba", "attention"}
    for name, cls in MIXERS.items():
        check_class(cls, name)  # the contract's static part: nn.Module, frozen config class with defaults
        assert issubclass(cls.config_class, MixerConfig) and dataclasses.is_dataclass(cls.config_class), name
        assert get_mixer(name) is cls
    with pytest.raises(ValueError, match="unknown mixer 'gpt'.*'attention'.*'s5'"):
        get_mixer("gpt")


@pytest.mark.parametrize("check", [c for c in CHECKS if c.per_device], ids=lambda c: c.key)
@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, check, device: str) -> None:
    cls = get_mixer(name)
    check.run(Subject(cls, cls.config_class(d_model=D), device))  # raises ContractViolation with the reason


@pytest.mark.parametrize("check", [c for c in CHECKS if not c.per_device], ids=lambda c: c.key)
@pytest.mark.parametrize("name", NAMES)
def test_contract_once(name: str, check) -> None:
    cls = get_mixer(name)
    check.run(Subject(cls, cls.config_class(d_model=D)))


# ---------------------------------------------------------------------------------------- parameter matching

DEFAULT_LM = LMConfig(vocab_size=32)


def test_default_budget_is_gateloop_at_width_64() -> None:
    gateloop = get_mixer("gateloop")
    count = count_parameters(gateloop, gateloop.config_class(d_model=64), DEFAULT_LM)
    assert gateloop.config_class(d_model=64).heads == 64  # the default is max-headed
    assert DEFAULT_PARAM_BUDGET == round(count, -4), f"GateLoop at d_model=64 has {count:,}; rounded budget changed"


@pytest.mark.parametrize("name", NAMES)
def test_match_width_lands_within_tolerance_of_default_budget(name: str) -> None:
    config, line = check_matching(name, DEFAULT_PARAM_BUDGET, DEFAULT_LM, seq_len=256)  # within ±10 %, RNG untouched
    assert config == dataclasses.replace(get_mixer(name).config_class(), d_model=config.d_model)  # others untouched
    assert f"d_model={config.d_model}" in line and "decoding state" in line


def test_match_width_picks_the_closest_width_and_keeps_overrides() -> None:
    config = match_width("retnet", 200_000, DEFAULT_LM, {"num_heads": 2, "value_factor": 1})
    assert (config.num_heads, config.value_factor) == (2, 1) and config.d_model % 4 == 0
    cls = get_mixer("retnet")

    def error(d: int) -> int:
        return abs(count_parameters(cls, dataclasses.replace(config, d_model=d), DEFAULT_LM) - 200_000)

    assert error(config.d_model) <= min(error(config.d_model - 4), error(config.d_model + 4))


def test_match_width_impossible_target_names_model_and_closest() -> None:
    with pytest.raises(ValueError, match=r"'attention'.*target_params=10.*closest achievable is d_model=\d+ with"):
        match_width("attention", 10, DEFAULT_LM)
    with pytest.raises(ValueError, match="unknown config field"):
        match_width("retnet", 90_000, DEFAULT_LM, {"heads": 4})
    with pytest.raises(ValueError, match="unknown mixer"):
        match_width("gpt", 90_000, DEFAULT_LM)


# RetNet singles out the previous position only through the interference of its K fixed rotation
# frequencies per head: at D = 32 (K = 8) it plateaus near 88 %, so it gets D = 64 (K = 16).
FIT_WIDTH = {"retnet": 64}


@pytest.mark.parametrize("name", NAMES)
def test_fits_predict_previous_token(name: str, device: str) -> None:
    """y_n = x_{n-1} needs the mixer (the MLP sees token n only): a 1-layer LM learns it to > 90 %."""
    vocab, B, L = 8, 16, 16
    cls = get_mixer(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        lm = LM(LMConfig(vocab_size=vocab, n_layers=1), cls, cls.config_class(d_model=FIT_WIDTH.get(name, 32)))
    lm = lm.to(device)
    opt = torch.optim.AdamW(lm.param_groups(weight_decay=0.0, lr=1e-2), lr=1e-2)
    gen = torch.Generator().manual_seed(8)
    for _ in range(300):
        tokens = torch.randint(0, vocab, (B, L), generator=gen).to(device)
        loss = nn.functional.cross_entropy(lm(tokens)[:, 1:].reshape(-1, vocab), tokens[:, :-1].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.05:
            break
    tokens = torch.randint(0, vocab, (64, L), generator=gen).to(device)
    with torch.no_grad():
        accuracy = (lm(tokens)[:, 1:].argmax(-1) == tokens[:, :-1]).float().mean().item()
    assert accuracy > 0.9, f"{name} reached only {accuracy:.2f} accuracy at predicting the previous token"
