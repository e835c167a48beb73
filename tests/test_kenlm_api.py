"""rnnkit.kenlm against the real `kenlm` module on the KenLM fixtures (tests/fixtures/kenlm).

Scores, full_scores, perplexity and BaseScore chains must agree within 1e-5 (they agree
bit for bit: both keep float32), OOV flags and n-gram lengths exactly, and the States
must fall into the same equality classes as KenLM's.
"""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import kenlm
import pytest

import rnnkit.kenlm as rk
from rnnkit.errors import ConfigError
from rnnkit.mix import MixModel
from rnnkit.ngram import NgramModel
from rnnkit.train import TrainConfig, train

KENLM = Path(__file__).parent / "fixtures" / "kenlm"
MODELS = {"small_ko.o2": "queries_ko", "small_ko.o3": "queries_ko", "small_ko.o5": "queries_ko",
          "ptb.o3": "ptb_queries"}
TOLERANCE = 1e-5
# words no fixture model knows, and the specials given as words
ODD_WORDS = ["zzz-not-a-word", "<unk>", "<s>", "</s>"]


def queries(name: str) -> list[str]:
    return gzip.decompress((KENLM / f"{name}.txt.gz").read_bytes()).decode("utf-8").splitlines()


@pytest.fixture(scope="module")
def pair():
    """(real kenlm.Model, rnnkit.kenlm.Model, query lines) per fixture ARPA, loaded once."""
    cache = {}

    def get(name):
        if name not in cache:
            path = str(KENLM / f"{name}.arpa.gz")
            cache[name] = (kenlm.Model(path), rk.Model(path), queries(MODELS[name]))
        return cache[name]
    return get


@pytest.mark.parametrize("name", MODELS)
def test_whole_sentences_match_kenlm(pair, name):
    """score (every bos/eos), full_scores and perplexity of every query, OOVs included."""
    real, ours, lines = pair(name)
    lines = lines + [f"{lines[0]} {' '.join(ODD_WORDS)}", ""]
    for line in lines:
        for bos in (True, False):
            for eos in (True, False):
                assert ours.score(line, bos=bos, eos=eos) == pytest.approx(real.score(line, bos=bos, eos=eos),
                                                                         abs=TOLERANCE)
        theirs, mine = list(real.full_scores(line)), list(ours.full_scores(line))
        assert [s[1:] for s in mine] == [s[1:] for s in theirs]
        assert [s[0] for s in mine] == pytest.approx([s[0] for s in theirs], abs=TOLERANCE)
        assert ours.perplexity(line) == pytest.approx(real.perplexity(line), rel=TOLERANCE)
    assert [s[1:] for s in ours.full_scores(lines[1], bos=False, eos=False)] == \
        [s[1:] for s in real.full_scores(lines[1], bos=False, eos=False)]


def chain(model, state_class, words, start):
    """BaseFullScore over words from a state written by `start`: (results, states)."""
    state = state_class()
    if start is not None:
        getattr(model, start)(state)
    results, states = [], [state]
    for word in words:
        out = state_class()
        full = model.BaseFullScore(state, word, out)
        results.append((full.log_prob, full.ngram_length, full.oov))
        assert model.BaseScore(state, word, state_class()) == full.log_prob
        states.append(out)
        state = out
    return results, states


def equality_classes(states) -> list[int]:
    """The number of the first equal state for each state: two lists are equal exactly
    when the states fall into the same equality classes (hash and == together)."""
    first = {}
    return [first.setdefault(state, i) for i, state in enumerate(states)]


@pytest.mark.parametrize("name", MODELS)
def test_base_score_chains_and_states_match_kenlm(pair, name):
    """Word-by-word scoring from <s>, from the null context and from a State never
    written, with OOVs, <unk>, <s> and </s> mid-sentence: same scores, lengths, OOV
    flags, and the States equal exactly where KenLM's are."""
    real, ours, lines = pair(name)
    all_real, all_ours = [], []
    for line in lines[:60]:
        words = line.split()
        words = words[:3] + ODD_WORDS + words[3:] + ["</s>"]
        for start in ("BeginSentenceWrite", "NullContextWrite", None):
            theirs, real_states = chain(real, kenlm.State, words, start)
            mine, our_states = chain(ours, rk.State, words, start)
            assert [r[1:] for r in mine] == [r[1:] for r in theirs]
            assert [r[0] for r in mine] == pytest.approx([r[0] for r in theirs], abs=TOLERANCE)
            all_real += real_states
            all_ours += our_states
    classes = equality_classes(all_ours)
    assert classes == equality_classes(all_real)
    assert len(set(classes)) > 100  # the chains reach many distinct contexts


def test_states_compare_copy_and_hash_like_kenlm(pair):
    real, ours, _ = pair("small_ko.o3")
    for model, state_class in ((real, kenlm.State), (ours, rk.State)):
        null, begin, after_oov = state_class(), state_class(), state_class()
        model.NullContextWrite(null)
        model.BeginSentenceWrite(begin)
        model.BaseScore(begin, "zzz-not-a-word", after_oov)
        assert state_class() == null and after_oov == null  # KenLM keeps nothing after an OOV
        assert begin != null and (begin > null) == (begin >= null) != (begin < null)
        twin = copy.copy(begin)
        assert twin == begin and hash(twin) == hash(begin) and {begin: 1}[twin] == 1
    assert copy.deepcopy(begin) == begin  # kenlm's __deepcopy__ takes no memo and fails


def test_vocabulary_order_and_path_like_kenlm(pair):
    real, ours, lines = pair("ptb.o3")
    words = lines[0].split() + ODD_WORDS + ["", "N", "the"]
    assert [w in ours for w in words] == [w in real for w in words]
    assert ours.order == real.order == 3
    assert ours.path == real.path and isinstance(ours.path, bytes)
    assert repr(ours) == repr(real)
    assert repr(ours.BaseFullScore(rk.State(), "the", rk.State())).startswith("FullScoreReturn(-")
    assert ours.score(lines[0].encode("utf-8")) == pytest.approx(real.score(lines[0].encode("utf-8")),
                                                                 abs=TOLERANCE)
    assert isinstance(rk.LanguageModel(KENLM / "ptb.o3.arpa.gz"), rk.Model)


LINES = ["나는 버스를 탔다", "나는 버스를 타고 학교에 갔다", "선생님이 교실로 부리나케 달려갔다",
         "메론을 먹는다", "오늘은 날씨가 좋다", "영화 정말 재미있다", "이 영화 최고", "버스를 타고 집에 왔다"] * 4


@pytest.fixture(scope="module")
def rnn_files(tmp_path_factory):
    """An RNN, an n-gram and their mixture (word units) as model files."""
    folder = tmp_path_factory.mktemp("models")
    rnn = train(LINES, LINES[:8], TrainConfig(unit="word", hidden=16, bptt=8, batch=4, epochs=2, seed=1,
                                              threads=1))
    ngram = NgramModel.train(LINES, order=3, unit="word")
    models = {"rnn": rnn, "ngram": ngram, "mix": MixModel([rnn, ngram], [0.4, 0.6])}
    for kind, model in models.items():
        model.save(folder / f"{kind}.model")
    return {kind: (model, rk.Model(folder / f"{kind}.model")) for kind, model in models.items()}


@pytest.mark.parametrize("kind", ["rnn", "mix", "ngram"])
def test_rnn_and_mixture_states_score_as_the_model(rnn_files, kind):
    """The state machine gives each model's own scores; a chain of BaseScore adds up to score."""
    model, ours = rnn_files[kind]
    for sentence in ["나는 학교에 갔다", "이 영화 정말 좋다 모르는단어", ""]:
        assert ours.score(sentence) == pytest.approx(model.score(sentence), abs=1e-4)
        assert list(ours.full_scores(sentence)) == [
            (pytest.approx(p, abs=1e-4), n, o) for p, n, o in model.full_scores(sentence)]
        results, _ = chain(ours, rk.State, sentence.split() + ["</s>"], "BeginSentenceWrite")
        assert sum(r[0] for r in results) == pytest.approx(ours.score(sentence), abs=1e-4)
    expected_order = 3 if kind == "ngram" else rk.UNBOUNDED_ORDER
    assert ours.order == expected_order


def test_rnn_states_are_equal_for_equal_histories(rnn_files):
    _, ours = rnn_files["rnn"]
    _, first = chain(ours, rk.State, ["나는", "버스를"], "BeginSentenceWrite")
    _, second = chain(ours, rk.State, ["나는", "버스를", "탔다"], "BeginSentenceWrite")
    assert first == second[:3] and first[-1] != second[-1] and hash(first[2]) == hash(second[2])


def test_errors_are_one_line_config_errors(rnn_files):
    _, rnn = rnn_files["rnn"]
    _, ngram = rnn_files["ngram"]
    state = rk.State()
    ngram.BeginSentenceWrite(state)
    cases = [
        (lambda: rnn.NullContextWrite(rk.State()), "has no null context"),
        (lambda: rnn.score("나는", bos=False), "has no null context"),
        (lambda: rnn.BaseScore(rk.State(), "나는", rk.State()), "has no null context"),
        (lambda: rnn.BaseScore(state, "나는", rk.State()), "written by another Model"),
        (lambda: ngram.BaseScore(state, b"bytes", rk.State()), "a word must be a str"),
        (lambda: ngram.BaseScore(state, "나는", "not a state"), "expected a kenlm State"),
        (lambda: ngram.score(42), "text must be a str or UTF-8 bytes"),
        (lambda: rk.Model(3.5), "a model path must be"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError, match=message):
            call()


def test_a_mixture_of_ngrams_has_the_null_context(tmp_path):
    """Every component at its null context is the null context, equal to State()."""
    small, large = (NgramModel.train(LINES, order=n, unit="word") for n in (2, 3))
    MixModel([small, large], [0.5, 0.5]).save(tmp_path / "mix.model")
    ours = rk.Model(tmp_path / "mix.model")
    null, after_oov = rk.State(), rk.State()
    ours.NullContextWrite(null)
    ours.BaseScore(null, "모르는단어", after_oov)
    assert null == rk.State() == after_oov and ours.order == 3
    assert ours.score("나는 버스를", bos=False) < ours.score("나는 버스를")  # <s> makes "나는" likely
