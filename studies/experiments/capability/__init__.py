"""The capability study (issue 14): matched model families, trained until they learn; protocol v1 (a shared
learning-rate grid) as committed in results/capability/, protocol v2 (issue 24) for a study that declares it.

One concern per module; imports point one way (each module imports only those listed before it):

    design.py     models (ModelLabel, matched_models), task variants, the pre-registered predictions and
                  their rules (v1: RULE, judge; v2: RULE_V2, judge_v2)
    study.py      the Study dataclass, the state-size sweep's points, CPU_STUDY and GPU_STUDY
    plan.py       the planned runs of each part, their cost estimate (a measured train_step), the dry run
    seeds.py      what the reports read back: the runs of one config seed by seed, and their floor
    parts.py      what both reports read alike: the sweep's rows, each part's cost, scores seed by seed
    figures.py    protocol v1's figures
    report_v2.py  protocol v2's report (studies.tune.report's v2 tables and figures per part, v2 verdicts)
    report.py     protocol v1's report (tables and verdicts), and the entry that picks the study's report
    run.py        running the three parts (main, sweep, ablations), the workers, the storage snapshot
    added.py      a user's model beside the committed study (`--add-model`), in a copy of its storage
    cli.py        `testbed capability`
"""
