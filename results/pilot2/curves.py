"""Markdown table of the pilot runs in DIR/*.jsonl (written by pilot.py): per run, the task's metric at
a few steps, where it stopped, and the final token accuracy at 1x/2x/4x/8x the training length.

    python results/pilot2/curves.py results/pilot2 > results/pilot2/curves.md
"""
import functools
import json
import sys
from pathlib import Path

from studies.experiments.capability.plan import run_config as _config
from studies.experiments.capability.study import CPU_STUDY
from tasks.shortcuts import floor

sys.path.insert(0, str(Path(__file__).parent))
from pilot import variant  # noqa: E402  (the variants as pilot.py built them)


@functools.cache
def variant_floor(label: str) -> str:
    """The best no-solve baseline on the held-out set these runs were scored on (seed 0, the config's)."""
    config = _config(CPU_STUDY, variant(label), "attention", [], "cpu")
    name, score, _ = floor(config.task, config.train.test_size, (config.train.seed,))
    return f"{score:.3f} ({name})"


AT = (500, 1000, 2000, 3000, 6000)


def main(folder: str) -> None:
    rows = [json.loads(line) for path in sorted(Path(folder).glob("*.jsonl")) for line in path.read_text().splitlines()]
    print("| variant | model | lr | " + " | ".join(f"@{s}" for s in AT) + " | status | steps | final (metric) | "
          "floor | token acc. at 1× / 2× / 4× / 8× |")
    print("|---|---|---|" + "---|" * len(AT) + "---|---|---|---|---|")
    for r in rows:
        curve = dict(r["curve"])
        stopped = r["status"] == "reached_target"
        cells = [f"{curve[s]:.3f}" if s in curve else ("(stopped)" if stopped and s > r["steps"] else "–") for s in AT]
        lengths = sorted(r["final"], key=int)
        finals = " / ".join(f"{r['final'][k]['accuracy']:.3f}" for k in lengths)
        print(f"| {r['variant']} | {r['model']} | {r['lr']:g} | " + " | ".join(cells)
              + f" | {r['status']} | {r['steps']} | {r['score']:.3f} | {variant_floor(r['variant'])} | {finals} |")


if __name__ == "__main__":
    main(sys.argv[1])
