"""The tanh-RNN language model: parameters, scoring and sampling on the C kernel.

A model is its unit settings (tokenizer), vocabulary, hidden size and one flat float32
parameter buffer (layout.py), plus the training record. Scores are log10, as KenLM and
SRILM print them; every sentence is scored as `<s> w1 .. wn </s>` with `</s>` predicted.
"""

from __future__ import annotations

import math

import numpy as np

from . import batching, kernel, modelfile
from .layout import PARAM_NAMES, param_views
from .lm import LanguageModel
from .errors import ModelFileError, RnnkitError
from .metrics import corpus_summary
from .spelling import SpellingModel
from .units import TOKENIZER_ARRAYS, Tokenizer
from .vocab import BOS_ID, Vocab

LOG10_E = 1.0 / math.log(10.0)
SCORE_BATCH = 64   # sentences scored side by side in one kernel call
SCORE_STEPS = 256  # window length when scoring long lanes


class RNNModel(LanguageModel):
    """An Elman RNN language model: h_t = tanh(W_xh[x_t] + W_hh h_{t-1} + b_h)."""

    model_type = "rnn"

    def __init__(self, vocab: Vocab, unit: str | Tokenizer, hidden: int, params: np.ndarray | None = None,
                 activation: str = "tanh", stream: bool = False, record: dict | None = None,
                 hyper: dict | None = None, train_state: dict | None = None,
                 optimizer_arrays: dict | None = None, spelling: SpellingModel | None = None):
        self.vocab = vocab
        self.tokenizer = Tokenizer.of(unit)
        self.unit = self.tokenizer.unit
        self.spelling = spelling
        self.hidden = int(hidden)
        self.activation = activation
        self.stream = bool(stream)  # trained with the state carried across lines
        size = kernel.num_params(len(vocab), self.hidden)
        if params is None:
            params = np.zeros(size, dtype=np.float32)
        if params.shape != (size,):
            raise ModelFileError(f"weights have {params.size} values, expected {size} for V={len(vocab)}, H={hidden}")
        self.params = np.ascontiguousarray(params, dtype=np.float32)
        self.record = record or {}
        self.hyper = hyper or {}
        self.train_state = train_state or {}
        self.optimizer_arrays = optimizer_arrays or {}

    # -- the lecture's names for the weights ------------------------------------------------
    @property
    def V(self) -> int:
        return len(self.vocab)

    def weights(self) -> dict[str, np.ndarray]:
        """Views named W_xh (V x H), W_hh (H x H), b_h (H), W_hy (V x H), b_y (V)."""
        return param_views(self.params, self.V, self.hidden)

    def __getattr__(self, name):
        if name in PARAM_NAMES:
            return self.weights()[name]
        raise AttributeError(name)

    # -- scoring ------------------------------------------------------------------------------
    def natural_logprobs(self, id_lists: list[np.ndarray], carry: bool = False) -> list[np.ndarray]:
        """Per sentence: natural-log probability of each unit and of </s>.

        carry=False: every sentence from the start state, many side by side. carry=True:
        the sentences in order as one text, the state running on across them (one lane),
        which is how a model trained with `stream` reads a text.
        """
        stream = batching.make_stream(id_lists, independent=not carry)
        if len(stream) == 0:
            return []
        lanes = batching.split_lanes(stream, 1 if carry else min(SCORE_BATCH, len(id_lists)))
        out = np.zeros(lanes.inputs.shape, dtype=np.float64)
        h = np.zeros((lanes.inputs.shape[1], self.hidden), dtype=np.float32)
        cache = None
        step = 0
        for inputs, targets, resets in lanes.windows(SCORE_STEPS * 4 if carry else SCORE_STEPS):
            _, logp, hs, cache = kernel.forward(self.params, inputs, targets, resets, h, V=self.V,
                                                activation=self.activation, keep_for_backward=False,
                                                reuse=cache)
            out[step:step + len(inputs)] = logp
            h = hs[-1].copy()
            step += len(inputs)
        flat = _unlane(out, lanes, len(stream))
        bounds = np.append(stream.sentence_starts, len(stream))
        return [flat[bounds[i]:bounds[i + 1]] for i in range(len(id_lists))]

    def token_logprobs_many(self, sentences: list[str]) -> list[np.ndarray]:
        """log10 probability of each unit after <s>, </s> included, for many sentences."""
        return [lp * LOG10_E for lp in self.natural_logprobs(self._ids(sentences))]

    def text_token_logprobs(self, lines: list[str]) -> list[np.ndarray]:
        """token_logprobs_many for the lines of one text: a `stream` model carries its state
        from line to line (what evaluate, mixtures and weight tuning score)."""
        return [lp * LOG10_E for lp in self.natural_logprobs(self._ids(lines), carry=self.stream)]

    def _ids(self, sentences: list) -> list[np.ndarray]:
        """Unit ids of each sentence, split together (Kiwi analyses a batch on its threads)."""
        return [self.vocab.encode(units) for units in self.tokenizer.split_lines(sentences)]

    # -- incremental state, next-token distribution and sampling ------------------------------
    def start(self, prefix_ids: list[int]):
        """State after <s> and prefix_ids, with the natural-log next-token distribution."""
        h = np.zeros((1, self.hidden), dtype=np.float32)
        logp = None
        for token in [BOS_ID, *prefix_ids]:
            h, logp = kernel.step(self.params, h, np.array([token], dtype=np.int32), V=self.V,
                                  activation=self.activation)
        return h, logp[0]

    def advance(self, state, token_id: int):
        h, logp = kernel.step(self.params, state, np.array([token_id], dtype=np.int32), V=self.V,
                              activation=self.activation)
        return h, logp[0]

    # -- files --------------------------------------------------------------------------------
    def describe(self) -> dict:
        return {"type": "rnn", **self.tokenizer.to_meta(), "vocab_size": self.V, "hidden": self.hidden,
                "activation": self.activation, "stream": self.stream,
                "parameters": int(self.params.size), "hyperparameters": self.hyper,
                **({"spelling": self.spelling.describe()} if self.spelling else {}),
                "training": self.record}

    def file_contents(self, resumable: bool = True) -> tuple[str, dict, dict]:
        """(model type, meta, arrays) as stored in a model file (also inside a mixture).
        With resumable=False the training state (the schedule, Adam's moments, the raw
        weights behind an average) is left out: up to three weight-sized arrays that
        scoring never reads, and that a mixture's component cannot resume from."""
        meta = {**self.tokenizer.to_meta(), "vocab": self.vocab.to_list(), "hidden": self.hidden,
                "activation": self.activation, "stream": self.stream, "hyperparameters": self.hyper,
                "training": self.record, "train_state": self.train_state if resumable else {},
                **({"spelling": self.spelling.to_meta()} if self.spelling else {})}
        arrays = {"params": self.params, **(self.optimizer_arrays if resumable else {}), **self.tokenizer.arrays()}
        return "rnn", meta, arrays

    @classmethod
    def from_file_contents(cls, path, meta: dict, arrays: dict) -> "RNNModel":
        """The model from what modelfile.load read and checked (rnnkit/schema.py)."""
        optimizer_arrays = {k: v for k, v in arrays.items() if k != "params" and k not in TOKENIZER_ARRAYS}
        return cls(Vocab.from_list(meta["vocab"]), Tokenizer.from_meta(meta, arrays, str(path)), meta["hidden"],
                   arrays["params"], meta.get("activation", "tanh"), meta.get("stream", False), meta.get("training"),
                   meta.get("hyperparameters"), meta.get("train_state"), optimizer_arrays,
                   SpellingModel.from_meta(meta.get("spelling")))

    @classmethod
    def load(cls, path) -> "RNNModel":
        _, meta, arrays = modelfile.load(path, expected_type="rnn")
        return cls.from_file_contents(path, meta, arrays)


def _unlane(values: np.ndarray, lanes: batching.Lanes, length: int) -> np.ndarray:
    """Undo split_lanes: per-position values back in stream order."""
    valid = lanes.targets >= 0
    # lanes hold consecutive stream slices; column-major order of the valid cells restores it
    flat = values.T[valid.T]
    if flat.size != length:
        raise RnnkitError("internal error: lane layout does not cover the stream")
    return flat


def corpus_stats(lines: list[str], id_lists: list[np.ndarray], total_log10: float) -> dict:
    """metrics.corpus_summary for id sequences (id 0 is <unk>: an OOV unit)."""
    tokens = int(sum(len(ids) for ids in id_lists))
    oov = int(sum(int((ids == 0).sum()) for ids in id_lists))
    return corpus_summary(lines, tokens, oov, total_log10)
