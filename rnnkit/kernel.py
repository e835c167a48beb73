"""The only module that touches the C kernel's cffi `ffi` / `lib`.

Every wrapper validates (dtype, C order, shape, writability, sizes), then calls, then
turns a non-zero status into `KernelError` with the kernel's own message. Nothing is
copied silently: callers prepare arrays once with np.ascontiguousarray(x, np.float32).

reference.py has the same functions with the same signatures in plain NumPy.

Threading: kernel calls release the GIL. A parameter buffer must not be mutated from
another thread while a call that reads it runs.
"""

from __future__ import annotations

import os

import numpy as np

import scipy_openblas32  # noqa: F401  (loads libscipy_openblas before the kernel module)

from .errors import KernelError
from .layout import ForwardCache, param_shapes, param_views  # noqa: F401  (same API as reference)

try:
    from ._rnn_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - a checkout not built in place, or a broken install
    # Python (`python -m ...`, `python -c`) puts the current directory first on sys.path, so
    # from a checkout root this is the source tree even when an installed rnnkit exists.
    raise ImportError(
        f"rnnkit's C kernel is not built in {os.path.dirname(__file__)} ({exc}): in a source "
        "checkout, build it in place with `pip install -e .` (or run from outside the checkout "
        "to use the installed rnnkit); otherwise reinstall with `pip install .`"
    ) from None

ABI_VERSION = 2
if lib.rnn_abi_version() != ABI_VERSION:  # pragma: no cover - stale build
    raise ImportError(
        f"rnnkit's C kernel has ABI {lib.rnn_abi_version()}, this Python code expects "
        f"{ABI_VERSION}: rebuild with `pip install .`"
    )

ACTIVATIONS = {"tanh": lib.RNN_ACT_TANH, "logistic": lib.RNN_ACT_LOGISTIC,
               "identity": lib.RNN_ACT_IDENTITY}

__all__ = [
    "ACTIVATIONS", "ForwardCache", "num_params", "param_shapes", "param_views",
    "set_num_threads", "get_num_threads", "forward", "backward", "step",
    "sgd_update", "adam_update", "clip_grad_norm",
]


# ----------------------------------------------------------------------------------
# sizes and named views
# ----------------------------------------------------------------------------------

def num_params(V: int, H: int) -> int:
    """Length of the flat parameter buffer for vocabulary V and hidden size H."""
    n = lib.rnn_num_params(int(V), int(H))
    if n < 0:
        raise KernelError(f"invalid sizes V={V}, H={H}: both must be >= 1")
    return int(n)


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernel uses (its loops and its matrix products)."""
    _check(lib.rnn_set_num_threads(int(n)))


def get_num_threads() -> int:
    return int(lib.rnn_get_num_threads())


# ----------------------------------------------------------------------------------
# argument checking
# ----------------------------------------------------------------------------------

def _check(status: int) -> None:
    if status != 0:
        raise KernelError(ffi.string(lib.rnn_strerror(status)).decode())


def _expect(name: str, array, dtype, shape: tuple, writable: bool = False) -> None:
    if not isinstance(array, np.ndarray):
        raise KernelError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise KernelError(f"{name} must have dtype {np.dtype(dtype).name}, got {array.dtype.name}")
    if array.shape != tuple(shape):
        raise KernelError(f"{name} has shape {array.shape}, expected {tuple(shape)}")
    if not array.flags.c_contiguous:
        raise KernelError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if writable and not array.flags.writeable:
        raise KernelError(f"{name} is read-only but is written by the kernel")


def _activation_code(activation: str) -> int:
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise KernelError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}") from None


def _sizes(inputs: np.ndarray, h0: np.ndarray) -> tuple[int, int, int]:
    if not isinstance(inputs, np.ndarray) or inputs.ndim != 2:
        raise KernelError(f"inputs must be a (T, B) array, got shape {getattr(inputs, 'shape', None)}")
    if not isinstance(h0, np.ndarray) or h0.ndim != 2:
        raise KernelError(f"h0 must be a (B, H) array, got shape {getattr(h0, 'shape', None)}")
    T, B = inputs.shape
    return T, B, h0.shape[1]


# ----------------------------------------------------------------------------------
# forward / backward
# ----------------------------------------------------------------------------------

def _buffer(reuse, name, shape, dtype=np.float32):
    old = getattr(reuse, name, None) if reuse is not None else None
    if isinstance(old, np.ndarray) and old.shape == shape and old.dtype == dtype:
        return old
    return np.empty(shape, dtype=dtype)


def _optional(name, array, shape):
    if array is not None:
        _expect(name, array, np.float32, shape)
        return ffi.from_buffer("float[]", array)
    return ffi.NULL


def forward(params, inputs, targets, resets, h0, *, V, activation="tanh",
            keep_for_backward=True, reuse=None, in_mask=None, out_mask=None):
    """Run the RNN over a (T, B) batch.

    Returns (loss, logprobs, hs, cache): the summed natural-log cross-entropy over
    positions whose target is not -1, the (T, B) target log-probabilities (0 where
    ignored), the (T, B, H) hidden states and a ForwardCache for backward. With
    keep_for_backward=False nothing V-sized is kept (scoring). `reuse` takes a
    previous cache whose buffers are reused when their shapes match. in_mask and
    out_mask, (T, B, H) float32 of 0 or 1/(1-p), are dropout on the input rows and
    before the output layer.
    """
    T, B, H = _sizes(inputs, h0)
    _expect("inputs", inputs, np.int32, (T, B))
    _expect("targets", targets, np.int32, (T, B))
    _expect("resets", resets, np.int32, (T, B))
    _expect("h0", h0, np.float32, (B, H))
    _expect("params", params, np.float32, (num_params(V, H),))
    act = _activation_code(activation)
    work_size = lib.rnn_workspace_size(T, B, H, V)
    if work_size < 0:
        raise KernelError(f"invalid sizes T={T}, B={B}, H={H}, V={V}")

    hs = _buffer(reuse, "hs", (T, B, H))
    logprobs = np.empty((T, B), dtype=np.float32)
    loss = np.zeros(1, dtype=np.float32)
    work = _buffer(reuse, "work", (work_size,))
    dlogits = _buffer(reuse, "dlogits", (T, B, V)) if keep_for_backward else None
    hd = _buffer(reuse, "hd", (T, B, H)) if out_mask is not None else None
    p_in_mask = _optional("in_mask", in_mask, (T, B, H))
    p_out_mask = _optional("out_mask", out_mask, (T, B, H))
    p_hd = ffi.from_buffer("float[]", hd) if hd is not None else ffi.NULL

    p_loss, p_logprobs, p_hs = ffi.from_buffer("float[]", loss), ffi.from_buffer("float[]", logprobs), ffi.from_buffer("float[]", hs)
    p_dlogits = ffi.from_buffer("float[]", dlogits) if dlogits is not None else ffi.NULL
    p_work = ffi.from_buffer("float[]", work)
    p_in, p_tg, p_rs = (ffi.from_buffer("int32_t[]", a) for a in (inputs, targets, resets))
    p_h0, p_params = ffi.from_buffer("float[]", h0), ffi.from_buffer("float[]", params)
    _check(lib.rnn_forward(p_loss, p_logprobs, p_hs, p_hd, p_dlogits, p_work, work_size,
                           p_in, p_tg, p_rs, p_in_mask, p_out_mask, p_h0, p_params, act, T, B, H, V))
    cache = ForwardCache(inputs, resets, h0, params, hs, dlogits, activation, V, work,
                         hd, in_mask, out_mask)
    return float(loss[0]), logprobs, hs, cache


def backward(grads, cache: ForwardCache, *, loss_scale=1.0, dh0=None):
    """Backpropagate loss_scale * (summed loss) through the cached forward.

    Accumulates (+=) into `grads` (flat, same layout as params; the caller zeroes it)
    and into `dh0` when given (else a fresh zero array). Returns dh0, shape (B, H).
    """
    if cache.dlogits is None:
        raise KernelError("forward was run with keep_for_backward=False; nothing to backpropagate")
    T, B, H = cache.hs.shape
    V = cache.V
    _expect("grads", grads, np.float32, (num_params(V, H),), writable=True)
    if dh0 is None:
        dh0 = np.zeros((B, H), dtype=np.float32)
    _expect("dh0", dh0, np.float32, (B, H), writable=True)
    if np.shares_memory(grads, cache.params):
        raise KernelError("grads must not share memory with params")
    work_size = lib.rnn_workspace_size(T, B, H, V)
    work = cache.work if cache.work is not None and cache.work.size >= work_size else np.empty(work_size, np.float32)

    p_grads, p_dh0 = ffi.from_buffer("float[]", grads, require_writable=True), ffi.from_buffer("float[]", dh0, require_writable=True)
    p_work = ffi.from_buffer("float[]", work)
    p_dlogits, p_hs = ffi.from_buffer("float[]", cache.dlogits), ffi.from_buffer("float[]", cache.hs)
    p_in, p_rs = ffi.from_buffer("int32_t[]", cache.inputs), ffi.from_buffer("int32_t[]", cache.resets)
    p_h0, p_params = ffi.from_buffer("float[]", cache.h0), ffi.from_buffer("float[]", cache.params)
    p_hd = ffi.from_buffer("float[]", cache.hd) if cache.hd is not None else ffi.NULL
    p_in_mask = _optional("in_mask", cache.in_mask, (T, B, H))
    p_out_mask = _optional("out_mask", cache.out_mask, (T, B, H))
    _check(lib.rnn_backward(p_grads, p_dh0, p_work, work.size, p_dlogits, p_hs, p_hd, p_in, p_rs,
                            p_in_mask, p_out_mask, p_h0, p_params, float(loss_scale),
                            _activation_code(cache.activation), T, B, H, V))
    return dh0


# ----------------------------------------------------------------------------------
# inference step
# ----------------------------------------------------------------------------------

def step(params, h, tokens, *, V, activation="tanh"):
    """One step for B rows: returns (h_new (B, H), logprobs (B, V)) in natural log."""
    if not isinstance(h, np.ndarray) or h.ndim != 2:
        raise KernelError(f"h must be a (B, H) array, got shape {getattr(h, 'shape', None)}")
    B, H = h.shape
    _expect("h", h, np.float32, (B, H))
    _expect("tokens", tokens, np.int32, (B,))
    _expect("params", params, np.float32, (num_params(V, H),))
    act = _activation_code(activation)
    h_new = np.empty((B, H), dtype=np.float32)
    logprobs = np.empty((B, V), dtype=np.float32)
    p_hn, p_lp = ffi.from_buffer("float[]", h_new), ffi.from_buffer("float[]", logprobs)
    p_tok, p_h, p_params = ffi.from_buffer("int32_t[]", tokens), ffi.from_buffer("float[]", h), ffi.from_buffer("float[]", params)
    _check(lib.rnn_step(p_hn, p_lp, p_tok, p_h, p_params, act, B, H, V))
    return h_new, logprobs


# ----------------------------------------------------------------------------------
# optimizers
# ----------------------------------------------------------------------------------

def _flat_pair(params, grads):
    if not isinstance(params, np.ndarray) or params.ndim != 1:
        raise KernelError("params must be a flat (P,) float32 array")
    _expect("params", params, np.float32, params.shape, writable=True)
    _expect("grads", grads, np.float32, params.shape)


def sgd_update(params, grads, lr):
    """params -= lr * grads, in place."""
    _flat_pair(params, grads)
    p_params, p_grads = ffi.from_buffer("float[]", params, require_writable=True), ffi.from_buffer("float[]", grads)
    _check(lib.rnn_sgd_update(p_params, p_grads, float(lr), params.size))


def adam_update(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step (bias-corrected; step counts from 1), updating params, m, v in place."""
    _flat_pair(params, grads)
    _expect("m", m, np.float32, params.shape, writable=True)
    _expect("v", v, np.float32, params.shape, writable=True)
    p_params, p_grads = ffi.from_buffer("float[]", params, require_writable=True), ffi.from_buffer("float[]", grads)
    p_m, p_v = ffi.from_buffer("float[]", m, require_writable=True), ffi.from_buffer("float[]", v, require_writable=True)
    _check(lib.rnn_adam_update(p_params, p_m, p_v, p_grads, float(lr), float(beta1),
                               float(beta2), float(eps), int(step), params.size))


def clip_grad_norm(grads, max_norm):
    """Scale grads in place so their global L2 norm is at most max_norm (<= 0: measure
    only). Returns the norm before clipping; raises KernelError when it is not finite."""
    if not isinstance(grads, np.ndarray) or grads.ndim != 1:
        raise KernelError("grads must be a flat (P,) float32 array")
    _expect("grads", grads, np.float32, grads.shape, writable=True)
    norm = np.zeros(1, dtype=np.float32)
    p_norm, p_grads = ffi.from_buffer("float[]", norm), ffi.from_buffer("float[]", grads, require_writable=True)
    _check(lib.rnn_clip_grad_norm(p_norm, p_grads, float(max_norm), grads.size))
    return float(norm[0])
