"""units: strict UTF-8 reading, BOM/CRLF/NFC handling, char/word/jamo units."""

from __future__ import annotations

import unicodedata

import pytest

from rnnkit.errors import CorpusError
from rnnkit.units import UNITS, Tokenizer, count_chars, read_lines, read_text_lines, to_jamo

KOREAN = ["나는 버스를 탔다", "선생님이 교실로 부리나케 달려갔다", "ㅋㅋ 최고의 영화음악!", "값 없는 밟기 ㄱ"]


def test_units_constant():
    """The five units are exposed in a fixed order."""
    assert UNITS == ("char", "word", "jamo", "morph", "spm")


def test_bom_crlf_cr_and_nfc(tmp_path):
    """A BOM is stripped, CRLF and CR end lines, lines come back NFC without newlines."""
    decomposed = unicodedata.normalize("NFD", "한국어")
    path = tmp_path / "a.txt"
    path.write_bytes(("\ufeff" + decomposed + "\r\nb c\rd\n").encode("utf-8"))
    assert read_lines(path) == ["한국어", "b c", "d"]


def test_blank_lines_are_kept(tmp_path):
    """Blank lines stay (an empty sentence, as lmplz counts it); no final empty line is added."""
    path = tmp_path / "a.txt"
    path.write_text("a\n\nb\n", encoding="utf-8")
    assert read_lines(path) == ["a", "", "b"]
    path.write_text("a\n\nb", encoding="utf-8")
    assert read_lines(path) == ["a", "", "b"]


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"\n \n\t\n", "no non-empty lines"),
    (b"abc\x00def", "binary"),
    ("첫 줄\n둘째 ".encode() + b"\xff\xfe" + b"\n", r"line 2 \(byte offset 15 in the file, 7 in the line"),
])
def test_bad_files(content, match, tmp_path):
    """Empty, blank-only, binary and invalid UTF-8 files raise CorpusError with a clear message."""
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=match):
        read_lines(path)


def test_missing_file_and_directory(tmp_path):
    """A missing path and a directory are CorpusErrors too."""
    with pytest.raises(CorpusError, match="not found"):
        read_lines(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match="directory"):
        read_lines(tmp_path)


def test_read_text_lines_normalises_like_files():
    """Arguments / stdin go through the same BOM, newline and NFC handling."""
    nfd = unicodedata.normalize("NFD", "탔다")
    assert read_text_lines(["\ufeff" + nfd + "\r\n", "a\nb", b"c\r\n"]) == ["탔다", "a", "b", "c"]
    with pytest.raises(CorpusError):
        read_text_lines(["", "  "])
    with pytest.raises(CorpusError, match="UTF-8"):
        read_text_lines([b"\xff"])


def test_char_units_include_spaces():
    """char: every character is a unit, spaces included; join is concatenation."""
    tok = Tokenizer("char")
    assert tok.split("나는 버스") == ["나", "는", " ", "버", "스"]
    assert tok.join(tok.split(KOREAN[1])) == KOREAN[1]


def test_word_units_split_on_ascii_whitespace_only():
    """word: split on the ASCII whitespace KenLM uses; U+3000 stays inside a token."""
    tok = Tokenizer("word")
    assert tok.split(" 나는\t버스를  탔다 ") == ["나는", "버스를", "탔다"]
    assert tok.split("가\u3000나 다") == ["가\u3000나", "다"]
    assert tok.split_lines(["a b", "가\u3000나 다"]) == [["a", "b"], ["가\u3000나", "다"]]
    assert tok.join(["나는", "버스를"]) == "나는 버스를"


def test_jamo_decomposition_and_round_trip():
    """jamo: syllables become conjoining L V (T) jamo; join recomposes exactly (NFC)."""
    tok = Tokenizer("jamo")
    assert tok.split("한 a") == ["\u1112", "\u1161", "\u11ab", " ", "a"]
    assert tok.split("가") == ["\u1100", "\u1161"]
    for line in KOREAN:
        units = tok.split(line)
        assert all(not (0xAC00 <= ord(u) <= 0xD7A3) for u in units)
        assert tok.join(units) == line
    assert to_jamo("힣") == unicodedata.normalize("NFD", "힣")


def test_every_syllable_round_trips():
    """All 11,172 precomposed syllables decompose canonically and recompose."""
    text = "".join(chr(c) for c in range(0xAC00, 0xD7A4))
    assert to_jamo(text) == unicodedata.normalize("NFD", text)
    assert Tokenizer("jamo").join(Tokenizer("jamo").split(text)) == text


def test_count_chars_counts_newlines():
    """Bits-per-character denominator: NFC characters plus one per line."""
    nfd = unicodedata.normalize("NFD", "한국")
    assert count_chars([nfd, "ab", ""]) == 2 + 1 + 2 + 1 + 0 + 1


def test_unknown_unit():
    """An unknown unit name is a ValueError naming the choices."""
    with pytest.raises(ValueError, match="char, word, jamo"):
        Tokenizer("bpe")
