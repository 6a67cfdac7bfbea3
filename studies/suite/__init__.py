"""The task suite (`testbed suite`, usage in cli.py): train models on every task of a preset, store each run,
and rebuild a table and figures from the stored runs alone.

One job per module; imports point one way (each module imports only those listed before it):

    configs   resolve (model, task, seed) into full run configs; the checks only resolved configs allow
    records   the stored runs: the manifest, one record per finished run, loading them back
    rows      tidy rows (run × metric × length) with their floors, config groups and labels
    table     the Markdown table: per-seed scores, bootstrap intervals, solve rates
    figures   the figures, read from the tidy rows
    report    rebuild results.jsonl, table.md and the figures from DIR/runs alone
    run       train the configs not yet stored, on the worker pool (studies.pool)
    cli       `testbed suite`, and the run flags `testbed ablate` shares
"""
