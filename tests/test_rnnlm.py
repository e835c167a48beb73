"""RNN language models: packing, scoring, training, files, resume and sampling."""

import math

import numpy as np
import pytest

from rnnkit import batching, idcorpus, rnnlm
from rnnkit import loader as lm
from rnnkit.errors import CorpusError, ModelFileError, RnnkitError
from rnnkit.train import TrainConfig, Trainer, new_model, train
from rnnkit.units import Tokenizer
from rnnkit.vocab import Vocab

KOREAN = [
    "나는 버스를 탔다",
    "나는 버스를 타고 학교에 갔다",
    "선생님이 교실로 부리나케 달려갔다",
    "메론을 먹는다",
    "오늘은 날씨가 좋다",
    "영화 정말 재미있다",
    "이 영화 최고",
    "버스를 타고 집에 왔다",
] * 6


def small_model(seed=0, hidden=8, unit="char", lines=KOREAN):
    """An untrained model with random weights (scoring does not need training)."""
    from rnnkit.train import init_params
    tokenizer = Tokenizer(unit)
    vocab = Vocab.build([tokenizer.split(line) for line in lines])
    model = rnnlm.RNNModel(vocab, unit, hidden)
    model.params = init_params(model.V, hidden, np.random.default_rng(seed), None)
    return model


def fresh_model(config: TrainConfig, lines=KOREAN):
    """train.new_model's model of the lines (none held out)."""
    tokenizer = Tokenizer(config.unit)
    with idcorpus.number([lines], tokenizer) as numbered:
        return new_model(numbered, config, tokenizer)


def test_make_stream_layout():
    """Each sentence becomes <s> w.. as inputs and w.. </s> as targets, with a reset at <s>."""
    stream = batching.make_stream([np.array([5, 6]), np.array([], np.int32), np.array([7])])
    assert stream.ids.tolist() == [5, 6, 2, 2, 7, 2] and stream.starts.tolist() == [0, 3, 4]
    inputs, targets, resets = next(batching.split_lanes(stream, 1).windows(6))
    assert inputs[:, 0].tolist() == [1, 5, 6, 1, 1, 7]
    assert targets[:, 0].tolist() == [5, 6, 2, 2, 7, 2]
    assert resets[:, 0].tolist() == [1, 0, 0, 1, 1, 0]
    carried = batching.make_stream([np.array([5]), np.array([6])], independent=False)
    assert next(batching.split_lanes(carried, 1).windows(4))[2][:, 0].tolist() == [1, 0, 0, 0]


def test_split_lanes_keeps_sentences_whole():
    """Lanes cut at sentence starts, cover the stream exactly once and pad only their ends."""
    rng = np.random.default_rng(0)
    sentences = [rng.integers(3, 20, rng.integers(0, 9)).astype(np.int32) for _ in range(37)]
    stream = batching.make_stream(sentences)
    lanes = batching.split_lanes(stream, 5)
    inputs, targets, resets = (np.concatenate(part) for part in zip(*lanes.windows(4)))
    assert inputs.shape == targets.shape == resets.shape == (lanes.steps, lanes.width) == (lanes.steps, 5)
    assert all(part.dtype == np.int32 and part.flags.c_contiguous for window in lanes.windows(4) for part in window)
    valid = targets >= 0
    assert valid.sum() == len(stream) == lanes.tokens
    assert (resets[0] == 1).all()
    assert np.array_equal(lanes.unlane(targets), stream.ids)
    assert sorted(inputs[valid].tolist()) == sorted(np.concatenate([[1, *s] for s in sentences]).tolist())
    for lane in range(lanes.width):
        n = int(valid[:, lane].sum())
        assert (targets[n:, lane] == -1).all() and (inputs[n:, lane] == 0).all() and (resets[n:, lane] == 1).all(), \
            "padding only at the lane's end"


def test_score_independent_of_batching():
    """A sentence's score is the same alone, in a batch, and among many others."""
    model = small_model()
    alone = [model.score(s) for s in KOREAN[:8]]
    together = model.score_many(KOREAN[:8])
    many = model.score_many(KOREAN * 3)[:8]
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    np.testing.assert_allclose(many, alone, rtol=1e-5)


def test_token_logprobs_match_incremental_steps():
    """Batched token log-probs equal stepping the model token by token (kenlm's state scoring)."""
    model = small_model()
    sentence = KOREAN[2]
    ids = model.encode(sentence)
    assert ids[0] == model.vocab.id("<s>") and ids[-1] == model.vocab.id("</s>")
    state, logp = model.start([])
    stepwise = []
    for token in ids[1:]:
        stepwise.append(logp[token] / math.log(10))
        state, logp = model.advance(state, token)
    np.testing.assert_allclose(model.token_logprobs(sentence), stepwise, rtol=1e-5, atol=1e-6)


def test_file_score_is_sum_of_sentences():
    """evaluate()'s log10 total equals the sum of the sentences' scores; perplexity follows KenLM."""
    model = small_model()
    stats = model.evaluate(KOREAN[:10])
    total = sum(model.score(s) for s in KOREAN[:10])
    assert stats["log10_total"] == pytest.approx(total, rel=1e-6)
    predicted = stats["tokens"] + stats["sentences"]
    assert stats["perplexity"] == pytest.approx(10 ** (-stats["log10_total"] / predicted), rel=1e-9)
    assert stats["sentences"] == 10


def test_next_distribution_sums_to_one():
    """The next-unit distribution after any prefix sums to 1."""
    model = small_model()
    for prefix in ["", "나는", "메론을 먹"]:
        probs = model.next_distribution(prefix)
        assert probs.shape == (model.V,)
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)


def test_weights_named_after_the_lecture():
    """W_xh, W_hh, b_h, W_hy, b_y are views of the flat buffer with the lecture's shapes."""
    model = small_model(hidden=6)
    V = model.V
    assert model.W_xh.shape == (V, 6) and model.W_hh.shape == (6, 6) and model.b_h.shape == (6,)
    assert model.W_hy.shape == (V, 6) and model.b_y.shape == (V,)
    assert np.shares_memory(model.W_hh, model.params)


def test_save_load_round_trip(tmp_path):
    """A saved and reloaded model gives identical scores and metadata; rnnkit.load finds it."""
    model = small_model()
    path = tmp_path / "m.model"
    model.save(path)
    loaded = lm.load(path)
    assert isinstance(loaded, rnnlm.RNNModel)
    assert loaded.score_many(KOREAN[:5]) == model.score_many(KOREAN[:5])
    assert loaded.vocab.to_list() == model.vocab.to_list()


def test_corrupt_truncated_and_future_files(tmp_path):
    """Corrupt, truncated, future-version and missing model files fail with clear messages."""
    model = small_model()
    path = tmp_path / "m.model"
    model.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.model"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupt|truncated|not a valid"):
        lm.load(truncated)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ModelFileError):
        lm.load(corrupt)
    from rnnkit import modelfile
    future = tmp_path / "future.model"
    modelfile.save(future, "rnn", {}, {})
    import json, zipfile
    with zipfile.ZipFile(future) as z:
        meta = json.loads(z.read("meta.json"))
    meta["version"] = 99
    with zipfile.ZipFile(future, "w") as z:
        z.writestr("meta.json", json.dumps(meta))
    with pytest.raises(ModelFileError, match="newer"):
        lm.load(future)
    with pytest.raises(ModelFileError, match="not found"):
        lm.load(tmp_path / "missing.model")


def test_training_loss_falls_quickly(tmp_path):
    """A few seconds of training on a small corpus lowers the validation loss and writes the file."""
    out = tmp_path / "t.model"
    config = TrainConfig(hidden=32, bptt=16, batch=8, epochs=4, seed=3, threads=1)
    model = train(KOREAN, KOREAN[:8], config, output_path=out)
    record = model.record["epochs"]
    assert len(record) >= 2
    assert record[-1]["valid_loss"] < record[0]["valid_loss"] * 0.95
    assert out.exists()
    assert lm.load(out).score(KOREAN[0]) == pytest.approx(model.score(KOREAN[0]))


def test_seeded_training_is_bit_identical():
    """With --seed and one thread, two runs give bit-identical weights."""
    config = dict(hidden=16, bptt=8, batch=4, epochs=2, seed=5, threads=1)
    a = train(KOREAN, KOREAN[:8], TrainConfig(**config))
    b = train(KOREAN, KOREAN[:8], TrainConfig(**config))
    assert np.array_equal(a.params, b.params)


@pytest.mark.parametrize("optimizer, dropout, average, weight_decay",
                         [("adam", 0.0, 0.0, 0.0), ("sgd", 0.0, 0.0, 0.0), ("adam", 0.3, 0.0, 0.0),
                          ("adam", 0.0, 0.9, 0.5)])
def test_resume_continues_exactly(tmp_path, optimizer, dropout, average, weight_decay):
    """A 3-epoch run interrupted after epoch 1 and resumed ends bit-identical to an uninterrupted one."""
    config = dict(hidden=16, bptt=8, batch=4, seed=2, threads=1, optimizer=optimizer, patience=5, epochs=3,
                  dropout=dropout, average=average, weight_decay=weight_decay)
    straight = train(KOREAN, KOREAN[:8], TrainConfig(**config))
    path = tmp_path / "r.model"

    def interrupt_after_first_epoch(text):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(KOREAN, KOREAN[:8], TrainConfig(**config), output_path=path, notify=interrupt_after_first_epoch)
    assert len(rnnlm.RNNModel.load(path).record["epochs"]) == 1
    resumed = train(KOREAN, KOREAN[:8], TrainConfig(**config), output_path=path,
                    resume_from=rnnlm.RNNModel.load(path))
    assert np.array_equal(straight.params, resumed.params)
    assert [e["valid_loss"] for e in straight.record["epochs"]] == [e["valid_loss"] for e in resumed.record["epochs"]]


def test_weight_average_is_what_the_model_keeps():
    """With averaging the optimizer's path is unchanged (its raw weights equal a plain run's)
    and the model holds their moving average, which is what it is validated and saved with."""
    config = dict(hidden=32, bptt=16, batch=8, epochs=1, seed=3, threads=1)
    plain = train(KOREAN, KOREAN[:8], TrainConfig(**config))
    averaged = train(KOREAN, KOREAN[:8], TrainConfig(**config, average=0.9))
    assert np.array_equal(averaged.optimizer_arrays["raw_params"], plain.params)
    assert not np.array_equal(averaged.params, plain.params)
    assert averaged.record["epochs"][0]["valid_loss"] != plain.record["epochs"][0]["valid_loss"]
    with pytest.raises(RnnkitError, match="average"):
        train(KOREAN, None, TrainConfig(average=1.0))


def test_sgd_schedule_halves_then_stops():
    """With a rate too high to improve, SGD halves the rate and then stops early."""
    config = TrainConfig(hidden=8, bptt=8, batch=4, epochs=10, optimizer="sgd", lr=1e-6, seed=1, threads=1)
    model = train(KOREAN, KOREAN[:8], config)
    lrs = [e["lr"] for e in model.record["epochs"]]
    assert len(lrs) < 10
    assert model.train_state["halving"] and model.train_state["lr"] < 1e-6


def test_dropout_trains_and_scores_deterministically():
    """Training with dropout lowers the loss; scoring uses no masks, so it is repeatable."""
    config = TrainConfig(hidden=32, bptt=16, batch=8, epochs=3, seed=3, threads=1, dropout=0.3)
    model = train(KOREAN, KOREAN[:8], config)
    record = model.record["epochs"]
    assert record[-1]["valid_loss"] < record[0]["valid_loss"]
    assert model.score_many(KOREAN[:4]) == model.score_many(KOREAN[:4])
    with pytest.raises(RnnkitError, match="dropout"):
        train(KOREAN, None, TrainConfig(dropout=1.0))


def test_stream_mode_trains_and_scores():
    """--stream training carries the state across lines and evaluates as one stream."""
    model = train(KOREAN, KOREAN[:8], TrainConfig(hidden=16, bptt=8, batch=2, epochs=1, stream=True, threads=1))
    assert model.stream
    stats = model.evaluate(KOREAN[:8])
    assert math.isfinite(stats["bits_per_char"]) and stats["bits_per_char"] > 0


def test_sampling_reproducible_and_greedy():
    """Sampling with a seed repeats; temperature -> 0 follows the argmax path."""
    model = small_model()
    a = model.sample(n=3, seed=7, max_tokens=20)
    b = model.sample(n=3, seed=7, max_tokens=20)
    assert a == b
    greedy = model.sample(n=1, temperature=1e-9, max_tokens=15, seed=1)[0]
    state, logp = model.start([])
    ids = []
    for _ in range(15):
        banned = logp.copy()
        banned[[model.vocab.id("<s>"), model.vocab.id("<unk>")]] = -np.inf
        token = int(np.argmax(banned))
        if token == model.vocab.id("</s>"):
            break
        ids.append(token)
        state, logp = model.advance(state, token)
    assert greedy == model.tokenizer.join(model.vocab.decode(ids))
    prefixed = model.sample(n=2, prefix="나는", seed=3, max_tokens=10)
    assert all(s.startswith("나는") for s in prefixed)


def test_top_k_and_top_p_filters():
    """top-k keeps k units, top-p the smallest set reaching p; both renormalise."""
    from rnnkit.sampling import filtered_distribution
    logp = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.count_nonzero(filtered_distribution(logp, top_k=2)) == 2
    probs = filtered_distribution(logp, top_p=0.7)
    assert np.count_nonzero(probs) == 2 and probs.sum() == pytest.approx(1.0)
    with pytest.raises(RnnkitError):
        from rnnkit.sampling import check_options
        check_options(1.0, None, 1.5)


def test_jamo_unit_samples_recompose():
    """A jamo model's samples are recomposed into Hangul syllables."""
    model = small_model(unit="jamo")
    text = model.sample(n=1, prefix="나는", seed=0, max_tokens=12)[0]
    assert text.startswith("나는")
    assert not any(0x1100 <= ord(c) <= 0x11FF for c in "나는")


def test_bad_training_inputs():
    """Empty corpus, a one-line corpus without validation, and bad sizes are clear errors."""
    with pytest.raises(CorpusError):
        train([], None, TrainConfig())
    with pytest.raises(CorpusError, match="at least 2 lines"):
        train(["한 줄"], None, TrainConfig(epochs=1))
    with pytest.raises(RnnkitError, match="hidden"):
        train(KOREAN, None, TrainConfig(hidden=0))
    with pytest.raises(CorpusError, match="^the validation text has no lines$"):
        train(KOREAN, [], TrainConfig(epochs=1))


def test_weight_decay_shrinks_matrices_not_biases():
    """Decoupled weight decay: after one step each matrix is the plain run's times
    (1 - lr * weight_decay) and the biases equal the plain run's; a negative value, or one
    whose product with the learning rate reaches 1, is refused."""
    config = dict(hidden=16, bptt=8, batch=4, epochs=1, seed=3, threads=1, optimizer="sgd", lr=0.1)
    lanes = batching.split_lanes(batching.make_stream([np.arange(3, 20, dtype=np.int32)] * 4), 4)
    steps = {}
    for decay in (0.0, 2.0):
        model = fresh_model(TrainConfig(**config))
        trainer = Trainer(model, TrainConfig(**config, weight_decay=decay), lanes)
        inputs, targets, resets = next(lanes.windows(8))
        trainer.step(inputs, targets, resets, np.zeros((4, 16), np.float32))
        steps[decay] = {name: view.copy() for name, view in model.weights().items()}
    for name in ("W_xh", "W_hh", "W_hy"):
        np.testing.assert_allclose(steps[2.0][name], steps[0.0][name] * (1 - 0.1 * 2.0), rtol=1e-6, atol=1e-7)
    for name in ("b_h", "b_y"):
        assert np.array_equal(steps[2.0][name], steps[0.0][name])
    for bad in (-1.0, 10.0):   # 10 x lr 0.1 would flip the matrices' sign every step
        with pytest.raises(RnnkitError, match="weight decay"):
            train(KOREAN, KOREAN[:8], TrainConfig(**config, weight_decay=bad))


def test_saving_twice_gives_the_same_bytes(tmp_path, monkeypatch):
    """A model file does not depend on when it was saved (zip members carry a fixed time)."""
    import time as time_module
    model = small_model()
    first, second = tmp_path / "a.model", tmp_path / "b.model"
    model.save(first)
    real = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real() + 86400)   # a day later
    monkeypatch.setattr(time_module, "localtime", lambda t=None: time_module.gmtime(real() + 86400))
    model.save(second)
    assert first.read_bytes() == second.read_bytes()
