"""GateLoop's gating components ablated (`testbed ablate`, usage in cli.py): each named ablation of the full
model on each task over several seeds, stored like the suite's runs, reported from the stored runs alone.

One job per module; imports point one way (each module imports only those listed before it; outside the
package, studies.suite's configs, records and runner, and studies.tune's read queries and storage):

    ablations   the ablations as data (name -> overrides of GateLoopConfig) and the tasks they are run on
    configs     each ablation's run configs, and the refusal of overrides an ablation would clash with
    lrs         the full model's tuned learning rate per task, read from a tuning storage
    table       the Markdown table: per task mean ± 95 % CI, the difference to `full`, the floor
    figures     the heatmap, and the gates of the kept `full` models
    report      rebuild ablations.md and the figures from DIR/runs and DIR/ablation_study.json alone
    cli         `testbed ablate`
"""
