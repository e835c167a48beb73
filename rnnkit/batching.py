"""Packing sentences into (T, B) batches of token ids with a reset mask.

Each sentence `w1 .. wn` becomes inputs `<s> w1 .. wn` and targets `w1 .. wn </s>`.
All sentences are laid end to end in one stream; `resets` is 1 where a sentence's
`<s>` sits (the kernel then treats h_{t-1} as zero), so every sentence is modelled
from `<s>` alone, whatever it is batched with, with no padding between sentences.

A stream is stored as its targets alone (`Stream.ids`) and the position of each
sentence's first unit (`Stream.starts`): the inputs are the targets moved on by one
position, with `<s>` at each sentence start. The ids may be a read-only memory map
(RNN training's id file, idcorpus.py): batches are gathered from it window by window,
so nothing of the size of the corpus is held in memory.

The stream is cut into B lanes at sentence boundaries (so no sentence is split
across lanes), lanes are padded at their ends only (input 0, target -1, reset 1),
and windows of T steps are taken down the lanes; the hidden state is carried from
one window to the next (truncated BPTT).

In stream mode (`independent=False`) only each lane's first `<s>` resets: the state
flows across lines, each line's `</s>` acting as the newline token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

BOS_ID, EOS_ID = 1, 2  # vocab.py: <unk>=0, <s>=1, </s>=2
RELEASE_EVERY = 256    # windows between two calls of a stream's `release`


@dataclass
class Stream:
    """A corpus as one stream of positions: `ids` holds each sentence's units and its
    </s> (the targets, any integer dtype), `starts` the position of each sentence's
    first one (int64, increasing from 0)."""
    ids: np.ndarray
    starts: np.ndarray
    independent: bool = True
    # for a memory-mapped stream: give back the pages read so far, which count as resident
    release: Callable[[], None] | None = None

    def __len__(self) -> int:
        return int(self.ids.size)


def stream_ids(flat: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stream's ids and starts (int32, int64) for sentences given end to end (`flat`)
    with their lengths."""
    ends = np.cumsum(lengths + 1)
    ids = np.full(int(ends[-1]) if ends.size else 0, EOS_ID, dtype=np.int32)
    body = np.ones(ids.size, dtype=bool)
    body[ends - 1] = False
    ids[body] = flat
    return ids, ends - (lengths + 1)


def make_stream(sentences: list[np.ndarray], independent: bool = True) -> Stream:
    """Lay id sequences (without <s>/</s>) end to end as one stream of positions."""
    lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
    flat = np.concatenate([np.zeros(0, np.int32), *(np.asarray(s, dtype=np.int32) for s in sentences)])
    return Stream(*stream_ids(flat, lengths), independent)


class Lanes:
    """A stream cut into lanes: lane k holds positions bounds[k]:bounds[k + 1]."""

    def __init__(self, stream: Stream, bounds: np.ndarray):
        self.stream = stream
        self.bounds = bounds
        self.lengths = np.diff(bounds)

    @property
    def width(self) -> int:
        """The number of lanes (B, or fewer for a stream of fewer sentences)."""
        return int(self.lengths.size)

    @property
    def steps(self) -> int:
        """The longest lane's length: the rows of all windows together."""
        return int(self.lengths.max()) if self.width else 0

    @property
    def tokens(self) -> int:
        """Predicted positions (targets that are not padding)."""
        return len(self.stream)

    def windows(self, T: int, first: int = 0):
        """Yield (inputs, targets, resets) windows of at most T steps, C-contiguous int32,
        from window number `first` on (a run resumed mid-epoch skips the done ones)."""
        # each lane's next sentence start: found once, then moved down the lane window by
        # window, so that only the starts near the lanes are read (a binary search per
        # window would read pages all over a memory-mapped stream)
        sentence = np.searchsorted(self.stream.starts, self.bounds[:-1] + first * T)
        for number, start in enumerate(range(first * T, self.steps, T), 1):
            window, sentence = self._window(start, min(start + T, self.steps), sentence)
            yield window
            if self.stream.release is not None and number % RELEASE_EVERY == 0:
                self.stream.release()

    def _window(self, start: int, stop: int, sentence: np.ndarray):
        """Rows start:stop of the lanes, and `sentence` for the next window: sentence[k]
        is the first sentence that starts in lane k at or after row `start` (or later)."""
        rows = np.arange(start, stop, dtype=np.int64)[:, None]
        inside = rows < self.lengths                  # False in a lane's padding
        first = self.bounds[:-1] + start              # each lane's position at row `start`
        positions = np.where(inside, first + rows - start, 0)
        # the sentences that start in the window: at most one a row, from `sentence` on
        starts = self.stream.starts
        candidates = sentence + np.arange(stop - start, dtype=np.int64)[:, None]
        row = starts[np.minimum(candidates, starts.size - 1)] - first
        here = (candidates < starts.size) & (row < np.minimum(stop, self.lengths) - start)
        at_start = np.zeros(inside.shape, dtype=bool)
        at_start[row[here], np.nonzero(here)[1]] = True
        ids = self.stream.ids
        targets = np.where(inside, ids[positions].astype(np.int32), -1)
        inputs = np.where(at_start, BOS_ID, ids[positions - 1].astype(np.int32))   # -1: masked at position 0
        inputs[~inside] = 0
        resets = ~inside | (rows == 0)                # each lane starts from a zero state
        if self.stream.independent:
            resets |= at_start
        return (inputs, targets, resets.astype(np.int32)), sentence + here.sum(axis=0)

    def num_windows(self, T: int) -> int:
        return -(-self.steps // T)

    def unlane(self, values: np.ndarray) -> np.ndarray:
        """Per-position values of all windows stacked ((steps, width), as `windows` lays
        them out) back in stream order."""
        inside = np.arange(self.steps)[:, None] < self.lengths
        # lanes hold consecutive stream slices; column-major order of their cells restores it
        return values.T[inside.T]


def split_lanes(stream: Stream, B: int) -> Lanes:
    """Cut the stream into B lanes of near-equal length at sentence boundaries.

    Lane k starts at the first sentence start at or after k * L / B. Fewer than B
    lanes come out when there are fewer sentences than B.
    """
    L = len(stream)
    starts = stream.starts
    ideal = (np.arange(B, dtype=np.int64) * L) // B
    cut_idx = np.unique(np.searchsorted(starts, ideal, side="left"))
    cut_idx = cut_idx[cut_idx < len(starts)]
    return Lanes(stream, np.append(starts[cut_idx], L).astype(np.int64))
