"""Text in, units out: strict UTF-8 reading, NFC, and the char / word / jamo / morph / spm units.

Shared by the n-gram and the RNN families, so every model sees the same units.

Reading (`read_lines`, `read_text_lines`)
    UTF-8 only (a BOM is stripped), LF, CRLF and lone CR all end a line, every line is
    NFC-normalised and returned without its newline. Blank lines are *kept*: a line is
    a sentence, and an empty sentence is `<s> </s>`, exactly as KenLM's lmplz counts it.
    A file with no non-blank line at all is refused.

Units (`Tokenizer`)
    char  every character is a unit, spaces included (a Hangul syllable is one unit)
    word  tokens split on ASCII whitespace (space, \\t, \\n, \\v, \\f, \\r) -- the bytes
          KenLM splits on, so word models see exactly the tokens KenLM sees. Unicode
          spaces such as U+3000 stay inside tokens.
    jamo  Hangul syllables U+AC00..U+D7A3 become conjoining jamo (L, V and an optional
          T, U+1100..); everything else is a char unit. `join` recomposes with NFC.
    morph morphemes from Kiwi (kiwipiepy), spm pieces of a SentencePiece model: the
    spm   segmenter cuts the NFC line into segments, substrings of the line (segment.py
          says how: a morph unit is the *surface* text of a morpheme, or of a contracted
          syllable holding several, never Kiwi's lemma, so 탔다 is 탔 + 다, not 타 + 었 + 다).
          A Kiwi segment starts with the space before its morpheme, if there is one; a
          SentencePiece segment is a piece's surface, spaces as the piece has them. Then,
          with ▁ (U+2581, SentencePiece's space mark) as SPACE_MARK, in each segment:
            - every whitespace character and every literal ▁ is cut out on its own;
            - a space (U+0020) followed by more of its segment becomes a ▁ at the
              start of that unit; any other space is a unit "▁" of its own;
            - any other whitespace character (tab, U+3000, ...) is a unit of its own;
            - a literal ▁ of the text is the unit "▁▁" ("▁▁▁" after a space).
          So spm units are the SentencePiece model's own pieces (for a model trained by
          rnnkit, which keeps the text as it is; pieces of a model that normalises are
          taken as they stand in the text), and a morph unit carries the space before it.
          So "나는  버스를 탔다" -> 나 는 ▁ ▁버스 를 ▁탔 다 (morph), and `join` maps each
          unit back (a leading ▁ to a space, "▁▁" to ▁): text -> units -> text gives the
          NFC text back exactly, spacing included. Units never contain a space, so an
          ARPA file can hold them (other whitespace units are escaped as <U+XXXX>).
          A morph tokenizer records Kiwi's model type and the kiwipiepy version; an spm
          tokenizer carries the SentencePiece model's bytes (array `spm_model` of the
          model file), so a model file is self-contained. Both need `pip install
          'rnnkit[ko]'`.

`count_chars` gives the denominator of bits per character: NFC characters of the
original text plus one per line for the newline (which `</s>` stands for).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import re
import sys
import unicodedata
import zlib
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ConfigError, CorpusError

UNITS = ("char", "word", "jamo", "morph", "spm")
SPACE_MARK = "\u2581"            # ▁
LITERAL_MARK = SPACE_MARK * 2    # a ▁ of the text itself
TOKENIZER_ARRAYS = ("spm_model",)  # what a tokenizer stores among a model file's arrays

_ASCII_WS = re.compile(r"[ \t\n\v\f\r]+")
# Characters str.split() treats as whitespace that KenLM does not.
_UNICODE_ONLY_WS = re.compile("[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")

# whitespace characters and the space mark are each cut out of a morph or spm segment
_SEGMENT_BREAKS = re.compile(r"(\s|\u2581)")

_S_BASE, _L_BASE, _V_BASE, _T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
_N_SYLLABLES, _V_COUNT, _T_COUNT = 11172, 21, 28


def _jamo_table() -> dict[int, str]:
    table = {}
    for index in range(_N_SYLLABLES):
        lead, rest = divmod(index, _V_COUNT * _T_COUNT)
        vowel, tail = divmod(rest, _T_COUNT)
        jamo = chr(_L_BASE + lead) + chr(_V_BASE + vowel)
        if tail:
            jamo += chr(_T_BASE + tail)
        table[_S_BASE + index] = jamo
    return table


_JAMO = _jamo_table()


def nfc(text: str) -> str:
    """NFC-normalise `text` (cheap when it already is)."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def nfc_lines(lines: list[str]) -> list[str]:
    """`nfc` of every line, with one check of the whole text when all already are NFC
    (the usual case; a newline joins nothing, so the text is NFC iff every line is)."""
    if unicodedata.is_normalized("NFC", "\n".join(lines)):
        return lines
    return [nfc(line) for line in lines]


def _split_text(text: str, bom: bool = True) -> list[str]:
    """Strip a BOM (at the start of a file: `bom`), split on LF / CRLF / CR (only
    those), NFC; drop the final newline."""
    if bom and text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = nfc(text)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def decode_utf8(data: bytes, name: str = "<input>", lines_before: int = 0, bytes_before: int = 0) -> str:
    """Decode bytes strictly as UTF-8; the error names the line and byte offset (in the
    file, when `data` is a block of whole lines after `lines_before` lines and
    `bytes_before` bytes)."""
    if b"\x00" in data:
        offset = bytes_before + data.index(b"\x00")
        raise CorpusError(f"{name}: looks like a binary file (NUL byte at byte offset {offset}), not UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = lines_before + data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        raise CorpusError(
            f"{name}: not valid UTF-8 at line {line} (byte offset {bytes_before + exc.start} in the file, "
            f"{column} in the line): {exc.reason}"
        ) from None


def read_lines(path) -> list[str]:
    """Read a text file as a list of NFC lines without newlines (blank lines kept).

    Raises CorpusError (one line) for a missing file, a directory, an empty file or one
    with only blank lines, a binary file and invalid UTF-8.
    """
    return [line for block in read_line_blocks(path) for line in block]


READ_BLOCK_BYTES = 1 << 22  # as Python lines and units a block takes many times its bytes


def read_line_blocks(source, block_bytes: int = READ_BLOCK_BYTES, name: str | None = None) -> Iterator[list[str]]:
    """`read_lines` a block of about `block_bytes` at a time (lists of whole lines), so a
    corpus of any size streams through bounded memory.

    `source` is a path (plain text, or gzip recognised by its first bytes) or a binary
    stream such as standard input (`name` names it in errors). The checks and messages
    are those of `read_lines`; the empty and all-blank checks run when the end is reached.
    """
    if name is None:
        name = (str(source) if isinstance(source, (str, Path)) else
                "standard input" if source is getattr(sys.stdin, "buffer", None) else
                str(getattr(source, "name", "<input>")))
    with _open_source(source) as stream:
        size = any_text = 0
        for lines, size in _decoded_blocks(stream, name, block_bytes, 0, 0):
            any_text = any_text or any(line.strip() for line in lines)
            yield lines
    if size == 0:
        raise CorpusError(f"{name} is empty")
    if not any_text:
        raise CorpusError(f"{name} has no non-empty lines")


def line_start(path, offset: int) -> int:
    """Where the first line that starts at or after byte `offset` of a file begins (the
    file's size if none does): cutting a file at line_start(path, k * step) for k = 1,
    2, ... gives shards that hold each line once."""
    with open(path, "rb") as handle:
        if offset <= 0:
            return 0
        handle.seek(offset - 1)
        while True:
            data = handle.read(1 << 16)
            newline = data.find(b"\n")
            if newline >= 0:
                return handle.tell() - len(data) + newline + 1
            if not data:
                return handle.tell()


def read_range_blocks(path, start: int, stop: int, block_bytes: int = READ_BLOCK_BYTES) -> Iterator[list[str]]:
    """The lines of a plain text file from byte `start` to `stop` (both at line starts:
    see `line_start`), a block at a time, checked like `read_lines`; errors name the
    line in the whole file. The empty and all-blank checks are the whole file's."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        handle.seek(start)
        shard = io.BufferedReader(_Limited(handle, stop - start))
        yield from (lines for lines, _ in _decoded_blocks(shard, str(path), block_bytes, start, None))


def _count_newlines(path, size: int) -> int:
    """LF bytes in the first `size` bytes of a file."""
    count = 0
    with open(path, "rb") as handle:
        while size > 0:
            data = handle.read(min(size, READ_BLOCK_BYTES))
            if not data:
                break
            count += data.count(b"\n")
            size -= len(data)
    return count


class _Limited(io.RawIOBase):
    """The next `size` bytes of a binary file."""

    def __init__(self, handle, size: int):
        self.handle, self.left = handle, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.handle.read(min(len(buffer), self.left))
        buffer[:len(data)] = data
        self.left -= len(data)
        return len(data)


def _decoded_blocks(stream, name: str, block_bytes: int, bytes_before: int, lines_before: int | None):
    """(NFC lines, bytes read so far) per block of whole lines; lines_before None: not
    known (a shard), counted from the file when an error needs the line number."""
    lines_read = 0
    for data in _raw_blocks(stream, block_bytes, name):
        try:
            text = decode_utf8(data, name, (lines_before or 0) + lines_read, bytes_before)
        except CorpusError:
            if lines_before is not None:
                raise
            decode_utf8(data, name, _count_newlines(name, bytes_before), bytes_before)  # raises, numbered
        yield _split_text(text, bom=bytes_before == 0), bytes_before + len(data)
        lines_read += data.count(b"\n")
        bytes_before += len(data)


@contextlib.contextmanager
def _open_source(source):
    """A binary stream over `source`: a stream as given, a file (gunzipped if it is gzip)."""
    if not isinstance(source, (str, Path)):
        yield source
        return
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"file not found: {path}")
    if path.is_dir():
        raise CorpusError(f"{path} is a directory, not a text file")
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        if handle.peek(2)[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=handle) as unzipped:
                yield unzipped
        else:
            yield handle


def _raw_blocks(stream, block_bytes: int, name: str) -> Iterator[bytes]:
    """Bytes of whole lines, about block_bytes at a time: a block ends after a LF, or
    after a CR that is not the last byte read (it may be half of a CRLF)."""
    rest = b""
    while True:
        try:
            data = stream.read(block_bytes)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorpusError(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
        if not data:
            if rest:
                yield rest
            return
        data = rest + data
        cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
        rest = data[cut:]
        if cut:
            yield data[:cut]


def read_text_lines(items: Iterable[str | bytes], name: str = "<input>") -> list[str]:
    """Normalise sentences given as strings (arguments) or a stream (stdin) like `read_lines`.

    Each item may hold several lines; bytes are decoded strictly as UTF-8. Blank lines are
    kept; an input with no non-blank line raises CorpusError.
    """
    lines: list[str] = []
    for item in items:
        if isinstance(item, bytes):
            item = decode_utf8(item, name)
        if "\x00" in item:
            raise CorpusError(f"{name}: contains a NUL character; not text")
        if item.endswith("\r\n"):
            item = item[:-2]
        elif item.endswith(("\n", "\r")):
            item = item[:-1]
        part = _split_text(item + "\n")
        lines.extend(part if part else [""])
    if not any(line.strip() for line in lines):
        raise CorpusError(f"{name}: no non-empty lines")
    return lines


def split_words(line: str) -> list[str]:
    """Whitespace tokens as KenLM sees them (ASCII whitespace only)."""
    if _UNICODE_ONLY_WS.search(line) is None:
        return line.split()
    return [token for token in _ASCII_WS.split(line) if token]


def to_jamo(text: str) -> str:
    """Decompose Hangul syllables into conjoining jamo; other characters unchanged."""
    return text.translate(_JAMO)


def count_chars(lines: Iterable[str]) -> int:
    """Characters for bits per character: NFC characters plus one newline per line."""
    return sum(len(nfc(line)) + 1 for line in lines)


def mark_spaces(segments: Iterable[str]) -> list[str]:
    """Units from a line's segments (morph, spm): the space rule of the module docstring."""
    units = []
    for segment in segments:
        pending = False   # a space waiting for the rest of its segment
        for piece in (p for p in _SEGMENT_BREAKS.split(segment) if p):
            if pending and not piece.isspace():
                units.append(SPACE_MARK + _literal(piece))
                pending = False
                continue
            if pending:   # a space before whitespace stands alone
                units.append(SPACE_MARK)
            pending = piece == " "
            if not pending:
                units.append(_literal(piece))   # whitespace units are escaped as <U+XXXX> in ARPA files
        if pending:
            units.append(SPACE_MARK)
    return units


def _literal(piece: str) -> str:
    return LITERAL_MARK if piece == SPACE_MARK else piece


def unmark(unit: str) -> str:
    """The text one morph or spm unit stands for (inverse of `mark_spaces`)."""
    space = ""
    if unit.startswith(SPACE_MARK) and unit != LITERAL_MARK:
        space, unit = " ", unit[1:]
    return space + (SPACE_MARK if unit == LITERAL_MARK else unit)


class Tokenizer:
    """Split a line into units and join units back into text; carries its settings.

    >>> Tokenizer("jamo").split("한국")
    ['ᄒ', 'ᅡ', 'ᆫ', 'ᄀ', 'ᅮ', 'ᆨ']

    char, word and jamo need nothing more. `Tokenizer("morph")` uses Kiwi (settings:
    its model type); spm needs a SentencePiece model: `Tokenizer.train_spm(lines, 8000)`,
    `Tokenizer.spm_file(path)` or `Tokenizer("spm", spm_model=bytes)`. A model file keeps
    a tokenizer as `to_meta()` (meta fields) and `arrays()`; `from_meta` builds it back,
    for every model alike. A sentence given as a list is taken as already split.
    """

    def __init__(self, unit: str = "char", settings: dict | None = None, spm_model: bytes | None = None,
                 source: str = "the model file"):
        if unit not in UNITS:
            raise ConfigError(f"unit must be one of {', '.join(UNITS)}; got {unit!r}")
        self.unit = unit
        self.segmenter = None
        if unit == "morph":
            from .segment import KiwiSegmenter
            self.segmenter = KiwiSegmenter(settings)
        elif unit == "spm":
            if spm_model is None:
                raise ConfigError("unit 'spm' needs a SentencePiece model: train one (--spm-vocab N, "
                                  "Tokenizer.train_spm) or give one (--spm-model FILE, Tokenizer.spm_file)")
            from .segment import SentencePieceSegmenter
            self.segmenter = SentencePieceSegmenter(spm_model, settings, source)

    @classmethod
    def of(cls, unit: "str | Tokenizer") -> "Tokenizer":
        """`unit` itself when it is a Tokenizer, else the tokenizer of that unit name."""
        return unit if isinstance(unit, Tokenizer) else cls(unit)

    @classmethod
    def train_spm(cls, lines: list[str], vocab_size: int = 8000, model_type: str = "unigram") -> "Tokenizer":
        """An spm tokenizer with a SentencePiece model trained on `lines` (NFC)."""
        from .segment import train_sentencepiece
        model = train_sentencepiece(nfc_lines(list(lines)), vocab_size, model_type)
        return cls("spm", {"source": f"trained: {model_type}, vocabulary {vocab_size}"}, model)

    @classmethod
    def spm_file(cls, path) -> "Tokenizer":
        """An spm tokenizer with the SentencePiece model in `path` (a .model file)."""
        path = Path(path)
        try:
            model = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the SentencePiece model {path}: {exc.strerror or exc}") from None
        return cls("spm", {"source": path.name}, model, source=str(path))

    @classmethod
    def from_meta(cls, meta: dict, arrays: dict, source: str = "the model file") -> "Tokenizer":
        """The tokenizer a model file's meta (`unit`, `tokenizer`) and arrays describe."""
        model = arrays.get("spm_model")
        return cls(meta["unit"], meta.get("tokenizer"), model.tobytes() if model is not None else None, source)

    def to_meta(self) -> dict:
        """Meta fields for a model file: the unit, and the segmenter's settings if any."""
        return {"unit": self.unit, **({"tokenizer": self.segmenter.settings()} if self.segmenter else {})}

    def arrays(self) -> dict:
        """Arrays for a model file (the SentencePiece model's bytes)."""
        return self.segmenter.arrays() if self.segmenter else {}

    def __repr__(self) -> str:
        return f"Tokenizer({self.unit!r})"

    def __eq__(self, other) -> bool:
        """Same units for every text: same unit, same Kiwi model type or SentencePiece model."""
        return (isinstance(other, Tokenizer) and other.unit == self.unit
                and (self.segmenter is None or self.segmenter.key() == other.segmenter.key()))

    def split(self, line) -> list[str]:
        """Units of one line, NFC-normalised here: every model splits through this, so
        the same sentence scores the same whatever normal form it arrives in."""
        if not isinstance(line, str):
            return list(line)
        line = nfc(line)
        if self.segmenter is not None:
            return mark_spaces(self.segmenter.segments_many([line])[0])
        if self.unit == "word":
            return split_words(line)
        if self.unit == "jamo":
            return list(line.translate(_JAMO))
        return list(line)

    def split_lines(self, lines: Iterable) -> list[list[str]]:
        """`split` applied to many lines (one NFC check of the whole text)."""
        lines = list(lines)
        if not all(isinstance(line, str) for line in lines):
            return [self.split(line) for line in lines]
        lines = nfc_lines(lines)
        if self.segmenter is not None:
            return [mark_spaces(segments) for segments in self.segmenter.segments_many(lines)]
        if self.unit == "word":
            if _UNICODE_ONLY_WS.search("\n".join(lines)) is None:  # one search, not one per line
                return [line.split() for line in lines]
            return [split_words(line) for line in lines]
        if self.unit == "jamo":
            return [list(line.translate(_JAMO)) for line in lines]
        return [list(line) for line in lines]

    def join(self, tokens: Iterable[str]) -> str:
        """Text from units: space-joined words, unmarked morph and spm units, or
        concatenated (and NFC-recomposed) characters and jamo."""
        if self.unit == "word":
            return " ".join(tokens)
        if self.segmenter is not None:
            return "".join(map(unmark, tokens))
        text = "".join(tokens)
        return unicodedata.normalize("NFC", text) if self.unit == "jamo" else text

    def context_length(self, units: list[str], context: str) -> int:
        """How many of `units`, the units of `context + " " + continuation`, belong to
        the context: word units drop the space, char and jamo give it a unit of its own
        (counted with the context), morph and spm mark it on the continuation's first unit."""
        if self.segmenter is None:
            return len(self.split(context if self.unit == "word" else context + " "))
        length, count = len(nfc(context)), 0
        while count < len(units) and length > 0:
            length -= len(unmark(units[count]))
            count += 1
        return count

    @property
    def whitespace_units(self) -> bool:
        """Whether a unit can be a whitespace character (written escaped in ARPA files)."""
        return self.unit != "word"
