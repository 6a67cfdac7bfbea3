"""Tidy rows of stored runs (one per run × metric × evaluated length), the floor each is read against, and
the config groups that keep runs of different configs apart: rows of one group are seeds of one another."""
from __future__ import annotations

import json
from typing import Any

from studies.config import group_hash
from studies.floors import stored_floor
from tasks import TASKS


def tidy_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run × metric × slice (slice = evaluated sequence length); `group` is the hash of the
    config without the seed: rows of one group are seeds of one another, rows of two groups never are."""
    cfg = record["config"]
    base = {
        "run_id": record["run_id"], "group": group_hash(cfg), "model": cfg["model"]["name"],
        "task": cfg["task"]["name"], "task_metric": TASKS[cfg["task"]["name"]].metric, "seed": cfg["train"]["seed"], "train_length": cfg["task"]["seq_len"],
        "status": record["status"], "num_parameters": record["num_parameters"], "state_size": record["state_size"],
        "steps": record["steps"], "steps_to_target": record["steps_to_target"], "wall_time": record["wall_time"],
    }
    rows = []
    lengths = [cfg["task"]["seq_len"], *cfg["eval_lengths"]]
    for length in lengths:
        metrics = record["final"].get(str(length)) or record["final"].get(length) or {}
        for metric in ("accuracy", "sequence_accuracy"):
            # A diverged run has no final metrics: it scores 0, it is not dropped.
            rows.append({**base, "metric": metric, "length": length, "value": metrics.get(metric, 0.0)})
    return rows


def with_floors(rows: list[dict[str, Any]], configs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the task's own metric get `floor` and `floor_name`: the best no-solve baseline
    (tasks.shortcuts) scored on exactly the held-out sets the group's runs were scored on (their seeds,
    test size and length) — the level a model must beat to have learned anything."""
    seeds: dict[str, set[int]] = {}
    for r in rows:
        seeds.setdefault(r["group"], set()).add(r["seed"])
    out = []
    for r in rows:
        if r["metric"] == r["task_metric"]:
            found = stored_floor(configs[r["group"]], tuple(seeds[r["group"]]), r["length"])
            if found is not None:  # None: another config version's generators, whose floor cannot be rebuilt
                name, score, _ = found
                r = {**r, "floor": score, "floor_name": name}
        out.append(r)
    return out


def _flat(config: dict[str, Any]) -> dict[str, str]:
    """{"train": {"lr": 0.03}, ...} -> {"train.lr": "0.03", ...}, the way overrides are written."""
    flat = {}
    for section, value in config.items():
        if isinstance(value, dict):
            for key, v in value.items():
                flat[f"{section}.{key}"] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        else:
            flat[section] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def config_differences(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """group -> the keys (other than the seed) in which the given configs differ, with its values."""
    flats = {g: {k: v for k, v in _flat(c).items() if k != "train.seed"} for g, c in configs.items()}
    keys = sorted({k for f in flats.values() for k in f})
    differing = [k for k in keys if len({f.get(k, "–") for f in flats.values()}) > 1]
    return {g: {k: f.get(k, "–") for k in differing} for g, f in flats.items()}


def labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a `label` for tables and plots: the model name, plus the config hash where one (task,
    model) holds several configs."""
    groups: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["model"]), set()).add(r["group"])
    return [{**r, "label": r["model"] if len(groups[r["task"], r["model"]]) == 1 else f"{r['model']} [{r['group'][:6]}]"}
            for r in rows]
