"""`rnnkit eval --format srilm`: SRILM's -ppl report, checked against numbers worked out
by hand on a hand-written bigram ARPA, and against the real kenlm module on a fixture."""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

import kenlm
import numpy as np
import pytest
from click.testing import CliRunner

from rnnkit.cli import cli
from rnnkit.ngram import NgramModel
from rnnkit.srilm import report

KENLM = Path(__file__).parent / "fixtures" / "kenlm"

# P(a | <s>) = P(b | a) = P(</s> | a) = 1/2, P(</s> | b) = 1/3, unigrams a, b, </s> 1/4,
# backoffs <s> and a 1/2 (ARPA values have 7 digits, so the sums are not exact fractions)
TINY_ARPA = """\\data\\
ngram 1=5
ngram 2=4

\\1-grams:
-1\t<unk>\t0
0\t<s>\t-0.30103
-0.60206\t</s>
-0.60206\ta\t-0.30103
-0.60206\tb\t0

\\2-grams:
-0.30103\t<s> a
-0.30103\ta b
-0.4771213\tb </s>
-0.30103\ta </s>

\\end\\
"""
TEXT = "a b\n\nb a\na c\n"  # the blank line is skipped, as SRILM skips it; c is OOV


def f32(x: float) -> float:
    """SRILM holds each log10 probability as a float."""
    return float(np.float32(x))


def g(x: float) -> str:
    return f"{x:.7g}"


def word_line(word, context, first, tag, log10):
    prob = 0.0 if log10 == -math.inf else 10.0 ** log10
    return f"\tp( {word} | {context}{' ' if first else ' ...'}) \t= {tag} {g(prob)} [ {g(log10)} ]"


def stats_lines(sentences, words, oovs, logprob, zeroprobs=0):
    scored = words - oovs - zeroprobs
    return [f"{sentences} sentences, {words} words, {oovs} OOVs",
            f"{zeroprobs} zeroprobs, logprob= {g(logprob)} ppl= {g(10 ** (-logprob / (scored + sentences)))} "
            f"ppl1= {g(10 ** (-logprob / scored))}"]


def expected_report() -> list[str]:
    """The -debug 2 report of TEXT, by hand: the backoff path of each word is spelled out."""
    half, third, quarter, backoff = f32(-0.30103), f32(-0.4771213), f32(-0.60206), -0.30103
    sentences = [
        ("a b", [("a", "<s>", "[2gram]", half), ("b", "a", "[2gram]", half), ("</s>", "b", "[2gram]", third)], 0),
        # b after <s>: no bigram, so bo(<s>) + P(b); a after b: bo(b) = 0 + P(a)
        ("b a", [("b", "<s>", "[1gram]", f32(backoff + -0.60206)), ("a", "b", "[1gram]", quarter),
                 ("</s>", "a", "[2gram]", half)], 0),
        # c is OOV: left out and shown as <unk>; </s> after it backs off to its unigram
        ("a c", [("a", "<s>", "[2gram]", half), ("<unk>", "a", "[OOV]", -math.inf),
                 ("</s>", "<unk>", "[1gram]", quarter)], 1),
    ]
    lines, total = [], 0.0
    for text, words, oovs in sentences:
        logprob = sum(w[3] for w in words if w[3] != -math.inf)
        total += logprob
        lines += [text, *(word_line(w, c, i == 0, tag, lp) for i, (w, c, tag, lp) in enumerate(words)),
                  *stats_lines(1, 2, oovs, logprob), ""]
    first, second = stats_lines(3, 6, 1, total)
    return lines + [f"file test.txt: {first}", second]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("tiny.arpa").write_text(TINY_ARPA, encoding="utf-8")
    Path("test.txt").write_text(TEXT, encoding="utf-8")


def run(*args):
    return CliRunner().invoke(cli, ["eval", *args])


def test_debug_reports_match_the_hand_computation(tiny):
    expected = expected_report()
    levels = {2: expected,
              1: [line for line in expected if not line.startswith("\tp( ")],
              0: expected[-2:]}
    for debug, lines in levels.items():
        result = run("--format", "srilm", "--debug", str(debug), "-m", "tiny.arpa", "test.txt")
        assert result.exit_code == 0, result.output
        assert result.output == "\n".join(lines) + "\n"
    assert expected[-1] == "0 zeroprobs, logprob= -3.788451 ppl= 2.975476 ppl1= 5.723877"


def test_zeroprobs_and_undefined_perplexity():
    """An mle model gives an unseen bigram probability 0: a zeroprob, left out of ppl;
    with no other word ppl1 has nothing to divide by."""
    model = NgramModel.train(["a b"], order=2, smoothing="mle")
    lines = list(report(model, ["b"], "x.txt", debug=2))
    assert lines[1] == word_line("b", "<s>", True, "[1gram]", -math.inf)
    assert lines[-2:] == ["file x.txt: 1 sentences, 1 words, 0 OOVs",
                          "1 zeroprobs, logprob= 0 ppl= 1 ppl1= undefined"]


def test_char_units_print_as_in_rnnkit_arpa_files():
    model = NgramModel.train(["ab a", "b a"], order=2, unit="char")
    lines = list(report(model, ["a b"], "x.txt", debug=2))
    assert lines[0] == "a <sp> b" and lines[2].startswith("\tp( <sp> | a ...) \t= [1gram] ")
    assert lines[-2] == "file x.txt: 1 sentences, 3 words, 0 OOVs"


def test_perplexity_is_kenlms_excluding_oovs(tmp_path):
    """On a KenLM fixture, logprob and ppl are KenLM's totals without the OOV words."""
    text = tmp_path / "queries_ko.txt"
    text.write_bytes(gzip.decompress((KENLM / "queries_ko.txt.gz").read_bytes()))
    lines = text.read_text(encoding="utf-8").splitlines()
    arpa = str(KENLM / "small_ko.o3.arpa.gz")
    real = kenlm.Model(arpa)
    scores = [s for line in lines for s in real.full_scores(line)]
    logprob = sum(p for p, _, oov in scores if not oov)
    oovs = sum(oov for _, _, oov in scores)
    words = sum(len(line.split()) for line in lines)
    first, second = run("--format", "srilm", "-m", arpa, str(text)).output.splitlines()
    assert first.endswith(f": {len(lines)} sentences, {words} words, {oovs} OOVs")
    numbers = dict(re.findall(r"(\w+)= (\S+)", second))
    assert float(numbers["logprob"]) == pytest.approx(logprob, rel=1e-6)
    assert float(numbers["ppl"]) == pytest.approx(10 ** (-logprob / (words - oovs + len(lines))), rel=1e-6)
    assert float(numbers["ppl1"]) == pytest.approx(10 ** (-logprob / (words - oovs)), rel=1e-6)
    reference = json.loads(gzip.decompress((KENLM / "small_ko.o3.scores.json.gz").read_bytes()))
    assert float(numbers["ppl"]) == pytest.approx(reference["corpus"]["perplexity_excl_oov"], rel=1e-6)


def test_option_errors(tiny):
    for args, message in ((["--debug", "1"], "--debug is for --format srilm"),
                          (["--format", "srilm", "--json"], "--json and --format srilm"),
                          (["--format", "srilm", "--debug", "3"], "not in the range 0<=x<=2"),
                          (["--format", "sri"], "'sri' is not one of")):
        result = run(*args, "-m", "tiny.arpa", "test.txt")
        assert result.exit_code == 2 and message in result.output, result.output
