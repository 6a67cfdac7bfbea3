"""The budget pilot's curves as Markdown: per run its validation score every 500 steps, where it stopped, its
test scores at 1×, 2×, 4× and 8× the training length, and the floor (the best no-solve baseline on the same
rows). Usage, from the repository root: python results/pilot-v2-budgets/curves.py runs/pilot-v2-budgets"""
import json
import sys
from pathlib import Path

from studies.experiments.capability.plan import run_config
from studies.experiments.capability.study import CPU_STUDY_V2 as STUDY
from tasks.shortcuts import floor


def main(folder: str) -> None:
    rows = [json.loads(line) for path in sorted(Path(folder).glob("*.jsonl")) for line in path.read_text().splitlines()]
    print("| variant | model | lr | status | steps | validation score every 500 steps | test 1× / 2× / 4× / 8× "
          "| floor on the validation rows (1×) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        model = STUDY.model(r["model"])
        config = run_config(STUDY, STUDY.variant(r["variant"]), model.mixer, model.override_strings(), None)
        name, score, _ = floor(config.task, config.train.test_size, (config.train.seed,),
                               validation_size=config.train.validation_size)
        curve = " ".join(f"{s:.2f}" for step, s in r["curve"] if step % 500 == 0)
        tests = " / ".join(f"{v[config.task.metric]:.3f}" for _, v in sorted(r["final"].items(), key=lambda kv: int(kv[0])))
        print(f"| {r['variant']} | {r['model']} | {r['lr']:g} | {r['status']} | {r['steps']} | {curve} | {tests} "
              f"| {name} {score:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
