"""Plain-NumPy twin of every kernel function: same names, same signatures, same results.

It exists to prove the C kernel right (parity tests in float32) and to be checked
itself against finite differences (float64). It favours clarity over speed; it never
clips inside backward (clipping is its own function, as in the kernel).

Model (row vectors): h_t = act(W_xh[x_t] + h_{t-1} W_hh^T + b_h), with h_{t-1} = 0
where reset[t] = 1;  y_t = h_t W_hy^T + b_y;  loss = -sum log softmax(y_t)[target_t].
"""

from __future__ import annotations

import numpy as np

from .errors import KernelError
from .layout import ForwardCache, layout_size, param_shapes, param_views  # noqa: F401  (same API as kernel)

ACTIVATIONS = ("tanh", "logistic", "identity")


def num_params(V: int, H: int) -> int:
    """Length of the flat parameter buffer (the kernel's rnn_num_params, in Python)."""
    return layout_size(V, H)


def _activate(z, activation):
    if activation == "tanh":
        return np.tanh(z)
    if activation == "logistic":
        return 1.0 / (1.0 + np.exp(-z))
    if activation == "identity":
        return z
    raise KernelError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")


def _activation_grad(h, activation):
    """d act / d z written in terms of the output h = act(z)."""
    if activation == "tanh":
        return 1.0 - h * h
    if activation == "logistic":
        return h * (1.0 - h)
    return np.ones_like(h)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _check_ids(name, ids, low, V):
    if ids.size and (ids.min() < low or ids.max() >= V):
        raise KernelError(f"{name} id out of range [{low}, {V})")


def forward(params, inputs, targets, resets, h0, *, V, activation="tanh",
            keep_for_backward=True, reuse=None, in_mask=None, out_mask=None):
    """Same contract as kernel.forward; computes in params' dtype (float32 or float64)."""
    dtype = params.dtype
    T, B = inputs.shape
    H = h0.shape[1]
    _check_ids("input token", inputs, 0, V)
    _check_ids("target token", targets, -1, V)
    if resets.size and not np.isin(resets, (0, 1)).all():
        raise KernelError("reset flag other than 0 or 1")
    p = param_views(params, V, H)
    hs = np.empty((T, B, H), dtype=dtype)
    h_prev = h0.astype(dtype)
    for t in range(T):
        keep = (1 - resets[t]).astype(dtype)[:, None]            # 0 where a sequence starts
        x = p["W_xh"][inputs[t]] if in_mask is None else p["W_xh"][inputs[t]] * in_mask[t]
        z = x + (h_prev * keep) @ p["W_hh"].T + p["b_h"]
        hs[t] = _activate(z, activation)
        h_prev = hs[t]
    hd = hs if out_mask is None else hs * out_mask                # output dropout
    logits = hd @ p["W_hy"].T + p["b_y"]                          # (T, B, V)
    logp_all = _log_softmax(logits)
    valid = targets >= 0
    safe_targets = np.where(valid, targets, 0)
    logprobs = np.take_along_axis(logp_all, safe_targets[..., None], axis=-1)[..., 0]
    logprobs = np.where(valid, logprobs, 0).astype(dtype)
    loss = float(-logprobs.sum(dtype=np.float64))
    dlogits = None
    if keep_for_backward:
        dlogits = np.exp(logp_all)                                # softmax
        t_idx, b_idx = np.nonzero(valid)
        dlogits[t_idx, b_idx, targets[t_idx, b_idx]] -= 1.0       # - onehot(target)
        dlogits[~valid] = 0.0
    cache = ForwardCache(inputs, resets, h0, params, hs, dlogits, activation, V,
                         hd=hd, in_mask=in_mask, out_mask=out_mask)
    return loss, logprobs, hs, cache


def backward(grads, cache: ForwardCache, *, loss_scale=1.0, dh0=None):
    """Same contract as kernel.backward: accumulates into grads (and dh0), returns dh0."""
    if cache.dlogits is None:
        raise KernelError("forward was run with keep_for_backward=False; nothing to backpropagate")
    T, B, H = cache.hs.shape
    V = cache.V
    p = param_views(cache.params, V, H)
    g = param_views(grads, V, H)
    if dh0 is None:
        dh0 = np.zeros((B, H), dtype=grads.dtype)
    dlogits = cache.dlogits * loss_scale
    hs = cache.hs
    # output layer: y = h W_hy^T + b_y
    g["W_hy"] += np.einsum("tbv,tbh->vh", dlogits, cache.hd)
    g["b_y"] += dlogits.sum(axis=(0, 1))
    dh_from_output = dlogits @ p["W_hy"]                          # (T, B, H)
    if cache.out_mask is not None:
        dh_from_output = dh_from_output * cache.out_mask
    dh_next = np.zeros((B, H), dtype=grads.dtype)
    for t in reversed(range(T)):
        dh = dh_from_output[t] + dh_next                          # from y_t and from h_{t+1}
        dz = dh * _activation_grad(hs[t], cache.activation)       # through the nonlinearity
        g["b_h"] += dz.sum(axis=0)
        dx = dz if cache.in_mask is None else dz * cache.in_mask[t]
        np.add.at(g["W_xh"], cache.inputs[t], dx)                 # embedding rows of x_t
        keep = (1 - cache.resets[t]).astype(grads.dtype)[:, None]
        h_prev = (hs[t - 1] if t > 0 else cache.h0) * keep
        g["W_hh"] += dz.T @ h_prev                                # z = h_{t-1} W_hh^T
        dh_next = (dz * keep) @ p["W_hh"]                         # into h_{t-1}
    dh0 += dh_next
    return dh0


def step(params, h, tokens, *, V, activation="tanh"):
    """Same contract as kernel.step: returns (h_new, logprobs) for B rows."""
    H = h.shape[1]
    _check_ids("input token", tokens, 0, V)
    p = param_views(params, V, H)
    h_new = _activate(p["W_xh"][tokens] + h @ p["W_hh"].T + p["b_h"], activation)
    return h_new.astype(params.dtype), _log_softmax(h_new @ p["W_hy"].T + p["b_y"])


def sgd_update(params, grads, lr):
    params -= lr * grads


def adam_update(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    m *= beta1
    m += (1 - beta1) * grads
    v *= beta2
    v += (1 - beta2) * grads * grads
    bias1 = 1 - beta1 ** step
    bias2 = 1 - beta2 ** step
    params -= (lr / bias1) * m / (np.sqrt(v) / np.sqrt(bias2) + eps)


def clip_grad_norm(grads, max_norm):
    norm = float(np.sqrt(np.sum(grads.astype(np.float64) ** 2)))
    if not np.isfinite(norm):
        raise KernelError("non-finite value (NaN or infinity) encountered")
    if max_norm > 0 and norm > max_norm:
        grads *= max_norm / (norm + 1e-6)
    return norm
