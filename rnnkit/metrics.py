"""The corpus summary every model reports, with the KenLM / SRILM definitions.

perplexity = 10^(-log10 total / (tokens + sentences)): every sentence is scored as
`<s> w1 .. wn </s>`, `</s>` is predicted and counted, `<s>` is not. OOV units are
scored (as <unk>) and counted. Bits per character divide the same total by the NFC
characters of the text, one newline per line included, so that models with different
units (char, word, jamo, morph, spm) can be compared on the same text. With a spelling
model (spelling.py) the total for bits per character also pays for spelling out each
OOV unit (`oov_spelling_log10`), the open-vocabulary basis, and `bits_per_char_basis`
says which basis the figure is on.
"""

from __future__ import annotations

import math

import numpy as np

from .spelling import CLOSED_BASIS, OPEN_BASIS
from .units import count_chars


def bits_per_char(total_log10: float, characters: int) -> float:
    return -total_log10 * math.log2(10.0) / characters if characters else float("nan")


def corpus_summary(lines: list[str], tokens: int, oov: int, total_log10: float,
                   oov_spelling_log10: float | None = None) -> dict:
    """oov_spelling_log10: what spelling out the OOV units adds to the total (None:
    the model has no spelling model, and bits/char are on the closed basis)."""
    return summary_of_counts(len(lines), count_chars(lines), tokens, oov, total_log10, oov_spelling_log10)


def summary_of_counts(sentences: int, characters: int, tokens: int, oov: int, total_log10: float,
                      oov_spelling_log10: float | None = None) -> dict:
    """corpus_summary from counts (a sharded evaluation adds its shards' counts)."""
    predicted = tokens + sentences
    with_overflow_guard = (lambda x: float(10.0 ** x) if x < 308 else float("inf"))
    summary = {
        "sentences": sentences, "tokens": int(tokens), "oov": int(oov),
        "log10_total": float(total_log10),
        "perplexity": with_overflow_guard(-total_log10 / predicted) if predicted else float("nan"),
        "characters": characters,
    }
    if oov_spelling_log10 is None:
        return {**summary, "bits_per_char": bits_per_char(total_log10, characters), "bits_per_char_basis": CLOSED_BASIS}
    return {**summary, "oov_spelling_log10": float(oov_spelling_log10),
            "bits_per_char": bits_per_char(total_log10 + oov_spelling_log10, characters),
            "bits_per_char_basis": OPEN_BASIS,
            "bits_per_char_closed": bits_per_char(total_log10, characters)}


def oov_summary(summary: dict, total_oov_log10: float, zero_prob: int) -> dict:
    """What n-gram models add: OOV rate, the perplexity without the OOVs' own terms (as
    SRILM reports it), and the tokens of probability 0."""
    tokens, oov, total = summary["tokens"], summary["oov"], summary["log10_total"]
    predicted = tokens + summary["sentences"]
    with np.errstate(over="ignore"):
        excl = total - total_oov_log10
        ppl_excl = float(10.0 ** (-excl / (predicted - oov))) if predicted > oov else float("nan")
    return {"predicted": predicted, "oov_rate": oov / tokens if tokens else 0.0, "zero_prob": zero_prob,
            "perplexity_excl_oov": ppl_excl, "log10_oov": float(total_oov_log10)}


def combine_summaries(parts: list[dict]) -> dict:
    """The summary of a text from those of its pieces (counts and log10 totals added in
    order; the ratios computed again). The open basis holds only if every piece has it."""
    keys = ("sentences", "characters", "tokens", "oov", "log10_total", "log10_oov", "zero_prob",
            "oov_spelling_log10")
    total = {key: sum(part[key] for part in parts) for key in keys if parts and all(key in p for p in parts)}
    summary = summary_of_counts(total["sentences"], total["characters"], total["tokens"], total["oov"],
                                total["log10_total"], total.get("oov_spelling_log10"))
    if "log10_oov" in total:
        summary.update(oov_summary(summary, total["log10_oov"], total["zero_prob"]))
    return summary
