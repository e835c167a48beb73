"""Training an RNN language model: batches, truncated BPTT, optimizer, schedule, checkpoints.

The corpus is encoded once into a memory-mapped id file (idcorpus.py), so training's
memory does not grow with it; windows of T steps are gathered from B lanes of it on the
fly (batching.py). Each step: kernel forward, backward of the mean per-token loss,
global-norm clipping, SGD or Adam. After every epoch the model is evaluated on the
validation text and the best weights are kept:

- SGD follows Mikolov's RNNLM schedule: keep the learning rate while the validation
  loss improves by more than `min_improvement` (relative), then halve it every epoch;
  stop when, while halving, it no longer improves by that much.
- Adam's rate decays linearly to `final_lr_fraction` of its start over the planned
  run (`epochs`, or `time_budget` when that ends first), and training stops after
  `patience` epochs in a row whose validation loss is no better than the best.
  On tinyshakespeare (char, H=512, 3 epochs) the decay reached valid 2.174
  bits/char against 2.256 for a constant rate.

With `classes` > 0 the output layer is class-factored (RNNLM's frequency classes) and
with `direct_order` > 0 it has direct connections (csrc/rnn.h): their table is not part of
the weights the optimizer steps but is updated inside the backward pass by sparse SGD,
at `direct_lr` per token (following the main rate's schedule) with L2 `direct_l2` per use,
as in RNNLM, or with `direct_optimizer` "adagrad" by AdaGrad, whose sums of squares
(`direct_accum`, as big as the table) are optimizer state (under MPI the ranks sum the
table's gradient first, and only SGD steps it: rnnkit/mpi.py); the direct history rides
along with the carried hidden state.

With `average` > 0 the optimizer steps a raw copy of the weights and the model keeps an
exponential moving average of them, which is what validation, the model file and its
users see (Polyak averaging; on PTB after 3 epochs, valid perplexity 140.9 for the
average vs 143.7 for the raw weights). The optimizer steps, the weight decay and the
average take one pass over the weights together (kernel.adam_update). The direct table is
averaged the same way, its raw copy being what backward updates, but lazily: an entry's
average catches up only when its raw value is about to change, and the whole table's at
each epoch's end (TableAverage).

Checkpoints. After each epoch the current state (always equal to the best, since a
worse epoch is rolled back) is written atomically to the output file, with the
optimizer state. Within an epoch it is also written every `checkpoint_minutes` (0: at
epoch ends only) and when SIGINT or SIGTERM arrives: both finish the current step,
write the checkpoint and raise TrainingInterrupted (a second signal stops at once; the
last checkpoint stays intact). `resume` continues from either kind of checkpoint
bit-identically to an uninterrupted run (same seed, one thread).

A mid-epoch checkpoint is marked by train_state["partial"] (the windows done of epoch
train_state["epoch"] + 1, the epoch's running loss and token sums, its seconds, and the
bptt and lane count that fix what a window is) and holds two more kinds of arrays:
`carry_h`, the hidden state carried into the next window (lanes x H), with direct
connections also `carry_history` (the direct history carried with it, lanes x 8 ids),
with a table average also `carry_direct_average` and `carry_direct_synced` (the average
as the run keeps it, lazily, and its lazy state; the file's `direct_table` is it caught
up), and `epoch_start_*`, the weights, direct table and optimizer state at the start of the
epoch. What is "the best" there: its `params` are the current weights, which no
validation pass has seen (a pass per checkpoint would cost too much); they are what
scoring with the file uses, since after part of an epoch they are usually better than
the epoch's start. The best so far stays the weights validated at the last epoch end, i.e. the stored
epoch-start ones, and `best_valid` keeps their validation loss. When a resumed epoch
ends it is validated like any other and, if worse, rolled back to those stored weights.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import batching, idcorpus, kernel, modelfile
from .errors import CorpusError, ModelFileError, RnnkitError
from .interrupts import Interrupted, StopSignals
from .layout import MAX_DIRECT_ORDER, frequency_classes, param_shapes
from .schema import (CARRIED_AVERAGE, CARRIED_HISTORY, CARRIED_STATE, CARRIED_SYNCED,  # a mid-epoch
                     EPOCH_START, MAX_STEP)                                            # checkpoint's extra arrays
from .rnnlm import RNNModel, corpus_stats
from .spelling import SpellingModel
from .units import Tokenizer
from .vocab import Vocab

LN2 = math.log(2.0)
MAX_EXP = 700.0               # math.exp overflows a float above ~709.78
MAX_LEARNING_RATE = 100.0     # far above any working rate (Adam ~1e-3, RNNLM's SGD 0.1-1)
RUN_SETTINGS = ("threads", "checkpoint_minutes")   # how a run goes, not what the model is
AUTO = "auto"   # TrainConfig.classes: chosen from the vocabulary size
DIRECT_OPTIMIZERS = ("sgd", "adagrad")   # TrainConfig.direct_optimizer
DIRECT_ACCUM = "direct_accum"   # AdaGrad's sums of squares beside the direct table (an optimizer array)
# What those sums start at, in squared per-token gradients (TensorFlow's initial_accumulator_value):
# an entry's first steps are then SGD's at the rate over its square root, not the full rate
# whatever the gradient's size. One epoch of 20k nsmc lines (test bits/char, best rate of each):
# 0: 4.583, 0.1: 4.460, 1: 4.433, 4: 4.445.
ADAGRAD_START = 1.0
DEFAULT_DIRECT_LR = {"sgd": 0.03, "adagrad": 0.3}   # TrainConfig.direct_lr's (its comment says why)


@dataclass
class TrainConfig:
    """Training settings. The output layer defaults to the lecture's full softmax; `rnnkit
    train` asks for RNNME (classes="auto", direct_order 6, direct_size 4M: cli.py says why)."""
    unit: str = "char"
    hidden: int = 128
    bptt: int = 32
    batch: int = 32
    epochs: int = 10
    time_budget: float | None = None   # seconds of training, all epochs together
    optimizer: str = "adam"            # "adam" or "sgd"
    lr: float | None = None            # default: 2e-3 for adam, 0.5 for sgd
    clip: float = 1.0
    min_count: int = 1
    max_vocab: int | None = None
    valid_fraction: float = 0.05       # held out when no validation text is given
    seed: int = 1
    threads: int | None = None
    stream: bool = False               # carry the state across lines (one text stream)
    min_improvement: float = 0.003     # relative validation improvement that counts
    patience: int = 2                  # Adam: epochs without improvement before stopping
    embedding_lr_scale: float | None = None  # W_xh's rate / the others' (default 10 adam, 1 sgd)
    final_lr_fraction: float = 0.05    # Adam: the rate at the end of the planned run
    dropout: float = 0.0               # on the input rows and before the output layer
    average: float = 0.0               # decay of a moving average of the weights (0: off)
    weight_decay: float = 0.0          # per step, the matrices shrink by lr * weight_decay (AdamW)
    checkpoint_minutes: float = 5.0    # also save this often within an epoch (0: at epoch ends only)
    classes: int | str = 0             # class-factored output with this many classes (0: full softmax;
                                       # "auto": sqrt(V), RNNLM's rule, see class_count)
    direct_order: int = 0              # n of the direct connections' n-gram features (0: none)
    direct_size: int = 0               # entries of the direct-connection table
    # The direct table's rate per token (None: DEFAULT_DIRECT_LR of direct_optimizer). SGD:
    # RNNLM's 0.1 overshoots here: a batch applies ~1000 positions' updates from one
    # forward pass, and the low-order features are in most of them (nsmc sample, char, H
    # 128, 40 classes, order 4, Adam: 0.1 gave valid 6.46 bits/char after epoch 1 against
    # 5.34 without the table, 1.0 diverged; 0.03 4.69 after 4 epochs against 4.87, and 0.01
    # 4.78, 0.003 4.84). AdaGrad ("adagrad") gives each entry its own rate, the rate over
    # the root of its summed squared gradients: frequent features slow down, rare ones keep
    # moving (char, H 128, order 6, one epoch of nsmc: 20k lines, 4M entries, test 4.717
    # bits/char for SGD's best rate, 4.408 for AdaGrad at 0.3; 100k lines, 16M entries,
    # 4.136 and 3.907). Over many epochs of a small text it fits the rare n-grams too well
    # (the bundled sample's default run: best valid 4.167 for SGD, 4.179 for AdaGrad at
    # 0.1, 4.244 at 0.3, rolled back from epoch 3 on). PTB (word, H 256, 100 classes, order
    # 4, 16M entries, benchmarks/ptb_table.py's 5 epochs; test perplexity): SGD 0.03 116.58,
    # AdaGrad 0.05 116.51, 0.1 113.84, 0.2 115.14, 0.3 118.34 (valid worse from epoch 4 on).
    direct_lr: float | None = None
    direct_l2: float = 1e-6            # its L2 per use of an entry
    direct_optimizer: str = "sgd"      # "sgd" or "adagrad"

    def class_count(self, V: int) -> int:
        """C for a vocabulary of V units: `classes`, or for "auto" round(sqrt(V)), which
        makes the C + |class| outputs per token about the fewest (2 sqrt(V))."""
        if self.classes == AUTO:
            return max(1, round(math.sqrt(V)))
        if self.classes > V:
            raise RnnkitError(f"classes = {self.classes} is more than the {V:,} units of the vocabulary; "
                              f"give at most {V:,} (0: full softmax)")
        return self.classes

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-3 if self.optimizer == "adam" else 0.5)

    def direct_rate(self) -> float:
        return self.direct_lr if self.direct_lr is not None else DEFAULT_DIRECT_LR[self.direct_optimizer]

    def embedding_scale(self) -> float:
        if self.embedding_lr_scale is not None:
            return self.embedding_lr_scale
        return 10.0 if self.optimizer == "adam" else 1.0

    def hyperparameters(self) -> dict:
        """The settings a model file records (and `train --resume` reads back)."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_SETTINGS}

    def check(self) -> None:
        for name in ("hidden", "bptt", "batch", "epochs", "min_count"):
            if getattr(self, name) < 1:
                raise RnnkitError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("adam", "sgd"):
            raise RnnkitError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if not 0 < self.learning_rate() <= MAX_LEARNING_RATE:
            raise RnnkitError(f"learning rate must be in (0, {MAX_LEARNING_RATE:g}], got {self.learning_rate()}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise RnnkitError(f"time budget must be > 0 seconds, got {self.time_budget}")
        if not 0 <= self.dropout < 1:
            raise RnnkitError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.weight_decay >= 0:
            raise RnnkitError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not self.learning_rate() * self.weight_decay < 1:
            # the matrices are multiplied by 1 - lr * weight_decay each step
            raise RnnkitError(f"weight decay times the learning rate must be < 1, got "
                              f"{self.weight_decay} x {self.learning_rate()}")
        if not 0 <= self.average < 1:
            raise RnnkitError(f"weight-average decay must be in [0, 1), got {self.average}")
        if not 0 < self.final_lr_fraction <= 1:
            raise RnnkitError(f"final learning-rate fraction must be in (0, 1], got {self.final_lr_fraction}")
        if not self.embedding_scale() > 0:
            raise RnnkitError(f"embedding learning-rate scale must be > 0, got {self.embedding_scale()}")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise RnnkitError(f"max-vocab must be >= 1, got {self.max_vocab}")
        if not self.checkpoint_minutes >= 0:
            raise RnnkitError(f"checkpoint interval must be >= 0 minutes, got {self.checkpoint_minutes}")
        self.check_output_layer()

    def check_output_layer(self) -> None:
        if not (self.classes == AUTO or type(self.classes) is int and self.classes >= 0):
            raise RnnkitError(f"classes must be a number >= 0 (0: full softmax) or {AUTO!r}, got {self.classes!r}")
        if not 0 <= self.direct_order <= MAX_DIRECT_ORDER:
            raise RnnkitError(f"direct order must be in [0, {MAX_DIRECT_ORDER}], got {self.direct_order}")
        if self.direct_order and not self.classes:
            raise RnnkitError("direct connections need a class-factored output: give classes > 0")
        if self.direct_order and not 1 <= self.direct_size <= kernel.MAX_TABLE:
            raise RnnkitError(f"direct size must be in [1, 2^40] entries with direct order "
                              f"{self.direct_order}, got {self.direct_size}")
        if self.direct_optimizer not in DIRECT_OPTIMIZERS:
            raise RnnkitError(f"direct optimizer must be {' or '.join(DIRECT_OPTIMIZERS)}, "
                              f"got {self.direct_optimizer!r}")
        if not 0 <= self.direct_rate() <= MAX_LEARNING_RATE:
            raise RnnkitError(f"direct learning rate must be in [0, {MAX_LEARNING_RATE:g}], got {self.direct_lr}")
        if not (self.direct_l2 >= 0 and math.isfinite(self.direct_l2)):
            raise RnnkitError(f"direct L2 must be a finite number >= 0, got {self.direct_l2}")


def init_params(V: int, H: int, rng: np.random.Generator, unigram: np.ndarray | None,
                class_start: np.ndarray | None = None) -> np.ndarray:
    """Uniform +-1/sqrt(H) (PyTorch's RNN default) for W_hh and W_hy (and W_c), N(0, 1)
    for the input rows (an embedding: unit-scale rows use the tanh's range from the first
    step; on tinyshakespeare std 1.0 beat 0.3 and 0.6 after one epoch), zero b_h, and the
    output biases set so training starts from the unigram model: b_y = log P(w), or with
    classes b_c = log P(c) and b_y = log P(w | c)."""
    C = 0 if class_start is None else len(class_start) - 1
    params = np.zeros(kernel.num_params(V, H, C), dtype=np.float32)
    w = kernel.param_views(params, V, H, C)
    bound = 1.0 / math.sqrt(H)
    w["W_xh"][:] = rng.normal(0.0, 1.0, size=(V, H))
    w["W_hh"][:] = rng.uniform(-bound, bound, size=(H, H))
    w["W_hy"][:] = rng.uniform(-bound, bound, size=(V, H))
    if C:
        w["W_c"][:] = rng.uniform(-bound, bound, size=(C, H))
    if unigram is not None:
        log_unigram = np.log(np.maximum(unigram, 1e-8))
        w["b_y"][:] = log_unigram
        if C:
            class_mass = np.log(np.add.reduceat(np.maximum(unigram, 1e-8), class_start[:-1]))
            w["b_c"][:] = class_mass
            w["b_y"][:] = log_unigram - np.repeat(class_mass, np.diff(class_start))
    return params


class Trainer:
    """Holds the buffers of one training run so steps allocate nothing."""

    def __init__(self, model: RNNModel, config: TrainConfig, train_lanes: batching.Lanes,
                 time_window: float | None = None, ranks=None):
        self.model = model
        self.ranks = ranks   # data-parallel over MPI ranks (rnnkit/mpi.py), or None
        self.config = config
        self.lanes = train_lanes
        self.grads = np.zeros_like(model.params)
        self.table = model.direct_table   # the table backward updates
        self.table_average = None
        if config.average > 0:
            # the optimizer steps the raw weights (and backward the raw table); model.params
            # is their moving average, which validation, the saved model and its users see
            self.weights = model.optimizer_arrays.setdefault("raw_params", model.params.copy())
            if model.direct_table is not None:
                self.table = model.optimizer_arrays.setdefault("raw_direct_table", model.direct_table.copy())
                self.table_average = TableAverage(model, self.table, self.average_decay)
        else:
            for name in ("raw_params", "raw_direct_table"):
                model.optimizer_arrays.pop(name, None)
            self.weights = model.params
        self.direct_accum = None   # AdaGrad's sums of squares beside the table backward updates
        if config.direct_optimizer == "adagrad" and self.table is not None:
            self.direct_accum = model.optimizer_arrays.setdefault(
                DIRECT_ACCUM, np.full_like(self.table, ADAGRAD_START))
        else:
            model.optimizer_arrays.pop(DIRECT_ACCUM, None)
        if config.optimizer == "adam":
            self.m = model.optimizer_arrays.setdefault("adam_m", np.zeros_like(model.params))
            self.v = model.optimizer_arrays.setdefault("adam_v", np.zeros_like(model.params))
        self.step_count = int(model.train_state.get("step", 0))
        self.lr = float(model.train_state.get("lr", config.learning_rate()))
        self.cache = None
        self.planned_steps = config.epochs * train_lanes.num_windows(config.bptt)
        self.time_window = time_window
        self.exchange = None if ranks is None else ranks.exchange(model)

    def adam_rate(self) -> float:
        """Linear decay over the planned run: by steps, or by time when that runs out sooner."""
        done = self.step_count / max(self.planned_steps, 1)
        if self.time_window is not None:
            start, end = self.time_window
            done = max(done, (time.perf_counter() - start) / (end - start))
        floor = self.config.final_lr_fraction
        return self.config.learning_rate() * (floor + (1.0 - floor) * (1.0 - min(done, 1.0)))

    def dropout_masks(self, shape: tuple[int, int, int]) -> dict:
        """Inverted-dropout masks (0 or 1/(1-p)); drawn from (seed, step) so that a
        resumed run draws the same masks as an uninterrupted one."""
        p = self.config.dropout
        if p <= 0:
            return {}
        rng = np.random.default_rng([self.config.seed, self.step_count])
        scale = np.float32(1.0 / (1.0 - p))
        return {name: (rng.random(shape, dtype=np.float32) >= p) * scale for name in ("in_mask", "out_mask")}

    def step(self, inputs, targets, resets, h0, history=None,
             synced=None) -> tuple[float, int, np.ndarray, np.ndarray | None]:
        """One window: (summed loss, predicted tokens, the state and the direct history
        (None without direct connections) to carry into the next window). `synced`: the
        table average's lazy state (TableAverage), with one."""
        model = self.model
        count = int((targets >= 0).sum())
        window = inputs, targets, resets, history
        carried_history = model.next_history(history, inputs, resets)
        if self.ranks is not None:   # this rank's lanes of the window
            inputs, targets, resets, h0, history = self.ranks.share(inputs, targets, resets, h0, history)
        masks = self.dropout_masks((*inputs.shape, model.hidden))
        loss, _, hs, self.cache = model.forward(self.weights, inputs, targets, resets, h0, history,
                                                table=self.table, reuse=self.cache, **masks)
        state = hs[-1].copy() if self.ranks is None else self.ranks.gather_state(hs[-1])
        carried = state, carried_history
        if count == 0:
            return 0.0, 0, *carried
        if synced is not None:   # before backward (or the ranks' summed step) changes the table
            self.table_average.catch_up(synced, window, self.step_count)
        self.grads.fill(0.0)
        table_step = None
        if model.classes:
            table_step = self.class_backward(count)
        else:
            kernel.backward(self.grads, self.cache, loss_scale=1.0 / count)
        if self.exchange is not None:   # every rank's gradients and loss
            loss = self.exchange.sum(self.grads, loss, window, table_step)
        try:
            kernel.clip_grad_norm(self.grads, self.config.clip)
        except RnnkitError:
            raise RnnkitError("training diverged (non-finite gradient); lower the learning rate "
                              "or the clip value") from None
        self.step_count += 1
        if self.config.optimizer == "adam":
            self.lr = self.adam_rate()
        self.update_weights()
        return loss, count, *carried

    def class_backward(self, count: int) -> tuple | None:
        """Backward of the mean loss over `count` tokens with the class output, which also
        updates the direct table. SGD: the per-token rate follows the main rate's schedule;
        in the kernel's terms (a mean loss) it is times count and the per-use L2 divided by
        it. AdaGrad: backward of the summed loss, then the mean, so that the sums of squares
        are of one token's gradients whatever the batch (ADAGRAD_START is in those units);
        its rate stays constant, each entry's steps shrinking as its squares add up (one
        epoch of nsmc: test 4.408 bits/char against 4.433 following Adam's decay).
        Under MPI (SGD only) the table is not stepped here: its gradient goes to the
        exchange, and (table, rate) is returned for the summed step."""
        config, direct = self.config, self.model.direct_order > 0
        if self.direct_accum is not None:
            kernel.class_backward(self.grads, self.cache, table=self.table, direct_lr=config.direct_rate(),
                                  direct_l2=config.direct_l2, direct_accum=self.direct_accum)
            self.grads *= np.float32(1.0 / count)
            return None
        rate = config.direct_rate() * self.lr / config.learning_rate() * count
        l2 = config.direct_l2 / count
        table_step = None
        if self.exchange is not None and direct and rate > 0:
            table_step = self.table, rate
            kernel.class_direct_gradient(self.exchange.table_grads, self.cache, table=self.table,
                                         loss_scale=1.0 / count, direct_l2=l2)
        kernel.class_backward(self.grads, self.cache, table=self.table, loss_scale=1.0 / count,
                              direct_lr=rate if direct and table_step is None else 0.0, direct_l2=l2)
        return table_step

    def update_weights(self) -> None:
        """The optimizer's step on each part of the weights, with in the same pass (rnn.h) the
        decoupled weight decay and the moving average (model.params, with `average` > 0).
        W_xh (the first V*H values) is an embedding: each row only learns from the positions
        holding its token, so it gets a larger rate than the dense matrices (tinyshakespeare, 1
        epoch of Adam: valid 2.469 -> 2.384 bits/char with 10x). Weight decay (AdamW's, which
        for SGD is plain L2): W_xh, W_hh, W_hy and W_c shrink by lr * weight_decay each step,
        at the base rate (W_xh too); biases do not. On PTB (H=256, 5 epochs) valid perplexity
        went from 129.5 without it to 125.7 with 0.05, 122.1 with 0.1, 118.0 with 0.2 and
        116.5 with 0.3."""
        config, model = self.config, self.model
        shrink = 1.0 - self.lr * config.weight_decay
        average = None if self.weights is model.params else model.params
        fraction = 0.0 if average is None else 1.0 - self.average_decay(self.step_count)
        offset = 0
        for name, shape in param_shapes(model.V, model.hidden, model.classes):
            part = slice(offset, offset + math.prod(shape))
            offset = part.stop
            lr = self.lr * (config.embedding_scale() if name == "W_xh" else 1.0)
            after = {"shrink": shrink if len(shape) == 2 else 1.0, "fraction": fraction,
                     "average": None if average is None else average[part]}
            if config.optimizer == "adam":
                kernel.adam_update(self.weights[part], self.grads[part], self.m[part], self.v[part],
                                   self.step_count, lr, **after)
            else:
                kernel.sgd_update(self.weights[part], self.grads[part], lr, **after)

    def average_decay(self, step: int) -> float:
        """The moving average's decay at `step`: it ramps up as (1 + t) / (10 + t), so early
        on the average follows the weights instead of dragging the random initialisation
        along, and later spans roughly the last 1 / (1 - `average`) steps."""
        return min(self.config.average, (1.0 + step) / (10.0 + step))

    def epoch(self, cursor: "EpochCursor", deadline: float | None, progress=None, after_step=None) -> bool:
        """Run the epoch's windows from cursor.window on, advancing the cursor; after each
        step call progress, then after_step(cursor). True when the time budget ran out."""
        epoch_tokens = self.lanes.tokens
        started, seconds_before = time.perf_counter(), cursor.seconds
        if self.table_average is not None and cursor.synced is None:
            cursor.synced = self.table_average.fresh_state(self.step_count)
        out_of_time = False
        for inputs, targets, resets in self.lanes.windows(self.config.bptt, cursor.window):
            loss, count, cursor.h, cursor.history = self.step(inputs, targets, resets, cursor.h, cursor.history,
                                                              cursor.synced)
            cursor.window += 1
            cursor.loss += loss
            cursor.tokens += count
            cursor.seconds = seconds_before + time.perf_counter() - started
            if progress is not None:
                progress(count, {"loss": cursor.loss / max(cursor.tokens, 1), "epoch_tokens": epoch_tokens,
                                 "tokens": cursor.tokens,
                                 "tokens_per_s": cursor.tokens / cursor.seconds if cursor.seconds > 0 else 0.0})
            if after_step is not None:
                after_step(cursor)
            if deadline is not None and time.perf_counter() >= deadline:
                out_of_time = True
                break
        if self.table_average is not None:   # validation and the saved model read the whole average
            self.table_average.flush(cursor.synced, self.step_count)
        return out_of_time


class TableAverage:
    """The moving average of the direct table (with `average` > 0), kept lazily. Backward
    changes the raw table at the entries a window uses only (kernel.direct_entries), so an
    entry's average is brought up to date just before its raw value changes, with the
    product of the decays of the steps it missed (kernel.average_catch_up), and the whole
    table's at each epoch's end, before validation, and in the copy that a mid-epoch
    checkpoint saves. Up to rounding it is the average a pass over the whole table per step
    keeps, which took half of an RNNME step on PTB (16M entries, H 256: 41 of 79 ms).
    The lazy state, `synced` (int32, the step each entry's average is up to date with), is
    the epoch cursor's: a mid-epoch checkpoint stores it and the lazy average."""

    def __init__(self, model: RNNModel, raw: np.ndarray, decay):
        self.model, self.raw, self.decay = model, raw, decay
        self.log_decay = np.zeros(1)   # log_decay[t]: the sum of log decay(s) for s = 1 .. t

    def fresh_state(self, step: int) -> np.ndarray:
        """`synced` where every entry's average is up to date with `step`."""
        self.extend(step)
        return np.full(self.raw.size, step, np.int32)

    def catch_up(self, synced: np.ndarray, window: tuple, step: int) -> None:
        """Before the raw table changes at the entries the (whole) window uses."""
        model = self.model
        inputs, targets, resets, history = window
        entries = kernel.direct_entries(inputs, targets, resets, history=history, V=model.V,
                                        class_start=model.class_start, direct_order=model.direct_order,
                                        table_size=self.raw.size)
        self.extend(step)
        kernel.average_catch_up(model.direct_table, self.raw, synced, self.log_decay, step, entries)
        synced[entries] = step

    def flush(self, synced: np.ndarray, step: int) -> None:
        self.extend(step)
        kernel.average_catch_up(self.model.direct_table, self.raw, synced, self.log_decay, step)
        synced.fill(step)

    def flushed(self, synced: np.ndarray, step: int) -> np.ndarray:
        """A copy of the whole average up to date with `step`; the lazy state stays as it is."""
        self.extend(step)
        table = self.model.direct_table.copy()
        kernel.average_catch_up(table, self.raw, synced, self.log_decay, step)
        return table

    def extend(self, step: int) -> None:
        """log_decay through `step`, summed one step after the other from step 1 whenever it
        is computed, so that a resumed run's sums are the uninterrupted run's."""
        if step > MAX_STEP:
            raise RnnkitError(f"the direct table's average counts steps up to {MAX_STEP:,}; "
                              f"this run is at step {step:,}")
        have = self.log_decay.size
        if step < have:
            return
        sums = np.empty(max(step + 1, 2 * have))
        sums[:have] = self.log_decay
        for t in range(have, sums.size):
            sums[t] = sums[t - 1] + math.log(self.decay(t))
        self.log_decay = sums


@dataclass
class EpochCursor:
    """How far an epoch has got; a mid-epoch checkpoint stores it."""
    window: int           # windows done
    h: np.ndarray         # the state carried into the next window (lanes x H)
    loss: float = 0.0     # summed loss of the windows done
    tokens: int = 0       # their predicted tokens
    seconds: float = 0.0  # their training time
    history: np.ndarray | None = None   # the direct history carried with h (lanes x DIRECT_HISTORY)
    synced: np.ndarray | None = None    # the direct table's lazy average state (TableAverage), with one


class TrainingInterrupted(Interrupted):
    """SIGINT or SIGTERM stopped training. `saved` is the file that holds its state at
    window `window` of `windows` in epoch `epoch` (1-based; window == windows: the
    epoch's end), or None when nothing was written; `steps` counts this run's steps."""

    def __init__(self, signum: int, epoch: int, window: int, windows: int, saved, steps: int):
        self.epoch, self.window, self.windows, self.saved, self.steps = epoch, window, windows, saved, steps
        super().__init__(signum, f"training interrupted {self.where()}; "
                                 + (f"saved {saved}" if saved is not None else "nothing saved"))

    def where(self) -> str:
        if self.steps == 0:
            return "before the first training step"
        if self.window == self.windows:
            return f"at the end of epoch {self.epoch}"
        return f"at epoch {self.epoch}, step {self.window:,} of {self.windows:,}"


class Checkpoints:
    """Writes the training state to the output file (None: never): after each epoch,
    every `checkpoint_minutes` within one, and when a signal stops training; and turns
    that signal into TrainingInterrupted."""

    def __init__(self, trainer: Trainer, path, minutes: float, stop: StopSignals):
        self.trainer, self.model, self.path, self.stop = trainer, trainer.model, path, stop
        self.interval = minutes * 60.0 if minutes > 0 else None
        self.windows = trainer.lanes.num_windows(trainer.config.bptt)
        self.first_step = trainer.step_count
        self.best: dict | None = None    # the running epoch's start (_snapshot), set by train()
        self.position = (self.model.train_state["epoch"] + 1, 0)   # (epoch, windows done)
        self.saved = None                 # the position this run last wrote
        self.written_at = time.perf_counter()

    def after_step(self, cursor: EpochCursor) -> None:
        self.position = (self.model.train_state["epoch"] + 1, cursor.window)
        due = self.interval is not None and time.perf_counter() - self.written_at >= self.interval
        if self.path is not None and (self.stop.signum is not None or (due and cursor.window < self.windows)):
            self.write_partial(cursor)
        self.check_stop()

    def epoch_end(self) -> None:
        self.position = (self.model.train_state["epoch"], self.windows)
        if self.path is not None:
            self.model.save(self.path)
            self.wrote()

    def check_stop(self) -> None:
        if self.stop.signum is not None:
            raise self.interrupted(self.stop.signum)

    def interrupted(self, signum: int) -> TrainingInterrupted:
        epoch, window = self.saved or self.position
        return TrainingInterrupted(signum, epoch, window, self.windows, self.path if self.saved else None,
                                   self.trainer.step_count - self.first_step)

    def write_partial(self, cursor: EpochCursor) -> None:
        """The current weights with what resuming mid-epoch needs (module docstring)."""
        trainer = self.trainer
        state = {**self.model.train_state, "step": trainer.step_count, "lr": trainer.lr,
                 "partial": {"window": cursor.window, "windows": self.windows, "bptt": trainer.config.bptt,
                             "lanes": int(cursor.h.shape[0]), "loss": cursor.loss, "tokens": cursor.tokens,
                             "seconds": cursor.seconds}}
        kind, meta, arrays = self.model.file_contents()
        carried = {CARRIED_STATE: cursor.h}
        if cursor.history is not None:   # model files store integers as int64
            carried[CARRIED_HISTORY] = cursor.history.astype(np.int64)
        if cursor.synced is not None:    # the file's users read the whole average, a resumed run the lazy one
            arrays["direct_table"] = trainer.table_average.flushed(cursor.synced, trainer.step_count)
            carried.update({CARRIED_AVERAGE: self.model.direct_table, CARRIED_SYNCED: cursor.synced.astype(np.int64)})
        modelfile.save(self.path, kind, {**meta, "train_state": state},
                       {**arrays, **carried, **{EPOCH_START + name: array for name, array in self.best.items()}})
        self.wrote()

    def wrote(self) -> None:
        self.saved = self.position
        self.written_at = time.perf_counter()


def encode_lines(tokenizer: Tokenizer, vocab: Vocab, lines: list) -> list[np.ndarray]:
    """Ids of each line (a string, or its units already split)."""
    return [vocab.encode(units) for units in tokenizer.split_lines(lines)]


def training_bytes(V: int, config: TrainConfig, largest_class: int = 0, data_parallel: bool = False) -> int:
    """About how much memory training takes: the parameter-sized buffers (weights, gradient,
    Adam's two moments, the raw weights behind an average, the epoch-start copy that a
    worse epoch rolls back to, and a checkpoint's second copy) plus one window's
    activations (hidden states, masks, and the T x B x V softmax gradient, or with classes
    the T x B x (C + largest class) one), plus the direct table, its epoch-start copy and
    a checkpoint's copy (with an average also the raw table, its epoch-start copy, the
    average's lazy state (TableAverage: int32 per entry) and what a mid-epoch checkpoint
    adds, the average caught up and the lazy state as int64; with AdaGrad its sums of
    squares and their two copies; data-parallel over MPI ranks, the table gradient that the
    ranks sum, rnnkit/mpi.py)."""
    C = config.class_count(V)
    params = 2 * V * config.hidden + config.hidden ** 2 + config.hidden + V + C * (config.hidden + 1)
    copies = 2 + (2 if config.optimizer == "adam" else 0) + (1 if config.average > 0 else 0)
    output = C + largest_class if C else V
    window = config.bptt * config.batch * (output + 4 * config.hidden)
    return 4 * (2 * copies * params + 2 * window) + table_bytes(config, data_parallel)


def table_bytes(config: TrainConfig, data_parallel: bool = False) -> int:
    """The direct table's part of training_bytes."""
    copies = (3 + (6 if config.average > 0 else 0) + (3 if config.direct_optimizer == "adagrad" else 0)
              + (1 if data_parallel else 0))
    return 4 * copies * config.direct_size if config.direct_order else 0


def check_memory(V: int, config: TrainConfig, largest_class: int = 0, data_parallel: bool = False) -> None:
    """Refuse, with the figures, a model that cannot fit: better than a MemoryError after
    minutes of reading the corpus, or the machine swapping."""
    need = training_bytes(V, config, largest_class, data_parallel)
    have = physical_memory_bytes()
    if have and need > have:
        table = table_bytes(config, data_parallel)
        knobs = "--hidden, --batch, --bptt or --max-vocab"
        if table > need / 4:
            knobs = f"--direct-size (the direct table takes {table / 2**30:,.1f} GiB), " + knobs
        raise RnnkitError(f"training hidden {config.hidden} with {V:,} units needs about "
                          f"{need / 2**30:,.1f} GiB, more than this machine's {have / 2**30:,.1f} GiB; "
                          f"lower {knobs}")


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):   # not on every platform
        return None


def new_model(numbered: idcorpus.Numbered, config: TrainConfig, tokenizer: Tokenizer,
              data_parallel: bool = False) -> RNNModel:
    """A freshly initialised model: vocabulary, spelling model and class map from the unit
    counts of the numbered training text (`data_parallel`: trained over MPI ranks)."""
    unit_counts = numbered.unit_counts()
    vocab = Vocab.build(unit_counts, min_count=config.min_count, max_vocab=config.max_vocab)
    V = len(vocab)
    C = config.class_count(V)
    counts = np.bincount(np.fromiter(map(vocab.id, unit_counts), dtype=np.int64, count=len(unit_counts)),
                         weights=np.fromiter(unit_counts.values(), dtype=np.float64, count=len(unit_counts)),
                         minlength=V)
    class_start = frequency_classes(counts, C) if C else None
    check_memory(V, config, int(np.diff(class_start).max()) if C else 0, data_parallel)
    table = np.zeros(config.direct_size, np.float32) if config.direct_order else None
    model = RNNModel(vocab, tokenizer, config.hidden, None, stream=config.stream,
                     hyper=config.hyperparameters(), spelling=SpellingModel.train([unit_counts]),
                     class_start=class_start, direct_order=config.direct_order, direct_table=table)
    model.params = init_params(V, model.hidden, np.random.default_rng(config.seed), counts / counts.sum(),
                               class_start)
    model.record = {"corpus": {"train_lines": numbered.lines}, "epochs": []}
    model.train_state = {"epoch": 0, "lr": config.learning_rate(), "halving": False,
                         "best_valid": None, "step": 0, "stale": 0, "done": False}
    return model


def train(corpus, valid_lines: list[str] | None, config: TrainConfig, output_path=None,
          resume_from: RNNModel | None = None, progress=None, notify=None, tokenizer: Tokenizer | None = None,
          ranks=None, temp_dir=None) -> RNNModel:
    """Train (or resume) an RNN LM; writes output_path after every epoch and within
    epochs when given (see Checkpoints in the module docstring).

    `corpus` is a list of lines, or an iterator of blocks of lines (units.read_line_blocks's),
    read once into an id file in `temp_dir` (idcorpus.py). Without `valid_lines` every
    1/valid_fraction-th line of it is held out for validation.

    `tokenizer` (of `config.unit`) is the one a new model uses; by default that unit's
    plain tokenizer, which spm cannot have (it needs a SentencePiece model). A resumed
    model keeps its own.

    progress(tokens_done_in_step, stats) is called after each step; notify(text) with
    one line per epoch. Both are optional: this module never prints. While training runs
    in the main thread, SIGINT and SIGTERM end it with TrainingInterrupted once the
    current step is done and saved. `ranks` (rnnkit.mpi.Ranks) trains data-parallel: each
    rank steps its share of every window's lanes with the summed gradient.
    """
    config.check()
    if ranks is not None and config.direct_optimizer == "adagrad" and config.direct_order:
        # the ranks sum the table's gradient and step it by SGD (rnnkit/mpi.py)
        raise RnnkitError("MPI training steps the direct table by SGD; use --direct-optimizer sgd "
                          "under mpiexec, or train with AdaGrad in one process")
    if resume_from is not None and not resume_from.train_state:
        raise RnnkitError("this model holds no training state (a copy written by `rnnkit export`), "
                          "so training cannot resume from it")
    if valid_lines is not None and not valid_lines:
        raise CorpusError("the validation text has no lines")
    if config.threads is not None:
        kernel.set_num_threads(config.threads)
    if resume_from is not None:
        tokenizer = resume_from.tokenizer
    elif tokenizer is None:
        tokenizer = Tokenizer(config.unit)
    elif tokenizer.unit != config.unit:
        raise RnnkitError(f"the tokenizer's unit {tokenizer.unit!r} is not the configured unit {config.unit!r}")
    every = None if valid_lines is not None else idcorpus.hold_out_every(config.valid_fraction)
    with idcorpus.number([corpus] if isinstance(corpus, list) else corpus, tokenizer, every, temp_dir) as numbered:
        valid_lines = numbered.held_out if valid_lines is None else valid_lines
        if resume_from is not None:
            model = resume_from
            model.hyper = config.hyperparameters()   # the settings it trains on with
        else:
            model = new_model(numbered, config, tokenizer, data_parallel=ranks is not None)
        lanes = batching.split_lanes(numbered.stream(model.vocab, independent=not config.stream), config.batch)
    valid_ids = encode_lines(model.tokenizer, model.vocab, valid_lines)
    model.record.setdefault("corpus", {}).update(
        {"valid_lines": len(valid_lines), "train_tokens": lanes.tokens,
         "valid_tokens": int(sum(len(x) + 1 for x in valid_ids))})
    resume_point = _resume_point(model, lanes, config)
    started = time.perf_counter()
    deadline = started + config.time_budget if config.time_budget else None
    trainer = Trainer(model, config, lanes, (started, deadline) if deadline else None, ranks)
    if resume_point is not None:
        _check_epoch_start(resume_point[1], model)
    state = model.train_state
    deadline = time.perf_counter() + config.time_budget if config.time_budget else None
    with StopSignals() as stop:
        checkpoints = Checkpoints(trainer, output_path, config.checkpoint_minutes, stop)
        try:
            if state["best_valid"] is None:
                state["best_valid"] = _valid_loss(model, valid_lines, valid_ids, ranks)["nats"]
            while state["epoch"] < config.epochs and not state["done"]:
                checkpoints.check_stop()   # a signal during the last epoch's validation or save
                cursor, checkpoints.best = resume_point or (
                    EpochCursor(0, np.zeros((lanes.width, model.hidden), dtype=np.float32)),
                    _snapshot(model, into=checkpoints.best))   # start-of-epoch weights are the best so far
                resume_point = None
                out_of_time = trainer.epoch(cursor, deadline, progress, checkpoints.after_step)
                entry = _end_epoch(model, trainer, checkpoints.best, cursor, valid_lines, valid_ids, config)
                if out_of_time:
                    state["done"] = True
                checkpoints.epoch_end()
                if notify is not None:
                    notify(f"epoch {entry['epoch']}: train loss {entry['train_loss']:.4f} nats/token, valid "
                           f"{entry['valid_bpc']:.4f} bits/char (perplexity {entry['valid_ppl']:.2f})"
                           f"{'' if entry['kept'] else ' (worse: rolled back)'}, "
                           f"lr {entry['lr']:.3g}, {entry['tokens_per_s']:,.0f} tokens/s"
                           + ("; time budget reached" if out_of_time else ""))
        except TrainingInterrupted:
            raise
        except Interrupted as again:   # a second signal stopped a step, a validation or a write
            raise checkpoints.interrupted(again.signum) from None
    return model


def _end_epoch(model: RNNModel, trainer: Trainer, best: dict, cursor: EpochCursor, valid_lines: list[str],
               valid_ids: list[np.ndarray], config: TrainConfig) -> dict:
    """Validate the finished epoch, keep it or roll it back, record it, run the schedule."""
    state = model.train_state
    state["epoch"] += 1
    state["step"] = trainer.step_count
    valid = _valid_loss(model, valid_lines, valid_ids, trainer.ranks)
    if not math.isfinite(valid["nats"]):
        raise RnnkitError("training diverged (the validation loss is not finite); lower the learning rate")
    kept = valid["nats"] < state["best_valid"]
    improved = valid["nats"] < state["best_valid"] * (1.0 - config.min_improvement)
    if kept:
        state["best_valid"] = valid["nats"]
    else:
        _restore(model, best)          # a worse epoch is rolled back
    tokens, seconds = max(cursor.tokens, 1), cursor.seconds
    entry = {"epoch": state["epoch"], "train_loss": cursor.loss / tokens,
             "valid_loss": valid["per_token"], "valid_bpc": valid["bpc"],
             "valid_ppl": math.exp(min(valid["per_token"], MAX_EXP)),
             "train_bpc": cursor.loss / LN2 / tokens * valid["tokens_per_char"],
             "lr": trainer.lr, "seconds": round(seconds, 3),
             "tokens_per_s": cursor.tokens / seconds if seconds else 0.0,
             "tokens": cursor.tokens, "kept": bool(kept)}
    model.record["epochs"].append(entry)
    _schedule(state, trainer, improved, kept, config)
    return entry


def _resume_point(model: RNNModel, lanes: batching.Lanes, config: TrainConfig) -> tuple[EpochCursor, dict] | None:
    """For a mid-epoch checkpoint, where its epoch stands and the epoch's start (None for
    one written at an epoch end). Takes the checkpoint's extra arrays out of the
    optimizer state, which they are not part of."""
    partial = model.train_state.pop("partial", None)
    arrays = model.optimizer_arrays
    h, history = arrays.pop(CARRIED_STATE, None), arrays.pop(CARRIED_HISTORY, None)
    average, synced = arrays.pop(CARRIED_AVERAGE, None), arrays.pop(CARRIED_SYNCED, None)
    best = {name[len(EPOCH_START):]: arrays.pop(name) for name in list(arrays) if name.startswith(EPOCH_START)}
    if partial is None:
        return None
    try:
        window, windows, bptt, n_lanes = (int(partial[k]) for k in ("window", "windows", "bptt", "lanes"))
        cursor = EpochCursor(window, h, float(partial["loss"]), int(partial["tokens"]), float(partial["seconds"]),
                             None if history is None else history.astype(np.int32),
                             None if synced is None else synced.astype(np.int32))
    except (KeyError, TypeError, ValueError):
        raise ModelFileError("mid-epoch checkpoint: train_state.partial must hold the numbers window, windows, "
                             f"bptt, lanes, loss, tokens and seconds, got {str(partial)[:80]}") from None
    if not (isinstance(h, np.ndarray) and h.dtype == np.float32 and h.shape == (n_lanes, model.hidden)
            and 0 <= window <= windows):
        raise ModelFileError(f"mid-epoch checkpoint: no {CARRIED_STATE} array of {n_lanes} x {model.hidden} "
                             f"float32, or step {window} is outside 0..{windows}")
    if model.direct_order and window > 0 and history is None:
        # the schema checked its shape and ids when it is there
        raise ModelFileError(f"mid-epoch checkpoint: no {CARRIED_HISTORY} array (the direct history of "
                             f"each of its {n_lanes} lanes)")
    if average is not None:   # the table average goes on lazily (the file's table is this one caught up)
        model.direct_table = average
    now = (lanes.num_windows(config.bptt), config.bptt, lanes.width)
    if (windows, bptt, n_lanes) != now:
        raise RnnkitError(f"cannot resume mid-epoch: the checkpoint stands at step {window:,} of {windows:,} "
                          f"(bptt {bptt}, {n_lanes} lanes), but this corpus and these settings give "
                          f"{now[0]:,} steps (bptt {now[1]}, {now[2]} lanes); use the corpus, --bptt and "
                          "--batch it was trained with")
    return cursor, best


def _check_epoch_start(best: dict, model: RNNModel) -> None:
    """The stored epoch start must cover the weights, the table and this run's optimizer
    state, each array as the model's."""
    needed = _snapshot_arrays(model)
    if set(best) != set(needed) or any(best[name].dtype != np.float32 or best[name].shape != array.shape
                                       for name, array in needed.items()):
        raise RnnkitError(f"cannot resume mid-epoch: the checkpoint's epoch start holds "
                          f"{', '.join(sorted(best)) or 'nothing'}, this run needs {', '.join(sorted(needed))} "
                          "of the model's sizes (float32); resume with the --optimizer, --average and "
                          "--direct-optimizer it was trained with")


def _snapshot_arrays(model: RNNModel) -> dict:
    """What an epoch's start is: the weights, the direct table and the optimizer state."""
    direct = {} if model.direct_table is None else {"direct_table": model.direct_table}
    return {"params": model.params, **direct, **model.optimizer_arrays}


def _snapshot(model: RNNModel, into: dict | None = None) -> dict:
    """A copy of the epoch start, written over `into` (the last epoch's start) where its
    arrays fit: a new copy beside the old one raised the peak by the table, its sums of
    squares and the weights (5k nsmc lines, H 32, a 32M-entry AdaGrad table: peak RSS 871
    -> 609 MiB; all of nsmc with a 64M table peaked at 1.90 GiB at the first epoch's end)."""
    arrays = _snapshot_arrays(model)
    if into is not None and set(into) == set(arrays) and all(
            into[name].shape == array.shape and into[name].dtype == array.dtype and into[name].flags.writeable
            and not np.may_share_memory(into[name], array) for name, array in arrays.items()):
        for name, array in arrays.items():
            np.copyto(into[name], array)
        return into
    return {name: array.copy() for name, array in arrays.items()}


def _restore(model: RNNModel, snapshot: dict) -> None:
    for name, array in _snapshot_arrays(model).items():
        array[:] = snapshot[name]


def _schedule(state: dict, trainer: Trainer, improved: bool, kept: bool, config: TrainConfig) -> None:
    """Learning-rate schedule after an epoch (see the module docstring)."""
    if config.optimizer == "sgd":
        if not improved:
            if state["halving"]:
                state["done"] = True
            state["halving"] = True
        if state["halving"]:
            trainer.lr /= 2.0
    else:
        # Adam's rate already decays; stop only once the validation loss has not
        # improved at all for `patience` epochs (on PTB, requiring a 0.3% gain stopped a
        # still-improving run at epoch 6)
        state["stale"] = 0 if kept else state["stale"] + 1
        if state["stale"] >= config.patience:
            state["done"] = True
    state["lr"] = trainer.lr


def _valid_loss(model: RNNModel, lines: list[str], id_lists: list[np.ndarray], ranks=None) -> dict:
    if ranks is not None:   # rank 0 validates, the others take its figures (rnnkit/mpi.py)
        return ranks.from_lead(_valid_loss, model, lines, id_lists)
    nats = -sum(float(lp.sum()) for lp in model.natural_logprobs(id_lists, carry=model.stream))
    stats = corpus_stats(lines, id_lists, -nats / math.log(10.0))
    predicted = stats["tokens"] + stats["sentences"]
    return {"nats": nats, "per_token": nats / predicted, "bpc": stats["bits_per_char"],
            "tokens_per_char": predicted / stats["characters"]}
