"""The tanh-RNN language model: parameters, scoring and sampling on the C kernel.

A model is its unit settings (tokenizer), vocabulary, hidden size and one flat float32
parameter buffer (layout.py), plus the training record. Scores are log10, as KenLM and
SRILM print them; every sentence is scored as `<s> w1 .. wn </s>` with `</s>` predicted.

The output layer is a full softmax, or (RNNME, csrc/rnn.h) class-factored over a class map
with optional direct connections: hashed n-gram features of the history whose table
entries are added to the logits. Such a model carries the direct history (the last
inputs) next to the hidden state, window to window and step to step.
"""

from __future__ import annotations

import math

import numpy as np

from . import batching, kernel, modelfile
from .layout import CLASS_PARAM_NAMES, PARAM_NAMES, next_history, param_views
from .lm import LanguageModel
from .errors import ConfigError, ModelFileError
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
                 optimizer_arrays: dict | None = None, spelling: SpellingModel | None = None,
                 class_start: np.ndarray | None = None, direct_order: int = 0,
                 direct_table: np.ndarray | None = None):
        """unit: a unit name or a Tokenizer (morph and spm units carry settings);
        spelling: the spelling model of honest bits per character (spelling.py);
        class_start: (C + 1,) int32 class map (layout.frequency_classes) for a class-
        factored output, None for the full softmax; direct_order and direct_table: the
        direct connections (a class-factored output only; order 0 and None: none)."""
        self.vocab = vocab
        self.tokenizer = Tokenizer.of(unit)
        self.unit = self.tokenizer.unit
        self.spelling = spelling
        self.hidden = int(hidden)
        self.activation = activation
        self.stream = bool(stream)  # trained with the state carried across lines
        self.class_start = None if class_start is None else np.ascontiguousarray(class_start, dtype=np.int32)
        self.direct_order = int(direct_order)
        self.direct_table = None if direct_table is None else np.ascontiguousarray(direct_table, dtype=np.float32)
        if self.class_start is None and (self.direct_order or self.direct_table is not None):
            raise ConfigError("direct connections need a class-factored output (a class map)")
        size = kernel.num_params(len(vocab), self.hidden, self.classes)
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

    @property
    def classes(self) -> int:
        """C, the number of output classes; 0 for the full softmax."""
        return 0 if self.class_start is None else self.class_start.size - 1

    def weights(self) -> dict[str, np.ndarray]:
        """Views named W_xh (V x H), W_hh (H x H), b_h (H), W_hy (V x H), b_y (V), and with
        classes W_c (C x H), b_c (C)."""
        return param_views(self.params, self.V, self.hidden, self.classes)

    def __getattr__(self, name):
        if name in PARAM_NAMES or (name in CLASS_PARAM_NAMES and self.classes):
            return self.weights()[name]
        raise AttributeError(name)

    # -- the kernel calls, full softmax or class-factored ------------------------------------
    def output_args(self, table=None) -> dict:
        """The class map and direct connections, as the kernel's class functions take them
        (`table`: another table of the same size, e.g. the raw one behind an average)."""
        return {"class_start": self.class_start, "table": self.direct_table if table is None else table,
                "direct_order": self.direct_order}

    def next_history(self, history, inputs, resets):
        """The direct history after a window (None without direct connections)."""
        return next_history(history, inputs, resets) if self.direct_order else None

    def forward(self, params, inputs, targets, resets, h, history, table=None, **options):
        """kernel.forward, or kernel.class_forward with this model's output layer (or
        `table` for its direct table) and the direct history before the window:
        (loss, logprobs, hs, cache)."""
        if self.class_start is None:
            return kernel.forward(params, inputs, targets, resets, h, V=self.V,
                                  activation=self.activation, **options)
        return kernel.class_forward(params, inputs, targets, resets, h, V=self.V, history=history,
                                    activation=self.activation, **self.output_args(table), **options)

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
        out = np.zeros((lanes.steps, lanes.width), dtype=np.float64)
        h = np.zeros((lanes.width, self.hidden), dtype=np.float32)
        history, cache = None, None
        step = 0
        for inputs, targets, resets in lanes.windows(SCORE_STEPS * 4 if carry else SCORE_STEPS):
            _, logp, hs, cache = self.forward(self.params, inputs, targets, resets, h, history,
                                              keep_for_backward=False, reuse=cache)
            out[step:step + len(inputs)] = logp
            h, history = hs[-1].copy(), self.next_history(history, inputs, resets)
            step += len(inputs)
        flat = lanes.unlane(out)
        bounds = np.append(stream.starts, len(stream))
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
        """State after <s> and prefix_ids, with the natural-log next-token distribution.
        The state is (h, direct history or None)."""
        state = (np.zeros((1, self.hidden), dtype=np.float32), None)
        logp = None
        for token in [BOS_ID, *prefix_ids]:
            state, logp = self.advance(state, token)
        return state, logp

    def advance(self, state, token_id: int):
        h, history = state
        tokens = np.array([token_id], dtype=np.int32)
        if self.class_start is None:
            h, logp = kernel.step(self.params, h, tokens, V=self.V, activation=self.activation)
        else:   # the full distribution P(c) P(w | c), which sums to 1
            h, logp = kernel.class_step(self.params, h, tokens, V=self.V, history=history,
                                        activation=self.activation, **self.output_args())
        return (h, self.next_history(history, tokens[None], np.zeros((1, 1), np.int32))), logp[0]

    # -- files --------------------------------------------------------------------------------
    def output_settings(self) -> dict:
        """classes, direct_order and direct_size of a class-factored output ({} for the full
        softmax): what `rnnkit info` shows and the model file declares."""
        if not self.classes:
            return {}
        return {"classes": self.classes, "direct_order": self.direct_order,
                "direct_size": 0 if self.direct_table is None else int(self.direct_table.size)}

    def describe(self) -> dict:
        return {"type": "rnn", **self.tokenizer.to_meta(), "vocab_size": self.V, "hidden": self.hidden,
                "activation": self.activation, "stream": self.stream, **self.output_settings(),
                "parameters": int(self.params.size), "hyperparameters": self.hyper,
                **({"spelling": self.spelling.describe()} if self.spelling else {}),
                "training": self.record}

    def file_contents(self, resumable: bool = True) -> tuple[str, dict, dict]:
        """(model type, meta, arrays) as stored in a model file (also inside a mixture).
        With resumable=False the training state (the schedule, Adam's moments, the raw
        weights behind an average) is left out: up to three weight-sized arrays that
        scoring never reads, and that a mixture's component cannot resume from. A class-
        factored output adds its class map (`class_start`, int64 as model files store
        integers) and the direct table, whole: scores read back bit for bit."""
        meta = {**self.tokenizer.to_meta(), "vocab": self.vocab.to_list(), "hidden": self.hidden,
                "activation": self.activation, "stream": self.stream, **self.output_settings(),
                "hyperparameters": self.hyper, "training": self.record,
                "train_state": self.train_state if resumable else {},
                **({"spelling": self.spelling.to_meta()} if self.spelling else {})}
        output = {}
        if self.classes:
            output["class_start"] = self.class_start.astype(np.int64)
        if self.direct_table is not None:
            output["direct_table"] = self.direct_table
        arrays = {"params": self.params, **output, **(self.optimizer_arrays if resumable else {}),
                  **self.tokenizer.arrays()}
        return "rnn", meta, arrays

    @classmethod
    def from_file_contents(cls, path, meta: dict, arrays: dict) -> "RNNModel":
        """The model from what modelfile.load read and checked (rnnkit/schema.py)."""
        model_arrays = ("params", "class_start", "direct_table", *TOKENIZER_ARRAYS)
        optimizer_arrays = {k: v for k, v in arrays.items() if k not in model_arrays}
        return cls(Vocab.from_list(meta["vocab"]), Tokenizer.from_meta(meta, arrays, str(path)), meta["hidden"],
                   arrays["params"], meta.get("activation", "tanh"), meta.get("stream", False), meta.get("training"),
                   meta.get("hyperparameters"), meta.get("train_state"), optimizer_arrays,
                   SpellingModel.from_meta(meta.get("spelling")),
                   class_start=arrays.get("class_start"), direct_order=meta.get("direct_order", 0),
                   direct_table=arrays.get("direct_table"))

    @classmethod
    def load(cls, path) -> "RNNModel":
        _, meta, arrays = modelfile.load(path, expected_type="rnn")
        return cls.from_file_contents(path, meta, arrays)


def corpus_stats(lines: list[str], id_lists: list[np.ndarray], total_log10: float) -> dict:
    """metrics.corpus_summary for id sequences (id 0 is <unk>: an OOV unit)."""
    tokens = int(sum(len(ids) for ids in id_lists))
    oov = int(sum(int((ids == 0).sum()) for ids in id_lists))
    return corpus_summary(lines, tokens, oov, total_log10)
