"""The capability study's design: its models, its task variants, and the predictions registered before it ran.

Models (`ModelLabel`) and task variants (`TaskVariant`) are named data; `Prediction`s are pre-registered
claims about the confirmed scores, judged by one rule (`RULE`, applied by `judge`).

Matching (docs/design.md §6 "compare like with like"), at the CPU study's d_model = 48 (gpu: 128, same rules):
- K×V family, on GateLoop's engine where it can be: d_model = 48, 4 heads of K = V = 12, a complex
  K×V state per head (2·H·K·V = 1152 real scalars per layer, 2304 for the 2-layer LM) for all four:
  gateloop_kv (data magnitude, data phase); gateloop_kv_real (data magnitude, phase 0: GLA-like);
  gateloop_kv_fixed (learned input-independent magnitude and phase: a learned RetNet); retnet with
  value_factor = 1 (its own fixed multi-scale decays and angles), whose state then equals the others'
  exactly. Parameters are not equal: fixing a gate removes its projection (42k–52k; printed).
- diagonal family at the same d_model = 48, state 2·D = 96 real scalars per layer where the knobs allow:
  max-headed gateloop (H = D, K = V = 1: 2·D), lru with d_state = D (2·N), s4d with d_state = 2
  (D·N; one complex mode per channel), s5 with d_state = 2·D (P real scalars with conjugate
  symmetry). Exact matching is impossible for mamba: its state is E·D·(N + d_conv − 1) with the
  authors' expand E = 2 and d_conv = 4, at least 8·D at N = 1, so mamba (N = 1) holds 4× the others'
  state. s4d at N = 2 has about half the others' parameters (29k against 42k–52k: its layer has no
  input projections, and a wider s4d would leave the shared width). Both are printed next to every
  number, not hidden.
- attention (d_model = 48, 4 heads) is the ceiling: a KV cache of 2·L·D per layer.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from studies.stats import mean_ci
from tasks import make_task

HEADS = 4


# ----------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelLabel:
    """A named model of the study: a mixer and the mixer fields it fixes (d_model included)."""

    label: str
    mixer: str
    overrides: tuple[tuple[str, Any], ...]
    family: str  # "kv" | "diagonal" | "ceiling"
    note: str

    def override_strings(self, replace: tuple[tuple[str, Any], ...] = ()) -> list[str]:
        """`mixer.key=value` overrides of this model, with the fields in `replace` replaced."""
        merged = {**dict(self.overrides), **dict(replace)}
        return [f"mixer.{key}={'none' if value is None else value}" for key, value in merged.items()]


def model_label(label: str, mixer: str, family: str, note: str, **overrides: Any) -> ModelLabel:
    return ModelLabel(label, mixer, tuple(overrides.items()), family, note)


def matched_models(d: int) -> tuple[ModelLabel, ...]:
    """The two matched families and the ceiling at width d (see the module docstring for the matching)."""
    return (
        model_label("gateloop_kv", "gateloop", "kv", "data-controlled magnitude and phase (GateLoop)",
                    d_model=d, num_heads=HEADS),
        model_label("gateloop_kv_real", "gateloop", "kv", "data-controlled magnitude, zero phase (GLA-like)",
                    d_model=d, num_heads=HEADS, phase="zero"),
        model_label("gateloop_kv_fixed", "gateloop", "kv",
                    "learned input-independent magnitude and phase (a learned RetNet)",
                    d_model=d, num_heads=HEADS, magnitude="fixed", phase="fixed"),
        model_label("retnet", "retnet", "kv",
                    "fixed multi-scale decays and angles; value_factor=1: the same K×V state",
                    d_model=d, num_heads=HEADS, value_factor=1),
        model_label("gateloop_max", "gateloop", "diagonal", "max-headed GateLoop (H = D, K = V = 1)",
                    d_model=d, num_heads=None),
        model_label("lru", "lru", "diagonal", "fixed complex diagonal, d_state = D", d_model=d, d_state=d),
        model_label("s4d", "s4d", "diagonal", "fixed complex diagonal, one mode per channel (d_state = 2)",
                    d_model=d, d_state=2),
        model_label("s5", "s5", "diagonal", "fixed complex diagonal MIMO, d_state = 2·D", d_model=d,
                    d_state=2 * d),
        model_label("mamba", "mamba", "diagonal", "data-controlled real diagonal, d_state = 1: 4× the family's "
                    "state (the least at expand 2, d_conv 4)", d_model=d, d_state=1, scan="torch"),
        model_label("attention", "attention", "ceiling", "softmax attention, the recall ceiling", d_model=d,
                    num_heads=HEADS),
    )


# ------------------------------------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class TaskVariant:
    """A named task setting: a task, the knobs it fixes, and its step budget (the same for every model)."""

    label: str
    task: str
    knobs: tuple[tuple[str, Any], ...]
    steps: int
    note: str

    def override_strings(self) -> list[str]:
        return [f"task.{key}={value}" for key, value in self.knobs] + [f"train.steps={self.steps}"]

    def knobs_dict(self) -> dict[str, Any]:
        return dict(self.knobs)

    @property
    def metric(self) -> str:
        """The metric its task is scored on ("accuracy" or "sequence_accuracy")."""
        return make_task(self.task, **self.knobs_dict()).metric


def task_variant(label: str, task: str, steps: int, note: str, **knobs: Any) -> TaskVariant:
    return TaskVariant(label, task, tuple(knobs.items()), steps, note)


# ------------------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Prediction:
    """A pre-registered claim about the confirmed accuracies (on the task's metric).

    kind "beats": every model in `winners` beats every model in `losers` on every listed variant, at
    `multiplier` × the training length. kind "fails": every model in `winners` (for this kind: the
    models predicted to fail) stays within `FAIL_MARGIN` of the best no-solve baseline. `RULE` is
    applied by `judge` below.
    """

    name: str
    kind: str  # "beats" | "fails"
    variants: tuple[str, ...]
    winners: tuple[str, ...]
    losers: tuple[str, ...]
    multiplier: int
    why: str
    # Set by `applicable` where a smaller study judges a narrower claim: what was registered and is
    # not judged here (e.g. "variants z3; losers s4d, s5"), printed beside the verdict.
    not_judged: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("beats", "fails"):
            raise ValueError(f"Prediction {self.name}: kind={self.kind!r} must be 'beats' or 'fails'")
        if (self.kind == "beats") != bool(self.losers):
            raise ValueError(f"Prediction {self.name}: a 'beats' prediction names losers, a 'fails' one none")


FAIL_MARGIN = 0.10
RULE = (
    "With 95 % CIs (Student t over the confirm seeds) per model: a 'beats' prediction is confirmed when, on "
    "every listed variant, every winner's CI lies entirely above every loser's, refuted when on some variant "
    "some loser's CI lies entirely above some winner's, and inconclusive otherwise. A 'fails' prediction is "
    f"confirmed when every listed model's CI upper end is below floor + {FAIL_MARGIN}, refuted when some "
    f"model's CI lower end is above floor + {FAIL_MARGIN}, inconclusive otherwise. Missing data, or fewer than 2 "
    "seeds for any compared model (no interval): inconclusive."
)

_RECURRENT = ("gateloop_kv", "gateloop_kv_real", "gateloop_kv_fixed", "retnet", "gateloop_max", "lru", "s4d", "s5",
              "mamba")


def predictions(mqar: tuple[str, ...]) -> tuple[Prediction, ...]:
    """The pre-registered predictions; `mqar` names the study's three MQAR variants, fewest pairs first."""
    return (
        Prediction(
            "phase_tracks_cyclic_kv", "beats", ("parity", "z3"), ("gateloop_kv",),
            ("gateloop_kv_real", "gateloop_kv_fixed", "retnet"), 4,
            "Z_m needs an input-dependent rotation (a_n = e^{2πi x_n/m}); a real gate in (0,1) has no negative "
            "or complex eigenvalue and a fixed rotation ignores the input, so neither counts mod m at any length "
            "(Grazzi et al. 2024); a learned rotation is exact at every length, so it extrapolates."),
        Prediction(
            "phase_tracks_cyclic_diagonal", "beats", ("parity", "z3"), ("gateloop_max",),
            ("lru", "s4d", "s5", "mamba"), 4,
            "The same argument within the diagonal family: only max-headed GateLoop has a data-controlled "
            "phase; mamba's transition is data-controlled but real and positive."),
        Prediction(
            "attention_does_not_extrapolate_counting", "beats", ("parity", "z3"), ("gateloop_kv",), ("attention",), 8,
            "Softmax attention carries no running state; at 8× the trained length it meets unseen positions."),
        Prediction(
            "s3_needs_phase", "beats", ("s3",), ("gateloop_kv",), ("gateloop_kv_real", "gateloop_kv_fixed"), 1,
            "S3's sign is parity, which needs a data-controlled phase (above); two stacked diagonal layers "
            "with data-controlled phase can cascade sign and rotation (S3 is solvable)."),
        Prediction(
            "a5_negative_control", "fails", ("a5",), (*_RECURRENT, "attention"), (), 4,
            "A5's word problem is NC¹-complete: no constant-depth stack of diagonal recurrences (nor a "
            "constant-depth transformer) tracks it at every length (Merrill et al. 2024). A model above the "
            "floor here at 4× would point to a leak in the task, not a capability."),
        Prediction(
            "forgetting_needs_data_magnitude_kv", "beats", ("memory_horizon",), ("gateloop_kv", "gateloop_kv_real"),
            ("gateloop_kv_fixed", "retnet"), 1,
            "A reset must erase a binding however recent, and a binding must survive however long before the "
            "query: only a magnitude that the input controls does both; a fixed decay trades one for the other."),
        Prediction(
            "forgetting_needs_data_magnitude_diagonal", "beats", ("memory_horizon",), ("gateloop_max", "mamba"),
            ("lru", "s4d", "s5"), 1, "The same argument within the diagonal family."),
        Prediction(
            "recall_needs_kv_state", "beats", mqar, ("gateloop_kv", "retnet"), ("gateloop_max", "lru", "s4d", "s5"), 1,
            "Recalling K bindings needs a state that stores outer products k vᵀ (Arora et al. 2023, zoology); a "
            "diagonal state of 2·D scalars per layer cannot hold K value vectors, data-controlled or not."),
        Prediction(
            "selection_under_capacity_pressure", "beats", (mqar[-1],), ("gateloop_kv",),
            ("gateloop_kv_fixed", "retnet"), 1,
            "With the most bindings in the same K×V state, writing selectively and forgetting by content "
            "(data-controlled magnitude) should matter; a fixed decay forgets early pairs by position."),
        Prediction(
            "selective_copy_needs_selection", "beats", ("selective_copy",), ("gateloop_kv", "gateloop_kv_real"),
            ("gateloop_kv_fixed", "retnet"), 1,
            "Data tokens at random places among blanks: a data-controlled gate can leave the state unchanged on "
            "blanks, a fixed transition decays or rotates through them (Gu & Dao 2023)."),
    )


def applicable(registered: tuple[Prediction, ...], variants: tuple[str, ...],
               labels: tuple[str, ...]) -> tuple[Prediction, ...]:
    """The registered predictions as a study with only these variants and models can judge them: each
    keeps its listed variants and models that the study has, and is left out where none of its variants,
    winners or (for "beats") losers remain. A narrowed claim says what of it is not judged
    (`Prediction.not_judged`, printed in the report beside its verdict); nothing is added or reworded."""
    kept = []
    for p in registered:
        vs = tuple(v for v in p.variants if v in variants)
        winners = tuple(w for w in p.winners if w in labels)
        losers = tuple(x for x in p.losers if x in labels)
        if vs and winners and (p.kind == "fails" or losers):
            dropped = [(name, [x for x in full if x not in kept_])
                       for name, full, kept_ in (("variants", p.variants, vs), ("winners", p.winners, winners),
                                                 ("losers", p.losers, losers))]
            note = "; ".join(f"{name} {', '.join(items)}" for name, items in dropped if items)
            kept.append(dataclasses.replace(p, variants=vs, winners=winners, losers=losers, not_judged=note))
    return tuple(kept)


# ------------------------------------------------------------------------------------------------- rule


MIN_SEEDS = 2  # a verdict needs an interval on every side it compares


def ci_bounds(values: Sequence[float]) -> tuple[float, float]:
    """(low, high) of the 95 % Student-t interval of the mean: the interval `RULE` reads."""
    mean, half = mean_ci(list(values))
    return mean - half, mean + half


def judge(prediction: Prediction, scores: dict[tuple[str, str], list[float]], floor: dict[str, float]) -> tuple[str, str]:
    """(verdict, evidence) of a prediction by `RULE`; `scores` maps (variant, label) to per-seed scores at the
    prediction's length, `floor` maps a variant to its best baseline's score there."""
    evidence, separated, reversed_ = [], True, False
    thin = [f"{label} on {variant}" for variant in prediction.variants
            for label in (*prediction.winners, *prediction.losers)
            if scores.get((variant, label)) is not None and len(scores[(variant, label)]) < MIN_SEEDS]
    if thin:  # one seed has no interval: it can neither confirm nor refute anything
        return "inconclusive", f"fewer than {MIN_SEEDS} seeds for {', '.join(thin)}"
    for variant in prediction.variants:
        if prediction.kind == "fails":
            for label in prediction.winners:
                if not scores.get((variant, label)):
                    return "inconclusive", f"no data for {label} on {variant}"
                low, high = ci_bounds(scores[(variant, label)])
                limit = floor[variant] + FAIL_MARGIN
                separated &= high < limit
                reversed_ |= low > limit
                if low > limit:
                    evidence.append(f"{label} on {variant}: CI [{low:.3f}, {high:.3f}] above {limit:.3f}")
            continue
        for w in prediction.winners:
            for loser in prediction.losers:
                if not scores.get((variant, w)) or not scores.get((variant, loser)):
                    return "inconclusive", f"no data for {w} or {loser} on {variant}"
                wl, wh = ci_bounds(scores[(variant, w)])
                ll, lh = ci_bounds(scores[(variant, loser)])
                separated &= wl > lh
                if ll > wh:
                    reversed_ = True
                    evidence.append(f"{loser} [{ll:.3f}, {lh:.3f}] above {w} [{wl:.3f}, {wh:.3f}] on {variant}")
    if reversed_:
        return "refuted", "; ".join(evidence)
    if separated:
        return "confirmed", "every CI separated as predicted"
    return "inconclusive", "some CIs overlap"

