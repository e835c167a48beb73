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

from .spelling import CLOSED_BASIS, OPEN_BASIS
from .units import count_chars


def bits_per_char(total_log10: float, characters: int) -> float:
    return -total_log10 * math.log2(10.0) / characters if characters else float("nan")


def corpus_summary(lines: list[str], tokens: int, oov: int, total_log10: float,
                   oov_spelling_log10: float | None = None) -> dict:
    """oov_spelling_log10: what spelling out the OOV units adds to the total (None:
    the model has no spelling model, and bits/char are on the closed basis)."""
    sentences = len(lines)
    predicted = tokens + sentences
    characters = count_chars(lines)
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
