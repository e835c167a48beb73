"""Linear interpolation of language models that share a unit.

    P(w | h) = sum_i weight_i * P_i(w | h)

Models are aligned on the union of their vocabularies. A unit that model i does not
know gets model i's <unk> probability shared evenly among all the units it lacks
(and <unk> itself), so every component's distribution over the union still sums to
one and so does the mixture; models with the same vocabulary are mixed exactly.

`tune_weights` finds the weights that maximise the likelihood of held-out text by
expectation-maximisation over per-token probabilities, as SRILM's compute-best-mix
does; each EM iteration never lowers the held-out likelihood.
"""

from __future__ import annotations

import math

import numpy as np

from . import modelfile
from .lm import SentenceScorer
from .errors import RnnkitError
from .sampling import generate
from .metrics import corpus_summary
from .vocab import BOS, EOS, UNK, Vocab

LN10 = math.log(10.0)


class MixModel(SentenceScorer):
    """A weighted mixture of RNN and/or n-gram models with one unit."""

    model_type = "mix"

    def __init__(self, components: list, weights=None, record: dict | None = None):
        if len(components) < 2:
            raise RnnkitError("a mixture needs at least two models")
        units = {c.unit for c in components}
        if len(units) != 1:
            raise RnnkitError(f"cannot mix models with different units ({', '.join(sorted(units))}); "
                              "train them with the same --unit")
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
    def component_token_probs(self, sentences: list[str], text: bool = False) -> list[np.ndarray]:
        """Per sentence: a (tokens + 1, models) array of each model's probability of each unit.
        text=True: the sentences are the lines of one text (see text_token_logprobs)."""
        per_model = []
        for component, share in zip(self.components, self._share):
            logps = component.text_token_logprobs(sentences) if text else component.token_logprobs_many(sentences)
            probs = []
            for sentence, lp in zip(sentences, logps):
                p = 10.0 ** np.asarray(lp, dtype=np.float64)
                ids = [component.vocab.id(t) for t in self.tokenizer.split(sentence)]
                unk_positions = [i for i, j in enumerate(ids) if j == component.vocab.id(UNK)]
                p[unk_positions] *= share
                probs.append(p)
            per_model.append(probs)
        return [np.stack([per_model[m][s] for m in range(len(self.components))], axis=1)
                for s in range(len(sentences))]

    def token_logprobs_many(self, sentences: list[str]) -> list[np.ndarray]:
        return self._mixed_logprobs(self.component_token_probs(sentences))

    def text_token_logprobs(self, lines: list[str]) -> list[np.ndarray]:
        return self._mixed_logprobs(self.component_token_probs(lines, text=True))

    def _mixed_logprobs(self, probs: list[np.ndarray]) -> list[np.ndarray]:
        weights = np.asarray(self.weights)
        with np.errstate(divide="ignore"):
            return [np.log10(p @ weights) for p in probs]


    def encode(self, sentence: str) -> list[int]:
        return [self.vocab.id(BOS), *self.vocab.encode(self.tokenizer.split(sentence)).tolist(), self.vocab.id(EOS)]

    def evaluate(self, lines: list[str]) -> dict:
        total = float(sum(lp.sum() for lp in self.text_token_logprobs(lines)))
        token_lists = [self.tokenizer.split(line) for line in lines]
        tokens = sum(len(t) for t in token_lists)
        # a unit is OOV for the mixture only when no component knows it
        oov = sum(1 for t in token_lists for u in t if u not in self.vocab)
        return corpus_summary(lines, tokens, oov, total)

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

    def next_distribution(self, prefix: str) -> np.ndarray:
        _, logp = self.start(self.vocab.encode(self.tokenizer.split(prefix)).tolist())
        return np.exp(logp)

    def sample(self, n=1, prefix="", temperature=1.0, top_k=None, top_p=None, max_tokens=100, seed=None):
        rng = np.random.default_rng(seed)
        prefix_tokens = self.tokenizer.split(prefix)
        prefix_ids = self.vocab.encode(prefix_tokens).tolist()
        banned = (self.vocab.id(BOS), self.vocab.id(UNK))
        return [self.tokenizer.join(prefix_tokens + self.vocab.decode(
                    generate(self, prefix_ids, rng, eos_id=self.vocab.id(EOS), banned=banned,
                             temperature=temperature, top_k=top_k, top_p=top_p, max_tokens=max_tokens)))
                for _ in range(n)]

    # -- files --------------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"type": "mix", "unit": self.unit, "vocab_size": len(self.vocab),
                "weights": list(self.weights),
                "components": [c.describe() for c in self.components], "training": self.record}

    def save(self, path, resumable: bool = False) -> None:
        """Components are always written for scoring only (`resumable` is accepted so that
        every model type saves alike): a mixture's component is never trained on."""
        meta = {"unit": self.unit, "weights": list(self.weights), "training": self.record, "components": []}
        arrays = {}
        for i, component in enumerate(self.components):
            kind, component_meta, component_arrays = component.file_contents(resumable=False)
            meta["components"].append({"type": kind, "meta": component_meta})
            arrays.update({f"c{i}.{name}": array for name, array in component_arrays.items()})
        modelfile.save(path, "mix", meta, arrays)

    @classmethod
    def from_file_contents(cls, path, meta: dict, arrays: dict) -> "MixModel":
        from .ngram import NgramModel
        from .rnnlm import RNNModel
        kinds = {"rnn": RNNModel, "ngram": NgramModel}
        components = []
        for i, entry in enumerate(meta["components"]):
            prefix = f"c{i}."
            own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            components.append(kinds[entry["type"]].from_file_contents(path, entry["meta"], own))
        return cls(components, meta["weights"], meta.get("training"))


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
