"""One entry point for every kind of model file: `rnnkit.load(path)`.

An rnnkit model file (a zip container, see modelfile.py) holds an RNN, an n-gram or a
mixture model; anything else is read as an ARPA file (KenLM, SRILM or rnnkit). Every
model answers the same questions: score, token_logprobs, evaluate, next_distribution,
sample, describe, save; `vocab`, `unit` and `model_type` say what it is.
"""

from __future__ import annotations

from pathlib import Path

from . import modelfile
from .errors import ModelFileError


class SentenceScorer:
    """score / score_many / token_logprobs derived from one batched token_logprobs_many."""

    def token_logprobs_many(self, sentences: list[str]) -> list:
        raise NotImplementedError

    def token_logprobs(self, sentence: str):
        """log10 probability of each unit after <s>, </s> included."""
        return self.token_logprobs_many([sentence])[0]

    def score(self, sentence: str) -> float:
        """log10 P(w1 .. wn </s> | <s>)."""
        return float(self.token_logprobs(sentence).sum())

    def score_many(self, sentences: list[str]) -> list[float]:
        return [float(lp.sum()) for lp in self.token_logprobs_many(sentences)]

    def text_token_logprobs(self, lines: list[str]) -> list:
        """token_logprobs_many for the lines of one text, in order. The same for models
        that score each line alone; an RNN trained with `stream` carries its state."""
        return self.token_logprobs_many(lines)


def load(path):
    """Load an RNN, n-gram or mixture model file, or an ARPA file, by its contents."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"model path is a directory, not a file: {path}")
    if not modelfile.is_model_file(path):
        from .ngram import NgramModel
        return NgramModel.read_arpa(path)
    model_type, meta, arrays = modelfile.load(path)
    if model_type == "rnn":
        from .rnnlm import RNNModel
        return RNNModel.from_file_contents(path, meta, arrays)
    if model_type == "ngram":
        from .ngram import NgramModel
        return NgramModel.load(path)
    if model_type == "mix":
        from .mix import MixModel
        return MixModel.from_file_contents(path, meta, arrays)
    raise ModelFileError(f"{path}: unknown model type {model_type!r}")
