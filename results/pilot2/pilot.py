"""Learning-curve pilot for sizing the capability study (issue 14): one seed per (variant, model, lr),
the capability study's own configs (studies/experiments/capability.py), evaluated every 250 steps,
early stop at 0.99. Appends one JSON line per finished run to OUT (resumable: runs already in OUT
are skipped). Usage:

    python results/pilot2/pilot.py OUT VARIANT[,VARIANT] MODEL[,MODEL] LR[,LR] STEPS [--shard i/n] [key=value ...]
"""
import json
import sys
from pathlib import Path

from studies.experiments.capability.design import TaskVariant, task_variant as _variant
from studies.experiments.capability.plan import run_config as _config
from studies.experiments.capability.study import CPU_STUDY
from studies.train import train

# Variants piloted while they were in the CPU study and cut from it since (their knobs then; the step
# budget is the command's STEPS either way).
CUT = {
    "memory_horizon": _variant("memory_horizon", "memory_horizon", 1000, "", seq_len=64, vocab=16, num_long=2,
                               num_erased=2),
    "mqar_k8": _variant("mqar_k8", "mqar", 1000, "", seq_len=32, vocab=32, num_kv_pairs=8),
    "s3": _variant("s3", "state_tracking", 1000, "", seq_len=32, min_len_frac=0.5, train_targets="prefix", group="S3"),
}


def variant(label: str) -> TaskVariant:
    return CUT[label] if label in CUT else CPU_STUDY.variant(label)


def main(argv: list[str]) -> None:
    out, variants, models, lrs, steps, *rest = argv
    shard = next((r for r in rest if r.startswith("--shard")), "--shard=0/1").split("=")[1]
    extra = [r for r in rest if not r.startswith("--shard")]
    index, count = map(int, shard.split("/"))
    done = set()
    if Path(out).exists():
        done = {(r["variant"], r["model"], r["lr"]) for r in map(json.loads, Path(out).read_text().splitlines())}
    jobs = [(v, m, float(lr)) for v in variants.split(",") for m in models.split(",") for lr in lrs.split(",")]
    for i, (v, m, lr) in enumerate(jobs):
        if i % count != index or (v, m, lr) in done:
            continue
        task_variant, model = variant(v), CPU_STUDY.model(m)
        config = _config(CPU_STUDY, task_variant, model.mixer,
                         [*model.override_strings(), f"train.lr={lr}", f"train.steps={steps}", *extra], None)
        result = train(config, progress=False)
        row = {"variant": v, "model": m, "lr": lr, "status": result.status, "steps": result.steps,
               "score": result.score, "wall": round(result.wall_time, 1), "final": result.final,
               "curve": [(e.step, round(e.score(result.metric), 4)) for e in result.history]}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(v, m, lr, result.status, result.steps, round(result.score, 3), f"{result.wall_time:.0f}s",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
