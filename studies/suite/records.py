"""The stored runs of an output directory: its manifest (the config version its results were made under),
one JSON record per finished run (DIR/runs/<id>.json), and loading them back with a check of each."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from studies.atomic_io import write_atomic
from studies.config import CONFIG_VERSION, RunConfig, config_hash
from studies.train import TrainResult

MANIFEST = "manifest.json"


def check_manifest(out: Path) -> None:
    """Refuse an output directory written under another config version instead of mixing results."""
    manifest = out / MANIFEST
    if not manifest.exists():
        return
    try:
        version = json.loads(manifest.read_text()).get("version")
    except (ValueError, AttributeError):
        raise ValueError(f"{manifest} is not a manifest this testbed wrote (not a JSON object); "
                         f"use another --out directory (or move {out} away)") from None
    if version != CONFIG_VERSION:
        raise ValueError(
            f"{out} holds results of config version {version}, this testbed writes version {CONFIG_VERSION}; "
            f"results of different versions are not comparable. Use another --out directory (or move {out} away)."
        )


def write_manifest(out: Path) -> None:
    """Mark `out` as holding results of this config version (once; `check_manifest` first)."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MANIFEST).exists():
        write_atomic(out / MANIFEST, json.dumps({"version": CONFIG_VERSION}) + "\n")


def result_record(config: RunConfig, result: TrainResult) -> dict[str, Any]:
    record = result.to_dict()
    record["run_id"] = config.run_id()
    return record


# What a stored run must hold to count as finished (besides `config`, whose hash must be its id).
RECORD_KEYS = ("run_id", "status", "final", "steps", "steps_to_target", "num_parameters", "state_size",
               "wall_time")


def check_record(path: Path) -> dict[str, Any]:
    """The run stored in `path`, or ValueError saying why the file is not a finished run."""
    try:
        record = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("config", *RECORD_KEYS) if k not in record]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    try:
        run_id = config_hash(record["config"])
    except (KeyError, TypeError, AttributeError):
        raise ValueError("its config is not a run config") from None
    if record["run_id"] != path.stem or run_id != path.stem:
        raise ValueError(f"does not match its config (file {path.stem}, stored id {record['run_id']}, "
                         f"config hashes to {run_id})")
    return record


def _move_aside(path: Path) -> Path:
    n = 1
    while (target := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    path.rename(target)
    return target


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every finished run stored in out/runs. A file that is not one (truncated by a crash, edited by
    hand) is named in one warning line and moved aside, kept as runs/<id>.json.corrupt-<n>, so that
    the run counts as not finished and is rerun."""
    records = []
    for path in sorted((out / "runs").glob("*.json")):
        try:
            records.append(check_record(path))
        except ValueError as e:
            target = _move_aside(path)
            print(f"warning: {path} is not a finished run ({e}); moved to {target.name}, the run will be redone",
                  file=sys.stderr, flush=True)
    return records
