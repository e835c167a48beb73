"""The only module that touches the C kernel's cffi `ffi` / `lib` (and the one that hands a
model's C view to rnnkit._ngram_py, the CPython entry points of the hottest n-gram calls).

Every array reaches C through `_pointer` (dtype, C order, alignment, shape consistent
with T, B, H, V, writability where C writes) and every scalar through `_integer` or
`_real` (type and range), so no argument can crash the kernel, make it write outside a
buffer or raise a bare cffi error: each mistake is a KernelError naming the argument.
A non-zero status becomes a KernelError with the kernel's own message (NotAProbability
for an n-gram score that is no log-probability); id ranges are checked by the kernel
itself, and only on failure does Python find the bad position.
Nothing is copied silently: callers prepare arrays once with
np.ascontiguousarray(x, np.float32).

reference.py has the same functions with the same signatures in plain NumPy (for the
n-gram queries at the end, NgramModel._numpy_token_scores states the rule they compute).

Threading: kernel calls release the GIL. A parameter buffer must not be mutated from
another thread while a call that reads it runs.
"""

from __future__ import annotations

import math
import numbers
import os
import threading

import numpy as np

import scipy_openblas32  # noqa: F401  (loads libscipy_openblas before the kernel module)

from .errors import KernelError
from .layout import (MAX_TABLE, ClassForwardCache, ForwardCache, next_history,  # noqa: F401  (same API
                     param_shapes, param_views)                                  # as reference)

try:
    from . import _ngram_py
    from ._rnn_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - a checkout not built in place, or a broken install
    # Python (`python -m ...`, `python -c`) puts the current directory first on sys.path, so
    # from a checkout root this is the source tree even when an installed rnnkit exists.
    raise ImportError(
        f"rnnkit's C kernel is not built in {os.path.dirname(__file__)} ({exc}): in a source "
        "checkout, build it in place with `pip install -e .` (or run from outside the checkout "
        "to use the installed rnnkit); otherwise reinstall with `pip install .`"
    ) from None

ABI_VERSION = 9
if lib.rnn_abi_version() != ABI_VERSION or _ngram_py.ABI_VERSION != ABI_VERSION:  # pragma: no cover - stale build
    raise ImportError(
        f"rnnkit's C kernel has ABI {lib.rnn_abi_version()} (rnnkit._ngram_py {_ngram_py.ABI_VERSION}), this "
        f"Python code expects {ABI_VERSION}: rebuild with `pip install -e .` in a checkout, `pip install .` otherwise"
    )

ACTIVATIONS = {"tanh": lib.RNN_ACT_TANH, "logistic": lib.RNN_ACT_LOGISTIC,
               "identity": lib.RNN_ACT_IDENTITY}

FLOAT32_MAX = float(np.finfo(np.float32).max)
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
SIZE_LIMITS = "T*B must be below 2^31 and V*H, H*H and T*B*H at most 2^40"
NGRAM_SPLITS = {"words": lib.NGRAM_SPLIT_WORDS, "chars": lib.NGRAM_SPLIT_CHARS, "none": lib.NGRAM_SPLIT_NONE}
NGRAM_PRECISIONS = {"float64": lib.NGRAM_FLOAT64, "float32": lib.NGRAM_FLOAT32}
NGRAM_STATE_LENGTHS = lib.NGRAM_STATE_LENGTHS


class NotAProbability(KernelError):
    """A score that is NaN or above the slack: the model's numbers are broken. `value`
    is the score, for lm.checked to name."""

    def __init__(self, value: float):
        super().__init__(f"log10 probability {value!r} is NaN or above 0")
        self.value = value


__all__ = [
    "ACTIVATIONS", "ForwardCache", "num_params", "param_shapes", "param_views",
    "set_num_threads", "get_num_threads", "forward", "backward", "step",
    "ClassForwardCache", "next_history", "class_forward", "class_backward", "class_step",
    "class_direct_gradient", "direct_entries",
    "sgd_update", "sparse_sgd_update", "adam_update", "average_catch_up", "clip_grad_norm",
]


# ----------------------------------------------------------------------------------
# argument checking: everything that reaches C passes through here
# ----------------------------------------------------------------------------------

def _cffi(function, *args, **kwargs):
    """Calls a cffi function or ffi.from_buffer. The checks below leave cffi nothing to
    reject; should one miss a case, cffi's OverflowError / TypeError / ValueError still
    reaches the caller as a KernelError, not as a traceback from inside the binding."""
    try:
        return function(*args, **kwargs)
    except (OverflowError, TypeError, ValueError, BufferError) as exc:
        raise KernelError(f"kernel argument rejected by cffi: {exc}") from None


def _run(function, *args, ids=None) -> None:
    """Calls a kernel function and raises for a non-zero status (see _check_status)."""
    _check_status(_cffi(function, *args), ids=ids)


def _check_status(status: int, *, ids=None, bad_value=None) -> None:
    """Nothing for status 0; NotAProbability(bad_value) for a score that is no log10
    probability (NGRAM_E_NOT_PROBABILITY); else a KernelError with the kernel's message.
    `ids` maps an id status (RNN_E_TOKEN, ...) to (name, array, low, high) so that the
    message names the first offending position; the kernel did the range scan already."""
    if status == 0:
        return
    if status == lib.NGRAM_E_NOT_PROBABILITY:
        raise NotAProbability(bad_value)
    message = ffi.string(lib.ngram_strerror(status)).decode()   # it names the rnn_ statuses too
    if ids and status in ids:
        message += _first_bad_id(*ids[status])
    raise KernelError(message)


# the id checks of a batch's arrays: name -> (kernel status, low, high; None: V)
_ID_RULES = {"inputs": ("RNN_E_TOKEN", 0, None), "tokens": ("RNN_E_TOKEN", 0, None),
             "targets": ("RNN_E_TARGET", -1, None), "resets": ("RNN_E_RESET", 0, 2),
             "history": ("RNN_E_HISTORY", -1, None)}


def _batch_ids(V: int, prefix: str = "", **arrays) -> dict:
    """_check_status's `ids` for the batch arrays given by name (inputs, tokens, targets,
    resets, history), each named `prefix` + its name in a message."""
    ids = {}
    for name, array in arrays.items():
        status, low, high = _ID_RULES[name]
        ids[getattr(lib, status)] = (prefix + name, array, low, V if high is None else high)
    return ids


def _first_bad_id(name: str, ids: np.ndarray, low: int, high: int) -> str:
    bad = np.flatnonzero((ids < low) | (ids >= high))
    if bad.size == 0:       # changed by another thread since the kernel looked
        return ""
    index = ", ".join(str(int(i)) for i in np.unravel_index(bad[0], ids.shape))
    return f": {name}[{index}] = {ids.flat[bad[0]]}, allowed [{low}, {high - 1}]"


def _integer(name: str, value, low: int, high: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise KernelError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise KernelError(f"{name} = {value} is out of range [{low}, {high}]")
    return int(value)


def _dim(name: str, value) -> int:
    """T, B, H or V: the kernel's `int` sizes, at most RNN_MAX_DIM (2^30) each."""
    return _integer(name, value, 1, lib.RNN_MAX_DIM)


def _real(name: str, value, low: float, high: float, *, open_high: bool = False,
          open_low: bool = False) -> float:
    """A number for a C float, within [low, high] (or open ends); NaN is never inside."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise KernelError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:   # an int beyond the double range
        number = math.inf if value > 0 else -math.inf
    above = low < number if open_low else low <= number
    below = number < high if open_high else number <= high
    if not (above and below):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise KernelError(f"{name} = {value} is out of range {interval}")
    return number


def _flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise KernelError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _activation_code(activation) -> int:
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise KernelError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


def _described(array) -> str:
    return f"shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__


def _dims(name: str, array, labels: tuple) -> tuple:
    """The sizes of array's axes, named by labels such as ("T", "B"), each within the
    kernel's limits; the array itself is checked later, by _pointer."""
    if not isinstance(array, np.ndarray) or array.ndim != len(labels):
        raise KernelError(f"{name} must be a ({', '.join(labels)}) array, got {_described(array)}")
    return tuple(_dim(f"{label} ({name}.shape[{axis}])", size)
                 for axis, (label, size) in enumerate(zip(labels, array.shape)))


def _flat_shape(name: str, array) -> tuple:
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise KernelError(f"{name} must be a flat (P,) float32 array, got {_described(array)}")
    return array.shape


_C_TYPES = {np.dtype(np.float32): "float[]", np.dtype(np.int32): "int32_t[]",
            np.dtype(np.float64): "double[]", np.dtype(np.int64): "int64_t[]", np.dtype(np.uint8): "uint8_t[]"}


def _pointer(name: str, array, dtype, shape: tuple, *, writable: bool = False):
    """The C pointer to `array`, once it is exactly what the kernel reads (or writes):
    the only way an array reaches C. Alignment matters because the compiler may use
    aligned vector loads on float pointers."""
    if not isinstance(array, np.ndarray):
        raise KernelError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise KernelError(f"{name} must have dtype {np.dtype(dtype).name}, got {array.dtype}")
    if array.shape != shape:
        raise KernelError(f"{name} has shape {array.shape}, expected {shape}")
    if not array.flags.c_contiguous:
        raise KernelError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if not array.flags.aligned:
        raise KernelError(f"{name} is not aligned to its dtype (use np.ascontiguousarray on a copy)")
    if writable and not array.flags.writeable:
        raise KernelError(f"{name} is read-only but is written by the kernel")
    return _cffi(ffi.from_buffer, _C_TYPES[np.dtype(dtype)], array, require_writable=writable)


def _optional_pointer(name: str, array, shape: tuple):
    return ffi.NULL if array is None else _pointer(name, array, np.float32, shape)


def _new(name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
    try:
        return np.zeros(shape, dtype=dtype)
    except (MemoryError, ValueError) as exc:
        raise KernelError(f"cannot allocate {name} of shape {shape}: {exc}") from None


def _reused(reuse, name: str, shape: tuple, taken: list) -> np.ndarray:
    """reuse.<name> if the kernel may write into it, else a fresh buffer; either way the
    result is added to `taken`. Only an array this process allocated qualifies (owned,
    writable, C-contiguous float32 of this shape) that shares no memory with anything in
    `taken` (the call's inputs and the buffers already chosen): a view, a read-only
    memmap or a bytes-backed array in a cache must never be written through."""
    old = getattr(reuse, name, None)
    if (isinstance(old, np.ndarray) and old.flags.owndata and old.flags.writeable
            and old.flags.c_contiguous and old.flags.aligned and old.dtype == np.float32
            and old.shape == shape and not any(np.may_share_memory(old, a) for a in taken)):
        buffer = old
    else:
        buffer = _new(name, shape)
    taken.append(buffer)
    return buffer


def _check_disjoint(written: list, read: list) -> None:
    """No buffer the kernel writes shares memory with another argument of the call
    ((name, array) pairs; None entries are absent optional arrays). Arrays are C-contiguous
    by now, so may_share_memory's bounds test is exact."""
    for i, (name, array) in enumerate(written):
        for other_name, other in written[i + 1:] + read:
            if other is not None and np.may_share_memory(array, other):
                raise KernelError(f"{name} must not share memory with {other_name}")


def _class_map(class_start, V: int) -> tuple:
    """(C, M, pointer) for a class map the kernel can use: a (C + 1,) int32 array rising
    strictly from 0 to V, C in [1, V]; M is the largest class. The kernel checks it again,
    but the sizes of dword and the workspace depend on M, so Python needs it first."""
    if not isinstance(class_start, np.ndarray) or class_start.ndim != 1:
        raise KernelError(f"class_start must be a (C + 1,) int32 array, got {_described(class_start)}")
    pointer = _pointer("class_start", class_start, np.int32, class_start.shape)
    C = class_start.size - 1
    if not 1 <= C <= V:
        raise KernelError(f"class_start has {class_start.size} entries: C = {C} classes is out of "
                          f"range [1, {V}] (V)")
    if class_start[0] != 0 or class_start[-1] != V:
        raise KernelError(f"class_start must run from 0 to V = {V}, got {class_start[0]} .. {class_start[-1]}")
    sizes = np.diff(class_start.astype(np.int64))
    if (sizes < 1).any():
        c = int(np.argmax(sizes < 1))
        raise KernelError(f"class_start must rise strictly (no empty class): class_start[{c + 1}] = "
                          f"{class_start[c + 1]} after class_start[{c}] = {class_start[c]}")
    return C, int(sizes.max()), pointer


def _direct(table, direct_order, *, writable: bool = False) -> tuple:
    """(order, D, pointer) of the direct connections: direct_order in [0, MAX_DIRECT_ORDER];
    with order 0 no table (None), else a flat float32 table of 1 to 2^40 entries."""
    order = _integer("direct_order", direct_order, 0, lib.RNN_MAX_DIRECT_ORDER)
    if order == 0:
        if table is not None:
            raise KernelError("a direct-connection table was given with direct_order = 0; pass "
                              "table=None, or the order of its features")
        return 0, 0, ffi.NULL
    if not isinstance(table, np.ndarray) or table.ndim != 1:
        raise KernelError(f"table must be a flat (D,) float32 array for direct_order = {order}, "
                          f"got {_described(table)}")
    D = _integer("table size D (table.shape[0])", table.size, 1, MAX_TABLE)
    return order, D, _pointer("table", table, np.float32, (D,), writable=writable)


def _direct_accum(accum, order: int, D: int):
    """AdaGrad's (D,) float32 sums of squares beside a table of D entries, or NULL for None
    (plain SGD). Its values are not scanned (a pass over the table per step): the trainer
    starts it at a positive constant and schema.py checks a loaded one (finite, >= 0)."""
    if accum is None:
        return ffi.NULL
    if order == 0:
        raise KernelError("direct_accum was given without direct connections (direct_order = 0); pass None")
    return _pointer("direct_accum", accum, np.float32, (D,), writable=True)


def _history(history, B: int):
    """The (B, K) int32 direct history, or NULL for None (nothing before step 0)."""
    return ffi.NULL if history is None else _pointer("history", history, np.int32,
                                                     (B, lib.RNN_DIRECT_HISTORY))


# n-gram arguments (csrc/ngram.c). A model's arrays are checked once, when ngram_tables
# (ngram_vocab_tables) makes its C view, and pinned in it; a query passes that view plus
# its own text or ids, checked per call. The one-sentence and one-word scorers, called
# for every sentence or word, test their arguments' types inline and raise the error
# that _bad_sentence_call / _bad_step_call make. Sizes are int64 throughout (rnnkit
# builds on 64-bit platforms only).

def _vector(name: str, array, dtype, length: int | None = None):
    """(pointer, length) of a flat array of `dtype`, `length` long when given."""
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise KernelError(f"{name} must be a flat {np.dtype(dtype).name} array, got {_described(array)}")
    length = array.size if length is None else length
    return _pointer(name, array, dtype, (length,)), length


def _count(name: str, value) -> int:
    return _integer(name, value, 0, lib.NGRAM_MAX_COUNT)


def _vocab_arrays(text, offsets):
    p_text, text_size = _vector("vocab text", text, np.uint8)
    p_offsets, entries = _vector("vocab offsets", offsets, np.int64)
    size = _count("vocabulary size", entries - 1)
    return p_text, text_size, p_offsets, size


def _per_order(name: str, arrays, order: int, first: int, last: int) -> list:
    """arrays[first..last] of a list indexed by order (entries outside are ignored)."""
    if not isinstance(arrays, (list, tuple)) or len(arrays) != order + 1:
        raise KernelError(f"{name} must be a list of {order + 1} entries (index = order), got {_described(arrays)}")
    return [(n, arrays[n]) for n in range(first, last + 1)]


def _choice(name: str, value, choices: dict) -> int:
    if not isinstance(value, str) or value not in choices:
        raise KernelError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return choices[value]


def _split_code(split) -> int:
    return _choice("split", split, NGRAM_SPLITS)


def _precision_code(precision) -> int:
    return _choice("precision", precision, NGRAM_PRECISIONS)


def _text(name: str, text) -> bytes:
    if not isinstance(text, bytes):
        raise KernelError(f"{name} must be bytes (UTF-8), got {type(text).__name__}")
    return text


def _model(tables) -> NgramTables:
    if not isinstance(tables, NgramTables):
        raise KernelError(f"tables must come from ngram_tables, got {type(tables).__name__}")
    return tables


def _vocab(vocab) -> NgramVocab:
    if not isinstance(vocab, NgramVocab):
        raise KernelError(f"vocab must come from ngram_vocab_tables, got {type(vocab).__name__}")
    return vocab


def _bad_sentence_call(text, bos, eos) -> KernelError:
    return KernelError(f"a sentence must be bytes and bos, eos True or False, got "
                       f"{type(text).__name__}, {bos!r}, {eos!r}")


def _bad_step_call(state, word) -> KernelError:
    if state.__class__ is int and word.__class__ is int:   # cffi refused them: beyond int64
        return KernelError(f"a state code and a word id must fit in int64, got {state}, {word}")
    return KernelError(f"a state code and a word id must be ints, got {state!r}, {word!r}")


# ----------------------------------------------------------------------------------
# sizes, views and threads
# ----------------------------------------------------------------------------------

def num_params(V: int, H: int, C: int = 0) -> int:
    """Length of the flat parameter buffer for vocabulary V, hidden size H and C classes
    (0: full softmax)."""
    V, H = _dim("V", V), _dim("H", H)
    C = _integer("C", C, 0, V)
    n = _cffi(lib.rnn_num_params, V, H, C)
    if n < 0:
        raise KernelError(f"invalid sizes V={V}, H={H}: V*H and H*H must be at most 2^40")
    return int(n)


def _workspace_size(T: int, B: int, H: int, V: int) -> int:
    size = _cffi(lib.rnn_workspace_size, T, B, H, V)
    if size < 0:
        raise KernelError(f"invalid sizes T={T}, B={B}, H={H}, V={V}: {SIZE_LIMITS}")
    return int(size)


def _class_workspace_size(T: int, B: int, H: int, V: int, C: int, M: int) -> int:
    size = _cffi(lib.rnn_class_workspace_size, T, B, H, V, C, M)
    if size < 0:
        raise KernelError(f"invalid sizes T={T}, B={B}, H={H}, V={V}: {SIZE_LIMITS}")
    return int(size)


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernel uses (its loops and its matrix products)."""
    _run(lib.rnn_set_num_threads, _integer("threads", n, 1, INT32_MAX))


def get_num_threads() -> int:
    return int(lib.rnn_get_num_threads())


# ----------------------------------------------------------------------------------
# forward / backward
# ----------------------------------------------------------------------------------

def forward(params, inputs, targets, resets, h0, *, V, activation="tanh",
            keep_for_backward=True, reuse=None, in_mask=None, out_mask=None):
    """Run the RNN over a (T, B) batch.

    Returns (loss, logprobs, hs, cache): the summed natural-log cross-entropy over
    positions whose target is not -1, the (T, B) target log-probabilities (0 where
    ignored), the (T, B, H) hidden states and a ForwardCache for backward. With
    keep_for_backward=False nothing V-sized is kept (scoring). `reuse` takes a
    previous cache whose buffers are reused when the kernel may write into them
    (see _reused), else fresh ones are allocated. in_mask and out_mask, (T, B, H)
    float32 of 0 or 1/(1-p), are dropout on the input rows and before the output layer.
    """
    T, B = _dims("inputs", inputs, ("T", "B"))
    _, H = _dims("h0", h0, ("B", "H"))
    V = _dim("V", V)
    act = _activation_code(activation)
    keep = _flag("keep_for_backward", keep_for_backward)
    if reuse is not None and not isinstance(reuse, ForwardCache):
        raise KernelError(f"reuse must be a ForwardCache from forward or None, got {type(reuse).__name__}")
    work_size = _workspace_size(T, B, H, V)
    p_in = _pointer("inputs", inputs, np.int32, (T, B))
    p_tg = _pointer("targets", targets, np.int32, (T, B))
    p_rs = _pointer("resets", resets, np.int32, (T, B))
    p_h0 = _pointer("h0", h0, np.float32, (B, H))
    p_params = _pointer("params", params, np.float32, (num_params(V, H),))
    p_in_mask = _optional_pointer("in_mask", in_mask, (T, B, H))
    p_out_mask = _optional_pointer("out_mask", out_mask, (T, B, H))

    taken = [a for a in (params, inputs, targets, resets, h0, in_mask, out_mask) if a is not None]
    hs = _reused(reuse, "hs", (T, B, H), taken)
    work = _reused(reuse, "work", (work_size,), taken)
    dlogits = _reused(reuse, "dlogits", (T, B, V), taken) if keep else None
    hd = _reused(reuse, "hd", (T, B, H), taken) if out_mask is not None else None
    logprobs, loss = _new("logprobs", (T, B)), _new("loss", (1,))

    _run(lib.rnn_forward, _pointer("loss", loss, np.float32, (1,), writable=True),
         _pointer("logprobs", logprobs, np.float32, (T, B), writable=True),
         _pointer("hs", hs, np.float32, (T, B, H), writable=True),
         ffi.NULL if hd is None else _pointer("hd", hd, np.float32, (T, B, H), writable=True),
         ffi.NULL if dlogits is None else _pointer("dlogits", dlogits, np.float32, (T, B, V), writable=True),
         _pointer("work", work, np.float32, (work_size,), writable=True), work_size,
         p_in, p_tg, p_rs, p_in_mask, p_out_mask, p_h0, p_params, act, T, B, H, V,
         ids=_batch_ids(V, inputs=inputs, targets=targets, resets=resets))
    cache = ForwardCache(inputs, resets, h0, params, hs, dlogits, activation, V, work,
                         hd, in_mask, out_mask)
    return float(loss[0]), logprobs, hs, cache


def backward(grads, cache: ForwardCache, *, loss_scale=1.0, dh0=None):
    """Backpropagate loss_scale * (summed loss) through the cached forward.

    Accumulates (+=) into `grads` (flat, same layout as params; the caller zeroes it)
    and into `dh0` when given (else a fresh zero array). Returns dh0, shape (B, H).
    The cache is an open dataclass, so every array in it is checked again here against
    the sizes that cache.hs and cache.V imply.
    """
    if not isinstance(cache, ForwardCache):
        raise KernelError(f"cache must be the ForwardCache returned by forward, got {type(cache).__name__}")
    if cache.dlogits is None:
        raise KernelError("forward was run with keep_for_backward=False; nothing to backpropagate")
    T, B, H = _dims("cache.hs", cache.hs, ("T", "B", "H"))
    V = _dim("cache.V", cache.V)
    act = _activation_code(cache.activation)
    scale = _real("loss_scale", loss_scale, -FLOAT32_MAX, FLOAT32_MAX)
    work_size = _workspace_size(T, B, H, V)
    P = num_params(V, H)
    p_dlogits = _pointer("cache.dlogits", cache.dlogits, np.float32, (T, B, V))
    p_hs = _pointer("cache.hs", cache.hs, np.float32, (T, B, H))
    p_in = _pointer("cache.inputs", cache.inputs, np.int32, (T, B))
    p_rs = _pointer("cache.resets", cache.resets, np.int32, (T, B))
    p_h0 = _pointer("cache.h0", cache.h0, np.float32, (B, H))
    p_params = _pointer("cache.params", cache.params, np.float32, (P,))
    p_in_mask = _optional_pointer("cache.in_mask", cache.in_mask, (T, B, H))
    p_out_mask = _optional_pointer("cache.out_mask", cache.out_mask, (T, B, H))
    # the kernel reads hd only with output dropout (else the output layer saw hs)
    hd = None if cache.out_mask is None else cache.hd
    p_hd = ffi.NULL if cache.out_mask is None else _pointer("cache.hd", hd, np.float32, (T, B, H))
    p_grads = _pointer("grads", grads, np.float32, (P,), writable=True)
    if dh0 is None:
        dh0 = _new("dh0", (B, H))
    p_dh0 = _pointer("dh0", dh0, np.float32, (B, H), writable=True)
    read = [("cache.params", cache.params), ("cache.dlogits", cache.dlogits), ("cache.hs", cache.hs),
            ("cache.hd", hd), ("cache.inputs", cache.inputs), ("cache.resets", cache.resets),
            ("cache.h0", cache.h0), ("cache.in_mask", cache.in_mask), ("cache.out_mask", cache.out_mask)]
    _check_disjoint([("grads", grads), ("dh0", dh0)], read)
    work = _reused(cache, "work", (work_size,), [grads, dh0] + [a for _, a in read if a is not None])

    _run(lib.rnn_backward, p_grads, p_dh0, _pointer("work", work, np.float32, (work_size,), writable=True),
         work_size, p_dlogits, p_hs, p_hd, p_in, p_rs, p_in_mask, p_out_mask, p_h0, p_params,
         scale, act, T, B, H, V,
         ids=_batch_ids(V, "cache.", inputs=cache.inputs, resets=cache.resets))
    return dh0


# ----------------------------------------------------------------------------------
# inference step
# ----------------------------------------------------------------------------------

def step(params, h, tokens, *, V, activation="tanh"):
    """One step for B rows: returns (h_new (B, H), logprobs (B, V)) in natural log."""
    B, H = _dims("h", h, ("B", "H"))
    V = _dim("V", V)
    act = _activation_code(activation)
    _workspace_size(1, B, H, V)   # the size limits for one step
    p_h = _pointer("h", h, np.float32, (B, H))
    p_tok = _pointer("tokens", tokens, np.int32, (B,))
    p_params = _pointer("params", params, np.float32, (num_params(V, H),))
    h_new, logprobs = _new("h_new", (B, H)), _new("logprobs", (B, V))
    _run(lib.rnn_step, _pointer("h_new", h_new, np.float32, (B, H), writable=True),
         _pointer("logprobs", logprobs, np.float32, (B, V), writable=True),
         p_tok, p_h, p_params, act, B, H, V, ids=_batch_ids(V, tokens=tokens))
    return h_new, logprobs


# ----------------------------------------------------------------------------------
# class-factored output and direct connections (RNNME)
# ----------------------------------------------------------------------------------

def class_forward(params, inputs, targets, resets, h0, *, V, class_start, table=None,
                  direct_order=0, history=None, activation="tanh", keep_for_backward=True,
                  reuse=None, in_mask=None, out_mask=None):
    """forward with the class-factored output P(c | h) P(w | c, h) and, with direct_order
    n > 0, the direct connections of `table` (rnn.h explains both).

    class_start: (C + 1,) int32, class c = words [class_start[c], class_start[c+1]).
    history: (B, DIRECT_HISTORY) int32 inputs before step 0 (-1 = none), or None; the
    next batch of the same rows passes next_history(history, inputs, resets).
    Returns (loss, logprobs, hs, cache) as forward does, with a ClassForwardCache.
    """
    T, B = _dims("inputs", inputs, ("T", "B"))
    _, H = _dims("h0", h0, ("B", "H"))
    V = _dim("V", V)
    C, M, p_classes = _class_map(class_start, V)
    order, D, p_table = _direct(table, direct_order)
    act = _activation_code(activation)
    keep = _flag("keep_for_backward", keep_for_backward)
    if reuse is not None and not isinstance(reuse, ClassForwardCache):
        raise KernelError(f"reuse must be a ClassForwardCache from class_forward or None, got {type(reuse).__name__}")
    work_size = _class_workspace_size(T, B, H, V, C, M)
    p_in = _pointer("inputs", inputs, np.int32, (T, B))
    p_tg = _pointer("targets", targets, np.int32, (T, B))
    p_rs = _pointer("resets", resets, np.int32, (T, B))
    p_hist = _history(history, B)
    p_h0 = _pointer("h0", h0, np.float32, (B, H))
    p_params = _pointer("params", params, np.float32, (num_params(V, H, C),))
    p_in_mask = _optional_pointer("in_mask", in_mask, (T, B, H))
    p_out_mask = _optional_pointer("out_mask", out_mask, (T, B, H))

    taken = [a for a in (params, inputs, targets, resets, h0, in_mask, out_mask, class_start,
                         table, history) if a is not None]
    hs = _reused(reuse, "hs", (T, B, H), taken)
    work = _reused(reuse, "work", (work_size,), taken)
    dclass = _reused(reuse, "dclass", (T, B, C), taken) if keep else None
    dword = _reused(reuse, "dword", (T * B, M), taken) if keep else None
    hd = _reused(reuse, "hd", (T, B, H), taken) if out_mask is not None else None
    logprobs, loss = _new("logprobs", (T, B)), _new("loss", (1,))

    _run(lib.rnn_class_forward, _pointer("loss", loss, np.float32, (1,), writable=True),
         _pointer("logprobs", logprobs, np.float32, (T, B), writable=True),
         _pointer("hs", hs, np.float32, (T, B, H), writable=True),
         ffi.NULL if hd is None else _pointer("hd", hd, np.float32, (T, B, H), writable=True),
         ffi.NULL if dclass is None else _pointer("dclass", dclass, np.float32, (T, B, C), writable=True),
         ffi.NULL if dword is None else _pointer("dword", dword, np.float32, (T * B, M), writable=True),
         _pointer("work", work, np.float32, (work_size,), writable=True), work_size,
         p_in, p_tg, p_rs, p_hist, p_in_mask, p_out_mask, p_h0, p_params, p_classes,
         p_table, D, order, act, T, B, H, V, C,
         ids=_batch_ids(V, inputs=inputs, targets=targets, resets=resets, history=history))
    cache = ClassForwardCache(inputs, targets, resets, h0, params, hs, dclass, dword, activation, V,
                              class_start, order, D, history, work, hd, in_mask, out_mask)
    return float(loss[0]), logprobs, hs, cache


def class_backward(grads, cache: ClassForwardCache, *, table=None, loss_scale=1.0,
                   direct_lr=0.0, direct_l2=0.0, dh0=None, direct_accum=None):
    """Backpropagate loss_scale * (summed loss) through a cached class_forward.

    Accumulates (+=) into `grads` (flat, the class layout) and into `dh0` (else a fresh
    zero array, returned). With direct connections, `table` (the one the forward read) is
    updated in place by sparse SGD with L2, rate direct_lr (0: untouched; rnn.h gives the
    rule), or by AdaGrad when `direct_accum` (the sums of squared gradients of the table's
    entries, (D,) float32, updated in place) is given. Every array of the cache is checked again against
    cache.hs, cache.V and cache.class_start.
    """
    if not isinstance(cache, ClassForwardCache):
        raise KernelError(f"cache must be the ClassForwardCache returned by class_forward, got {type(cache).__name__}")
    if cache.dclass is None or cache.dword is None:
        raise KernelError("class_forward was run with keep_for_backward=False; nothing to backpropagate")
    T, B, H = _dims("cache.hs", cache.hs, ("T", "B", "H"))
    V = _dim("cache.V", cache.V)
    C, M, p_classes = _class_map(cache.class_start, V)
    order, D, p_table = _direct(table, cache.direct_order, writable=True)
    if order and D != cache.table_size:
        raise KernelError(f"table has {D} entries but the forward read one of {cache.table_size}")
    act = _activation_code(cache.activation)
    scale = _real("loss_scale", loss_scale, -FLOAT32_MAX, FLOAT32_MAX)
    lr = _real("direct_lr", direct_lr, 0.0, FLOAT32_MAX)
    l2 = _real("direct_l2", direct_l2, 0.0, FLOAT32_MAX)
    work_size = _class_workspace_size(T, B, H, V, C, M)
    P = num_params(V, H, C)
    p_dclass = _pointer("cache.dclass", cache.dclass, np.float32, (T, B, C))
    p_dword = _pointer("cache.dword", cache.dword, np.float32, (T * B, M))
    p_hs = _pointer("cache.hs", cache.hs, np.float32, (T, B, H))
    p_in = _pointer("cache.inputs", cache.inputs, np.int32, (T, B))
    p_tg = _pointer("cache.targets", cache.targets, np.int32, (T, B))
    p_rs = _pointer("cache.resets", cache.resets, np.int32, (T, B))
    p_hist = _history(cache.history, B)
    p_h0 = _pointer("cache.h0", cache.h0, np.float32, (B, H))
    p_params = _pointer("cache.params", cache.params, np.float32, (P,))
    p_in_mask = _optional_pointer("cache.in_mask", cache.in_mask, (T, B, H))
    p_out_mask = _optional_pointer("cache.out_mask", cache.out_mask, (T, B, H))
    hd = None if cache.out_mask is None else cache.hd
    p_hd = ffi.NULL if cache.out_mask is None else _pointer("cache.hd", hd, np.float32, (T, B, H))
    p_grads = _pointer("grads", grads, np.float32, (P,), writable=True)
    p_accum = _direct_accum(direct_accum, order, D)
    if dh0 is None:
        dh0 = _new("dh0", (B, H))
    p_dh0 = _pointer("dh0", dh0, np.float32, (B, H), writable=True)
    read = [("cache.params", cache.params), ("cache.dclass", cache.dclass), ("cache.dword", cache.dword),
            ("cache.hs", cache.hs), ("cache.hd", hd), ("cache.inputs", cache.inputs),
            ("cache.targets", cache.targets), ("cache.resets", cache.resets),
            ("cache.history", cache.history), ("cache.h0", cache.h0), ("cache.in_mask", cache.in_mask),
            ("cache.out_mask", cache.out_mask), ("cache.class_start", cache.class_start)]
    written = [("grads", grads), ("dh0", dh0)] + ([("table", table)] if order else []) \
        + ([("direct_accum", direct_accum)] if direct_accum is not None else [])
    _check_disjoint(written, read)
    work = _reused(cache, "work", (work_size,), [a for _, a in written + read if a is not None])

    _run(lib.rnn_class_backward, p_grads, p_dh0, p_table, p_accum,
         _pointer("work", work, np.float32, (work_size,), writable=True), work_size,
         p_dclass, p_dword, p_hs, p_hd, p_in, p_tg, p_rs, p_hist, p_in_mask, p_out_mask, p_h0,
         p_params, p_classes, D, order, scale, lr, l2, act, T, B, H, V, C,
         ids=_batch_ids(V, "cache.", inputs=cache.inputs, targets=cache.targets, resets=cache.resets,
                        history=cache.history))
    return dh0


def class_direct_gradient(dtable, cache: ClassForwardCache, *, table, loss_scale=1.0, direct_l2=0.0):
    """The direct table's gradient of loss_scale * (summed loss) through a cached
    class_forward with direct connections, its L2 term included, accumulated (+=) into
    `dtable` (D,) float32: what class_backward's in-place update of `table` (the one the
    forward read) would apply, for data-parallel training to sum first (rnn.h gives the
    rule). Only the entries direct_entries lists change."""
    if not isinstance(cache, ClassForwardCache):
        raise KernelError(f"cache must be the ClassForwardCache returned by class_forward, got {type(cache).__name__}")
    if cache.dclass is None or cache.dword is None:
        raise KernelError("class_forward was run with keep_for_backward=False; nothing to backpropagate")
    if cache.direct_order == 0:
        raise KernelError("class_forward was run without direct connections (direct_order = 0); no table gradient")
    T, B, H = _dims("cache.hs", cache.hs, ("T", "B", "H"))
    V = _dim("cache.V", cache.V)
    C, M, p_classes = _class_map(cache.class_start, V)
    order, D, p_table = _direct(table, cache.direct_order)
    if D != cache.table_size:
        raise KernelError(f"table has {D} entries but the forward read one of {cache.table_size}")
    scale = _real("loss_scale", loss_scale, -FLOAT32_MAX, FLOAT32_MAX)
    l2 = _real("direct_l2", direct_l2, 0.0, FLOAT32_MAX)
    work_size = _class_workspace_size(T, B, H, V, C, M)
    p_dtable = _pointer("dtable", dtable, np.float32, (D,), writable=True)
    read = [("table", table), ("cache.dclass", cache.dclass), ("cache.dword", cache.dword),
            ("cache.inputs", cache.inputs), ("cache.targets", cache.targets), ("cache.resets", cache.resets),
            ("cache.history", cache.history), ("cache.class_start", cache.class_start)]
    _check_disjoint([("dtable", dtable)], read)
    work = _reused(cache, "work", (work_size,), [dtable] + [a for _, a in read if a is not None])
    _run(lib.rnn_class_direct_gradient, p_dtable,
         _pointer("work", work, np.float32, (work_size,), writable=True), work_size,
         _pointer("cache.dclass", cache.dclass, np.float32, (T, B, C)),
         _pointer("cache.dword", cache.dword, np.float32, (T * B, M)),
         _pointer("cache.inputs", cache.inputs, np.int32, (T, B)),
         _pointer("cache.targets", cache.targets, np.int32, (T, B)),
         _pointer("cache.resets", cache.resets, np.int32, (T, B)), _history(cache.history, B),
         p_classes, p_table, D, order, scale, l2, T, B, H, V, C,
         ids=_batch_ids(V, "cache.", inputs=cache.inputs, targets=cache.targets, resets=cache.resets,
                        history=cache.history))


def direct_entries(inputs, targets, resets, *, V, class_start, direct_order, table_size, history=None):
    """The distinct entries of a `table_size`-entry direct table that a (T, B) batch uses
    (the ones class_backward updates), int64, ascending. They follow from the ids alone:
    processes holding the same batch get the same list."""
    T, B = _dims("inputs", inputs, ("T", "B"))
    V = _dim("V", V)
    C, _, p_classes = _class_map(class_start, V)
    order = _integer("direct_order", direct_order, 1, lib.RNN_MAX_DIRECT_ORDER)
    D = _integer("table_size", table_size, 1, MAX_TABLE)
    p_in = _pointer("inputs", inputs, np.int32, (T, B))
    p_tg = _pointer("targets", targets, np.int32, (T, B))
    p_rs = _pointer("resets", resets, np.int32, (T, B))
    # rnn.h's bound: each target's features use C + |its class| entries (an id out of range,
    # which the kernel refuses, counts as some class here)
    used = targets[targets >= 0]
    classes = np.clip(np.searchsorted(class_start, used, side="right") - 1, 0, C - 1)
    capacity = min(D, order * int((C + class_start[classes + 1] - class_start[classes]).sum()))
    entries, count = _new("entries", (max(capacity, 1),), np.int64), _new("count", (1,), np.int64)
    seen = _new("seen", ((D + 7) // 8,), np.uint8)
    _run(lib.rnn_direct_entries, _pointer("entries", entries, np.int64, entries.shape, writable=True),
         _pointer("count", count, np.int64, (1,), writable=True), capacity,
         _pointer("seen", seen, np.uint8, seen.shape, writable=True), p_in, p_tg, p_rs, _history(history, B),
         p_classes, D, order, T, B, V, C,
         ids=_batch_ids(V, inputs=inputs, targets=targets, resets=resets, history=history))
    return entries[:int(count[0])]


def class_step(params, h, tokens, *, V, class_start, table=None, direct_order=0, history=None,
               activation="tanh"):
    """One step for B rows with the class-factored output: returns (h_new (B, H),
    logprobs (B, V)), the FULL next-token distribution in natural log (it sums to 1).
    history: (B, DIRECT_HISTORY) int32 inputs before `tokens`, or None. To score given
    targets only, at (C + |c|) H per row, run class_forward with T = 1 and h0 = h."""
    B, H = _dims("h", h, ("B", "H"))
    V = _dim("V", V)
    C, _, p_classes = _class_map(class_start, V)
    order, D, p_table = _direct(table, direct_order)
    act = _activation_code(activation)
    _workspace_size(1, B, H, V)   # the size limits for one step
    p_h = _pointer("h", h, np.float32, (B, H))
    p_tok = _pointer("tokens", tokens, np.int32, (B,))
    p_hist = _history(history, B)
    p_params = _pointer("params", params, np.float32, (num_params(V, H, C),))
    h_new, class_logprobs, logprobs = _new("h_new", (B, H)), _new("class_logprobs", (B, C)), _new("logprobs", (B, V))
    _run(lib.rnn_class_step, _pointer("h_new", h_new, np.float32, (B, H), writable=True),
         _pointer("class_logprobs", class_logprobs, np.float32, (B, C), writable=True),
         _pointer("logprobs", logprobs, np.float32, (B, V), writable=True),
         p_tok, p_hist, p_h, p_params, p_classes, p_table, D, order, act, B, H, V, C,
         ids=_batch_ids(V, tokens=tokens, history=history))
    return h_new, logprobs


# ----------------------------------------------------------------------------------
# optimizers
# ----------------------------------------------------------------------------------

def sgd_update(params, grads, lr, *, shrink=1.0, average=None, fraction=0.0):
    """params -= lr * grads, in place; then the weight decay and the average (_after_step)."""
    shape = _flat_shape("params", params)
    lr = _real("lr", lr, 0.0, FLOAT32_MAX)
    p_params = _pointer("params", params, np.float32, shape, writable=True)
    p_grads = _pointer("grads", grads, np.float32, shape)
    p_average, shrink, fraction = _after_step(params, average, shrink, fraction, [("params", params)],
                                              [("grads", grads)])
    _run(lib.rnn_sgd_update, p_params, p_average, p_grads, lr, shrink, fraction, params.size)


def _after_step(params, average, shrink, fraction, written: list, read: list) -> tuple:
    """(average's pointer or NULL, shrink, fraction) of an optimizer step that then, in the
    same pass, multiplies params by `shrink` (decoupled weight decay; 1: none) and moves
    `average` (None: none), an array like params, by `fraction` of the way to them (rnn.h);
    checks that no buffer the step writes (`written`, `average`) shares memory with
    another or with the ones it reads."""
    shrink = _real("shrink", shrink, 0.0, 1.0)
    fraction = _real("fraction", fraction, 0.0, 1.0)
    p_average = ffi.NULL
    if average is not None:
        p_average = _pointer("average", average, np.float32, params.shape, writable=True)
        written = written + [("average", average)]
    _check_disjoint(written, read)
    return p_average, shrink, fraction


def sparse_sgd_update(params, index, grads, lr):
    """params[index] -= lr * grads, in place: the step of a sparse gradient, `grads` (n,)
    float32 for the entries `index` (n,) int64, which rise strictly within params."""
    shape = _flat_shape("params", params)
    (n,) = _flat_shape("grads", grads)
    lr = _real("lr", lr, 0.0, FLOAT32_MAX)
    p_params = _pointer("params", params, np.float32, shape, writable=True)
    p_index = _pointer("index", index, np.int64, (n,))
    p_grads = _pointer("grads", grads, np.float32, (n,))
    _check_disjoint([("params", params)], [("index", index), ("grads", grads)])
    _run(lib.rnn_sparse_sgd_update, p_params, params.size, p_index, p_grads, lr, n,
         ids={lib.RNN_E_INDEX: ("index", index, 0, params.size)})


def adam_update(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, *, shrink=1.0,
                average=None, fraction=0.0):
    """One Adam step (bias-corrected; step counts from 1), updating params, m, v in place;
    then the weight decay and the average (_after_step)."""
    shape = _flat_shape("params", params)
    step = _integer("step", step, 1, INT64_MAX)
    lr = _real("lr", lr, 0.0, FLOAT32_MAX)
    beta1 = _real("beta1", beta1, 0.0, 1.0, open_high=True)
    beta2 = _real("beta2", beta2, 0.0, 1.0, open_high=True)
    eps = _real("eps", eps, 0.0, FLOAT32_MAX, open_low=True)
    p_params = _pointer("params", params, np.float32, shape, writable=True)
    p_grads = _pointer("grads", grads, np.float32, shape)
    p_m = _pointer("m", m, np.float32, shape, writable=True)
    p_v = _pointer("v", v, np.float32, shape, writable=True)
    p_average, shrink, fraction = _after_step(params, average, shrink, fraction,
                                              [("params", params), ("m", m), ("v", v)], [("grads", grads)])
    _run(lib.rnn_adam_update, p_params, p_m, p_v, p_average, p_grads, lr, beta1, beta2, eps, step,
         shrink, fraction, params.size)


def average_catch_up(average, raw, synced, log_decay, step, index=None):
    """Bring a lazily kept moving average up to date with step `step` (rnn.h gives the rule):
    the entries `index` (int64, rising strictly), or all when None, of `average` (float32),
    each up to date with step synced[i] (int32; only read: the caller records the new step)
    and moving towards `raw`, which has not changed since; log_decay (float64, longer than
    step) holds the running sums of the log decays."""
    shape = _flat_shape("average", average)
    p_log_decay, steps = _vector("log_decay", log_decay, np.float64)
    step = _integer("step", step, 0, steps - 1)
    p_average = _pointer("average", average, np.float32, shape, writable=True)
    p_raw = _pointer("raw", raw, np.float32, shape)
    p_synced = _pointer("synced", synced, np.int32, shape)
    p_index, n = (ffi.NULL, 0) if index is None else _vector("index", index, np.int64)
    _check_disjoint([("average", average)],
                    [("raw", raw), ("synced", synced), ("log_decay", log_decay), ("index", index)])
    status = _cffi(lib.rnn_average_catch_up, p_average, p_raw, p_synced, average.size, p_index, n,
                   p_log_decay, steps, step)
    if status == lib.RNN_E_ARGUMENT:   # the step is in range (checked above): a synced step is not
        raise KernelError(f"synced must hold steps in [0, {step}]{_first_bad_id('synced', synced, 0, step + 1)}")
    _check_status(status, ids={lib.RNN_E_INDEX: ("index", index, 0, average.size)})


def clip_grad_norm(grads, max_norm):
    """Scale grads in place so their global L2 norm is at most max_norm (<= 0: measure
    only). Returns the norm before clipping; raises KernelError when it is not finite."""
    shape = _flat_shape("grads", grads)
    max_norm = _real("max_norm", max_norm, -math.inf, math.inf)
    norm = _new("norm", (1,))
    _run(lib.rnn_clip_grad_norm, _pointer("norm", norm, np.float32, (1,), writable=True),
         _pointer("grads", grads, np.float32, shape, writable=True), max_norm, grads.size)
    return float(norm[0])


# ----------------------------------------------------------------------------------
# n-gram queries (csrc/ngram.c): hash tables, text to ids, scoring, KenLM's states
# ----------------------------------------------------------------------------------

class NgramVocab:
    """The C view of a vocabulary (ngram_vocab): made only by ngram_vocab_tables."""

    __slots__ = ("struct", "size", "_pinned")


class NgramTables:
    """The C view of an n-gram model (ngram_model): made only by ngram_tables."""

    __slots__ = ("struct", "order", "vocab", "_pinned")


def ngram_table_size(count: int) -> int:
    """Slots of the hash table of `count` keys or units."""
    return int(lib.ngram_table_size(_count("count", count)))


def ngram_hash_tables(keys, V: int) -> list:
    """The hash tables (int64 entries, see csrc/ngram.c) of orders 2.. of an n-gram model
    of V words, from its keys (a list indexed by order, keys[n] for n >= 2)."""
    V = _integer("V", V, 1, lib.NGRAM_MAX_COUNT)
    if not isinstance(keys, (list, tuple)) or len(keys) < 2:
        raise KernelError(f"keys must be a list indexed by order, got {_described(keys)}")
    tables, lower, lower_count = [None, None], None, V
    for n in range(2, len(keys)):
        p_keys, count = _vector(f"keys[{n}]", keys[n], np.int64)
        size = ngram_table_size(count)
        table, hashes = _new("table", (size,), np.int64), _new("hashes", (count,), np.int64)
        _run(lib.ngram_table_build, _pointer("table", table, np.int64, (size,), writable=True),
             size, p_keys, count, V,
             ffi.NULL if lower is None else _pointer("hashes", lower, np.int64, (lower_count,)),
             lower_count, _pointer("hashes", hashes, np.int64, (count,), writable=True))
        tables.append(table)
        lower, lower_count = hashes, count
    return tables


def ngram_table_misses(keys, tables, V: int, n: int, stride: int) -> int:
    """The first of n-grams 0, stride, 2 stride, ... of order n that tables[n] does not
    find at its own index, or -1 when it finds them all (keys and tables: lists indexed
    by order, of orders 2..n at least)."""
    V, n = _integer("V", V, 1, lib.NGRAM_MAX_COUNT), _integer("n", n, 2, lib.NGRAM_MAX_ORDER)
    struct, pinned = ffi.new("ngram_model *"), []
    struct.order, struct.vocab.size, struct.count[1] = n, V, V
    for order, array in _per_order("keys", list(keys[:n + 1]), n, 2, n):
        pointer, count = _vector(f"keys[{order}]", array, np.int64)
        struct.keys[order], struct.count[order] = pointer, _count(f"n-grams of order {order}", count)
        pinned.append(pointer)
    for order, array in _per_order("tables", list(tables[:n + 1]), n, 2, n):
        pointer, size = _vector(f"tables[{order}]", array, np.int64, ngram_table_size(struct.count[order]))
        struct.table[order], struct.table_size[order] = pointer, size
        pinned.append(pointer)
    bad = ffi.new("int64_t *")
    status = _cffi(lib.ngram_table_check, struct, n, _integer("stride", stride, 1, INT64_MAX), bad)
    if status not in (0, lib.NGRAM_E_TABLE, lib.NGRAM_E_CORRUPT):
        _check_status(status)
    return int(bad[0])


def vocab_hash_table(text, offsets) -> np.ndarray:
    """The hash table of a vocabulary (as ngram_hash_tables'): unit i is
    text[offsets[i]:offsets[i + 1]]."""
    p_text, text_size, p_offsets, size = _vocab_arrays(text, offsets)
    table_size = ngram_table_size(size)
    table = _new("vocab table", (table_size,), np.int64)
    bad = ffi.new("int64_t *")
    _run(lib.ngram_vocab_build, _pointer("vocab table", table, np.int64, (table_size,), writable=True),
         table_size, p_text, text_size, p_offsets, size, bad)
    return table


def vocab_table_fault(table, text, offsets) -> tuple[str, int] | None:
    """None when every unit is UTF-8 and `table` finds it at its own id (so no two are
    equal); else ("offsets" | "utf8" | "duplicate", the first unit id at fault)."""
    p_text, text_size, p_offsets, size = _vocab_arrays(text, offsets)
    p_table, table_size = _vector("vocab table", table, np.int64, ngram_table_size(size))
    bad = ffi.new("int64_t *")
    status = _cffi(lib.ngram_vocab_check, p_table, table_size, p_text, text_size, p_offsets, size, bad)
    faults = {lib.NGRAM_E_OFFSETS: "offsets", lib.NGRAM_E_UTF8: "utf8", lib.NGRAM_E_DUPLICATE: "duplicate"}
    if status in faults:
        return faults[status], int(bad[0])
    _check_status(status)
    return None


def ngram_vocab_tables(text, offsets, table) -> NgramVocab:
    """The C view of a vocabulary's arrays (checked as vocab_table_fault's arguments)."""
    p_text, text_size, p_offsets, size = _vocab_arrays(text, offsets)
    p_table, table_size = _vector("vocab table", table, np.int64, ngram_table_size(size))
    struct = ffi.new("ngram_vocab *")
    struct.text, struct.text_size, struct.offsets, struct.size = p_text, text_size, p_offsets, size
    struct.table, struct.table_size = p_table, table_size
    vocab = NgramVocab()
    vocab.struct, vocab.size, vocab._pinned = struct, size, (text, offsets, table, p_text, p_offsets, p_table)
    return vocab


def ngram_tables(order: int, vocab: NgramVocab, keys, prob, backoff, extendable, tables) -> NgramTables:
    """The C view of an n-gram model. Lists indexed by order: keys[n] (n >= 2, int64),
    prob[n] (n >= 1, float32), backoff[n] and extendable[n] (n < order; float32, uint8),
    tables[n] (n >= 2, int64 of ngram_table_size(count))."""
    order, vocab = _integer("order", order, 1, lib.NGRAM_MAX_ORDER), _vocab(vocab)
    if vocab.size < 3:
        raise KernelError(f"the vocabulary must hold <unk>, <s> and </s>; it has {vocab.size} units")
    struct = ffi.new("ngram_model *")
    struct.order, struct.vocab = order, vocab.struct[0]
    pinned = [vocab]
    counts = [0, vocab.size]
    for n, array in _per_order("keys", keys, order, 2, order):
        pointer, count = _vector(f"keys[{n}]", array, np.int64)
        struct.keys[n], struct.count[n] = pointer, _count(f"n-grams of order {n}", count)
        counts.append(count)
        pinned += [array, pointer]
    struct.count[1] = vocab.size
    columns = (("prob", prob, np.float32, 1, order), ("backoff", backoff, np.float32, 1, order - 1),
               ("extendable", extendable, np.uint8, 1, order - 1))
    for name, arrays, dtype, first, last in columns:
        for n, array in _per_order(name, arrays, order, first, last):
            pointer, _ = _vector(f"{name}[{n}]", array, dtype, counts[n])
            getattr(struct, name)[n] = pointer
            pinned += [array, pointer]
    for n, array in _per_order("tables", tables, order, 2, order):
        pointer, size = _vector(f"tables[{n}]", array, np.int64, ngram_table_size(counts[n]))
        struct.table[n], struct.table_size[n] = pointer, size
        pinned += [array, pointer]
    model = NgramTables()
    model.struct, model.order, model.vocab, model._pinned = struct, order, vocab, pinned
    return model


def ngram_unit_id(vocab: NgramVocab, unit) -> int:
    """The id of one unit (UTF-8 bytes); 0 (<unk>) when the vocabulary lacks it."""
    vocab, unit = _vocab(vocab), _text("unit", unit)
    found = ffi.new("int64_t *")
    _run(lib.ngram_unit_id, vocab.struct, unit, len(unit), found)
    return found[0]


def ngram_lookup(vocab: NgramVocab, split, text, ends):
    """(ids, lengths): the vocabulary ids of the units of each text[ends[s-1]:ends[s]]
    (unknown units: 0), split by `split`, and the number of units of each."""
    vocab, code, text = _vocab(vocab), _split_code(split), _text("text", text)
    p_ends, n = _vector("ends", ends, np.int64)
    capacity = len(text) + n   # a unit has a byte (or is a whole, possibly empty, range)
    ids, lengths = _new("ids", (capacity,), np.int64), _new("lengths", (n,), np.int64)
    _run(lib.ngram_lookup, vocab.struct, code, text, len(text), p_ends, n,
         _pointer("ids", ids, np.int64, (capacity,), writable=True), capacity,
         _pointer("lengths", lengths, np.int64, (n,), writable=True))
    return ids[:int(lengths.sum())], lengths


def ngram_score_ids(tables: NgramTables, ids, lengths, *, bos, eos, precision, slack, tokens=True):
    """Scores sentences of ids (lengths[s] ids each). Returns (logp, match, oov, totals):
    per scored position log10 (float64), n-gram length (int32) and OOV flag (bool), or
    three Nones with tokens=False, and per sentence the total (summed in order)."""
    tables = _model(tables)
    p_ids, n_ids = _vector("ids", ids, np.int64)
    p_lengths, n = _vector("lengths", lengths, np.int64)
    bos, eos = _flag("bos", bos), _flag("eos", eos)
    code, slack = _precision_code(precision), _real("slack", slack, 0.0, 1.0)
    totals = _new("totals", (n,), np.float64)
    capacity = n_ids + n * eos if tokens else 0
    logp, match, oov = ((_new("logp", (capacity,), np.float64), _new("match", (capacity,), np.int32),
                         _new("oov", (capacity,), np.uint8)) if tokens else (None, None, None))
    outputs = [ffi.NULL if array is None else _pointer(name, array, array.dtype, (capacity,), writable=True)
               for name, array in (("logp", logp), ("match", match), ("oov", oov))]
    bad = ffi.new("double *")
    status = _cffi(lib.ngram_score_ids, tables.struct, p_ids, n_ids, p_lengths, n, bos, eos, code, slack,
                   *outputs, capacity, _pointer("totals", totals, np.float64, (n,), writable=True), bad)
    _check_status(status, bad_value=bad[0])
    return logp, match, None if oov is None else oov.view(bool), totals


def ngram_text_scorer(tables: NgramTables, split, precision, slack):
    """log10 P of one sentence at the least cost per call (score() one sentence at a
    time is a common use): a function (UTF-8 bytes, bos, eos) -> the total, or None when
    the sentence has more than NGRAM_MAX_SENTENCE units (score it with ngram_score_ids).
    The model, split, precision and slack are checked here, once; per call, the types of
    the text and flags (bytes, bool)."""
    tables, code = _model(tables), _split_code(split)
    precision, slack = _precision_code(precision), _real("slack", slack, 0.0, 1.0)
    run, struct, local, too_long = lib.ngram_score_text, tables.struct, threading.local(), lib.NGRAM_E_LONG

    def score(text, bos, eos):
        if text.__class__ is not bytes or bos.__class__ is not bool or eos.__class__ is not bool:
            raise _bad_sentence_call(text, bos, eos)
        try:
            total, bad = local.out
        except AttributeError:   # one output per thread: the call releases the GIL
            total = ffi.new("double[2]")
            total, bad = local.out = total, total + 1
        status = run(struct, code, text, len(text), bos, eos, precision, slack, total, bad)
        if status:
            if status == too_long:
                return None
            _check_status(status, bad_value=bad[0])
        return total[0]

    return score


def ngram_query(tables: NgramTables, split, slack) -> _ngram_py.Query:
    """The model's C view for rnnkit._ngram_py (csrc/ngram_py.c), the CPython entry points
    of the calls made once per word or sentence: the struct's address, csrc/ngram.c's
    function table's, and `tables`, held so that its arrays outlive the view. `split`:
    how C splits the model's sentences (C_SPLITS), None where it does not. Checked here,
    as every argument that reaches C; the entry points check their own arguments' types."""
    tables, slack = _model(tables), _real("slack", slack, 0.0, 1.0)
    code = -1 if split is None else _split_code(split)
    address = int(ffi.cast("uintptr_t", tables.struct))
    functions = int(ffi.cast("uintptr_t", lib.ngram_function_table()))
    return _ngram_py.Query(address, functions, tables, code, slack)


def ngram_base_scorer(tables: NgramTables, slack):
    """KenLM's BaseFullScore on one model: a function (state code, word id) -> (log10 as
    a float32 value, state code after the word, n-gram length, oov). The model and slack
    are checked here, once; per call, that the state code and the word id are ints, and
    C checks their values (NGRAM_E_STATE, RNN_E_TOKEN). A state code is index *
    NGRAM_STATE_LENGTHS + length (0: the null context). rnnkit.kenlm's per-word calls on
    an n-gram model run in rnnkit._ngram_py (ngram_query); this is their Python path's."""
    tables, slack = _model(tables), _real("slack", slack, 0.0, 1.0)
    run, struct, local = lib.ngram_base_score, tables.struct, threading.local()

    def step(state, word):
        if state.__class__ is not int or word.__class__ is not int:
            raise _bad_step_call(state, word)
        try:
            out = local.out
        except AttributeError:   # one output per thread: the call releases the GIL
            out = local.out = ffi.new("ngram_step *")
        try:
            status = run(struct, state, word, slack, out)
        except OverflowError:
            raise _bad_step_call(state, word) from None
        if status:
            _check_status(status, bad_value=out.log10)
        return out.log10, out.state, out.length, bool(out.oov)

    return step
