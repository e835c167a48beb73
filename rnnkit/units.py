"""Text in, units out: strict UTF-8 reading, NFC, and the char / word / jamo units.

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

UNITS = ("char", "word", "jamo")

_ASCII_WS = re.compile(r"[ \t\n\v\f\r]+")
# Characters str.split() treats as whitespace that KenLM does not.
_UNICODE_ONLY_WS = re.compile("[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")

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


class Tokenizer:
    """Split a line into units and join units back into text.

    >>> Tokenizer("jamo").split("한국")
    ['ᄒ', 'ᅡ', 'ᆫ', 'ᄀ', 'ᅮ', 'ᆨ']
    """

    def __init__(self, unit: str = "char"):
        if unit not in UNITS:
            raise ConfigError(f"unit must be one of {', '.join(UNITS)}; got {unit!r}")
        self.unit = unit

    def __repr__(self) -> str:
        return f"Tokenizer({self.unit!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and other.unit == self.unit

    def split(self, line: str) -> list[str]:
        """Units of one line, NFC-normalised here: every model splits through this, so
        the same sentence scores the same whatever normal form it arrives in."""
        line = nfc(line)
        if self.unit == "word":
            return split_words(line)
        if self.unit == "jamo":
            return list(line.translate(_JAMO))
        return list(line)

    def split_lines(self, lines: Iterable[str]) -> list[list[str]]:
        """`split` applied to many lines (one NFC check of the whole text)."""
        lines = nfc_lines(list(lines))
        if self.unit == "word":
            if _UNICODE_ONLY_WS.search("\n".join(lines)) is None:  # one search, not one per line
                return [line.split() for line in lines]
            return [split_words(line) for line in lines]
        if self.unit == "jamo":
            return [list(line.translate(_JAMO)) for line in lines]
        return [list(line) for line in lines]

    def join(self, tokens: Iterable[str]) -> str:
        """Text from units: space-joined words, or concatenated (and NFC-recomposed) units."""
        if self.unit == "word":
            return " ".join(tokens)
        text = "".join(tokens)
        return unicodedata.normalize("NFC", text) if self.unit == "jamo" else text
