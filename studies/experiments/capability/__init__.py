"""The capability study (issue 14): matched model families, trained until they learn, tuned on a grid.

One concern per module; imports point one way (each module imports only those listed before it):

    design.py   models (ModelLabel, matched_models), task variants, the pre-registered predictions and
                their rule (RULE, judge)
    study.py    the Study dataclass, the state-size sweep's points, CPU_STUDY and GPU_STUDY
    plan.py     the planned runs of each part, their cost estimate (a measured train_step), the dry run
    seeds.py    what the report reads back: the runs of one config seed by seed, and their floor
    figures.py  the report's figures
    report.py   the report's tables and verdicts, rebuilt from the storage alone
    run.py      running the three parts (main, sweep, ablations), the workers, the storage snapshot
    cli.py      `testbed capability`
"""
