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
import sys

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
    # Every key after the pairs, answered by its binding there. Without decoys these are exactly the
    # queries; with filler="random" some are decoys, which `labels_match` allows to be unscored.
    K = task.num_kv_pairs
    binding = {x[2 * i]: x[2 * i + 1] for i in range(K)}  # the first 2K tokens alternate key, value
    return {t: binding[x[t]] for t in range(2 * K, len(x)) if x[t] in binding}


def oracle_selective_copy(task, x: list[int]) -> dict[int, int]:
    data = [tok for tok in x if tok in task.data_tokens]
    markers = [t for t, tok in enumerate(x) if tok == task.MARKER]
    return dict(zip(markers, data, strict=True))


def oracle_induction_heads(task, x: list[int]) -> dict[int, int]:
    first, second = [t for t, tok in enumerate(x) if tok == task.TRIGGER]
    assert first + 2 < second == len(x) - 1  # the target after the first trigger is not next to the second
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
    for b in range(sep + 1, len(x), block - 1):  # query blocks: the key, then value_len - 1 markers
        assert x[b + kl : b + block - 1] == [task.MARKER] * (task.value_len - 1)
        value = binding[tuple(x[b : b + kl])]
        for i, tok in enumerate(value):  # the last key token predicts value[0], the i-th marker value[i]
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

# Non-default settings that exercise each task's knobs (more in MORE_VARIANTS).
VARIANTS = {
    "mqar": dict(seq_len=40, vocab=16, num_kv_pairs=5, power_a=1.0, filler="values", distinct_values=False),
    "selective_copy": dict(seq_len=21, vocab=3, num_tokens=10, distinct_tokens=False),
    "induction_heads": dict(seq_len=4, vocab=2),
    "noisy_recall": dict(seq_len=30, num_kv_pairs=4, noise_frac=0.0, num_noise_tokens=1, distinct_values=False),
    "fuzzy_recall": dict(seq_len=60, vocab=6, num_kv_pairs=9, key_len=2, value_len=1, num_queries=5),
    "memory_horizon": dict(seq_len=48, vocab=12, num_long=3, num_erased=2),
    "state_tracking": dict(seq_len=17, modulus=5, min_len_frac=0.2),
}

MORE_VARIANTS = {
    "mqar": [dict(seq_len=48, vocab=16, num_kv_pairs=6, filler="random"), dict(filler="random", distinct_values=False)],
    "selective_copy": [dict(seq_len=12, vocab=5, num_tokens=5)],
    "induction_heads": [dict(seq_len=100, vocab=7)],
    "fuzzy_recall": [dict(seq_len=64, vocab=10, num_kv_pairs=4, key_len=3, value_len=3, num_queries=6)],
}

# Settings whose sequence space is small enough that a training stream would hit the test set.
TINY = {
    "mqar": dict(seq_len=6, vocab=4, num_kv_pairs=2),
    "selective_copy": dict(seq_len=5, vocab=3, num_tokens=2),
    "induction_heads": dict(seq_len=6, vocab=2),
    "noisy_recall": dict(seq_len=8, vocab=4, num_kv_pairs=2, noise_frac=0.2, num_noise_tokens=1),
    "fuzzy_recall": dict(seq_len=6, vocab=4, num_kv_pairs=2, key_len=1, value_len=1, num_queries=1),
    "state_tracking": dict(seq_len=4, modulus=2),
}

# One impossible setting per task, and the words its error must contain.
INVALID = {
    "mqar": (dict(seq_len=64, num_kv_pairs=30), "mqar: 3*num_kv_pairs=90 must be <= seq_len=64"),
    "selective_copy": (dict(seq_len=10, num_tokens=6), "selective_copy: 2*num_tokens=12 must be < seq_len=10"),
    "induction_heads": (dict(seq_len=3), "induction_heads: seq_len=3 must be >= 4"),
    "noisy_recall": (dict(seq_len=40), "noisy_recall: 3*num_kv_pairs + noise + separator = 24+24+1 = 49 must be <="),
    "fuzzy_recall": (dict(vocab=4, num_kv_pairs=5), "fuzzy_recall: num_kv_pairs=5 must be <= (vocab//2)**key_len=4"),
    "memory_horizon": (dict(seq_len=30), "memory_horizon: seq_len=30 must be a multiple of 4"),
    "state_tracking": (dict(modulus=1), "state_tracking: modulus=1 must be >= 2"),
}


# Settings that would make a task trivial (one possible answer), and the words its error must contain.
TRIVIAL = {
    "mqar": (dict(num_kv_pairs=1), "mqar: num_kv_pairs=1 must be >= 2 (with one pair every query has the same"),
    "selective_copy": (dict(vocab=1), "selective_copy: vocab=1 must be >= 2 (with one data token the answer"),
    "induction_heads": (dict(vocab=1), "induction_heads: vocab=1 must be >= 2 (with one ordinary token"),
    "noisy_recall": (dict(num_kv_pairs=1), "noisy_recall: num_kv_pairs=1 must be >= 2"),
    "fuzzy_recall": (dict(num_kv_pairs=1), "fuzzy_recall: num_kv_pairs=1 must be >= 2"),
}


def test_tables_cover_the_registry():
    assert list(TASKS) == ["mqar", "selective_copy", "induction_heads", "noisy_recall", "fuzzy_recall",
                           "memory_horizon", "state_tracking"]
    for table in (ORACLES, VARIANTS, INVALID):
        assert set(table) == set(TASKS)
    assert set(TASKS) - set(TINY) == {"memory_horizon"}  # too large a sequence space at every valid setting


def settings(name: str) -> list[Task]:
    return [make_task(name), make_task(name, **VARIANTS[name])] + [
        make_task(name, **overrides) for overrides in MORE_VARIANTS.get(name, [])
    ]


def labels_match(task: Task, x: list[int], y: list[int]) -> bool:
    """The targets of row (x, y) are exactly what the independent oracle derives from x."""
    got = {t: target for t, target in enumerate(y) if target != IGNORE}
    expected = ORACLES[task.name](task, x)
    if task.name == "mqar" and task.filler == "random":
        # Decoys make the query positions underivable from the inputs: every scored position must
        # still carry the binding, and each key is queried once.
        return got.items() <= expected.items() and len(got) == task.num_kv_pairs
    return got == expected


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
            assert labels_match(task, x, y), (task, x, y)


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
    if name not in TINY:
        pytest.skip(f"no valid {name} setting has a sequence space small enough for 1024 rows to hit a 12-row test set")
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
            assert labels_match(task, x, y)


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


@pytest.mark.parametrize("name", list(TRIVIAL))
def test_trivial_settings_are_refused(name):
    overrides, message = TRIVIAL[name]
    with pytest.raises(ValueError, match=_literal(message)):
        make_task(name, **overrides)


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
            assert labels_match(longer, x, y)


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
    repeats = 0
    for task in settings("mqar"):
        K = task.num_kv_pairs
        batch = task.sample(64, gen(7))
        for x, y, decoys in zip(batch.inputs.tolist(), batch.targets.tolist(), batch.meta["decoys"].tolist()):
            keys, values = x[0 : 2 * K : 2], x[1 : 2 * K : 2]
            assert all(k in task.keys for k in keys) and all(v in task.values for v in values)
            assert len(set(keys)) == K
            if task.distinct_values:
                assert len(set(values)) == K  # no value is more frequent than another: no frequency shortcut
            repeats += len(set(values)) < K
            queries = [t for t in range(len(x)) if y[t] != IGNORE]
            assert len(queries) == K and sorted(x[t] for t in queries) == sorted(keys)  # each key queried once
            for t in queries:
                assert x[:t].count(x[t]) == 1 + decoys[t]  # the binding, then any decoys in the filler
            fill = [tok for t, tok in enumerate(x) if t >= 2 * K and t not in queries]
            if task.filler != "random":
                assert all(tok not in task.keys for tok in fill) and all(decoys[t] == 0 for t in queries)
    assert repeats > 0  # distinct_values=False does repeat values


def test_mqar_random_filler_has_decoys_at_the_documented_rate():
    # The docstring's numbers: 12 % of queries have a decoy at the defaults, 6 % at the headline size.
    for overrides, low, high in [({}, 0.11, 0.13), (dict(seq_len=32, vocab=32, num_kv_pairs=8), 0.05, 0.07)]:
        batch = make_task("mqar", filler="random", **overrides).sample(10_000, gen(14))
        rate = (batch.meta["decoys"][batch.scored] > 0).float().mean().item()
        assert low < rate < high, (overrides, rate)
    blank = make_task("mqar").sample(256, gen(14))
    assert (blank.meta["decoys"][blank.scored] == 0).all()


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


def test_selective_copy_data_tokens_are_distinct_unless_asked():
    for distinct in (True, False):
        task = make_task("selective_copy", distinct_tokens=distinct)
        batch = task.sample(256, gen(15))
        data = batch.targets[batch.scored].reshape(256, task.num_tokens)
        all_distinct = all(len(set(row)) == task.num_tokens for row in data.tolist())
        assert all_distinct == distinct
    assert make_task("selective_copy").metric == "sequence_accuracy"


def test_induction_heads_counts_are_balanced_and_the_target_is_not_adjacent():
    task = make_task("induction_heads", seq_len=32, vocab=8)
    batch = task.sample(512, gen(16))
    ordinary = batch.inputs[batch.inputs != task.TRIGGER].reshape(512, 30)
    counts = torch.stack([(ordinary == tok).sum(dim=1) for tok in task.ordinary_tokens], dim=1)  # (B, V)
    assert set(counts.unique().tolist()) == {3, 4}  # 30 tokens over 8 ids: each 3 or 4 times
    assert (batch.inputs[:, -2] != task.TRIGGER).all()
    # The target is not the token before the final trigger's position by construction, and every id
    # is the target about equally often.
    target = batch.targets[:, -1]
    assert (batch.meta["distance"] >= 2).all()
    share = torch.bincount(target, minlength=task.vocab_size)[1:].float() / 512
    assert share.min() > 0.08 and share.max() < 0.17


def test_fuzzy_recall_queries_reveal_no_value_and_repeat_pairs():
    task = make_task("fuzzy_recall")
    batch = task.sample(256, gen(17))
    repeated = 0
    for x in batch.inputs.tolist():
        sep = x.index(task.SEP)
        assert not any(tok in task.values for tok in x[sep:])  # no value after the separator: no teacher forcing
        qblock = task.key_len + task.value_len - 1
        asked = [tuple(x[b : b + task.key_len]) for b in range(sep + 1, len(x), qblock)]
        repeated += len(set(asked)) < len(asked)
    assert repeated > 0  # with replacement: earlier queries say nothing about the next


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
    task = make_task("fuzzy_recall", vocab=4, num_kv_pairs=4, key_len=2, value_len=1, seq_len=25, num_queries=4)
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


@pytest.mark.parametrize("name", list(TASKS))
def test_validation_set_is_apart_from_test_and_training(name):
    """Protocol v2: decisions read a validation set that shares no row with the test set, and training never
    draws a row of either. On tiny tasks the raw streams would collide, so the checks are not vacuous."""
    if name not in TINY:
        pytest.skip(f"no valid {name} setting has a sequence space small enough to make streams collide")
    task = make_task(name, **TINY[name])
    data = TaskData(task, seed=0, test_size=8, validation_size=4)
    test_rows = {tuple(row) for row in data.test.inputs.tolist()}
    validation_rows = {tuple(row) for row in data.validation.inputs.tolist()}
    assert len(data.validation) == 4 and not test_rows & validation_rows
    raw = [tuple(row) for row in task.sample(1024, gen(123)).inputs.tolist()]
    assert any(row in validation_rows for row in raw) and any(row in test_rows for row in raw)  # not vacuous
    for x, y in zip(data.validation.inputs.tolist(), data.validation.targets.tolist()):  # redrawn rows keep labels
        assert labels_match(task, x, y)
    # The test set is the one without a validation set: adding validation rows changes no reported row.
    assert torch.equal(data.test.inputs, TaskData(task, seed=0, test_size=8).test.inputs)
    for _ in range(4):
        rows = {tuple(row) for row in data.train_batch(64).inputs.tolist()}
        assert not rows & (test_rows | validation_rows)


def test_validation_defaults_to_the_test_set_and_is_reproducible():
    task = make_task("mqar")
    v1 = TaskData(task, 0, 32)
    assert v1.validation is v1.test  # protocol v1: decisions read the test rows
    a, b = TaskData(task, 0, 32, validation_size=16), TaskData(task, 0, 32, validation_size=16)
    assert torch.equal(a.validation.inputs, b.validation.inputs)
    assert not torch.equal(a.validation.inputs, TaskData(task, 1, 32, validation_size=16).validation.inputs)
    # Streams are independent of one another: training batches are those of the v1 data wherever no
    # validation row has to be avoided (here: all of them, MQAR's sequence space being vast).
    assert torch.equal(a.train_batch(16).inputs, v1.train_batch(16).inputs)
    with pytest.raises(ValueError, match="validation_size=-1"):
        TaskData(task, 0, 32, validation_size=-1)


def test_taskdata_refuses_when_the_test_set_covers_every_sequence():
    task = make_task("selective_copy", seq_len=3, vocab=2, num_tokens=1)  # four possible sequences
    data = TaskData(task, seed=0, test_size=32)
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
        assert f"metric {cls.metric})" in out


def test_cli_shows_a_decoded_example():
    code, out, _ = cli("show", "mqar", "seq_len=12", "vocab=8", "num_kv_pairs=2", "power_a=0.5", "--seed", "4")
    assert code == 0
    assert "MQAR(seq_len=12, vocab=8, num_kv_pairs=2, power_a=0.5, filler='blank', distinct_values=True)" in out
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


def _documented_examples() -> list[str]:
    return [name for name, cls in TASKS.items() if "testbed tasks show" in (sys.modules[cls.__module__].__doc__ or "")]


@pytest.mark.parametrize("name", _documented_examples())
def test_docstring_worked_example_is_the_generators_output(name):
    # The worked example names the `tasks show` command that prints it; rerun it and compare the rows.
    doc = sys.modules[TASKS[name].__module__].__doc__
    command = " ".join(re.search(r"`testbed tasks show ([^`]+)`", doc).group(1).split())
    *argv, seed_flag, seed = command.split()
    assert seed_flag == "--seed"
    task = make_task(argv[0], **tasks_cli.parse_overrides(argv[0], argv[1:]))
    batch = task.sample(1, gen(int(seed)))  # what `tasks show` samples
    names = task.token_names()
    inputs = re.search(r"^ +inputs +(.+)$", doc, re.M).group(1).split()
    targets = re.search(r"^ +targets +(.+)$", doc, re.M).group(1).split()[: task.seq_len]
    assert inputs == [names[t] for t in batch.inputs[0].tolist()]
    assert targets == [names[t] if t != IGNORE else "." for t in batch.targets[0].tolist()]


def test_every_redesigned_task_documents_a_reproducible_example():
    assert {"mqar", "selective_copy", "induction_heads", "noisy_recall", "fuzzy_recall"} <= set(_documented_examples())


def test_benchmark_prints_a_row_per_task(monkeypatch, capsys):
    from studies.bench import tasks as bench

    monkeypatch.setattr(bench, "LENGTH", 64)  # a smoke run of the same code path
    monkeypatch.setattr(bench, "BATCH", 8)
    bench.main(quick=True)
    out = capsys.readouterr().out
    assert all(f"| {name} " in out for name in TASKS)
    assert "target: mqar >= 5 M tokens/s ->" in out
