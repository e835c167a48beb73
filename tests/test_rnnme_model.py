"""RNN models with a class-factored output and direct connections (RNNME): scoring,
incremental steps, the next-unit distribution and sampling through the class kernel, and
training them (model files and resuming: test_rnnme_files.py, test_train_interrupt.py)."""

import math

import numpy as np
import pytest

from rnnkit import layout, rnnlm
from rnnkit.errors import ConfigError, RnnkitError
from rnnkit.train import (ADAGRAD_START, TrainConfig, _restore, _snapshot, _snapshot_arrays, train,
                          training_bytes)
from test_rnnlm import KOREAN, fresh_model, small_model


def class_model(classes=5, direct_order=3, table_size=997, seed=0, hidden=8):
    """small_model's weights and vocabulary with a class layer (RNNLM frequency classes of
    the corpus counts) and, with direct_order > 0, a random direct table."""
    base = small_model(seed=seed, hidden=hidden)
    rng = np.random.default_rng(seed + 1)
    counts = np.bincount(np.concatenate([base.unit_ids(line) for line in KOREAN]), minlength=base.V)
    class_start = layout.frequency_classes(counts, classes)
    extra = (rng.standard_normal(classes * (hidden + 1)) * 0.5).astype(np.float32)
    table = (rng.standard_normal(table_size) * 0.5).astype(np.float32) if direct_order else None
    return rnnlm.RNNModel(base.vocab, base.unit, hidden, np.concatenate([base.params, extra]),
                          class_start=class_start, direct_order=direct_order, direct_table=table)


MODELS = {"classes": dict(direct_order=0), "direct": dict(direct_order=4),
          "one class": dict(classes=1, direct_order=2)}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_class_model_scores_do_not_depend_on_batching(kind, monkeypatch):
    """A sentence's score is the same alone, among others, and cut into short windows
    (state and direct history carried from window to window)."""
    model = class_model(**MODELS[kind])
    alone = [model.score(s) for s in KOREAN[:8]]
    np.testing.assert_allclose(model.score_many(KOREAN[:8]), alone, rtol=1e-5)
    np.testing.assert_allclose(model.score_many(KOREAN * 3)[:8], alone, rtol=1e-5)
    monkeypatch.setattr(rnnlm, "SCORE_STEPS", 3)
    np.testing.assert_allclose(model.score_many(KOREAN[:8]), alone, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_class_model_steps_match_scores(kind):
    """Stepping token by token (the full distribution of class_step, the direct history in
    the state) gives the batched token log-probabilities."""
    model = class_model(**MODELS[kind])
    for sentence in KOREAN[:3]:
        ids = model.encode(sentence)
        state, logp = model.start([])
        stepwise = []
        for token in ids[1:]:
            stepwise.append(logp[token] / math.log(10))
            state, logp = model.advance(state, token)
        np.testing.assert_allclose(model.token_logprobs(sentence), stepwise, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_class_model_next_distribution_sums_to_one(kind):
    """P(c) P(w | c) over the whole vocabulary sums to 1 after any prefix, and sampling
    from it is reproducible."""
    model = class_model(**MODELS[kind])
    for prefix in ["", "나는", "메론을 먹"]:
        probs = model.next_distribution(prefix)
        assert probs.shape == (model.V,)
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        raw = np.exp(model.start(model.unit_ids(prefix).tolist())[1].astype(np.float64))
        assert raw.sum() == pytest.approx(1.0, abs=1e-5)     # before next_distribution's renormalising
    assert model.sample(3, seed=7) == model.sample(3, seed=7)


def test_direct_connections_change_the_model():
    """The direct table moves the scores; an all-zero table gives the class model without it."""
    with_table = class_model(direct_order=3)
    plain = class_model(direct_order=0)
    zeroed = class_model(direct_order=3)
    zeroed.direct_table[:] = 0
    scores = [m.score_many(KOREAN[:5]) for m in (with_table, plain, zeroed)]
    assert np.abs(np.subtract(scores[0], scores[1])).max() > 0.1
    np.testing.assert_array_equal(scores[2], scores[1])


def test_class_model_weights_and_description():
    """The class layer's weights are named views, and info describes the output layer."""
    model = class_model(classes=4)
    assert model.W_c.shape == (4, 8) and model.b_c.shape == (4,)
    assert np.shares_memory(model.W_c, model.params)
    info = model.describe()
    assert (info["classes"], info["direct_order"], info["direct_size"]) == (4, 3, 997)
    with pytest.raises(AttributeError):
        small_model().W_c


def test_direct_connections_need_classes():
    base = small_model()
    with pytest.raises(ConfigError, match=r"^direct connections need a class-factored output"):
        rnnlm.RNNModel(base.vocab, base.unit, 8, base.params, direct_order=2,
                       direct_table=np.zeros(5, np.float32))


# ----------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------

CLASS_TRAINING = dict(hidden=32, bptt=16, batch=8, epochs=4, seed=3, threads=1, classes=6,
                      direct_order=3, direct_size=4096)


def test_class_training_loss_falls():
    """Training a class model with direct connections lowers the validation loss, moves the
    direct table (sparsely: only entries the features hit) and keeps a distribution."""
    model = train(KOREAN, KOREAN[:8], TrainConfig(**CLASS_TRAINING))
    record = model.record["epochs"]
    assert model.classes == 6 and model.direct_table.size == 4096
    assert record[-1]["valid_loss"] < record[0]["valid_loss"] * 0.95
    touched = np.count_nonzero(model.direct_table)
    assert 0 < touched < model.direct_table.size
    assert model.next_distribution("나는").sum() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_seeded_class_training_is_bit_identical(optimizer):
    """With a seed and one thread, two class runs give identical weights and tables."""
    config = {**CLASS_TRAINING, "hidden": 16, "epochs": 2, "optimizer": optimizer, "dropout": 0.2}
    a = train(KOREAN, KOREAN[:8], TrainConfig(**config))
    b = train(KOREAN, KOREAN[:8], TrainConfig(**config))
    assert np.array_equal(a.params, b.params) and np.array_equal(a.direct_table, b.direct_table)


def test_class_init_starts_from_the_unigram_model():
    """b_c = log P(c) and b_y = log P(w | c): with the output matrices at zero the model's
    next-unit distribution is the training unigram distribution."""
    model = fresh_model(TrainConfig(hidden=8, classes=4))
    model.W_hy[:] = 0
    model.W_c[:] = 0
    counts = np.bincount(np.concatenate([model.unit_ids(line) for line in KOREAN]), minlength=model.V).astype(np.float64)
    counts[model.vocab.id("</s>")] += len(KOREAN)
    expected = np.maximum(counts / counts.sum(), 1e-8)
    np.testing.assert_allclose(model.next_distribution(""), expected / expected.sum(), rtol=1e-4, atol=1e-7)


def test_worse_epoch_rolls_back_the_table():
    """The epoch-start snapshot holds the direct table, and restoring it puts it back."""
    model = fresh_model(TrainConfig(hidden=8, classes=4, direct_order=2, direct_size=64))
    snapshot = _snapshot(model)
    model.direct_table[:] = 1.0
    _restore(model, snapshot)
    assert not model.direct_table.any()


def test_next_epoch_start_reuses_the_last():
    """The next epoch's start is written over the last one's arrays (no second copy of the
    table beside it), and a snapshot that does not fit is replaced by a new copy."""
    model = fresh_model(TrainConfig(hidden=8, classes=4, direct_order=2, direct_size=64))
    first = _snapshot(model)
    arrays = {name: array for name, array in first.items()}
    model.direct_table[:] = 2.0
    model.params[:] += 1.0
    second = _snapshot(model, into=first)
    assert second is first and all(second[name] is arrays[name] for name in arrays)
    assert (second["direct_table"] == 2.0).all() and np.array_equal(second["params"], model.params)
    assert second["direct_table"] is not model.direct_table
    misfit = {**first, "direct_table": np.zeros(3, np.float32)}
    third = _snapshot(model, into=misfit)
    assert third is not misfit and third["direct_table"].shape == model.direct_table.shape
    assert _snapshot(model, into=_snapshot_arrays(model))["params"] is not model.params   # never itself


def test_class_training_settings_checked():
    """Bad class and direct settings are one-line errors."""
    for settings, message in [
            ({"direct_order": 3, "direct_size": 10}, r"direct connections need a class-factored output"),
            ({"classes": 3, "direct_order": 11, "direct_size": 10}, r"direct order must be in \[0, 10\], got 11"),
            ({"classes": 3, "direct_order": 2}, r"direct size must be in \[1, 2\^40\] entries"),
            ({"classes": -1}, r"classes must be a number >= 0 \(0: full softmax\) or 'auto', got -1"),
            ({"classes": "many"}, r"classes must be a number >= 0 \(0: full softmax\) or 'auto', got 'many'"),
            ({"classes": 2.0}, r"classes must be a number >= 0 .* got 2.0"),
            ({"classes": 3, "direct_lr": -1.0}, r"direct learning rate must be in \[0, 100\], got -1.0"),
            ({"classes": 3, "direct_l2": float("nan")}, r"direct L2 must be a finite number >= 0, got nan"),
            ({"classes": 3, "direct_optimizer": "adam"}, r"direct optimizer must be sgd or adagrad, got 'adam'$"),
            ({"classes": 3, "direct_optimizer": "adagrad", "direct_lr": 101.0},
             r"direct learning rate must be in \[0, 100\], got 101.0"),
            ({"classes": 10**6}, r"classes = 1000000 is more than the .* units of the vocabulary")]:
        with pytest.raises(RnnkitError, match=f"^{message}"):
            train(KOREAN, KOREAN[:8], TrainConfig(epochs=1, **settings))


def test_class_memory_estimate():
    """The memory check counts the class output (C + largest class per position, not V)
    and the direct table: itself, its epoch-start and checkpoint copies, and with an
    average its raw copy, that copy's epoch start, the average's lazy state (int32) and a
    mid-epoch checkpoint's caught-up average and int64 lazy state; data-parallel, the
    table gradient the ranks sum."""
    full = training_bytes(50000, TrainConfig(hidden=64))
    classes = training_bytes(50000, TrainConfig(hidden=64, classes=224), largest_class=1000)
    direct = training_bytes(50000, TrainConfig(hidden=64, classes=224, direct_order=4, direct_size=10**8),
                            largest_class=1000)
    averaged = training_bytes(50000, TrainConfig(hidden=64, classes=224, direct_order=4, direct_size=10**8,
                                                 average=0.99), largest_class=1000)
    assert classes < full / 2 and direct - classes == 12 * 10**8
    params = 2 * 50000 * 64 + 64 * 64 + 64 + 50000 + 224 * 65
    assert averaged - direct == 24 * 10**8 + 2 * 4 * params     # (and the raw weights, counted twice)
    adagrad = training_bytes(50000, TrainConfig(hidden=64, classes=224, direct_order=4, direct_size=10**8,
                                                direct_optimizer="adagrad"), largest_class=1000)
    assert adagrad - direct == 12 * 10**8                       # the sums of squares and their copies
    config = TrainConfig(hidden=64, classes=224, direct_order=4, direct_size=10**8)
    ranks = training_bytes(50000, config, largest_class=1000, data_parallel=True)
    assert ranks - direct == 4 * 10**8                          # the table gradient that MPI ranks sum


def test_adagrad_training():
    """With AdaGrad the table moves, the sums of squares beside it grow from their start
    only where the features hit (not everywhere there: a float32 1 absorbs squares below
    6e-8), and the default rate is AdaGrad's."""
    config = TrainConfig(**{**CLASS_TRAINING, "epochs": 1, "direct_optimizer": "adagrad"})
    assert config.direct_rate() == 0.3 and TrainConfig().direct_rate() == 0.03
    model = train(KOREAN, KOREAN[:8], config)
    accum = model.optimizer_arrays["direct_accum"]
    touched, grown = model.direct_table != 0, accum > ADAGRAD_START
    assert accum.shape == model.direct_table.shape and accum.dtype == np.float32
    assert 0 < grown.sum() <= touched.sum() < accum.size and not (grown & ~touched).any()
    assert (accum >= ADAGRAD_START).all()
