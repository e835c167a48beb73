"""RNN training's corpus as a memory-mapped id file (DESIGN.md section 8), so that training
takes the same memory whatever the corpus's length.

One pass over the text (`number`) splits each line into units, numbers them in order of
first occurrence (vocab.FirstOccurrence), counts them, and appends the line's ids and its
</s> to a temporary file (the stream's targets: batching.Stream) and the line's first
position to a second one. Every k-th line (k = 1 / valid_fraction, `hold_out_every`) is
held out for validation instead, as text in memory: a small share, which validation scores
line by line. A corpus of fewer than k lines holds out its last line, so a short one still
holds out one.

The counts give the vocabulary that Vocab.build makes of the lines themselves (by count,
ties by first occurrence). `Numbered.stream` then rewrites the ids once through the map
from first-occurrence ids to vocabulary ids, in the smallest unsigned dtype that holds
them (`id_dtype`: uint16 up to 65,536 units), and maps that file read-only: training
gathers its windows from the map (batching.Lanes) and gives its pages back every few
hundred windows, since mapped pages count as resident. What stays resident is what the
lanes read since: the kernel maps the whole page-cache folio (up to 2 MiB) around a page
read, so about B folios of ids and of sentence starts (64 MiB of ids for B = 32 on
nsmc's train.txt four times over, 167 MiB of ids), whatever the corpus's length.

The files live in `temp_dir` (None: the system's temporary directory) and are removed when
`number`'s block ends, however it ends (files.scratch_files: an error, Ctrl-C, SIGTERM).
The mapped data stay with the map until its last array goes: training reads them after
their names are gone, so a run killed with -9 while it trains leaves nothing behind (one
killed during the pass leaves files that a later run in that directory sweeps away).
Files are read and written a block at a time, with no Python object per unit.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Iterable, Iterator

import numpy as np

from .batching import Stream, stream_ids
from .errors import CorpusError, OutputError
from .files import scratch_files
from .units import Tokenizer
from .vocab import FirstOccurrence, Vocab

BLOCK_IDS = 1 << 22     # first-occurrence ids per read of the id file (16 MiB)
ID = np.dtype(np.int32)            # first-occurrence ids, as the pass writes them
POSITION = np.dtype(np.int64)      # sentence starts


def hold_out_every(fraction: float) -> int:
    """k: every k-th line of the corpus is held out for validation."""
    return max(2, int(round(1.0 / fraction)))


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of a vocabulary of this size."""
    return np.min_scalar_type(vocab_size - 1)


@contextlib.contextmanager
def number(blocks: Iterable[list[str]], tokenizer: Tokenizer, every: int | None = None,
           temp_dir=None) -> Iterator["Numbered"]:
    """The text, given as blocks of lines, numbered in one pass into temporary files in
    `temp_dir`, every `every`-th line held out (None: none); the files go when the block ends."""
    with scratch_files(temp_dir, ["corpus-ids", "corpus-starts", "corpus-vocab-ids"]) as paths:
        numbered = Numbered(tokenizer, every, *paths)
        with _file_errors(paths[0]):
            numbered.read(blocks)
        yield numbered


@contextlib.contextmanager
def _file_errors(path: str):
    """An OSError of the id files (a full disk) as a one-line OutputError."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write the training corpus's id file {path}: {exc.strerror or exc}; "
                          "free space there or give another --temp-dir") from None


class Numbered:
    """The training text after the pass: its first-occurrence ids in a file, their counts
    and the held-out lines."""

    def __init__(self, tokenizer: Tokenizer, every: int | None, ids_path: str, starts_path: str,
                 vocab_ids_path: str):
        self.tokenizer, self.every = tokenizer, every
        self.ids_path, self.starts_path, self.vocab_ids_path = ids_path, starts_path, vocab_ids_path
        self.numbering = FirstOccurrence()
        self.counts = np.zeros(len(self.numbering), dtype=np.int64)   # per first-occurrence id
        self.lines = 0          # training lines
        self.positions = 0      # their units and </s>'s
        self.held_out: list[str] = []
        self.last_line: tuple[str, int] | None = None   # the last training line and its start

    def read(self, blocks: Iterable[list[str]]) -> None:
        seen = 0
        with open(self.ids_path, "wb") as ids_file, open(self.starts_path, "wb") as starts_file:
            for block in blocks:
                kept = self._hold_out(block, seen)
                seen += len(block)
                if kept:
                    self._append(kept, ids_file, starts_file)
        if seen == 0:
            raise CorpusError("the training corpus has no lines")
        if self.every is not None and seen < self.every:
            if seen < 2:
                raise CorpusError(f"need at least 2 lines to hold out validation text, got {seen}; "
                                  "pass a validation file")
            self._hold_out_last()

    def _hold_out(self, block: list[str], seen: int) -> list[str]:
        """Hold out the block's lines whose number in the corpus (from 1) `every` divides;
        the others, to train on."""
        if self.every is None:
            return block
        self.held_out.extend(block[self.every - 1 - seen % self.every::self.every])
        return [line for number, line in enumerate(block, seen + 1) if number % self.every]

    def _append(self, lines: list[str], ids_file, starts_file) -> None:
        flat, lengths = self.numbering.number(self.tokenizer.split_lines(lines))
        ids, starts = stream_ids(flat, lengths)
        counts = np.bincount(ids, minlength=len(self.numbering))
        counts[:self.counts.size] += self.counts
        self.counts = counts
        ids_file.write(ids.data)
        starts_file.write((starts + self.positions).data)
        self.last_line = (lines[-1], self.positions + int(starts[-1]))
        self.lines += len(lines)
        self.positions += ids.size

    def _hold_out_last(self) -> None:
        """A corpus of fewer than `every` lines holds out its last one."""
        line, start = self.last_line
        ids = np.fromfile(self.ids_path, dtype=ID, offset=start * ID.itemsize)
        self.counts -= np.bincount(ids, minlength=self.counts.size)
        os.truncate(self.ids_path, start * ID.itemsize)
        os.truncate(self.starts_path, (self.lines - 1) * POSITION.itemsize)
        self.held_out.append(line)
        self.lines -= 1
        self.positions = start

    def unit_counts(self) -> dict[str, int]:
        """Each unit of the training lines with its count, in order of first occurrence;
        </s> counts every line's end."""
        return {unit: count for unit, count in zip(self.numbering.units(), self.counts.tolist()) if count}

    def stream(self, vocab: Vocab, independent: bool = True) -> Stream:
        """The training lines as a stream of `vocab`'s ids, memory-mapped read-only."""
        dtype = id_dtype(len(vocab))
        to_vocab = np.fromiter(map(vocab.id, self.numbering.units()), dtype=dtype, count=len(self.numbering))
        with _file_errors(self.vocab_ids_path):
            with open(self.ids_path, "rb") as source, open(self.vocab_ids_path, "wb") as target:
                while (block := np.fromfile(source, dtype=ID, count=BLOCK_IDS)).size:
                    target.write(to_vocab[block].data)
        maps = [_map(self.vocab_ids_path), _map(self.starts_path)]

        def release() -> None:
            for mapped in maps:
                mapped.madvise(mmap.MADV_DONTNEED)   # read-only file pages: read again when needed

        return Stream(np.frombuffer(maps[0], dtype=dtype), np.frombuffer(maps[1], dtype=POSITION),
                      independent, release)


def _map(path: str) -> mmap.mmap:
    with open(path, "rb") as handle:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
