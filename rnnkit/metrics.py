"""The corpus summary every model reports, with the KenLM / SRILM definitions.

perplexity = 10^(-log10 total / (tokens + sentences)): every sentence is scored as
`<s> w1 .. wn </s>`, `</s>` is predicted and counted, `<s>` is not. OOV units are
scored (as <unk>) and counted. Bits per character divide the same total by the NFC
characters of the text, one newline per line included, so that models with different
units (char, word, jamo) can be compared on the same text.
"""

from __future__ import annotations

import math

from .units import count_chars


def corpus_summary(lines: list[str], tokens: int, oov: int, total_log10: float) -> dict:
    sentences = len(lines)
    predicted = tokens + sentences
    characters = count_chars(lines)
    with_overflow_guard = (lambda x: float(10.0 ** x) if x < 308 else float("inf"))
    return {
        "sentences": sentences, "tokens": int(tokens), "oov": int(oov),
        "log10_total": float(total_log10),
        "perplexity": with_overflow_guard(-total_log10 / predicted) if predicted else float("nan"),
        "characters": characters,
        "bits_per_char": -total_log10 * math.log2(10.0) / characters if characters else float("nan"),
    }
