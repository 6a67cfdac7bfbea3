"""What the capability study will train, and what it will cost: the planned runs of each part (main,
sweep, ablations) with their configs, and the dry run (`testbed capability --dry-run`), which prints the
plan with state sizes, parameter counts and a wall-time estimate from a short in-process measurement of
each config's training step (`studies.train.train_step`, the step every run takes)."""
from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from gateloop.chunked import always_split
from studies.ablate.ablations import ABLATIONS
from studies.ablate.configs import build_ablation_configs
from studies.config import RunConfig, run_config_from_dict
from studies.experiments.capability.design import TaskVariant
from studies.experiments.capability.study import Study, is_main_size
from studies.presets import get_preset
from studies.pool import run_parallel
from studies.tables import human_count, markdown_table
from studies.train import build_model, make_optimizer, resolve_device, train_step
from studies.tune.study import ModelSpec, base_config


@dataclass(frozen=True)
class PlannedRuns:
    """One line of the plan: `runs` trainings of one config, each at most `steps` steps."""

    part: str  # "main" | "sweep" | "ablations"
    variant: str
    label: str  # model label, "label@size" for the sweep, the ablation name(s) for ablations
    config: RunConfig
    runs: int
    detail: str  # e.g. "4 grid trials × 2 seeds + 5 confirm seeds"


def run_config(study: Study, variant: TaskVariant, mixer: str, overrides: list[str], device: str | None) -> RunConfig:
    """The config of `mixer` on `variant` at the study's preset, with the variant's and the protocol's
    overrides (`Study.overrides`) and the model's (and any further) ones."""
    return base_config(variant.task, mixer, study.preset, [*study.overrides(variant), *overrides], device)


def rule_detail(study: Study, variant: str) -> tuple[int, str]:
    """(runs, detail) of one model tuned by protocol v2's rule and confirmed on `variant`: at most
    `LrSearch.max_trials` trials (an upper bound) of `tuning_seeds` runs, then the variant's confirm seeds."""
    trials, confirm = study.lr_search.max_trials(), study.confirm_seeds_for(variant)
    return (trials * study.tuning_seeds + confirm,
            f"≤ {trials} rule trials × {study.tuning_seeds} seeds + {confirm} confirm seeds")


def main_plan(study: Study, device: str | None = None) -> list[PlannedRuns]:
    if study.protocol == "v2":
        return [PlannedRuns("main", v.label, m.label, run_config(study, v, m.mixer, m.override_strings(), device),
                            *rule_detail(study, v.label)) for v in study.variants for m in study.models_for(v.label)]
    grid = len(study.lr_grid)
    return [PlannedRuns("main", v.label, m.label, run_config(study, v, m.mixer, m.override_strings(), device),
                        grid * study.tuning_seeds + study.confirm_seeds,
                        f"{grid} grid trials × {study.tuning_seeds} seeds + {study.confirm_seeds} confirm seeds")
            for v in study.variants for m in study.models_for(v.label)]


def sweep_plan(study: Study, device: str | None = None, lrs: dict[str, float] | None = None) -> list[PlannedRuns]:
    """The sweep's configs; `lrs` (label -> tuned lr on the sweep variant) sets their learning rates.
    A point at the model's main size is left out: its runs are the main study's confirm seeds."""
    variant = study.variant(study.sweep_variant)
    plan = []
    for point in study.sweep:
        model = study.model(point.label)
        if is_main_size(model, point):
            continue
        lr = [] if lrs is None else [f"train.lr={lrs[point.label]}"]
        config = run_config(study, variant, model.mixer, [*model.override_strings(point.overrides), *lr], device)
        plan.append(PlannedRuns("sweep", variant.label, f"{point.label}@{point.size}", config, study.sweep_seeds,
                                f"{study.sweep_seeds} seeds"))
    return plan


def ablation_groups(study: Study, label: str, device: str | None = None,
                    lr: float | None = None) -> list[tuple[list[str], RunConfig]]:
    """The ablations of `ablation_base` on variant `label` by studies/ablate/configs.py's builder (at `lr`,
    if given), grouped by config: ablations that leave the config as another's (e.g. wide_heads = full on
    a 4-head base) are one group, named together."""
    base = study.model(study.ablation_base)
    if base.mixer != "gateloop":
        raise ValueError(f"ablation_base {base.label!r} is a {base.mixer}; the ablations are GateLoop's")
    variant = study.variant(label)
    overrides = [*study.overrides(variant), *base.override_strings()]
    labelled = build_ablation_configs(list(study.ablations_for(label)), [variant.task], study.preset, 1, overrides,
                                      device, None if lr is None else {variant.task: lr})
    groups: dict[str, tuple[list[str], RunConfig]] = {}
    for name, config in labelled:
        groups.setdefault(config.group_id(), ([], config))[0].append(name)
    return list(groups.values())


def ablation_specs(study: Study, label: str, device: str | None = None) -> list[tuple[ModelSpec, RunConfig]]:
    """Protocol v2's ablations on variant `label`, tuned like models (design §6.1): each group of
    `ablation_groups` as a model of its own, labelled BASE@NAME (BASE@A=B for a group), whose overrides
    are the base model's with the ablation's fields replaced, with its base config (the preset's lr).
    The group with "full" is the base model itself, tuned in the main part: not again."""
    base = study.model(study.ablation_base)
    specs = []
    for names, config in ablation_groups(study, label, device):
        if "full" in names:
            continue
        spec = ModelSpec(f"{base.label}@{'='.join(names)}", base.mixer,
                         tuple(base.override_strings(tuple(ABLATIONS[names[0]].items()))))
        built = run_config(study, study.variant(label), spec.model, list(spec.overrides), device)
        if built.to_dict() != config.to_dict():  # the spec must train what the ablation builder builds
            raise ValueError(f"ablation {spec.label}: its overrides {list(spec.overrides)} build another config "
                             f"than studies/ablate/configs.py's")
        specs.append((spec, built))
    return specs


def ablation_plan(study: Study, device: str | None = None, lrs: dict[str, float] | None = None) -> list[PlannedRuns]:
    """Ablations of `ablation_base` (`ablation_groups`); "full" (with any that equal it) is not planned.
    Under v1 each group re-trains at the full model's tuned lr (`lrs`: variant -> tuned lr) on
    `ablation_seeds` seeds, and "full"'s runs are the main study's confirm seeds; under v2 each is tuned by
    the rule and confirmed like a model (`ablation_specs`), and "full" is the base model's main study."""
    plan = []
    for label in study.ablation_variants:
        if study.protocol == "v2":
            plan += [PlannedRuns("ablations", label, spec.label, config, *rule_detail(study, label))
                     for spec, config in ablation_specs(study, label, device)]
            continue
        # "full" is the base model at its tuned lr with the confirm seeds: the main study's confirm runs
        # (same config, same seeds, same run ids), read from there rather than trained twice.
        plan += [PlannedRuns("ablations", label, "=".join(names), config, study.ablation_seeds,
                             f"{study.ablation_seeds} seeds")
                 for names, config in ablation_groups(study, label, device, None if lrs is None else lrs[label])
                 if "full" not in names]
    return plan


def sizes(config: RunConfig) -> tuple[int, int]:
    """(non-embedding parameters, decoding state in real scalars at the training length) of a config."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        model = build_model(dataclasses.replace(config, train=dataclasses.replace(config.train, device="cpu")))
    return model.num_parameters(), model.state_size(config.task.seq_len)


def step_ms(config: RunConfig, steps: int = 3, warmup: int = 1) -> float | None:
    """Median wall time in ms of one training step of `config` on its device (`studies.train.train_step`
    on one fixed batch); None where that device is not on this machine (a CPU step says nothing about a
    GPU's). GateLoop's chunked engine is timed in its slower exact form (`gateloop.chunked.always_split`):
    a fresh model's gates take the cheaper one, gates that have learned to forget the slower one, and a
    bound must hold for the trained model (z3's gateloop_kv trials took 1.6-2.2× the fresh model's step)."""
    try:
        device = resolve_device(config.train.device)
    except ValueError:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(config.train.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(config).to(device)
        tc = config.train
        optimizer, schedule = make_optimizer(model, tc)
        batch = config.task.sample(tc.batch_size, torch.Generator().manual_seed(0))
        times = []
        with always_split():
            for i in range(warmup + steps):
                start = time.perf_counter()
                train_step(model, optimizer, schedule, batch, tc, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def run_seconds(config: RunConfig, ms: float) -> float:
    """Upper bound of one run's wall time: every step of the budget, plus its evaluations (a forward pass
    is about a third of a step) every eval_every steps and once per evaluated length at the end."""
    tc = config.train
    eval_batches = tc.test_size / tc.batch_size
    evals = tc.steps // tc.eval_every + 1 + sum(length / config.task.seq_len for length in config.eval_lengths)
    # With a validation set (protocol v2) the evaluations during training read it instead of the test set,
    # and the final model is read on it once more.
    validation = (tc.steps // tc.eval_every * (tc.validation_size - tc.test_size) + tc.validation_size
                  if tc.validation_size else 0)
    return ms / 1000 * (tc.steps + (evals * eval_batches + validation / tc.batch_size) / 3)


def family_table(study: Study, device: str | None = None) -> str:
    """Markdown: every model label with its mixer, family, width, parameters and state (at the first
    variant's length; only attention's state grows with the length) and what it stands for."""
    variant = study.variants[0]
    rows = []
    for m in study.models:
        params, state = sizes(run_config(study, variant, m.mixer, m.override_strings(), device))
        rows.append((m.label, m.mixer, m.family, dict(m.overrides).get("d_model"), human_count(params),
                     f"{state:,}", m.note))
    return markdown_table(("model", "mixer", "family", "d_model", "params", f"state at L={variant.knobs_dict()['seq_len']}",
                           "what it is"), rows)


def _measure(config: dict[str, Any], steps: int) -> float | None:
    # The config travels as data and is rebuilt here: a mixer loaded from a file path (--add-model) is found
    # again by its path, where an unpickled config class would be looked up by a module name the worker lacks.
    return step_ms(run_config_from_dict(config), steps)


def measured_ms(configs: list[RunConfig], workers: int, steps: int) -> list[float | None]:
    """ms/step of every config, measured as the study runs them: on `workers` processes at once (one job per
    process, each config timed while the other processes time theirs), so that the cores' contention is in
    the number (the study's two workers share the machine's memory bandwidth and caches)."""
    if workers <= 1 or len(configs) <= 1:
        return [step_ms(c, steps) for c in configs]
    found: dict[int, float | None] = {}
    run_parallel(_measure, [(c.to_dict(), steps) for c in configs], workers, report=found.__setitem__)
    return [found[i] for i in range(len(configs))]


def dry_run(study: Study, workers: int, device: str | None = None, measure_steps: int = 10,
            only: str | None = None, labels: tuple[str, ...] | None = None) -> str:
    """The whole plan (or the part `only`, or only the models `labels` name) as text: every (task, model) with
    its state, parameters, runs and step budget, and the estimated wall time from a measured ms/step of each
    config on `workers` workers (`measured_ms`: timed on that many processes at once)."""
    if study.protocol == "v2":
        lines = [f"capability study `{study.preset}`, protocol v2: {study.description}", "",
                 family_table(study, device), *protocol_v2_lines(study, device)]
    else:
        lines = [f"capability study `{study.preset}`: {study.description}", "", family_table(study, device),
                 f"tuning: optuna GridSampler over lr {list(study.lr_grid)} (seed {study.sampler_seed}), "
                 f"TolerantHalvingPruner (successive halving, rungs at steps/4, steps/2, reduction factor 2, margin "
                 f"0.02), {study.tuning_seeds} seeds "
                 f"per trial (objective: their mean accuracy), best re-trained with {study.confirm_seeds} fresh seeds",
                 ""]
    header = ("part", "variant", "model", "family", "d_model", "params", "state", "steps", "runs", "ms/step",
              "est. h (1 core)")
    rows, totals, by_variant, devices, unmeasured = [], {}, {}, set(), 0
    families = {m.label: m.family for m in study.models}
    parts = {"main": main_plan, "sweep": sweep_plan, "ablations": ablation_plan}
    plan = [item for part, make in parts.items() if only in (None, part) for item in make(study, device)
            if labels is None or item.label in labels]
    timed = measured_ms([item.config for item in plan], workers, measure_steps)
    for item, ms in zip(plan, timed):
        params, state = sizes(item.config)
        try:
            devices.add(resolve_device(item.config.train.device).type)
        except ValueError:  # e.g. cuda on a machine without it
            devices.add(item.config.train.device)
        if ms is None:
            unmeasured += 1
            ms_text = hours_text = "–"
        else:
            hours = item.runs * run_seconds(item.config, ms) / 3600
            totals[item.part] = totals.get(item.part, 0.0) + hours
            by_variant[(item.part, item.variant)] = by_variant.get((item.part, item.variant), 0.0) + hours
            ms_text, hours_text = f"{ms:.1f}", f"{hours:.2f}"
        family = "ablation" if item.part == "ablations" else families.get(item.label.split("@")[0], "ablation")
        rows.append((item.part, item.variant, item.label, family, item.config.mixer.d_model, human_count(params),
                     human_count(state), item.config.train.steps, f"{item.runs} ({item.detail})", ms_text,
                     hours_text))
    lines.append(markdown_table(header, rows))
    if unmeasured:
        lines.append(f"not estimated: {unmeasured} configs run on {sorted(devices)}, which this machine does not "
                     f"have; run the dry run there (`--device` and the preset decide the device)")
        return "\n".join(lines)
    total = sum(totals.values())
    wall = total / workers
    lines.append("device-hours by part and variant: "
                 + ", ".join(f"{part}/{variant} {h:.1f}" for (part, variant), h in by_variant.items()))
    lines.append("estimated device-hours: " + ", ".join(f"{part} {h:.1f}" for part, h in totals.items())
                 + f"; total {total:.1f}; wall on {workers} worker(s): {wall:.1f} h")
    if study.protocol == "v2":
        lines.append(f"(ms/step: the median of {measure_steps} steps after 1 warm-up per config on {sorted(devices)}, "
                     f"timed on {workers} processes at once as the study runs them, GateLoop's chunked engine in its "
                     f"slower exact form (trained gates take it); an upper bound: every run is assumed to use its full "
                     f"step budget and every tuned model or ablation the rule's most trials, "
                     f"{study.lr_search.max_trials()}, so early stopping, pruning and a rule that ends sooner only "
                     f"shorten it)")
    else:
        lines.append(f"(ms/step: the median of {measure_steps} steps after 1 warm-up per config on {sorted(devices)}, "
                     f"timed on {workers} processes at once as the study runs them; every run is assumed to use its full step budget, so "
                     f"early stopping at {study_target(study):.2f} and pruning only shorten it)")
    if wall > study.budget_hours:
        lines.append(f"WARNING: the estimate, {wall:.1f} h, exceeds the {study.budget_hours:g} h budget; shorten step "
                     f"budgets, variants or seeds in studies/experiments/capability/study.py")
    return "\n".join(lines)


def study_target(study: Study) -> float:
    return float(get_preset(study.preset).train.get("target_accuracy", 1.0))


def protocol_v2_lines(study: Study, device: str | None = None) -> list[str]:
    """What protocol v2 runs, for the dry run: the decision rows, the learning-rate rule with its most
    trials per model, the pruner, the seeds, and per variant its escape window, confirm seeds and stopping."""
    search = study.lr_search
    start = ", ".join(f"{10 ** d:.3g}" for d in search.start)
    return [
        f"decisions (early stopping, pruning, the learning rate) read a validation set of {study.validation_size} rows "
        f"per seed, disjoint from the test set, which only reports.",
        f"learning rate: the rule of studies.tune.lr_search, one for every model and every ablation: start {start} "
        f"(decades {list(search.start)}), one step ({search.step:g} decades) past an edge winner up to the bounds "
        f"[{10 ** search.low:.3g}, {10 ** search.high:.3g}], refined until the best point's neighbours are at most "
        f"{search.finest:g} decades away: at most {search.max_trials()} trials per model (an upper bound, "
        f"LrSearch.max_trials); every other knob at the preset's value.",
        f"pruner: PlateauSafeHalvingPruner (rungs from steps/4 doubling, none before the variant's escape window, no "
        f"trial pruned while any of its seeds is at or above the rung's bar); {study.tuning_seeds} seeds per trial "
        f"(objective: their mean on the validation rows); the rule's best re-trained on the variant's confirm seeds.",
        f"ablations of {study.ablation_base}: tuned by the same rule and confirmed like models "
        f"(studies {study.prefix}-ablate/VARIANT/{study.ablation_base}@ABLATION).",
        "",
        variant_table(study, device),
    ]


def variant_table(study: Study, device: str | None = None) -> str:
    """Markdown: what each variant declares under protocol v2 — its steps, escape window, confirm seeds,
    whether its runs stop early, and the ablations run on it."""
    rows = []
    for v in study.variants:
        model = study.models[0]
        target = run_config(study, v, model.mixer, model.override_strings(), device).train.target_accuracy
        rows.append((v.label, v.task, v.steps, v.no_prune_before, study.confirm_seeds_for(v.label),
                     f"tuning stops at {target:g}, confirm every step" if target < 1 else "every step (equal training)",
                     ", ".join(study.ablations_for(v.label)) if v.label in study.ablation_variants else "–"))
    return markdown_table(("variant", "task", "steps", "no rung before (escape window)", "confirm seeds", "training",
                           "ablations"), rows)
