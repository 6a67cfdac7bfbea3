"""Learning-curve table of the pilot runs: held-out score (the task's metric) at a few steps, and the floor."""
import json
import sys
from pathlib import Path

from studies.config import task_from_dict
from tasks.shortcuts import floor

out = Path(sys.argv[1])
rows = []
for path in sorted((out / "runs").glob("*.json")):
    r = json.loads(path.read_text())
    cfg = r["config"]
    task = task_from_dict(cfg)
    metric = task.metric
    curve = {h["step"]: h[metric] for h in r["history"]}
    heads = cfg["model"].get("num_heads")
    label = cfg["model"]["name"] + (f" ({heads} heads)" if cfg["model"]["name"] == "gateloop" and heads else "")
    name, score, _ = floor(task, cfg["train"]["test_size"], (cfg["train"]["seed"],))
    cells = [f"{curve[s]:.3f}" if s in curve else ("(stopped)" if s > max(curve) else "–") for s in (1000, 3000, 6000, 12000)]
    final = r["final"].get(str(cfg["task"]["seq_len"]), {}).get(metric, 0.0)
    rows.append((cfg["task"]["name"], metric, label, r["state_size"], r["num_parameters"], *cells, f"{final:.3f}",
                 r["status"], r["steps"], f"{score:.3f} ({name})"))
print("| task | metric | model | state | params | @1k | @3k | @6k | @12k | final | status | steps | floor |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for row in sorted(rows):
    print("| " + " | ".join(str(c) for c in row) + " |")
