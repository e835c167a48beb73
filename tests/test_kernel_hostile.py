"""Hostile arguments to every kernel entry point: each call ends in a KernelError or in
the right result, never in a crash, another exception or a write outside its buffers.

Every array handed to the kernel lives inside a canary-filled byte block (Arena): after
each call the canaries, the gaps between the elements of strided views and the contents
of every array the kernel may only read must be as they were. Each hostile argument is
classed as valid (the call must succeed and match reference.py), invalid (the call must
raise KernelError and leave every array untouched) or either (a Fortran-order or strided
view that happens to be contiguous, e.g. of one element).
"""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rnnkit import kernel, layout, reference
from rnnkit.errors import KernelError

HOSTILE = settings(max_examples=200, deadline=None, derandomize=True, database=None)

PAD = 64            # canary bytes either side of every array
CANARY = 0xA5

VALID, INVALID, EITHER = "valid", "invalid", "either"

# How an array can be handed over, and what that is for an argument the kernel reads.
READ_KINDS = {
    "ok": VALID, "readonly": VALID, "bytes": VALID,
    "fortran": EITHER, "strided": EITHER,
    "misaligned": INVALID, "uint8": INVALID, "float64": INVALID, "int64": INVALID,
    "bool": INVALID, "float16": INVALID, "swapped": INVALID, "big_endian": INVALID,
    "object": INVALID, "longer": INVALID, "shorter": INVALID, "wider": INVALID,
    "extra_axis": INVALID, "reshaped": INVALID, "list": INVALID, "none": INVALID,
    "scalar": INVALID,
}
# ... for an argument the kernel writes: read-only and bytes-backed arrays are refused.
WRITE_KINDS = {**READ_KINDS, "readonly": INVALID, "bytes": INVALID}
# ... for token ids, reset flags: also a value outside the allowed range.
ID_KINDS = {**READ_KINDS, "id_below": INVALID, "id_above": INVALID}

DTYPE_CHANGES = {
    "uint8": lambda d: np.uint8, "float64": lambda d: np.float64, "int64": lambda d: np.int64,
    "bool": lambda d: np.bool_, "float16": lambda d: np.float16,
    "swapped": lambda d: np.int32 if d == np.float32 else np.float32,   # same size, other type
    "big_endian": lambda d: d.newbyteorder(">"),
}
SHAPE_CHANGES = {
    "longer": lambda v: np.concatenate([v, v[:1]]),
    "shorter": lambda v: v[:-1],
    "wider": lambda v: np.concatenate([v, v[..., :1]], axis=-1),
    "extra_axis": lambda v: v[None],
    "reshaped": lambda v: v.reshape(-1) if v.ndim > 1 else v.reshape(1, -1),
}

BAD_INTEGERS = [0, -1, 2**31, 2**63, 2**64, -2**63, 3.0, "3", None, True, np.float64(3),
                np.array(3), [3]]
BAD_REALS = [math.nan, math.inf, -math.inf, 1e39, -1e39, 2**1024, "0.5", None, True, [0.5],
             np.array([0.5, 0.5]), 1j]
BAD_ACTIVATIONS = ["relu", "TANH", None, 0, ["tanh"], b"tanh"]


class Arena:
    """Makes arrays inside canary-filled blocks and remembers what must not change."""

    def __init__(self):
        self.guards = []        # (view, snapshot): canaries, gaps, read-only arguments

    def keep(self, array):
        """Remember array's contents: check() asserts they did not change."""
        if isinstance(array, np.ndarray) and array.dtype != object:
            self.guards.append((array, array.copy()))

    def _block(self, dtype, shape, *, spread=1, offset=0):
        """A fresh view of `shape` in the middle of a canary block; spread=2 puts a canary
        element after each element (non-contiguous), offset=1 misaligns the view."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize * spread
        raw = np.full(nbytes + 2 * PAD, CANARY, np.uint8)
        start = PAD + offset
        self.keep(raw[:start])
        self.keep(raw[start + nbytes:])
        region = raw[start:start + nbytes].view(dtype)
        if spread == 1:
            return region.reshape(shape)
        pairs = region.reshape(*shape, spread)
        self.keep(pairs[..., 1:])
        return pairs[..., 0]

    def make(self, values, kind, low=0, high=None):
        """values handed over as `kind` (see READ_KINDS); ids out of [low, high) for id_*."""
        values = np.array(values)
        if kind in ("id_below", "id_above"):
            values.flat[values.size // 2] = low - 1 if kind == "id_below" else high
        if kind in SHAPE_CHANGES:
            values = SHAPE_CHANGES[kind](values)
        if kind in DTYPE_CHANGES:
            values = values.astype(DTYPE_CHANGES[kind](values.dtype))
        if kind == "none":
            return None
        if kind == "list":
            return values.tolist()
        if kind == "scalar":
            return values.flat[0].item()
        if kind == "object":
            return values.astype(object)
        if kind == "bytes":
            array = np.frombuffer(values.tobytes(), values.dtype).reshape(values.shape)
            self.keep(array)
            return array
        if kind == "fortran":
            array = self._block(values.dtype, values.shape[::-1]).T
        else:
            array = self._block(values.dtype, values.shape, spread=2 if kind == "strided" else 1,
                                offset=1 if kind == "misaligned" else 0)
        array[...] = values
        if kind == "readonly":
            array.flags.writeable = False
        return array

    def check(self):
        for view, snapshot in self.guards:
            assert view.tobytes() == snapshot.tobytes(), "the kernel wrote outside its buffers"


def outcome(classes):
    """What the call must do given the class of each argument."""
    if INVALID in classes:
        return INVALID
    return EITHER if EITHER in classes else VALID


def call(function, expected_outcome, *args, **kwargs):
    """Runs function: (True, its result), or (False, None) after a KernelError. Any
    other exception propagates and fails the test."""
    try:
        result = function(*args, **kwargs)
    except KernelError as exc:
        assert expected_outcome != VALID, f"valid arguments refused: {exc}"
        assert "\n" not in str(exc)
        return False, None
    assert expected_outcome != INVALID, "invalid arguments accepted"
    return True, result


def draw_kind(data, name, kinds, corrupt):
    """"ok" unless `name` is to be corrupted; then, half the time, a kind that is not
    invalid (read-only, bytes-backed, ...), so that accepted calls are checked often."""
    if name not in corrupt:
        return "ok"
    benign = data.draw(st.booleans(), label=f"{name} benign")
    pool = [kind for kind, cls in kinds.items() if (cls != INVALID) == benign] or list(kinds)
    return data.draw(st.sampled_from(sorted(pool)), label=name)


def draw_array(data, arena, name, values, kinds, corrupt, **id_range):
    """values as-is (valid) unless `name` is to be corrupted: then in a drawn kind."""
    kind = draw_kind(data, name, kinds, corrupt)
    return arena.make(values, kind, **id_range), kinds[kind]


def draw_scalar(data, name, good, bad, corrupt):
    """One of the `good` equivalents (valid), or, when name is to be corrupted, half the
    time one of `bad`."""
    if name in corrupt and not data.draw(st.booleans(), label=f"{name} benign"):
        return data.draw(st.sampled_from(bad), label=name), INVALID
    return data.draw(st.sampled_from(good), label=name), VALID


def draw_sizes(data):
    return (data.draw(st.integers(1, 4), label="T"), data.draw(st.integers(1, 3), label="B"),
            data.draw(st.integers(1, 5), label="H"), data.draw(st.integers(2, 7), label="V"))


def clean_batch(seed, T, B, H, V, masks):
    rng = np.random.default_rng(seed)
    targets = rng.integers(-1, V, (T, B)).astype(np.int32)
    resets = (rng.random((T, B)) < 0.3).astype(np.int32)
    keep = np.float32(1 / 0.7)
    return {
        "params": (rng.standard_normal(layout.layout_size(V, H)) * 0.5).astype(np.float32),
        "inputs": rng.integers(0, V, (T, B)).astype(np.int32),
        "targets": targets, "resets": resets,
        "h0": (rng.standard_normal((B, H)) * 0.5).astype(np.float32),
        "in_mask": ((rng.random((T, B, H)) >= 0.3) * keep).astype(np.float32) if masks & 1 else None,
        "out_mask": ((rng.random((T, B, H)) >= 0.3) * keep).astype(np.float32) if masks & 2 else None,
    }


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------
# property-based: every entry point
# ----------------------------------------------------------------------------------

FORWARD_FIELDS = ["params", "inputs", "targets", "resets", "h0", "in_mask", "out_mask", "V",
                  "activation", "keep_for_backward", "reuse"]
REUSE_KINDS = {**{kind: VALID for kind in WRITE_KINDS}, "owned_uint8": VALID, "owned_readonly": VALID}


def forged_cache(data, arena, clean_cache, corrupt):
    """A cache for forward's `reuse`: a real one, one whose buffers were swapped for
    hostile arrays (forward must then allocate fresh ones), or not a cache at all."""
    if "reuse" not in corrupt:
        return clean_cache, VALID
    choice = data.draw(st.sampled_from(["real", "forged", "not_a_cache"]), label="reuse")
    if choice == "real":
        return clean_cache, VALID
    if choice == "not_a_cache":
        return data.draw(st.sampled_from(["cache", 5, {}, [clean_cache]]), label="object"), INVALID
    fields = {}
    for name in ("hs", "work", "dlogits", "hd"):
        old = getattr(clean_cache, name)
        if old is None:
            continue
        kind = data.draw(st.sampled_from(sorted(REUSE_KINDS)), label=f"reuse.{name}")
        if kind == "owned_uint8":           # the finding: a uint8 work buffer of the right length
            fields[name] = np.zeros(old.shape, np.uint8)
        elif kind == "owned_readonly":
            fields[name] = np.zeros_like(old)
            fields[name].flags.writeable = False
        else:
            fields[name] = arena.make(old, kind)
        arena.keep(fields[name])            # never written: forward must allocate instead
    return dataclasses.replace(clean_cache, **fields), VALID


@HOSTILE
@given(st.data())
def test_forward_hostile(data):
    """forward with corrupted arrays, sizes, flags and reuse caches: KernelError or the
    reference's loss, log-probs, hidden states and dlogits; inputs never written."""
    T, B, H, V = draw_sizes(data)
    masks = data.draw(st.integers(0, 3), label="masks")
    clean = clean_batch(data.draw(st.integers(0, 999), label="seed"), T, B, H, V, masks)
    activation = data.draw(st.sampled_from(sorted(kernel.ACTIVATIONS)), label="activation")
    present = [f for f in FORWARD_FIELDS if f not in ("in_mask", "out_mask") or clean[f] is not None]
    corrupt = data.draw(st.sets(st.sampled_from(present), min_size=1, max_size=2), label="corrupt")
    clean_cache = kernel.forward(**clean, V=V, activation=activation)[3]
    arena = Arena()
    args, classes = {}, []
    for name in ("params", "h0", "in_mask", "out_mask", "inputs", "targets", "resets"):
        if clean[name] is None:
            args[name] = None
            continue
        low, high = {"inputs": (0, V), "targets": (-1, V), "resets": (0, 2)}.get(name, (0, None))
        kinds = ID_KINDS if name in ("inputs", "targets", "resets") else READ_KINDS
        if name in ("in_mask", "out_mask"):     # None would be valid and mean "no dropout"
            kinds = {k: c for k, c in kinds.items() if k != "none"}
        args[name], cls = draw_array(data, arena, name, clean[name], kinds, corrupt, low=low, high=high)
        arena.keep(args[name])
        classes.append(cls)
    V_arg, cls_v = draw_scalar(data, "V", [V, np.int64(V), np.int32(V)],
                               [V + 1, V - 1] + BAD_INTEGERS, corrupt)
    act_arg, cls_a = draw_scalar(data, "activation", [activation], BAD_ACTIVATIONS, corrupt)
    keep_arg, cls_k = draw_scalar(data, "keep_for_backward", [True, False, np.bool_(True)],
                                  [1, 0, None, "yes", np.array([True, False])], corrupt)
    reuse, cls_r = forged_cache(data, arena, clean_cache, corrupt)
    expected = outcome(classes + [cls_v, cls_a, cls_k, cls_r])

    accepted, result = call(kernel.forward, expected, **args, V=V_arg, activation=act_arg,
                            keep_for_backward=keep_arg, reuse=reuse)
    arena.check()
    if accepted:
        loss, logprobs, hs, cache = result
        r_loss, r_logprobs, r_hs, r_cache = reference.forward(**clean, V=V, activation=activation)
        assert_close(loss, r_loss)
        assert_close(logprobs, r_logprobs)
        assert_close(hs, r_hs)
        if keep_arg:
            assert_close(cache.dlogits, r_cache.dlogits)


CACHE_ARRAYS = ["inputs", "resets", "h0", "params", "hs", "dlogits", "hd", "in_mask", "out_mask", "work"]


def draw_output(data, arena, name, values, corrupt, alias=None, none_is_valid=False,
                kinds=WRITE_KINDS):
    """An array the kernel writes: valid only as a plain writable array (or None where the
    call then allocates it); `alias`, a view of an array the kernel reads, is invalid."""
    kinds = {**kinds, "none": VALID if none_is_valid else INVALID}
    if alias is not None:
        kinds["alias"] = INVALID
    kind = draw_kind(data, name, kinds, corrupt)
    return (alias if kind == "alias" else arena.make(values, kind)), kinds[kind]


@HOSTILE
@given(st.data())
def test_backward_hostile(data):
    """backward with a forged cache (any field), hostile grads / dh0 / loss_scale: KernelError
    with nothing written, or the reference's gradients accumulated into grads and dh0."""
    T, B, H, V = draw_sizes(data)
    masks = data.draw(st.integers(0, 3), label="masks")
    clean = clean_batch(data.draw(st.integers(0, 999), label="seed"), T, B, H, V, masks)
    activation = data.draw(st.sampled_from(sorted(kernel.ACTIVATIONS)), label="activation")
    cache = kernel.forward(**clean, V=V, activation=activation)[3]
    fields = CACHE_ARRAYS + ["V", "activation", "cache", "grads", "dh0", "loss_scale"]
    corrupt = data.draw(st.sets(st.sampled_from(fields), min_size=1, max_size=2), label="corrupt")
    arena = Arena()
    forged, classes = {}, []
    for name in CACHE_ARRAYS:
        values = getattr(cache, name)
        unread = name == "work" or (name == "hd" and cache.out_mask is None)
        if values is None and name == "hd":
            values = cache.hs          # a forged hd where backward must ignore it
        if values is None:             # an absent mask stays absent (None means no dropout)
            continue
        if unread:
            kinds = {kind: VALID for kind in READ_KINDS}
        elif name in ("inputs", "resets"):
            kinds = ID_KINDS
        else:
            kinds = {k: c for k, c in READ_KINDS.items() if not (k == "none" and name.endswith("mask"))}
        forged[name], cls = draw_array(data, arena, name, values, kinds, corrupt,
                                       low=0, high=V if name == "inputs" else 2)
        arena.keep(forged[name])
        classes.append(cls)
    forged["V"], cls_v = draw_scalar(data, "V", [V, np.int64(V)], [V + 1, V - 1] + BAD_INTEGERS, corrupt)
    forged["activation"], cls_a = draw_scalar(data, "activation", [activation], BAD_ACTIVATIONS, corrupt)
    classes += [cls_v, cls_a]
    forged_cache = dataclasses.replace(cache, **forged)
    if "cache" in corrupt:
        forged_cache = data.draw(st.sampled_from([None, "cache", vars(forged_cache),
                                                  dataclasses.replace(forged_cache, dlogits=None)]),
                                 label="cache")
        classes.append(INVALID)

    rng = np.random.default_rng(5)
    grads_init = rng.standard_normal(layout.layout_size(V, H)).astype(np.float32)
    dh0_init = rng.standard_normal((B, H)).astype(np.float32)
    hs = forged["hs"]
    hs_row = hs[0] if isinstance(hs, np.ndarray) and hs.ndim == 3 else None
    grads, cls_g = draw_output(data, arena, "grads", grads_init, corrupt, alias=forged["params"])
    dh0, cls_d = draw_output(data, arena, "dh0", dh0_init, corrupt, alias=hs_row, none_is_valid=True)
    scale, cls_s = draw_scalar(data, "loss_scale", [0.7, np.float32(0.7), 1], BAD_REALS, corrupt)
    expected = outcome(classes + [cls_g, cls_d, cls_s])
    outputs = [(a, a.copy()) for a in (grads, dh0) if isinstance(a, np.ndarray)]

    accepted, result = call(kernel.backward, expected, grads, forged_cache, loss_scale=scale, dh0=dh0)
    arena.check()
    if not accepted:
        for array, before in outputs:
            assert array.tobytes() == before.tobytes(), "a refused call wrote into an output"
        return
    r_cache = reference.forward(**clean, V=V, activation=activation)[3]
    r_grads = np.zeros_like(grads_init)
    r_dh0 = reference.backward(r_grads, r_cache, loss_scale=float(scale))
    assert_close(grads, grads_init + r_grads)
    assert_close(result, r_dh0 + (0 if dh0 is None else dh0_init))


@HOSTILE
@given(st.data())
def test_step_hostile(data):
    """step with corrupted params, state, tokens, V and activation: KernelError or the
    reference's new state and next-token log-probabilities."""
    _, B, H, V = draw_sizes(data)
    rng = np.random.default_rng(data.draw(st.integers(0, 999), label="seed"))
    clean = {"params": (rng.standard_normal(layout.layout_size(V, H)) * 0.5).astype(np.float32),
             "h": rng.standard_normal((B, H)).astype(np.float32),
             "tokens": rng.integers(0, V, B).astype(np.int32)}
    activation = data.draw(st.sampled_from(sorted(kernel.ACTIVATIONS)), label="activation")
    corrupt = data.draw(st.sets(st.sampled_from(["params", "h", "tokens", "V", "activation"]),
                                min_size=1, max_size=2), label="corrupt")
    arena = Arena()
    args, classes = {}, []
    for name, values in clean.items():
        kinds = ID_KINDS if name == "tokens" else READ_KINDS
        args[name], cls = draw_array(data, arena, name, values, kinds, corrupt, low=0, high=V)
        arena.keep(args[name])
        classes.append(cls)
    V_arg, cls_v = draw_scalar(data, "V", [V, np.int64(V)], [V + 1, V - 1] + BAD_INTEGERS, corrupt)
    act_arg, cls_a = draw_scalar(data, "activation", [activation], BAD_ACTIVATIONS, corrupt)

    accepted, result = call(kernel.step, outcome(classes + [cls_v, cls_a]), args["params"], args["h"],
                            args["tokens"], V=V_arg, activation=act_arg)
    arena.check()
    if accepted:
        r_h, r_logprobs = reference.step(clean["params"], clean["h"], clean["tokens"], V=V,
                                         activation=activation)
        assert_close(result[0], r_h)
        assert_close(result[1], r_logprobs)


OPTIMIZER_SCALARS = {   # name: (valid values, invalid values)
    "lr": ([0.1, np.float32(0.1), 0], [-0.1] + BAD_REALS),
    "step": ([1, 3, np.int64(2)], BAD_INTEGERS),
    "beta1": ([0.9, 0.0], [1.0, -0.1, 2] + BAD_REALS),
    "beta2": ([0.999], [1.0, -0.5] + BAD_REALS),
    "eps": ([1e-8, 1e-3], [0.0, -1e-8] + BAD_REALS),
    "max_norm": ([0.5, 0.0, -1.0, math.inf], [math.nan, "1", None, True, [1.0], 1j]),
    "shrink": ([1.0, 0.99, 0], [1.01, -0.1] + BAD_REALS),
    "fraction": ([0.0, 0.001, 1], [1.5, -0.1] + BAD_REALS),
}


@HOSTILE
@given(st.data())
def test_optimizers_hostile(data):
    """sgd_update, adam_update (with the weight decay and the average of their single pass)
    and clip_grad_norm with hostile buffers (read-only, bytes-backed, strided, wrong dtype
    or length, aliasing one another) and scalars: KernelError with every buffer untouched,
    or the reference's update."""
    n = data.draw(st.integers(1, 40), label="n")
    rng = np.random.default_rng(data.draw(st.integers(0, 999), label="seed"))
    clean = {"params": rng.standard_normal(n).astype(np.float32),
             "grads": rng.standard_normal(n).astype(np.float32),
             "m": (rng.standard_normal(n) * 0.1).astype(np.float32),
             "v": rng.random(n).astype(np.float32),
             "average": rng.standard_normal(n).astype(np.float32)}
    op = data.draw(st.sampled_from(["sgd", "adam", "clip"]), label="op")
    arrays = {"sgd": ["params", "grads", "average"], "adam": ["params", "grads", "m", "v", "average"],
              "clip": ["grads"]}[op]
    written = {"sgd": ["params", "average"], "adam": ["params", "m", "v", "average"], "clip": ["grads"]}[op]
    scalars = {"sgd": ["lr", "shrink", "fraction"],
               "adam": ["step", "lr", "beta1", "beta2", "eps", "shrink", "fraction"], "clip": ["max_norm"]}[op]
    corrupt = data.draw(st.sets(st.sampled_from(arrays + scalars), min_size=1, max_size=2), label="corrupt")
    # clip's grads alone sets the length: another length is another valid call, not a hostile one
    kinds = {k: c for k, c in WRITE_KINDS.items() if op != "clip" or k not in ("longer", "shorter", "wider")}
    arena = Arena()
    args, classes = {}, []
    for name in sorted(arrays, key=lambda a: a in written):    # read arrays first: aliases
        if name in written:
            made = [args[a] for a in args if isinstance(args[a], np.ndarray)]
            args[name], cls = draw_output(data, arena, name, clean[name], corrupt,   # no average: none
                                          alias=made[-1] if made else None, none_is_valid=name == "average",
                                          kinds=kinds)
        else:
            args[name], cls = draw_array(data, arena, name, clean[name], READ_KINDS, corrupt)
            arena.keep(args[name])
        classes.append(cls)
    for name in scalars:
        good, bad = OPTIMIZER_SCALARS[name]
        args[name], cls = draw_scalar(data, name, good, bad, corrupt)
        classes.append(cls)
    before = [(args[a], args[a].copy()) for a in written if isinstance(args[a], np.ndarray)]

    function = {"sgd": kernel.sgd_update, "adam": kernel.adam_update, "clip": kernel.clip_grad_norm}[op]
    accepted, result = call(function, outcome(classes), **args)
    arena.check()
    if not accepted:
        for array, snapshot in before:
            assert array.tobytes() == snapshot.tobytes(), "a refused call wrote into a buffer"
        return
    expected = {name: None if args[name] is None else clean[name].copy() for name in arrays}
    r_function = {"sgd": reference.sgd_update, "adam": reference.adam_update,
                  "clip": reference.clip_grad_norm}[op]
    r_result = r_function(**expected, **{name: args[name] for name in scalars})
    for name in written:
        if args[name] is not None:
            assert_close(args[name], expected[name])
    if op == "clip":
        assert_close(result, r_result)


@HOSTILE
@given(st.data())
def test_sizes_and_threads_hostile(data):
    """num_params and set_num_threads with hostile integers: KernelError (the thread count
    unchanged) or the right value; never cffi's OverflowError or TypeError."""
    hostile = {"V", "H", "threads"}
    V, cls_v = draw_scalar(data, "V", [7, np.int64(7), 2**20], BAD_INTEGERS + [2**30 + 1], hostile)
    H, cls_h = draw_scalar(data, "H", [3, np.int32(3)], BAD_INTEGERS + [2**21], hostile)
    accepted, n = call(kernel.num_params, outcome([cls_v, cls_h]), V, H)
    if accepted:
        assert n == layout.layout_size(int(V), int(H))
    old = kernel.get_num_threads()
    threads, cls = draw_scalar(data, "threads", [1, 2, np.int64(3)], BAD_INTEGERS, hostile)
    try:
        accepted, _ = call(kernel.set_num_threads, cls, threads)
        assert kernel.get_num_threads() == (int(threads) if accepted else old)
    finally:
        kernel.set_num_threads(old)


# ----------------------------------------------------------------------------------
# the findings of the hostile run, one by one
# ----------------------------------------------------------------------------------

T, B, H, V = 4, 3, 5, 7


@pytest.fixture
def batch():
    return clean_batch(1, T, B, H, V, masks=0)


def test_read_only_memmap_in_reused_cache_is_not_written(batch, tmp_path):
    """A cache whose hs is a read-only memmap (np.load mmap_mode="r") used to segfault
    when reused; now forward allocates a fresh hs and the file is untouched."""
    loss, _, hs, cache = kernel.forward(**batch, V=V)
    np.save(tmp_path / "hs.npy", np.full_like(hs, 9.0))
    mapped = np.load(tmp_path / "hs.npy", mmap_mode="r")
    again = kernel.forward(**batch, V=V, reuse=dataclasses.replace(cache, hs=mapped))
    assert again[2] is not mapped and np.array_equal(again[2], hs) and again[0] == loss
    assert (np.load(tmp_path / "hs.npy") == 9.0).all()


def test_bytes_backed_buffer_in_reused_cache_is_not_modified(batch):
    """A bytes-backed array in a reused cache used to be written through (bytes are
    immutable); now it is left alone and the result is unchanged."""
    loss, _, hs, cache = kernel.forward(**batch, V=V)
    frozen = bytes(hs.nbytes)
    backed = np.frombuffer(frozen, np.float32).reshape(hs.shape)
    again = kernel.forward(**batch, V=V, reuse=dataclasses.replace(cache, hs=backed))
    assert frozen == bytes(hs.nbytes) and not backed.any()
    assert np.array_equal(again[2], hs) and again[0] == loss


def test_reuse_keeps_owned_buffers_and_skips_overlapping_ones(batch):
    """A real cache's buffers are reused (no new allocation per step); one that overlaps an
    input (h0 a view of the reused hs) is replaced, so h0 is read intact."""
    _, _, hs, cache = kernel.forward(**batch, V=V)
    again = kernel.forward(**batch, V=V, reuse=cache)
    assert again[2] is cache.hs and again[3].work is cache.work and again[3].dlogits is cache.dlogits
    follow_on = {**batch, "h0": cache.hs[-1]}
    expected = kernel.forward(**{**batch, "h0": cache.hs[-1].copy()}, V=V)
    result = kernel.forward(**follow_on, V=V, reuse=cache)
    assert result[2] is not cache.hs
    np.testing.assert_array_equal(result[2], expected[2])


def test_uint8_work_in_cache_is_not_written(batch):
    """A uint8 work buffer of the right length made backward write 431 bytes past it; now
    backward uses a fresh float32 buffer and the gradients are right."""
    cache = kernel.forward(**batch, V=V)[3]
    expected = np.zeros_like(batch["params"])
    kernel.backward(expected, cache)
    arena = Arena()
    work = arena.make(np.zeros(cache.work.size, np.uint8), "ok")
    grads = np.zeros_like(batch["params"])
    kernel.backward(grads, dataclasses.replace(cache, work=work))
    arena.check()
    assert not work.any()
    np.testing.assert_array_equal(grads, expected)


def test_swapped_params_in_cache_is_refused(batch):
    """A cache whose params belong to another model (another size) used to be read out of
    bounds; now backward names the field, its shape and the expected one."""
    cache = kernel.forward(**batch, V=V)[3]
    other = np.zeros(layout.layout_size(V, H + 1), np.float32)
    with pytest.raises(KernelError, match=r"^cache\.params has shape \(133,\), expected \(107,\)$"):
        kernel.backward(np.zeros_like(batch["params"]), dataclasses.replace(cache, params=other))


@pytest.mark.parametrize("field, value, message", [
    ("work", None, None),
    ("dlogits", np.zeros((T, B, V), np.float64), r"cache\.dlogits must have dtype float32, got float64"),
    ("hs", np.zeros((T, B, H + 1), np.float32), r"cache\.h0 has shape \(3, 5\), expected \(3, 6\)"),
    ("V", V + 1, r"cache\.dlogits has shape \(4, 3, 7\), expected \(4, 3, 8\)"),
    ("activation", "relu", r"unknown activation 'relu'"),
    ("inputs", np.full((T, B), V, np.int32), r"input token id out of range \[0, V\): cache\.inputs\[0, 0\] = 7, allowed \[0, 6\]"),
    ("resets", np.zeros((T, B), np.int32)[:, :1], r"cache\.resets has shape \(4, 1\), expected \(4, 3\)"),
    ("h0", np.zeros((H, B), np.float32).T, r"cache\.h0 must be C-contiguous"),
])
def test_forged_cache_fields(batch, field, value, message):
    """Each forged field of a cache is refused with a one-line message naming it, or (work)
    replaced by a fresh buffer."""
    cache = dataclasses.replace(kernel.forward(**batch, V=V)[3], **{field: value})
    grads = np.zeros_like(batch["params"])
    if message is None:
        kernel.backward(grads, cache)
        assert grads.any()
    else:
        with pytest.raises(KernelError, match=f"^{message}"):
            kernel.backward(grads, cache)
        assert not grads.any()


def test_bad_id_message_names_the_position(batch):
    """The kernel finds a bad id; the message adds where it is and the allowed range."""
    targets = batch["targets"].copy()
    targets[2, 1] = -2
    with pytest.raises(KernelError, match=r"^target token id out of range \[-1, V\): "
                                          r"targets\[2, 1\] = -2, allowed \[-1, 6\]$"):
        kernel.forward(**{**batch, "targets": targets}, V=V)


@pytest.mark.parametrize("call_it, message", [
    (lambda: kernel.set_num_threads(2**31), r"threads = 2147483648 is out of range \[1, 2147483647\]"),
    (lambda: kernel.set_num_threads("2"), r"threads must be an integer, got '2'"),
    (lambda: kernel.num_params(2**31, 4), r"V = 2147483648 is out of range \[1, 1073741824\]"),
    (lambda: kernel.num_params(1, 2**21), r"invalid sizes V=1, H=2097152: V\*H and H\*H must be at most 2\^40"),
    (lambda: kernel.adam_update(*np.zeros((4, 3), np.float32), step=2**63, lr=0.1),
     r"step = 9223372036854775808 is out of range \[1, 9223372036854775807\]"),
    (lambda: kernel.sgd_update(np.zeros(3, np.float32), np.zeros(3, np.float32), 10**400),
     r"lr = 10{400} is out of range \[0, 3.40282e\+38\]"),
    (lambda: kernel.clip_grad_norm(np.zeros(3, np.float32), float("nan")), r"max_norm = nan is out of range"),
])
def test_scalars_out_of_range(call_it, message):
    """Scalars that do not fit the C types are KernelErrors naming the value and the range
    (they used to be cffi's OverflowError or TypeError)."""
    with pytest.raises(KernelError, match=f"^{message}"):
        call_it()
