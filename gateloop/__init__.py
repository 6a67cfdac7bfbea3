"""GateLoop: a linear recurrence whose complex state transition is computed from the input.

    S_n = diag(a_n) · S_{n-1} + k_nᵀ v_n        S_n ∈ C^{K×V}
    y_n = Re(q_n · S_n)
    a_n = σ(W_α x_n + b_α) · exp(i (W_β x_n + b_β))

Dimension letters, used in every shape docstring and shape comment of the project:

    B  batch            L  sequence length      D  model width
    H  heads            K  key width (per head) V  value width (per head)
    N  state size (per channel, for the SSM baselines)      C  chunk length

This package holds the model under study and what every model shares: the recurrence engines
(`scan.py`), the GateLoop mixer (`layer.py`), the mixer protocol (`mixer.py`) and the language-model
backbone every mixer is trained in (`backbone.py`). It imports only torch.
"""
from gateloop.backbone import LM, LMConfig
from gateloop.layer import GateLoop, GateLoopConfig
from gateloop.mixer import Mixer, MixerConfig, is_transition, mark_transition, num_real_parameters
from gateloop.scan import MODES, gateloop_scan, gateloop_scan_ref, gateloop_step

__all__ = [
    "LM", "LMConfig", "Mixer", "MixerConfig", "is_transition", "mark_transition", "num_real_parameters",
    "MODES", "gateloop_scan", "gateloop_scan_ref", "gateloop_step",
    "GateLoop", "GateLoopConfig",
]
