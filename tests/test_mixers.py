"""The mixer contract, checked for every registered mixer (baselines.MIXERS).

A mixer is tested here the moment it is registered: shape and finiteness, causality, deterministic
init, decode == forward inside the LM, tagged transition parameters, a positive state size, parameter
matching to the default budget, and bf16 autocast, and a "fits predict-the-previous-token" check that gradients flow end to end.
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
from baselines.matching import DEFAULT_PARAM_BUDGET, TOLERANCE, count_parameters, describe, match_width
from gateloop.backbone import LM, LMConfig
from gateloop.mixer import Mixer, MixerConfig, is_transition

NAMES = sorted(MIXERS)
D = 16
# Mixers whose transition is not learned, so they have nothing to tag (every other one must tag some).
NO_LEARNED_TRANSITION = {
    "retnet": "γ_h and θ are fixed buffers",
    "attention": "softmax attention has no state transition",
}


def _mixer(name: str, seed: int = 0, d_model: int = D) -> nn.Module:
    cls = get_mixer(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cls.config_class(d_model=d_model))


def _lm(name: str, seed: int = 0, vocab_size: int = 11, n_layers: int = 2, d_model: int = D) -> LM:
    cls = get_mixer(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LM(LMConfig(vocab_size=vocab_size, n_layers=n_layers), cls, cls.config_class(d_model=d_model))


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_registry_holds_the_seven_mixers() -> None:
    assert set(MIXERS) == {"gateloop", "s4d", "s5", "lru", "retnet", "mamba", "attention"}
    for name, cls in MIXERS.items():
        assert isinstance(cls, type) and issubclass(cls, nn.Module), name
        assert issubclass(cls.config_class, MixerConfig) and dataclasses.is_dataclass(cls.config_class), name
        assert cls.config_class.__dataclass_params__.frozen, name
        assert get_mixer(name) is cls
    with pytest.raises(ValueError, match="unknown mixer 'gpt'.*'attention'.*'s5'"):
        get_mixer("gpt")


@pytest.mark.parametrize("name", NAMES)
def test_shape_finite_and_gradients_flow(name: str, device: str) -> None:
    mixer = _mixer(name).to(device)
    assert isinstance(mixer, Mixer)
    x = _randn(2, 13, D, seed=1).to(device).requires_grad_()
    y = mixer(x)
    assert y.shape == (2, 13, D) and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()
    (y * _randn(2, 13, D, seed=2).to(device)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}.{pname} has no finite gradient"


@pytest.mark.parametrize("name", NAMES)
def test_causal(name: str, device: str) -> None:
    mixer = _mixer(name).to(device)
    x = _randn(2, 17, D, seed=3).to(device)
    perturbed = x.clone()
    perturbed[:, 9:] += 3 * _randn(2, 8, D, seed=4).to(device)
    with torch.no_grad():
        y, y_perturbed = mixer(x), mixer(perturbed)
    torch.testing.assert_close(y_perturbed[:, :9], y[:, :9], rtol=0, atol=1e-6)
    assert (y_perturbed[:, 9:] - y[:, 9:]).abs().max() > 1e-4, "the perturbation must reach the future outputs"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_the_seed(name: str, device: str) -> None:
    x = _randn(2, 7, D, seed=5).to(device)
    first, again, other = (_mixer(name, seed=s).to(device) for s in (0, 0, 1))
    for (pname, p), q in zip(first.named_parameters(), again.parameters()):
        assert torch.equal(p, q), f"{name}.{pname} differs between two inits with the same seed"
    with torch.no_grad():
        assert torch.equal(first(x), again(x))
        assert torch.equal(first(x), first(x))
        assert not torch.equal(first(x), other(x)), "a different seed should give a different init"


@pytest.mark.parametrize("name", NAMES)
def test_decode_equals_forward_in_the_lm(name: str, device: str) -> None:
    lm = _lm(name).eval().to(device)
    tokens = torch.randint(0, 11, (3, 12), generator=torch.Generator().manual_seed(6)).to(device)
    with torch.no_grad():
        logits = lm(tokens)  # (B, L, vocab)
        cache = lm.init_cache(3, device)
        steps = []
        for n in range(tokens.shape[1]):
            step_logits, cache = lm.step(tokens[:, n], cache)
            steps.append(step_logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_state_size_positive(name: str) -> None:
    mixer = _mixer(name)
    assert isinstance(mixer.state_size(64), int) and mixer.state_size(64) > 0
    assert mixer.state_size(128) >= mixer.state_size(64)  # constant for recurrences, growing for a KV cache
    assert _lm(name).state_size(64) == 2 * mixer.state_size(64)


@pytest.mark.parametrize("name", NAMES)
def test_transition_parameters_tagged(name: str) -> None:
    lm = _lm(name)
    tagged = {n for n, p in lm.named_parameters() if is_transition(p)}
    if name in NO_LEARNED_TRANSITION:
        assert not tagged, f"{name}: {NO_LEARNED_TRANSITION[name]}, yet {sorted(tagged)} are tagged"
        return
    assert tagged, f"{name} must tag its transition parameters with mark_transition"
    # and the backbone's optimiser groups exempt exactly those from weight decay
    groups = lm.param_groups(weight_decay=0.1, lr=1e-3, transition_lr_factor=0.5)
    transition_group = [g for g in groups if g["lr"] == 0.5e-3]
    assert len(transition_group) == 1 and transition_group[0]["weight_decay"] == 0.0
    assert {id(p) for p in transition_group[0]["params"]} == {id(p) for n, p in lm.named_parameters() if n in tagged}


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_runs_and_stays_close(name: str, device: str) -> None:
    """Training on CUDA uses bf16 autocast; recurrences must keep fp32 inside and give similar outputs."""
    mixer = _mixer(name).to(device)
    x = _randn(2, 9, D, seed=7).to(device).requires_grad_()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        y = mixer(x)
    y.float().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    with torch.no_grad():
        exact = mixer(x)
    assert (y.float() - exact).abs().max() <= 0.05 * exact.abs().max() + 1e-3


# ---------------------------------------------------------------------------------------- parameter matching

DEFAULT_LM = LMConfig(vocab_size=32)


def test_default_budget_is_gateloop_at_width_64() -> None:
    gateloop = get_mixer("gateloop")
    count = count_parameters(gateloop, gateloop.config_class(d_model=64), DEFAULT_LM)
    assert gateloop.config_class(d_model=64).heads == 64  # the default is max-headed
    assert DEFAULT_PARAM_BUDGET == round(count, -4), f"GateLoop at d_model=64 has {count:,}; rounded budget changed"


@pytest.mark.parametrize("name", NAMES)
def test_match_width_lands_within_tolerance_of_default_budget(name: str) -> None:
    rng_before = torch.get_rng_state()
    config = match_width(name, DEFAULT_PARAM_BUDGET, DEFAULT_LM)
    assert torch.equal(torch.get_rng_state(), rng_before), "matching must not consume the global RNG"
    cls = get_mixer(name)
    assert isinstance(config, cls.config_class)
    count = LM(DEFAULT_LM, cls, config).num_parameters()
    assert abs(count - DEFAULT_PARAM_BUDGET) <= TOLERANCE * DEFAULT_PARAM_BUDGET, describe(name, config, DEFAULT_LM)
    assert config == dataclasses.replace(cls.config_class(), d_model=config.d_model)  # other fields untouched
    assert f"d_model={config.d_model}" in describe(name, config, DEFAULT_LM, DEFAULT_PARAM_BUDGET, seq_len=256)


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
