"""Baseline mixers for the shared backbone, and the one registry of every mixer (GateLoop included).

    s4d        S4D: fixed complex diagonal SSM per channel, FFT convolution      (baselines/s4d.py)
    s5         S5: one MIMO complex diagonal SSM, HiPPO-N init, parallel scan     (baselines/s5.py)
    lru        LRU: ring-initialised complex diagonal recurrence, γ normalisation (baselines/lru.py)
    retnet     RetNet: multi-scale retention, GateLoop's engines with a fixed gate (baselines/retnet.py)
    mamba      Mamba: selective SSM, real data-controlled transition             (baselines/mamba.py)
    attention  causal softmax attention with rotary positions                    (baselines/attention.py)
    gateloop   the model under study                                             (gateloop/layer.py)

Every class has `config_class` (its frozen MixerConfig) and meets gateloop.mixer.Mixer: the contract,
defined once in baselines/contract.py. The tests in tests/test_mixers.py run it over MIXERS, so a mixer is
tested the moment it is registered here; `testbed check-mixer` runs it on any other.

A mixer that is not registered here is named by import path (`pkg.module:Class`, `path/to/file.py:Class`)
or installed under a name (entry-point group `testbed.mixers`): `get_mixer` resolves both
(baselines/import_path.py), wherever a model name is accepted.
"""
from __future__ import annotations

from torch import nn

from baselines.attention import Attention
from baselines.lru import LRU
from baselines.mamba import Mamba
from baselines.retnet import RetNet
from baselines.s4d import S4D
from baselines.s5 import S5
from gateloop.layer import GateLoop

MIXERS: dict[str, type[nn.Module]] = {
    "gateloop": GateLoop,
    "s4d": S4D,
    "s5": S5,
    "lru": LRU,
    "retnet": RetNet,
    "mamba": Mamba,
    "attention": Attention,
}


def get_mixer(name: str) -> type[nn.Module]:
    """The mixer class registered under `name`, installed under it, or at the import path `name`; ValueError
    of one line when there is none, or when it fails the contract's static part."""
    if name in MIXERS:
        return MIXERS[name]
    from baselines.import_path import load_mixer

    return load_mixer(name, sorted(MIXERS))


__all__ = ["MIXERS", "get_mixer"]
