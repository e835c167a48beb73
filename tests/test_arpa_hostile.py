"""Hostile ARPA files and n-gram model files: every one ends in a one-line rnnkit error or
in a model whose scores are log10 probabilities (finite or -inf, never above 0)."""

from __future__ import annotations

import gzip
import io
import random
import re
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnnkit import modelfile
from rnnkit.arpa import MAX_LINE, write_arpa
from rnnkit.cli import cli
from rnnkit.errors import RnnkitError, ArpaError, ConfigError, ModelFileError
from rnnkit.ngram import MAX_ORDER, NgramModel

KENLM = Path(__file__).parent / "fixtures" / "kenlm"

# a KenLM-style 3-gram written by hand: tabs, backoffs on every lower-order line
TINY = """\\data\\
ngram 1=6
ngram 2=5
ngram 3=2

\\1-grams:
-1.2\t<unk>\t0
-99\t<s>\t-0.4
-0.7\t</s>\t0
-0.8\ta\t-0.3
-0.9\tb\t-0.2
-1.1\tc\t-0.1

\\2-grams:
-0.3\t<s> a\t-0.1
-0.4\ta b\t-0.2
-0.5\tb c\t0
-0.6\tc </s>\t0
-0.2\tb </s>\t0

\\3-grams:
-0.1\t<s> a b
-0.15\ta b c

\\end\\
"""
SENTENCES = ["a b c", "b c a b", "x y", "", "영화 정말 재미있다", "a a a a a a a a"]


def write(path: Path, text: str, compress: bool = False) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    return path


def assert_one_line(exc: Exception) -> None:
    message = str(exc)
    assert message and "\n" not in message and "Traceback" not in message, message


def assert_probabilities(scores) -> None:
    scores = np.asarray(scores, dtype=np.float64)
    assert np.all(scores <= 0), scores  # False for NaN and +inf


# ---------------------------------------------------------------- 1. the order limit

def test_order_limit_everywhere(tmp_path):
    """Orders above MAX_ORDER fail fast with one line (training, ARPA header, model file, CLI);
    MAX_ORDER itself trains, saves, loads and scores (int8 match lengths overflowed at 128)."""

    def unreadable():
        raise AssertionError("the order must be checked before the corpus is read")
        yield  # a generator

    for order in (MAX_ORDER + 1, 129, 10**6):
        with pytest.raises(ConfigError, match=f"from 1 to {MAX_ORDER}"):
            NgramModel.train(unreadable(), order)
    top = NgramModel.train(["a b c d", "b c"], MAX_ORDER)
    path = tmp_path / "top.model"
    top.save(path)
    assert_probabilities(NgramModel.load(path).score_many(SENTENCES))
    header = "\\data\\\n" + "".join(f"ngram {n}=1\n" for n in range(1, 130))
    with pytest.raises(ArpaError, match=f"line {MAX_ORDER + 2}: order {MAX_ORDER + 1} is outside 1..{MAX_ORDER}"):
        NgramModel.read_arpa(write(tmp_path / "o129.arpa", header))
    kind, meta, arrays = top.file_contents()
    modelfile.save(path, kind, {**meta, "order": 129}, arrays)
    with pytest.raises(ModelFileError, match="field 'order' must be an integer in 1..100, got 129"):
        NgramModel.load(path)
    corpus = write(tmp_path / "c.txt", "a b c\n")
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["train", str(corpus), "--type", "ngram", "--order", "1000000",
                                      "-o", str(tmp_path / "m.model")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == f"Error: order must be an integer from 1 to {MAX_ORDER}; got 1000000"
    assert time.perf_counter() - started < 5 and not (tmp_path / "m.model").exists()


# ---------------------------------------------------------------- 2. numbers

NOT_A_NUMBER = "{!r} is not a number (a log10 probability is decimal, scientific or -inf)"
OVERFLOW = "{} is outside the float32 range (magnitude up to 3.4e38)"
ABOVE_ONE = "log10 probability {} is above 0, a probability above 1"


@pytest.mark.parametrize("value, problem", [
    ("nan", NOT_A_NUMBER), ("-nan", NOT_A_NUMBER), ("inf", NOT_A_NUMBER), ("-Infinity", NOT_A_NUMBER),
    ("1_000", NOT_A_NUMBER), ("-१", NOT_A_NUMBER), ("0x1p-3", NOT_A_NUMBER), ("1e999", OVERFLOW),
    ("-1e999", OVERFLOW), ("-3.5e38", OVERFLOW), ("0.5", ABOVE_ONE), ("+1e-3", ABOVE_ONE),
])
def test_arpa_numbers_are_checked(value, problem, tmp_path):
    """A probability that is not a decimal/scientific number <= 0 or -inf is refused with its line."""
    text = TINY.replace("-0.9\tb\t-0.2", f"{value}\tb\t-0.2")
    with pytest.raises(ArpaError, match=re.escape(f"p.arpa: line 11: {problem.format(value)}")) as caught:
        NgramModel.read_arpa(write(tmp_path / "p.arpa", text))
    assert_one_line(caught.value)


@pytest.mark.parametrize("value", ["nan", "inf", "+inf", "1e999", "1_000", "९"])
def test_arpa_backoffs_are_checked(value, tmp_path):
    """Backoffs follow the same grammar (a bad one is named with its line)."""
    text = TINY.replace("-0.3\t<s> a\t-0.1", f"-0.3\t<s> a\t{value}")
    with pytest.raises(ArpaError, match="line 15: .*(not a number|outside the float32 range)"):
        NgramModel.read_arpa(write(tmp_path / "b.arpa", text))


def test_arpa_number_forms_that_load(tmp_path):
    """Ordinary forms load, -inf is log10(0) for probabilities and backoffs, and a positive
    finite backoff stays legal (SRILM writes backoff weights above 1)."""
    text = (TINY.replace("-0.8\ta\t-0.3", "-.8\ta\t0.25").replace("-0.9\tb\t-0.2", "-9E-1\tb\t-inf")
            .replace("-1.1\tc\t-0.1", "-inf\tc\t+1e-2").replace("-0.7\t</s>\t0", "-7.0e-01\t</s>\t-0"))
    model = NgramModel.read_arpa(write(tmp_path / "ok.arpa", text))
    a, b, c = (model.vocab.id(w) for w in "abc")
    assert model._prob[1][a] == np.float32(-0.8) and model._bo[1][a] == np.float32(0.25)
    assert model._bo[1][b] == -np.inf and model._prob[1][c] == -np.inf
    assert model.full_scores("c")[0][0] == -np.inf
    assert_probabilities(model.score_many(SENTENCES))


def test_unnormalised_backoff_is_refused_when_scoring(tmp_path):
    """A positive backoff that makes P > 1 is reported, never returned as a score."""
    text = TINY.replace("-1.1\tc\t-0.1", "-1.1\tc\t2")
    model = NgramModel.read_arpa(write(tmp_path / "high.arpa", text))
    assert model.score("a b") < 0  # paths that do not back off through c are fine
    problem = "log10 probability 1.2 \\(a probability above 1, or NaN\\): its file is corrupt or not normalised"
    with pytest.raises(RnnkitError, match=problem) as caught:
        model.score("c a")  # P(a | c) = 10^(-0.8 + 2)
    assert_one_line(caught.value)


def test_backoff_ranges_do_not_cancel(tmp_path):
    """A huge backoff on a shorter context no longer wipes out the backoffs summed after it."""
    text = """\\data\\\nngram 1=4\nngram 2=3\nngram 3=1\n\n\\1-grams:\n-1\t<s>\t0\n-1\t</s>\t0\n-1\ta\t0
-1\tb\t1e30\n\n\\2-grams:\n-1\t<s> a\t0\n-1\ta b\t-1\n-1\tb </s>\t0\n\n\\3-grams:\n-1\t<s> a b\n\n\\end\\\n"""
    model = NgramModel.read_arpa(write(tmp_path / "cancel.arpa", text))
    assert model.full_scores("a b")[-1] == (-2.0, 2, False)  # P(</s> | b) + bo(a b)


# ---------------------------------------------------------------- 3. bombs

def gzip_bomb(path: Path, head: bytes, unit: bytes, members: int) -> Path:
    """head + members MiB of `unit` repeats: one compressed MiB, repeated as gzip members."""
    member = gzip.compress(unit * ((1 << 20) // len(unit)), compresslevel=9)
    path.write_bytes(gzip.compress(head) + member * members)
    return path


HEADER_1 = b"\\data\\\nngram 1=3\n\n\\1-grams:\n-1 <s>\n-1 </s>\n"


@pytest.mark.parametrize("head, unit, problem", [
    (b"", b"\n", "line 10001: more than 10,000 lines before \\\\data\\\\, in the header or between sections"),
    (b"", b"# comment\n", "line 10001: more than 10,000 lines"),
    (b"\\data\\\nngram 1=3\n", b"\n", "line 10001: more than 10,000 lines"),
    (HEADER_1, b"-1 a\n", "line 8: the \\\\1-grams: section has more lines than the 3 the header says"),
    (HEADER_1 + b"-1 ", b"a", f"line 7 is longer than {MAX_LINE:,} characters"),
])
def test_gzip_bombs_fail_in_bounded_memory(head, unit, problem, tmp_path):
    """1 GiB of inflated text in a ~1 MB .arpa.gz: refused after a few MiB, not inflated whole."""
    path = gzip_bomb(tmp_path / "bomb.arpa.gz", head, unit, 1024)
    assert path.stat().st_size < 2_500_000
    tracemalloc.start()
    try:
        with pytest.raises(ArpaError, match=problem) as caught:
            NgramModel.read_arpa(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, peak
    assert_one_line(caught.value)


def test_plain_files_have_the_same_bounds(tmp_path):
    """A plain file with a line beyond MAX_LINE or endless blank lines fails the same way."""
    long_line = tmp_path / "long.arpa"
    long_line.write_bytes(HEADER_1 + b"-1 " + b"a" * (MAX_LINE + 1) + b"\n\n\\end\\\n")
    with pytest.raises(ArpaError, match=f"line 7 is longer than {MAX_LINE:,} characters"):
        NgramModel.read_arpa(long_line)
    blanks = tmp_path / "blank.arpa"
    blanks.write_bytes(HEADER_1 + b"-1 a\n" + b"\n" * 20_000 + b"\\end\\\n")
    with pytest.raises(ArpaError, match="more than 10,000 lines"):
        NgramModel.read_arpa(blanks)


@pytest.mark.parametrize("header, problem", [
    ("ngram 1=1000000\nngram 2=1000000000000\n", "declares 1,000,001,000,000 n-grams, which need at least"),
    ("ngram 1=4000000000\nngram 2=1\nngram 3=1\n",
     "4,000,000,001 words times 4,000,000,001 words are too many for 64-bit 2-gram keys"),
    ("ngram 1=1234567890123456789\n", "count 1234567890123456789 is too large"),
    ("ngram 1=3\nngram 2=17\n", "the header's 17 2-grams are more than its 4 words times 4 words can make"),
    ("ngram 1=3\nngram 1=3\n", "line 3: ngram 1 is listed twice"),
    ("ngram 1=3\nngram 3=1\n", "must list ngram 1..N counts; got \\[1, 3\\]"),
    ("ngram 0=3\n", "order 0 is outside"),
    ("ngram १=3\n", "expected 'ngram N=count'"),
])
def test_headers_are_checked_before_the_body(header, problem, tmp_path):
    """Impossible counts are refused from the header alone, with a figure, never a MemoryError."""
    path = write(tmp_path / "h.arpa", "\\data\\\n" + header + "\n\\1-grams:\n")
    with pytest.raises(ArpaError, match=problem) as caught:
        NgramModel.read_arpa(path)
    assert_one_line(caught.value)


# ---------------------------------------------------------------- 4. model-file arrays

def corrupt(arrays: dict, name: str, how: str) -> dict:
    arrays = dict(arrays)
    a = arrays[name].copy()
    if how == "swap":
        a[[0, 1]] = a[[1, 0]]
    elif how == "negative":
        a[0] = -1
    elif how == "beyond":
        a[-1] = np.iinfo(np.int64).max
    elif how in ("nan", "inf", "positive"):
        a[len(a) // 2] = {"nan": np.nan, "inf": np.inf, "positive": 0.5}[how]
    elif how == "float64":
        a = a.astype(np.float64)
    elif how == "short":
        a = a[:-1]
    elif how == "matrix":
        a = a.reshape(1, -1)
    elif how == "missing":
        del arrays[name]
        return arrays
    arrays[name] = a
    return arrays


@pytest.mark.parametrize("name, how, problem", [
    ("keys_2", "swap", "'keys_2' must hold increasing n-gram keys"),
    ("keys_3", "negative", "'keys_3' must hold increasing n-gram keys"),
    ("keys_3", "beyond", "'keys_3' must hold increasing n-gram keys in 0..\\d+"),
    ("keys_2", "float64", "'keys_2' has dtype <f8; rnnkit stores only <f4, <i8, |u1"),
    ("prob_1", "nan", "'prob_1' must hold log10 probabilities \\(<= 0\\), found nan"),
    ("prob_3", "inf", "'prob_3' must hold log10 probabilities \\(<= 0\\), found inf"),
    ("prob_2", "positive", "'prob_2' must hold log10 probabilities \\(<= 0\\), found"),
    ("bo_1", "nan", "'bo_1' must hold log10 backoff weights \\(not NaN or \\+inf\\), found nan"),
    ("bo_2", "inf", "'bo_2' must hold log10 backoff weights \\(not NaN or \\+inf\\), found inf"),
    ("bo_2", "short", "'bo_2' must be float32 of shape \\(\\d+,\\), got float32 of shape \\(\\d+,\\)"),
    ("prob_1", "matrix", "'prob_1' must be float32 of shape \\(\\d+,\\), got float32 of shape \\(1, \\d+\\)"),
    ("keys_3", "missing", "array 'keys_3' is missing"),
])
def test_corrupt_ngram_arrays_are_refused(name, how, problem, tmp_path):
    """Every corrupted array of an n-gram model file is named in a one-line ModelFileError."""
    kind, meta, arrays = NgramModel.train(["a b c a b", "b c d", "c a b d"], 3).file_contents()
    path = tmp_path / "bad.model"
    modelfile.save(path, kind, meta, corrupt(arrays, name, how))
    with pytest.raises(ModelFileError, match=f"bad.model: .*{problem}") as caught:
        NgramModel.load(path)
    assert_one_line(caught.value)


def test_model_file_values_that_load(tmp_path):
    """-inf probabilities and backoffs (mle) and positive backoffs are legal in a model file."""
    model = NgramModel.train(["a b c a b", "b c d"], 3, smoothing="mle")
    kind, meta, arrays = model.file_contents()
    arrays = {**arrays, "bo_1": arrays["bo_1"].copy()}
    arrays["bo_1"][3] = 0.01
    path = tmp_path / "mle.model"
    modelfile.save(path, kind, meta, arrays)
    loaded = NgramModel.load(path)
    assert np.isneginf(loaded._prob[1][0]) and np.isneginf(loaded._bo[2]).any() and loaded._bo[1][3] == np.float32(0.01)
    assert np.isneginf(loaded.score("d a"))
    assert_probabilities(loaded.score_many(SENTENCES))


# ---------------------------------------------------------------- 5. everything else

STRUCTURE = [
    ("empty file", "", "no \\\\data\\\\ header"),
    ("header only", "\\data\\\n", "must list ngram 1..N counts; got \\[\\]"),
    ("zero unigrams", "\\data\\\nngram 1=0\n\n\\1-grams:\n\n\\end\\\n", "the 1-grams have no <s>"),
    ("no <s>", "\\data\\\nngram 1=2\n\n\\1-grams:\n-1 </s>\n-1 a\n\n\\end\\\n", "the 1-grams have no <s>"),
    ("no \\end\\", TINY.replace("\\end\\\n", ""), "line 24: expected \\\\end\\\\, got the end of the file"),
    ("ends in a section", TINY[:TINY.index("-0.5\tb c")],
     "line 14: the header says 5 2-grams but the file ends after 2"),
    ("blank line inside", TINY.replace("-0.4\ta b\t-0.2\n", "\n-0.4\ta b\t-0.2\n"),
     "line 14: the header says 5 2-grams but the section has 1"),
    ("missing section", TINY.replace("\\3-grams:", "\\4-grams:"),
     "line 21: expected '\\\\3-grams:', got '\\\\\\\\4-grams:'"),
    ("top order backoff", TINY.replace("-0.1\t<s> a b", "-0.1\t<s> a b\t0"), "line 22: a 3-gram line needs 4 fields"),
    ("unknown word", TINY.replace("<s> a b", "<s> a zz"), "line 22: word 'zz' is not among the 1-grams"),
    ("not suffix-closed", TINY.replace("a b c\n", "a c c\n"), "line 23: the 3-gram 'a c c' has no lower-order entry"),
    ("duplicate 2-gram", TINY.replace("-0.2\tb </s>", "-0.2\ta b"), "line 19: duplicate 2-gram \\(also on line 16\\)"),
    ("duplicate unigram", TINY.replace("-1.1\tc\t", "-1.1\ta\t"), "line 12: duplicate unigram 'a'"),
    ("ideographic space", TINY.replace("\tc\t", "\tc\u3000d\t"), "line 12: a 1-gram line needs 2 or 3 fields"),
    ("not UTF-8", TINY.replace("-0.8\ta", "-0.8\t\udce9a"), "line 10: not valid UTF-8 \\(byte 6 of the line\\)"),
]


@pytest.mark.parametrize("name, text, problem", STRUCTURE, ids=[s[0] for s in STRUCTURE])
def test_malformed_structure(name, text, problem, tmp_path):
    """Empty, truncated, reordered or inconsistent files give one line naming the line."""
    path = tmp_path / "s.arpa"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    with pytest.raises(ArpaError, match=problem) as caught:
        NgramModel.read_arpa(path)
    assert_one_line(caught.value)


def test_tolerated_layouts(tmp_path):
    """BOM, CRLF, spaces, a gzip copy, text after \\end\\ and empty sections read alike."""
    reference = NgramModel.read_arpa(write(tmp_path / "t.arpa", TINY)).score_many(SENTENCES)
    variants = {
        "crlf": "\ufeff" + TINY.replace("\n", "\r\n"),
        "spaces": TINY.replace("\t", "  "),
        "trailing": TINY + "garbage after the end\n\x00\xff",
    }
    for name, text in variants.items():
        model = NgramModel.read_arpa(write(tmp_path / f"{name}.arpa", text))
        np.testing.assert_array_equal(model.score_many(SENTENCES), reference, err_msg=name)
    gz = NgramModel.read_arpa(write(tmp_path / "t.arpa.gz", TINY, compress=True))
    np.testing.assert_array_equal(gz.score_many(SENTENCES), reference)
    empty = TINY.replace("ngram 3=2", "ngram 3=0").replace("-0.1\t<s> a b\n-0.15\ta b c\n", "")
    assert_probabilities(NgramModel.read_arpa(write(tmp_path / "e.arpa", empty)).score_many(SENTENCES))


def test_escaped_units_outside_unicode_stay_words(tmp_path):
    """`<U+110000>` or a non-space escape in a char-model file is kept as written, not a crash."""
    text = re.sub(r"(?<=[\t ])b(?=[\t \n])", "<U+110000>", TINY)
    text = re.sub(r"(?<=[\t ])c(?=[\t \n])", "<U+0041>", text)
    model = NgramModel.read_arpa(write(tmp_path / "u.arpa", text), unit="char")
    assert "<U+110000>" in model.vocab and "<U+0041>" in model.vocab
    assert_probabilities(model.score_many(SENTENCES))


def test_truncated_gzip(tmp_path):
    """A cut .arpa.gz is a one-line error, not an EOFError traceback."""
    data = gzip.compress(TINY.encode())
    path = tmp_path / "cut.arpa.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArpaError, match="corrupt gzip data") as caught:
        NgramModel.read_arpa(path)
    assert_one_line(caught.value)
    path.write_bytes(data[:10] + bytes(b ^ 0xFF for b in data[10:40]) + data[40:])
    with pytest.raises(ArpaError, match="corrupt gzip data"):
        NgramModel.read_arpa(path)


# ---------------------------------------------------------------- fuzzing

NUMBERS = ["nan", "inf", "-inf", "1e999", "-1e999", "1_000", "९", "0.5", "+3", "-0", "1e-50", "3.4e39", "--1", "1e"]
ODD = ["\u3000", "\x0b", "\xa0", "\x85", "\u2028", "\x00", "\t\t"]


def mutate(lines: list[str], rng: random.Random) -> list[str]:
    """One structure-aware mutation of an ARPA file's lines."""
    lines = list(lines)
    j = rng.randrange(len(lines))
    kind = rng.randrange(12)
    if kind == 0:  # a number field
        fields = lines[j].split("\t")
        if len(fields) > 1:
            k = rng.choice([0, len(fields) - 1])
            fields[k] = rng.choice(NUMBERS)
            lines[j] = "\t".join(fields)
    elif kind == 1:
        del lines[j]
    elif kind == 2:
        lines.insert(j, lines[j])
    elif kind == 3:  # a header count
        head = [i for i, line in enumerate(lines[:12]) if line.startswith("ngram ")]
        i = rng.choice(head)
        count = rng.choice(["0", "1", "10" * 6, "1" + "0" * 12, "9" * 18, "x", "-1"])
        name, old = lines[i].split("=")
        lines[i] = f"{name}={count if rng.random() < 0.7 else int(old) + 1}"
    elif kind == 4:
        lines = lines[:j]
    elif kind == 5:  # words swapped between two lines
        i = rng.randrange(len(lines))
        a, b = lines[i].split("\t"), lines[j].split("\t")
        if len(a) > 1 and len(b) > 1:
            a[1], b[1] = b[1], a[1]
            lines[i], lines[j] = "\t".join(a), "\t".join(b)
    elif kind == 6:
        lines.insert(rng.randrange(12), "ngram 6=" + "1" + "0" * rng.choice([3, 12, 17]))
    elif kind == 7:  # a bomb-like run of repeats
        lines[j:j] = [rng.choice(["", lines[j], "-1\t<s>"])] * rng.choice([50, 20_000])
    elif kind == 8:  # odd whitespace or a character inside a word
        line = lines[j]
        k = rng.randrange(len(line) + 1)
        lines[j] = line[:k] + rng.choice(ODD + ["x", "\\", "<s>"]) + line[k:]
    elif kind == 9:
        i = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 10:
        lines[j] = lines[j].replace("-grams:", rng.choice(["-grams", "0-grams:", "99-grams:"]))
    else:
        lines.append(rng.choice(["\\end\\", "\\data\\", "-1\tzz", "garbage"]))
    return lines


def byte_mutation(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    if rng.random() < 0.5:
        return data[:i]
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]


def arpa_text(model: NgramModel) -> str:
    buffer = io.BytesIO()
    write_arpa(buffer, model.vocab, model._keys, model._prob, model._bo, model.order, escape=model.unit != "word")
    return buffer.getvalue().decode()


def fuzz_sources() -> list[tuple[str, str, int]]:
    """(name, ARPA text, mutations): most on tiny files (one with -inf from mle, one of a
    char model with escaped spaces), a few on the KenLM fixtures."""
    mle = NgramModel.train(["a b c a b", "b c d", "a d", "c c a b"], 3, smoothing="mle")
    chars = NgramModel.train(["가나 다", "나다 가나"], 2, unit="char")
    texts = [("tiny", TINY, 160), ("mle", arpa_text(mle), 100), ("chars", arpa_text(chars), 100)]
    for name in ("small_ko.o2.arpa", "small_ko.o3.arpa"):
        texts.append((name, gzip.decompress((KENLM / f"{name}.gz").read_bytes()).decode(), 8))
    return texts


def test_fuzzed_arpa_files_fail_cleanly_or_score_probabilities(tmp_path):
    """A few hundred seeded mutations: each is a one-line rnnkit error (reading or, for
    backoffs that make P > 1, scoring) or a model whose scores are log10 probabilities."""
    rng = random.Random(20240607)
    outcomes = {"error": 0, "loaded": 0}
    for name, text, count in fuzz_sources():
        lines = text.split("\n")
        for i in range(count):
            mutated = "\n".join(mutate(lines, rng)).encode("utf-8", errors="surrogatepass")
            if rng.random() < 0.2:
                mutated = byte_mutation(mutated, rng)
            compress = rng.random() < 0.3
            data = gzip.compress(mutated, compresslevel=1) if compress else mutated
            if compress and rng.random() < 0.2:
                data = byte_mutation(data, rng)
            path = tmp_path / f"{name}.{i}.arpa"
            path.write_bytes(data)
            try:
                model = NgramModel.read_arpa(path)
                scores = np.concatenate([model.score_many(SENTENCES), *model.token_logprobs_many(SENTENCES)])
            except RnnkitError as exc:
                assert_one_line(exc)
                outcomes["error"] += 1
            else:
                assert_probabilities(scores)
                outcomes["loaded"] += 1
    assert outcomes["error"] > 100 and outcomes["loaded"] > 50, outcomes
