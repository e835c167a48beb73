"""Plain-NumPy twin of every kernel function: same names, same signatures, same results.

It exists to prove the C kernel right (parity tests in float32) and to be checked
itself against finite differences (float64). It favours clarity over speed; it never
clips inside backward (clipping is its own function, as in the kernel).

Model (row vectors): h_t = act(W_xh[x_t] + h_{t-1} W_hh^T + b_h), with h_{t-1} = 0
where reset[t] = 1;  y_t = h_t W_hy^T + b_y;  loss = -sum log softmax(y_t)[target_t].
The class functions factor the output as P(c | h) P(w | c, h) and add the direct
connections' table entries to the logits (csrc/rnn.h), one position at a time, adding
in the kernel's order (matrix product, then the features one by one, then the bias).
"""

from __future__ import annotations

import numpy as np

from .errors import KernelError
from .layout import (ADAGRAD_EPS, DIRECT_HISTORY, MAX_DIRECT_ORDER,  # noqa: F401  (same API as kernel)
                     ClassForwardCache, ForwardCache, class_sizes, layout_size, next_history,
                     param_shapes, param_views)

ACTIVATIONS = ("tanh", "logistic", "identity")


def num_params(V: int, H: int, C: int = 0) -> int:
    """Length of the flat parameter buffer (the kernel's rnn_num_params, in Python)."""
    return layout_size(V, H, C)


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


def _check_batch(inputs, targets, resets, V):
    _check_ids("input token", inputs, 0, V)
    _check_ids("target token", targets, -1, V)
    if resets.size and not np.isin(resets, (0, 1)).all():
        raise KernelError("reset flag other than 0 or 1")


def _recurrence(p, inputs, resets, h0, activation, in_mask, dtype):
    """hs (T, B, H): h_t = act(W_xh[x_t] (* in_mask[t]) + h_{t-1} W_hh^T + b_h), with
    h_{t-1} = 0 where reset[t] = 1."""
    T, B = inputs.shape
    hs = np.empty((T, B, h0.shape[1]), dtype=dtype)
    h_prev = h0.astype(dtype)
    for t in range(T):
        keep = (1 - resets[t]).astype(dtype)[:, None]            # 0 where a sequence starts
        x = p["W_xh"][inputs[t]] if in_mask is None else p["W_xh"][inputs[t]] * in_mask[t]
        z = x + (h_prev * keep) @ p["W_hh"].T + p["b_h"]
        hs[t] = _activate(z, activation)
        h_prev = hs[t]
    return hs


def _bptt(g, p, dh_from_output, cache, dh0):
    """Backpropagation through time from dL/dh_t of the output layer (T, B, H): accumulates
    g["W_xh"], g["W_hh"], g["b_h"] and dh0, for either cache type."""
    hs = cache.hs
    dh_next = np.zeros_like(dh0)
    for t in reversed(range(hs.shape[0])):
        dh = dh_from_output[t] + dh_next                          # from y_t and from h_{t+1}
        dz = dh * _activation_grad(hs[t], cache.activation)       # through the nonlinearity
        g["b_h"] += dz.sum(axis=0)
        dx = dz if cache.in_mask is None else dz * cache.in_mask[t]
        np.add.at(g["W_xh"], cache.inputs[t], dx)                 # embedding rows of x_t
        keep = (1 - cache.resets[t]).astype(dz.dtype)[:, None]
        h_prev = (hs[t - 1] if t > 0 else cache.h0) * keep
        g["W_hh"] += dz.T @ h_prev                                # z = h_{t-1} W_hh^T
        dh_next = (dz * keep) @ p["W_hh"]                         # into h_{t-1}
    dh0 += dh_next


def forward(params, inputs, targets, resets, h0, *, V, activation="tanh",
            keep_for_backward=True, reuse=None, in_mask=None, out_mask=None):
    """Same contract as kernel.forward; computes in params' dtype (float32 or float64)."""
    dtype = params.dtype
    H = h0.shape[1]
    _check_batch(inputs, targets, resets, V)
    p = param_views(params, V, H)
    hs = _recurrence(p, inputs, resets, h0, activation, in_mask, dtype)
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
    # output layer: y = h W_hy^T + b_y
    g["W_hy"] += np.einsum("tbv,tbh->vh", dlogits, cache.hd)
    g["b_y"] += dlogits.sum(axis=(0, 1))
    dh_from_output = dlogits @ p["W_hy"]                          # (T, B, H)
    if cache.out_mask is not None:
        dh_from_output = dh_from_output * cache.out_mask
    _bptt(g, p, dh_from_output, cache, dh0)
    return dh0


def step(params, h, tokens, *, V, activation="tanh"):
    """Same contract as kernel.step: returns (h_new, logprobs) for B rows."""
    H = h.shape[1]
    _check_ids("input token", tokens, 0, V)
    p = param_views(params, V, H)
    h_new = _activate(p["W_xh"][tokens] + h @ p["W_hh"].T + p["b_h"], activation)
    return h_new.astype(params.dtype), _log_softmax(h_new @ p["W_hy"].T + p["b_y"])


# ----------------------------------------------------------------------------------
# class-factored output and direct connections
# ----------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_DIRECT_SEED = 0x726E6E6B6974     # rnn.c's RNN_DIRECT_SEED


def _mix64(z: int) -> int:
    """rnn.c's mix64 (splitmix64's output function) on Python ints."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _history_ids(t, b, inputs, resets, history, limit):
    """Up to `limit` inputs back from x_t in row b: to the latest reset, then into history
    until a -1 (resets None: no resets; history None: nothing before step 0)."""
    ids = []
    p = t
    while len(ids) < limit:
        if p >= 0:
            token = int(inputs[p, b])
        elif history is not None:
            token = int(history[b, DIRECT_HISTORY + p])
        else:
            break
        if token < 0:
            break
        ids.append(token)
        if p >= 0 and resets is not None and resets[p, b]:
            break
        p -= 1
    return ids


def _features(order, D, ids):
    """The hashes (mod D) of the direct features over the history ids (most recent first)."""
    h = _mix64(_DIRECT_SEED)
    hashes = [h % D]
    for token in ids[:order - 1]:
        h = _mix64(h ^ token)
        hashes.append(h % D)
    return hashes


class _Output:
    """The class map and the direct connections of one call."""

    def __init__(self, V, class_start, table, direct_order, inputs, resets, history):
        class_start = np.asarray(class_start, dtype=np.int64)
        C = class_start.size - 1
        sizes = class_sizes(class_start)
        if not 1 <= C <= V or class_start[0] != 0 or class_start[-1] != V or (sizes < 1).any():
            raise KernelError("class_start must rise strictly from 0 to V (C classes in [1, V], none empty)")
        if not 0 <= direct_order <= MAX_DIRECT_ORDER:
            raise KernelError(f"direct_order = {direct_order} is out of range [0, {MAX_DIRECT_ORDER}]")
        if direct_order and (table is None or table.size < 1):
            raise KernelError("direct connections need a table of at least one entry")
        if history is not None:
            _check_ids("direct history", history, -1, V)
        self.V, self.C, self.M = V, C, int(sizes.max())
        self.class_start = class_start
        self.word_class = np.repeat(np.arange(C), sizes)
        self.table, self.order = table, direct_order
        self.inputs, self.resets, self.history = inputs, resets, history

    def features(self, t, b):
        if not self.order:
            return []
        ids = _history_ids(t, b, self.inputs, self.resets, self.history, self.order - 1)
        return _features(self.order, self.table.size, ids)

    def entries(self, feature, o, length):
        """Indices of the table entries of `length` output units from unit o."""
        return (feature + o + np.arange(length)) % self.table.size

    def add_direct(self, logits, features, o):
        for f in features:          # feature by feature, as the kernel adds them
            logits = logits + self.table[self.entries(f, o, logits.size)]
        return logits

    def update_direct(self, features, o, grad, scale, lr, l2, accum=None, dtable=None):
        """rnn.h's sparse step for one softmax's units, in the kernel's order: SGD, or
        AdaGrad with the sums of squares `accum` (not None); with dtable,
        class_direct_gradient's accumulation into it instead."""
        kind = self.table.dtype.type
        scale, lr, l2, eps = kind(scale), kind(lr), kind(l2), kind(ADAGRAD_EPS)
        for f in features:
            index = self.entries(f, o, grad.size)
            runs = [(index, grad)] if grad.size <= self.table.size else zip(index[:, None], grad[:, None])
            for i, g in runs:    # distinct entries: one vector step; a run wrapping onto itself: in order
                w = self.table[i]
                u = scale * g + l2 * w
                if dtable is not None:
                    dtable[i] += u
                elif accum is None:
                    self.table[i] = w - lr * u
                else:
                    accum[i] += u * u
                    self.table[i] = w - lr * u / np.sqrt(accum[i] + eps)

    def slots(self, targets):
        """Positions with a target ordered by the target's class, then by position: dword's
        rows (rnn.h)."""
        flat = targets.reshape(-1)
        rows = np.flatnonzero(flat >= 0)
        return rows[np.argsort(self.word_class[flat[rows]], kind="stable")]

    def word_range(self, word):
        c = int(self.word_class[word])
        return c, int(self.class_start[c]), int(self.class_start[c + 1])


def class_forward(params, inputs, targets, resets, h0, *, V, class_start, table=None,
                  direct_order=0, history=None, activation="tanh", keep_for_backward=True,
                  reuse=None, in_mask=None, out_mask=None):
    """Same contract as kernel.class_forward; computes in params' dtype (the table's
    dtype should match)."""
    dtype = params.dtype
    T, B = inputs.shape
    H = h0.shape[1]
    _check_batch(inputs, targets, resets, V)
    out = _Output(V, class_start, table, direct_order, inputs, resets, history)
    C, M = out.C, out.M
    p = param_views(params, V, H, C)
    hs = _recurrence(p, inputs, resets, h0, activation, in_mask, dtype)
    hd = hs if out_mask is None else hs * out_mask
    hy = hd.reshape(T * B, H)
    flat_targets = targets.reshape(-1)
    logprobs = np.zeros(T * B, dtype=dtype)
    dclass = np.zeros((T * B, C), dtype=dtype)
    dword = np.zeros((T * B, M), dtype=dtype)
    for n in np.flatnonzero(flat_targets >= 0):
        c = out.word_range(flat_targets[n])[0]
        logits = out.add_direct(hy[n] @ p["W_c"].T, out.features(n // B, n % B), 0) + p["b_c"]
        logp = _log_softmax(logits)
        logprobs[n] = logp[c]
        dclass[n] = np.exp(logp)
        dclass[n, c] -= 1.0
    for k, n in enumerate(out.slots(targets)):
        word = flat_targets[n]
        _, start, end = out.word_range(word)
        logits = hy[n] @ p["W_hy"][start:end].T
        logits = out.add_direct(logits, out.features(n // B, n % B), C + start) + p["b_y"][start:end]
        logp = _log_softmax(logits)
        logprobs[n] += logp[word - start]
        dword[k, :end - start] = np.exp(logp)
        dword[k, word - start] -= 1.0
    logprobs = logprobs.reshape(T, B)
    loss = float(-logprobs.sum(dtype=np.float64))
    keep = keep_for_backward
    cache = ClassForwardCache(inputs, targets, resets, h0, params, hs,
                              dclass.reshape(T, B, C) if keep else None, dword if keep else None,
                              activation, V, np.asarray(class_start), direct_order,
                              table.size if direct_order else 0, history, hd=hd, in_mask=in_mask,
                              out_mask=out_mask)
    return loss, logprobs, hs, cache


def class_backward(grads, cache: ClassForwardCache, *, table=None, loss_scale=1.0,
                   direct_lr=0.0, direct_l2=0.0, dh0=None, direct_accum=None):
    """Same contract as kernel.class_backward: accumulates into grads (and dh0), updates
    the table (and direct_accum), returns dh0."""
    if cache.dclass is None or cache.dword is None:
        raise KernelError("class_forward was run with keep_for_backward=False; nothing to backpropagate")
    T, B, H = cache.hs.shape
    V = cache.V
    out = _Output(V, cache.class_start, table, cache.direct_order, cache.inputs, cache.resets,
                  cache.history)
    C = out.C
    p = param_views(cache.params, V, H, C)
    g = param_views(grads, V, H, C)
    if dh0 is None:
        dh0 = np.zeros((B, H), dtype=grads.dtype)
    hy = cache.hd.reshape(T * B, H)
    dclass = cache.dclass.reshape(T * B, C) * loss_scale
    g["W_c"] += dclass.T @ hy
    g["b_c"] += dclass.sum(axis=0)
    dh = dclass @ p["W_c"]                                        # (N, H)
    slots = out.slots(cache.targets)
    flat_targets = cache.targets.reshape(-1)
    for k, n in enumerate(slots):
        _, start, end = out.word_range(flat_targets[n])
        dword = cache.dword[k, :end - start] * loss_scale
        g["W_hy"][start:end] += np.outer(dword, hy[n])
        g["b_y"][start:end] += dword
        dh[n] += dword @ p["W_hy"][start:end]
    dh = dh.reshape(T, B, H)
    if cache.out_mask is not None:
        dh = dh * cache.out_mask
    if cache.direct_order and direct_lr > 0:
        _direct_backward(out, cache, loss_scale, direct_lr, direct_l2, accum=direct_accum)
    _bptt(g, p, dh, cache, dh0)
    return dh0


def _direct_backward(out, cache, loss_scale, direct_lr, direct_l2, dtable=None, accum=None):
    """The direct connections' part of backward, slot by slot: out.update_direct."""
    T, B = cache.targets.shape
    flat_targets = cache.targets.reshape(-1)
    for k, n in enumerate(out.slots(cache.targets)):
        _, start, end = out.word_range(flat_targets[n])
        features = out.features(n // B, n % B)
        out.update_direct(features, 0, cache.dclass.reshape(T * B, out.C)[n], loss_scale,
                          direct_lr, direct_l2, accum, dtable)
        out.update_direct(features, out.C + start, cache.dword[k, :end - start], loss_scale,
                          direct_lr, direct_l2, accum, dtable)


def class_direct_gradient(dtable, cache: ClassForwardCache, *, table, loss_scale=1.0, direct_l2=0.0):
    """Same contract as kernel.class_direct_gradient: accumulates into dtable."""
    if cache.dclass is None or cache.dword is None:
        raise KernelError("class_forward was run with keep_for_backward=False; nothing to backpropagate")
    if not cache.direct_order:
        raise KernelError("class_forward was run without direct connections (direct_order = 0); no table gradient")
    out = _Output(cache.V, cache.class_start, table, cache.direct_order, cache.inputs, cache.resets,
                  cache.history)
    _direct_backward(out, cache, loss_scale, 0.0, direct_l2, dtable)


def direct_entries(inputs, targets, resets, *, V, class_start, direct_order, table_size, history=None):
    """Same contract as kernel.direct_entries: the distinct entries a batch uses, ascending."""
    _check_batch(inputs, targets, resets, V)
    if not 1 <= direct_order <= MAX_DIRECT_ORDER:
        raise KernelError(f"direct_order = {direct_order} is out of range [1, {MAX_DIRECT_ORDER}]")
    out = _Output(V, class_start, np.zeros(table_size, np.float32), direct_order, inputs, resets, history)
    T, B = inputs.shape
    used = [np.zeros(0, np.int64)]
    for n in np.flatnonzero(targets.reshape(-1) >= 0):
        _, start, end = out.word_range(targets.reshape(-1)[n])
        for f in out.features(n // B, n % B):
            used += [out.entries(f, 0, out.C), out.entries(f, out.C + start, end - start)]
    return np.unique(np.concatenate(used)).astype(np.int64)


def class_step(params, h, tokens, *, V, class_start, table=None, direct_order=0, history=None,
               activation="tanh"):
    """Same contract as kernel.class_step: returns (h_new, logprobs (B, V)), the full
    distribution."""
    B, H = h.shape
    _check_ids("input token", tokens, 0, V)
    out = _Output(V, class_start, table, direct_order, tokens[None, :], None, history)
    p = param_views(params, V, H, out.C)
    h_new = _activate(p["W_xh"][tokens] + h @ p["W_hh"].T + p["b_h"], activation).astype(params.dtype)
    logprobs = np.empty((B, V), dtype=params.dtype)
    for b in range(B):
        features = out.features(0, b)
        class_logp = _log_softmax(out.add_direct(h_new[b] @ p["W_c"].T, features, 0) + p["b_c"])
        for c in range(out.C):
            start, end = out.class_start[c], out.class_start[c + 1]
            logits = out.add_direct(h_new[b] @ p["W_hy"][start:end].T, features, out.C + start)
            logprobs[b, start:end] = _log_softmax(logits + p["b_y"][start:end]) + class_logp[c]
    return h_new, logprobs


def sgd_update(params, grads, lr, *, shrink=1.0, average=None, fraction=0.0):
    params -= lr * grads
    _after_step(params, shrink, average, fraction)


def _after_step(params, shrink, average, fraction):
    """kernel.py's: the decoupled weight decay, then the moving average."""
    params *= np.float32(shrink)
    if average is not None:
        average += np.float32(fraction) * (params - average)


def sparse_sgd_update(params, index, grads, lr):
    if index.size and (index[0] < 0 or index[-1] >= params.size or (np.diff(index) < 1).any()):
        raise KernelError("sparse index not rising strictly within [0, size)")
    params[index] -= lr * grads


def adam_update(params, grads, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, *, shrink=1.0,
                average=None, fraction=0.0):
    m *= beta1
    m += (1 - beta1) * grads
    v *= beta2
    v += (1 - beta2) * grads * grads
    bias1 = 1 - beta1 ** step
    bias2 = 1 - beta2 ** step
    params -= (lr / bias1) * m / (np.sqrt(v) / np.sqrt(bias2) + eps)
    _after_step(params, shrink, average, fraction)


def average_catch_up(average, raw, synced, log_decay, step, index=None):
    """Same contract as kernel.average_catch_up."""
    index = np.arange(average.size) if index is None else index
    if index.size and (index[0] < 0 or index[-1] >= average.size or (np.diff(index) < 1).any()):
        raise KernelError("sparse index not rising strictly within [0, size)")
    missed = synced[index]
    if not 0 <= step < log_decay.size or ((missed < 0) | (missed > step)).any():
        raise KernelError(f"synced must hold steps in [0, {step}]")
    weight = (-np.expm1(log_decay[step] - log_decay[missed])).astype(np.float32)
    average[index] += weight * (raw[index] - average[index])


def clip_grad_norm(grads, max_norm):
    norm = float(np.sqrt(np.sum(grads.astype(np.float64) ** 2)))
    if not np.isfinite(norm):
        raise KernelError("non-finite value (NaN or infinity) encountered")
    if max_norm > 0 and norm > max_norm:
        grads *= max_norm / (norm + 1e-6)
    return norm
