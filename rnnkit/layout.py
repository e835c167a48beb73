"""The flat parameter layout shared by kernel.py, reference.py and the models.

One contiguous float buffer holds, in this order (csrc/rnn.h says the same):
W_xh (V, H), W_hh (H, H), b_h (H,), W_hy (V, H), b_y (V,), and with a class-factored
output of C classes also W_c (C, H), b_c (C,). Gradients and optimizer moments use
buffers of the same layout, so updates and clipping are single loops and saving a model
is saving one array. kernel.num_params asks the C kernel for the size; a test checks it
against this layout.

Also here, for the class-factored output and the direct connections (the kernel's
RNNME functions): the class map (class_start, built by frequency_classes) and the direct
history carried from one batch to the next (next_history).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import KernelError

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")
CLASS_PARAM_NAMES = ("W_c", "b_c")      # after PARAM_NAMES when the output has classes

MAX_DIRECT_ORDER = 10   # rnn.h's RNN_MAX_DIRECT_ORDER: the largest n of the n-gram features
DIRECT_HISTORY = 8      # rnn.h's RNN_DIRECT_HISTORY: inputs a row carries from batch to batch
MAX_TABLE = 2**40       # rnn.c's RNN_MAX_TABLE: the largest direct-connection table
ADAGRAD_EPS = 1e-8      # rnn.c's RNN_ADAGRAD_EPS: AdaGrad's guard against 0 / 0 on the table


def param_shapes(V: int, H: int, C: int = 0) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each parameter, in buffer order, named after the lecture; C > 0
    adds the class layer."""
    shapes = [("W_xh", (V, H)), ("W_hh", (H, H)), ("b_h", (H,)), ("W_hy", (V, H)), ("b_y", (V,))]
    return shapes + ([("W_c", (C, H)), ("b_c", (C,))] if C else [])


def layout_size(V: int, H: int, C: int = 0) -> int:
    if V < 1 or H < 1 or not 0 <= C <= V:
        raise KernelError(f"invalid sizes V={V}, H={H}, C={C}: V and H must be >= 1, C in [0, V]")
    return sum(int(np.prod(shape)) for _, shape in param_shapes(V, H, C))


def param_views(flat: np.ndarray, V: int, H: int, C: int = 0) -> dict[str, np.ndarray]:
    """Named views (no copies) into a flat parameter or gradient buffer."""
    expected = layout_size(V, H, C)
    if not isinstance(flat, np.ndarray) or flat.ndim != 1 or flat.size != expected:
        raise KernelError(f"parameter buffer has shape {getattr(flat, 'shape', None)}, expected ({expected},)")
    views, offset = {}, 0
    for name, shape in param_shapes(V, H, C):
        size = int(np.prod(shape))
        views[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return views


@dataclass
class ForwardCache:
    """What backward needs from forward (kernel.py and reference.py alike), and the
    buffers a later forward can reuse."""
    inputs: np.ndarray          # (T, B) int32
    resets: np.ndarray          # (T, B) int32
    h0: np.ndarray              # (B, H)
    params: np.ndarray          # (P,)
    hs: np.ndarray              # (T, B, H)
    dlogits: np.ndarray | None  # (T, B, V) softmax - onehot, or None when not kept
    activation: str
    V: int
    work: np.ndarray | None = None      # kernel scratch
    hd: np.ndarray | None = None        # (T, B, H) hs * out_mask, with output dropout
    in_mask: np.ndarray | None = None   # (T, B, H) dropout on the input rows
    out_mask: np.ndarray | None = None  # (T, B, H) dropout before the output layer


@dataclass
class ClassForwardCache:
    """What class_backward needs from class_forward (kernel.py and reference.py alike),
    and the buffers a later class_forward can reuse."""
    inputs: np.ndarray          # (T, B) int32
    targets: np.ndarray         # (T, B) int32: backward sorts the rows by class again
    resets: np.ndarray          # (T, B) int32
    h0: np.ndarray              # (B, H)
    params: np.ndarray          # (P,)
    hs: np.ndarray              # (T, B, H)
    dclass: np.ndarray | None   # (T, B, C) class softmax - onehot, or None when not kept
    dword: np.ndarray | None    # (T*B, M) word softmax - onehot by slot (rnn.h), or None
    activation: str
    V: int
    class_start: np.ndarray     # (C + 1,) int32
    direct_order: int = 0
    table_size: int = 0         # D of the table the forward read (0: no direct connections)
    history: np.ndarray | None = None   # (B, DIRECT_HISTORY) int32 inputs before step 0
    work: np.ndarray | None = None      # kernel scratch
    hd: np.ndarray | None = None        # (T, B, H) hs * out_mask, with output dropout
    in_mask: np.ndarray | None = None   # (T, B, H) dropout on the input rows
    out_mask: np.ndarray | None = None  # (T, B, H) dropout before the output layer


def class_sizes(class_start: np.ndarray) -> np.ndarray:
    """The number of words in each class (class_start as the kernel takes it)."""
    return np.diff(np.asarray(class_start, dtype=np.int64))


def frequency_classes(counts: np.ndarray, C: int) -> np.ndarray:
    """class_start (C + 1,) int32 for word counts in id order: RNNLM's frequency binning.
    Words are taken in id order (rnnkit's vocabularies are sorted by frequency) and class c
    ends where the running sum of sqrt(count) passes (c + 1) / C of its total, so frequent
    words get small classes and rare ones share large ones; every class gets at least one
    word (C <= V). Zero counts are taken as 1 (a word in the vocabulary was seen)."""
    counts = np.asarray(counts, dtype=np.float64)
    V = counts.size
    if not 1 <= C <= V:
        raise KernelError(f"classes = {C} is out of range [1, {V}] (the vocabulary size)")
    mass = np.cumsum(np.sqrt(np.maximum(counts, 1.0)))
    # class c ends after the first word whose running mass passes (c + 1) / C of the total
    ends = np.searchsorted(mass, mass[-1] * np.arange(1, C) / C, side="right") + 1
    # then every class gets a word: ends rise strictly (ends[c] >= ends[c-1] + 1, so
    # ends[c] - c never falls) and leave one word to each class after them
    c = np.arange(C - 1)
    ends = c + np.maximum.accumulate(np.maximum(ends - c, 1))
    ends = np.minimum(ends, V - C + 1 + c)
    return np.concatenate([[0], ends, [V]]).astype(np.int32)


def next_history(history: np.ndarray | None, inputs: np.ndarray, resets: np.ndarray) -> np.ndarray:
    """The (B, DIRECT_HISTORY) direct history after a batch: each row's last inputs since
    its latest reset (or continuing `history`, None = nothing before the batch), oldest
    first, -1 where there is none. What the next batch of the same rows passes as history,
    as hs[-1] is its h0."""
    T, B = inputs.shape
    K = DIRECT_HISTORY
    before = np.full((B, K), -1, np.int32) if history is None else np.asarray(history, np.int32)
    joined = np.concatenate([before, np.asarray(inputs, np.int32).T], axis=1)   # (B, K + T)
    # a row's history starts at its latest reset, or after the latest -1 of `before`
    start = np.zeros(B, np.int64)
    for b in range(B):
        gaps = np.flatnonzero(before[b] < 0)
        if gaps.size:
            start[b] = gaps[-1] + 1
        reset_steps = np.flatnonzero(resets[:, b])
        if reset_steps.size:
            start[b] = K + reset_steps[-1]
    keep = np.arange(K + T)[None, :] >= start[:, None]
    return np.where(keep, joined, -1)[:, -K:].astype(np.int32)
