"""The direct table's gradient, the entries a batch uses and the sparse SGD step
(kernel.class_direct_gradient, direct_entries, sparse_sgd_update), with which data-parallel
training sums and steps the table across ranks (rnnkit/mpi.py): against reference.py,
against class_backward's in-place update and the dense step, and hostile arguments."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rnnkit import kernel, reference
from rnnkit.errors import KernelError
from test_kernel import assert_close
from test_kernel_hostile import (BAD_INTEGERS, BAD_REALS, HOSTILE, ID_KINDS, INVALID, READ_KINDS, VALID, WRITE_KINDS,
                                 Arena,
                                 call, draw_array, draw_output, draw_scalar, outcome)
from test_rnnme_kernel import BAD_ORDERS, CLASS_KINDS, K, ODD_SHAPES, hostile_case, make_case


@pytest.fixture
def rng():
    return np.random.default_rng(2468)


def gradient(impl, case, dtable=None, loss_scale=0.7, direct_l2=0.01):
    """impl's class_forward, then its table gradient accumulated into dtable (zeros by default)."""
    cache = impl.class_forward(**case)[3]
    dtable = np.zeros_like(case["table"]) if dtable is None else dtable
    impl.class_direct_gradient(dtable, cache, table=case["table"], loss_scale=loss_scale, direct_l2=direct_l2)
    return dtable


def entries(impl, case, lanes=slice(None)):
    """impl's direct_entries of the case's batch, or of some of its lanes."""
    history = None if case["history"] is None else np.ascontiguousarray(case["history"][lanes])
    inputs, targets, resets = (np.ascontiguousarray(case[name][:, lanes]) for name in ("inputs", "targets", "resets"))
    return impl.direct_entries(inputs, targets, resets, V=case["V"], class_start=case["class_start"],
                               direct_order=case["direct_order"], table_size=case["table"].size, history=history)


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("order", [1, 3, 10])
def test_parity(rng, shape, order):
    """The gradient equals reference.py's and the entries are its list exactly (tables of 1
    to 60 entries: runs that wrap around, onto themselves too); the gradient is zero
    outside the entries, and class_backward's update changes entries only among them."""
    T, B, H, V, C = shape
    case = make_case(rng, T, B, H, V, C, order, D=int(rng.integers(1, 60)))
    got = gradient(kernel, case)
    assert_close("dtable", got, gradient(reference, case), 1e-5, 1e-6)
    listed = entries(kernel, case)
    assert listed.dtype == np.int64 and np.array_equal(listed, entries(reference, case))
    assert (np.diff(listed) > 0).all()
    assert set(np.flatnonzero(got)) <= set(listed)
    table = case["table"].copy()
    kernel.class_backward(np.zeros_like(case["params"]), kernel.class_forward(**case)[3], table=table,
                          loss_scale=0.7, direct_lr=0.3, direct_l2=0.01)
    assert set(np.flatnonzero(table != case["table"])) <= set(listed)


def test_summed_step_is_the_in_place_update_but_for_l2(rng):
    """table - lr * gradient is class_backward's update: without L2 up to the order of the
    additions; with L2 the in-place update's later uses see the entry as the earlier ones
    left it, a difference of at most lr * l2 * (uses of an entry) * (its largest move)."""
    case = make_case(rng, 12, 4, 6, 30, 5, order=3, D=500)
    uses = case["direct_order"] * int((case["targets"] >= 0).sum())
    lr = 0.2
    for l2 in (0.0, 1e-4, 1e-2):
        table = case["table"].copy()
        kernel.class_backward(np.zeros_like(case["params"]), kernel.class_forward(**case)[3], table=table,
                              loss_scale=0.05, direct_lr=lr, direct_l2=l2)
        summed = case["table"] - np.float32(lr) * gradient(kernel, case, loss_scale=0.05, direct_l2=l2)
        moved = np.abs(table - case["table"]).max()
        assert np.abs(table - summed).max() <= lr * l2 * uses * moved + 1e-6, l2   # + rounding
    assert np.abs(table - summed).max() > 1e-4   # with a large L2 the two rules do differ


def test_a_batch_uses_the_entries_of_its_lanes(rng):
    """What MPI relies on: the entries of a batch are those its lanes' shares use, together,
    and the gradient of the batch is the sum of its shares' gradients."""
    case = make_case(rng, 8, 6, 5, 40, 6, order=4, D=3000)
    whole, first, second = entries(kernel, case), entries(kernel, case, slice(0, 3)), entries(kernel, case, slice(3, 6))
    assert np.array_equal(whole, np.union1d(first, second))
    shares = [{**case, **{name: np.ascontiguousarray(case[name][:, lanes]) for name in ("inputs", "targets", "resets")},
               "h0": np.ascontiguousarray(case["h0"][lanes]), "history": np.ascontiguousarray(case["history"][lanes])}
              for lanes in (slice(0, 3), slice(3, 6))]
    assert_close("dtable", gradient(kernel, case), gradient(kernel, shares[0]) + gradient(kernel, shares[1]),
                 1e-5, 1e-6)


def test_gradient_accumulates(rng):
    case = make_case(rng, 5, 3, 4, 12, 3, order=3, D=50)
    once = gradient(kernel, case)
    start = np.linspace(-1, 1, 50).astype(np.float32)
    assert_close("dtable", gradient(kernel, case, dtable=start.copy()), start + once, 1e-6, 1e-7)


def test_refusals_name_the_argument(rng):
    case = make_case(rng, 3, 2, 4, 9, 2, order=2, D=40)
    cache = kernel.class_forward(**case)[3]
    dtable = np.zeros(40, np.float32)
    with pytest.raises(KernelError, match=r"^table has 41 entries but the forward read one of 40$"):
        kernel.class_direct_gradient(dtable, cache, table=np.zeros(41, np.float32))
    with pytest.raises(KernelError, match=r"^dtable must not share memory with table$"):
        kernel.class_direct_gradient(case["table"], cache, table=case["table"])
    with pytest.raises(KernelError, match=r"^dtable has shape \(39,\), expected \(40,\)$"):
        kernel.class_direct_gradient(dtable[:39], cache, table=case["table"])
    with pytest.raises(KernelError, match=r"^class_forward was run without direct connections"):
        kernel.class_direct_gradient(dtable, kernel.class_forward(**{**case, "table": None, "direct_order": 0})[3],
                                     table=case["table"])
    with pytest.raises(KernelError, match=r"^class_forward was run with keep_for_backward=False"):
        kernel.class_direct_gradient(dtable, kernel.class_forward(**case, keep_for_backward=False)[3],
                                     table=case["table"])
    assert not dtable.any()
    bad = {**case, "targets": case["targets"].copy()}
    bad["targets"][2, 1] = 9
    with pytest.raises(KernelError, match=r"^target token id out of range \[-1, V\): targets\[2, 1\] = 9, "
                                          r"allowed \[-1, 8\]$"):
        entries(kernel, bad)
    with pytest.raises(KernelError, match=r"^direct_order = 0 is out of range \[1, 10\]$"):
        entries(kernel, {**case, "direct_order": 0})


def test_sparse_step_is_the_dense_step_on_its_entries(rng):
    """sparse_sgd_update equals reference.py and, bit for bit, sgd_update with the gradient
    scattered into a dense one (what the MPI exchange's two ways rely on)."""
    params = rng.standard_normal(1000).astype(np.float32)
    index = np.unique(rng.integers(0, 1000, 300)).astype(np.int64)
    grads = rng.standard_normal(index.size).astype(np.float32)
    got, expected, dense = params.copy(), params.copy(), params.copy()
    kernel.sparse_sgd_update(got, index, grads, 0.3)
    reference.sparse_sgd_update(expected, index, grads, np.float32(0.3))
    scattered = np.zeros_like(params)
    scattered[index] = grads
    kernel.sgd_update(dense, scattered, 0.3)
    assert np.array_equal(got, expected) and np.array_equal(got, dense)
    untouched = np.setdiff1d(np.arange(1000), index)
    assert np.array_equal(got[untouched], params[untouched])


@pytest.mark.parametrize("index, message", [
    ([1, 1, 2], r"^sparse index not rising strictly within \[0, size\)$"),
    ([3, 2], r"^sparse index not rising strictly within \[0, size\)$"),
    ([0, 5], r"^sparse index not rising strictly within \[0, size\): index\[1\] = 5, allowed \[0, 4\]$"),
    ([-1, 2], r"^sparse index not rising strictly within \[0, size\): index\[0\] = -1, allowed \[0, 4\]$"),
    ([0, 1, 2, 3, 4, 4], r"^sparse index not rising strictly within \[0, size\)$"),
])
def test_sparse_step_refuses_a_bad_index(index, message):
    params = np.arange(5, dtype=np.float32)
    index = np.array(index, np.int64)
    with pytest.raises(KernelError, match=message):
        kernel.sparse_sgd_update(params, index, np.ones(index.size, np.float32), 0.5)
    assert np.array_equal(params, np.arange(5, dtype=np.float32))   # nothing written
    with pytest.raises(KernelError):
        reference.sparse_sgd_update(params, index, np.ones(index.size, np.float32), 0.5)


# ----------------------------------------------------------------------------------
# hostile arguments (test_kernel_hostile.py's machinery)
# ----------------------------------------------------------------------------------

BAD_TABLE_SIZES = [0, -1, 2**40 + 1, 2**63, 3.0, "3", None, True, np.float64(3), [3]]
GRADIENT_CACHE_ARRAYS = ["inputs", "targets", "resets", "history", "dclass", "dword", "class_start", "work"]


def id_range(name: str, V: int) -> dict:
    """low and high of an id array of a batch of vocabulary V, for its id_below / id_above
    kinds (class_start's: an empty inner class, or V + 1)."""
    low, high = {"inputs": (0, V), "targets": (-1, V), "resets": (0, 2), "history": (-1, V),
                 "class_start": (1, V + 1)}.get(name, (0, None))
    return {"low": low, "high": high}


@HOSTILE
@given(st.data())
def test_direct_entries_hostile(data):
    """direct_entries with corrupted ids, class map, history, order, table size and V:
    KernelError or the reference's entries; its arguments never written."""
    case, (T, B, H, V, C, order, D) = hostile_case(data, orders=(1, 3))
    corrupt = data.draw(st.sets(st.sampled_from(["inputs", "targets", "resets", "class_start", "history",
                                                 "direct_order", "table_size", "V"]), min_size=1, max_size=2),
                        label="corrupt")
    arena = Arena()
    args, classes = {}, []
    history = case["history"] if case["history"] is not None else np.full((B, K), -1, np.int32)
    for name, values in (("inputs", case["inputs"]), ("targets", case["targets"]), ("resets", case["resets"]),
                         ("class_start", case["class_start"]), ("history", history)):
        kinds = {"class_start": CLASS_KINDS, "history": {**ID_KINDS, "none": VALID}}.get(name, ID_KINDS)
        args[name], cls = draw_array(data, arena, name, values, kinds, corrupt, **id_range(name, V))
        arena.keep(args[name])
        classes.append(cls)
    args["direct_order"], cls = draw_scalar(data, "direct_order", [order, np.int64(order)], [0] + BAD_ORDERS, corrupt)
    classes.append(cls)
    args["table_size"], cls = draw_scalar(data, "table_size", [D, np.int64(D)], BAD_TABLE_SIZES, corrupt)
    classes.append(cls)
    args["V"], cls = draw_scalar(data, "V", [V, np.int64(V)], [V + 1, V - 1] + BAD_INTEGERS, corrupt)
    classes.append(cls)

    accepted, result = call(kernel.direct_entries, outcome(classes), args.pop("inputs"), args.pop("targets"),
                            args.pop("resets"), **args)
    arena.check()
    if accepted:
        expected = reference.direct_entries(case["inputs"], case["targets"], case["resets"], V=V,
                                            class_start=case["class_start"], direct_order=order, table_size=D,
                                            history=None if args["history"] is None else history)
        assert np.array_equal(result, expected)


@HOSTILE
@given(st.data())
def test_class_direct_gradient_hostile(data):
    """class_direct_gradient with a forged cache, hostile dtable / table and scalars:
    KernelError with nothing written, or the reference's gradient added to dtable."""
    case, (T, B, H, V, C, order, D) = hostile_case(data, orders=(1, 3))
    cache = kernel.class_forward(**case)[3]
    fields = GRADIENT_CACHE_ARRAYS + ["V", "direct_order", "cache", "dtable", "table", "loss_scale", "direct_l2"]
    corrupt = data.draw(st.sets(st.sampled_from(fields), min_size=1, max_size=2), label="corrupt")
    arena = Arena()
    forged, classes = {}, []
    for name in GRADIENT_CACHE_ARRAYS:
        values = getattr(cache, name)
        if values is None:             # no history: None stays the clean value
            continue
        if name == "work":             # scratch: any buffer will do (a fresh one when unusable)
            values, kinds = np.zeros_like(values), {kind: VALID for kind in READ_KINDS}
        else:
            kinds = {"history": {k: c for k, c in ID_KINDS.items() if k != "none"}, "class_start": CLASS_KINDS,
                     "dclass": READ_KINDS, "dword": READ_KINDS}.get(name, ID_KINDS)
        forged[name], cls = draw_array(data, arena, name, values, kinds, corrupt, **id_range(name, V))
        arena.keep(forged[name])
        classes.append(cls)
    forged["V"], cls = draw_scalar(data, "V", [V, np.int64(V)], [V + 1, V - 1] + BAD_INTEGERS, corrupt)
    classes.append(cls)
    forged["direct_order"], cls = draw_scalar(data, "direct_order", [order], [0] + BAD_ORDERS, corrupt)
    classes.append(cls)
    forged_cache = dataclasses.replace(cache, **forged)
    if "cache" in corrupt:
        forged_cache = data.draw(st.sampled_from([None, vars(forged_cache), dataclasses.replace(forged_cache, dword=None)]),
                                 label="cache")
        classes.append(INVALID)
    table, cls = draw_array(data, arena, "table", case["table"], READ_KINDS, corrupt)
    arena.keep(table)
    classes.append(cls)
    start = np.random.default_rng(5).standard_normal(D).astype(np.float32)
    alias = table if isinstance(table, np.ndarray) and table.dtype == np.float32 and table.shape == (D,) else None
    dtable, cls = draw_output(data, arena, "dtable", start, corrupt, alias=alias)
    classes.append(cls)
    scale, cls = draw_scalar(data, "loss_scale", [0.7, np.float32(0.7)], BAD_REALS, corrupt)
    classes.append(cls)
    l2, cls = draw_scalar(data, "direct_l2", [0.01, 0.0], [-1.0] + BAD_REALS, corrupt)
    classes.append(cls)
    before = dtable.copy() if isinstance(dtable, np.ndarray) else None

    accepted, _ = call(kernel.class_direct_gradient, outcome(classes), dtable, forged_cache, table=table,
                       loss_scale=scale, direct_l2=l2)
    arena.check()
    if not accepted:
        if before is not None:
            assert dtable.tobytes() == before.tobytes(), "a refused call wrote into dtable"
        return
    expected = start.copy()
    reference.class_direct_gradient(expected, reference.class_forward(**case)[3], table=case["table"],
                                    loss_scale=float(scale), direct_l2=float(l2))
    assert_close("dtable", dtable, expected, 1e-4, 1e-5)


@HOSTILE
@given(st.data())
def test_sparse_sgd_update_hostile(data):
    """sparse_sgd_update with hostile params / index / grads (read-only, strided, wrong dtype
    or length, out of order or range, aliasing) and rates: KernelError with params
    untouched, or the reference's step."""
    size = data.draw(st.integers(1, 30), label="size")
    rng = np.random.default_rng(data.draw(st.integers(0, 999), label="seed"))
    index = np.sort(rng.choice(size, rng.integers(1, size + 1), replace=False)).astype(np.int64)
    clean = {"params": rng.standard_normal(size).astype(np.float32),
             "grads": rng.standard_normal(index.size).astype(np.float32)}
    corrupt = data.draw(st.sets(st.sampled_from(["params", "index", "grads", "lr"]), min_size=1, max_size=2),
                        label="corrupt")
    arena = Arena()
    args, classes = {}, []
    # index: int64 is its own dtype; a longer or shorter one no longer matches grads
    index_kinds = {**ID_KINDS, "int64": VALID, "reversed": INVALID if index.size > 1 else VALID}
    kind = data.draw(st.sampled_from(sorted(index_kinds)), label="index") if "index" in corrupt else "ok"
    args["index"] = arena.make(index[::-1] if kind == "reversed" else index, "ok" if kind == "reversed" else kind,
                               low=0, high=size)
    arena.keep(args["index"])
    classes.append(index_kinds[kind])
    args["grads"], cls = draw_array(data, arena, "grads", clean["grads"], READ_KINDS, corrupt)
    arena.keep(args["grads"])
    classes.append(cls)
    alias = args["grads"] if isinstance(args["grads"], np.ndarray) else None
    args["params"], cls = draw_output(data, arena, "params", clean["params"], corrupt, alias=alias,
                                      kinds={**WRITE_KINDS, "longer": VALID, "wider": VALID,   # more entries
                                             "shorter": VALID if index[-1] < size - 1 else INVALID})
    classes.append(cls)
    args["lr"], cls = draw_scalar(data, "lr", [0.1, np.float32(0.1), 0], [-0.1] + BAD_REALS, corrupt)
    classes.append(cls)
    before = args["params"].copy() if isinstance(args["params"], np.ndarray) else None

    accepted, _ = call(kernel.sparse_sgd_update, outcome(classes), **args)
    arena.check()
    if not accepted:
        if before is not None:
            assert args["params"].tobytes() == before.tobytes(), "a refused call wrote into params"
        return
    expected = np.array(before, np.float32).reshape(-1)
    reference.sparse_sgd_update(expected, index, clean["grads"], np.float32(args["lr"]))
    assert np.array_equal(args["params"].reshape(-1), expected)
