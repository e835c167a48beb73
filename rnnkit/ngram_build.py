"""Building n-gram models: encoding, counting and smoothing, in memory or spilled to disk.

Encoding
    Text arrives in blocks of sentences (one block for `NgramModel.train`, 4 MiB blocks
    from `units.read_line_blocks` for files). Units are numbered in
    first-occurrence order (lmplz's) and every sentence becomes `<s> w1 .. wn </s>` in
    one flat int32 stream `seq`, with `rem` = the positions left in its sentence.

Counting (NumPy over integer ids, no per-n-gram Python objects)
    The n-grams of order n are numbered in KenLM's suffix order with one int64 key per
    window, key = index of its (n-1)-gram suffix * V + id(first word). The positions are
    cut into chunks; each chunk's keys are sorted and counted (`np.unique`) into a run,
    and the runs are merged k-way, a block of each at a time, into the distinct n-grams
    and their counts. A second pass maps each chunk's run onto the merged keys, which
    gives every window its n-gram's index (the next order's suffix index) and every
    n-gram its context. Keys stay below count(n-1) * V; orders go up to MAX_ORDER (100).

Bounded memory (`memory`, `temp_dir`: lmplz's -S and -T)
    Without `memory` the whole corpus is one chunk held in memory. With it, a chunk is
    `memory // CHUNK_BYTES_PER_POSITION` positions; a corpus of one chunk is still
    counted in memory, a longer one keeps its position streams (seq, rem, the window
    indices of the last order) and its runs in files under `temp_dir`, read back a
    chunk at a time with explicit reads (no memory maps, whose pages would count as
    resident). Both paths run the same code, and the arithmetic is per record in the
    same functions, so the model is the same to the bit. What stays in memory whatever
    the budget: the vocabulary, packed into bytes before counting (the Python strs and
    dict that numbered the units, ~130 bytes a unit, go then), and the distinct n-grams
    of every order with their counts and indices (about 21 bytes an n-gram), which turn
    into the model (about 30 bytes an n-gram with its hash tables): each order's counts
    go once the model has what it needs of them, and the hash tables are built after the
    last has gone: the counts and the hash tables are never held together.

Sharded over Dask (`build_sharded`, rnnkit/sharding.py)
    The chunks are shards of the text by byte range on the workers (ShardChunks): each
    encodes its shard with its own first-occurrence ids, which the client maps onto the
    vocabulary of the whole text in shard order (the order one pass gives), and counts
    its runs; the client merges them as it merges local runs. kn and wb are then
    estimated in partitions by last word on the workers (see "sharded" below).

Smoothing: see rnnkit/ngram.py's docstring. The estimators work on the count tables in
global aggregations (adjusted counts by suffix, count-of-counts, sums by context) and
per-record arithmetic (`_kn_discounts`, `_gamma`, `_interpolate`); see "smoothing" below.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections import defaultdict
from itertools import count, repeat
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import arpa as _arpa
from . import kernel
from .arpa import MAX_ORDER
from .errors import ConfigError, CorpusError
from .ngram import SMOOTHINGS, NgramModel
from .spelling import SpellingModel
from .units import READ_BLOCK_BYTES, Tokenizer
from .vocab import BOS_ID, EOS_ID, SPECIALS, FirstOccurrence, PackedVocab, Vocab

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
# Bytes a counting chunk needs per position: the streams (seq, rem, two window indices),
# the int64 key, and np.unique's sort (its permutation, the sorted keys and the inverse).
CHUNK_BYTES_PER_POSITION = 64
MIN_MEMORY = 1 << 16
_F32 = np.float32


def check_settings(order, smoothing: str, unit, k: float, prune) -> tuple[int, list[int]]:
    """(order, per-order prune thresholds) after checking every training setting; `unit`
    is a unit name or a Tokenizer."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
        raise ConfigError(f"order must be an integer from 1 to {MAX_ORDER}; got {order!r}")
    if smoothing not in SMOOTHINGS:
        raise ConfigError(f"smoothing must be one of {', '.join(SMOOTHINGS)}; got {smoothing!r}")
    Tokenizer.of(unit)   # a ConfigError for an unknown unit
    if smoothing == "addk" and not (k > 0 and math.isfinite(k)):
        raise ConfigError(f"k must be a positive number; got {k!r}")
    order = int(order)
    thresholds = [0] * order
    if prune is not None:
        prune = [int(t) for t in prune]
        if not prune or min(prune) < 0 or prune[0] != 0 or prune != sorted(prune):
            raise ConfigError(f"prune must be non-decreasing counts starting with 0 (unigrams are not pruned); got {prune}")
        thresholds = (prune + [prune[-1]] * order)[:order]
    return order, thresholds


def build(blocks: Iterable, order: int, smoothing: str = "kn", unit: str | Tokenizer = "word", k: float = 1.0,
          prune: Sequence[int] | None = None, memory: int | None = None, temp_dir=None):
    """An NgramModel from blocks of sentences (lists of strings split into `unit`s, or of
    unit lists); see `NgramModel.train`. `memory` (bytes) bounds the counting; spilled
    files go to `temp_dir` (default: the system's temporary directory)."""
    t0 = time.perf_counter()
    order, thresholds = check_settings(order, smoothing, unit, k, prune)
    with Workspace(memory, temp_dir) as work:
        tables, vocab, spelling, counted = _count_local(blocks, unit, order, work)
    return _estimate_model(tables, vocab, spelling, order, smoothing, unit, k, prune, thresholds, counted, t0)


def _count_local(blocks: Iterable, unit, order: int, work: "Workspace"):
    """(count tables, packed vocabulary, spelling model, sentences and tokens) of the
    blocks, encoded and counted in this process; the position streams go when it returns."""
    encoder = Encoder(Tokenizer.of(unit))
    positions = Positions(work)
    for block in blocks:
        positions.append(*encoder.encode(block))
    _check_tokens(encoder.tokens)
    counted = {"sentences": encoder.sentences, "tokens": encoder.tokens}
    vocab, spelling = _model_vocab(encoder.vocab())
    del encoder   # its numbering is the Python vocabulary
    return count_ngrams(LocalChunks(positions, work), len(vocab), order), vocab, spelling, counted


def build_sharded(client, sources: list, order: int, smoothing: str = "kn", unit: str = "word",
                  k: float = 1.0, prune: Sequence[int] | None = None):
    """`build` over a Dask cluster (see rnnkit.sharding): the sources' shards are read,
    encoded and counted on the workers, the runs merged here; kn and wb are estimated
    in partitions by last word on the workers (_estimate_interpolated_sharded), addk and
    mle here. The model is the one `build` makes of the same text, to the bit."""
    from .sharding import SHARDS_PER_WORKER, check_text, make_shards, worker_count
    t0 = time.perf_counter()
    order, thresholds = check_settings(order, smoothing, unit, k, prune)
    shards = make_shards(sources, worker_count(client) * SHARDS_PER_WORKER)
    encoded = [client.submit(_shard_encode, shard, unit, pure=False) for shard in shards]
    summaries = client.gather([client.submit(_item, future, 1) for future in encoded])
    check_text(shards, [summary["any_text"] for summary in summaries])
    counted = {key: sum(summary[key] for summary in summaries) for key in ("sentences", "tokens")}
    _check_tokens(counted["tokens"])
    # the vocabulary in first-occurrence order over the shards in order, as one pass gives
    ids = defaultdict(count().__next__)
    states = []
    for future, summary in zip(encoded, summaries):
        mapping = np.fromiter(map(ids.__getitem__, summary["units"]), dtype=np.int32, count=len(summary["units"]))
        states.append(client.submit(_shard_remap, client.submit(_item, future, 0), mapping, pure=False))
    del encoded, summaries
    ids.default_factory = None
    vocab, spelling = _model_vocab(Vocab(list(ids), ids))
    del ids
    tables = count_ngrams(ShardChunks(client, states), len(vocab), order)
    model = _estimate_model(tables, vocab, spelling, order, smoothing, unit, k, prune, thresholds, counted, t0,
                            client)
    model.info["corpus"] = corpus_name(sources)
    return model


def corpus_name(sources: list) -> str:
    """What the training record calls the sources ('-' for a stream: standard input)."""
    return ", ".join("-" if hasattr(source, "read") else str(source) for source in sources)


def _check_tokens(tokens: int) -> None:
    if tokens == 0:
        raise CorpusError("the training text has no tokens (empty corpus)")


def _model_vocab(vocab: Vocab) -> tuple[PackedVocab, SpellingModel]:
    """The model's vocabulary, packed, and its spelling model (fitted on the distinct
    training units: an n-gram's vocabulary). Made before counting, so that the Python
    vocabulary (a str and a dict entry per unit, ~130 bytes a unit) is let go before the
    counts grow and the spelling model's set of units comes and goes while little is held."""
    spelling = SpellingModel.train([vocab.tokens])
    packed = PackedVocab.from_vocab(vocab)
    del packed.tokens   # let the strs go with the Vocab; decoded again only if asked for
    return packed, spelling


def _estimate_model(tables, vocab, spelling, order, smoothing, unit, k, prune, thresholds, counted, t0, client=None):
    """The NgramModel of the count tables (smoothing on the cluster of `client` if given);
    `vocab` is the PackedVocab of _model_vocab."""
    V = len(vocab)
    keep = _prune_masks(tables, order, thresholds)
    info = {"smoothing": smoothing, **counted, "types": V - len(SPECIALS),
            "prune": thresholds if prune is not None else None}
    if smoothing == "addk":
        info["k"] = float(k)
    if smoothing in ("kn", "wb") and client is not None:
        estimates = _estimate_interpolated_sharded(client, tables, order, V, keep, smoothing, info)
    elif smoothing in ("kn", "wb"):
        estimates = _estimate_interpolated(tables, order, V, keep, smoothing, info)
    else:
        estimates = _estimate_backoff(tables, order, V, keep, smoothing, k, info)
    keys, prob, bo, extendable = _backoff_model(tables, order, V, keep, estimates)
    # the query structures a model file stores (see NgramModel): a hash table per order
    hash_tables = kernel.ngram_hash_tables(keys, V)
    info["ngrams"] = [V] + [len(keys[n]) for n in range(2, order + 1)]
    info["train_seconds"] = round(time.perf_counter() - t0, 3)
    return NgramModel(order, vocab, keys, prob, bo, unit=unit, smoothing=smoothing, info=info,
                      spelling=spelling, extendable=extendable, tables=hash_tables)


# ---------------------------------------------------------------- memory and spill files

def parse_size(text: str) -> int:
    """Bytes from lmplz-style sizes: 500M, 2G, 80% (of physical memory), 1024 (bytes)."""
    units = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper()
    suffix = value[-1:] if value[-1:] in "BKMGT%" else ""
    try:
        number = float(value[:len(value) - len(suffix)])
    except ValueError:
        number = -1.0
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"memory size must be a positive number with an optional suffix "
                          f"B, K, M, G, T or %; got {text!r}")
    if suffix == "%":
        if number > 100:
            raise ConfigError(f"memory size must be at most 100% of physical memory; got {text!r}")
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * number / 100)
    return int(number * units[suffix])


def read_block_bytes(memory: int | None) -> int:
    """Bytes of text read at a time: as Python lines and units a block takes up to ~30
    times its size (a Hangul syllable is a 76-byte str), so a budget gets 1/32 of itself."""
    return READ_BLOCK_BYTES if memory is None else int(min(READ_BLOCK_BYTES, max(memory // 32, 1 << 12)))


class Workspace:
    """The memory budget and, once something spills, a private directory under temp_dir
    that is removed with everything in it when the build ends (or fails)."""

    def __init__(self, memory: int | None, temp_dir=None):
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, np.integer))
                                   or memory < MIN_MEMORY):
            raise ConfigError(f"memory must be at least {MIN_MEMORY} bytes; got {memory!r}")
        if temp_dir is not None and not Path(temp_dir).is_dir():
            raise ConfigError(f"temporary directory {temp_dir} does not exist or is not a directory")
        self.memory = memory
        self.temp_dir = temp_dir
        self._dir = None
        self._names = count()

    @property
    def chunk_positions(self) -> int | None:
        """Positions per counting chunk (None: everything in one chunk)."""
        return None if self.memory is None else self.memory // CHUNK_BYTES_PER_POSITION

    def new_file(self) -> Path:
        if self._dir is None:
            try:
                self._dir = Path(tempfile.mkdtemp(prefix="rnnkit-ngram-", dir=self.temp_dir))
            except OSError as exc:
                raise CorpusError(f"cannot create a temporary directory in {self.temp_dir or tempfile.gettempdir()}: "
                                  f"{exc.strerror or exc}") from None
        return self._dir / f"{next(self._names)}.bin"

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class Column:
    """An append-only integer array, in memory or (spilled) in a file of the workspace."""

    def __init__(self, work: Workspace, dtype, spilled: bool = False):
        self.work, self.dtype = work, np.dtype(dtype)
        self.length = 0
        self._parts: list[np.ndarray] = []
        self._path = None
        if spilled:
            self.spill()

    def __len__(self) -> int:
        return self.length

    @property
    def spilled(self) -> bool:
        return self._path is not None

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if self._path is None:
            self._parts.append(values)
        else:
            self._write(values)
        self.length += len(values)

    def spill(self) -> None:
        """Move what is held in memory to a file; later appends go there too."""
        if self._path is None:
            self._path = self.work.new_file()
            self._path.touch()
            parts, self._parts = self._parts, []
            for part in parts:
                self._write(part)

    def _write(self, values: np.ndarray) -> None:
        try:
            with open(self._path, "ab") as handle:
                values.tofile(handle)
        except OSError as exc:
            raise CorpusError(f"cannot write the spill file {self._path}: {exc.strerror or exc}") from None

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """values[start:stop] (a view when in memory, a fresh array when spilled)."""
        stop = self.length if stop is None else min(stop, self.length)
        if self._path is None:
            if len(self._parts) > 1:
                self._parts = [np.concatenate(self._parts)]
            return self._parts[0][start:stop] if self._parts else np.zeros(0, self.dtype)
        count = max(stop - start, 0)
        return np.fromfile(self._path, dtype=self.dtype, count=count, offset=start * self.dtype.itemsize)

    def drop(self) -> None:
        self._parts = []
        if self._path is not None:
            self._path.unlink(missing_ok=True)


# ---------------------------------------------------------------- encoding

class Encoder:
    """Numbers units in first-occurrence order (KenLM's) over blocks of sentences."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.numbering = FirstOccurrence()
        self.sentences = 0
        self.tokens = 0

    def vocab(self) -> Vocab:
        return self.numbering.vocab()

    def encode(self, block) -> tuple[np.ndarray, np.ndarray]:
        """seq and rem of a block of sentences; rem[i] = positions after i in its sentence
        (0 at `</s>`)."""
        block = list(block)
        if block and all(map(isinstance, block, repeat(str))):
            token_lists = self.tokenizer.split_lines(block)
        else:
            token_lists = [list(x) for x in block]
        del block
        flat, lengths = self.numbering.number(token_lists)
        del token_lists
        # literal <s> and </s> are whitespace (as lmplz reads them); a literal <unk> is the
        # unknown word and is counted like any word (lmplz's default; PTB relies on it)
        special = (flat == BOS_ID) | (flat == EOS_ID)
        if special.any():
            sentence_of = np.repeat(np.arange(len(lengths)), lengths)
            lengths = lengths - np.bincount(sentence_of[special], minlength=len(lengths))
            flat = flat[~special]
        self.sentences += len(lengths)
        self.tokens += int(lengths.sum())
        sent_len = lengths + 2
        ends = np.cumsum(sent_len)
        starts = ends - sent_len
        total = int(ends[-1]) if len(ends) else 0
        seq = np.empty(total, dtype=np.int32)
        inner = np.ones(total, dtype=bool)
        inner[starts] = False
        inner[ends - 1] = False
        seq[inner] = flat
        seq[starts] = BOS_ID
        seq[ends - 1] = EOS_ID
        rem = (np.repeat(ends - 1, sent_len) - np.arange(total)).astype(np.int32)
        return seq, rem


class Positions:
    """The corpus as position streams (seq, rem) cut into counting chunks; held in memory
    while they fit one chunk, spilled to files once they do not."""

    def __init__(self, work: Workspace):
        self.work = work
        self.seq = Column(work, np.int32)
        self.rem = Column(work, np.int32)

    def __len__(self) -> int:
        return len(self.seq)

    def append(self, seq: np.ndarray, rem: np.ndarray) -> None:
        self.seq.append(seq)
        self.rem.append(rem)
        limit = self.work.chunk_positions
        if limit is not None and len(self.seq) > limit:
            self.seq.spill()
            self.rem.spill()

    def chunks(self) -> list[tuple[int, int]]:
        size = self.work.chunk_positions or max(len(self), 1)
        return [(start, min(start + size, len(self))) for start in range(0, len(self), size)]


# ---------------------------------------------------------------- counting

class Run:
    """One chunk's distinct keys (sorted) and their counts, where merge_runs reads them."""

    def __init__(self, work: Workspace, keys: np.ndarray, counts: np.ndarray, spilled: bool = False):
        self.keys, self.counts = Column(work, keys.dtype, spilled), Column(work, counts.dtype, spilled)
        self.keys.append(keys)
        self.counts.append(counts)

    def drop(self) -> None:
        self.keys.drop()
        self.counts.drop()


# What each chunk does for order n, wherever the chunk is (here or on a Dask worker):
# `lower` holds the window indices of order n-1 from the chunk's first position to one past
# its last (a window's suffix starts one position later; a shard of whole sentences needs
# no extra one), `rem` the positions left in each sentence.

def chunk_run(seq: np.ndarray, rem: np.ndarray, lower: np.ndarray, n: int, V: int):
    """(sorted distinct keys, counts, each window's index into them) of the chunk's windows."""
    offsets = np.flatnonzero(rem >= n - 1)
    key = _arpa.ngram_keys(lower[offsets + 1], seq[offsets], V)
    del offsets
    keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return keys, counts, inverse.astype(_index_dtype(len(keys), V))


def chunk_advance(rem: np.ndarray, lower: np.ndarray, inverse: np.ndarray, n: int, n_keys: int,
                  to_global: np.ndarray | None, small):
    """(the window index of order n at each position, -1 where none starts; the context of
    each of the chunk's `n_keys` n-grams), to_global mapping them into all n-grams (None:
    they are all of them)."""
    offsets = np.flatnonzero(rem >= n - 1)
    window = np.full(len(rem), -1, dtype=small)
    window[offsets] = inverse if to_global is None else to_global[inverse]
    context = np.empty(n_keys, dtype=lower.dtype)
    context[inverse] = lower[offsets]
    return window, context


class LocalChunks:
    """The position streams cut into counting chunks in this process; with more than one
    chunk, runs, inverses and window indices live in files."""

    def __init__(self, positions: Positions, work: Workspace):
        self.positions, self.work = positions, work
        self.bounds = positions.chunks()
        self.spill = len(self.bounds) > 1
        self.lower = positions.seq  # window indices of order n-1 (order 1: the word ids)
        self.runs_made: list[tuple[Run, Column]] = []
        self.merge_positions = work.chunk_positions  # what merge_runs may buffer

    def unigram_counts(self, V: int) -> np.ndarray:
        counts = np.zeros(V, dtype=np.int64)
        for start, stop in self.bounds:
            counts += np.bincount(self.positions.seq.read(start, stop), minlength=V)
        return counts

    def runs(self, n: int, V: int) -> list[Run]:
        self.runs_made = []
        for start, stop in self.bounds:
            seq, rem = self.positions.seq.read(start, stop), self.positions.rem.read(start, stop)
            keys, counts, inverse = chunk_run(seq, rem, self.lower.read(start, stop + 1), n, V)
            inverses = Column(self.work, inverse.dtype, self.spill)
            inverses.append(inverse)
            self.runs_made.append((Run(self.work, keys, counts, self.spill), inverses))
        return [run for run, _ in self.runs_made]

    def advance(self, n: int, keys: np.ndarray, small):
        """Per chunk, in order: (where its n-grams are among all of them, `keys`; None when
        it is the only chunk), and their contexts. One chunk at a time: nothing here grows
        with the number of chunks."""
        windows = Column(self.work, small, self.spill)
        for (start, stop), (run, inverses) in zip(self.bounds, self.runs_made):
            # a run's keys are a sorted subset of the merged ones
            mapping = None if len(self.runs_made) == 1 else np.searchsorted(keys, run.keys.read()).astype(small)
            window, context = chunk_advance(self.positions.rem.read(start, stop), self.lower.read(start, stop + 1),
                                            inverses.read(), n, len(run.keys), mapping, small)
            windows.append(window)
            run.drop()
            inverses.drop()
            yield mapping, context
        if self.lower is not self.positions.seq:
            self.lower.drop()
        self.lower = windows


def count_ngrams(chunks, V: int, order: int) -> list[dict]:
    """Distinct n-grams of every order in suffix order, with raw counts and structure,
    from chunks counted here (LocalChunks) or on Dask workers (ShardChunks).

    Per order n >= 2: keys (sorted int64), count, suffix (index in order n-1) and context
    (index of the prefix w1..w(n-1) in order n-1); the first word is keys % V.
    """
    tables = [None, {"count": chunks.unigram_counts(V)}]
    index_type = np.int32  # of the window indices of order n-1 (order 1: word ids)
    for n in range(2, order + 1):
        if len(tables[n - 1]["count"]) and (len(tables[n - 1]["count"]) - 1) >= (2**63 - 1) // V:
            raise CorpusError(f"too many {n - 1}-grams for 64-bit keys")
        keys, counts = merge_runs(chunks.runs(n, V), chunks.merge_positions)
        small = _index_dtype(len(keys), V)
        context = None
        for mapping, part in chunks.advance(n, keys, small):
            if mapping is None:
                context = part
                continue
            if context is None:
                context = np.empty(len(keys), dtype=index_type)
            context[mapping] = part
        tables.append({"keys": keys, "count": counts.astype(small), "suffix": (keys // V).astype(index_type),
                       "context": context})
        del counts
        index_type = small
    return tables


class ShardChunks:
    """The chunks of count_ngrams as shards on Dask workers: each shard's state (seq, rem,
    the window indices of the last order and the inverse of its last run) stays on its
    worker; runs and contexts come here."""

    merge_positions = None  # the runs are in memory here

    def __init__(self, client, states: list):
        self.client, self.states = client, states
        self.work = Workspace(None)
        self.run_sizes: list[int] = []
        self.run_keys: list[np.ndarray] = []

    def _step(self, function, *args) -> list:
        results = [self.client.submit(function, state, *[a[i] if isinstance(a, list) else a for a in args], pure=False)
                   for i, state in enumerate(self.states)]
        self.states = [self.client.submit(_item, result, 0) for result in results]
        return self.client.gather([self.client.submit(_item, result, 1) for result in results])

    def unigram_counts(self, V: int) -> np.ndarray:
        futures = [self.client.submit(_shard_unigrams, state, V, pure=False) for state in self.states]
        return np.sum(self.client.gather(futures), axis=0, dtype=np.int64)

    def runs(self, n: int, V: int) -> list[Run]:
        runs = [Run(self.work, keys, counts) for keys, counts in self._step(_shard_run, n, V)]
        self.run_sizes = [len(run.keys) for run in runs]
        self.run_keys = [run.keys.read() for run in runs]
        return runs

    def advance(self, n: int, keys: np.ndarray, small):
        """As LocalChunks.advance; the mappings go to the shards, their contexts come back."""
        mappings = [None] if len(self.states) == 1 else \
            [np.searchsorted(keys, run_keys).astype(small) for run_keys in self.run_keys]
        self.run_keys = []
        yield from zip(mappings, self._step(_shard_advance, n, self.run_sizes, mappings, small))


def _item(pair, index: int):
    return pair[index]


def _shard_encode(shard, unit: str):
    """(state: seq and rem in the shard's own ids; summary: its units in first-occurrence
    order, sentences, tokens, whether it has a non-blank line)."""
    encoder = Encoder(Tokenizer.of(unit))
    seqs, rems, any_text = [], [], False
    for block in shard.blocks():
        any_text = any_text or any(line.strip() for line in block)
        seq, rem = encoder.encode(block)
        seqs.append(seq)
        rems.append(rem)
    empty = [np.zeros(0, np.int32)]
    state = {"seq": np.concatenate(seqs or empty), "rem": np.concatenate(rems or empty)}
    summary = {"units": encoder.vocab().tokens, "sentences": encoder.sentences, "tokens": encoder.tokens,
               "any_text": any_text}
    return state, summary


def _shard_remap(state: dict, mapping: np.ndarray) -> dict:
    seq = mapping[state["seq"]]
    return {"seq": seq, "rem": state["rem"], "lower": seq}


def _shard_unigrams(state: dict, V: int) -> np.ndarray:
    return np.bincount(state["seq"], minlength=V)


def _shard_run(state: dict, n: int, V: int):
    keys, counts, inverse = chunk_run(state["seq"], state["rem"], state["lower"], n, V)
    return {**state, "inverse": inverse}, (keys, counts)


def _shard_advance(state: dict, n: int, n_keys: int, to_global, small):
    window, context = chunk_advance(state["rem"], state["lower"], state["inverse"], n, n_keys, to_global, small)
    return {"seq": state["seq"], "rem": state["rem"], "lower": window}, context


def _index_dtype(size: int, V: int):
    return np.int32 if size < 2**31 and V < 2**31 else np.int64


def merge_runs(runs: list[Run], memory_positions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The union of the runs' sorted keys with their counts summed (int64), merged k-way
    with a buffered block of each run: every key up to the smallest last key of a buffer
    whose run goes on is final, since that run's later keys are all larger."""
    if len(runs) == 1:
        return runs[0].keys.read(), runs[0].counts.read().astype(np.int64)
    block = max((memory_positions or 0) // len(runs), 1024)
    read = [0] * len(runs)
    empty = np.zeros(0, np.int64)
    buffers = [(empty, empty)] * len(runs)
    keys_out, counts_out = [empty], [empty]
    while True:
        for i, run in enumerate(runs):
            if not len(buffers[i][0]) and read[i] < len(run.keys):
                buffers[i] = (run.keys.read(read[i], read[i] + block),
                              run.counts.read(read[i], read[i] + block).astype(np.int64))
                read[i] += len(buffers[i][0])
        if not any(len(keys) for keys, _ in buffers):
            break
        bounds = [keys[-1] for (keys, _), done, run in zip(buffers, read, runs) if done < len(run.keys)]
        take = [len(keys) if not bounds else int(np.searchsorted(keys, min(bounds), side="right"))
                for keys, _ in buffers]
        key = np.concatenate([keys[:t] for (keys, _), t in zip(buffers, take)])
        cnt = np.concatenate([counts[:t] for (_, counts), t in zip(buffers, take)])
        buffers = [(keys[t:], counts[t:]) for (keys, counts), t in zip(buffers, take)]
        order = np.argsort(key, kind="stable")
        key, cnt = key[order], cnt[order]
        first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        keys_out.append(key[first])
        counts_out.append(np.add.reduceat(cnt, first))
    return np.concatenate(keys_out), np.concatenate(counts_out)


def _prune_masks(tables, order, thresholds) -> list:
    """keep[n] for every order: count above the threshold, or needed by a kept longer n-gram."""
    keep = [None] * (order + 1)
    keep[1] = np.ones(len(tables[1]["count"]), dtype=bool)
    needed = None
    for n in range(order, 1, -1):
        k = tables[n]["count"] > thresholds[n - 1]
        if needed is not None:
            k |= needed
        keep[n] = k
        size = len(tables[n - 1]["count"])
        needed = np.zeros(size, dtype=bool)
        needed[tables[n]["suffix"][k]] = True
        needed[tables[n]["context"][k]] = True
    return keep


# ---------------------------------------------------------------- smoothing
#
# An estimator yields (n, p, gamma) order by order, lowest first: p per n-gram, gamma per
# context (the n-grams of order n-1). Each order is two global aggregations (a statistic
# per n-gram: adjusted counts by suffix; sums over each context's n-grams) and then
# arithmetic per record (per context: gamma; per n-gram: p, joined to its context's sums
# and gamma and to its suffix's p). Only the joins differ between a local and a sharded
# build, so the floating-point operations, and the model, are the same.

def _first(tables, n: int, V: int) -> np.ndarray:
    """The first word of every n-gram of order n >= 2 (derived: few need it)."""
    return (tables[n]["keys"] % V).astype(np.int32)


def _adjusted_counts(tables, n: int, order: int, V: int, smoothing: str, first_word: int = 0) -> np.ndarray:
    """The per-n-gram statistic (int64): kn's adjusted counts (distinct left extensions,
    a bincount of order n+1 by suffix) below the top order except for n-grams that start
    with <s>, raw counts otherwise; <s> itself gets 0 (tables may be a partition whose
    words start at `first_word`)."""
    if smoothing == "kn" and n < order:
        a = np.bincount(tables[n + 1]["suffix"], minlength=len(tables[n]["count"])).astype(np.int64)
        if n > 1:
            starts_bos = _first(tables, n, V) == BOS_ID
            a[starts_bos] = tables[n]["count"][starts_bos]
    else:
        a = tables[n]["count"].astype(np.int64)
    if n == 1 and 0 <= BOS_ID - first_word < len(a):
        a[BOS_ID - first_word] = 0
    return a


def count_of_counts(a: np.ndarray) -> list[int]:
    """N_0 .. N_4: how many n-grams have statistic 0 .. 4 (additive over shards)."""
    return [int(np.count_nonzero(a == j)) for j in range(5)]


def _kn_discounts(nk: Sequence[int]) -> tuple[np.ndarray, bool]:
    """Chen & Goodman eq. 26 in float32 like lmplz from the count-of-counts;
    (D0..D3, used_fallback)."""
    try:
        if any(nk[j] == 0 for j in (1, 2, 3)):
            raise ArithmeticError
        y = _F32(nk[1]) / _F32(nk[1] + 2.0 * nk[2])
        d = [_F32(0)]
        for j in (1, 2, 3):
            dj = _F32(j) - _F32(j + 1) * y * _F32(nk[j + 1]) / _F32(nk[j])
            if dj < 0 or dj > j:
                raise ArithmeticError
            d.append(_F32(dj))
        return np.array(d, dtype=_F32), False
    except ArithmeticError:
        return np.array((0.0,) + FALLBACK_DISCOUNTS, dtype=_F32), True


def _contexts(tables, n):
    """(context index per n-gram, number of contexts) for order n."""
    if n == 1:
        return np.zeros(len(tables[1]["count"]), dtype=np.int64), 1
    return tables[n]["context"], len(tables[n - 1]["count"])


def context_sums(ctx: np.ndarray, n_ctx: int, a: np.ndarray, kept: np.ndarray) -> dict:
    """Integer sums over each context's n-grams (additive over shards): the total of the
    statistic, how many kept n-grams have it 1, 2, 3+, and the pruned n-grams' total."""
    live = kept & (a > 0)
    cat = np.minimum(a, 3).astype(np.int8)
    sums = {"total": np.bincount(ctx, weights=a, minlength=n_ctx).astype(np.int64),
            "pruned": np.bincount(ctx[~kept], weights=a[~kept], minlength=n_ctx).astype(np.int64)}
    for j in (1, 2, 3):  # at most one per n-gram: int32 unless there are 2**31 n-grams
        sums[f"n{j}"] = np.bincount(ctx[live & (cat == j)], minlength=n_ctx).astype(_index_dtype(len(a), 0))
    return sums


def _gamma(sums: dict, smoothing: str, d: np.ndarray | None) -> np.ndarray:
    """The interpolation weight of each context: kn in float32 like lmplz, wb in float64."""
    if smoothing == "kn":
        gamma = np.zeros(len(sums["total"]), dtype=_F32)
        for j in (1, 2, 3):
            gamma = gamma + d[j] * sums[f"n{j}"].astype(_F32)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = (gamma + sums["pruned"].astype(_F32)) / sums["total"].astype(_F32)
        return np.where(np.isfinite(gamma), gamma, 0).astype(_F32)
    types = (sums["n1"] + sums["n2"] + sums["n3"]).astype(np.float64)
    den = sums["total"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = (types + sums["pruned"]) / (den + types)
    return np.where(np.isfinite(gamma), gamma, 0).astype(np.float64)


def _denominator(sums: dict, smoothing: str) -> np.ndarray:
    """Per context, what its n-grams' discounted statistic is divided by."""
    if smoothing == "kn":
        return sums["total"].astype(_F32)
    return sums["total"].astype(np.float64) + (sums["n1"] + sums["n2"] + sums["n3"])


def _interpolate(a: np.ndarray, smoothing: str, d, den, gamma, p_lower) -> np.ndarray:
    """p = u + gamma(context) * p(suffix) per n-gram, given its context's denominator and
    gamma and its suffix's p (joined by the caller; scalars at order 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if smoothing == "kn":
            u = (a.astype(_F32) - d[np.minimum(a, 3).astype(np.int8)]) / den
            return (u + gamma * p_lower).astype(_F32)
        return (a / den + gamma * p_lower).astype(np.float64)


def _uniform(V: int, smoothing: str):
    """What order 1 interpolates with: the uniform distribution without <s>."""
    return _F32(1.0 / _F32(V - 1)) if smoothing == "kn" else 1.0 / (V - 1)


def _estimate_interpolated(tables, order, V, keep, smoothing, info):
    """kn / wb: yields (n, p, gamma) per order (float32 for kn, float64 for wb)."""
    if smoothing == "kn":
        info["discounts"], info["discount_fallback"] = {}, []
    p_lower = _uniform(V, smoothing)
    for n in range(1, order + 1):
        a = _adjusted_counts(tables, n, order, V, smoothing)
        d = None
        if smoothing == "kn":
            d, used = _kn_discounts(count_of_counts(a))
            info["discounts"][str(n)] = [float(x) for x in d[1:]]
            if used:
                info["discount_fallback"].append(n)
        ctx, n_ctx = _contexts(tables, n)
        sums = context_sums(ctx, n_ctx, a, keep[n])
        gamma = _gamma(sums, smoothing, d)
        den = _denominator(sums, smoothing)
        del sums
        suffix_p = p_lower if n == 1 else p_lower[tables[n]["suffix"]]
        p = _interpolate(a, smoothing, d, den[ctx], gamma[ctx], suffix_p)
        del a, den, suffix_p
        if n == 1:
            p[BOS_ID] = 1.0
        yield n, p, gamma
        p_lower = p


# Sharded over Dask: the n-grams of every order are cut by their last word into
# partitions, each contiguous in every order's table (suffix order sorts by the last word
# first) and closed under suffixes, so adjusted counts (by suffix), count-of-counts and the
# interpolation's join on the suffix stay inside a partition. Only contexts cross them:
# each partition sums its n-grams by context, the sums are added here, gamma and the
# denominators computed here per context and sent back for the per-n-gram arithmetic.

def _partitions(tables, order: int, V: int, keep, count: int) -> list[dict]:
    """`count` partitions by last-word ranges holding about as many n-grams each."""
    starts = [None, np.arange(V + 1)]  # starts[n][w]: n-grams of order n whose last word is < w
    for n in range(2, order + 1):
        starts.append(np.searchsorted(tables[n]["suffix"], starts[n - 1]))
    total = np.sum(starts[1:], axis=0)
    cuts = np.searchsorted(total, np.linspace(0, total[-1], count + 1)[1:-1])
    words = np.unique(np.concatenate(([0], cuts, [V])))
    parts = []
    for w0, w1 in zip(words[:-1], words[1:]):
        part = {"first_word": int(w0), "tables": [None, {"count": tables[1]["count"][w0:w1]}],
                "keep": [None, keep[1][w0:w1]]}
        for n in range(2, order + 1):
            cut = slice(starts[n][w0], starts[n][w1])
            part["tables"].append({"keys": tables[n]["keys"][cut], "count": tables[n]["count"][cut],
                                   "suffix": tables[n]["suffix"][cut] - starts[n - 1][w0],
                                   "context": tables[n]["context"][cut]})
            part["keep"].append(keep[n][cut])
        parts.append(part)
    return parts


def _part_statistic(part: dict, n: int, order: int, V: int, smoothing: str) -> np.ndarray:
    return _adjusted_counts(part["tables"], n, order, V, smoothing, part["first_word"])


def _part_context_sums(part: dict, a: np.ndarray, n: int):
    """(the partition's contexts, sorted; context_sums over them)."""
    contexts, inverse = np.unique(_contexts(part["tables"], n)[0], return_inverse=True)
    return contexts, context_sums(inverse, len(contexts), a, part["keep"][n])


def _part_interpolate(part: dict, a: np.ndarray, n: int, smoothing: str, d, den, gamma, p_lower) -> np.ndarray:
    ctx = _contexts(part["tables"], n)[0]
    suffix_p = p_lower if n == 1 else p_lower[part["tables"][n]["suffix"]]
    p = _interpolate(a, smoothing, d, den[ctx], gamma[ctx], suffix_p)
    if n == 1 and 0 <= BOS_ID - part["first_word"] < len(p):
        p[BOS_ID - part["first_word"]] = 1.0
    return p


def _estimate_interpolated_sharded(client, tables, order, V, keep, smoothing, info):
    """_estimate_interpolated with the per-n-gram work on the workers of `client`."""
    from .sharding import SHARDS_PER_WORKER, worker_count
    if smoothing == "kn":
        info["discounts"], info["discount_fallback"] = {}, []
    parts = client.scatter(_partitions(tables, order, V, keep, worker_count(client) * SHARDS_PER_WORKER))
    p_lower = [_uniform(V, smoothing)] * len(parts)
    for n in range(1, order + 1):
        stats = [client.submit(_part_statistic, part, n, order, V, smoothing, pure=False) for part in parts]
        d = None
        if smoothing == "kn":
            nk = np.sum(client.gather([client.submit(count_of_counts, a) for a in stats]), axis=0)
            d, used = _kn_discounts([int(x) for x in nk])
            info["discounts"][str(n)] = [float(x) for x in d[1:]]
            if used:
                info["discount_fallback"].append(n)
        n_ctx = 1 if n == 1 else len(tables[n - 1]["count"])
        sums = {}
        for contexts, part_sums in client.gather([client.submit(_part_context_sums, part, a, n, pure=False)
                                                  for part, a in zip(parts, stats)]):
            for key, values in part_sums.items():
                sums.setdefault(key, np.zeros(n_ctx, dtype=np.int64 if key in ("total", "pruned") else
                                              _index_dtype(len(tables[n]["count"]), 0)))[contexts] += values
        gamma = _gamma(sums, smoothing, d)
        den = _denominator(sums, smoothing)
        del sums
        den_f, gamma_f = client.scatter([den, gamma], broadcast=True)
        p_lower = [client.submit(_part_interpolate, part, a, n, smoothing, d, den_f, gamma_f, lower, pure=False)
                   for part, a, lower in zip(parts, stats, p_lower)]
        del den, den_f, gamma_f, stats
        yield n, np.concatenate(client.gather(p_lower)), gamma


def _estimate_backoff(tables, order, V, keep, smoothing, k, info):
    """addk / mle as backoff models: yields (n, p, gamma) of explicit probabilities and
    normalising backoffs."""
    vocab_size = V - 1  # every unit except <s>
    kk = k if smoothing == "addk" else 0.0
    p_lower = None
    for n in range(1, order + 1):
        c = tables[n]["count"].astype(np.float64)
        if n == 1:
            c[BOS_ID] = 0
        ctx, n_ctx = _contexts(tables, n)
        kept = keep[n]
        den = np.bincount(ctx, weights=c, minlength=n_ctx) + kk * vocab_size
        with np.errstate(divide="ignore", invalid="ignore"):
            p = (c + kk) / den[ctx]
        if n == 1:
            p[BOS_ID] = 1.0
            gamma = np.zeros(1)
        else:
            seen = np.bincount(ctx[kept], minlength=n_ctx)
            with np.errstate(divide="ignore", invalid="ignore"):
                left = (np.bincount(ctx[~kept], weights=c[~kept], minlength=n_ctx)
                        + kk * (vocab_size - seen)) / den
            lower_sum = np.bincount(ctx[kept], weights=p_lower[tables[n]["suffix"][kept]], minlength=n_ctx)
            with np.errstate(divide="ignore", invalid="ignore"):
                gamma = np.where(left > 0, left / np.maximum(1.0 - lower_sum, 1e-300), 0.0)
        yield n, p, gamma
        p_lower = p


def _log10(values) -> np.ndarray:
    """log10 in float32 of float32-rounded values (what an ARPA file holds)."""
    with np.errstate(divide="ignore"):
        return np.log10(values.astype(_F32).astype(np.float64)).astype(_F32)


def _backoff_model(tables, order, V, keep, estimates) -> tuple[list, list, list, list]:
    """The model's sorted keys, log10 probs, log10 backoffs and KenLM's extendable flags
    per order (kept n-grams only), built as the estimates arrive. Each order's count
    table and prune mask are let go (the lists emptied in place: the caller hands them
    over) once the next order no longer needs them, and all of them once the model is
    built, so the hash tables are made without the counts beside them."""
    keys, prob, bo, extendable = [None, None], [None], [None], [None]
    remap = [None] * (order + 1)  # old index -> new index where an order lost n-grams
    for n, p, gamma in estimates:
        kept = keep[n]
        prob.append(np.minimum(_F32(0), _log10(p))[kept])
        del p
        if n > 1:
            # the backoff of each (n-1)-gram is the gamma of its context, 1 if it has no extension
            g = np.where(np.bincount(tables[n]["context"], minlength=len(gamma)) > 0, gamma, 1.0)
            bo.append(_log10(g)[keep[n - 1]])
            del g
            # KenLM's state keeps an (n-1)-gram with a backoff or one that a kept n-gram
            # starts with (keep[n - 1] holds every such context: see _prune_masks)
            is_context = np.zeros(len(keep[n - 1]), dtype=bool)
            is_context[tables[n]["context"][kept]] = True
            extendable.append((is_context[keep[n - 1]] | (bo[n - 1] != 0)).view(np.uint8))
            del is_context
            if remap[n - 1] is None and kept.all():
                keys.append(tables[n]["keys"])  # what ngram_keys(suffix, first) would give
            else:
                suffix = tables[n]["suffix"][kept]  # int32 when it fits: see arpa.ngram_keys
                if remap[n - 1] is not None:
                    suffix = remap[n - 1][suffix]
                keys.append(_arpa.ngram_keys(suffix, _first(tables, n, V)[kept], V))
            tables[n - 1] = keep[n - 1] = remap[n - 1] = None
        if not kept.all():
            remap[n] = np.cumsum(kept) - 1
    tables.clear()
    keep.clear()
    bo.append(None)
    extendable.append(None)
    return keys, prob, bo, extendable
