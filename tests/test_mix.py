"""Mixtures: normalisation, exact single-model limits, EM monotonicity, files and the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rnnkit import loader as lm
from rnnkit.cli import cli
from rnnkit.errors import RnnkitError
from rnnkit.mix import MixModel, tune_weights
from rnnkit.ngram import NgramModel
from rnnkit.train import TrainConfig, train

LINES = [
    "나는 버스를 탔다", "나는 버스를 타고 학교에 갔다", "선생님이 교실로 부리나케 달려갔다",
    "메론을 먹는다", "오늘은 날씨가 좋다", "영화 정말 재미있다", "이 영화 최고", "버스를 타고 집에 왔다",
] * 4
HELD_OUT = ["나는 학교에 갔다", "이 영화 정말 좋다", "버스를 탔다"]


@pytest.fixture(scope="module")
def models():
    rnn = train(LINES, LINES[:8], TrainConfig(hidden=16, bptt=8, batch=4, epochs=2, seed=1, threads=1))
    ngram = NgramModel.train(LINES, order=3, smoothing="kn", unit="char")
    other = NgramModel.train(LINES[:12], order=2, smoothing="wb", unit="char")
    return rnn, ngram, other


def test_weights_one_and_zero_reproduce_single_models(models):
    """lambda = 1 and lambda = 0 give exactly the single models' scores."""
    rnn, ngram, _ = models
    for weights, single in (([1.0, 0.0], rnn), ([0.0, 1.0], ngram)):
        mixture = MixModel([rnn, ngram], weights)
        for sentence in HELD_OUT:
            np.testing.assert_allclose(mixture.token_logprobs(sentence), single.token_logprobs(sentence), rtol=1e-9)


def test_mixture_distribution_sums_to_one(models):
    """The mixture's next-unit distribution sums to 1, also over differing vocabularies."""
    rnn, ngram, other = models
    for mixture in (MixModel([rnn, ngram], [0.3, 0.7]), MixModel([rnn, ngram, other], [0.5, 0.3, 0.2])):
        for prefix in ["", "나는", "버스를 타"]:
            assert mixture.next_distribution(prefix).sum() == pytest.approx(1.0, abs=1e-6)


def test_mixture_score_is_weighted_sum_of_probabilities(models):
    """Per token, P_mix = sum_i w_i P_i."""
    rnn, ngram, _ = models
    mixture = MixModel([rnn, ngram], [0.25, 0.75])
    sentence = HELD_OUT[1]
    expected = np.log10(0.25 * 10 ** rnn.token_logprobs(sentence) + 0.75 * 10 ** ngram.token_logprobs(sentence))
    np.testing.assert_allclose(mixture.token_logprobs(sentence), expected, rtol=1e-9)


def test_em_never_increases_perplexity(models):
    """Every EM iteration keeps or lowers held-out perplexity; the result beats both models."""
    rnn, ngram, _ = models
    mixture, history, _ = tune_weights([rnn, ngram], HELD_OUT)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(history, history[1:]))
    assert sum(mixture.weights) == pytest.approx(1.0)
    assert mixture.evaluate(HELD_OUT)["perplexity"] <= min(
        rnn.evaluate(HELD_OUT)["perplexity"], ngram.evaluate(HELD_OUT)["perplexity"]) * (1 + 1e-6)


def test_stream_rnn_reads_a_text_with_its_state_carried(models):
    """A --stream RNN scores a text's lines with the state running on; a mixture's
    evaluate and weight tuning see exactly those probabilities (lambda = 1 reproduces
    the RNN's own evaluate), while single sentences are still scored from <s>."""
    _, ngram, _ = models
    rnn = train(LINES, LINES[:8], TrainConfig(hidden=16, bptt=8, batch=4, epochs=2, seed=1, threads=1, stream=True))
    text = rnn.text_token_logprobs(HELD_OUT)
    alone = rnn.token_logprobs_many(HELD_OUT)
    np.testing.assert_allclose(text[0], alone[0], rtol=1e-6)     # the first line starts the text
    assert not np.allclose(text[1], alone[1])                   # later lines see the lines before
    total = sum(float(lp.sum()) for lp in text)
    assert rnn.evaluate(HELD_OUT)["log10_total"] == pytest.approx(total, rel=1e-9)
    mixed = MixModel([rnn, ngram], [1.0, 0.0]).evaluate(HELD_OUT)
    assert mixed["perplexity"] == pytest.approx(rnn.evaluate(HELD_OUT)["perplexity"], rel=1e-9)
    mixture, history, singles = tune_weights([rnn, ngram], HELD_OUT)
    assert singles[0] == pytest.approx(rnn.evaluate(HELD_OUT)["perplexity"], rel=1e-9)
    assert history[-1] == pytest.approx(mixture.evaluate(HELD_OUT)["perplexity"], rel=1e-9)
    for sentence in HELD_OUT:   # an n-gram reads a text line by line
        np.testing.assert_array_equal(ngram.text_token_logprobs([sentence])[0], ngram.token_logprobs(sentence))


def test_bad_mixtures(models):
    """Different units, a single model and weights not summing to one are refused clearly."""
    rnn, ngram, _ = models
    words = NgramModel.train(LINES, order=2, unit="word")
    with pytest.raises(RnnkitError, match="different units"):
        MixModel([rnn, words])
    with pytest.raises(RnnkitError, match="at least two"):
        MixModel([rnn])
    with pytest.raises(RnnkitError, match="sum to 1"):
        MixModel([rnn, ngram], [0.5, 0.6])


def test_mixture_file_round_trip_and_cli(models, tmp_path):
    """rnnkit mix --tune writes a model file that score, eval, rank, sample and info accept."""
    rnn, ngram, _ = models
    rnn_path, ngram_path, out = tmp_path / "r.model", tmp_path / "n.model", tmp_path / "mixed.model"
    rnn.save(rnn_path)
    ngram.save(ngram_path)
    held = tmp_path / "valid.txt"
    held.write_text("\n".join(HELD_OUT) + "\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(cli, ["mix", "-m", str(rnn_path), "-m", str(ngram_path), "--tune", str(held),
                                 "-o", str(out), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mixture_perplexity"] <= min(report["model_perplexity"]) * (1 + 1e-6)
    loaded = lm.load(out)
    assert isinstance(loaded, MixModel) and loaded.weights == pytest.approx(report["weights"])
    np.testing.assert_allclose(loaded.score_many(HELD_OUT), MixModel([rnn, ngram], report["weights"]).score_many(HELD_OUT))
    # the mixture keeps what scoring reads: not the RNN's Adam moments or schedule
    assert set(rnn.optimizer_arrays) == {"adam_m", "adam_v"}
    assert loaded.components[0].optimizer_arrays == {} and loaded.components[0].train_state == {}
    assert out.stat().st_size < rnn_path.stat().st_size + ngram_path.stat().st_size
    for args in (["score", "나는 버스를 탔다"], ["eval", str(held)], ["rank", "나는", "버스"],
                 ["sample", "-n", "2", "--seed", "1"], ["info"]):
        assert runner.invoke(cli, [*args, "-m", str(out)]).exit_code == 0, args
    quick = runner.invoke(cli, ["score", "-m", str(rnn_path), "-m", str(ngram_path), "--weights", "0.6,0.4",
                                "--json", "나는 버스를 탔다"])
    assert quick.exit_code == 0
    bad = runner.invoke(cli, ["score", "-m", str(rnn_path), "-m", str(ngram_path), "--weights", "0.6,0.6", "x"])
    assert bad.exit_code == 1 and "sum to 1" in bad.stderr
