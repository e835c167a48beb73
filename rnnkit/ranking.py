"""Ranking candidate sentences and rescoring n-best lists with any model.

What `rnnkit rank` prints is computed here, so the API gives the same numbers:
`rank(model, candidates)` orders whole sentences by log10 P; with a context, each
candidate is scored as the continuation of that context (the context's own units are
scored too, but only the candidate's count). `rescore_nbest` reads a speech or MT
decoder's n-best list (id<TAB>score<TAB>sentence) and adds lm_weight x log10 P.
"""

from __future__ import annotations

import math

from .errors import ConfigError, CorpusError
from .units import read_lines


def score_rows(model, sentences: list[str], per_token: bool = False) -> list[dict]:
    """What `rnnkit score` prints: {"sentence", "log10"} per sentence, and with per_token
    its "tokens" rows (model.token_rows) whose log10 values add up to the sentence's."""
    if per_token:
        return [{"sentence": s, "log10": float(sum(r["log10"] for r in rows)), "tokens": rows}
                for s in sentences for rows in [model.token_rows(s)]]
    return [{"sentence": s, "log10": float(v)} for s, v in zip(sentences, model.score_many(sentences))]


def rank(model, candidates: list[str], context: str | None = None) -> list[dict]:
    """Candidates best first: {"candidate", "log10"} and, with a context, "sentence" and
    "continuation_log10" (the sort key)."""
    if not context:
        scores = model.score_many(candidates)
        rows = [{"candidate": c, "log10": float(s)} for c, s in zip(candidates, scores)]
        return sorted(rows, key=lambda r: r["log10"], reverse=True)
    rows = []
    for candidate in candidates:
        sentence = f"{context} {candidate}"
        units = model.units(sentence)
        # the space goes with the context (char, jamo), nowhere (word) or with the
        # candidate's first unit (morph, spm): the tokenizer knows
        n_context = model.tokenizer.context_length(units, context)
        logps = model.token_logprobs(units)
        rows.append({"candidate": candidate, "sentence": sentence, "log10": float(logps.sum()),
                     "continuation_log10": float(logps[n_context:].sum())})
    return sorted(rows, key=lambda r: r["continuation_log10"], reverse=True)


def read_nbest(path) -> dict[str, list[dict]]:
    """An n-best file's hypotheses grouped by id: {"id", "score", "sentence"} each."""
    groups: dict[str, list[dict]] = {}
    for number, line in enumerate(read_lines(path), 1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise CorpusError(f"{path}:{number}: expected id<TAB>score<TAB>sentence")
        try:
            score = float(parts[1])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise CorpusError(f"{path}:{number}: score {parts[1]!r} is not a finite number")
        groups.setdefault(parts[0], []).append({"id": parts[0], "score": score, "sentence": parts[2]})
    return groups


def rescore_nbest(model, path, lm_weight: float = 1.0) -> dict[str, list[dict]]:
    """Each group best first by combined = score + lm_weight x log10 P(sentence)."""
    if not math.isfinite(lm_weight):
        raise ConfigError(f"the LM weight must be a finite number, got {lm_weight}")
    groups = read_nbest(path)
    for rows in groups.values():
        for row, lm_log10 in zip(rows, model.score_many([r["sentence"] for r in rows])):
            row["lm_log10"] = float(lm_log10)
            row["combined"] = row["score"] + lm_weight * row["lm_log10"]
        rows.sort(key=lambda r: r["combined"], reverse=True)
    return groups
