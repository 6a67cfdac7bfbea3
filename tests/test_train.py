"""The training loop: it learns, it is deterministic, it reports divergence instead of crashing."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from gateloop import LMConfig
from studies.config import RunConfig, TrainConfig, parse_overrides, replace_from_strings
from studies.train import build_model, lr_factor, make_optimizer, train, train_step
from tasks import TaskData, make_task
from baselines import get_mixer


def tiny_run(model: str = "gateloop", **train_kw) -> RunConfig:
    # A 2-pair associative-recall problem small enough to be solved in a few seconds on one core.
    task = make_task("mqar", **TINY_MQAR)
    mixer = get_mixer(model).config_class(d_model=32)
    train_cfg = TrainConfig(**{**dict(steps=300, batch_size=32, lr=3e-3, warmup_steps=20, eval_every=50,
                                      test_size=128, device="cpu"), **train_kw})
    return RunConfig("mqar", task, model, mixer, LMConfig(vocab_size=task.vocab_size, n_layers=2), train_cfg)


TINY_MQAR = dict(vocab=4, seq_len=16, num_kv_pairs=2)


def test_train_learns_a_tiny_task(device):
    result = train(tiny_run(target_accuracy=0.99, eval_every=10, device=device), progress=False)
    assert result.status == "reached_target", result.history
    assert result.accuracy >= 0.99
    assert result.history[0].loss > result.history[-1].loss
    assert result.num_parameters > 0 and result.state_size > 0


def test_same_seed_same_metrics_and_other_seed_differs():
    a = train(tiny_run(steps=30, eval_every=10), progress=False)
    b = train(tiny_run(steps=30, eval_every=10), progress=False)
    c = train(tiny_run(steps=30, eval_every=10, seed=1), progress=False)
    assert [dataclasses.astuple(r) for r in a.history] == [dataclasses.astuple(r) for r in b.history]
    assert a.final == b.final
    assert [r.loss for r in a.history] != [r.loss for r in c.history]


def test_train_leaves_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(tiny_run(steps=2, warmup_steps=0, eval_every=1, test_size=8), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_train_is_a_loop_of_train_step():
    """train() takes exactly `train_step`'s steps (the benchmarks and the capability dry run time that
    function): a hand-written loop of it from the same seed and data ends at the same parameters, bit for bit."""
    config = tiny_run(steps=6, warmup_steps=2, eval_every=6, grad_clip=0.05)  # a clip that bites
    trained = train(config, progress=False, keep_model=True).model
    tc = config.train
    previous = torch.get_num_threads()
    torch.set_num_threads(tc.threads)  # as train() runs it: the thread count changes float reductions
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed)
            model = build_model(config)
        data = TaskData(config.task, seed=tc.seed, test_size=tc.test_size)
        optimizer, schedule = make_optimizer(model, tc)
        for _ in range(tc.steps):
            loss = train_step(model, optimizer, schedule, data.train_batch(tc.batch_size), tc, torch.device("cpu"))
            assert torch.isfinite(loss)
    finally:
        torch.set_num_threads(previous)
    assert schedule.last_epoch == tc.steps
    names = [name for name, _ in model.named_parameters()]
    assert names == [name for name, _ in trained.named_parameters()]
    for name, a, b in zip(names, model.parameters(), trained.parameters()):
        assert torch.equal(a, b), name


def test_absurd_learning_rate_is_reported_as_diverged_not_raised():
    result = train(tiny_run(lr=1e30, steps=50, warmup_steps=0, eval_every=10), progress=False)
    assert result.status == "diverged"
    assert result.final == {} and result.accuracy == 0.0


def test_eval_at_longer_lengths_is_reported():
    cfg = dataclasses.replace(tiny_run(steps=10, warmup_steps=0, eval_every=10, test_size=16), eval_lengths=(32,))
    result = train(cfg, progress=False)
    assert set(result.final) == {16, 32}


def test_lr_schedule_warms_up_then_decays_to_floor():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_overrides_are_typed_and_unknown_keys_list_valid_ones():
    cfg = replace_from_strings(TrainConfig(), {"lr": "1e-3", "amp": "false", "steps": "7", "warmup_steps": "0"}, "train")
    assert (cfg.lr, cfg.amp, cfg.steps) == (1e-3, False, 7)
    with pytest.raises(ValueError, match="valid keys for train: .*batch_size"):
        replace_from_strings(TrainConfig(), {"learning_rate": "1"}, "train")
    with pytest.raises(ValueError, match="train.steps: '1.5' is not an int"):
        replace_from_strings(TrainConfig(), {"steps": "1.5"}, "train")
    with pytest.raises(ValueError, match="must be > 0"):
        replace_from_strings(TrainConfig(), {"lr": "-1"}, "train")
    with pytest.raises(ValueError, match="unknown section"):
        parse_overrides(["optim.lr=1"])
    assert parse_overrides(["model.d_model=8"])["mixer"] == {"d_model": "8"}


def test_run_id_depends_on_config_and_seed_only():
    a, b = tiny_run(), tiny_run()
    assert a.run_id() == b.run_id()
    assert tiny_run(seed=1).run_id() != a.run_id()
    assert tiny_run(lr=2e-2).run_id() != a.run_id()


def test_cpu_run_uses_its_configured_thread_count_and_restores_the_callers():
    seen = []
    before = torch.get_num_threads()
    train(tiny_run(steps=2, warmup_steps=0, eval_every=1, test_size=8, threads=2),
          on_eval=lambda record: seen.append(torch.get_num_threads()), progress=False)
    assert seen == [2, 2]
    assert torch.get_num_threads() == before


def test_thread_count_is_part_of_the_stored_config_and_run_id():
    # Thread count changes float reduction order, hence results: runs at other counts are other runs.
    assert TrainConfig().threads == 1
    assert tiny_run().to_dict()["train"]["threads"] == 1
    assert tiny_run(threads=2).run_id() != tiny_run().run_id()
    with pytest.raises(ValueError, match="threads=0 must be >= 1"):
        TrainConfig(threads=0)


def test_group_id_ignores_the_seed_only():
    assert tiny_run(seed=1).group_id() == tiny_run().group_id()
    assert tiny_run(lr=2e-2).group_id() != tiny_run().group_id()
    assert tiny_run(threads=2).group_id() != tiny_run().group_id()


def test_decisions_read_the_validation_rows_and_reports_the_test_rows():
    """Protocol v2: with train.validation_size > 0 every evaluation during training (what early stopping,
    pruning and tuning read) is on the validation set; `final` (what reports read) is on the test set."""
    from studies.train import evaluate

    config = tiny_run(steps=40, eval_every=20, validation_size=64, test_size=64)
    result = train(config, progress=False, keep_model=True)
    data = TaskData(config.task, seed=0, test_size=64, validation_size=64)
    on_validation = evaluate(result.model, data.validation, torch.device("cpu"))
    on_test = evaluate(result.model, data.test, torch.device("cpu"))
    assert on_validation["loss"] != on_test["loss"]  # different rows, so the checks below tell them apart
    last = result.history[-1]
    assert last.step == 40 and last.loss == pytest.approx(on_validation["loss"])
    assert result.validation["accuracy"] == pytest.approx(on_validation["accuracy"])
    assert result.final[config.task.seq_len]["accuracy"] == pytest.approx(on_test["accuracy"])
    # Protocol v1 (validation_size=0): the decision rows are the test rows.
    v1 = train(tiny_run(steps=40, eval_every=20, test_size=64), progress=False)
    assert v1.validation == v1.final[config.task.seq_len] and v1.validation_score == v1.score


def test_validation_size_keeps_the_run_ids_of_runs_stored_before_it():
    base = tiny_run()
    assert "validation_size" not in base.to_dict()["train"]  # absent means 0: stored ids do not change
    assert tiny_run(validation_size=64).run_id() != base.run_id()
    with pytest.raises(ValueError, match="validation_size=-1"):
        tiny_run(validation_size=-1)


def test_a_target_of_one_never_stops_a_run_early():
    """target_accuracy=1.0 means 'never early' (protocol v2 reads other lengths at equal training): a run
    that reaches a perfect score goes on to its last step, and records when it first got there."""
    stopped = train(tiny_run(target_accuracy=0.99, eval_every=10), progress=False)
    assert stopped.status == "reached_target" and stopped.steps < 300
    full = train(tiny_run(target_accuracy=1.0, eval_every=10), progress=False)
    assert full.status == "completed" and full.steps == 300 and full.history[-1].step == 300
    if full.steps_to_target is not None:
        assert full.history[[r.step for r in full.history].index(full.steps_to_target)].accuracy == 1.0
