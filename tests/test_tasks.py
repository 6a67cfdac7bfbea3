"""Tests of the task generators, driven from the registry: a task is tested the moment it is registered.

The oracles below are plain-Python solvers written from each task's definition (its docstring),
reading only the inputs row and the task's documented token ids; they share no code with the
generators. Agreement on every scored position, and no target anywhere else, shows that every label
is derivable from the inputs and sits where the definition puts it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re

import pytest
import torch

from studies import tasks_cli
from tasks import (
    IGNORE,
    TASKS,
    Batch,
    Task,
    TaskData,
    accuracy_by,
    make_task,
    sequence_accuracy,
    sequence_accuracy_by,
    token_accuracy,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- oracles, from the definitions


def oracle_mqar(task, x: list[int]) -> dict[int, int]:
    K = task.num_kv_pairs
    binding = {x[2 * i]: x[2 * i + 1] for i in range(K)}  # the first 2K tokens alternate key, value
    return {t: binding[x[t]] for t in range(2 * K, len(x)) if x[t] in task.keys}


def oracle_selective_copy(task, x: list[int]) -> dict[int, int]:
    data = [tok for tok in x if tok in task.data_tokens]
    markers = [t for t, tok in enumerate(x) if tok == task.MARKER]
    return dict(zip(markers, data, strict=True))


def oracle_induction_heads(task, x: list[int]) -> dict[int, int]:
    first, second = [t for t, tok in enumerate(x) if tok == task.TRIGGER]
    assert first + 1 < second == len(x) - 1  # an ordinary token follows the first trigger; the second ends
    return {second: x[first + 1]}


def oracle_noisy_recall(task, x: list[int]) -> dict[int, int]:
    sep = x.index(task.SEP)
    binding, key = {}, None
    for tok in x[:sep]:  # a key binds to the next token that is neither noise nor padding
        if tok in task.keys:
            key = tok
        elif tok in task.values:
            binding[key] = tok
    return {t: binding[x[t]] for t in range(sep + 1, len(x))}


def oracle_fuzzy_recall(task, x: list[int]) -> dict[int, int]:
    kl, block = task.key_len, task.key_len + task.value_len
    sep = x.index(task.SEP)
    context = [tok for tok in x[:sep] if tok != task.PAD]
    binding = {tuple(context[b : b + kl]): context[b + kl : b + block] for b in range(0, len(context), block)}
    out = {}
    for b in range(sep + 1, len(x), block):
        value = binding[tuple(x[b : b + kl])]
        for i, tok in enumerate(value):  # the last key token predicts value[0], value[i] predicts value[i+1]
            out[b + kl - 1 + i] = tok
    return out


def oracle_memory_horizon(task, x: list[int]) -> dict[int, int]:
    memory, out, t = {}, {}, 0
    while t < len(x):
        if x[t] == task.RESET_TOKEN:
            memory.clear()
            t += 1
        elif x[t] == task.QUERY_TOKEN:
            out[t + 1] = memory.get(x[t + 1], task.NONE)
            t += 2
        else:
            assert x[t] in task.keys and x[t + 1] in task.values
            memory[x[t]] = x[t + 1]
            t += 2
    return out


def oracle_state_tracking(task, x: list[int]) -> dict[int, int]:
    assert task.group == "cyclic"  # the settings here; tests/test_memory_state_tasks.py covers S3 and A5
    word = [tok for tok in x if tok != task.PAD]
    assert x == word + [task.PAD] * (len(x) - len(word))  # padding only after the word
    return {len(word) - 1: sum(word) % task.modulus}  # only the word's last position is scored


ORACLES = {
    "mqar": oracle_mqar,
    "selective_copy": oracle_selective_copy,
    "induction_heads": oracle_induction_heads,
    "noisy_recall": oracle_noisy_recall,
    "fuzzy_recall": oracle_fuzzy_recall,
    "memory_horizon": oracle_memory_horizon,
    "state_tracking": oracle_state_tracking,
}

# Non-default settings that exercise each task's knobs.
VARIANTS = {
    "mqar": dict(seq_len=40, vocab=16, num_kv_pairs=5, power_a=1.0, filler="values"),
    "selective_copy": dict(seq_len=20, vocab=3, num_tokens=10),
    "induction_heads": dict(seq_len=3, vocab=2),
    "noisy_recall": dict(seq_len=30, num_kv_pairs=4, noise_frac=0.0, num_noise_tokens=1),
    "fuzzy_recall": dict(seq_len=60, vocab=6, num_kv_pairs=9, key_len=2, value_len=1),
    "memory_horizon": dict(seq_len=40, vocab=12, num_long=3, num_erased=2),
    "state_tracking": dict(seq_len=17, modulus=5, min_len_frac=0.2),
}

# Settings whose sequence space is small enough that a training stream would hit the test set.
TINY = {
    "mqar": dict(seq_len=4, vocab=6, num_kv_pairs=1),
    "selective_copy": dict(seq_len=5, vocab=3, num_tokens=2),
    "induction_heads": dict(seq_len=4, vocab=3),
    "noisy_recall": dict(seq_len=6, vocab=4, num_kv_pairs=1, noise_frac=0.5, num_noise_tokens=1),
    "fuzzy_recall": dict(seq_len=9, vocab=4, num_kv_pairs=1, key_len=2, value_len=2),
    "memory_horizon": dict(seq_len=16, vocab=6, num_long=1, num_erased=1),
    "state_tracking": dict(seq_len=4, modulus=2),
}

# One impossible setting per task, and the words its error must contain.
INVALID = {
    "mqar": (dict(seq_len=64, num_kv_pairs=30), "mqar: 3*num_kv_pairs=90 must be <= seq_len=64"),
    "selective_copy": (dict(seq_len=10, num_tokens=6), "selective_copy: 2*num_tokens=12 must be <= seq_len=10"),
    "induction_heads": (dict(seq_len=2), "induction_heads: seq_len=2 must be >= 3"),
    "noisy_recall": (dict(seq_len=40), "noisy_recall: 3*num_kv_pairs + noise + separator = 24+24+1 = 49 must be <="),
    "fuzzy_recall": (dict(vocab=4, num_kv_pairs=5), "fuzzy_recall: num_kv_pairs=5 must be <= (vocab//2)**key_len=4"),
    "memory_horizon": (dict(seq_len=30), "memory_horizon: seq_len=30 must be a multiple of 4"),
    "state_tracking": (dict(modulus=1), "state_tracking: modulus=1 must be >= 2"),
}


def test_tables_cover_the_registry():
    assert list(TASKS) == ["mqar", "selective_copy", "induction_heads", "noisy_recall", "fuzzy_recall",
                           "memory_horizon", "state_tracking"]
    for table in (ORACLES, VARIANTS, TINY, INVALID):
        assert set(table) == set(TASKS)


def settings(name: str) -> list[Task]:
    return [make_task(name), make_task(name, **VARIANTS[name])]


# --------------------------------------------------------------------------- every task


@pytest.mark.parametrize("name", list(TASKS))
def test_shapes_dtypes_and_vocabulary(name):
    for task in settings(name):
        batch = task.sample(16, gen(0))
        assert isinstance(batch, Batch) and len(batch) == 16
        for tensor in (batch.inputs, batch.targets):
            assert tensor.shape == (16, task.seq_len) and tensor.dtype == torch.int64
        assert 0 <= batch.inputs.min() and batch.inputs.max() < task.vocab_size
        scored = batch.targets[batch.targets != IGNORE]
        assert len(scored) > 0 and 0 <= scored.min() and scored.max() < task.vocab_size
        for key, value in batch.meta.items():
            assert value.dtype == torch.int64 and value.shape in ((16,), (16, task.seq_len)), key
        names = task.token_names()
        assert len(names) == task.vocab_size == len(set(names))  # every id, special or not, has its own name


@pytest.mark.parametrize("name", list(TASKS))
def test_oracle_scores_every_target_and_nothing_else(name):
    for task in settings(name):
        batch = task.sample(48, gen(1))
        for x, y in zip(batch.inputs.tolist(), batch.targets.tolist()):
            expected = ORACLES[name](task, x)
            got = {t: target for t, target in enumerate(y) if target != IGNORE}
            assert got == expected, (task, x, y)


@pytest.mark.parametrize("name", list(TASKS))
def test_deterministic_given_the_generator(name):
    task = make_task(name)
    first, again, other = task.sample(8, gen(5)), task.sample(8, gen(5)), task.sample(8, gen(6))
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert first.meta.keys() == again.meta.keys()
    assert all(torch.equal(first.meta[k], again.meta[k]) for k in first.meta)
    assert not torch.equal(first.inputs, other.inputs)


@pytest.mark.parametrize("name", list(TASKS))
def test_sampling_uses_only_the_given_generator(name):
    torch.manual_seed(0)
    first = make_task(name).sample(4, gen(3))
    torch.manual_seed(1)  # a different global RNG state must not change anything
    assert torch.equal(first.inputs, make_task(name).sample(4, gen(3)).inputs)


@pytest.mark.parametrize("name", list(TASKS))
def test_train_stream_never_repeats_a_test_sequence(name):
    task = make_task(name, **TINY[name])
    data = TaskData(task, seed=0, test_size=12)
    test_rows = {tuple(row) for row in data.test.inputs.tolist()}
    # Without the redraw the stream would hit the test set: the check below is not vacuous.
    raw = task.sample(1024, gen(123))
    assert any(tuple(row) in test_rows for row in raw.inputs.tolist())
    for _ in range(4):
        batch = data.train_batch(64)
        assert len(batch) == 64
        assert not any(tuple(row) in test_rows for row in batch.inputs.tolist())
        for x, y in zip(batch.inputs.tolist(), batch.targets.tolist()):  # redrawn rows keep their own labels
            assert {t: v for t, v in enumerate(y) if v != IGNORE} == ORACLES[name](task, x)


@pytest.mark.parametrize("name", list(TASKS))
def test_invalid_settings_raise_naming_the_constraint(name):
    overrides, message = INVALID[name]
    with pytest.raises(ValueError, match=_literal(message)):
        make_task(name, **overrides)
    with pytest.raises(ValueError, match=_literal(f"{name}: seq_len=0 must be >= 1")):
        make_task(name).at_length(0)
    with pytest.raises(ValueError, match=_literal(f"{name}: seq_len='64' must be of type int, got str")):
        make_task(name, seq_len="64")
    with pytest.raises(ValueError, match=_literal(f"{name}: unknown knob(s) nope; its knobs are seq_len,")):
        make_task(name, nope=1)
    with pytest.raises(ValueError, match="sample size n=0"):
        make_task(name).sample(0, gen(0))


@pytest.mark.parametrize("name", [name for name, cls in TASKS.items() if cls.extrapolates])
def test_at_length_poses_the_same_task_longer(name):
    task = make_task(name)
    for factor in (2, 4):
        longer = task.at_length(factor * task.seq_len)
        assert longer.seq_len == factor * task.seq_len
        assert dataclasses.replace(longer, seq_len=task.seq_len) == task  # only the length changed
        batch = longer.sample(8, gen(2))
        assert batch.inputs.shape == (8, longer.seq_len)
        for x, y in zip(batch.inputs.tolist(), batch.targets.tolist()):
            assert {t: v for t, v in enumerate(y) if v != IGNORE} == ORACLES[name](longer, x)


def test_extrapolating_tasks():
    assert {name for name, cls in TASKS.items() if cls.extrapolates} == {
        "mqar", "selective_copy", "induction_heads", "memory_horizon", "state_tracking"}


# --------------------------------------------------------------------------- registry and configs


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError) as error:
        make_task("copying")
    assert "'copying'" in str(error.value)
    assert all(name in str(error.value) for name in TASKS)


def test_configs_are_frozen_and_floats_normalised():
    task = make_task("mqar", power_a=1)
    assert task.power_a == 1.0 and isinstance(task.power_a, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.seq_len = 10  # type: ignore[misc]
    with pytest.raises(ValueError, match="num_kv_pairs=True must be of type int"):
        make_task("mqar", num_kv_pairs=True)
    with pytest.raises(ValueError, match="filler='noise' must be one of"):
        make_task("mqar", filler="noise")


# --------------------------------------------------------------------------- task-specific invariants


def test_mqar_keys_values_and_queries():
    for task in settings("mqar"):
        K = task.num_kv_pairs
        batch = task.sample(64, gen(7))
        for x, y in zip(batch.inputs.tolist(), batch.targets.tolist()):
            keys, values = x[0 : 2 * K : 2], x[1 : 2 * K : 2]
            assert all(k in task.keys for k in keys) and all(v in task.values for v in values)
            assert len(set(keys)) == K
            queries = [t for t in range(len(x)) if y[t] != IGNORE]
            assert len(queries) == K and sorted(x[t] for t in queries) == sorted(keys)  # each key queried once
            for t in queries:
                assert x[: t].count(x[t]) == 1  # the key occurs exactly once before its query: no decoys
            fill = [tok for t, tok in enumerate(x) if t >= 2 * K and t not in queries]
            assert all(tok not in task.keys for tok in fill)


def test_mqar_queries_follow_a_power_law():
    # power_a=0.01: P(gap) ∝ gap^-0.99, so most queries sit close to the pairs; power_a=1 is uniform.
    crowded = make_task("mqar", seq_len=256, num_kv_pairs=4).sample(256, gen(0))
    uniform = make_task("mqar", seq_len=256, num_kv_pairs=4, power_a=1.0).sample(256, gen(0))
    crowded_gap = crowded.meta["distance"][crowded.scored].float().median()
    uniform_gap = uniform.meta["distance"][uniform.scored].float().median()
    assert crowded_gap < 40 < 100 < uniform_gap


@pytest.mark.parametrize("name", ["mqar", "noisy_recall", "fuzzy_recall"])
def test_query_order_is_independent_of_write_order(name):
    # Two pairs: the first-written key should be queried first in about half of the sequences.
    task = make_task(name, num_kv_pairs=2)
    batch = task.sample(1000, gen(12))
    first_written_first = 0
    for x, y in zip(batch.inputs.tolist(), batch.targets.tolist()):
        key_tokens = [tok for tok in x if tok in task.keys]  # the two writes' keys come first, then the queries'
        t = next(t for t, v in enumerate(y) if v != IGNORE)  # the first query's (last) key token
        width = task.key_len if name == "fuzzy_recall" else 1
        first_written_first += key_tokens[:width] == x[t - width + 1 : t + 1]
    assert 0.45 < first_written_first / 1000 < 0.55


def test_selective_copy_blanks_can_follow_the_last_data_token():
    task = make_task("selective_copy")
    batch = task.sample(64, gen(8))
    before_marker = batch.inputs[:, task.seq_len - task.num_tokens - 1]
    share = (before_marker == task.BLANK).float().mean().item()
    assert 0 < share < 1  # no fixed adjacency between data and marker, nor a fixed gap


def test_memory_horizon_needs_resets_rebinding_and_none():
    batch = make_task("memory_horizon", seq_len=256).sample(32, gen(9))
    none = batch.meta["is_none"][batch.scored]
    assert 0.1 < none.float().mean() < 0.6  # "none" answers exist but do not dominate
    task = make_task("memory_horizon")
    inputs = batch.inputs.tolist()
    assert any(row.count(task.RESET_TOKEN) > 1 for row in inputs)
    # some key is written twice without a reset in between (rebinding)
    assert any(_has_rebinding(task, row) for row in inputs)


def _has_rebinding(task, x: list[int]) -> bool:
    written, t = set(), 0
    while t < len(x):
        if x[t] == task.RESET_TOKEN:
            written.clear()
            t += 1
            continue
        if x[t] in task.keys:
            if x[t] in written:
                return True
            written.add(x[t])
        t += 2
    return False


def test_fuzzy_recall_keys_are_distinct_tuples_sharing_tokens():
    task = make_task("fuzzy_recall", vocab=4, num_kv_pairs=4, key_len=2, value_len=1, seq_len=25)
    batch = task.sample(32, gen(10))
    block = task.key_len + task.value_len
    for x in batch.inputs.tolist():
        sep = x.index(task.SEP)
        context = [tok for tok in x[:sep] if tok != task.PAD]
        keys = [tuple(context[b : b + task.key_len]) for b in range(0, len(context), block)]
        assert len(set(keys)) == len(keys) == 4  # all 4 possible tuples of 2 key tokens: forced to share tokens


# --------------------------------------------------------------------------- TaskData


def test_taskdata_streams_are_reproducible_and_separate():
    task = make_task("mqar")
    a, b, c = TaskData(task, 0, 32), TaskData(task, 0, 32), TaskData(task, 1, 32)
    assert torch.equal(a.test.inputs, b.test.inputs) and not torch.equal(a.test.inputs, c.test.inputs)
    assert torch.equal(a.train_batch(16).inputs, b.train_batch(16).inputs)
    assert not torch.equal(a.train_batch(32).inputs, a.test.inputs)
    longer = a.test_at_length(128, 16)
    assert longer.inputs.shape == (16, 128) and torch.equal(longer.inputs, b.test_at_length(128, 16).inputs)
    assert not torch.equal(longer.inputs, c.test_at_length(128, 16).inputs)
    assert torch.equal(a.test_at_length(64, 8).inputs, a.test.inputs[:8])  # the training length: the test set
    with pytest.raises(ValueError, match="3\\*num_kv_pairs=24 must be <= seq_len=16"):
        a.test_at_length(16, 4)
    with pytest.raises(ValueError, match="n=33 must be <= test_size=32"):
        a.test_at_length(64, 33)


def test_taskdata_refuses_when_the_test_set_covers_every_sequence():
    task = make_task("mqar", seq_len=3, vocab=2, num_kv_pairs=1)  # exactly one possible sequence
    data = TaskData(task, seed=0, test_size=2)
    with pytest.raises(RuntimeError, match="covers nearly every sequence"):
        data.train_batch(4)


def test_taskdata_validates_arguments():
    with pytest.raises(ValueError, match="seed=-1"):
        TaskData(make_task("mqar"), seed=-1, test_size=4)
    with pytest.raises(ValueError, match="test_size=0"):
        TaskData(make_task("mqar"), seed=0, test_size=0)


# --------------------------------------------------------------------------- metrics


def hand_batch() -> tuple[torch.Tensor, Batch]:
    I = IGNORE
    targets = torch.tensor([[I, 1, I, 2], [I, I, I, I], [3, 3, I, 3]])
    preds = torch.tensor([[0, 1, 0, 0], [5, 5, 5, 5], [3, 3, 0, 3]])  # row 0 half right, row 2 all right
    meta = {"row": torch.tensor([7, 8, 7]), "pos": torch.arange(4).expand(3, 4)}
    return preds, Batch(torch.zeros(3, 4, dtype=torch.int64), targets, meta)


def test_token_and_sequence_accuracy():
    preds, batch = hand_batch()
    assert token_accuracy(preds, batch.targets) == pytest.approx(4 / 5)
    assert sequence_accuracy(preds, batch.targets) == pytest.approx(1 / 2)  # row 1 has nothing scored
    with pytest.raises(ValueError, match="no scored position"):
        token_accuracy(preds, torch.full_like(batch.targets, IGNORE))


def test_accuracy_grouped_by_meta():
    preds, batch = hand_batch()
    assert accuracy_by(preds, batch, "row") == pytest.approx({7: 4 / 5})
    assert accuracy_by(preds, batch, "pos") == pytest.approx({0: 1.0, 1: 1.0, 3: 0.5})
    assert sequence_accuracy_by(preds, batch, "row") == pytest.approx({7: 0.5})
    with pytest.raises(ValueError, match="needs a \\(B,\\) meta field"):
        sequence_accuracy_by(preds, batch, "pos")
    with pytest.raises(ValueError, match="no meta field 'gap'"):
        accuracy_by(preds, batch, "gap")


def test_metrics_on_a_generated_batch():
    task = make_task("selective_copy")
    batch = task.sample(8, gen(11))
    assert token_accuracy(batch.targets, batch.targets) == 1.0
    assert set(accuracy_by(batch.targets, batch, "copy_index")) == set(range(task.num_tokens))
    blank = torch.full_like(batch.targets, task.BLANK)
    assert token_accuracy(blank, batch.targets) == 0.0 and sequence_accuracy(blank, batch.targets) == 0.0


def _literal(text: str) -> str:
    return re.escape(text)


# --------------------------------------------------------------------------- CLI and benchmark


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="testbed tasks")
    tasks_cli.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tasks_cli.run(parser.parse_args(list(argv)))
    return code, out.getvalue(), err.getvalue()


def test_cli_lists_every_task_with_knobs_and_defaults():
    code, out, _ = cli()
    assert code == 0
    for name, cls in TASKS.items():
        assert f"{name} — " in out
        assert all(f"{key}={value}" in out for key, value in cls.knobs().items())


def test_cli_shows_a_decoded_example():
    code, out, _ = cli("show", "mqar", "seq_len=12", "vocab=8", "num_kv_pairs=2", "power_a=0.5", "--seed", "4")
    assert code == 0
    assert "MQAR(seq_len=12, vocab=8, num_kv_pairs=2, power_a=0.5, filler='blank')" in out
    batch = make_task("mqar", seq_len=12, vocab=8, num_kv_pairs=2, power_a=0.5).sample(1, gen(4))
    scored = [str(t) for t in batch.scored[0].nonzero().squeeze(1).tolist()]
    assert f"scored positions (*): {', '.join(scored)}" in out
    assert out.count(" *") == 2 and len(out.splitlines()) == 1 + 1 + 12 + 1  # title, header, rows, scored


@pytest.mark.parametrize(
    "argv, message",
    [
        (("show", "mqar", "num_kv_pairs=four"), "mqar: num_kv_pairs expects int, got 'four'"),
        (("show", "mqar", "power_a=x"), "mqar: power_a expects float, got 'x'"),
        (("show", "mqar", "heads=2"), "mqar: unknown knob 'heads'; its knobs are seq_len, vocab"),
        (("show", "mqar", "seq_len"), "override 'seq_len' must look like key=value"),
        (("show", "mqar", "seq_len=8"), "mqar: 3*num_kv_pairs=24 must be <= seq_len=8"),
        (("show", "parity"), "unknown task 'parity'; valid names: mqar, selective_copy"),
    ],
)
def test_cli_rejects_bad_overrides_clearly(argv, message):
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and message in err


def test_benchmark_prints_a_row_per_task(monkeypatch, capsys):
    from studies.bench import tasks as bench

    monkeypatch.setattr(bench, "LENGTH", 64)  # a smoke run of the same code path
    monkeypatch.setattr(bench, "BATCH", 8)
    bench.main(quick=True)
    out = capsys.readouterr().out
    assert all(f"| {name} " in out for name in TASKS)
    assert "target: mqar >= 5 M tokens/s ->" in out
