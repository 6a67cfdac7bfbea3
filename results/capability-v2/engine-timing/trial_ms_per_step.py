"""ms per training step of a study's trials, from the stored trial times (end - start over the steps trained,
2 seeds per tuning trial): python results/capability-v2/engine-timing/trial_ms_per_step.py STUDY [STORAGE]"""
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
name = sys.argv[1]
url = sys.argv[2] if len(sys.argv) > 2 else "sqlite:///results/capability-v2/studies.db"
study = optuna.load_study(study_name=name, storage=url)
for t in study.trials:
    if t.state.name in ("COMPLETE", "PRUNED"):
        steps = t.last_step if t.state.name == "PRUNED" else t.user_attrs["config"]["train"]["steps"]
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        print(f"trial {t.number} {t.state.name} started {t.datetime_start:%H:%M:%S}: {1000 * seconds / (2 * steps):.1f} ms/step")
