"""n-gram language models: vectorised counting, four smoothings, KenLM-style scoring.

Building (rnnkit/ngram_build.py): NumPy counting over integer ids in KenLM's suffix order,
in memory or spilled to disk under a memory budget; orders go up to MAX_ORDER (100).

Smoothing (every model is stored as a backoff model: log10 prob and backoff per n-gram)
    kn    interpolated modified Kneser-Ney exactly as KenLM's lmplz estimates it, in
          float32 like lmplz: adjusted counts (distinct left extensions) below the top
          order except for n-grams that start with `<s>`; three discounts per order
          D_j = j - (j+1) Y N_{j+1} / N_j, Y = N_1 / (N_1 + 2 N_2), replaced by 0.5 / 1 / 1.5
          where they cannot be estimated (lmplz --discount_fallback; noted in
          `info["discount_fallback"]`); unigrams interpolated with the uniform
          distribution over the vocabulary without `<s>`, which is all `<unk>` gets;
          `<s>` has log10 prob 0 (never predicted), as in lmplz's ARPA files.
    wb    interpolated Witten-Bell on raw counts: P = (c(h w) + T(h) P(w | h')) / (c(h) + T(h)),
          T(h) = distinct words seen after h, unigrams interpolated with the uniform.
    addk  add-k (Lidstone; k=1 is Laplace) at every order. A seen n-gram gets
          (c(h w) + k) / (c(h) + k |V|); the mass Lidstone leaves to unseen words is
          spread over them by the next lower order (a backoff weight), so the model is
          normalised and order 1 is exactly Lidstone.
    mle   relative frequencies at every order; no mass is left for unseen events, so an
          unseen n-gram (or an OOV word) gets probability 0: log10 -inf, counted as
          `zero_prob` by `evaluate`. A history never seen in training has no distribution.
    prune=[t1, t2, ...] drops n-grams of order n >= 2 whose count is <= t_n (the last value
    repeats, as in lmplz --prune; t1 must be 0), keeping any n-gram that a kept longer
    n-gram needs as its context or suffix; the dropped mass goes to the backoff, so the
    model stays normalised. Literal `<s>` and `</s>` in training text are skipped; a
    literal `<unk>` is the unknown word, counted like any word (lmplz's defaults: on
    Penn Treebank this gives KenLM's 148.28 / 141.19 test perplexity at orders 3 / 5).

Scoring follows KenLM: the longest matching n-gram, plus the backoffs of the longer
contexts that the previous word's match left in the state; an OOV word scores
log10 P(<unk>) (+ backoffs) with n-gram length 1 and leaves an empty state. Queries run
in C (csrc/ngram.c, through kernel.py) on the arrays and on a hash table per order that
the model file stores, so a loaded model only maps its file; `_numpy_token_scores` states
the same rule in NumPy, and the C code computes exactly its numbers. C splits text into
char, word and jamo units itself, exactly as the Tokenizer does; morph and spm text is
split by the Tokenizer (Kiwi, SentencePiece) and C gets the units' ids.
"""

from __future__ import annotations

import functools
import os
from itertools import chain, repeat
from typing import Iterable, Sequence
from unicodedata import is_normalized, normalize

import numpy as np

from . import arpa as _arpa
from . import kernel, modelfile
from .arpa import MAX_ORDER
from .errors import ConfigError
from .files import write_atomic
from .lm import POSITIVE_SLACK, LanguageModel, checked
from .metrics import corpus_summary, oov_summary
from .spelling import SpellingModel
from .units import UNITS, Tokenizer, nfc_lines, read_line_blocks, to_jamo
from .vocab import BOS_ID, EOS_ID, PackedVocab, Vocab

SMOOTHINGS = ("kn", "wb", "addk", "mle")
_F32 = np.float32
_BATCH_POSITIONS = 1 << 21
# how csrc/ngram.c splits each unit's text (the Tokenizer's rule, to the unit); morph and
# spm units come from a segmenter, so their text is split in Python
C_SPLITS = {"word": "words", "char": "chars", "jamo": "chars"}


# ---------------------------------------------------------------- lookup helpers

def _sorted_search(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """np.searchsorted clipped to a valid index; large batches are sorted first (cache-friendly)."""
    if query.size > 4096:
        perm = np.argsort(query)
        pos = np.empty(query.size, dtype=np.int64)
        pos[perm] = np.searchsorted(keys, query[perm])
    else:
        pos = np.searchsorted(keys, query)
    np.minimum(pos, keys.size - 1, out=pos)
    return pos


def _range_sums(bo: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """sum_{k=lo..hi} bo[k-1, j] per column j (bo is (K, J) or (K, 1) broadcast), in float64,
    added from the lowest k up, as csrc/ngram.c adds them (a NumPy sum over k may pair
    them up instead once there are 8).

    A masked sum, not differences of a cumulative sum: those cancel (a backoff of 1e30
    before the range wiped out the ones in it) and need -inf kept apart. -inf stays -inf;
    loaded models have no +inf backoff, so no NaN can arise.
    """
    total = np.zeros(np.broadcast_shapes(bo.shape[1:], lo.shape))
    for k in range(1, bo.shape[0] + 1):
        total += np.where((k >= lo) & (k <= hi), bo[k - 1], 0)
    return total


def not_a_probability(error: kernel.NotAProbability):
    """Raise lm.checked's error for a value the C queries found not to be a log-probability
    (their test is lm.checked's, with its slack), as the NumPy scoring raised it."""
    checked(np.array([error.value]))
    raise error


def _checked_query(query, *args, **kwargs):
    """A C query (kernel.ngram_*), its NotAProbability turned into lm.checked's error."""
    try:
        return query(*args, **kwargs)
    except kernel.NotAProbability as exc:
        not_a_probability(exc)


# ---------------------------------------------------------------- the model

class NgramModel(LanguageModel):

    model_type = "ngram"
    """A backoff n-gram model held as sorted NumPy arrays (see rnnkit.arpa for the layout).

    Queries run in C (csrc/ngram.c through kernel.py) on those arrays plus, per order
    n >= 2, a hash table of the n-grams (`tables[n]`, int64) and, per order n < N, KenLM's
    `extendable[n]` flags (uint8: the n-gram has a non-zero backoff or is the context of
    a longer n-gram, so KenLM's state keeps it). A model file stores all of them, so a
    loaded model maps them and builds nothing; training (ngram_build) makes them with the
    model, and a model read from ARPA builds them on first use. The vocabulary is a
    PackedVocab (the same bytes the C lookups use).
    """

    def __init__(self, order: int, vocab: Vocab, keys: list, prob: list, bo: list,
                 unit: str | Tokenizer = "word", smoothing: str = "kn", info: dict | None = None,
                 spelling: SpellingModel | None = None, extendable: list | None = None,
                 tables: list | None = None):
        self.order = int(order)
        self.vocab = vocab if isinstance(vocab, PackedVocab) else PackedVocab.from_vocab(vocab)
        self.tokenizer = Tokenizer.of(unit)
        self.unit = self.tokenizer.unit
        self.smoothing = smoothing
        self.spelling = spelling
        self.info = dict(info or {})
        self._keys = keys
        self._prob = prob
        self._bo = bo
        # C splits words at ASCII whitespace and characters at UTF-8 sequences (jamo units
        # are characters once to_jamo has decomposed the syllables); None: the Tokenizer splits
        self._split_mode = C_SPLITS.get(self.unit)
        self._jamo = self.unit == "jamo"
        if extendable is not None:
            self.__dict__["_extendable"] = extendable
        if tables is not None:
            self.__dict__["_tables"] = tables

    # ------------------------------------------------------------ construction

    @classmethod
    def train(cls, data, order: int, smoothing: str = "kn", unit: str | Tokenizer = "word", k: float = 1.0,
              prune: Sequence[int] | None = None, memory: int | None = None, temp_dir=None) -> "NgramModel":
        """Train on sentences: strings (split into `unit`s) or lists of units. `unit` is
        a unit name or a Tokenizer (an spm one carries its SentencePiece model).

        `memory` (bytes) bounds the counting, which then spills to files in `temp_dir`
        (lmplz's -S and -T); the model is the same either way (rnnkit/ngram_build.py).
        Example: `NgramModel.train(read_lines("corpus.txt"), order=5)`.
        """
        from .ngram_build import build
        return build([data], order, smoothing, unit, k, prune, memory=memory, temp_dir=temp_dir)

    @classmethod
    def train_file(cls, paths, order: int, **kwargs) -> "NgramModel":
        """`train` on the lines of one or more UTF-8 text files (plain or gzip; a binary
        stream such as standard input also does), read a block at a time (see
        rnnkit.units.read_line_blocks) so that only the counts grow with the corpus."""
        from .ngram_build import build, corpus_name, read_block_bytes
        sources = [paths] if isinstance(paths, (str, os.PathLike)) or hasattr(paths, "read") else list(paths)
        size = read_block_bytes(kwargs.get("memory"))
        blocks = chain.from_iterable(read_line_blocks(source, size) for source in sources)
        model = build(blocks, order, **kwargs)
        model.info["corpus"] = corpus_name(sources)
        return model

    # ------------------------------------------------------------ I/O

    def write_arpa(self, path) -> None:
        """Write a KenLM-compatible ARPA file (atomically; `.gz` is not compressed)."""
        write_atomic(path, lambda h: _arpa.write_arpa(
            h, self.vocab, self._keys, self._prob, self._bo, self.order, escape=self.tokenizer.whitespace_units))

    @classmethod
    def read_arpa(cls, path, unit: str | None = None) -> "NgramModel":
        """Load any ARPA file (KenLM, SRILM, rnnkit). Raises ArpaError naming the line.

        unit None: a file rnnkit wrote from a char or jamo model (see arpa.detect_unit)
        loads with that unit, any other file with words, as KenLM reads it.
        """
        if unit is not None and unit not in UNITS:
            raise ConfigError(f"unit must be one of {', '.join(UNITS)}; got {unit!r}")
        vocab, keys, prob, bo, order, notes, unit = _arpa.read_arpa(path, unit=unit)
        info = {"source": str(path), "notes": notes}
        return cls(order, vocab, keys, prob, bo, unit=unit, smoothing="arpa", info=info)

    def file_contents(self, resumable: bool = True) -> tuple[str, dict, dict]:
        """(model type, meta, arrays) as stored in a model file (also inside a mixture).
        `resumable` is accepted so a mixture can ask every component alike: an n-gram
        model has no training state to leave out. The file holds the query structures
        too (hash tables, KenLM's extendable flags), so that loading builds nothing."""
        arrays = {"vocab_text": self.vocab.text, "vocab_offsets": self.vocab.offsets,
                  "vocab_table": self.vocab.table}
        for n in range(1, self.order + 1):
            if n > 1:
                arrays[f"keys_{n}"] = self._keys[n]
                arrays[f"table_{n}"] = self._tables[n]
            arrays[f"prob_{n}"] = self._prob[n]
            if n < self.order:
                arrays[f"bo_{n}"] = self._bo[n]
                arrays[f"extendable_{n}"] = self._extendable[n]
        meta = {"order": self.order, **self.tokenizer.to_meta(), "smoothing": self.smoothing,
                "training": self.info, **({"spelling": self.spelling.to_meta()} if self.spelling else {})}
        return "ngram", meta, {**arrays, **self.tokenizer.arrays()}

    @classmethod
    def load(cls, path) -> "NgramModel":
        """Read a model file written by `save` (or an ARPA file, recognised by content)."""
        if not modelfile.is_model_file(path):
            return cls.read_arpa(path)
        _, meta, arrays = modelfile.load(path, expected_type="ngram")
        return cls.from_file_contents(path, meta, arrays)

    @classmethod
    def from_file_contents(cls, path, meta: dict, arrays: dict) -> "NgramModel":
        """The model from what modelfile.load read and checked (rnnkit/schema.py)."""
        order = meta["order"]
        keys, prob, bo = [None, None], [None], [None]
        for n in range(1, order + 1):
            if n > 1:
                keys.append(arrays[f"keys_{n}"])
            prob.append(arrays[f"prob_{n}"])
            bo.append(arrays[f"bo_{n}"] if n < order else None)
        if "vocab" in meta:   # format 1: the vocabulary in meta.json, no query structures
            vocab, extendable, tables = Vocab.from_list(meta["vocab"]), None, None
        else:
            vocab = PackedVocab(arrays["vocab_text"], arrays["vocab_offsets"], arrays["vocab_table"])
            extendable = [None] + [arrays[f"extendable_{n}"] for n in range(1, order)] + [None]
            tables = [None, None] + [arrays[f"table_{n}"] for n in range(2, order + 1)]
        return cls(order, vocab, keys, prob, bo, unit=Tokenizer.from_meta(meta, arrays, str(path)),
                   smoothing=meta.get("smoothing", "kn"), info=meta.get("training", {}),
                   spelling=SpellingModel.from_meta(meta.get("spelling")), extendable=extendable, tables=tables)

    # ------------------------------------------------------------ query structures

    @functools.cached_property
    def _tables(self) -> list:
        """tables[n]: the hash table of order n's keys (n >= 2), for the C lookups."""
        return kernel.ngram_hash_tables(self._keys, len(self.vocab))

    @functools.cached_property
    def _extendable(self) -> list:
        """extendable[n] (n < order, uint8): n-gram i has a non-zero backoff or is the
        context (first n words) of some (n+1)-gram. KenLM keeps only such n-grams in its
        state (it stores the other zero backoffs as -0.0), and so does rnnkit.kenlm.
        Computed here for models read from ARPA or from a format-1 file; training
        and model files give it."""
        V = len(self.vocab)
        extendable = [None]
        context = None  # per n-gram of order n: index of its first n-1 words in order n-1, -1 if absent
        for n in range(2, self.order + 1):
            keys = self._keys[n]
            first = keys % V
            if n == 2:
                context = first
            else:
                # the context's suffix is the context of the n-gram's suffix
                outer = context[keys // V]
                wanted = _arpa.ngram_keys(np.maximum(outer, 0), first, V)
                lower = self._keys[n - 1]
                pos = _sorted_search(lower, wanted) if lower.size else np.zeros(len(keys), dtype=np.int64)
                hit = (outer >= 0) & (lower[pos] == wanted) if lower.size else np.zeros(len(keys), dtype=bool)
                context = np.where(hit, pos, -1)
            is_context = np.zeros(len(self._prob[n - 1]), dtype=bool)
            is_context[context[context >= 0]] = True
            extendable.append((is_context | (self._bo[n - 1] != 0)).view(np.uint8))
        return extendable + [None]

    @functools.cached_property
    def _query(self) -> kernel.NgramTables:
        """The C view of the model's arrays (checked once, by kernel.ngram_tables)."""
        return kernel.ngram_tables(self.order, self.vocab.c, self._keys, self._prob, self._bo,
                                   self._extendable, self._tables)

    # ------------------------------------------------------------ the scoring rule in NumPy

    def _match(self, ids: np.ndarray, offset: np.ndarray):
        """Longest match for the n-gram ending at every position (not crossing its segment).

        Returns match length (int8: orders stop at MAX_ORDER < 128), its log10 prob
        (float32) and bo[k-1, t] = backoff of the k-gram ending at t (0 where it is not in
        the model).
        """
        N, V = self.order, len(self.vocab)
        T = len(ids)
        match = np.ones(T, dtype=np.int8)
        prob = self._prob[1][ids]
        bo = np.zeros((max(N - 1, 1), T), dtype=_F32)
        if N > 1:
            bo[0] = self._bo[1][ids]
        cur = np.arange(T)
        sid = ids
        for n in range(2, N + 1):
            keys = self._keys[n]
            m = offset[cur] >= n - 1
            cur, sid = cur[m], sid[m]
            if cur.size == 0 or keys.size == 0:
                break
            key = _arpa.ngram_keys(sid, ids[cur - (n - 1)], V)
            pos = _sorted_search(keys, key)
            found = keys[pos] == key
            cur, sid = cur[found], pos[found]
            match[cur] = n
            prob[cur] = self._prob[n][sid]
            if n < N:
                bo[n - 1, cur] = self._bo[n][sid]
        return match, prob, bo

    def _numpy_token_scores(self, token_lists, bos: bool = True, eos: bool = True):
        """(log10, n-gram length) of every scored position of the sentences (lists of
        units), in NumPy: the statement of KenLM's scoring rule that the C queries
        (csrc/ngram.c) compute to the bit; tests/test_ngram_query.py holds them equal."""
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        inner = self.vocab.encode(chain.from_iterable(token_lists)).astype(np.int64)
        seg = lengths + int(bos) + int(eos)
        ends = np.cumsum(seg)
        starts = ends - seg
        total = int(ends[-1]) if len(ends) else 0
        ids = np.empty(total, dtype=np.int64)
        scored = np.ones(total, dtype=bool)
        inside = np.ones(total, dtype=bool)
        if bos:
            ids[starts] = BOS_ID
            scored[starts] = inside[starts] = False
        if eos:
            ids[ends - 1] = EOS_ID
            inside[ends - 1] = False
        ids[inside] = inner
        offset = np.arange(total) - np.repeat(starts, seg)
        match, prob, bo = self._match(ids, offset)
        logp = prob.astype(np.float64)
        if self.order > 1 and total > 1:
            prev = np.empty_like(match)
            prev[0] = 0
            prev[1:] = match[:-1]
            prev[offset == 0] = 0
            state = np.minimum(prev, self.order - 1).astype(np.int64)
            lo = match.astype(np.int64)
            use = np.flatnonzero(state >= lo)
            if use.size:
                logp[use] += _range_sums(bo[:, use - 1], lo[use], state[use])
        keep = np.flatnonzero(scored)
        return checked(logp[keep]), match[keep]

    # ------------------------------------------------------------ scoring (in C)

    def _utf8(self, line: str) -> bytes:
        """A line as the C kernel splits it: NFC, jamo decomposed for jamo units, UTF-8
        ("surrogatepass": every Python string has bytes, and a lone surrogate is no unit
        of any vocabulary). On every score() call, so the common case is kept short."""
        if not is_normalized("NFC", line):   # nfc(), without its call on the hot path
            line = normalize("NFC", line)
        if self._jamo:
            line = to_jamo(line)
        try:
            return line.encode()
        except UnicodeEncodeError:   # a lone surrogate
            return line.encode("utf-8", "surrogatepass")

    def _lookup(self, sentences) -> tuple[np.ndarray, np.ndarray]:
        """(vocabulary ids of every sentence's units, units per sentence). Strings are
        split into units as the tokenizer splits them (by C where it can: C_SPLITS);
        lists of units are taken whole."""
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = list(sentences)
        if self._split_mode is not None and all(map(isinstance, sentences, repeat(str))):
            lines = nfc_lines(sentences)   # one check of the whole text in the usual case
            if self._jamo:
                lines = [to_jamo(line) for line in lines]
            pieces = [line.encode("utf-8", "surrogatepass") for line in lines]
            ends = np.cumsum(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)))
            return kernel.ngram_lookup(self.vocab.c, self._split_mode, b"".join(pieces), ends)
        token_lists = self.tokenizer.split_lines(sentences)
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        return self.vocab.encode(chain.from_iterable(token_lists)).astype(np.int64), lengths

    def _token_scores(self, sentences, bos: bool = True, eos: bool = True, tokens: bool = True,
                      precision: str = "float64"):
        """Per batch of sentences: (log10, n-gram length, oov) of the scored positions
        (three Nones with tokens=False), scored positions per sentence, and per-sentence
        totals summed in order. A batch ends once it holds _BATCH_POSITIONS positions
        (units + 2 per sentence): that bounds the per-position arrays, and evaluate's
        sums per batch stay what they were."""
        ids, lengths = self._lookup(sentences)
        positions = np.cumsum(lengths + 2)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        first = 0
        while first < len(lengths):
            base = positions[first - 1] if first else 0
            last = min(int(np.searchsorted(positions, base + _BATCH_POSITIONS)) + 1, len(lengths))
            logp, match, oov, totals = _checked_query(
                kernel.ngram_score_ids, self._query, ids[starts[first]:starts[last]], lengths[first:last],
                bos=bool(bos), eos=bool(eos), precision=precision, slack=POSITIVE_SLACK, tokens=tokens)
            yield logp, match, oov, lengths[first:last] + int(eos), totals
            first = last

    # ------------------------------------------------------------ public scoring
    # Every value passes the C form of lm.checked (csrc/ngram.c `checked`, the same slack):
    # NaN or above it raises lm.checked's error, and the rest is clamped to <= 0.

    def _scores(self, sentences, bos: bool, eos: bool) -> list[np.ndarray]:
        """log10 P of each scored position, per sentence (the base class derives
        token_logprobs from this); bos=False starts from the null context, as KenLM's."""
        out = []
        for logp, _, _, per_sentence, _ in self._token_scores(sentences, bos, eos):
            out.extend(np.split(logp, np.cumsum(per_sentence)[:-1]))
        return out

    def score(self, sentence, bos: bool = True, eos: bool = True) -> float:
        """log10 P(w1 .. wn </s> | <s>), split, looked up and scored in one C call (the
        sum is numpy's sum of token_logprobs, as the base class defines it)."""
        total = self.c_query.score(sentence, bos, eos)   # None: not one it takes (see csrc/ngram_py.c)
        if total is not None:
            return total
        if sentence.__class__ is str and self._split_mode:
            try:
                total = self._text_scorers[0](self._utf8(sentence), True if bos else False, True if eos else False)
            except kernel.NotAProbability as exc:
                not_a_probability(exc)
            if total is not None:
                return total
        return super().score(sentence, bos, eos)   # a list of units, morph or spm, or a very long sentence

    @functools.cached_property
    def c_query(self):
        """The model's C view for the CPython entry points (rnnkit._ngram_py.Query, made by
        kernel.ngram_query): score() above and rnnkit.kenlm's calls per word and sentence.
        Jamo text is decomposed in Python first, so C does not split it here."""
        return kernel.ngram_query(self._query, None if self._jamo else self._split_mode, POSITIVE_SLACK)

    @functools.cached_property
    def _text_scorers(self) -> tuple:
        """kernel.ngram_text_scorer in float64 (score) and float32 (kenlm_score)."""
        return tuple(kernel.ngram_text_scorer(self._query, self._split_mode, precision, POSITIVE_SLACK)
                     for precision in ("float64", "float32"))

    def score_many(self, sentences, bos: bool = True, eos: bool = True) -> np.ndarray:
        """log10 probabilities of many sentences (float64 array), each summed in order."""
        totals = [batch[-1] for batch in self._token_scores(sentences, bos, eos, tokens=False)]
        return np.concatenate(totals) if totals else np.zeros(0)

    def full_scores(self, sentence, bos: bool = True, eos: bool = True) -> list[tuple[float, int, bool]]:
        """(log10 prob, n-gram length used, is OOV) per token and for `</s>` (KenLM's `full_scores`)."""
        (logp, match, oov, _, _), = self._token_scores([sentence], bos, eos)
        return [(float(p), int(m), bool(o)) for p, m, o in zip(logp, match, oov)]

    def evaluate(self, lines: Iterable[str], unit_lists: list[list[str]] | None = None) -> dict:
        """Corpus statistics: perplexity = 10^(-total / (tokens + sentences)), bits per char, OOVs.

        OOV words are scored (log10 P(<unk>) plus backoffs) and counted, as KenLM does;
        `perplexity_excl_oov` drops their own terms. `zero_prob` counts tokens with
        probability 0 (possible only for `mle`), which make the perplexity infinite.
        Bits per character are on the open-vocabulary basis when the model has a
        spelling model (see rnnkit.lm). `unit_lists`: the lines' units, if split already.
        """
        lines = nfc_lines(list(lines))
        sentences = lines if unit_lists is None else unit_lists
        total, total_oov, n_oov, zero, predicted, done = 0.0, 0.0, 0, 0, 0, 0
        with_oov = []   # the sentences with an OOV unit: the spelling model spells those out
        for logp, _, oov, per_sentence, _ in self._token_scores(sentences):
            total += float(logp.sum())
            total_oov += float(logp[oov].sum())
            n_oov += int(oov.sum())
            zero += int(np.isneginf(logp).sum())
            predicted += int(per_sentence.sum())
            if self.spelling is not None and oov.any():
                sentence_of = np.repeat(np.arange(done, done + len(per_sentence)), per_sentence)
                with_oov.extend(np.unique(sentence_of[oov]).tolist())
            done += len(per_sentence)
        tokens = predicted - len(lines)
        spelled = self.oov_spelling_log10(self.tokenizer.split_lines([sentences[i] for i in with_oov]))
        summary = corpus_summary(lines, tokens, n_oov, total, spelled)
        return {**summary, **oov_summary(summary, total_oov, zero)}

    def perplexity(self, lines) -> float:
        """Corpus perplexity (KenLM/SRILM convention); a single string is one sentence."""
        if isinstance(lines, str):
            lines = [lines]
        return self.evaluate(lines)["perplexity"]

    def next_distribution(self, history: Sequence[str] = (), bos: bool = True) -> np.ndarray:
        """P(w | history) for every vocabulary id (float64, `<s>` = 0, sums to 1).

        `history` is a list of units (or a string, split into units) after `<s>`.
        """
        if isinstance(history, str):
            history = self.tokenizer.split(history)
        N, V = self.order, len(self.vocab)
        ids = self.vocab.encode(history).astype(np.int64)
        if bos:
            ids = np.concatenate([[BOS_ID], ids]).astype(np.int64)
        state = 0
        bo_ctx = np.zeros(N, dtype=np.float64)  # bo_ctx[k] = backoff of the k-word context
        if len(ids) and N > 1:
            match, _, bo = self._match(ids, np.arange(len(ids)))
            state = min(int(match[-1]), N - 1)
            bo_ctx[1: state + 1] = bo[:state, -1]
        words = np.arange(V, dtype=np.int64)
        logp = self._prob[1].astype(np.float64)
        lo = np.ones(V, dtype=np.int64)
        cur, sid = words, words
        for n in range(2, state + 2):
            keys = self._keys[n]
            if keys.size == 0 or cur.size == 0:
                break
            key = _arpa.ngram_keys(sid, ids[len(ids) - (n - 1)], V)
            pos = np.minimum(np.searchsorted(keys, key), keys.size - 1)
            found = keys[pos] == key
            cur, sid = cur[found], pos[found]
            logp[cur] = self._prob[n][sid]
            lo[cur] = n
        bo_col = np.repeat(bo_ctx[1:, None], 1, axis=1)
        add = np.zeros(V)
        use = np.flatnonzero(state >= lo)
        if use.size:
            add[use] = _range_sums(bo_col, lo[use], np.full(use.size, state))[:]
        with np.errstate(invalid="ignore"):
            p = 10.0 ** (logp + add)
        p[BOS_ID] = 0.0
        return p

    # ------------------------------------------------------------ KenLM's numbers (rnnkit.kenlm)
    # KenLM sums in float32: every value is a float32 value and a sentence's total their
    # float32 sum in order; the state machine is kernel.ngram_base_scorer's.

    def kenlm_score(self, sentence: str, bos: bool = True, eos: bool = True) -> float:
        """KenLM's Model.score (rnnkit.kenlm), in one C call where C splits the units."""
        total = None
        if self._split_mode:
            try:
                total = self._text_scorers[1](self._utf8(sentence), True if bos else False, True if eos else False)
            except kernel.NotAProbability as exc:
                not_a_probability(exc)
        if total is None:   # morph or spm units, or longer than one call takes
            (*_, totals), = self._token_scores([sentence], bos, eos, tokens=False, precision="float32")
            total = float(totals[0])
        return total

    def kenlm_full_scores(self, sentence: str, bos: bool = True, eos: bool = True) -> list[tuple]:
        """KenLM's Model.full_scores (rnnkit.kenlm): (log10, n-gram length, oov) per unit and </s>."""
        (logp, match, oov, _, _), = self._token_scores([sentence], bos, eos, precision="float32")
        return list(zip(logp.tolist(), match.tolist(), oov.tolist()))

    def kenlm_stepper(self):
        """KenLM's BaseFullScore in C (kernel.ngram_base_scorer): a function (state code,
        word id) -> (log10, state code, n-gram length, oov); it raises
        kernel.NotAProbability (see not_a_probability)."""
        return kernel.ngram_base_scorer(self._query, POSITIVE_SLACK)

    # ------------------------------------------------------------ incremental state, sampling

    def token_logprobs_many(self, sentences) -> list[np.ndarray]:
        """log10 P of each token (and `</s>`) for many sentences, vectorised."""
        return self._scores(sentences, True, True)

    def start(self, prefix_ids):
        """State (the ids after <s>) and the natural-log next-unit distribution."""
        return self.advance_history(list(prefix_ids))

    def advance(self, state, token_id: int):
        return self.advance_history(state + [int(token_id)])

    def advance_history(self, history: list[int]):
        # only the last order-1 units matter; keep the state that short
        history = history[-(self.order - 1):] if self.order > 1 else []
        tokens = self.vocab.decode(history)
        with np.errstate(divide="ignore"):
            return history, np.log(self.next_distribution(tokens))

    def describe(self) -> dict:
        return {"type": "ngram", **self.tokenizer.to_meta(), "vocab_size": len(self.vocab), "order": self.order,
                "smoothing": self.smoothing, "ngram_counts": self.ngram_counts(),
                **({"spelling": self.spelling.describe()} if self.spelling else {}),
                "training": {k: v for k, v in self.info.items() if k != "notes"}}

    # ------------------------------------------------------------ description

    def ngram_counts(self) -> list[int]:
        return [len(self.vocab)] + [len(self._keys[n]) for n in range(2, self.order + 1)]

    def __repr__(self) -> str:
        return f"NgramModel(order={self.order}, smoothing={self.smoothing!r}, unit={self.unit!r}, ngrams={self.ngram_counts()})"


def evaluate(model: NgramModel, lines) -> dict:
    """Module-level alias of `NgramModel.evaluate`."""
    return model.evaluate(lines)


__all__ = ["NgramModel", "SMOOTHINGS", "MAX_ORDER", "evaluate"]
