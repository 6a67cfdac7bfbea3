"""Learning-curve pilot sizing study v2's step budgets (issue 25): one seed per (variant, model, lr), built
exactly as the study builds its runs (`plan.run_config` of CPU_STUDY_V2: the `capability` preset, batch 32,
warmup 100, cosine over STEPS, a validation set beside the test set), evaluated every 250 steps, stopped
early at 0.99 on the validation rows (the pilot asks when a model gets there, not what it does after).
Appends one JSON line per finished run to OUT (resumable: runs already in OUT are skipped). Usage, from
the repository root:

    python results/pilot-v2-budgets/pilot.py OUT VARIANT[,VARIANT] MODEL[,MODEL] LR[,LR] STEPS [--shard i/n]
"""
import json
import sys
from pathlib import Path

from studies.experiments.capability.plan import run_config
from studies.experiments.capability.study import CPU_STUDY_V2 as STUDY
from studies.train import train


def main(argv: list[str]) -> None:
    out, variants, models, lrs, steps, *rest = argv
    index, count = map(int, next((r for r in rest if r.startswith("--shard=")), "--shard=0/1")[8:].split("/"))
    done = set()
    if Path(out).exists():
        done = {(r["variant"], r["model"], r["lr"]) for r in map(json.loads, Path(out).read_text().splitlines())}
    jobs = [(v, m, float(lr)) for v in variants.split(",") for m in models.split(",") for lr in lrs.split(",")]
    for i, (v, m, lr) in enumerate(jobs):
        if i % count != index or (v, m, lr) in done:
            continue
        model = STUDY.model(m)
        config = run_config(STUDY, STUDY.variant(v), model.mixer,
                            [*model.override_strings(), f"train.lr={lr}", f"train.steps={steps}",
                             "train.target_accuracy=0.99"], None)
        result = train(config, progress=False)
        row = {"variant": v, "model": m, "lr": lr, "status": result.status, "steps": result.steps,
               "score": result.score, "wall": round(result.wall_time, 1), "final": result.final,
               "curve": [(e.step, round(e.score(result.metric), 4)) for e in result.history]}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(v, m, lr, result.status, result.steps, round(result.score, 3), f"{result.wall_time:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
