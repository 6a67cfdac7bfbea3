"""Optuna studies: tune every model under one equal budget of finished trials, re-train the best over fresh
seeds, and report from the storage alone (`testbed tune`, `testbed report`). One job per module:

    storage         storage URLs, the opened storage (heartbeats, retry of killed trials), study names
    search_spaces   each model's searched knobs and ranges
    samplers        seeded TPE, and the grid sampler that retries a failed point
    pruners         the median rule, and tolerant successive halving
    budget          the budget of finished trials, confirm seeds, dead workers' trials, the worker loop
    objectives      the tuning trial and the confirm trial
    study           open a study, or resume it after checking it was made the same way
    jobs            tune_models, confirm, retrain_job: studies + objectives + the worker loop
    queries         read queries shared by every report (earliest trial per seed, best lr)
    lr_search       protocol v2's learning-rate rule
    report_rows     the tuning report's rows: every trial and confirmed seed of a prefix (v1 and v2)
    report_tables   the report's Markdown from those rows: v1 and v2 tables, comparisons, protocol header
    report_figures  the report's figures from those rows (v1 and v2)
    report          `testbed report`: load the rows, write the tables, the jsonl files and the figures
    cli             `testbed tune`
    optuna_private  every use of Optuna's private internals
"""
