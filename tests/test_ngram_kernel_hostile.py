"""Hostile arguments and hostile array contents for the n-gram entry points of the C
kernel (kernel.ngram_*, csrc/ngram.c): each call ends in a KernelError with a one-line
message or in a result, never in a crash or another exception.

Array contents are not trusted by the C code (a model file's tables and keys could be
anything that passed the schema's cheap checks), so garbage keys, tables, offsets and
vocabulary bytes of the right shapes must be safe to query too.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rnnkit import kernel
from rnnkit.errors import KernelError
from rnnkit.ngram import NgramModel

HOSTILE = settings(max_examples=150, deadline=None, derandomize=True, database=None)
LINES = ["a b c a b", "b c d", "c a b d e", "나는 버스를 탔다", "d e a", ""] * 3

BAD_ARRAYS = {
    "float64": lambda a: a.astype(np.float64), "int32": lambda a: a.astype(np.int32),
    "uint8": lambda a: a.astype(np.uint8), "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "longer": lambda a: np.concatenate([a, a[:1]]), "shorter": lambda a: a[:-1],
    "matrix": lambda a: a[None], "strided": lambda a: np.repeat(a, 2)[::2] if a.size > 1 else a[None],
    "misaligned": lambda a: np.frombuffer(b"\0" + a.tobytes(), dtype=a.dtype, offset=1),
    "list": lambda a: a.tolist(), "none": lambda a: None, "scalar": lambda a: 3,
}


@pytest.fixture(scope="module")
def model():
    return NgramModel.train(LINES, 4)


def arrays_of(model) -> dict:
    return {"text": model.vocab.text, "offsets": model.vocab.offsets, "vocab_table": model.vocab.table,
            "keys": list(model._keys), "prob": list(model._prob), "backoff": list(model._bo),
            "extendable": list(model._extendable), "tables": list(model._tables)}


def tables_from(order, a: dict):
    vocab = kernel.ngram_vocab_tables(a["text"], a["offsets"], a["vocab_table"])
    return kernel.ngram_tables(order, vocab, a["keys"], a["prob"], a["backoff"], a["extendable"], a["tables"])


def outcome(call, *args, **kwargs):
    """'ok' with the result, or 'error' for a one-line KernelError; anything else fails."""
    try:
        return "ok", call(*args, **kwargs)
    except KernelError as exc:
        assert str(exc) and "\n" not in str(exc)
        return "error", None


def exercise(tables, rng) -> None:
    """Every query once on random input: each must end in a result or a KernelError."""
    words = ["a", "b", "zz", "나는", "\udcff", ""]
    text = " ".join(rng.choice(words, size=8)).encode("utf-8", "surrogatepass")
    outcome(kernel.ngram_lookup, tables.vocab, "words", text, np.array([len(text)], dtype=np.int64))
    outcome(kernel.ngram_lookup, tables.vocab, "chars", text + b"\xff\xc3", np.array([len(text) + 2], dtype=np.int64))
    for precision in ("float64", "float32"):
        score = kernel.ngram_text_scorer(tables, "words", precision, 1e-4)
        outcome(score, text, True, bool(rng.integers(2)))
        ids = rng.integers(0, tables.vocab.size, 12).astype(np.int64)
        outcome(kernel.ngram_score_ids, tables, ids, np.array([5, 7], dtype=np.int64), bos=True, eos=True,
                precision=precision, slack=1e-4)
    step = kernel.ngram_base_scorer(tables, 1e-4)
    state = 0
    for word in rng.integers(0, tables.vocab.size, 6).tolist():
        status, result = outcome(step, state, word)
        state = result[1] if status == "ok" else int(rng.integers(0, 1 << 40))


@HOSTILE
@given(st.data())
def test_model_arrays_of_the_wrong_kind_are_refused(model, data):
    """ngram_vocab_tables / ngram_tables: an array of another dtype, shape, layout or
    type, or a list of the wrong length, is a KernelError; the valid ones work."""
    a = arrays_of(model)
    name = data.draw(st.sampled_from(sorted(a)), label="array")
    how = data.draw(st.sampled_from(sorted(BAD_ARRAYS) + ["short_list", "valid"]), label="how")
    per_order = isinstance(a[name], list)
    if how == "short_list" and per_order:
        a[name] = a[name][:-1]
    elif how not in ("valid", "short_list"):
        if per_order:
            n = data.draw(st.integers(1, model.order), label="order")
            if a[name][n] is None:
                return
            a[name][n] = BAD_ARRAYS[how](a[name][n])
        else:
            a[name] = BAD_ARRAYS[how](a[name])
    status, tables = outcome(tables_from, model.order, a)
    # other kinds may be refused or not, as the array is uint8 (alignment, byte order) or
    # a vocabulary text whose length the offsets, not the checks, must fit
    if how == "valid":
        assert status == "ok"
    elif how in ("float64", "matrix", "none", "scalar", "list", "strided") or how == "short_list" and per_order:
        assert status == "error"
    if status == "ok":
        exercise(tables, np.random.default_rng(0))


@HOSTILE
@given(st.data())
def test_garbage_contents_are_safe(model, data):
    """Arrays of the right dtypes and shapes filled with garbage (unsorted or negative keys,
    random table entries, offsets and bytes, NaN probabilities): no query crashes."""
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6), label="seed"))
    a = arrays_of(model)
    for name in data.draw(st.sets(st.sampled_from(["keys", "prob", "backoff", "extendable", "tables",
                                                   "offsets", "text", "vocab_table"]), min_size=1), label="garbled"):
        value = a[name]
        arrays = value if isinstance(value, list) else [value]
        for i, array in enumerate(arrays):
            if array is None or array.size == 0:
                continue
            garbage = array.copy()
            if garbage.dtype == np.float32:
                garbage[:] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -3.0, 0.0], size=garbage.size)
            elif garbage.dtype == np.uint8:
                garbage[:] = rng.integers(0, 256, garbage.size)
            else:
                garbage[:] = rng.choice([-1, 0, 1, 2**31, 2**62, -2**63, int(rng.integers(0, 2**63))], size=garbage.size)
            arrays[i] = garbage
        a[name] = arrays if isinstance(value, list) else arrays[0]
    status, tables = outcome(tables_from, model.order, a)
    assert status == "ok"   # the kinds are right: contents are the C code's business
    exercise(tables, rng)
    outcome(kernel.vocab_table_fault, a["vocab_table"], a["text"], a["offsets"])
    for n in range(2, model.order + 1):
        outcome(kernel.ngram_table_misses, a["keys"], a["tables"], len(model.vocab), n, 1)


BAD_SCALARS = [-1, 2**63, 2**64, 1.5, "1", None, [1], np.float64(1.0), b"x"]


@HOSTILE
@given(st.data())
def test_query_arguments_are_checked(model, data):
    """Texts that are not bytes, ends out of order or beyond the text, ids out of range,
    lengths that do not add up, odd flags, splits, precisions, slacks, state codes and
    word ids: a KernelError, or a result where the value is in fact valid."""
    tables = model._query
    argument = data.draw(st.sampled_from(["text", "ends", "ids", "lengths", "bos", "split", "precision",
                                          "slack", "state", "word"]), label="argument")
    bad = data.draw(st.sampled_from(BAD_SCALARS + [np.array([3, 1], dtype=np.int64), np.array([99], dtype=np.int64),
                                                   np.array([-5], dtype=np.int64), "나는", 7, 2]), label="bad")
    text, ends = b"a b zz", np.array([6], dtype=np.int64)
    ids, lengths = np.array([3, 4, 0, 5], dtype=np.int64), np.array([1, 3], dtype=np.int64)
    args = {"text": text, "ends": ends, "ids": ids, "lengths": lengths, "bos": True, "split": "words",
            "precision": "float64", "slack": 1e-4, "state": 129, "word": 3}
    args[argument] = bad
    outcome(kernel.ngram_lookup, tables.vocab, args["split"], args["text"], args["ends"])
    outcome(kernel.ngram_score_ids, tables, args["ids"], args["lengths"], bos=args["bos"], eos=True,
            precision=args["precision"], slack=args["slack"])
    status, score = outcome(kernel.ngram_text_scorer, tables, args["split"], args["precision"], args["slack"])
    if status == "ok":
        outcome(score, args["text"], args["bos"], False)
    outcome(kernel.ngram_base_scorer(tables, 1e-4), args["state"], args["word"])
    outcome(kernel.ngram_unit_id, tables.vocab, args["text"])


def test_states_that_name_no_ngram(model):
    step = kernel.ngram_base_scorer(model._query, 1e-4)
    for state in (-1, 5, 127, 128 * len(model.vocab) + 1, 128 * 10**9 + 2, 2**62):
        with pytest.raises(KernelError, match="state code that names no n-gram of the model"):
            step(state, 3)
    with pytest.raises(KernelError, match=r"input token id out of range \[0, V\)"):
        step(129, len(model.vocab))
    with pytest.raises(KernelError, match="must fit in int64"):
        step(2**64, 3)
