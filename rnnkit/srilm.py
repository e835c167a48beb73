"""SRILM's `ngram -ppl` report for any rnnkit model (`rnnkit eval --format srilm`).

The text is SRILM's (lm/src/LM.cc, TextStats.cc, NgramLM.cc of SRILM 1.7), line for line:

    file test.txt: 3 sentences, 10 words, 1 OOVs
    0 zeroprobs, logprob= -21.48291 ppl= 77.80127 ppl1= 148.2312

- Every non-blank line is a sentence `<s> w1 .. wn </s>` (SRILM skips lines of only
  whitespace); `words` counts the units without `</s>`.
- An OOV unit (one the model does not know, or the word `<unk>`) is counted in `OOVs`
  and left out: SRILM reads an ARPA model as closed-vocabulary and gives it probability
  0, so it adds nothing to logprob and is not counted in ppl. A known unit with
  probability 0 (an `mle` model) is a `zeroprob`, likewise left out.
- logprob is the sum of the other log10 probabilities, `</s>` included, each a float32
  as SRILM holds it; ppl = 10^(-logprob / (words - OOVs - zeroprobs + sentences)) and
  ppl1 = 10^(-logprob / (words - OOVs - zeroprobs)), `undefined` when that count is 0.
  ppl is KenLM's perplexity excluding OOVs (query's second line).
- Numbers print as C++ streams print them: counts in full, log10 values and
  perplexities with 7 significant digits (SRILM's LogP_Precision).

debug 1 adds, before the summary, each sentence, its own two statistics lines and a
blank line; debug 2 adds each unit's line between the sentence and its statistics:

    \tp( cab | a ...) \t= [2gram] 0.25 [ -0.60206 ]

that is the unit (`<unk>` for an OOV), the one before it (`<s>` first; ` ...` once there
are more), the length of the n-gram matched as `[Ngram]` (`[OOV]` for an OOV; for RNNs
and mixtures the context length, <s> included, plus one, as full_scores reports it),
the probability and its log10. Units that are whitespace print as rnnkit's ARPA files
write them (`<sp>` for the space of a char model); a sentence prints as its units
joined by single spaces, the words SRILM would read. Each sentence is scored on its own
(an RNN trained with `stream` does not carry its state from line to line here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .arpa import escape_token
from .units import split_words
from .vocab import BOS, EOS, UNK


@dataclass
class TextStats:
    """SRILM's TextStats: the counts and the log10 total behind its two summary lines."""

    sentences: int = 0
    words: int = 0
    oovs: int = 0
    zeroprobs: int = 0
    logprob: float = 0.0

    def add(self, other: "TextStats") -> None:
        self.sentences += other.sentences
        self.words += other.words
        self.oovs += other.oovs
        self.zeroprobs += other.zeroprobs
        self.logprob += other.logprob

    def scored(self) -> int:
        """Units whose probability counts: words - OOVs - zeroprobs (</s> not included)."""
        return self.words - self.oovs - self.zeroprobs

    def ppl(self) -> float | None:
        return _perplexity(self.logprob, self.scored() + self.sentences)

    def ppl1(self) -> float | None:
        return _perplexity(self.logprob, self.scored())

    def lines(self) -> list[str]:
        """The summary as SRILM prints it (one line when there is nothing to score)."""
        first = f"{self.sentences} sentences, {self.words} words, {self.oovs} OOVs"
        if self.words + self.sentences == 0:
            return [first]
        return [first, f"{self.zeroprobs} zeroprobs, logprob= {_g(self.logprob)} "
                       f"ppl= {_maybe(self.ppl())} ppl1= {_maybe(self.ppl1())}"]


def _perplexity(logprob: float, count: int) -> float | None:
    """SRILM's LogPtoPPL(logprob / count), or None (`undefined`) when count <= 0."""
    if count <= 0:
        return None
    try:
        return math.exp(-(logprob / count) * math.log(10.0))
    except OverflowError:
        return math.inf


def _g(value: float) -> str:
    """A double as a C++ stream prints it at SRILM's LogP_Precision (7 significant digits)."""
    return f"{value:.7g}"


def _maybe(value: float | None) -> str:
    return "undefined" if value is None else _g(value)


def report(model, lines: list[str], name: str, debug: int = 0) -> Iterator[str]:
    """SRILM's `ngram -ppl NAME -debug DEBUG` output for `lines`, one output line at a time."""
    total = TextStats()
    show = escape_token if model.tokenizer.whitespace_units else str
    for line in lines:
        if not split_words(line):
            continue  # SRILM's File::getline skips blank lines
        stats, word_lines = sentence_stats(model, line, show)
        total.add(stats)
        if debug >= 1:
            yield " ".join(show(unit) for unit in model.units(line))
            if debug >= 2:
                yield from word_lines
            yield from stats.lines()
            yield ""
    first, *rest = total.lines()
    yield f"file {name}: {first}"
    yield from rest


def sentence_stats(model, line: str, show=str) -> tuple[TextStats, list[str]]:
    """One sentence's TextStats and its `-debug 2` lines (`show` prints a unit)."""
    units = model.units(line)
    stats = TextStats(sentences=1, words=len(units))
    word_lines = []
    previous = BOS
    for i, (unit, (log10, length, oov)) in enumerate(zip(units + [EOS], model.full_scores(line))):
        logp = float(np.float32(log10))  # SRILM's LogP is a float
        if oov:
            stats.oovs += 1
            tag, logp, shown = "[OOV]", -math.inf, UNK
        else:
            tag, shown = f"[{length}gram]", show(unit)
            if logp == -math.inf:
                stats.zeroprobs += 1
            else:
                stats.logprob += logp
        prob = 0.0 if logp == -math.inf else math.exp(logp * math.log(10.0))
        word_lines.append(f"\tp( {shown} | {previous}{' ...' if i else ' '}) \t= {tag} {_g(prob)} [ {_g(logp)} ]")
        previous = shown
    return stats, word_lines
