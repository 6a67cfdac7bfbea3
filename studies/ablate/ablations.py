"""GateLoop ablations as data: name -> overrides of GateLoopConfig. A new ablation is one line.

Each switches off or fixes one component of the gate a_n = σ(W_α x_n + b_α) · exp(i (W_β x_n + b_β)):
where it should matter — forgetting (magnitude) on memory_horizon, rotation (phase) on state_tracking,
both on mqar and selective_copy.
"""
from __future__ import annotations

from typing import Any

ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "fixed_magnitude": {"magnitude": "fixed"},  # learned but input-independent |a|
    "unit_magnitude": {"magnitude": "one"},  # |a| = 1: no forgetting at all
    "real_gates": {"phase": "zero"},  # a real data-controlled gate in (0, 1) (GLA / Mamba-2-like)
    "signed_gates": {"phase": "sign"},  # a real data-controlled gate in (−1, 1) (Grazzi et al. 2025)
    "head_magnitude": {"magnitude": "data_head"},  # one data magnitude per head, data phase per channel (Mamba-3)
    "fixed_phase": {"phase": "fixed"},  # learned but input-independent rotation
    "modulus_sigmoid": {"magnitude_param": "sigmoid_of_modulus"},  # |a| = σ(|z|), arg a = arg z: |a| in [0.5, 1)
    "no_output_gate": {"output_gate": False},
    "no_norm": {"norm": False},
    "max_heads": {"num_heads": None},  # H = D, K = V = 1 (the paper's setting; the default)
    "wide_heads": {"num_heads": 4},  # 4 heads with K = V = D/4: a matrix state per head
    "fixed_all": {"magnitude": "fixed", "phase": "fixed"},  # the fixed-transition limit, same architecture
}

# Tasks where each component is expected to matter (see the module docstring).
ABLATION_TASKS: tuple[str, ...] = ("memory_horizon", "state_tracking", "mqar", "selective_copy")
