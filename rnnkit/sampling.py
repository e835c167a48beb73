"""Choosing the next token from any model's next-token distribution.

Models expose a small state machine: `start(prefix_ids) -> (state, logprobs)` and
`advance(state, token_id) -> (state, logprobs)`, where logprobs are natural-log
probabilities over the vocabulary. `generate` drives it with temperature, top-k and
top-p (nucleus) filtering, and stops at `</s>` or after `max_tokens`.
"""

from __future__ import annotations

import numpy as np

from .errors import RnnkitError

GREEDY_TEMPERATURE = 1e-6  # at or below this, sampling is the argmax path


def check_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0 or not np.isfinite(temperature):
        raise RnnkitError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise RnnkitError(f"top-k must be >= 1, got {top_k}")
    if top_p is not None and not (0 < top_p <= 1):
        raise RnnkitError(f"top-p must be in (0, 1], got {top_p}")


def filtered_distribution(logprobs: np.ndarray, temperature: float = 1.0,
                          top_k: int | None = None, top_p: float | None = None,
                          banned: tuple[int, ...] = ()) -> np.ndarray:
    """Probabilities after banning ids, temperature, top-k and top-p (sums to 1)."""
    logits = np.asarray(logprobs, dtype=np.float64).copy()
    if banned:
        logits[list(banned)] = -np.inf
    if temperature <= GREEDY_TEMPERATURE:
        probs = np.zeros_like(logits)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    logits /= temperature
    if top_k is not None and top_k < logits.size:
        kth = np.partition(logits, -top_k)[-top_k]
        logits[logits < kth] = -np.inf
    logits -= logits.max()
    probs = np.exp(logits)
    probs /= probs.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, top_p) + 1)]   # smallest set reaching top_p
        mask = np.zeros_like(probs, dtype=bool)
        mask[keep] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs


def generate(model, prefix_ids: list[int], rng: np.random.Generator, *, eos_id: int,
             banned: tuple[int, ...] = (), temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, max_tokens: int = 100) -> list[int]:
    """Sample token ids after prefix_ids until eos_id (not returned) or max_tokens."""
    check_options(temperature, top_k, top_p)
    state, logprobs = model.start(prefix_ids)
    out: list[int] = []
    while len(out) < max_tokens:
        probs = filtered_distribution(logprobs, temperature, top_k, top_p, banned)
        token = int(rng.choice(probs.size, p=probs)) if temperature > GREEDY_TEMPERATURE else int(np.argmax(probs))
        if token == eos_id:
            break
        out.append(token)
        state, logprobs = model.advance(state, token)
    return out
