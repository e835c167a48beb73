"""The flat parameter layout shared by kernel.py, reference.py and the models.

One contiguous float buffer holds, in this order (csrc/rnn.h says the same):
W_xh (V, H), W_hh (H, H), b_h (H,), W_hy (V, H), b_y (V,). Gradients and optimizer
moments use buffers of the same layout, so updates and clipping are single loops and
saving a model is saving one array. kernel.num_params asks the C kernel for the size;
a test checks it against this layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import KernelError

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")


def param_shapes(V: int, H: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each parameter, in buffer order, named after the lecture."""
    return [("W_xh", (V, H)), ("W_hh", (H, H)), ("b_h", (H,)), ("W_hy", (V, H)), ("b_y", (V,))]


def layout_size(V: int, H: int) -> int:
    if V < 1 or H < 1:
        raise KernelError(f"invalid sizes V={V}, H={H}: both must be >= 1")
    return sum(int(np.prod(shape)) for _, shape in param_shapes(V, H))


def param_views(flat: np.ndarray, V: int, H: int) -> dict[str, np.ndarray]:
    """Named views (no copies) into a flat parameter or gradient buffer."""
    expected = layout_size(V, H)
    if not isinstance(flat, np.ndarray) or flat.ndim != 1 or flat.size != expected:
        raise KernelError(f"parameter buffer has shape {getattr(flat, 'shape', None)}, expected ({expected},)")
    views, offset = {}, 0
    for name, shape in param_shapes(V, H):
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
