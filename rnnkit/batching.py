"""Packing sentences into (T, B) batches of token ids with a reset mask.

Each sentence `w1 .. wn` becomes inputs `<s> w1 .. wn` and targets `w1 .. wn </s>`.
All sentences are laid end to end in one stream; `resets` is 1 where a sentence's
`<s>` sits (the kernel then treats h_{t-1} as zero), so every sentence is modelled
from `<s>` alone, whatever it is batched with, with no padding between sentences.

The stream is cut into B lanes at sentence boundaries (so no sentence is split
across lanes), lanes are padded at their ends only (target -1), and windows of T
steps are taken down the lanes; the hidden state is carried from one window to the
next (truncated BPTT).

In stream mode (`independent=False`) only the very first `<s>` resets: the state
flows across lines, each line's `</s>` acting as the newline token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOS_ID, EOS_ID = 1, 2  # vocab.py: <unk>=0, <s>=1, </s>=2


@dataclass
class Stream:
    """A corpus as three aligned int32 arrays of length L (one entry per position)."""
    inputs: np.ndarray
    targets: np.ndarray
    resets: np.ndarray
    sentence_starts: np.ndarray  # index of each sentence's <s> in the stream

    def __len__(self) -> int:
        return int(self.inputs.size)


def make_stream(sentences: list[np.ndarray], independent: bool = True) -> Stream:
    """Lay id sequences (without <s>/</s>) end to end as one stream of positions."""
    lengths = np.fromiter((len(s) + 1 for s in sentences), dtype=np.int64, count=len(sentences))
    total = int(lengths.sum())
    starts = np.zeros(len(sentences), dtype=np.int64)
    if len(sentences) > 1:
        np.cumsum(lengths[:-1], out=starts[1:])
    inputs = np.empty(total, dtype=np.int32)
    targets = np.empty(total, dtype=np.int32)
    inputs[starts] = BOS_ID
    targets[starts + lengths - 1] = EOS_ID
    body = np.concatenate([np.asarray(s, dtype=np.int32) for s in sentences]) if total > len(sentences) else np.empty(0, np.int32)
    # positions that hold a word: every position except each sentence's first (input)
    word_mask = np.ones(total, dtype=bool)
    word_mask[starts] = False
    inputs[word_mask] = body
    target_mask = np.ones(total, dtype=bool)
    target_mask[starts + lengths - 1] = False
    targets[target_mask] = body
    resets = np.zeros(total, dtype=np.int32)
    if independent:
        resets[starts] = 1
    elif total:
        resets[0] = 1
    return Stream(inputs, targets, resets, starts)


@dataclass
class Lanes:
    """A stream cut into B lanes, as (L_max, B) arrays padded with target -1."""
    inputs: np.ndarray
    targets: np.ndarray
    resets: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.inputs.shape[0])

    def windows(self, T: int, first: int = 0):
        """Yield (inputs, targets, resets) windows of at most T steps, C-contiguous,
        from window number `first` on (a run resumed mid-epoch skips the done ones)."""
        for start in range(first * T, self.steps, T):
            stop = min(start + T, self.steps)
            yield (np.ascontiguousarray(self.inputs[start:stop]),
                   np.ascontiguousarray(self.targets[start:stop]),
                   np.ascontiguousarray(self.resets[start:stop]))

    def num_windows(self, T: int) -> int:
        return -(-self.steps // T)


def split_lanes(stream: Stream, B: int) -> Lanes:
    """Cut the stream into B lanes of near-equal length at sentence boundaries.

    Lane k starts at the first sentence start at or after k * L / B. Fewer than B
    lanes come out when there are fewer sentences than B. Padding (input 0, target -1,
    reset 1) fills each lane's end and changes no score.
    """
    L = len(stream)
    starts = stream.sentence_starts
    ideal = (np.arange(B, dtype=np.int64) * L) // B
    cut_idx = np.unique(np.searchsorted(starts, ideal, side="left"))
    cut_idx = cut_idx[cut_idx < len(starts)]
    bounds = np.append(starts[cut_idx], L)
    lane_len = np.diff(bounds)
    n_lanes = len(lane_len)
    L_max = int(lane_len.max()) if n_lanes else 0
    inputs = np.zeros((L_max, n_lanes), dtype=np.int32)
    targets = np.full((L_max, n_lanes), -1, dtype=np.int32)
    resets = np.ones((L_max, n_lanes), dtype=np.int32)
    for lane in range(n_lanes):
        lo, hi = bounds[lane], bounds[lane + 1]
        inputs[: hi - lo, lane] = stream.inputs[lo:hi]
        targets[: hi - lo, lane] = stream.targets[lo:hi]
        resets[: hi - lo, lane] = stream.resets[lo:hi]
    if n_lanes:
        resets[0, :] = 1   # each lane starts from a zero state
    return Lanes(inputs, targets, resets)
