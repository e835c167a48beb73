"""Units <-> integer ids. `<unk>` = 0, `<s>` = 1, `</s>` = 2, then the units.

`Vocab.build` orders units by descending count, ties broken by first occurrence
(deterministic for a given corpus); `sort="first"` keeps first-occurrence order, which
is the order KenLM's lmplz numbers its vocabulary in (the n-gram models use it so that
their ARPA files list n-grams in the same order as lmplz's). Units below `min_count`
or beyond `max_vocab` are left out and map to `<unk>`. `FirstOccurrence` numbers units
in that order as a text streams past, a block at a time (the n-gram build's encoder,
RNN training's id file).
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from itertools import chain, count
from typing import Iterable

import numpy as np

from .errors import ConfigError, VocabularyError

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = (UNK, BOS, EOS)


class Vocab:
    """An immutable token list with a reverse index."""

    def __init__(self, tokens: Iterable[str], index: dict[str, int] | None = None):
        """`index`, when given, must map tokens[i] -> i (callers that counted the corpus
        already hold it; rebuilding it is a tenth of a small n-gram build)."""
        tokens = list(tokens)
        if tuple(tokens[:3]) != SPECIALS:
            raise VocabularyError(f"a vocabulary must start with {', '.join(SPECIALS)}; got {tokens[:3]}")
        if index is None:
            index = dict(zip(tokens, range(len(tokens))))
        if len(index) != len(tokens):
            seen = set()
            duplicate = next(t for t in tokens if t in seen or seen.add(t))
            raise VocabularyError(f"duplicate token in vocabulary: {duplicate!r}")
        self.tokens: list[str] = tokens
        self._index = index

    @classmethod
    def build(cls, data, min_count: int = 1, max_vocab: int | None = None, sort: str = "frequency") -> "Vocab":
        """Build from token lists (an iterable of lists of units) or a Counter/dict of counts.

        sort="frequency": by descending count, ties by first occurrence; sort="first":
        first-occurrence order. `max_vocab` counts the three specials. Specials found
        in the data are not counted twice.
        """
        if sort not in ("frequency", "first"):
            raise ConfigError(f"sort must be 'frequency' or 'first'; got {sort!r}")
        if isinstance(data, dict):
            counts = Counter(data)
        else:
            counts = Counter()
            for tokens in data:
                counts.update(tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        units = [u for u, c in counts.items() if c >= min_count]  # insertion = first occurrence
        if sort == "frequency":
            units.sort(key=counts.__getitem__, reverse=True)  # stable: ties keep first occurrence
        if max_vocab is not None:
            if max_vocab < len(SPECIALS):
                raise ConfigError(f"max_vocab must be at least {len(SPECIALS)} (the specials); got {max_vocab}")
            units = units[: max_vocab - len(SPECIALS)]
        return cls(list(SPECIALS) + units)

    @classmethod
    def from_list(cls, tokens: list[str]) -> "Vocab":
        """Inverse of `to_list` (model files store the list)."""
        return cls(tokens)

    def to_list(self) -> list[str]:
        return list(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self._index

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and other.tokens == self.tokens

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def id(self, token: str) -> int:
        """Id of `token`; unknown tokens are `<unk>` (0)."""
        return self._index.get(token, UNK_ID)

    def token(self, i: int) -> str:
        """Token with id `i`; raises VocabularyError outside 0..len-1."""
        if not 0 <= int(i) < len(self.tokens):
            raise VocabularyError(f"token id {i} is outside the vocabulary (0..{len(self.tokens) - 1})")
        return self.tokens[int(i)]

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """int32 ids; unknown tokens -> 0."""
        get = self._index.get
        return np.fromiter((get(t, UNK_ID) for t in tokens), dtype=np.int32)

    def decode(self, ids) -> list[str]:
        """Tokens for ids; raises VocabularyError for an id outside the vocabulary."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.tokens)):
            bad = ids[(ids < 0) | (ids >= len(self.tokens))][0]
            raise VocabularyError(f"token id {bad} is outside the vocabulary (0..{len(self.tokens) - 1})")
        tokens = self.tokens
        return [tokens[i] for i in ids.tolist()]


class FirstOccurrence:
    """Numbers units in order of first occurrence (lmplz's order) as text streams past;
    <unk>, <s> and </s> hold 0, 1 and 2 from the start."""

    def __init__(self):
        # a unit seen for the first time gets the next id from the counter, all in C
        self.ids = defaultdict(count().__next__)
        for special in SPECIALS:
            self.ids[special]

    def __len__(self) -> int:
        return len(self.ids)

    def number(self, unit_lists: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the lists' units laid end to end (int32) and each list's length (int64)."""
        lengths = np.fromiter(map(len, unit_lists), dtype=np.int64, count=len(unit_lists))
        units = list(chain.from_iterable(unit_lists))
        return np.fromiter(map(self.ids.__getitem__, units), dtype=np.int32, count=len(units)), lengths

    def units(self) -> list[str]:
        """Every unit numbered so far, by id."""
        return list(self.ids)

    def vocab(self) -> Vocab:
        """The units numbered so far as a Vocab, in id order; no more can be numbered."""
        self.ids.default_factory = None  # lookups must not add units (no copy of a big dict)
        return Vocab(list(self.ids), self.ids)


class PackedVocab(Vocab):
    """A vocabulary held as arrays, as n-gram model files store it: the units' UTF-8
    bytes one after the other (`text`, uint8), where unit i is
    text[offsets[i]:offsets[i + 1]] (`offsets`, int64), and a hash table of them
    (`table`, int64, built by the C kernel). Loading a model makes no Python object per
    unit; lookups go through the table (as the C scoring does), and the unit strings
    are decoded only if something asks for them (`tokens`).

    Text is encoded with "surrogatepass", so any Python string has bytes to look up.
    """

    def __init__(self, text: np.ndarray, offsets: np.ndarray, table: np.ndarray | None = None):
        """`table` None builds it; a table given must have been checked (schema.py)."""
        from . import kernel   # the C kernel loads only when a packed vocabulary is made
        self._kernel = kernel
        self.text, self.offsets = text, offsets
        self.table = kernel.vocab_hash_table(text, offsets) if table is None else table
        self.c = kernel.ngram_vocab_tables(text, offsets, self.table)

    @classmethod
    def from_vocab(cls, vocab: Vocab) -> "PackedVocab":
        """Pack a Vocab (checked when it was made)."""
        encoded = [token.encode("utf-8", "surrogatepass") for token in vocab.tokens]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
        packed = cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)
        packed.__dict__["tokens"] = vocab.tokens   # no need to decode them again
        return packed

    @functools.cached_property
    def tokens(self) -> list[str]:
        data = self.text.tobytes()
        bounds = self.offsets.tolist()
        return [data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(bounds, bounds[1:])]

    def __len__(self) -> int:
        return self.offsets.size - 1

    def __contains__(self, token) -> bool:
        return isinstance(token, str) and (token == UNK or self.id(token) != UNK_ID)

    def id(self, token: str) -> int:
        if not isinstance(token, str):
            return UNK_ID
        return self._kernel.ngram_unit_id(self.c, token.encode("utf-8", "surrogatepass"))

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        # a token that is not a str is <unk>, as in Vocab: byte FF is in no UTF-8 unit
        encoded = [token.encode("utf-8", "surrogatepass") if isinstance(token, str) else b"\xff" for token in tokens]
        ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
        ids, _ = self._kernel.ngram_lookup(self.c, "none", b"".join(encoded), ends)
        return ids.astype(np.int32)
