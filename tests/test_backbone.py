"""The shared LM backbone with the GateLoop mixer: shapes, decoding == forward, parameter accounting,
optimiser groups, config validation, and a model that actually learns a task needing its mixer."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from gateloop import LM, MODES, GateLoop, GateLoopConfig, LMConfig, MixerConfig, is_transition

VOCAB = 11


def make_lm(n_layers: int = 2, mlp: bool = True, seed: int = 0, **mixer_kwargs) -> LM:
    mixer_kwargs.setdefault("mode", "recurrent")
    torch.manual_seed(seed)  # nn.Module init draws from the global generator
    return LM(LMConfig(vocab_size=VOCAB, n_layers=n_layers, mlp=mlp), GateLoop, GateLoopConfig(d_model=8, **mixer_kwargs))


def tokens(batch: int, length: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_heads", [None, 2])
def test_forward_shape(num_heads):
    logits = make_lm(num_heads=num_heads)(tokens(3, 7))
    assert logits.shape == (3, 7, VOCAB) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


@pytest.mark.parametrize("mlp", [True, False])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("num_heads", [None, 2])
def test_step_decoding_matches_forward(num_heads, mode, mlp, device):
    model = make_lm(num_heads=num_heads, mode=mode, chunk_size=4, mlp=mlp)
    with torch.no_grad():  # gates far from their init, so that decoding is tested on strong data control
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    model, x = model.to(device), tokens(2, 10).to(device)
    expected = model(x)
    cache = model.init_cache(2, device)
    shapes = [c.shape for c in cache]
    logits = []
    for n in range(x.shape[1]):
        step_logits, cache = model.step(x[:, n], cache)
        logits.append(step_logits)
        assert [c.shape for c in cache] == shapes  # O(1) memory: the state does not grow with n
    torch.testing.assert_close(torch.stack(logits, dim=1), expected, atol=1e-5, rtol=1e-5)


def test_state_size_sums_the_layers():
    H, K = 2, 4
    assert make_lm(n_layers=3, num_heads=H).state_size(100) == 3 * 2 * H * K * K
    assert make_lm(n_layers=1).state_size(100) == 2 * 8  # max-headed: H = D = 8, K = V = 1


class ComplexScale(nn.Module):
    """A stand-in mixer with one complex parameter of 3 entries (6 real numbers)."""

    def __init__(self, config: MixerConfig) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.ones(3, dtype=torch.complex64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.abs().sum()


def test_num_parameters_counts_complex_twice():
    D = 4
    model = LM(LMConfig(vocab_size=5, n_layers=2, mlp=False), ComplexScale, MixerConfig(d_model=D))
    # Per block: RMSNorm weight (D) + 3 complex entries (6 reals); then the final RMSNorm (D).
    assert model.num_parameters() == 2 * (D + 6) + D
    assert model.num_parameters(non_embedding=False) == 2 * (D + 6) + D + 5 * D
    # GateLoop is all real: the count is the plain numel sum, minus the tied embedding.
    lm = make_lm()
    assert lm.num_parameters() == sum(p.numel() for p in lm.parameters()) - VOCAB * 8


def test_param_groups_exempt_transition_parameters():
    model = make_lm(num_heads=2, magnitude="data", phase="fixed")
    groups = model.param_groups(weight_decay=0.1, lr=1e-3, transition_lr_factor=0.25)
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [(g["weight_decay"], g["lr"], {names[id(p)] for p in g["params"]}) for g in groups]
    transition = {n for n, p in model.named_parameters() if is_transition(p)}
    assert transition == {
        f"blocks.{i}.mixer.{n}" for i in range(2) for n in ("magnitude_proj.weight", "magnitude_proj.bias", "phase_angle")
    }
    # Exactly one group holds the transition parameters: no decay, lr × factor.
    (transition_group,) = [g for g in grouped if g[2] & transition]
    assert transition_group == (0.0, pytest.approx(2.5e-4), transition)
    decay, no_decay = [g for g in grouped if not g[2] & transition]
    assert decay[:2] == (0.1, 1e-3) and no_decay[:2] == (0.0, 1e-3)
    assert "blocks.0.mixer.qkv.weight" in decay[2] and "embedding.weight" in no_decay[2]
    assert "blocks.0.mixer_norm.weight" in no_decay[2]
    # Every trainable parameter lands in exactly one group.
    assert sorted(n for g in grouped for n in g[2]) == sorted(names.values())
    torch.optim.AdamW(groups, lr=1e-3)  # the groups are valid optimiser input


@pytest.mark.parametrize(
    ("kwargs", "constraint"),
    [
        ({"vocab_size": 0}, "vocab_size=0 must be a positive int"),
        ({"vocab_size": 10, "n_layers": 0}, "n_layers=0 must be a positive int"),
        ({"vocab_size": 10, "n_layers": True}, "n_layers=True must be a positive int"),
        ({"vocab_size": 10.0}, "vocab_size=10.0 must be a positive int"),
        ({"vocab_size": 10, "mlp_ratio": -1}, "mlp_ratio=-1 must be a positive int"),
        ({"vocab_size": 10, "mlp": "yes"}, "mlp='yes' must be a bool"),
    ],
)
def test_lm_config_validation(kwargs, constraint):
    with pytest.raises(ValueError, match=re.escape(constraint)):
        LMConfig(**kwargs)
