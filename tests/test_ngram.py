"""n-gram models: parity with KenLM, normalisation, ARPA round trips, bad inputs.

The KenLM peer files are small gzipped copies of ../shared/reference/kenlm in
tests/fixtures/kenlm (see README.kenlm.md there), so these tests run without ../shared.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from rnnkit.errors import ArpaError, ConfigError, CorpusError, ModelFileError
from rnnkit.ngram import SMOOTHINGS, NgramModel
from rnnkit.units import read_text_lines
from rnnkit.vocab import BOS_ID, EOS_ID, UNK_ID

KENLM = Path(__file__).parent / "fixtures" / "kenlm"
CORPUS = {"small_ko": ("small_ko.txt", "queries_ko.txt"), "ptb": ("ptb_train.txt", "ptb_queries.txt")}


def fixture_lines(name: str) -> list[str]:
    with gzip.open(KENLM / f"{name}.gz", "rb") as handle:
        return read_text_lines([handle.read()], name)


def fixture_arpa(name: str, tmp_path) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.decompress((KENLM / f"{name}.gz").read_bytes()))
    return path


def fixture_scores(name: str) -> dict:
    return json.loads(gzip.decompress((KENLM / f"{name}.gz").read_bytes()))


def parse_arpa(path) -> tuple[list[str], dict]:
    """(n-grams in file order, {n-gram: (log10 prob, backoff or None)}) of an ARPA file."""
    order, entries = [], {}
    for line in Path(path).read_text(encoding="utf-8").split("\n"):
        fields = line.split("\t")
        if len(fields) >= 2:
            order.append(fields[1])
            entries[fields[1]] = (float(fields[0]), float(fields[2]) if len(fields) == 3 else None)
    return order, entries


@pytest.fixture(scope="module")
def trained():
    """Models trained on the KenLM corpora, shared by the parity tests."""
    cache = {}

    def get(corpus, order, smoothing="kn"):
        key = (corpus, order, smoothing)
        if key not in cache:
            cache[key] = NgramModel.train(fixture_lines(CORPUS[corpus][0]), order, smoothing=smoothing)
        return cache[key]

    return get


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def small_corpus():
    return fixture_lines("small_ko.txt")[:300]


# ---------------------------------------------------------------- KenLM parity

PARITY = [("small_ko", 2), ("small_ko", 3), ("small_ko", 5), ("ptb", 3)]


@pytest.mark.parametrize("corpus,order", PARITY)
def test_kn_arpa_matches_lmplz(corpus, order, trained, tmp_path):
    """Same n-grams in the same order as lmplz, log10 probs and backoffs within 1e-4."""
    model = trained(corpus, order)
    ours = tmp_path / "ours.arpa"
    model.write_arpa(ours)
    ref = fixture_arpa(f"{corpus}.o{order}.arpa", tmp_path)
    our_order, our_values = parse_arpa(ours)
    ref_order, ref_values = parse_arpa(ref)
    assert our_order == ref_order
    for gram, (p, b) in ref_values.items():
        q, c = our_values[gram]
        assert abs(p - q) < 1e-4, gram
        assert (b is None) == (c is None) and (b is None or abs(b - c) < 1e-4), gram
    assert ours.read_text(encoding="utf-8").split("\n")[:3] == ref.read_text(encoding="utf-8").split("\n")[:3]


def test_kn_discounts_match_lmplz_statistics(trained):
    """Discounts equal lmplz's printed statistics; fallback 0.5/1/1.5 only where lmplz needed it."""
    small5 = trained("small_ko", 5).info
    assert small5["discount_fallback"] == [4, 5]
    assert small5["discounts"]["4"] == [0.5, 1.0, 1.5]
    np.testing.assert_allclose(small5["discounts"]["3"], [0.99149, 1.61866, 1.81021], atol=1e-5)
    ptb3 = trained("ptb", 3).info
    assert ptb3["discount_fallback"] == []
    np.testing.assert_allclose(ptb3["discounts"]["1"], [0.477634, 1.24982, 1.93069], atol=1e-5)
    np.testing.assert_allclose(ptb3["discounts"]["3"], [0.903014, 1.34716, 1.41605], atol=1e-5)


def check_scores(model, corpus, ref):
    queries = fixture_lines(CORPUS[corpus][1])
    np.testing.assert_allclose(model.score_many(queries), ref["sentence_log10"], atol=1e-4, rtol=0)
    for i, expected in enumerate(ref["full_scores_first_20"]):
        got = model.full_scores(queries[i])
        assert len(got) == len(expected)
        for (p, length, oov), e in zip(got, expected):
            assert abs(p - e["log10prob"]) < 1e-4
            assert (length, oov) == (e["ngram_length"], e["oov"])
    stats = model.evaluate(queries)
    corpus_ref = ref["corpus"]
    assert stats["predicted"] == corpus_ref["tokens_incl_eos"]
    assert stats["oov"] == corpus_ref["oov"]
    assert abs(stats["log10_total"] - corpus_ref["total_log10"]) < 1e-4 * len(queries)
    assert stats["perplexity"] == pytest.approx(corpus_ref["perplexity_incl_oov"], rel=1e-4)
    assert stats["perplexity_excl_oov"] == pytest.approx(corpus_ref["perplexity_excl_oov"], rel=1e-4)
    per_sentence = [model.perplexity(q) for q in queries[:50]]
    np.testing.assert_allclose(per_sentence, ref["sentence_perplexity"][:50], rtol=1e-4)


@pytest.mark.parametrize("corpus,order", PARITY + [("ptb", 5)])
def test_trained_model_scores_like_kenlm(corpus, order, trained):
    """Sentence scores, full_scores (prob, n-gram length, OOV) and perplexities equal KenLM's."""
    check_scores(trained(corpus, order), corpus, fixture_scores(f"{corpus}.o{order}.scores.json"))


@pytest.mark.parametrize("corpus,order", [("small_ko", 3), ("ptb", 3)])
def test_kenlm_arpa_read_reproduces_kenlm_scores(corpus, order, tmp_path):
    """Reading lmplz's own ARPA file gives KenLM's query scores."""
    model = NgramModel.read_arpa(fixture_arpa(f"{corpus}.o{order}.arpa", tmp_path))
    assert model.order == order
    check_scores(model, corpus, fixture_scores(f"{corpus}.o{order}.scores.json"))


def test_literal_sentence_markers_skipped_unk_counted(tmp_path):
    """Literal <s> and </s> in training text are skipped; a literal <unk> is counted as
    the unknown word (lmplz's defaults), so it gets a real probability and contexts."""
    lines = fixture_lines("ptb_train.txt")[:400]
    rng = np.random.default_rng(7)
    noisy = []
    for line in lines:
        words = line.split()
        for _ in range(2):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(["<s>", "</s>"])))
        noisy.append(" ".join(words))
    a, b = tmp_path / "a.arpa", tmp_path / "b.arpa"
    NgramModel.train(lines, 3).write_arpa(a)
    NgramModel.train(noisy, 3).write_arpa(b)
    assert a.read_bytes() == b.read_bytes()
    with_unk = NgramModel.train([line + " <unk>" for line in lines], 3)
    without = NgramModel.train(lines, 3)
    assert with_unk.full_scores("the <unk>")[1][0] > without.full_scores("the <unk>")[1][0] + 1.0
    assert with_unk.full_scores("the <unk>")[1][2], "<unk> is still reported as OOV"


# ---------------------------------------------------------------- normalisation

def random_histories(model, corpus, rng, count=6):
    """Histories from training sentences (seen contexts) and from random vocabulary words."""
    histories = [[]]
    for _ in range(count):
        tokens = model.tokenizer.split(corpus[int(rng.integers(len(corpus)))])
        cut = int(rng.integers(0, len(tokens) + 1))
        histories.append(tokens[:cut])
    words = model.vocab.tokens[3:]
    histories += [[words[int(i)] for i in rng.integers(len(words), size=int(n))] for n in (1, 2, 4)]
    histories.append(["없는단어", "<unk>"])
    return histories


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_next_distribution_sums_to_one(smoothing, order, small_corpus, rng):
    """Sum over the vocabulary plus </s> of P(w | h) is 1 within 1e-6 (MLE: seen histories only)."""
    model = NgramModel.train(small_corpus, order, smoothing=smoothing, k=0.5)
    for history in random_histories(model, small_corpus, rng):
        p = model.next_distribution(history)
        assert p.shape == (len(model.vocab),) and p[BOS_ID] == 0
        total = p.sum()
        if smoothing == "mle" and not np.isclose(total, 1.0, atol=1e-6):
            assert total == 0 or not model_has_context(model, history, small_corpus)
            continue
        assert abs(total - 1.0) < 1e-6, (history, total)


def model_has_context(model, history, corpus):
    """MLE has a distribution only after histories seen in training: True when the
    history's full context (its last order - 1 units after <s>) occurs in a training line."""
    context = (["<s>"] + list(history))[-(model.order - 1):] if model.order > 1 else []
    needle = "\x00" + "\x00".join(context) + "\x00"
    return any(needle in "\x00" + "\x00".join(["<s>"] + model.tokenizer.split(line)) + "\x00" for line in corpus)


@pytest.mark.parametrize("unit", ["char", "jamo"])
def test_char_and_jamo_models_normalise(unit, small_corpus, rng):
    """Character and jamo unit models (spaces are units) are normalised too."""
    model = NgramModel.train(small_corpus[:100], 4, unit=unit)
    assert " " in model.vocab
    for history in random_histories(model, small_corpus[:100], rng, count=3)[:4]:
        assert abs(model.next_distribution(history).sum() - 1) < 1e-6


def test_pruned_models_normalise(small_corpus, rng):
    """Count cut-offs drop n-grams but keep every smoothing normalised."""
    for smoothing in ("kn", "wb", "addk"):
        full = NgramModel.train(small_corpus, 3, smoothing=smoothing)
        pruned = NgramModel.train(small_corpus, 3, smoothing=smoothing, prune=[0, 1])
        assert pruned.ngram_counts()[2] < full.ngram_counts()[2]
        for history in random_histories(pruned, small_corpus, rng, count=3):
            assert abs(pruned.next_distribution(history).sum() - 1) < 1e-6


def test_distribution_agrees_with_full_scores(trained):
    """next_distribution(h)[w] equals 10^(full_scores) of w after h."""
    model = trained("ptb", 3)
    words = "the company said it would buy".split()
    scores = model.full_scores(" ".join(words))
    for i, word in enumerate(words + ["</s>"]):
        p = model.next_distribution(words[:i])
        assert math.isclose(p[model.vocab.id(word)], 10 ** scores[i][0], rel_tol=1e-5)


def test_file_score_is_sum_of_sentences(trained):
    """score_many equals score per sentence, which equals the sum of its full_scores."""
    model = trained("small_ko", 3)
    queries = fixture_lines("queries_ko.txt")[:40]
    batch = model.score_many(queries)
    for q, s in zip(queries, batch):
        assert model.score(q) == pytest.approx(s, abs=1e-9)
        assert sum(p for p, _, _ in model.full_scores(q)) == pytest.approx(s, abs=1e-9)
    assert model.score("", bos=True, eos=True) == pytest.approx(model.full_scores("")[0][0])
    assert len(model.full_scores("a b", eos=False)) == 2


def test_addk_unigram_is_lidstone(small_corpus):
    """Order-1 add-k is exactly Lidstone: (c + k) / (N + k |V|), |V| without <s>."""
    k = 0.3
    model = NgramModel.train(small_corpus, 1, smoothing="addk", k=k)
    tokens = [t for line in small_corpus for t in line.split()]
    n = len(tokens) + len(small_corpus)
    size = len(model.vocab) - 1
    word = tokens[0]
    expected = (tokens.count(word) + k) / (n + k * size)
    assert 10 ** model.full_scores(word, eos=False)[0][0] == pytest.approx(expected, rel=1e-6)
    assert 10 ** model.score("", bos=True) == pytest.approx((len(small_corpus) + k) / (n + k * size), rel=1e-6)


def test_mle_unseen_is_zero_probability_not_a_crash(small_corpus):
    """MLE gives log10 -inf to unseen events and OOVs, and evaluate counts them."""
    model = NgramModel.train(small_corpus, 2, smoothing="mle")
    assert model.score(small_corpus[0]) > -math.inf
    assert model.score("없는단어") == -math.inf
    stats = model.evaluate(["없는단어", small_corpus[0]])
    assert stats["zero_prob"] >= 1 and stats["perplexity"] == math.inf


def test_large_vocabulary_keys_do_not_overflow(tmp_path):
    """Keys beyond 2**31 (70,000 types): the trained model scores like its own ARPA file."""
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(70_000)]
    lines = [" ".join(words[i: i + 7]) for i in range(0, 70_000, 7)]
    lines += [" ".join(words[i] for i in rng.integers(len(words), size=8)) for _ in range(3000)]
    model = NgramModel.train(lines, 3)
    assert int(model._keys[2].max()) > 2**31
    path = tmp_path / "big.arpa"
    model.write_arpa(path)
    again = NgramModel.read_arpa(path)
    for n in (2, 3):
        np.testing.assert_array_equal(again._keys[n], model._keys[n])
    np.testing.assert_array_equal(again.score_many(lines[:500]), model.score_many(lines[:500]))
    assert model.score(lines[0]) > -20


def test_many_contexts_keys_do_not_overflow():
    """Keys beyond 2**31 from many (n-1)-grams, not a big vocabulary (the char-level case).

    A char model of 100k nsmc lines (V ~ 2,700, 1.25M 4-grams) got worse from order 5 on:
    its 5-gram keys (4-gram index * V) wrapped in int32. Here 20,000 types keep the
    bigram keys below 2**31 while ~155k distinct bigrams push the trigram keys past it.
    Every training trigram must then be found at full length, and the model normalised.
    """
    rng = np.random.default_rng(5)
    sentences = [[f"t{i}" for i in row] for row in rng.integers(20_000, size=(4000, 40))]
    model = NgramModel.train(sentences, 3)
    V = len(model.vocab)
    assert int(model._keys[2].max()) < 2**31 < int(model._keys[3].max())
    for n in (2, 3):
        assert model._keys[n].dtype == np.int64 and np.all(np.diff(model._keys[n]) > 0)
    sample = sentences[::100]
    (logp, match, oov, _, _), = model._token_scores(sample)
    expected = np.concatenate([np.minimum(np.arange(len(t) + 1) + 2, 3) for t in sample])
    np.testing.assert_array_equal(match, expected)  # every seen trigram found, none lost
    assert not oov.any() and np.isfinite(logp).all()
    for tokens in sample[:5]:
        dist = model.next_distribution(tokens[:25])
        assert abs(dist.sum() - 1) < 1e-5 and dist.size == V
        assert math.isclose(math.log10(dist[model.vocab.id(tokens[25])]),
                            model.token_logprobs(tokens)[25], rel_tol=0, abs_tol=1e-5)


def test_high_order_without_limit(small_corpus, rng):
    """Order 9 trains (no compile-time limit) and stays normalised."""
    model = NgramModel.train(small_corpus[:100], 9)
    assert model.order == 9 and len(model.ngram_counts()) == 9
    for history in random_histories(model, small_corpus[:100], rng, count=3):
        assert abs(model.next_distribution(history).sum() - 1) < 1e-6


# ---------------------------------------------------------------- ARPA and model files

@pytest.mark.parametrize("smoothing,unit", [("kn", "word"), ("wb", "word"), ("addk", "word"),
                                            ("mle", "word"), ("kn", "char"), ("kn", "jamo")])
def test_arpa_round_trip_is_byte_identical(smoothing, unit, small_corpus, tmp_path):
    """write -> read -> write gives the same bytes, and the read model scores the same."""
    model = NgramModel.train(small_corpus[:150], 3, smoothing=smoothing, unit=unit)
    first, second = tmp_path / "a.arpa", tmp_path / "b.arpa"
    model.write_arpa(first)
    again = NgramModel.read_arpa(first, unit=unit)
    again.write_arpa(second)
    assert first.read_bytes() == second.read_bytes()
    queries = small_corpus[150:200]
    np.testing.assert_array_equal(model.score_many(queries), again.score_many(queries))


def test_decomposed_text_is_normalised(small_corpus):
    """NFD input (a line of it among NFC lines) trains and scores exactly like its NFC form."""
    import unicodedata
    lines = small_corpus[:100]
    mixed = [unicodedata.normalize("NFD", line) if i % 7 == 3 else line for i, line in enumerate(lines)]
    for unit in ("word", "char"):
        a, b = NgramModel.train(lines, 3, unit=unit), NgramModel.train(mixed, 3, unit=unit)
        assert a.ngram_counts() == b.ngram_counts()
        queries = small_corpus[100:120]
        nfd = [unicodedata.normalize("NFD", q) for q in queries]
        np.testing.assert_array_equal(a.score_many(queries), b.score_many(nfd))
        assert a.evaluate(queries)["perplexity"] == b.evaluate(nfd)["perplexity"]


@pytest.mark.parametrize("unit", ["word", "char", "jamo"])
def test_arpa_unit_is_detected(unit, small_corpus, tmp_path):
    """rnnkit.load on an ARPA file rnnkit wrote from a char or jamo model gets that unit
    back (its space unit is `<sp>`), so it scores sentences like the model that wrote it."""
    model = NgramModel.train(small_corpus[:150], 3, unit=unit)
    path = tmp_path / "m.arpa"
    model.write_arpa(path)
    loaded = rnnkit.load(path)
    assert loaded.unit == unit
    queries = small_corpus[150:200]
    np.testing.assert_array_equal(model.score_many(queries), loaded.score_many(queries))


def test_arpa_with_single_character_words_stays_word(tmp_path):
    """Without the `<sp>` unit a file of one-character words is a word model, as KenLM reads it."""
    path = tmp_path / "w.arpa"
    NgramModel.train(["가 나 다", "나 다"], 2).write_arpa(path)
    assert rnnkit.load(path).unit == "word"
    assert NgramModel.read_arpa(path, unit="char").unit == "char"
    with pytest.raises(ConfigError, match="unit"):
        NgramModel.read_arpa(path, unit="syllable")


def test_kenlm_arpa_round_trip_is_byte_identical(tmp_path):
    """A KenLM ARPA file read and written again is byte-identical (same number formatting)."""
    ref = fixture_arpa("small_ko.o3.arpa", tmp_path)
    out = tmp_path / "out.arpa"
    NgramModel.read_arpa(ref).write_arpa(out)
    assert out.read_bytes() == ref.read_bytes()


def test_model_file_save_load(trained, tmp_path):
    """save/load through rnnkit.modelfile keeps the arrays, vocabulary and scores."""
    model = trained("small_ko", 3)
    path = tmp_path / "kn.model"
    model.save(path)
    loaded = NgramModel.load(path)
    assert loaded.order == 3 and loaded.vocab == model.vocab and loaded.smoothing == "kn"
    queries = fixture_lines("queries_ko.txt")[:30]
    np.testing.assert_array_equal(loaded.score_many(queries), model.score_many(queries))
    assert loaded.info["discounts"] == model.info["discounts"]


def test_srilm_style_arpa(tmp_path):
    """SRILM layout (text before \\data\\, spaces, -99 for <s>, no <unk>) reads and scores."""
    text = (
        "some comment\n\n\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n"
        "-0.30103 </s>\n-99 <s> -0.5\n-0.30103 a -0.2\n-0.60206 b\n\n"
        "\\2-grams:\n-0.1 <s> a\n-0.2 a b\n\n\\end\\\n"
    )
    path = tmp_path / "sri.arpa"
    path.write_text(text, encoding="utf-8")
    model = NgramModel.read_arpa(path)
    assert model.vocab.tokens[:3] == ["<unk>", "<s>", "</s>"] and model.info["notes"]
    scores = model.full_scores("a b")
    assert [round(p, 6) for p, _, _ in scores] == [-0.1, -0.2, round(-0.30103 + 0, 6)]
    assert model.full_scores("zzz")[0] == (pytest.approx(-100.5), 1, True)


MALFORMED = [
    ("no header", "hello\n", "no \\\\data\\\\"),
    ("bad count", "\\data\\\nngram 1=x\n", "line 2"),
    ("count mismatch", "\\data\\\nngram 1=3\n\n\\1-grams:\n-1 <s>\n-1 </s>\n\n\\end\\\n", "line 4: the header says 3"),
    ("bad number", "\\data\\\nngram 1=2\n\n\\1-grams:\n-1 <s>\nabc </s>\n\n\\end\\\n", "line 6"),
    ("fields", "\\data\\\nngram 1=2\n\n\\1-grams:\n-1 <s>\n-1 </s> 0 0\n\n\\end\\\n", "line 6"),
    ("unknown word", "\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-1 <s>\n-1 </s>\n\n\\2-grams:\n-1 <s> x\n\n\\end\\\n", "line 10: word 'x'"),
    ("no end", "\\data\\\nngram 1=2\n\n\\1-grams:\n-1 <s>\n-1 </s>\n", "end"),
    ("wrong section", "\\data\\\nngram 1=2\n\n\\2-grams:\n", "line 4"),
]


@pytest.mark.parametrize("name,text,match", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_arpa_names_the_line(name, text, match, tmp_path):
    """A malformed ARPA file raises ArpaError whose message says where."""
    path = tmp_path / "bad.arpa"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArpaError, match=match):
        NgramModel.read_arpa(path)


def test_arpa_and_model_file_errors(tmp_path):
    """Missing, non-UTF-8 ARPA and a non-model file give clear ModelFileError subclasses."""
    with pytest.raises(ArpaError, match="not found"):
        NgramModel.read_arpa(tmp_path / "missing.arpa")
    bad = tmp_path / "latin1.arpa"
    bad.write_bytes(b"\\data\\\nngram 1=1\n\n\\1-grams:\n-1 caf\xe9\n")
    with pytest.raises(ArpaError, match="line 5"):
        NgramModel.read_arpa(bad)
    with pytest.raises(ModelFileError):
        NgramModel.load(tmp_path / "missing.model")


# ---------------------------------------------------------------- bad training input

def test_bad_training_inputs(tmp_path):
    """Empty corpus and order 0 are refused clearly; bad files raise CorpusError."""
    for empty in ([], [""], ["", "   "], ["</s> <s>"]):
        with pytest.raises(CorpusError, match="no tokens"):
            NgramModel.train(empty, 3)
    for order in (0, -1, 2.5):
        with pytest.raises(ValueError, match="order"):
            NgramModel.train(["a b"], order)
    with pytest.raises(ValueError, match="smoothing"):
        NgramModel.train(["a b"], 2, smoothing="good-turing")
    with pytest.raises(ValueError, match="prune"):
        NgramModel.train(["a b"], 2, prune=[1])
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("안녕\ncaf".encode() + b"\xe9\n")
    with pytest.raises(CorpusError, match="line 2"):
        NgramModel.train_file(latin, 3)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        NgramModel.train_file(empty, 3)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_one_word_corpus(smoothing):
    """A one-word corpus trains (KN falls back to 0.5/1/1.5) and its distributions normalise."""
    model = NgramModel.train(["안녕"], 3, smoothing=smoothing)
    assert model.vocab.tokens == ["<unk>", "<s>", "</s>", "안녕"]
    p = model.next_distribution([])
    assert abs(p.sum() - 1) < 1e-6
    assert p[UNK_ID] > 0 or smoothing == "mle"
    if smoothing == "kn":
        assert model.info["discount_fallback"] == [1, 2, 3]
    assert abs(model.next_distribution(["안녕"]).sum() - 1) < 1e-6
    if smoothing == "mle":
        assert model.next_distribution(["안녕"])[EOS_ID] == 1.0


SHARED_PTB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


@pytest.mark.skipif(not SHARED_PTB.is_dir(), reason="../shared/data/ptb not present")
def test_full_ptb_matches_kenlm():
    """On the full Penn Treebank, KN 3-gram and 5-gram test perplexities equal KenLM's
    (148.28 and 141.19, the literal <unk> counted as the unknown word)."""
    from rnnkit.units import read_lines
    train_lines = read_lines(SHARED_PTB / "ptb.train.txt")
    test_lines = read_lines(SHARED_PTB / "ptb.test.txt")
    for order, expected in ((3, 148.28), (5, 141.19)):
        ppl = NgramModel.train(train_lines, order=order).evaluate(test_lines)["perplexity"]
        assert abs(ppl - expected) < 0.01, (order, ppl)
