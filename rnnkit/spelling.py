"""The spelling model: what an out-of-vocabulary unit costs, so bits per character are honest.

A closed-vocabulary model charges an unknown unit P(<unk> | history) whatever it is,
so a word model that meets a long unseen word pays as little as for a short one, and
its bits per character look better than they are (on 5,000 nsmc lines a word 3-gram
has 48% OOV tokens and showed 2.99 held-out bits/char against 3.85 for a char 6-gram
trained on 20x the text). On the open-vocabulary basis an OOV unit u costs

    P(<unk> | history) * P_spell(u)

where P_spell is a distribution over every non-empty string, estimated in training:

    P_spell(c1 .. cn) = P1(c1) * P(c2) * ... * P(cn) * P(END)

a character unigram with an end-of-unit symbol, fitted on the *distinct* units of the
training text (an OOV unit is a rare one, and rare units look like types, not like the
frequent tokens). Its alphabet is the characters seen, END and an escape for any
other character; all are add-one smoothed,

    P(x) = (count(x) + 1) / (N + K + 2)     N = character and END counts, K = characters seen

count(END) = number of units, count(escape) = 0. A character never seen costs
P(escape) / (UNICODE_SCALARS - K): the escape's mass spread evenly over the Unicode
scalar values not seen (1,112,064 - K of them: about 20.1 bits each, plus the escape).
The first character cannot be END (units are never empty): P1(x) = P(x) / (1 - P(END)).
Every factor sums to one over its choices, so P_spell sums to 1 over all non-empty
strings. Strings that are in the vocabulary get some of that mass too, so the open
figure is, if anything, pessimistic: it never flatters a model.

Every unit gets one (char and jamo models too: their OOVs are unseen characters, which
now cost P(<unk>) times about 20 bits more instead of P(<unk>) alone), computed by
n-gram and RNN training and stored in the model file (meta field `spelling`). Models
without one (ARPA files from any tool, files written before it) report bits per
character on the closed basis, and say so.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

from .vocab import SPECIALS

# Unicode scalar values: every code point but the 2,048 surrogates
UNICODE_SCALARS = 0x110000 - 0x800
UNSEEN_CHARACTER_BITS = math.log2(UNICODE_SCALARS)   # about 20.08: the cost of one unseen character
OPEN_BASIS = "open vocabulary (OOV units spelled out)"
CLOSED_BASIS = "closed vocabulary (OOV units cost P(<unk>) only)"


class SpellingModel:
    """A character unigram with an end symbol over the distinct training units."""

    def __init__(self, chars: list[str], counts: list[int], ends: int):
        self.chars, self.counts, self.ends = list(chars), [int(c) for c in counts], int(ends)
        denominator = sum(self.counts) + self.ends + len(self.chars) + 2
        log10 = math.log10
        self._end = log10((self.ends + 1) / denominator)
        self._not_end = log10(1.0 - (self.ends + 1) / denominator)
        self._char = {c: log10((n + 1) / denominator) for c, n in zip(self.chars, self.counts)}
        self._unseen = log10(1 / denominator) - log10(UNICODE_SCALARS - len(self.chars))

    @classmethod
    def train(cls, unit_lists: Iterable[Iterable[str]]) -> "SpellingModel":
        """From the units of the training text (each distinct unit counts once)."""
        types = {unit for units in unit_lists for unit in units} - set(SPECIALS)
        counts = Counter(c for unit in types for c in unit)
        chars = sorted(counts)
        return cls(chars, [counts[c] for c in chars], len(types))

    def log10(self, unit: str) -> float:
        """log10 P_spell(unit); a unit is never empty."""
        char, unseen = self._char, self._unseen
        total = sum(char.get(c, unseen) for c in unit) + self._end
        return total - self._not_end   # the first character is drawn knowing it is not END

    def total_log10(self, units: Iterable[str]) -> float:
        """Sum of log10 P_spell over `units` (the OOV units of a text)."""
        return float(sum(self.log10(unit) for unit in units))

    def to_meta(self) -> dict:
        return {"chars": self.chars, "counts": self.counts, "units": self.ends}

    @classmethod
    def from_meta(cls, meta: dict | None) -> "SpellingModel | None":
        """The spelling model a model file's `spelling` field holds; None (closed
        vocabulary) for a file without one."""
        return None if meta is None else cls(meta["chars"], meta["counts"], meta["units"])

    def describe(self) -> dict:
        return {"characters": len(self.chars), "units": self.ends}
