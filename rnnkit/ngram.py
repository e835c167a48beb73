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
log10 P(<unk>) (+ backoffs) with n-gram length 1 and leaves an empty state.
"""

from __future__ import annotations

import functools
import os
from itertools import chain, repeat
from typing import Iterable, Sequence

import numpy as np

from . import arpa as _arpa
from . import modelfile
from .arpa import MAX_ORDER
from .errors import ConfigError
from .files import write_atomic
from .lm import LanguageModel, checked
from .metrics import corpus_summary, oov_summary
from .units import UNITS, Tokenizer, nfc_lines, read_line_blocks
from .vocab import BOS_ID, EOS_ID, UNK_ID, Vocab

SMOOTHINGS = ("kn", "wb", "addk", "mle")
_F32 = np.float32
_BATCH_POSITIONS = 1 << 21


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
    """sum_{k=lo..hi} bo[k-1, j] per column j (bo is (K, J) or (K, 1) broadcast), in float64.

    A masked sum, not differences of a cumulative sum: those cancel (a backoff of 1e30
    before the range wiped out the ones in it) and need -inf kept apart. -inf stays -inf;
    loaded models have no +inf backoff, so no NaN can arise.
    """
    k = np.arange(1, bo.shape[0] + 1)[:, None]
    inside = (k >= lo) & (k <= hi)
    return np.where(inside, bo, 0).sum(axis=0, dtype=np.float64)


# ---------------------------------------------------------------- the model

class NgramModel(LanguageModel):

    model_type = "ngram"
    """A backoff n-gram model held as sorted NumPy arrays (see rnnkit.arpa for the layout)."""

    def __init__(self, order: int, vocab: Vocab, keys: list, prob: list, bo: list,
                 unit: str = "word", smoothing: str = "kn", info: dict | None = None):
        self.order = int(order)
        self.vocab = vocab
        self.unit = unit
        self.smoothing = smoothing
        self.tokenizer = Tokenizer(unit)
        self.info = dict(info or {})
        self._keys = keys
        self._prob = prob
        self._bo = bo
        self._index = vocab._index

    # ------------------------------------------------------------ construction

    @classmethod
    def train(cls, data, order: int, smoothing: str = "kn", unit: str = "word", k: float = 1.0,
              prune: Sequence[int] | None = None, memory: int | None = None, temp_dir=None) -> "NgramModel":
        """Train on sentences: strings (split into `unit`s) or lists of units.

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
        escape = self.unit in ("char", "jamo")
        write_atomic(path, lambda h: _arpa.write_arpa(
            h, self.vocab, self._keys, self._prob, self._bo, self.order, escape=escape))

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
        model has no training state to leave out."""
        arrays = {}
        for n in range(1, self.order + 1):
            if n > 1:
                arrays[f"keys_{n}"] = self._keys[n]
            arrays[f"prob_{n}"] = self._prob[n]
            if n < self.order:
                arrays[f"bo_{n}"] = self._bo[n]
        meta = {"order": self.order, "unit": self.unit, "smoothing": self.smoothing,
                "vocab": self.vocab.to_list(), "training": self.info}
        return "ngram", meta, arrays

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
        return cls(order, Vocab.from_list(meta["vocab"]), keys, prob, bo, unit=meta["unit"],
                   smoothing=meta.get("smoothing", "kn"), info=meta.get("training", {}))

    # ------------------------------------------------------------ lookup core

    def _ids(self, tokens) -> np.ndarray:
        # Number the distinct tokens in a small local dict first, then look only those up
        # in the (possibly million-entry) vocabulary: far fewer cache misses.
        tokens = list(tokens)
        local = dict.fromkeys(tokens)
        for i, t in enumerate(local):
            local[t] = i
        seen = np.fromiter(map(local.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        get = self._index.get
        table = np.fromiter((get(t, UNK_ID) for t in local), dtype=np.int64, count=len(local))
        return table[seen]

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

    def _score_flat(self, ids, offset, has_bos_start):
        """log10 P of every position given the earlier ones in its segment (float64)."""
        N = self.order
        match, prob, bo = self._match(ids, offset)
        logp = prob.astype(np.float64)
        if N > 1 and len(ids) > 1:
            prev = np.empty_like(match)
            prev[0] = 0
            prev[1:] = match[:-1]
            prev[offset == 0] = 0
            state = np.minimum(prev, N - 1).astype(np.int64)
            lo = match.astype(np.int64)
            use = np.flatnonzero(state >= lo)
            if use.size:
                col = use - 1
                logp[use] += _range_sums(bo[:, col], lo[use], state[use])
        return logp, match

    def _batch(self, token_lists, bos: bool, eos: bool):
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        inner = self._ids(chain.from_iterable(token_lists))
        seg = lengths + int(bos) + int(eos)
        ends = np.cumsum(seg)
        starts = ends - seg
        total = int(ends[-1]) if len(ends) else 0
        ids = np.empty(total, dtype=np.int64)
        scored = np.ones(total, dtype=bool)
        if bos:
            ids[starts] = BOS_ID
            scored[starts] = False
        if eos:
            ids[ends - 1] = EOS_ID
        mask = np.ones(total, dtype=bool)
        if bos:
            mask[starts] = False
        if eos:
            mask[ends - 1] = False
        ids[mask] = inner
        offset = np.arange(total) - np.repeat(starts, seg)
        return ids, offset, scored, starts, seg

    def _split(self, sentences) -> list[list[str]]:
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = list(sentences)
        if all(map(isinstance, sentences, repeat(str))):
            return self.tokenizer.split_lines(sentences)
        return [self.tokenizer.split(s) if isinstance(s, str) else list(s) for s in sentences]

    def _token_scores(self, token_lists, bos=True, eos=True):
        """Per-sentence arrays (log10, ngram length, oov) for the scored positions, in batches."""
        results = []
        batch, size = [], 0
        for tokens in list(token_lists) + [None]:
            if tokens is not None:
                batch.append(tokens)
                size += len(tokens) + 2
                if size < _BATCH_POSITIONS:
                    continue
            if not batch:
                break
            ids, offset, scored, starts, seg = self._batch(batch, bos, eos)
            logp, match = self._score_flat(ids, offset, bos)
            keep = np.flatnonzero(scored)
            seg_scored = seg - int(bos)
            results.append((logp[keep], match[keep], ids[keep] == UNK_ID, seg_scored))
            batch, size = [], 0
        return results

    # ------------------------------------------------------------ public scoring

    def _scores(self, sentences, bos: bool, eos: bool) -> list[np.ndarray]:
        """log10 P of each scored position, per sentence (the base class derives score,
        token_logprobs and score_many's fallback from this); bos=False starts from the
        null context, as KenLM's."""
        out = []
        for logp, _, _, seg in self._token_scores(self._split(sentences), bos, eos):
            out.extend(np.split(checked(logp), np.cumsum(seg)[:-1]))
        return out

    def score_many(self, sentences, bos: bool = True, eos: bool = True) -> np.ndarray:
        """log10 probabilities of many sentences, vectorised (float64 array)."""
        token_lists = self._split(sentences)
        out = []
        for logp, _, _, seg in self._token_scores(token_lists, bos, eos):
            sentence = np.repeat(np.arange(len(seg)), seg)
            out.append(np.bincount(sentence, weights=checked(logp), minlength=len(seg)))
        return np.concatenate(out) if out else np.zeros(0)

    def full_scores(self, sentence, bos: bool = True, eos: bool = True) -> list[tuple[float, int, bool]]:
        """(log10 prob, n-gram length used, is OOV) per token and for `</s>` (KenLM's `full_scores`)."""
        (logp, match, oov, _), = self._token_scores(self._split([sentence]), bos, eos)
        return [(float(p), int(m), bool(o)) for p, m, o in zip(checked(logp), match, oov)]

    def evaluate(self, lines: Iterable[str]) -> dict:
        """Corpus statistics: perplexity = 10^(-total / (tokens + sentences)), bits per char, OOVs.

        OOV words are scored (log10 P(<unk>) plus backoffs) and counted, as KenLM does;
        `perplexity_excl_oov` drops their own terms. `zero_prob` counts tokens with
        probability 0 (possible only for `mle`), which make the perplexity infinite.
        """
        lines = nfc_lines(list(lines))
        token_lists = self.tokenizer.split_lines(lines)
        total, total_oov, n_oov, zero = 0.0, 0.0, 0, 0
        for logp, _, oov, _ in self._token_scores(token_lists):
            logp = checked(logp)
            total += float(logp.sum())
            total_oov += float(logp[oov].sum())
            n_oov += int(oov.sum())
            zero += int(np.isneginf(logp).sum())
        tokens = sum(len(t) for t in token_lists)
        summary = corpus_summary(lines, tokens, n_oov, total)
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
        ids = self._ids(history)
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

    # ------------------------------------------------------------ KenLM's incremental state (rnnkit.kenlm)

    def context_match(self, word: int, context: Sequence[int]) -> list[tuple]:
        """The n-grams `context[n-2] .. context[0] word` for n = 1, 2, ... while the model
        has them (context: ids, most recent first), one binary search per order. Per
        matched order: (log10 prob, backoff, extendable); the top order has backoff 0
        and never extends."""
        V, top = len(self.vocab), self.order
        found = [word]
        for n, previous in zip(range(2, top + 1), context):
            keys = self._keys[n]
            key = found[-1] * V + previous  # arpa.ngram_keys for one n-gram (Python ints do not wrap)
            pos = int(keys.searchsorted(key))
            if pos == keys.size or keys[pos] != key:
                break
            found.append(pos)
        extendable = self._extendable
        return [(self._prob[n][i], self._bo[n][i], extendable[n][i]) if n < top else (self._prob[n][i], _F32(0), False)
                for n, i in enumerate(found, 1)]

    @functools.cached_property
    def _extendable(self) -> list:
        """extendable[n][i] (n < order): n-gram i has a non-zero backoff or is the context
        (first n words) of some (n+1)-gram. KenLM keeps only such n-grams in its state
        (it stores the other zero backoffs as -0.0), and so does rnnkit.kenlm."""
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
            extendable.append(is_context | (self._bo[n - 1] != 0))
        return extendable

    def describe(self) -> dict:
        return {"type": "ngram", "unit": self.unit, "vocab_size": len(self.vocab), "order": self.order,
                "smoothing": self.smoothing, "ngram_counts": self.ngram_counts(),
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
