"""KenLM's Python API on every rnnkit model: `import rnnkit.kenlm as kenlm` is the migration.

    model = kenlm.Model("ko.model")              # an RNN, n-gram or mixture model file, or ARPA
    model.score("나는 버스를 탔다")                # log10 P(w1 .. wn </s> | <s>)
    list(model.full_scores("나는 버스를 탔다"))     # (log10 prob, n-gram length, oov) per word, </s>
    state, out = kenlm.State(), kenlm.State()
    model.BeginSentenceWrite(state)
    model.BaseScore(state, "나는", out)            # log10 P(나는 | <s>); `out` is the state after it

The semantics are those of kenlm's python/kenlm.pyx (the `kenlm` module 0.3.0) over
lm/model.cc, checked against the real module in tests/test_kenlm_api.py:

- `score(s, bos, eos)` starts from BeginSentenceWrite (bos) or NullContextWrite, adds one
  BaseScore per word and, with eos, BaseScore(`</s>`); the sum is kept in float32 as
  KenLM keeps it, and every log10 probability is a float32 value as KenLM returns it.
  `full_scores` is a generator of (log10 prob, n-gram length, oov), the `</s>` entry with
  oov False; `perplexity(s)` = 10^(-score(s) / (words + 1)).
- A word outside the vocabulary (and the word `<unk>` itself) is OOV: it scores
  log10 P(<unk>) plus the backoffs its context charges, with the length of the n-gram
  matched (1 unless the model has n-grams with <unk>). `<s>` and `</s>` given as words
  are looked up like any word. `word in model`: in the vocabulary and not <unk>.
- n-gram State: exactly KenLM's. It holds the words of the longest n-gram matched at the
  last word that can still be extended (its backoff is not 0, or it is the context of a
  longer n-gram: the model's extendable flags), most recent first, and their backoffs, so
  it is often shorter than order - 1 (after an OOV, usually empty). rnnkit keeps it as one
  code naming that n-gram (its words and backoffs follow from the model's arrays), so
  States are equal when their n-grams are, as KenLM's are when their lengths and words
  are. A State() never written is the null context, as KenLM's zeroed State is.
  BaseScore, score and full_scores run in C (csrc/ngram.c: one hash probe per order, the
  float32 sums KenLM makes, in its order); nothing before the state is re-scored.
- State is a C type (csrc/ngram_py.c) for every model: an n-gram state is its code,
  unboxed. On an n-gram model, score, BaseScore, BaseFullScore, BeginSentenceWrite and
  NullContextWrite are C functions of the interpreter (rnnkit._ngram_py, as kenlm's are
  Cython's) in front of this module's methods: they take a str (NFC, or normalised in
  Python) and States of the model, given positionally, and hand every other call to the
  method of the same name below, which answers it or raises, so both give the same
  numbers and errors. A word's id comes from a cache of the words seen (one memory access).

What a "word" is: one unit of the model. For word models these are KenLM's words
(split on ASCII whitespace only, as KenLM splits); for char models one character (the
space is " "), for jamo models one conjoining jamo. score / full_scores / perplexity
split the sentence with the model's tokenizer; BaseScore takes one unit, and a string
that is not a unit of the model is OOV (as an unknown word is in KenLM).

RNN models: the State holds the hidden vector and the next-unit distribution computed
with it, so BaseScore reads the word's probability from the state and runs one kernel
step for the state after it. The n-gram length is the number of units of context, <s>
included, plus one (as LanguageModel.full_scores reports it), and States are equal when
that length and the hidden vector (bit for bit) are. An RNN always reads <s> first: it
has no null context. `order` is sys.maxsize (the history is unbounded; pyctcdecode's
prune_history then merges only beams with the same whole text).

Mixtures: the State holds one state per component; the probability is mix.py's (the
weighted sum, a component's <unk> mass shared among the units it lacks), the n-gram
length and `order` the largest of the components'. A mixture has a null context when
every component has one.

Where rnnkit differs from kenlm:
- Model(path) reads rnnkit model files (memory-mapped, as KenLM's binary files are) and
  ARPA files (gzipped or not), not KenLM's binary files; there is no `config` argument
  and no Config, LoadMethod or ARPALoadComplain. A file that cannot be read raises ModelFileError or ArpaError (both
  ValueError), not IOError. An ARPA that rnnkit wrote from a char or jamo model loads
  as that model (kenlm reads its units as words, the space as `<sp>`).
- Text is NFC-normalised before lookup (sentences and BaseScore words, as everywhere in
  rnnkit); kenlm looks the bytes up as given. Sentences may be str or UTF-8 bytes (as in
  kenlm); a BaseScore word must be a str (as in kenlm).
- Errors are rnnkit's (ConfigError, a ValueError) where kenlm raises TypeError (a word
  that is not a str, a state that is not a State). bos=False, NullContextWrite and an
  unwritten State raise ConfigError for a model without a null context (an RNN, or a
  mixture with one), where kenlm has no such models. A State written by one Model and
  given to another raises ConfigError (kenlm lets states of two loads of one file mix).
  A NaN or positive log-probability (a broken model) raises RnnkitError (lm.checked).
- State order (<, >) is consistent with == but not kenlm's (word ids are numbered
  differently), and hash values differ. copy.deepcopy(State) works (kenlm's fails).
- An ARPA file where an n-gram's suffix (the n-gram without its first word) is missing,
  as in some SRILM-pruned files: kenlm fills in a "blank" entry and still matches the
  longer n-gram; rnnkit's lookup stops at the first order that is missing.
- FullScoreReturn is a named tuple: the same read-only fields, and it also unpacks.
- The n-gram length of an RNN (and of a mixture with one) grows with the sentence;
  kenlm's never exceeds the order.
- Speed (an n-gram model: benchmarks/bench_ngram.py measures it against kenlm in the same
  run): score is one C call per sentence (its lookups overlap, where kenlm's run word
  after word) and beats kenlm's; full_scores is one C call plus a Python generator.
  BaseScore is about as fast as kenlm's or a little faster: the call costs half of
  kenlm's, the memory accesses somewhat more (an n-gram's probability is one access
  beyond its hash table entry, where KenLM keeps it in the entry). An RNN's BaseScore
  costs one kernel step (the full next-unit softmax).
- States do not pickle (nor do kenlm's).
- `path` is the absolute path as bytes, as kenlm's; repr(Model) is kenlm's. Loading
  prints nothing (kenlm prints its progress on stderr).
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Iterator, NamedTuple

import numpy as np

from . import loader
from .errors import ConfigError
from .kernel import NGRAM_STATE_LENGTHS, NotAProbability   # first: unbuilt, it says how to build the C modules
from ._ngram_py import Kenlm, State
from .lm import POSITIVE_SLACK, checked
from .mix import MixModel
from .ngram import NgramModel, not_a_probability
from .rnnlm import LOG10_E, RNNModel
from .units import decode_utf8, nfc
from .vocab import BOS_ID, EOS, UNK_ID

# the order of a model that conditions on the whole history (an RNN)
UNBOUNDED_ORDER = sys.maxsize
_F32 = np.float32


class FullScoreReturn(NamedTuple):
    """What BaseFullScore returns: log10 probability, n-gram length, whether the word is OOV."""

    log_prob: float
    ngram_length: int
    oov: bool

    def __repr__(self) -> str:
        return f"FullScoreReturn({self.log_prob!r}, {self.ngram_length!r}, {self.oov!r})"


# ---------------------------------------------------------------- per-model scoring
# A scorer's raw state is (length, key, data): length and key are what States compare
# (State is csrc/ngram_py.c's: an n-gram's key, its state code, is kept unboxed), data what
# the next step needs. step(raw, word) -> (log10, n-gram length, next raw).

class _NgramScorer:
    """KenLM's state machine (FullScore in lm/model.cc), in C on NgramModel's arrays
    (NgramModel.kenlm_stepper). The raw state is (length, state code, None): the code
    names the n-gram the state holds (its words and their backoffs follow from it), so
    equal codes are equal states; the null context is (0, (), None), as State()'s."""

    nullable = True

    def __init__(self, model: NgramModel):
        self.model = model
        self.order = model.order
        self.stepper = model.kenlm_stepper()
        # word as given -> id (NFC, looked up): in C, through a cache of the words seen
        self.word_id = model.c_query.word_id

    def begin(self) -> tuple:
        # KenLM's begin-sentence state always holds <s> (a unigram: its index is its id)
        return self.raw(BOS_ID * NGRAM_STATE_LENGTHS + 1)

    def null(self) -> tuple:
        return 0, (), None

    def step(self, raw: tuple, word: str) -> tuple:
        try:
            log10, code, length, _ = self.stepper(raw[1] or 0, self.word_id(word))
        except NotAProbability as exc:
            not_a_probability(exc)
        return log10, length, self.raw(code)

    @staticmethod
    def raw(code: int) -> tuple:
        return (code % NGRAM_STATE_LENGTHS, code, None) if code else (0, (), None)


class _RnnScorer:
    """The RNN's state: hidden vector plus the next-unit distribution it gives."""

    nullable = False
    order = UNBOUNDED_ORDER

    def __init__(self, model: RNNModel):
        self.model = model
        self.vocab = model.vocab

    @functools.cached_property
    def _begin(self) -> tuple:
        state, logp = self.model.start([])
        return self._raw(1, state, logp)

    def begin(self) -> tuple:
        return self._begin

    def step(self, raw: tuple, word: str) -> tuple:
        units, _, (state, logp) = raw
        wid = self.vocab.id(word)
        state_next, logp_next = self.model.advance(state, wid)
        return float(logp[wid]) * LOG10_E, units + 1, self._raw(units + 1, state_next, logp_next)

    @staticmethod
    def _raw(units: int, state: tuple, logp: np.ndarray) -> tuple:
        """units: the units read so far, <s> included. The RNN's state is its hidden
        vector and, with direct connections, the unit history they hash; both decide
        what comes next, so both are in the key that States compare."""
        h, history = state
        key = (h.tobytes(), None if history is None else history.tobytes())
        return units, key, (state, logp)


class _MixScorer:
    """One state per component, mixed as mix.py mixes."""

    def __init__(self, model: MixModel):
        self.model = model
        self.vocab = model.vocab
        self.parts = [scorer_for(component) for component in model.components]
        self.order = max(part.order for part in self.parts)
        self.nullable = all(part.nullable for part in self.parts)

    def begin(self) -> tuple:
        return self._raw(tuple(part.begin() for part in self.parts))

    def null(self) -> tuple:
        return self._raw(tuple(part.null() for part in self.parts))

    def step(self, raw: tuple, word: str) -> tuple:
        results = [part.step(part_raw, word) for part, part_raw in zip(self.parts, raw[2])]
        log10 = self.model.unit_log10(word, [float(r[0]) for r in results])
        return log10, max(r[1] for r in results), self._raw(tuple(r[2] for r in results))

    @staticmethod
    def _raw(parts: tuple) -> tuple:
        length = max(p[0] for p in parts)
        # every part at its null context (length 0) is the null context: key () as State()'s
        return length, tuple((p[0], p[1]) for p in parts) if length else (), parts


SCORERS = {NgramModel: _NgramScorer, RNNModel: _RnnScorer, MixModel: _MixScorer}


def scorer_for(model):
    for kind, scorer in SCORERS.items():
        if isinstance(model, kind):
            return scorer(model)
    raise ConfigError(f"no KenLM-style scoring for a {type(model).__name__}")


def _log10_out(value) -> float:
    """A log10 probability as KenLM returns it (a float32 value), after lm.checked's test."""
    value = float(_F32(value))
    if not value <= POSITIVE_SLACK:
        checked(np.array([value]))   # raises, with rnnkit's message
    return min(value, 0.0)


def _power_of_ten(exponent: float) -> float:
    try:
        return 10.0 ** exponent
    except OverflowError:
        return float("inf")


# ---------------------------------------------------------------- the API

class Model:
    """An rnnkit model file (RNN, n-gram, mixture) or ARPA file behind kenlm.Model's API."""

    def __init__(self, path):
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise ConfigError(f"a model path must be a str, bytes or path, got {type(path).__name__}")
        self.path = os.path.abspath(os.fsencode(path))
        self._lm = loader.load(os.fsdecode(self.path))
        self._scorer = scorer_for(self._lm)
        self._vocab = self._lm.vocab
        self._ngram = self._lm if isinstance(self._lm, NgramModel) else None
        if self._ngram is not None:
            # called once per word or sentence: C entry points (csrc/ngram_py.c) in front of
            # this class's methods, which take every case the C code does not
            fast = Kenlm(self._ngram.c_query, self._scorer, FullScoreReturn, self._scorer.begin()[1], self)
            self.score, self.BaseScore, self.BaseFullScore = fast.score, fast.BaseScore, fast.BaseFullScore
            self.BeginSentenceWrite, self.NullContextWrite = fast.BeginSentenceWrite, fast.NullContextWrite

    @property
    def order(self) -> int:
        return self._scorer.order

    # -- whole sentences ----------------------------------------------------------------
    def score(self, sentence, bos: bool = True, eos: bool = True) -> float:
        """log10 P(sentence [</s>] | <s> or the null context), summed in float32 as KenLM."""
        if self._ngram is not None:   # the same sums, in one C call
            return self._ngram.kenlm_score(_text(sentence), bos, eos)
        total = _F32(0.0)
        for log10, _, _ in self.full_scores(sentence, bos, eos):
            total = total + _F32(log10)
        return float(total)

    def full_scores(self, sentence, bos: bool = True, eos: bool = True) -> Iterator[tuple[float, int, bool]]:
        """(log10 prob, n-gram length, oov) for each word and, when eos, for </s>."""
        if self._ngram is not None:   # the same numbers, in one C call
            yield from self._ngram.kenlm_full_scores(_text(sentence), bos, eos)
            return
        words = self._words(sentence)
        raw = self._scorer.begin() if bos else self._null()
        for word in words:
            log10, length, raw = self._step(raw, word)
            yield log10, length, self._vocab.id(word) == UNK_ID
        if eos:
            log10, length, raw = self._step(raw, EOS)
            yield log10, length, False

    def perplexity(self, sentence) -> float:
        """10^(-score / (words + 1)): the sentence's own perplexity, </s> counted."""
        return _power_of_ten(-self.score(sentence) / (len(self._words(sentence)) + 1))

    # -- one word at a time -----------------------------------------------------------------
    def BeginSentenceWrite(self, state: State) -> None:
        """Make `state` the context at the start of a sentence (after <s>)."""
        _check_state(state)._write(self._scorer, self._scorer.begin())

    def NullContextWrite(self, state: State) -> None:
        """Make `state` the empty context (no <s>)."""
        _check_state(state)._write(self._scorer, self._null())

    def BaseScore(self, in_state: State, word: str, out_state: State) -> float:
        """log10 P(word | in_state); writes the state after the word to out_state."""
        return self._base(in_state, word, out_state)[0]

    def BaseFullScore(self, in_state: State, word: str, out_state: State) -> FullScoreReturn:
        """BaseScore with the n-gram length used and whether the word is OOV."""
        log10, length, word = self._base(in_state, word, out_state)
        return FullScoreReturn(log10, length, self._vocab.id(word) == UNK_ID)

    def __contains__(self, word) -> bool:
        return self._vocab.id(nfc(_text(word))) != UNK_ID

    def __repr__(self) -> str:
        return "<Model from {0}>".format(os.path.basename(self.path))

    def __reduce__(self):
        return Model, (self.path,)

    # -- internals ----------------------------------------------------------------------------
    def _words(self, sentence) -> list[str]:
        return self._lm.units(_text(sentence))

    def _base(self, in_state: State, word: str, out_state: State) -> tuple:
        """(log10, n-gram length, the word looked up); writes out_state."""
        if not isinstance(word, str):
            raise ConfigError(f"a word must be a str, got {type(word).__name__}")
        word = nfc(word)
        log10, length, raw = self._step(self._read(in_state), word)
        _check_state(out_state)._write(self._scorer, raw)
        return log10, length, word

    def _step(self, raw: tuple, word: str) -> tuple:
        log10, length, raw = self._scorer.step(raw, word)
        return _log10_out(log10), length, raw

    def _null(self) -> tuple:
        if not self._scorer.nullable:
            raise ConfigError(f"this {self._lm.model_type} model reads every sentence after <s>: it has no "
                              "null context (bos=False, NullContextWrite and a State never written are for n-gram models)")
        return self._scorer.null()

    def _read(self, state: State) -> tuple:
        """The raw state a State holds; an unwritten State is the null context."""
        if _check_state(state)._owner is None:
            return self._null()
        if state._owner is not self._scorer:
            raise ConfigError("this State was written by another Model; a State belongs to the Model "
                              "that wrote it")
        return state._length, state._key, state._data


class LanguageModel(Model):
    """Backwards compatibility stub (as in kenlm). Use Model."""


def _check_state(state) -> State:
    if not isinstance(state, State):
        raise ConfigError(f"expected a kenlm State, got {type(state).__name__}")
    return state


def _text(value) -> str:
    """A sentence or word given as str or UTF-8 bytes (kenlm takes both)."""
    if isinstance(value, bytes):
        return decode_utf8(value, "<sentence>")
    if not isinstance(value, str):
        raise ConfigError(f"text must be a str or UTF-8 bytes, got {type(value).__name__}")
    return value


__all__ = ["FullScoreReturn", "LanguageModel", "Model", "State"]
