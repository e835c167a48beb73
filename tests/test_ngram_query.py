"""The C n-gram queries (csrc/ngram.c) against the NumPy statement of the scoring rule,
and the memory-mapped model file (format 2) against ARPA and format 1.

Every comparison is exact: the C code adds the same float32 and float64 numbers in the
same order as the NumPy code (and, for rnnkit.kenlm, as the word-by-word state machine).
"""

from __future__ import annotations

import json
import mmap
import struct
import zipfile

import numpy as np
import pytest

import rnnkit.kenlm as rk
from rnnkit import modelfile
from rnnkit.errors import ModelFileError
from rnnkit.ngram import NgramModel
from rnnkit.units import Tokenizer

from modelfile_craft import read_members, write_members

WORDS = ["나는", "버스를", "탔다", "학교에", "갔다", "the", "cat", "sat", "on", "mat", "<unk>", "a", "b"]


def corpus(rng, lines: int, vocab: list[str]) -> list[str]:
    return [" ".join(rng.choice(vocab, size=rng.integers(0, 12))) for _ in range(lines)]


def queries(rng, count: int) -> list[str]:
    """Sentences with known words, unknown words, literal specials, empty ones, a NFD one."""
    known = WORDS + ["zzz", "없는말", "<s>", "</s>", "\u1112\u1161\u11ab"]
    out = [" ".join(rng.choice(known, size=rng.integers(0, 15))) for _ in range(count)]
    return out + ["", "  \t ", "나는 버스를 탔다", "a\u3000b c\x1fd"]


@pytest.fixture(scope="module")
def models():
    """Models of every order 1..6 and of order 12, all smoothings, word units; pruned; ARPA-read."""
    rng = np.random.default_rng(11)
    lines = corpus(rng, 300, WORDS[:12])
    built = {}
    for order in (1, 2, 3, 4, 5, 6, 12):
        built[f"kn{order}"] = NgramModel.train(lines, order)
    for smoothing in ("wb", "addk", "mle"):
        built[smoothing] = NgramModel.train(lines, 4, smoothing=smoothing)
    built["pruned"] = NgramModel.train(lines, 4, prune=[0, 1, 2])
    return built


def numpy_scores(model, sentences, bos=True, eos=True):
    """Per-sentence NumPy (log10, length) arrays."""
    token_lists = model.tokenizer.split_lines(sentences)
    logp, match = model._numpy_token_scores(token_lists, bos, eos)
    cut = np.cumsum([len(t) + int(eos) for t in token_lists])[:-1]
    return np.split(logp, cut), np.split(match, cut)


@pytest.mark.parametrize("name", ["kn1", "kn2", "kn3", "kn4", "kn5", "kn6", "kn12", "wb", "addk", "mle", "pruned"])
def test_c_scores_equal_numpy_scores(models, name):
    """Per-token values, n-gram lengths, sentence totals (score's numpy sum, score_many's
    sum in order) bit for bit, with OOVs, both bos and eos settings."""
    model = models[name]
    sentences = queries(np.random.default_rng(hash(name) % 1000), 80)
    for bos in (True, False):
        for eos in (True, False):
            logps, matches = numpy_scores(model, sentences, bos, eos)
            c_logps = model._scores(sentences, bos, eos)
            assert all(np.array_equal(a, b) for a, b in zip(c_logps, logps))
            for sentence, logp, match in zip(sentences[:20], logps, matches):
                full = model.full_scores(sentence, bos, eos)
                assert [f[0] for f in full] == logp.tolist() and [f[1] for f in full] == match.tolist()
                assert model.score(sentence, bos, eos) == float(logp.sum())
            assert model.score_many(sentences, bos, eos).tolist() == [sum(lp.tolist()) for lp in logps]


def test_units_and_pre_split_sentences(models):
    rng = np.random.default_rng(3)
    lines = corpus(rng, 200, WORDS)
    for unit in ("char", "jamo"):
        model = NgramModel.train(lines, 5, unit=unit)
        sentences = queries(rng, 40)
        logps, _ = numpy_scores(model, sentences)
        assert all(np.array_equal(a, b) for a, b in zip(model._scores(sentences, True, True), logps))
        assert [model.score(s) for s in sentences] == [float(lp.sum()) for lp in logps]
    model = models["kn4"]
    units = [["나는", "버스를", "없는 말"], ["a b"], [], ["<unk>"]]   # units taken whole
    logp, _ = model._numpy_token_scores(units)
    assert np.array_equal(np.concatenate(model._scores(units, True, True)), logp)
    assert model.score(units[0]) == float(model._scores([units[0]], True, True)[0].sum())   # the batch path


def test_evaluate_spells_out_exactly_the_oov_units(models):
    """evaluate finds the sentences with OOV units in C's results and spells out theirs
    (a literal <unk> is in the vocabulary: counted as OOV, as KenLM does, but not spelled);
    given the units already split, the same figures."""
    model = models["kn3"]
    sentences = queries(np.random.default_rng(6), 200)
    units = model.tokenizer.split_lines(sentences)
    stats = model.evaluate(sentences)
    assert stats["oov_spelling_log10"] == model.oov_spelling_log10(units) < 0
    assert stats["oov"] == sum(int((model.vocab.encode(u) == 0).sum()) for u in units)
    assert stats == model.evaluate(sentences, units)


def test_long_sentences_take_the_batch_path(models):
    """numpy's pairwise sum beyond 128 values in one call, and beyond NGRAM_MAX_SENTENCE
    units the one-call path hands over to the batch path."""
    model = models["kn4"]
    rng = np.random.default_rng(4)
    for words in (150, 300, 511, 512, 1200):
        sentence = " ".join(rng.choice(WORDS + ["zzz"], size=words))
        logps, _ = numpy_scores(model, [sentence])
        assert model.score(sentence) == float(logps[0].sum())
    chain = word_chain(model, sentence.split())
    assert model.kenlm_score(sentence) == chain_total(chain)


def word_chain(model, words, bos=True):
    """rnnkit.kenlm's BaseFullScore chain through the C state machine."""
    base = model.kenlm_stepper()
    state = 129 if bos else 0   # <s> (id 1) as a unigram, length 1
    out = []
    for word in words + ["</s>"]:
        log10, state, length, oov = base(state, model.vocab.id(word))
        out.append((log10, length, oov))
    return out


def chain_total(chain) -> float:
    total = np.float32(0)
    for log10, _, _ in chain:
        total = total + np.float32(log10)
    return float(total)


@pytest.mark.parametrize("name", ["kn2", "kn3", "kn5", "kn12", "pruned", "mle"])
def test_kenlm_sums_equal_the_state_machine(models, name):
    """kenlm_score / kenlm_full_scores (one C call) equal the BaseScore chain: float32
    values, float32 sums in order, the same lengths and OOV flags."""
    model = models[name]
    for sentence in queries(np.random.default_rng(5), 60):
        chain = word_chain(model, Tokenizer("word").split(sentence))
        assert model.kenlm_full_scores(sentence) == chain
        assert model.kenlm_score(sentence) == chain_total(chain)


def test_trained_extendable_flags_equal_the_computed_ones(models):
    """Training derives KenLM's extendable flags from its counts; a model read from ARPA
    derives them from the keys: the same flags."""
    for name in ("kn3", "kn6", "kn12", "pruned", "wb"):
        model = models[name]
        recomputed = NgramModel.__dict__["_extendable"].func(model)
        assert all(np.array_equal(a, b) for a, b in zip(model._extendable[1:-1], recomputed[1:-1]))


# ---------------------------------------------------------------- the mapped model file

def test_model_file_round_trip_is_mapped_and_scores_as_arpa(models, tmp_path):
    """A saved model loads as views of the mapped file (every array 64-aligned in it)
    and scores exactly as the same model read from its ARPA file, in every path."""
    model = models["kn5"]
    path, arpa = tmp_path / "m.model", tmp_path / "m.arpa"
    model.save(path)
    model.write_arpa(arpa)
    loaded, from_arpa = NgramModel.load(path), NgramModel.read_arpa(arpa)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".npy"):
                data = path.read_bytes()[info.header_offset:info.header_offset + 30]
                name_length, extra_length = struct.unpack("<HH", data[26:30])
                start = info.header_offset + 30 + name_length + extra_length
                assert start % modelfile.ALIGNMENT == 0
    for array in (loaded._keys[3], loaded._prob[2], loaded._tables[4], loaded.vocab.table):
        assert not array.flags.owndata and array.flags.aligned
        base = array
        while not isinstance(base, (mmap.mmap, memoryview)):
            base = base.base
        assert isinstance(base, (mmap.mmap, memoryview))
    sentences = queries(np.random.default_rng(8), 100)
    expected = from_arpa.score_many(sentences)
    assert np.array_equal(loaded.score_many(sentences), expected)
    assert [loaded.score(s) for s in sentences] == [from_arpa.score(s) for s in sentences]
    for sentence in sentences[:30]:
        words = sentence.split()
        assert word_chain(loaded, words) == word_chain(from_arpa, words)
    a, b = rk.Model(path), rk.Model(arpa)
    for sentence in sentences[:30]:
        assert a.score(sentence) == b.score(sentence)
        assert list(a.full_scores(sentence)) == list(b.full_scores(sentence))


def test_format_1_files_still_load(models, tmp_path):
    """rnnkit 0.1's n-gram files (vocabulary in meta.json, no tables) load and score the same."""
    model = models["kn4"]
    kind, meta, arrays = model.file_contents()
    old = {name: array for name, array in arrays.items() if name.split("_")[0] in ("keys", "prob", "bo")}
    path = tmp_path / "old.model"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta.json", json.dumps({"format": "rnnkit-model", "version": 1, "type": kind,
                                                   **meta, "vocab": model.vocab.tokens}))
        for name, array in old.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.save(member, array)
    loaded = NgramModel.load(path)
    sentences = queries(np.random.default_rng(9), 50)
    assert np.array_equal(loaded.score_many(sentences), model.score_many(sentences))
    assert loaded.kenlm_full_scores(sentences[0]) == model.kenlm_full_scores(sentences[0])


def test_truncated_and_future_files_are_one_line_errors(models, tmp_path):
    path = tmp_path / "m.model"
    models["kn3"].save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.model"
    for length in (4, 1000, len(data) // 3, len(data) - 100, len(data) - 1):
        cut.write_bytes(data[:length])
        with pytest.raises(ModelFileError) as caught:
            NgramModel.load(cut)
        assert "\n" not in str(caught.value) and "corrupt or truncated" in str(caught.value)
    meta, members = read_members(path)
    future = tmp_path / "future.model"
    write_members(future, {**meta, "version": 9}, members)
    with pytest.raises(ModelFileError, match=r"format version 9 is newer than this rnnkit understands \(2\); "
                                             r"upgrade rnnkit$"):
        NgramModel.load(future)
