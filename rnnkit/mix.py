"""Linear interpolation of language models that share a unit.

    P(w | h) = sum_i weight_i * P_i(w | h)

Models are aligned on the union of their vocabularies. A unit that model i does not
know gets model i's <unk> probability shared evenly among all the units it lacks
(and <unk> itself), so every component's distribution over the union still sums to
one and so does the mixture; models with the same vocabulary are mixed exactly.

Bits per character on the open-vocabulary basis (see rnnkit.lm): each component
spells out, with its own spelling model, the units it lacks, P_i(<unk> | h) * P_spell_i(u)
in place of its <unk> share, and the mixture is the weighted sum of those. A mixture
with a component that has no spelling model (an ARPA file) reports the closed basis.

`tune_weights` finds the weights that maximise the likelihood of held-out text by
expectation-maximisation over per-token probabilities, as SRILM's compute-best-mix
does; each EM iteration never lowers the held-out likelihood.
"""

from __future__ import annotations

import math

import numpy as np

from .lm import LanguageModel, checked
from .errors import RnnkitError
from .vocab import UNK, UNK_ID, Vocab

class MixModel(LanguageModel):
    """A weighted mixture of RNN and/or n-gram models with one unit."""

    model_type = "mix"

    def __init__(self, components: list, weights=None, record: dict | None = None):
        if len(components) < 2:
            raise RnnkitError("a mixture needs at least two models")
        units = {c.unit for c in components}
        if len(units) != 1:
            raise RnnkitError(f"cannot mix models with different units ({', '.join(sorted(units))}); "
                              "train them with the same --unit")
        if any(c.tokenizer != components[0].tokenizer for c in components[1:]):
            raise RnnkitError(f"cannot mix {components[0].unit} models that split text differently (another "
                              "SentencePiece model or Kiwi model type); train them with the same one")
        self.components = components
        self.unit = components[0].unit
        self.tokenizer = components[0].tokenizer
        self.weights = check_weights(weights if weights is not None else [1.0 / len(components)] * len(components),
                                     len(components))
        self.record = record or {}
        self._align()

    def _align(self) -> None:
        """Union vocabulary; for each component, where each union unit sits in its own vocabulary."""
        tokens = list(self.components[0].vocab.to_list())
        seen = set(tokens)
        for component in self.components[1:]:
            for token in component.vocab.to_list():
                if token not in seen:
                    seen.add(token)
                    tokens.append(token)
        self.vocab = Vocab.from_list(tokens)
        self._maps, self._share = [], []
        for component in self.components:
            ids = np.array([component.vocab.id(t) if t in component.vocab else -1 for t in tokens])
            unk = component.vocab.id(UNK)
            missing = int((ids < 0).sum())
            ids[ids < 0] = unk
            self._maps.append(ids)
            # the <unk> mass is shared by <unk> and every unit this component lacks
            self._share.append(1.0 / (missing + 1))

    # -- scoring ------------------------------------------------------------------------------
    def component_token_probs(self, sentences: list, text: bool = False) -> list[np.ndarray]:
        """Per sentence: a (tokens + 1, models) array of each model's probability of each unit.
        text=True: the sentences are the lines of one text (see text_token_logprobs)."""
        return self._component_probs(sentences, text, spelled=False)[0]

    def _component_probs(self, sentences: list, text: bool, spelled: bool):
        """component_token_probs, and with `spelled` the same on the open-vocabulary basis
        (None when a component has no spelling model)."""
        unit_lists = self.tokenizer.split_lines(sentences)
        spelled = spelled and all(c.spelling is not None for c in self.components)
        closed_per_model, open_per_model = [], []
        for component, share in zip(self.components, self._share):
            logps = component.text_token_logprobs(unit_lists) if text else component.token_logprobs_many(unit_lists)
            closed, opened = [], []
            for units, lp in zip(unit_lists, logps):
                p = 10.0 ** np.asarray(lp, dtype=np.float64)
                unknown = [i for i, unit in enumerate(units) if component.vocab.id(unit) == UNK_ID]
                if spelled:
                    spelling = p.copy()
                    spelling[unknown] *= [10.0 ** component.spelling.log10(units[i]) for i in unknown]
                    opened.append(spelling)
                p[unknown] *= share
                closed.append(p)
            closed_per_model.append(closed)
            open_per_model.append(opened)
        return _by_sentence(closed_per_model), (_by_sentence(open_per_model) if spelled else None)

    def text_scores(self, unit_lists: list[list[str]]):
        """rnnkit.lm's text_scores from one scoring pass of the components."""
        closed, opened = self._component_probs(unit_lists, text=True, spelled=True)
        logps = [checked(lp) for lp in self._mixed_logprobs(closed)]
        if opened is None:
            return logps, None
        total = sum(float(lp.sum()) for lp in logps)
        return logps, sum(float(checked(lp).sum()) for lp in self._mixed_logprobs(opened)) - total

    def token_logprobs_many(self, sentences: list[str]) -> list[np.ndarray]:
        return self._mixed_logprobs(self.component_token_probs(sentences))

    def text_token_logprobs(self, lines: list[str]) -> list[np.ndarray]:
        return self._mixed_logprobs(self.component_token_probs(lines, text=True))

    def unit_log10(self, token: str, component_log10: list[float]) -> float:
        """log10 P of one unit from each component's log10 P of it: token_logprobs_many
        for a single unit (a component that lacks the unit gives it its <unk> share)."""
        total = 0.0
        for weight, share, component, log10 in zip(self.weights, self._share, self.components, component_log10):
            p = 10.0 ** log10
            total += weight * (p * share if component.vocab.id(token) == component.vocab.id(UNK) else p)
        return math.log10(total) if total > 0 else -math.inf

    def _mixed_logprobs(self, probs: list[np.ndarray]) -> list[np.ndarray]:
        weights = np.asarray(self.weights)
        with np.errstate(divide="ignore"):
            return [np.log10(p @ weights) for p in probs]


    # -- distributions and sampling -----------------------------------------------------------
    def _mixed(self, logps: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(len(self.vocab))
        for weight, logp, ids, share, component in zip(self.weights, logps, self._maps, self._share, self.components):
            p = np.exp(np.asarray(logp, dtype=np.float64))[ids]
            p[ids == component.vocab.id(UNK)] *= share
            out += weight * p
        return out

    def start(self, prefix_ids: list[int]):
        states, logps = [], []
        tokens = self.vocab.decode(prefix_ids)
        for component in self.components:
            state, logp = component.start(component.vocab.encode(tokens).tolist())
            states.append(state)
            logps.append(logp)
        return states, np.log(np.maximum(self._mixed(logps), 1e-300))

    def advance(self, states, token_id: int):
        token = self.vocab.token(token_id)
        new_states, logps = [], []
        for component, state in zip(self.components, states):
            state, logp = component.advance(state, component.vocab.id(token))
            new_states.append(state)
            logps.append(logp)
        return new_states, np.log(np.maximum(self._mixed(logps), 1e-300))

    # -- files --------------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"type": "mix", "unit": self.unit, "vocab_size": len(self.vocab),
                "weights": list(self.weights),
                "components": [c.describe() for c in self.components], "training": self.record}

    def file_contents(self, resumable: bool = False) -> tuple[str, dict, dict]:
        """Components are always written for scoring only (`resumable` is accepted so that
        every model type saves alike): a mixture's component is never trained on.
        Component i's arrays are stored as `c{i}.NAME` (loader.py reads them back)."""
        meta = {"unit": self.unit, "weights": list(self.weights), "training": self.record, "components": []}
        arrays = {}
        for i, component in enumerate(self.components):
            kind, component_meta, component_arrays = component.file_contents(resumable=False)
            meta["components"].append({"type": kind, "meta": component_meta})
            arrays.update({f"c{i}.{name}": array for name, array in component_arrays.items()})
        return "mix", meta, arrays


def _by_sentence(per_model: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per model, per sentence arrays -> per sentence, a (positions, models) array."""
    return [np.stack(arrays, axis=1) for arrays in zip(*per_model)]


def check_weights(weights, count: int) -> list[float]:
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise RnnkitError(f"{len(weights)} weights for {count} models")
    if any(not (w >= 0) or not math.isfinite(w) for w in weights):
        raise RnnkitError("weights must be finite and >= 0")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise RnnkitError(f"weights must sum to 1 (they sum to {sum(weights):g})")
    return weights


def tune_weights(components: list, lines: list[str], iterations: int = 1000, tolerance: float = 1e-9):
    """EM for the interpolation weights on held-out lines.

    Returns (mixture, history, model_perplexities): history lists the held-out perplexity
    before the first and after every iteration (non-increasing, as EM guarantees; the last
    is the mixture's), model_perplexities each model's own, all from one scoring pass.
    """
    mixture = MixModel(components)
    probs = np.concatenate(mixture.component_token_probs(lines, text=True), axis=0)      # (N, M)
    if (probs <= 0).all(axis=1).any():
        raise RnnkitError("some held-out token has probability 0 under every model; cannot tune")
    weights = np.full(probs.shape[1], 1.0 / probs.shape[1])
    N = probs.shape[0]

    def perplexity(w):
        return float(np.exp(-np.log(probs @ w).sum() / N))

    history = [perplexity(weights)]
    for _ in range(iterations):
        mixed = probs @ weights
        weights = (probs * weights / mixed[:, None]).mean(axis=0)            # posterior responsibilities
        weights /= weights.sum()
        history.append(perplexity(weights))
        if history[-2] - history[-1] <= tolerance * history[-2]:
            break
    mixture.weights = [float(w) for w in weights]
    singles = [perplexity(np.eye(probs.shape[1])[m]) for m in range(probs.shape[1])]
    return mixture, history, singles
