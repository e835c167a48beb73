"""The base class every model inherits: one scoring vocabulary for RNN, n-gram and mixture.

A model says what it is (`vocab`, `unit`, `tokenizer`, `spelling`, `model_type`) and implements
four things:

    token_logprobs_many(sentences)  log10 P of each unit and of </s>, per sentence
    start(prefix_ids) / advance(state, id)  the incremental state machine sampling uses
    file_contents(resumable)        what its model file holds
    describe()                      what `rnnkit info` prints

Everything else is derived here once, so the models cannot drift apart: `score(bos,
eos)`, `score_many`, `token_logprobs`, `full_scores` (KenLM's names), `evaluate`,
`encode`, `next_distribution`, `samples` / `sample`, `token_rows`, `save`. Text is
split (and NFC-normalised) only by the model's Tokenizer (units.py).

A sentence is a string, split by the tokenizer, or a list of its units (already split:
`evaluate` splits a text once and scores the lists).

`evaluate` reports bits per character on the open-vocabulary basis when the model has a
spelling model (spelling.py: an OOV unit costs P(<unk> | history) times the probability
of spelling it out), on the closed basis otherwise, and says which; perplexity keeps
KenLM's and SRILM's definition (an OOV unit costs P(<unk>) only) either way.

Every log10 score that leaves a model passes `checked`: a NaN, +inf or positive
log-probability is not a probability and is never returned as one.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from . import modelfile
from .errors import ConfigError, RnnkitError
from .metrics import corpus_summary
from .sampling import generate
from .vocab import BOS_ID, EOS_ID, UNK_ID

# how far above 0 a log10 probability may come out by rounding: a float32 softmax for a
# near-certain unit, or an ARPA file's backoffs written with 6 or 7 significant digits
POSITIVE_SLACK = 1e-4


def checked(logprobs: np.ndarray) -> np.ndarray:
    """`logprobs` (log10) unchanged if each is a log-probability (-inf allowed: P = 0)."""
    bad = np.isnan(logprobs) | (logprobs > POSITIVE_SLACK)
    if bad.any():
        value = float(logprobs[bad][0])
        raise RnnkitError(f"the model gives log10 probability {value:.4g} (a probability above 1, "
                          "or NaN): its file is corrupt or not normalised, or its training diverged")
    return np.minimum(logprobs, 0.0)


class LanguageModel:
    """What every rnnkit model answers. Subclasses set vocab, unit, tokenizer, spelling
    (None: closed vocabulary) and model_type."""

    model_type = "?"
    vocab = None
    unit = "char"
    tokenizer = None
    spelling = None

    # -- implemented by each model ------------------------------------------------------------
    def token_logprobs_many(self, sentences: list[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def start(self, prefix_ids: list[int]):
        raise NotImplementedError

    def advance(self, state, token_id: int):
        raise NotImplementedError

    def file_contents(self, resumable: bool = True) -> tuple[str, dict, dict]:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    # -- text to ids ----------------------------------------------------------------------------
    def units(self, sentence: str) -> list[str]:
        """The sentence's units (NFC-normalised), as the model sees them."""
        return self.tokenizer.split(sentence)

    def unit_ids(self, sentence: str) -> np.ndarray:
        """Ids of the sentence's units, without <s> and </s>; unknown units are <unk> (0)."""
        return self.vocab.encode(self.units(sentence))

    def encode(self, sentence: str) -> list[int]:
        """The id sequence the model sees: <s> first, </s> last."""
        return [BOS_ID, *self.unit_ids(sentence).tolist(), EOS_ID]

    # -- scores ---------------------------------------------------------------------------------
    def text_token_logprobs(self, lines: list[str]) -> list[np.ndarray]:
        """token_logprobs_many for the lines of one text, in order. The same for models
        that score each line alone; an RNN trained with `stream` carries its state."""
        return self.token_logprobs_many(lines)

    def token_logprobs(self, sentence: str, bos: bool = True, eos: bool = True) -> np.ndarray:
        """log10 probability of each unit after <s> (and of </s> when eos)."""
        return self._scores([sentence], bos, eos)[0]

    def score(self, sentence: str, bos: bool = True, eos: bool = True) -> float:
        """log10 P(w1 .. wn </s> | <s>) (KenLM's `score`: bos/eos as there)."""
        return float(self.token_logprobs(sentence, bos, eos).sum())

    def score_many(self, sentences: list[str], bos: bool = True, eos: bool = True) -> list[float]:
        return [float(lp.sum()) for lp in self._scores(list(sentences), bos, eos)]

    def full_scores(self, sentence: str, bos: bool = True, eos: bool = True) -> list[tuple[float, int, bool]]:
        """(log10 prob, context length, is OOV) per unit and for </s>, as KenLM's
        `full_scores`. For an n-gram the length is that of the n-gram matched; a model
        that conditions on the whole history (RNN, mixture) reports the history's length
        (<s> included) plus one."""
        logps = self.token_logprobs(sentence, bos, eos)
        oov = [*(self.unit_ids(sentence) == UNK_ID).tolist(), False][:len(logps)]
        return [(float(p), i + 1 + int(bos), bool(o)) for i, (p, o) in enumerate(zip(logps, oov))]

    def token_rows(self, sentence: str) -> list[dict]:
        """Per unit (and </s>): the unit, its log10 probability, its context length, OOV."""
        units = self.units(sentence) + ["</s>"]
        return [{"token": unit, "log10": log10, "ngram": length, "oov": oov}
                for unit, (log10, length, oov) in zip(units, self.full_scores(sentence))]

    def _scores(self, sentences: list[str], bos: bool, eos: bool) -> list[np.ndarray]:
        if not bos:
            raise ConfigError(f"a {self.model_type} model scores every sentence after <s> (bos=False "
                              "is for n-grams)")
        logps = [checked(np.asarray(lp, dtype=np.float64)) for lp in self.token_logprobs_many(sentences)]
        return logps if eos else [lp[:-1] for lp in logps]

    def evaluate(self, lines: list[str], unit_lists: list[list[str]] | None = None) -> dict:
        """Corpus statistics: tokens, sentences, OOVs, log10 total, perplexity, bits/char
        (and the basis of bits/char, see the module docstring). `unit_lists`: the lines'
        units, when the caller has split them already (a segmenter can cost more than scoring)."""
        lines = list(lines)
        unit_lists = self.tokenizer.split_lines(lines) if unit_lists is None else unit_lists
        logps, spelled = self.text_scores(unit_lists)
        total = sum(float(lp.sum()) for lp in logps)
        tokens = sum(len(units) for units in unit_lists)
        oov = sum(1 for units in unit_lists for unit in units if unit not in self.vocab)
        return corpus_summary(lines, tokens, oov, total, spelled)

    def text_scores(self, unit_lists: list[list[str]]) -> tuple[list[np.ndarray], float | None]:
        """For the lines of one text (already split): log10 P of each unit and </s> per
        line (an OOV unit costs P(<unk>)), and what spelling out the OOV units adds to
        their sum on the open-vocabulary basis (None: the model has no spelling model)."""
        logps = [checked(lp) for lp in self.text_token_logprobs(unit_lists)]
        return logps, self.oov_spelling_log10(unit_lists)

    def oov_spelling_log10(self, unit_lists: list[list[str]]) -> float | None:
        """log10 P_spell summed over the units not in the vocabulary; None without a spelling model."""
        if self.spelling is None:
            return None
        vocab = self.vocab
        return self.spelling.total_log10(unit for units in unit_lists for unit in units if unit not in vocab)

    # -- next unit and sampling -------------------------------------------------------------
    def next_distribution(self, prefix: str = "") -> np.ndarray:
        """P(next unit | <s> prefix) over the vocabulary (float64, sums to 1)."""
        _, logp = self.start(self.unit_ids(prefix).tolist())
        probs = np.exp(np.asarray(logp, dtype=np.float64))
        return probs / probs.sum()

    def samples(self, n: int = 1, prefix: str = "", temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, max_tokens: int = 100,
                seed: int | None = None) -> Iterator[str]:
        """Sentences that start with prefix, one at a time (each ends at </s> or
        max_tokens units), so a caller can print them as they come."""
        if n < 0:
            raise ConfigError(f"the number of samples must be >= 0, got {n}")
        if seed is not None and not 0 <= seed < 2**64:
            raise ConfigError(f"seed must be an integer in 0..2**64-1, got {seed}")
        rng = np.random.default_rng(seed)
        prefix_units = self.units(prefix)
        prefix_ids = self.vocab.encode(prefix_units).tolist()
        for _ in range(n):
            ids = generate(self, prefix_ids, rng, eos_id=EOS_ID, banned=(BOS_ID, UNK_ID),
                           temperature=temperature, top_k=top_k, top_p=top_p, max_tokens=max_tokens)
            yield self.tokenizer.join(prefix_units + self.vocab.decode(ids))

    def sample(self, n: int = 1, prefix: str = "", **options) -> list[str]:
        """`samples` as a list."""
        return list(self.samples(n, prefix, **options))

    # -- files ----------------------------------------------------------------------------------
    def save(self, path, resumable: bool = True) -> None:
        """Write the model file. resumable=False leaves out training state (see file_contents)."""
        modelfile.save(path, *self.file_contents(resumable))
