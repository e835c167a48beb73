"""The morph (Kiwi) and spm (SentencePiece) units, and honest bits per character.

Round trips on the bundled nsmc sample, normalised distributions for both families,
self-contained model files, the one-line error without the optional packages, ARPA
files KenLM reads, every CLI command, and the open-vocabulary bits per character.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import unicodedata
from pathlib import Path

import kenlm
import numpy as np
import pytest
from click.testing import CliRunner

import rnnkit
import rnnkit.kenlm as rk
from rnnkit import modelfile
from rnnkit.cli import cli
from rnnkit.errors import ConfigError, ModelFileError, RnnkitError
from rnnkit.mix import MixModel
from rnnkit.ngram import NgramModel
from rnnkit.spelling import CLOSED_BASIS, OPEN_BASIS, UNICODE_SCALARS, SpellingModel
from rnnkit.train import TrainConfig, train
from rnnkit.units import Tokenizer, read_lines

SAMPLE = Path(rnnkit.__file__).parent / "data" / "nsmc_sample.txt"
LINES = read_lines(SAMPLE)
TRAIN, HELD_OUT = LINES[:400], LINES[2900:2960]
TRICKY = ["  앞뒤 공백 ", "두  칸\t탭과\u3000전각 공백", "표시▁문자 ▁ 와 ▁▁", "😀이모지ㅋㅋㅋ  !!", "", " ",
          unicodedata.normalize("NFD", "분해된 한글")]
SEED_PAIRS = [("나는 버스를 탔다", "나는 버스를 태운다"), ("메론을 먹는다", "메롱을 먹는다")]


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def tokenizers():
    return {"morph": Tokenizer("morph"), "spm": Tokenizer.train_spm(TRAIN, 1500)}


@pytest.fixture(scope="module")
def models(tokenizers):
    """A 3-gram and a small RNN per new unit, trained on the same 400 lines."""
    out = {}
    for unit, tokenizer in tokenizers.items():
        out[unit, "ngram"] = NgramModel.train(TRAIN, order=3, unit=tokenizer)
        config = TrainConfig(unit=unit, hidden=16, bptt=8, batch=8, epochs=1, seed=1, threads=1)
        out[unit, "rnn"] = train(TRAIN, HELD_OUT, config, tokenizer=tokenizer)
    return out


# ---------------------------------------------------------------- units

@pytest.mark.parametrize("unit", ["morph", "spm"])
def test_round_trip_gives_the_nfc_text_back(tokenizers, unit):
    """text -> units -> text is the NFC text, spacing included, on the bundled sample
    (every line for spm, every tenth for Kiwi, which is slower) and on awkward spacing."""
    tokenizer = tokenizers[unit]
    lines = LINES if unit == "spm" else LINES[::10]
    for line, units in zip(lines + TRICKY, tokenizer.split_lines(lines + TRICKY)):
        assert tokenizer.join(units) == unicodedata.normalize("NFC", line)
        assert not any(" " in u for u in units)         # the space is a mark, never a character


def test_morph_units_are_surfaces_with_the_space_mark(tokenizers):
    """Kiwi's contractions stay one surface unit (탔 = 타 + 었); a space marks the next
    unit, or stands alone before another space."""
    assert tokenizers["morph"].split("나는 버스를 탔다") == ["나", "는", "▁버스", "를", "▁탔", "다"]
    assert tokenizers["morph"].split("나는  버스를") == ["나", "는", "▁", "▁버스", "를"]
    assert tokenizers["morph"].split("a ▁b\tc") == ["a", "▁▁▁", "b", "\t", "c"]


def test_spm_units_are_the_models_pieces(tokenizers):
    """A SentencePiece model trained by rnnkit keeps the text as it is, so its units are
    its own pieces (characters it left out stand as they are in the text)."""
    tokenizer = tokenizers["spm"]
    pieces = tokenizer.segmenter.processor.encode(HELD_OUT, out_type=str)   # unknown ones as in the text
    assert tokenizer.split_lines(HELD_OUT) == pieces
    assert sum(map(len, pieces)) > sum(map(len, HELD_OUT)) / 4   # pieces, not whole lines


def test_tokenizers_compare_by_their_settings(tokenizers):
    """Equal when they split alike: same unit and same Kiwi model type / SentencePiece model."""
    assert Tokenizer("morph") == tokenizers["morph"]
    assert Tokenizer.train_spm(TRAIN, 1500) == tokenizers["spm"]   # training is deterministic
    assert Tokenizer.train_spm(TRAIN, 800) != tokenizers["spm"]
    assert tokenizers["spm"] != Tokenizer("char")


@pytest.mark.parametrize("module, package, make", [
    ("kiwipiepy", "kiwipiepy", lambda: Tokenizer("morph")),
    ("sentencepiece", "sentencepiece", lambda: Tokenizer.train_spm(TRAIN[:50], 100)),
    ("google.protobuf", "protobuf", lambda: Tokenizer("spm", spm_model=b"x")),
])
def test_missing_optional_package_says_what_to_install(monkeypatch, module, package, make):
    """Without the package: one line naming it and the pip command (API and CLI)."""
    monkeypatch.setitem(sys.modules, module, None)   # `import module` now raises ImportError
    unit = "morph" if module == "kiwipiepy" else "spm"
    message = f"unit {unit!r} needs the {package} package, which is not installed: pip install 'rnnkit[ko]'"
    with pytest.raises(ConfigError) as caught:
        make()
    assert str(caught.value) == message
    result = invoke(["train", SAMPLE, "--type", "ngram", "--unit", unit, "-o", "never.model"])
    assert result.exit_code == 1 and result.output == f"Error: {message}\n"


def test_spm_options_are_checked(tmp_path):
    """--spm-* need --unit spm, one of them at a time; a bad model file is one line."""
    assert "is for --unit spm" in invoke(["train", SAMPLE, "--spm-vocab", 100]).output
    result = invoke(["train", SAMPLE, "--unit", "spm", "--spm-vocab", 100, "--spm-model", SAMPLE])
    assert "not both" in result.output
    result = invoke(["train", SAMPLE, "--unit", "spm", "--spm-model", SAMPLE, "-o", tmp_path / "m"])
    assert result.exit_code == 1 and result.output.startswith(f"Error: {SAMPLE}: not a SentencePiece model (")
    assert result.output.count("\n") == 1
    given = tmp_path / "given.spm"
    given.write_bytes(b"not a model")
    result = invoke(["train", SAMPLE, "--unit", "spm", "--spm-model", given, "-o", given])
    assert result.output == f"Error: -o {given} is the --spm-model file: refusing to overwrite an input\n"
    with pytest.raises(ConfigError, match="needs a SentencePiece model"):
        Tokenizer("spm")


def test_spm_vocabulary_smaller_than_the_characters(tmp_path):
    """SentencePiece keeps every character as a piece: too small a --spm-vocab is named in
    rnnkit's terms (not SentencePiece's vocab_size / character_coverage), in one line."""
    corpus = tmp_path / "hangul.txt"
    corpus.write_text("\n".join(chr(0xAC00 + 7 * i) + chr(0xAC01 + 7 * i) for i in range(300)) + "\n")
    result = invoke(["train", corpus, "--type", "ngram", "--unit", "spm", "--spm-vocab", 100, "-o", tmp_path / "m"])
    error = result.output.splitlines()[-1]   # after the progress line
    assert result.exit_code == 1 and error.startswith("Error: --spm-vocab 100 is too small: SentencePiece keeps")
    assert "(601 of them)" in error


# ---------------------------------------------------------------- models

@pytest.mark.parametrize("unit", ["morph", "spm"])
@pytest.mark.parametrize("family", ["ngram", "rnn"])
def test_next_unit_distribution_sums_to_one(models, unit, family):
    """Σ P(w | h) = 1 over the vocabulary, after <s> and after a prefix with an OOV unit."""
    model = models[unit, family]
    for prefix in ["", "나는 버스를", "완전히뜻밖의새말 영화"]:
        ids = model.unit_ids(prefix).tolist()
        _, logp = model.start(ids)
        assert np.exp(np.asarray(logp, dtype=np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("unit", ["morph", "spm"])
@pytest.mark.parametrize("family", ["ngram", "rnn", "mix"])
def test_model_file_carries_the_tokenizer(models, tmp_path, unit, family):
    """The file records the segmenter settings (and holds the SentencePiece model's
    bytes); loading it back gives identical scores and units."""
    model = (MixModel([models[unit, "ngram"], models[unit, "rnn"]], [0.5, 0.5]) if family == "mix"
             else models[unit, family])
    path = tmp_path / f"{unit}.{family}.model"
    model.save(path)
    _, meta, arrays = modelfile.load(path)
    inner, prefix = (meta["components"][0]["meta"], "c0.") if family == "mix" else (meta, "")
    if unit == "morph":
        assert inner["tokenizer"]["segmenter"] == "kiwi" and inner["tokenizer"]["model_type"]
        assert prefix + "spm_model" not in arrays
    else:
        assert arrays[prefix + "spm_model"].tobytes() == model.tokenizer.segmenter.model
    loaded = rnnkit.load(path)
    assert loaded.tokenizer == model.tokenizer
    sentences = HELD_OUT[:10] + ["나는 버스를 탔다"]
    assert list(loaded.score_many(sentences)) == list(model.score_many(sentences))
    assert loaded.evaluate(HELD_OUT) == model.evaluate(HELD_OUT)


def test_mixing_different_segmentations_is_refused(models, tokenizers):
    other = NgramModel.train(TRAIN, order=2, unit=Tokenizer.train_spm(TRAIN, 800))
    with pytest.raises(RnnkitError, match="cannot mix spm models that split text differently"):
        MixModel([models["spm", "ngram"], other])


@pytest.mark.parametrize("unit", ["morph", "spm"])
def test_arpa_export_is_read_by_kenlm(tokenizers, tmp_path, unit):
    """KenLM reads the exported ARPA file and scores the units (joined by spaces) exactly
    as rnnkit scores the text; a whitespace unit (a tab) is written escaped, <U+0009>."""
    tab_line = "탭이\t있는 줄"
    model = NgramModel.train(TRAIN + [tab_line], order=3, unit=tokenizers[unit])
    path = tmp_path / f"{unit}.arpa"
    model.write_arpa(path)
    peer = kenlm.Model(str(path))
    for sentence in HELD_OUT[:20] + ["나는 버스를 탔다", tab_line]:
        words = " ".join("<U+0009>" if u == "\t" else u for u in model.units(sentence))
        assert peer.score(words, bos=True, eos=True) == pytest.approx(model.score(sentence), abs=2e-4)
    assert "\t<U+0009>\t" in path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- honest bits per character

@pytest.mark.parametrize("unit", ["morph", "spm"])
def test_ngram_scores_segmented_units_exactly(models, tmp_path, unit):
    """C splits only char, word and jamo units: morph and spm text is split by the
    Tokenizer and C scores the ids. The NumPy rule's numbers for every sentence, KenLM's
    state machine word by word, and evaluate spells out exactly the text's OOV units."""
    model = models[unit, "ngram"]
    lines = HELD_OUT + TRICKY
    units = model.tokenizer.split_lines(lines)
    logp, _ = model._numpy_token_scores(units)
    per_line = np.split(logp, np.cumsum([len(u) + 1 for u in units])[:-1])
    assert np.array_equal(np.concatenate(model._scores(lines, True, True)), logp)
    assert [model.score(line) for line in lines] == [float(lp.sum()) for lp in per_line]
    assert model.score_many(lines).tolist() == [sum(lp.tolist()) for lp in per_line]
    path = tmp_path / "m.model"
    model.save(path)
    kenlm_model = rk.Model(path)
    for line, line_units in zip(lines[:20], units):
        state, out, total = rk.State(), rk.State(), np.float32(0)
        kenlm_model.BeginSentenceWrite(state)
        for word in line_units + ["</s>"]:
            total += np.float32(kenlm_model.BaseScore(state, word, out))
            state, out = out, state
        assert kenlm_model.score(line) == float(total)
    stats = model.evaluate(lines)
    assert stats == model.evaluate(lines, units)
    assert stats["oov_spelling_log10"] == model.oov_spelling_log10(units) < 0
    assert stats["oov"] == sum(int((model.vocab.encode(u) == 0).sum()) for u in units)


def test_spelling_model_is_a_distribution_over_strings():
    """P_spell sums to 1 over all non-empty strings: at each position the seen characters,
    the unseen ones (the escape's mass spread evenly) and END share probability 1 (END
    excluded at the first), so strings of length n hold (1 - P(END))^(n-1) P(END)."""
    spelling = SpellingModel.train([["ab", "b", "abc"]])
    seen = spelling.chars
    end = 10 ** spelling._end
    unseen_one = 10 ** spelling._unseen                      # one particular unseen character
    unseen = unseen_one * (UNICODE_SCALARS - len(seen))       # all of them together
    step = sum(10 ** spelling._char[c] for c in seen)
    assert step + unseen + end == pytest.approx(1.0, abs=1e-12)
    first = step / (1 - end)
    assert first + unseen / (1 - end) == pytest.approx(1.0, abs=1e-12)
    for n in range(1, 5):   # strings over the seen characters, by length
        by_length = sum(10 ** spelling.log10("".join(s)) for s in itertools.product(seen, repeat=n))
        assert by_length == pytest.approx(first * step ** (n - 1) * end, rel=1e-9)
    assert 10 ** spelling.log10("z") == pytest.approx(unseen_one / (1 - end) * end, rel=1e-9)
    assert -math.log2(unseen_one) > 20.08                    # about 20 bits per unseen character, and more


def test_an_oov_word_costs_more_than_p_unk(tmp_path):
    """The open basis charges P(<unk>) times the spelling; longer unseen words cost more;
    perplexity stays KenLM's (P(<unk>) only)."""
    model = NgramModel.train(TRAIN, order=3, unit="word")
    short, long = "나는 꽑 봤다", "나는 꽑꽑꽑꽑꽑꽑 봤다"
    short_stats, long_stats = model.evaluate([short]), model.evaluate([long])
    assert short_stats["log10_total"] == pytest.approx(long_stats["log10_total"])   # the same P(<unk>)
    assert long_stats["oov_spelling_log10"] < short_stats["oov_spelling_log10"] < 0
    assert short_stats["bits_per_char"] > short_stats["bits_per_char_closed"]
    assert short_stats["bits_per_char_basis"] == OPEN_BASIS
    assert model.spelling.log10("꽑") < math.log10(1.0 / UNICODE_SCALARS)   # unseen: over 20 bits


def test_word_model_no_longer_beats_char_model_on_bits_per_char():
    """On a small case (400 lines) the word 3-gram's closed figure looked better than the
    char 3-gram's; spelled out, it is not."""
    word = NgramModel.train(TRAIN, order=3, unit="word").evaluate(HELD_OUT)
    char = NgramModel.train(TRAIN, order=3, unit="char").evaluate(HELD_OUT)
    assert word["bits_per_char_closed"] < char["bits_per_char_closed"]     # the old, flattering figure
    assert word["bits_per_char"] > char["bits_per_char"]
    assert word["perplexity"] == pytest.approx(10 ** (-word["log10_total"] / (word["tokens"] + word["sentences"])))


def test_closed_basis_for_arpa_files_and_old_model_files(models, tmp_path):
    """An ARPA file and a model file written before spelling models report the closed
    basis, labelled; a mixture with such a component does too."""
    ngram = NgramModel.train(TRAIN, order=3, unit="char")
    arpa = tmp_path / "c.arpa"
    ngram.write_arpa(arpa)
    from_arpa = rnnkit.load(arpa)
    stats = from_arpa.evaluate(HELD_OUT)
    assert stats["bits_per_char_basis"] == CLOSED_BASIS and "oov_spelling_log10" not in stats
    kind, meta, arrays = ngram.file_contents()
    del meta["spelling"]
    old = tmp_path / "old.model"
    modelfile.save(old, kind, meta, arrays)
    assert rnnkit.load(old).evaluate(HELD_OUT)["bits_per_char"] == pytest.approx(stats["bits_per_char"])
    assert MixModel([ngram, from_arpa]).evaluate(HELD_OUT)["bits_per_char_basis"] == CLOSED_BASIS


def test_mixture_of_a_model_with_itself_keeps_its_open_figure(models):
    """Each component spells its own OOVs, so mixing a model with itself changes nothing."""
    model = models["morph", "ngram"]
    alone, mixed = model.evaluate(HELD_OUT), MixModel([model, model], [0.3, 0.7]).evaluate(HELD_OUT)
    assert mixed["bits_per_char_basis"] == OPEN_BASIS
    assert mixed["bits_per_char"] == pytest.approx(alone["bits_per_char"], rel=1e-9)
    assert mixed["perplexity"] == pytest.approx(alone["perplexity"], rel=1e-9)


def test_spelling_field_is_checked(tmp_path):
    """A spelling model whose counts do not match its characters is refused in one line."""
    kind, meta, arrays = NgramModel.train(TRAIN[:20], order=2, unit="char").file_contents()
    meta["spelling"]["counts"] = meta["spelling"]["counts"][:-1]
    path = tmp_path / "bad.model"
    modelfile.save(path, kind, meta, arrays)
    with pytest.raises(ModelFileError, match=r"field 'spelling.counts' must hold one count per character"):
        rnnkit.load(path)


@pytest.mark.parametrize("edit, message", [
    (lambda meta, arrays: arrays.pop("spm_model"), "array 'spm_model' is missing"),
    (lambda meta, arrays: meta.pop("tokenizer"), "field 'tokenizer' is missing (unit 'spm' records its segmenter)"),
    (lambda meta, arrays: meta["tokenizer"].update(segmenter="kiwi"),
     "field 'tokenizer.segmenter' must be 'sentencepiece' for unit 'spm', got 'kiwi'"),
    (lambda meta, arrays: arrays.update(spm_model=np.zeros(0, np.uint8)), "array 'spm_model' is empty"),
    (lambda meta, arrays: arrays.update(spm_model=np.arange(9, dtype=np.uint8)), "not a SentencePiece model"),
    (lambda meta, arrays: meta.update(unit="char"), "unexpected field 'tokenizer' (unit 'char' has no settings)"),
    (lambda meta, arrays: arrays.update(prob_1=arrays["prob_1"].view(np.uint8)), "array 'prob_1' must be float32"),
])
def test_tokenizer_fields_are_checked(models, tmp_path, edit, message):
    kind, meta, arrays = models["spm", "ngram"].file_contents()
    meta, arrays = json.loads(json.dumps(meta)), dict(arrays)
    edit(meta, arrays)
    path = tmp_path / "bad.model"
    modelfile.save(path, kind, meta, arrays)
    with pytest.raises(ModelFileError) as caught:
        rnnkit.load(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_kiwi_model_type_is_one_line(models, tmp_path):
    """A morph model file naming a Kiwi model this kiwipiepy lacks loads, and says so in
    one line when it first has to split text."""
    kind, meta, arrays = models["morph", "ngram"].file_contents()
    meta["tokenizer"]["model_type"] = "no-such-model"
    path = tmp_path / "odd.model"
    modelfile.save(path, kind, meta, arrays)
    model = rnnkit.load(path)
    with pytest.raises(ConfigError, match=r"^kiwipiepy [0-9.]+ cannot load its 'no-such-model' model: ") as caught:
        model.score("나는 버스를 탔다")
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def cli_models(tmp_path_factory):
    """Files trained by the CLI on 400 lines: morph n-gram and RNN, spm n-gram (trained
    SentencePiece model) and spm RNN (that model given back with --spm-model)."""
    folder = tmp_path_factory.mktemp("ko")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(TRAIN) + "\n", encoding="utf-8")
    (folder / "held_out.txt").write_text("\n".join(HELD_OUT) + "\n", encoding="utf-8")
    rnn = ["--epochs", 1, "--hidden", 16, "--bptt", 8, "--threads", 1]
    runs = {
        "morph.ngram": ["--type", "ngram", "--unit", "morph", "--order", 3, "--arpa", folder / "morph.arpa"],
        "morph.rnn": ["--unit", "morph", *rnn],
        "spm.ngram": ["--type", "ngram", "--unit", "spm", "--spm-vocab", 1000, "--order", 3],
    }
    for name, options in runs.items():
        result = invoke(["train", corpus, "-o", folder / f"{name}.model", *options])
        assert result.exit_code == 0, result.output
    spm_bytes = modelfile.load(folder / "spm.ngram.model")[2]["spm_model"].tobytes()
    (folder / "own.spm").write_bytes(spm_bytes)
    result = invoke(["train", corpus, "-o", folder / "spm.rnn.model", "--unit", "spm", "--spm-model",
                     folder / "own.spm", *rnn])
    assert result.exit_code == 0, result.output
    return folder


def test_cli_spm_model_option_stores_the_given_model(cli_models):
    ngram, rnn = (rnnkit.load(cli_models / f"spm.{f}.model") for f in ("ngram", "rnn"))
    assert rnn.tokenizer == ngram.tokenizer
    assert rnn.tokenizer.to_meta()["tokenizer"]["source"] == "own.spm"
    info = json.loads(invoke(["info", "-m", cli_models / "spm.rnn.model", "--json"]).output)
    assert info["unit"] == "spm" and info["tokenizer"]["pieces"] > 100 and info["spelling"]["characters"] > 100


@pytest.mark.parametrize("name", ["morph.ngram", "morph.rnn", "spm.ngram", "spm.rnn"])
def test_cli_commands_work_with_the_new_units(cli_models, name, tmp_path):
    """score (--per-token shows the units), eval (says its basis), rank, sample, export."""
    model = cli_models / f"{name}.model"
    result = invoke(["score", "-m", model, "--per-token", "나는 버스를 탔다"])
    assert result.exit_code == 0, result.output
    shown = [line.split()[1] for line in result.output.splitlines()[1:]]
    assert shown[-1] == "</s>" and "".join(shown[:-1]).replace("▁", " ") == "나는 버스를 탔다"
    result = invoke(["eval", "-m", model, cli_models / "held_out.txt"])
    assert result.output.splitlines()[-1] == f"bits/char on  {OPEN_BASIS}"
    result = invoke(["rank", "-m", model, "--json", "--context", "선생님이 교실로 부리나케", "달려갔다", "잘려갔다"])
    rows = json.loads(result.output)
    loaded = rnnkit.load(model)
    for row in rows:   # the continuation is exactly the candidate's units
        units = loaded.units(row["sentence"])
        n = loaded.tokenizer.context_length(units, "선생님이 교실로 부리나케")
        assert loaded.tokenizer.join(units[:n]) == "선생님이 교실로 부리나케"
        assert row["continuation_log10"] == pytest.approx(float(loaded.token_logprobs(row["sentence"])[n:].sum()))
    result = invoke(["sample", "-m", model, "-n", 3, "--seed", 1, "--prefix", "오늘은 ", "--json"])
    samples = json.loads(result.output)
    assert len(samples) == 3 and all(s.startswith("오늘은 ") and "▁" not in s for s in samples)
    result = invoke(["export", "-m", model, "-o", tmp_path / "copy.model"])
    assert result.exit_code == 0, result.output
    assert rnnkit.load(tmp_path / "copy.model").score("나는 버스를 탔다") == loaded.score("나는 버스를 탔다")


def test_cli_mix_and_arpa_of_morph_models(cli_models, tmp_path):
    """A morph n-gram and RNN mix (open basis); the ARPA written by train --arpa is
    KenLM's to read, and loads in rnnkit as a word model over the units (closed basis)."""
    ngram, rnn = cli_models / "morph.ngram.model", cli_models / "morph.rnn.model"
    mixed = tmp_path / "mixed.model"
    result = invoke(["mix", "-m", ngram, "-m", rnn, "--tune", cli_models / "held_out.txt", "-o", mixed])
    assert result.exit_code == 0, result.output
    stats = json.loads(invoke(["eval", "-m", mixed, "--json", cli_models / "held_out.txt"]).output)
    assert stats["bits_per_char_basis"] == OPEN_BASIS
    arpa = rnnkit.load(cli_models / "morph.arpa")
    model = rnnkit.load(ngram)
    units = " ".join(model.units("나는 버스를 탔다"))
    assert arpa.unit == "word" and arpa.score(units) == pytest.approx(model.score("나는 버스를 탔다"), abs=1e-4)
    assert arpa.evaluate(HELD_OUT)["bits_per_char_basis"] == CLOSED_BASIS
