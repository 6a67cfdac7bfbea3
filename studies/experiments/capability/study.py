"""The capability study as data: `Study` (models, task variants, tuning protocol, state-size sweep,
ablations, predictions), and the two studies defined, `CPU_STUDY` (this 2-core machine) and `GPU_STUDY`
(zoology's scale; unverified: no GPU was available to run or time it)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from studies.ablate.ablations import ABLATIONS
from studies.experiments.capability.design import (ModelLabel, Prediction, TaskVariant, applicable, matched_models,
                                                   matched_models_v2, predictions, predictions_v2, task_variant)
from studies.presets import get_preset
from studies.tune.lr_search import LrSearch

PROTOCOLS = ("v1", "v2")
MIN_CONFIRM_SEEDS = 5  # protocol v2 (design §6): at least 5 fresh seeds, 8 where outcomes split


# ------------------------------------------------------------------------------------- sweep, ablations


@dataclass(frozen=True)
class SweepPoint:
    """One point of the state-size sweep: a model label with some of its mixer fields replaced."""

    label: str
    overrides: tuple[tuple[str, Any], ...]

    @property
    def size(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.overrides)


def is_main_size(model: ModelLabel, point: SweepPoint) -> bool:
    return all(dict(model.overrides).get(key) == value for key, value in point.overrides)


def _points(label: str, field: str, values: tuple[int, ...]) -> tuple[SweepPoint, ...]:
    return tuple(SweepPoint(label, ((field, v),)) for v in values)


def sweep_points(d: int) -> tuple[SweepPoint, ...]:
    """Three sizes per model, the main size among them. K×V models, max-headed GateLoop and attention grow
    their state with the width (zoology's axis); the other diagonal models with d_state at width d."""
    widths = (2 * d // 3 // 8 * 8, d, 4 * d // 3 // 8 * 8)
    return (
        *[p for label in ("gateloop_kv", "gateloop_kv_real", "gateloop_kv_fixed", "retnet", "gateloop_max",
                          "attention") for p in _points(label, "d_model", widths)],
        *_points("lru", "d_state", (d // 2, d, 4 * d)),
        *_points("s4d", "d_state", (2, 8, 32)),
        *_points("s5", "d_state", (d, 2 * d, 8 * d)),
        *_points("mamba", "d_state", (1, 4, 16)),
    )


# ------------------------------------------------------------------------------------------------ study


@dataclass(frozen=True)
class Study:
    """One complete capability study: models, task variants, tuning protocol (v1 or v2), sweep, ablations."""

    preset: str  # studies.presets name: batch size, evaluation, lengths of the extrapolation test
    description: str
    models: tuple[ModelLabel, ...]
    variants: tuple[TaskVariant, ...]
    predictions: tuple[Prediction, ...]
    sweep_variant: str
    sweep: tuple[SweepPoint, ...]
    ablation_variants: tuple[str, ...]
    # Half-decade steps from 10^-3.5 to 10^-2, the same grid for every model (zoology sweeps 4 log-spaced
    # rates too); every other knob stays at the preset's value.
    lr_grid: tuple[float, ...] = tuple(float(f"{10 ** e:.3g}") for e in np.linspace(-3.5, -2.0, 4))
    tuning_seeds: int = 2  # seeds per tuning trial; the objective is their mean accuracy
    confirm_seeds: int = 5  # fresh seeds re-training each model's best grid point
    sweep_seeds: int = 3
    ablation_base: str = "gateloop_kv"  # ablations change one component of it, keeping its width and heads
    ablations: tuple[str, ...] = ("full", "fixed_magnitude", "unit_magnitude", "real_gates", "fixed_phase",
                                  "fixed_all", "modulus_sigmoid", "no_output_gate", "no_norm", "max_heads")
    # Per variant, the ablations run there where they differ from `ablations` (each component where it
    # is predicted to matter, as studies/ablate/ablations.py pairs them).
    ablations_by_variant: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ablation_seeds: int = 3
    sampler_seed: int = 0
    budget_hours: float = 8.0  # the wall time the whole study must fit (the dry run says if it does not)
    prefix: str = "capability"  # studies: PREFIX/VARIANT/LABEL, PREFIX-sweep/..., PREFIX-ablate/...
    # "v1": the committed study's protocol (lr grid, tolerant halving, decisions on the test rows, the
    # ablations at the full model's lr). "v2" (design §6.1, issue 24): decisions on a validation set as
    # large as the preset's test set, `lr_search`'s rule for every model and every ablation, plateau-safe
    # halving with each variant's escape window, each variant's confirm seeds and early stopping.
    protocol: str = "v1"
    lr_search: LrSearch = dataclasses.field(default_factory=LrSearch)  # v2: one rule for every model and ablation

    def __post_init__(self) -> None:
        labels = [m.label for m in self.models]
        variants = [v.label for v in self.variants]
        for name, items in (("model labels", labels), ("variant labels", variants)):
            if len(set(items)) != len(items):
                raise ValueError(f"Study {self.preset}: {name} {items} must be unique")
            if any("/" in item or not item for item in items):
                raise ValueError(f"Study {self.preset}: {name} {items} must be non-empty names without '/' "
                                 f"(studies are named PREFIX/VARIANT/LABEL)")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"Study {self.preset}: protocol={self.protocol!r} must be one of {PROTOCOLS}")
        for p in self.predictions:
            unknown = sorted({*p.winners, *p.losers} - set(labels)) + sorted(set(p.variants) - set(variants))
            if unknown:
                raise ValueError(f"Study {self.preset}: prediction {p.name} names unknown labels {unknown}")
        for v in self.variants:
            unknown = sorted(set(v.models) - set(labels))
            if unknown:
                raise ValueError(f"Study {self.preset}: variant {v.label} runs unknown models {unknown}")
        for p in self.predictions:
            for label in p.variants:
                absent = sorted({*p.winners, *p.losers} - {m.label for m in self.models_for(label)})
                if absent:
                    raise ValueError(f"Study {self.preset}: prediction {p.name} compares {absent} on {label}, "
                                     f"which does not run them (TaskVariant.models)")
        for point in self.sweep:
            if point.label not in labels:
                raise ValueError(f"Study {self.preset}: sweep point names unknown model {point.label!r}")
        for variant in (self.sweep_variant, *self.ablation_variants):
            if variant not in variants:
                raise ValueError(f"Study {self.preset}: unknown variant {variant!r}")
        for variant, names in self.ablations_by_variant:
            if variant not in self.ablation_variants:
                raise ValueError(f"Study {self.preset}: ablations_by_variant names {variant!r}, which is not among "
                                 f"ablation_variants {self.ablation_variants}")
        unknown = sorted({a for a in (*self.ablations, *(a for _, names in self.ablations_by_variant for a in names))
                          if a not in ABLATIONS})
        if unknown:
            raise ValueError(f"Study {self.preset}: unknown ablation(s) {unknown}; valid: {list(ABLATIONS)}")
        if self.ablation_base not in labels:
            raise ValueError(f"Study {self.preset}: unknown ablation base {self.ablation_base!r}")
        # The sweep's main-size points and the ablations' "full" row are the first confirm seeds' runs
        # (under v2 the ablations are tuned and confirmed like models: ablation_seeds is v1's).
        checks = [("sweep_seeds", self.confirm_seeds_for(self.sweep_variant))]
        if self.protocol == "v1":
            checks.append(("ablation_seeds", self.confirm_seeds))
        for name, confirm_seeds in checks:
            if getattr(self, name) > confirm_seeds:
                raise ValueError(f"Study {self.preset}: {name}={getattr(self, name)} exceeds confirm_seeds="
                                 f"{confirm_seeds}, whose runs it reuses; lower it or raise confirm_seeds")
        self._check_protocol()

    def _check_protocol(self) -> None:
        """v1 declares none of v2's per-variant settings; v2 declares them within bounds (design §6)."""
        if self.protocol == "v1":
            declared = [v.label for v in self.variants if (v.no_prune_before, v.confirm_seeds, v.early_stop) != (0, None, True)]
            if declared:
                raise ValueError(f"Study {self.preset}: variants {declared} declare an escape window, confirm seeds or "
                                 f"no early stop, which are protocol v2's; set protocol='v2' (v1 ran none of them)")
            return
        if self.tuning_seeds < 2:
            raise ValueError(f"Study {self.preset}: tuning_seeds={self.tuning_seeds}: protocol v2 scores every trial "
                             f"on at least 2 seeds (one lucky seed must not decide)")
        thin = {label: n for label, n in [("the study", self.confirm_seeds),
                                          *((v.label, self.confirm_seeds_for(v.label)) for v in self.variants)]
                if n < MIN_CONFIRM_SEEDS}
        if thin:
            raise ValueError(f"Study {self.preset}: confirm seeds {thin}: protocol v2 confirms on at least "
                             f"{MIN_CONFIRM_SEEDS} fresh seeds (at least 8 where seeds split into learned and not)")
        preset = get_preset(self.preset)
        for p in self.predictions:
            for label in p.variants:
                lengths = (1, *preset.multipliers(self.variant(label).task))
                if p.multiplier not in lengths:
                    raise ValueError(f"Study {self.preset}: prediction {p.name} reads {label} at {p.multiplier}×, "
                                     f"which preset {self.preset!r} never evaluates (it reads {list(lengths)}×)")

    @property
    def validation_size(self) -> int:
        """Rows of the validation set every decision reads: under v2 as many as the preset's test set,
        under v1 none (decisions read the test set)."""
        return get_preset(self.preset).train["test_size"] if self.protocol == "v2" else 0

    def overrides(self, variant: TaskVariant) -> list[str]:
        """The overrides of every run on `variant`: its own (task knobs, steps, early stopping) and, under
        v2, the validation set's size. Under v1 exactly the variant's, as the committed study ran."""
        extra = [f"train.validation_size={self.validation_size}"] if self.validation_size else []
        return [*variant.override_strings(), *extra]

    def confirm_seeds_for(self, variant: str) -> int:
        """Fresh seeds re-training each best configuration on `variant`: its own number, or the study's."""
        declared = self.variant(variant).confirm_seeds
        return self.confirm_seeds if declared is None else declared

    def models_for(self, variant: str) -> tuple[ModelLabel, ...]:
        """The models run on `variant`: its declared ones, in the study's order, or every model."""
        declared = self.variant(variant).models
        return tuple(m for m in self.models if not declared or m.label in declared)

    def ablations_for(self, variant: str) -> tuple[str, ...]:
        return dict(self.ablations_by_variant).get(variant, self.ablations)

    def model(self, label: str) -> ModelLabel:
        return next(m for m in self.models if m.label == label)

    def variant(self, label: str) -> TaskVariant:
        return next(v for v in self.variants if v.label == label)


# The CPU study is cut towards 8 h on 2 cores. The dry run's upper bound (every run at its full budget,
# results/capability/dry-run.txt) moves with this machine's speed: 17.2 h at 04:27 UTC on 2026-12-02
# (MQAR at 6000 steps), 5.7 h at 09:58 that day (at 8000); early stopping and pruning shorten it. Step budgets
# come from learning curves of these very configs (results/pilot2, one seed each): each lets the best
# model reach 0.99 (issue 14, "trained to capability"); early stop at 0.99. What the 8 h cut, against
# the full design (kept whole in the gpu study below), and why:
# - s4d and s5: the same class as lru (a fixed complex diagonal transition); lru stands for the class.
# - s3 and a5: the best candidate, gateloop_kv, is at S3's sign_only floor after 3000 steps (0.340
#   against 0.336, results/pilot2), so S3 is not learned within what 8 h allow; a5 is its negative
#   control. parity and z3 (a rotation by 2π/3: no real eigenvalue, negative or not, can count mod 3)
#   carry the phase predictions.
# - memory_horizon: its best model needs > 11k steps at L=64 (results/pilot: attention 1.000 at 11k,
#   retnet 0.969 at 12k, lr 3e-3; results/pilot2: attention 0.004 after 6k at lr 1e-2), about 25
#   core-hours for 8 models × 11 runs on this machine, three times the whole budget.
# - mqar at K=4, not the headline's K=8: at K=8 only mamba learned within 12k steps (results/pilot,
#   d_state 16, lr 3e-3: 0.996 at 6k; 4-head gateloop 0.180 at 12k) and gateloop_kv was below its
#   floor after 6k at lr 1e-2 (results/pilot2: 0.078); at K=4 mamba with this study's d_state = 1
#   reached 0.99 at 5.5k (lr 3.16e-3). The state-size sweep carries the capacity axis at fixed K.
# - mqar_k4's budget is 8000 steps, not the 6000 its pilots ran: on one seed mamba reached 0.99 at 5.5k
#   and gateloop_kv was at 0.973 at 6k, still climbing; "the best model reaches 0.99 in every final seed"
#   needs room for seeds that leave the 0.25 plateau later (issue 14's table: 11k–15k steps at lr 1e-3).
# - lr grid 10^-3 … 10^-2 (three half-decades), without 3.16e-4: every pilot run that learned did so
#   at 3.16e-3, and at 1e-3 MQAR took 11k–15k steps (issue 14's table), past these budgets.
# - ablations only of the components the main families do not already isolate (real_gates, fixed_all
#   and max_heads are the main study's gateloop_kv_real, gateloop_kv_fixed and gateloop_max, each tuned
#   there), on parity and z3 (the phase) and mqar. z3 was added on 2026-12-02, after the main part
#   had run on it and before any ablation had: there gateloop_kv is at capability (0.995) and the
#   real-gated model extrapolated to 2× as well as it did, so which gate component carries Z_3 is
#   open; 9 runs of 3000 steps.
PARITY_STEPS, Z3_STEPS, COPY_STEPS, MQAR_STEPS = 2000, 3000, 3000, 8000
# the sweep's models: one line per kind of transition (data-controlled complex, fixed, data-controlled
# real) in each family, and attention
SWEEP_LABELS = ("gateloop_kv", "retnet", "gateloop_max", "lru", "mamba", "attention")
_ST = dict(seq_len=32, min_len_frac=0.5, train_targets="prefix")
_MQAR = dict(seq_len=32, vocab=32)
_CPU_MODELS = tuple(m for m in matched_models(48) if m.label not in ("s4d", "s5"))
_CPU_VARIANTS = (
    task_variant("parity", "state_tracking", PARITY_STEPS, "Z_2, final position, lengths uniform in [L/2, L]",
                 group="cyclic", modulus=2, **_ST),
    task_variant("z3", "state_tracking", Z3_STEPS, "Z_3 (sum mod 3): a rotation by 2π/3, no real eigenvalue",
                 group="cyclic", modulus=3, **_ST),
    task_variant("selective_copy", "selective_copy", COPY_STEPS, "8 tokens at random places, exact match",
                 seq_len=32, vocab=16, num_tokens=8),
    task_variant("mqar_k4", "mqar", MQAR_STEPS, "4 pairs", num_kv_pairs=4, **_MQAR),
)
CPU_STUDY = Study(
    preset="capability",
    description="2 CPU cores (budget 8 h): d_model 48, length 32, batch 32",
    models=_CPU_MODELS,
    variants=_CPU_VARIANTS,
    # the three MQAR variants of the full design; the capacity-pressure claim (its K=10) is not judged here
    predictions=applicable(predictions(("mqar_k4", "mqar_k8", "mqar_k10")), tuple(v.label for v in _CPU_VARIANTS),
                           tuple(m.label for m in _CPU_MODELS)),
    sweep_variant="mqar_k4",
    sweep=tuple(p for p in sweep_points(48) if p.label in SWEEP_LABELS),
    ablation_variants=("parity", "z3", "mqar_k4"),
    lr_grid=(1e-3, 3.16e-3, 1e-2),
    ablations=("fixed_magnitude", "fixed_phase", "unit_magnitude", "modulus_sigmoid", "no_output_gate"),
    ablations_by_variant=(("parity", ("fixed_magnitude", "fixed_phase", "unit_magnitude")),
                          ("z3", ("fixed_magnitude", "fixed_phase", "unit_magnitude"))),
)

# zoology's scale (lengths up to 256, K up to 64, batch 256: the `gpu` preset). Unverified: this
# machine has no GPU; the budgets are guesses scaled from the CPU study and are for one GPU, < 1 h there.
_ST_GPU = dict(seq_len=128, min_len_frac=0.5, train_targets="prefix")
_MQAR_GPU = dict(seq_len=256, vocab=512)
GPU_STUDY = dataclasses.replace(
    CPU_STUDY,
    preset="gpu",
    lr_grid=Study.__dataclass_fields__["lr_grid"].default,
    # The default ablations but max_heads, which is the main part's gateloop_max (and which the ablation
    # builder refuses on the 4-head base, whose num_heads it would override).
    ablations=tuple(a for a in Study.__dataclass_fields__["ablations"].default if a != "max_heads"),
    ablations_by_variant=(),
    prefix="capability-gpu",  # its own studies: one storage may hold both studies without clashing
    description="one GPU, < 1 h (unverified: estimated, never run on a GPU): d_model 128, lengths up to 256, "
                "K up to 64, batch 256",
    models=matched_models(128),
    variants=(
        task_variant("parity", "state_tracking", 2000, "Z_2 at length 128", group="cyclic", modulus=2, **_ST_GPU),
        task_variant("z3", "state_tracking", 2000, "Z_3 at length 128", group="cyclic", modulus=3, **_ST_GPU),
        task_variant("s3", "state_tracking", 2000, "S3 at length 128", group="S3", **_ST_GPU),
        task_variant("a5", "state_tracking", 1000, "A5 at length 128: the negative control", group="A5", **_ST_GPU),
        task_variant("memory_horizon", "memory_horizon", 2000, "length 256", seq_len=256, vocab=64, num_long=4,
                     num_erased=4),
        task_variant("mqar_k16", "mqar", 3000, "16 pairs at length 256", num_kv_pairs=16, **_MQAR_GPU),
        task_variant("mqar_k32", "mqar", 3000, "32 pairs", num_kv_pairs=32, **_MQAR_GPU),
        task_variant("mqar_k64", "mqar", 3000, "64 pairs (zoology's largest)", num_kv_pairs=64, **_MQAR_GPU),
        task_variant("selective_copy", "selective_copy", 2000, "16 tokens at length 256", seq_len=256, vocab=32,
                     num_tokens=16),
    ),
    predictions=predictions(("mqar_k16", "mqar_k32", "mqar_k64")),
    sweep_variant="mqar_k64",
    sweep=sweep_points(128),
    ablation_variants=("memory_horizon", "parity", "mqar_k64"),
    budget_hours=1.0,
)

# Study v2 (issue 25): the whole question under protocol v2, on this 2-core machine, beside v1 (whose storage
# and report stay as the record). Its predictions (design.predictions_v2) were committed before any of its
# runs. What it is:
# - models: v1's families with a signed real gate added to each (gateloop_kv_signed, gateloop_max_signed),
#   S4D and S5 (v1 left them out for cost), mamba at d_state 16 as a labelled reference row; attention.
# - variants, in the order they run (the issue's priorities): (a) v1's four; (b) induction heads; (c) S3.
#   Left out, priority (d) memory_horizon (its best model needs > 11k steps at L=64, results/pilot and
#   pilot2) and (e) the state-size sweep: see the dry run (results/capability-v2/dry-run.txt) for the cost.
# - budgets: v1's four from v1's measured curves of the same configs (results/capability: the best model
#   reached 0.99 in every confirm seed within them; results/pilot2); induction heads and S3 from this
#   study's own pilot curves (results/pilot-v2-budgets).
# - escape windows (no pruning rung before): from the same curves, the step by which the slowest learning
#   seed had left its floor, rounded up to a rung. MQAR's seeds left the 0.25 plateau between ~1.2k and
#   ~6k steps in v1, so no rung prunes there at all (the protocol forbids pruning a learner on its plateau).
# - confirm seeds: 8 wherever v1's seeds split at a length a prediction reads (all but none: parity and z3
#   at 2×, selective copy and MQAR at 1×), so 8 everywhere.
# - early stopping only where every prediction reads 1× (selective copy, MQAR); elsewhere every run trains
#   every step, so that scores beyond the training length compare equal training.
# - ablations of gateloop_kv, tuned like models, on parity, z3 and MQAR: the head-shared data magnitude with
#   a per-channel data phase (the Mamba-2/3 layout, layer.py's magnitude "data_head"), the fixed magnitude and
#   the fixed phase; the positive-real, signed-real and fixed gates are models of the main part.
V2_CONFIRM_SEEDS = 8
_ALL_BUT_MAMBA_16 = tuple(m.label for m in matched_models_v2(48) if m.label != "mamba_d16")
# Induction heads (results/pilot-v2-budgets, lr 3.16e-3, one seed): mamba_d16 at 0.99 by 500 steps, attention by
# 750; gateloop_kv_real sat at the floor (0.14) until 2500 and reached 1.0 at 3500; gateloop_kv was still at the
# floor after 6000. 4000 steps let the K×V models the prediction compares leave that plateau; no rung before
# 3500 (none at all with rungs at 1000 and 2000). Run by the K×V family, mamba (both sizes) and attention:
# one binding, recalled at a distance, is the K×V family's and the ceiling's question.
V2_IH_STEPS = 4000
_IH_MODELS = ("gateloop_kv", "gateloop_kv_real", "gateloop_kv_signed", "gateloop_kv_fixed", "retnet", "mamba",
              "mamba_d16", "attention")
# S3 (the same pilot): at lr 3.16e-3 gateloop_kv sat at the sign_only floor (0.28 on these rows) until about
# 3000 steps, then climbed to 0.79 by 4500 and 0.86 by 8000, short of 0.99; at 1e-2 it stayed at chance, and
# attention was at the floor after 8000 steps at both rates. So S3 is learned slowly by the one model that
# can represent it, and no budget this machine allows takes a model to 0.99: 6000 steps put the learner well
# off its plateau (what the predictions need), no rung before 4000. Run by the models its predictions compare.
# (The study's tuning then did better: gateloop_kv at 5.62e-3, a rate the pilot had not tried, and
# gateloop_kv_signed, not in the pilot, at 3.16e-3 and 5.62e-3 reached 0.99 on validation rows in 6000 steps;
# results/capability-v2/main/trials.jsonl.)
V2_S3_STEPS = 6000
_S3_MODELS = ("gateloop_kv", "gateloop_kv_real", "gateloop_kv_signed", "gateloop_kv_fixed", "retnet", "lru", "s4d",
              "s5", "attention")
_V2_VARIANTS = (
    task_variant("parity", "state_tracking", PARITY_STEPS, "Z_2, final position, lengths uniform in [L/2, L]",
                 no_prune_before=1000, early_stop=False, models=_ALL_BUT_MAMBA_16, group="cyclic", modulus=2, **_ST),
    task_variant("z3", "state_tracking", Z3_STEPS, "Z_3 (sum mod 3): a rotation by 2π/3, no real eigenvalue",
                 no_prune_before=1500, early_stop=False, models=_ALL_BUT_MAMBA_16, group="cyclic", modulus=3, **_ST),
    task_variant("selective_copy", "selective_copy", COPY_STEPS, "8 tokens at random places, exact match",
                 no_prune_before=1500, seq_len=32, vocab=16, num_tokens=8),
    task_variant("mqar_k4", "mqar", MQAR_STEPS, "4 pairs", no_prune_before=6000, num_kv_pairs=4, **_MQAR),
    task_variant("induction_heads", "induction_heads", V2_IH_STEPS, "one trigger, recalled at the end; read at 4×",
                 no_prune_before=3500, early_stop=False, models=_IH_MODELS, seq_len=32, vocab=8),
    task_variant("s3", "state_tracking", V2_S3_STEPS, "S3 (non-abelian, solvable), final position",
                 no_prune_before=4000, early_stop=False, models=_S3_MODELS, group="S3", **_ST),
)
CPU_STUDY_V2 = Study(
    preset="capability",
    description="study v2 on 2 CPU cores (issue 25): d_model 48, length 32, batch 32, protocol v2",
    models=matched_models_v2(48),
    variants=_V2_VARIANTS,
    predictions=predictions_v2(),
    sweep_variant="mqar_k4",
    sweep=(),  # priority (e), left out
    ablation_variants=("parity", "z3", "mqar_k4"),
    ablations=("head_magnitude", "fixed_magnitude", "fixed_phase"),
    confirm_seeds=V2_CONFIRM_SEEDS,
    budget_hours=20.0,  # 40 device-hours on 2 cores (issue 25)
    prefix="capability-v2",
    protocol="v2",
    # The rule's bounds 1e-4 .. 1e-1 (the default's lower bound is 3.16e-5): at 1e-4 these models barely move
    # within their budgets (v1: at 1e-3 MQAR took 11k-15k steps), and a best point at either bound is shown as
    # such in the lr figure (a reason to widen, not a result). It caps the rule at 7 trials, not 8.
    lr_search=LrSearch(low=-4.0),
)

STUDIES: dict[str, Study] = {"capability": CPU_STUDY, "gpu": GPU_STUDY, "v2": CPU_STUDY_V2}
