"""rnnkit._ngram_py (csrc/ngram_py.c): the CPython entry points of rnnkit.kenlm's calls on
an n-gram model and of NgramModel.score.

The C entry points stand in front of the Python methods and hand them every case they do
not take, so they must give exactly the Python paths' numbers and States; the State type
must keep rnnkit.kenlm.State's semantics; and every hostile call (wrong types, foreign or
made-up states, huge or odd strings) must end in a result or a one-line rnnkit error.
Nothing here needs the real kenlm module, so .ci/asan runs it too.
"""

from __future__ import annotations

import copy
import gc
import sys
import unicodedata
import weakref

import numpy as np
import pytest

import rnnkit.kenlm as rk
from rnnkit import kernel
from rnnkit.errors import ConfigError, KernelError, RnnkitError
from rnnkit.lm import LanguageModel
from rnnkit.ngram import NgramModel

LINES = ["나는 버스를 탔다", "나는 버스를 타고 학교에 갔다", "선생님이 교실로 부리나케 달려갔다",
         "메론을 먹는다", "오늘은 날씨가 좋다 ㅋㅋㅋ", "영화 정말 재미있다 ♥", "the cat sat on the mat",
         "café au lait", "버스를 타고 집에 왔다"] * 3
# words with the separators KenLM knows (ASCII whitespace) and characters it does not split on
ODD = ["나는\x1f버스를 탔다", "averyveryverylongword\x01withacontrolbyte 나는", "a\x1cb\x1dc\x1ed 가나다라마바사아자",
       "\t나는\v버스를\f탔다\r\n", "나는\u3000버스를", "x" * 7 + "\x02" + "y" * 9 + " " + "\x7f" * 20, "",
       " ", "\udcff 나는 \ud800", "𝄞 음표", "\x00나는\x00 \x00"]


def fresh(text: str) -> str:
    """A new str object equal to `text` (no cached hash or UTF-8 of an earlier call)."""
    return "".join(list(text))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("entry_points")
    models = {"word": NgramModel.train(LINES, 3, unit="word"), "char": NgramModel.train(LINES, 4, unit="char"),
              "jamo": NgramModel.train(LINES, 4, unit="jamo"), "other": NgramModel.train(LINES, 2, unit="word")}
    out = {}
    for name, model in models.items():
        out[name] = folder / f"{name}.model"
        model.save(out[name])
    return out


@pytest.fixture(scope="module")
def word(paths):
    return rk.Model(paths["word"])


def sentences() -> list[str]:
    known = ["나는", "버스를", "탔다", "학교에", "the", "cat", "café", "zzz", "<unk>", "<s>", "</s>"]
    rng = np.random.default_rng(3)
    made = [" ".join(rng.choice(known, size=rng.integers(0, 12))) for _ in range(40)]
    return made + ODD + [unicodedata.normalize("NFD", line) for line in LINES[:9]]


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return message


# ------------------------------------------------------------------ fast paths = Python paths

@pytest.mark.parametrize("unit", ["word", "char", "jamo"])
def test_fast_paths_give_the_python_paths_numbers_and_states(paths, unit):
    """score, BaseScore, BaseFullScore and the writes equal the Python methods they stand
    in front of (rk.Model's own, called on the class), States included (== and hash)."""
    ours = rk.Model(paths[unit])
    lm = ours._lm
    for sentence in sentences():
        for bos in (True, False):
            for eos in (True, False):
                assert ours.score(fresh(sentence), bos, eos) == rk.Model.score(ours, sentence, bos, eos)
                assert lm.score(fresh(sentence), bos, eos) == LanguageModel.score(lm, sentence, bos, eos)
        fast, slow = rk.State(), rk.State()
        ours.BeginSentenceWrite(fast)
        rk.Model.BeginSentenceWrite(ours, slow)
        for unit_text in lm.units(sentence) + ["</s>", "zzz-unseen", ""]:
            fast_out, slow_out = rk.State(), rk.State()
            assert ours.BaseFullScore(fast, fresh(unit_text), fast_out) == \
                rk.Model.BaseFullScore(ours, slow, unit_text, slow_out)
            assert ours.BaseScore(fast, fresh(unit_text), rk.State()) == rk.Model.BaseScore(ours, slow, unit_text,
                                                                                          rk.State())
            assert fast_out == slow_out and hash(fast_out) == hash(slow_out) and fast_out._key == slow_out._key
            fast, slow = fast_out, slow_out
    null_fast, null_slow = rk.State(), rk.State()
    ours.NullContextWrite(null_fast)
    rk.Model.NullContextWrite(ours, null_slow)
    assert null_fast == null_slow == rk.State()


def test_common_calls_stay_in_c(word, monkeypatch):
    """NFC str sentences and words, States of the model: no Python path is reached (it is
    what every other case reaches)."""
    def python_path(*args, **kwargs):
        raise AssertionError("the Python path was taken")

    for owner, name in ((rk.Model, "_base"), (rk.Model, "_null"), (NgramModel, "kenlm_score"),
                        (NgramModel, "_utf8"), (LanguageModel, "score")):
        monkeypatch.setattr(owner, name, python_path)
    state, out = rk.State(), rk.State()
    for sentence in ["나는 버스를 탔다", "the cat sat on the mat ㅋㅋㅋ", "café au lait", "", "zzz \x1f"]:
        assert word.score(fresh(sentence)) < 0 and word.score(sentence, False, False) <= 0
        assert word._lm.score(fresh(sentence)) < 0
        word.BeginSentenceWrite(state)
        for unit_text in sentence.split() + ["</s>"]:
            assert word.BaseFullScore(state, fresh(unit_text), out).log_prob < 0
            state, out = out, state
        word.NullContextWrite(state)
        assert word.BaseScore(state, "나는", out) < 0
    with pytest.raises(AssertionError, match="Python path"):
        word.BaseScore(state, b"bytes", out)


def test_keywords_bytes_and_truthy_flags_take_the_python_path(word):
    state, out = rk.State(), rk.State()
    word.BeginSentenceWrite(state=state)
    assert word.BaseScore(in_state=state, word="나는", out_state=out) == word.BaseScore(state, "나는", rk.State())
    sentence = "나는 버스를 탔다"
    assert word.score(sentence, bos=False) == word.score(sentence, False) == word.score(sentence, 0, 1)
    assert word.score(sentence.encode("utf-8")) == word.score(sentence) == word.score(sentence, "yes", [1])


def test_a_state_may_be_its_own_out_state(word):
    alone, shared = rk.State(), rk.State()
    word.BeginSentenceWrite(alone)
    word.BeginSentenceWrite(shared)
    for unit_text in ["나는", "버스를", "zzz", "탔다", "</s>"]:
        out = rk.State()
        assert word.BaseScore(alone, unit_text, out) == word.BaseScore(shared, unit_text, shared)
        alone = out
        assert shared == alone


# ------------------------------------------------------------------ the State type

def test_state_compares_hashes_copies_and_prints_as_before(word, paths):
    null, begin = rk.State(), rk.State()
    word.BeginSentenceWrite(begin)
    assert repr(null) == "State(length=0)" and repr(begin) == "State(length=1)"
    assert null == rk.State() and hash(null) == hash(rk.State()) and begin != null
    chain, state = [null, begin], begin
    for unit_text in ["나는", "버스를", "타고", "학교에", "zzz", "the", "cat"]:
        out = rk.State()
        word.BaseScore(state, unit_text, out)
        chain.append(out)
        state = out
    for a in chain:
        for b in chain:
            assert [a < b, a == b, a > b].count(True) == 1
            assert (a <= b) == (a < b or a == b) and (a >= b) == (a > b or a == b) and (a != b) == (not a == b)
            assert (a == b) == (hash(a) == hash(b) and (a._length, a._key) == (b._length, b._key))
    for twin in (copy.copy(begin), copy.deepcopy(begin)):
        assert twin == begin and hash(twin) == hash(begin) and {begin: 1}[twin] == 1 and twin is not begin
        word.NullContextWrite(twin)
        assert twin == null and begin != null   # a copy is its own State
    assert null != 3 and not (null == "State(length=0)")


def test_state_writes_of_the_python_scorers_and_other_kinds(word, paths):
    """_write is how rk's Python scorers write States: an n-gram's raw state is kept as its
    code (so it equals the C writes); other keys are kept as objects. States of different
    kinds of model are never equal, and have no order."""
    begin = rk.State()
    word.BeginSentenceWrite(begin)
    written = rk.State()
    written._write(word._scorer, word._scorer.begin())
    assert written == begin and hash(written) == hash(begin) and written._key == 129 and written._data is None
    written._write(word._scorer, (0, (), ("data",)))
    assert written == rk.State() and written._data == ("data",) and written._owner is word._scorer
    rnn_like = rk.State()
    rnn_like._write("an owner", (1, (b"\x00" * 4, None), None))
    assert rnn_like._key == (b"\x00" * 4, None) and rnn_like._length == 1 and rnn_like != begin
    with pytest.raises(ConfigError, match="different kinds of model have no order") as caught:
        _ = rnn_like < begin
    one_line(caught.value)


def test_state_takes_no_arguments_refuses_odd_writes_and_can_be_subclassed(word):
    for args, kwargs in (((1,), {}), ((), {"length": 3})):
        with pytest.raises(ConfigError, match="takes no arguments") as caught:
            rk.State(*args, **kwargs)
        one_line(caught.value)

    for args in ((), ("owner",), ("owner", (1, 2)), ("owner", ("1", 2, 3)), ("owner", (-1, 2, 3)),
                 ("owner", (2**70, 2, 3))):
        with pytest.raises(ConfigError, match="_write takes") as caught:
            rk.State()._write(*args)
        one_line(caught.value)

    class Mine(rk.State):
        pass

    mine, plain = Mine(), rk.State()
    word.BeginSentenceWrite(mine)
    word.BeginSentenceWrite(plain)
    assert mine == plain and word.BaseScore(mine, "나는", Mine()) == word.BaseScore(plain, "나는", rk.State())
    assert type(rk.State).__name__ == "type" and rk.State.__module__ == "rnnkit.kenlm"


def test_a_dropped_model_is_freed(paths):
    """The entry points and the Model refer to each other; the collector frees them."""
    model = rk.Model(paths["word"])
    state = rk.State()
    model.BeginSentenceWrite(state)
    model.BaseScore(state, "나는", rk.State())
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None and state == state


# ------------------------------------------------------------------ hostile calls

def test_hostile_calls_are_one_line_rnnkit_errors(word, paths):
    other = rk.Model(paths["other"])
    foreign = rk.State()
    other.BeginSentenceWrite(foreign)
    made_up = rk.State()
    made_up._write(word._scorer, (5, 5 + 128 * 10**9, None))   # a code that names no n-gram
    cases = [
        (lambda: word.BaseScore(rk.State(), b"bytes", rk.State()), ConfigError, "a word must be a str"),
        (lambda: word.BaseFullScore(rk.State(), None, rk.State()), ConfigError, "a word must be a str"),
        (lambda: word.BaseScore("a state", "나는", rk.State()), ConfigError, "expected a kenlm State"),
        (lambda: word.BaseScore(rk.State(), "나는", 5), ConfigError, "expected a kenlm State"),
        (lambda: word.BaseFullScore(None, "나는", rk.State()), ConfigError, "expected a kenlm State"),
        (lambda: word.BeginSentenceWrite(None), ConfigError, "expected a kenlm State"),
        (lambda: word.NullContextWrite([]), ConfigError, "expected a kenlm State"),
        (lambda: word.BaseScore(foreign, "나는", rk.State()), ConfigError, "written by another Model"),
        (lambda: word.BaseScore(made_up, "나는", rk.State()), KernelError, "state code that names no n-gram"),
        (lambda: word.score(42), ConfigError, "text must be a str or UTF-8 bytes"),
        (lambda: word.score(["나는"]), ConfigError, "text must be a str or UTF-8 bytes"),
        (lambda: word.score(b"\xff\xfe"), RnnkitError, "not valid UTF-8"),
        (lambda: word._lm.c_query.word_id(b"bytes"), ConfigError, "a word must be a str"),
        (lambda: kernel.ngram_query("tables", "words", 1e-4), KernelError, "tables must come from ngram_tables"),
        (lambda: kernel.ngram_query(word._lm._query, "sentences", 1e-4), KernelError, "split must be one of"),
        (lambda: kernel.ngram_query(word._lm._query, "words", 2.0), KernelError, "slack = 2.0 is out of range"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            call()
        one_line(caught.value)


def test_huge_non_nfc_and_surrogate_text(word):
    unknown = word.BaseScore(rk.State(), "zzz-unseen", rk.State())
    out = rk.State()
    assert word.BaseScore(rk.State(), "가" * 10**6, out) == unknown and out == rk.State()
    assert word.score("가" * 10**6) == word.score("zzz-unseen")
    many = " ".join(["나는 버스를"] * 2000)   # beyond one C call's 512 units
    assert word.score(many) == rk.Model.score(word, many) < word.score("나는 버스를")
    assert word._lm.score(many) == LanguageModel.score(word._lm, many)
    for composed in ["나는 버스를 탔다", "café"]:
        decomposed = unicodedata.normalize("NFD", composed)
        assert decomposed != composed
        assert word.score(decomposed) == word.score(composed)
        assert word._lm.score(decomposed) == word._lm.score(composed)
        head = composed.split()[0]
        assert word.BaseScore(rk.State(), unicodedata.normalize("NFD", head), rk.State()) == \
            word.BaseScore(rk.State(), head, rk.State())
    assert word.score("나는 \udcff") == word.score("나는 zzz-unseen")
    assert word.BaseScore(rk.State(), "\ud800", rk.State()) == unknown


def test_sentences_split_at_kenlms_separators_only(word):
    """C splits words eight bytes at a time: control bytes and the whitespace KenLM does not
    split on stay inside words, at every place in a long word (the Tokenizer's split,
    scored in NumPy, is the reference)."""
    lm = word._lm
    texts = ODD + ["나는버스를" + "\x01" * k + "탔다 the\x1fcat" for k in range(10)]
    texts += ["a" * k + "\x1f" + "나는" + " " + "b" * (17 - k) + "\t버스를" for k in range(17)]
    for text in texts:
        logp, _ = lm._numpy_token_scores(lm.tokenizer.split_lines([unicodedata.normalize("NFC", text)]))
        assert lm.score(fresh(text)) == float(logp.sum()), repr(text)


def test_the_nfc_quick_check_is_exact():
    """The characters C takes as NFC without asking unicodedata (csrc/ngram_py.c: below
    U+0300, Hangul syllables, compatibility jamo) are NFC in any context: unchanged by
    NFC, combining class 0, and never the second of a canonical pair (UAX #15's NFC_QC = Yes)."""
    fast = [*range(0x300), *range(0xAC00, 0xD7A4), *range(0x3131, 0x318F)]
    seconds = set()
    for code in range(sys.maxunicode + 1):
        parts = unicodedata.decomposition(chr(code)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            seconds.add(int(parts[1], 16))
    for code in fast:
        c = chr(code)
        assert unicodedata.normalize("NFC", c) == c and unicodedata.combining(c) == 0 and code not in seconds


def test_the_word_cache_grows_and_starts_over(word):
    """Ids through the cache equal the vocabulary's, past its growth steps and past the
    number of words after which it starts over."""
    query, vocab = word._lm.c_query, word._lm.vocab
    known = ["나는", "버스를", "the", "café", "cat", "<unk>", "<s>", "</s>", "ㅋㅋㅋ"]
    expected = {w: vocab.id(w) for w in known}
    assert all(query.word_id(fresh(w)) == expected[w] for w in known) and expected["나는"] > 2
    for count in range(300_000):
        assert query.word_id(f"w{count}") == 0
        if count % 50_000 == 0:
            assert all(query.word_id(fresh(w)) == expected[w] for w in known)
    assert all(query.word_id(fresh(w)) == expected[w] for w in known)


def test_a_broken_model_raises_rnnkits_error_on_every_path(tmp_path):
    model = NgramModel.train(LINES, 3, unit="word")
    model.save(tmp_path / "broken.model")
    ours = rk.Model(tmp_path / "broken.model")
    ours._lm._prob[1][ours._lm.vocab.id("나는")] = np.nan   # read where no bigram ends in 나는: after nothing
    calls = [lambda: ours.BaseScore(rk.State(), "나는", rk.State()),
             lambda: ours.BaseFullScore(rk.State(), "나는", rk.State()),
             lambda: ours.score("나는 버스를", False), lambda: ours._lm.score("나는 버스를", False)]
    for call in calls:
        with pytest.raises(RnnkitError, match="log10 probability nan") as caught:
            call()
        one_line(caught.value)
