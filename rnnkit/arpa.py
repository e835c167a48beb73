"""ARPA text format: KenLM-compatible writing and tolerant reading into sorted arrays.

The in-memory layout (shared with rnnkit.ngram) is one block per order n:
  keys[n]  int64, sorted: key = index of the suffix (w2..wn) in order n-1 * V + id(w1)
           (for n = 1 the index *is* the word id, so no keys are stored);
  prob[n]  float32 log10 probabilities;  bo[n]  float32 log10 backoffs (n < order).
Sorting by this key is KenLM's "suffix order" (last word first), so with KenLM's
first-occurrence word ids the n-grams come out in the same order lmplz writes them.

Numbers are written like KenLM (double-conversion's shortest form of the float32, fixed
notation for decimal exponents -6..20, else `1.5e-7`), so ARPA files from rnnkit and
lmplz for the same corpus can be compared line by line; `-inf` is written for log10(0).

Units that are whitespace (the space unit of char and jamo models) cannot appear raw in
an ARPA line: U+0020 is written `<sp>`, any other whitespace character `<U+XXXX>`, and
`read_arpa(..., unit="char"|"jamo")` maps them back. `detect_unit` recognises such files.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from contextlib import contextmanager
from itertools import repeat

import numpy as np

from .errors import ArpaError
from .vocab import SPECIALS, UNK_ID, Vocab

MAX_ORDER = 100
"""The highest n-gram order rnnkit trains, reads or loads: far above any useful order
(KenLM is built for 6 by default), it bounds the work scoring does per unit ((order - 1)
backoffs) and keeps match lengths in int8."""
MAX_LINE = 1 << 20
"""The longest ARPA line read, in characters; real lines are a few hundred at most."""

_NGRAM_HEADER = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)", re.ASCII)
_SECTION = re.compile(r"\\(\d+)-grams:", re.ASCII)
_ESCAPED = re.compile(r"<U\+([0-9A-F]{4,6})>")
_NUMBER = re.compile(r"-inf|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
SPACE_TOKEN = "<sp>"


# ---------------------------------------------------------------- number formatting

def _kenlm_float(value: np.float32) -> str:
    """One float32 as KenLM prints it (shortest round-trip digits, -6 <= exp10 < 21 fixed)."""
    if np.isnan(value):
        return "NaN"
    if np.isinf(value):
        return "-inf" if value < 0 else "inf"
    if value == 0:
        return "-0" if np.signbit(value) else "0"
    scientific = np.format_float_scientific(value, unique=True, trim="-", exp_digits=1)
    # the shortest digits decide the exponent, not log10 of the value
    exponent = int(scientific.split("e")[1])
    if -6 <= exponent < 21:
        return np.format_float_positional(value, unique=True, trim="-")
    mantissa, exp = scientific.split("e")
    return f"{mantissa}e{int(exp)}"


def format_floats(values: np.ndarray) -> list[str]:
    """KenLM's text for each float32 value (vectorised over the distinct values)."""
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        return []
    uniq, inverse = np.unique(values, return_inverse=True)
    text = uniq.astype(str).tolist()
    for i, s in enumerate(text):
        if "e" in s or "n" in s or not np.isfinite(uniq[i]):
            text[i] = _kenlm_float(uniq[i])
        elif s.endswith(".0"):
            text[i] = s[:-2]
    table = np.array(text, dtype=object)
    return table[inverse.ravel()].tolist()


# ---------------------------------------------------------------- helpers on the layout

def ngram_keys(suffix, first, V: int) -> np.ndarray:
    """The int64 key of n-grams: index of the suffix (w2..wn) in order n-1 * V + id(w1).

    Every key in rnnkit is built here. Index arrays are often int32 to save memory, and
    NumPy 2 (NEP 50) keeps `int32_array * V` in int32: it silently wraps once
    suffix * V >= 2**31 (e.g. > ~800k 4-grams with 2,700 characters), which unsorts the
    keys and breaks every lookup. Casting the suffix first keeps the whole sum in int64.
    """
    key = np.asarray(suffix, dtype=np.int64) * np.int64(V)
    key += first  # in place: int64 whatever the integer type of `first`
    return key


def ngram_words(keys: list, V: int, order: int) -> list[np.ndarray]:
    """words[n]: (count_n, n) int32 word ids of every n-gram, in array order."""
    words = [None, None]
    for n in range(2, order + 1):
        k = keys[n]
        first = (k % V).astype(np.int32)
        suffix = k // V
        lower = np.arange(V, dtype=np.int32)[:, None] if n == 2 else words[n - 1]
        words.append(np.concatenate([first[:, None], lower[suffix]], axis=1))
    return words


def escape_token(token: str) -> str:
    if token == " ":
        return SPACE_TOKEN
    if token.isspace() or not token:
        return "".join(f"<U+{ord(c):04X}>" for c in token)
    return token


def unescape_token(token: str) -> str:
    if token == SPACE_TOKEN:
        return " "
    match = _ESCAPED.fullmatch(token)
    code = int(match.group(1), 16) if match else None
    # escape_token writes whitespace only; anything else (or no character) stays as written
    return chr(code) if code is not None and code <= 0x10FFFF and chr(code).isspace() else token


def detect_unit(words: list[str]) -> str:
    """The unit of an ARPA file's unigrams: "char" or "jamo" for a file written by a
    char or jamo model (it has the `<sp>` space unit, and every other non-special unigram
    is one character; conjoining jamo without any precomposed syllable make it "jamo"),
    else "word", which is how KenLM and SRILM read every file."""
    units = [unescape_token(w) for w in words if w not in SPECIALS]
    if SPACE_TOKEN not in words or not all(len(u) == 1 for u in units):
        return "word"
    jamo = any("\u1100" <= u <= "\u11ff" for u in units)
    syllables = any("\uac00" <= u <= "\ud7a3" for u in units)
    return "jamo" if jamo and not syllables else "char"


# ---------------------------------------------------------------- writing

def write_arpa(handle, vocab: Vocab, keys: list, prob: list, bo: list, order: int, escape: bool = False) -> None:
    """Write the model to a binary file handle in KenLM's ARPA layout."""
    V = len(vocab)
    tokens = [escape_token(t) for t in vocab.tokens] if escape else list(vocab.tokens)
    for t in tokens:
        if not t or any(c.isspace() for c in t):
            raise ArpaError(f"token {t!r} contains whitespace and cannot be written to an ARPA file")
    counts = [V] + [len(keys[n]) for n in range(2, order + 1)]
    head = ["\\data\\"] + [f"ngram {n}={c}" for n, c in enumerate(counts, 1)]
    handle.write(("\n".join(head) + "\n").encode("utf-8"))
    texts = tokens
    chunk = 1 << 18
    for n in range(1, order + 1):
        handle.write(f"\n\\{n}-grams:\n".encode("utf-8"))
        lower, texts = texts, ([] if n < order else None)
        count = V if n == 1 else len(keys[n])
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            if n == 1:
                part = lower[start:stop]
            else:
                k = keys[n][start:stop]
                part = [f"{tokens[f]} {lower[s]}" for f, s in zip((k % V).tolist(), (k // V).tolist())]
            if texts is not None:
                texts.extend(part)  # the next order builds on these
            probs = format_floats(prob[n][start:stop])
            if n < order:
                bos = format_floats(bo[n][start:stop])
                lines = [f"{p}\t{t}\t{b}\n" for p, t, b in zip(probs, part, bos)]
            else:
                lines = [f"{p}\t{t}\n" for p, t in zip(probs, part)]
            handle.write("".join(lines).encode("utf-8"))
    handle.write(b"\n\\end\\\n")


# ---------------------------------------------------------------- reading
#
# The reader streams: a plain or gzip file is decompressed and decoded one block at a
# time, and the \data\ header is checked before the body is read, so a file can take no
# more memory than the n-grams its header announces (which must fit the machine). A gzip
# bomb, a line without end or endless blank lines fail with a line number instead.

_BLOCK = 1 << 22  # bytes decompressed and split into lines at a time
_MAX_OTHER_LINES = 10_000  # text before \data\, header, section and blank lines
# lower bounds of the memory a loaded n-gram (int64 key, float32 prob and backoff) and
# unigram (its string, dictionary entries and arrays) take: a header asking for more than
# the machine has is refused before the body is read
_BYTES_PER_NGRAM = 16
_BYTES_PER_WORD = 150


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system that says
        return None


class _Lines:
    """The lines of an open binary (plain or gzip) stream, read one bounded block at a time."""

    def __init__(self, stream, where: str, compressed: bool):
        self._stream = stream
        self._where = where
        self._compressed = compressed
        self._block: list[str] = []
        self._next = 0
        self._tail = b""  # the start of a line that the last block cut
        self._at_start = True
        self._others = 0
        self.number = 0  # lines handed out so far: the last one's line number

    def rows(self, count: int) -> list[str]:
        """Up to `count` further lines, at most one block's worth; [] at the end of the file."""
        if self._next == len(self._block):
            self._fill()
        rows = self._block[self._next:self._next + count]
        self._next += len(rows)
        self.number += len(rows)
        return rows

    def next_text(self) -> str | None:
        """The next non-blank line outside the n-gram rows, stripped; None at the end of the file."""
        while rows := self.rows(1):
            self._others += 1
            if self._others > _MAX_OTHER_LINES:
                raise ArpaError(f"{self._where}: line {self.number}: more than {_MAX_OTHER_LINES:,} lines before "
                                "\\data\\, in the header or between sections; not an ARPA file")
            text = rows[0].strip()
            if text:
                return text
        return None

    def _fill(self) -> None:
        self._block, self._next = [], 0
        while True:
            data = self._read()
            buffer = self._tail + data
            # at the end of the file the last line may lack its newline
            cut = buffer.rfind(b"\n") + 1 if data else len(buffer)
            self._tail = buffer[cut:]
            if cut or not data:
                break
            if len(buffer) > 4 * MAX_LINE:  # UTF-8 takes at most 4 bytes per character
                raise ArpaError(f"{self._where}: line {self.number + 1} is longer than {MAX_LINE:,} characters; "
                                "not an ARPA file")
        if cut:
            text = self._decode(buffer[:cut])
            self._block = (text[:-1] if text.endswith("\n") else text).split("\n")
            if max(map(len, self._block)) > MAX_LINE:
                j = next(j for j, line in enumerate(self._block) if len(line) > MAX_LINE)
                raise ArpaError(f"{self._where}: line {self.number + j + 1} is longer than {MAX_LINE:,} "
                                "characters; not an ARPA file")

    def _read(self) -> bytes:
        try:
            return self._stream.read(_BLOCK)
        except (OSError, EOFError, zlib.error) as exc:
            what = "corrupt gzip data" if self._compressed else "cannot read"
            raise ArpaError(f"{self._where}: after line {self.number}: {what} ({exc})") from None

    def _decode(self, raw: bytes) -> str:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = self.number + raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - raw.rfind(b"\n", 0, exc.start)
            raise ArpaError(f"{self._where}: line {line}: not valid UTF-8 (byte {column} of the line)") from None
        if self._at_start:
            self._at_start = False
            text = text.removeprefix("\ufeff")
        return text


@contextmanager
def _open_lines(path):
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ArpaError(f"ARPA file not found: {path}") from None
    except IsADirectoryError:
        raise ArpaError(f"{path} is a directory, not an ARPA file") from None
    except OSError as exc:
        raise ArpaError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        compressed = handle.peek(2)[:2] == b"\x1f\x8b"
        with gzip.GzipFile(fileobj=handle, mode="rb") if compressed else handle as stream:
            yield _Lines(stream, str(path), compressed)


def _read_header(lines: _Lines, where: str) -> tuple[dict[int, int], str | None]:
    """{n: count} from the \\data\\ header, and the first line after it."""
    text = lines.next_text()
    while text is not None and text != "\\data\\":
        text = lines.next_text()
    if text is None:
        raise ArpaError(f"{where}: no \\data\\ header; not an ARPA file")
    header: dict[int, int] = {}
    text = lines.next_text()
    while text is not None and not text.startswith("\\"):
        m = _NGRAM_HEADER.fullmatch(text)
        if not m:
            raise ArpaError(f"{where}: line {lines.number}: expected 'ngram N=count', got {text[:60]!r}")
        n_text, count_text = m.groups()
        if len(n_text) > 3 or not 1 <= int(n_text) <= MAX_ORDER:
            raise ArpaError(f"{where}: line {lines.number}: order {n_text[:20]} is outside 1..{MAX_ORDER}, "
                            "the orders rnnkit supports")
        if len(count_text) > 18:
            raise ArpaError(f"{where}: line {lines.number}: ngram {n_text} count {count_text[:30]} is too large")
        if int(n_text) in header:
            raise ArpaError(f"{where}: line {lines.number}: ngram {n_text} is listed twice")
        header[int(n_text)] = int(count_text)
        text = lines.next_text()
    order = len(header)
    if order == 0 or sorted(header) != list(range(1, order + 1)):
        raise ArpaError(f"{where}: line {lines.number}: the \\data\\ header must list ngram 1..N counts; "
                        f"got {sorted(header)}")
    return header, text


def _check_capacity(header: dict[int, int], where: str) -> None:
    """Refuse, before the body is read, counts that 64-bit keys or this machine cannot hold."""
    V = header[1] + 1  # the reader may add <unk>
    for n in range(2, len(header) + 1):
        lower, what = (V, "words") if n == 2 else (header[n - 1], f"{n - 1}-grams")
        if lower * V > 2**63:  # keys of order n are below count(n-1) * V
            raise ArpaError(f"{where}: the header's {lower:,} {what} times {V:,} words are too many for "
                            f"64-bit {n}-gram keys")
        if header[n] > lower * V:  # each n-gram is a word before a distinct (n-1)-gram
            raise ArpaError(f"{where}: the header's {header[n]:,} {n}-grams are more than its {lower:,} {what} "
                            f"times {V:,} words can make (with <unk>)")
    total = sum(header.values())
    need = _BYTES_PER_NGRAM * total + _BYTES_PER_WORD * header[1]
    memory = _physical_memory()
    if memory is not None and need > memory:
        raise ArpaError(f"{where}: the header declares {total:,} n-grams, which need at least "
                        f"{need / 2**30:,.1f} GiB to load; this machine has {memory / 2**30:,.1f} GiB")


def _section(lines: _Lines, n: int, count: int, top: bool, marker: str | None, where: str):
    """Yield (line number of the first row, prob column, word columns, backoff column or None)
    per block of the \\n-grams: section that starts at `marker`; columns are object arrays of strings."""
    m = _SECTION.fullmatch(marker) if marker is not None else None
    if not m or len(m.group(1)) > 3 or int(m.group(1)) != n:
        got = "the end of the file" if marker is None else repr(marker[:60])
        raise ArpaError(f"{where}: line {lines.number}: expected '\\{n}-grams:', got {got}")
    start = lines.number
    done = 0
    while done < count:
        rows = lines.rows(count - done)
        if not rows:
            raise ArpaError(f"{where}: line {start}: the header says {count} {n}-grams but the file ends after {done}")
        first = lines.number - len(rows) + 1
        widths = np.fromiter(map(len, map(str.split, rows)), dtype=np.int64, count=len(rows))
        bad = (widths != n + 1) & ((widths != n + 2) | top)
        if bad.any():
            j = int(np.argmax(bad))
            if not rows[j].strip() or rows[j].lstrip().startswith("\\"):
                raise ArpaError(f"{where}: line {start}: the header says {count} {n}-grams but the section has "
                                f"{done + j}")
            expect = f"{n + 1}" if top else f"{n + 1} or {n + 2}"
            raise ArpaError(f"{where}: line {first + j}: a {n}-gram line needs {expect} fields "
                            f"(log10 prob, {n} words[, backoff]); got {widths[j]}")
        flat = np.array(" ".join(rows).split(), dtype=object)
        starts = np.cumsum(widths) - widths
        backoff = None
        if not top:  # SRILM leaves out backoffs of 0
            backoff = np.full(len(rows), "0", dtype=object)
            full = widths == n + 2
            backoff[full] = flat[starts[full] + n + 1]
        yield first, flat[starts], [flat[starts + k] for k in range(1, n + 1)], backoff
        done += len(rows)


def _check_section_end(lines: _Lines, n: int, count: int, where: str) -> str | None:
    """The next line after the \\n-grams: rows, which must not be another row."""
    text = lines.next_text()
    if text is not None and not text.startswith("\\"):
        raise ArpaError(f"{where}: line {lines.number}: the \\{n}-grams: section has more lines than the "
                        f"{count:,} the header says")
    return text


def _number_problem(text: str, kind: str) -> str | None:
    """Why `text` is not an acceptable log10 probability / backoff, or None."""
    if not _NUMBER.fullmatch(text):
        return f"{text[:40]!r} is not a number (a log10 {kind} is decimal, scientific or -inf)"
    with np.errstate(over="ignore"):
        value = np.float32(float(text))
    if np.isinf(value) and text != "-inf":
        return f"{text[:40]} is outside the float32 range (magnitude up to 3.4e38)"
    if kind == "probability" and value > 0:
        return f"log10 probability {text[:40]} is above 0, a probability above 1"
    return None


def _floats(column: np.ndarray, kind: str, first: int, where: str) -> np.ndarray:
    """float32 values of a column of number strings (kind "probability" or "backoff").

    Vectorised check: float() also takes `1_000`, non-ASCII digits, nan and inf, so the
    column must be ASCII without `_`, and its only infinities the literal `-inf` (log10
    of 0, which mle models have). Probabilities must be <= 0; backoffs may be positive
    (SRILM writes backoff weights above 1). The per-line loop only names the bad line.
    """
    try:
        values = column.astype(np.float64)
        text = "".join(column)
        plain = text.isascii() and "_" not in text
    except ValueError:
        plain = False
    if plain:
        with np.errstate(over="ignore"):
            values = values.astype(np.float32)
        wrong = np.isnan(values)
        if kind == "probability":
            wrong |= values > 0
        inf = np.isinf(values)
        wrong[inf] |= column[inf] != "-inf"
        if not wrong.any():
            return values
    j = next(j for j, s in enumerate(column) if _number_problem(s, kind))
    raise ArpaError(f"{where}: line {first + j}: {_number_problem(column[j], kind)}")


def _word_ids(column: np.ndarray, get, unescape: bool, first: int, where: str) -> np.ndarray:
    """ids of a column of words; ArpaError naming the first word that is not a unigram.

    Only the first word of each run of equal words is looked up: in suffix order (KenLM's
    and rnnkit's) the last words of consecutive n-grams repeat, and the lookups in a
    million-word dictionary are most of the reading time.
    """
    heads = np.flatnonzero(np.concatenate([[True], column[1:] != column[:-1]]))
    words = column[heads]
    if unescape:
        words = map(unescape_token, words)
    ids = np.fromiter(map(get, words, repeat(-1)), dtype=np.int64, count=len(heads))
    ids = np.repeat(ids, np.diff(heads, append=len(column)))
    if (ids < 0).any():
        j = int(np.argmax(ids < 0))
        raise ArpaError(f"{where}: line {first + j}: word {column[j]!r} is not among the 1-grams")
    return ids


def _read_unigrams(lines: _Lines, count: int, top: bool, marker, where: str):
    """(words as written, line of the first, log10 probs, backoffs) of the \\1-grams: section."""
    words, probs, backoffs, first_line = [], [], [], lines.number + 1
    for first, prob, (column,), backoff in _section(lines, 1, count, top, marker, where):
        first_line = first if not words else first_line
        words.extend(column.tolist())
        probs.append(_floats(prob, "probability", first, where))
        backoffs.append(_floats(backoff, "backoff", first, where) if backoff is not None
                        else np.zeros(len(prob), dtype=np.float32))
    empty = [np.zeros(0, dtype=np.float32)]
    return words, first_line, np.concatenate(probs or empty), np.concatenate(backoffs or empty)


def _read_ngrams(lines: _Lines, n: int, count: int, top: bool, marker, where: str, keys: list, V: int, get,
                 unescape: bool):
    """(sorted keys, log10 probs, backoffs or None) of the \\n-grams: section, n >= 2."""
    parts = []
    section_line = lines.number + 1
    for first, prob, columns, backoff in _section(lines, n, count, top, marker, where):
        ids = [_word_ids(c, get, unescape, first, where) for c in columns]
        # index of the suffix (w2..wn) in order n-1, found order by order
        suffix = ids[n - 1]
        ok = np.ones(len(suffix), dtype=bool)
        for m in range(2, n):
            if len(keys[m]) == 0:
                ok[:] = False
                break
            key = ngram_keys(suffix, ids[n - m], V)
            pos = np.minimum(np.searchsorted(keys[m], key), len(keys[m]) - 1)
            ok &= keys[m][pos] == key
            suffix = pos
        if not ok.all():
            j = int(np.argmax(~ok))
            words = " ".join(c[j] for c in columns)
            raise ArpaError(f"{where}: line {first + j}: the {n}-gram {words!r} has no lower-order entry for its "
                            f"last {n - 1} words (the file is not suffix-closed)")
        parts.append((ngram_keys(suffix, ids[0], V), _floats(prob, "probability", first, where),
                      None if top else _floats(backoff, "backoff", first, where)))
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), None if top else np.zeros(0, np.float32)
    key = np.concatenate([k for k, _, _ in parts])
    prob = np.concatenate([p for _, p, _ in parts])
    backoff = None if top else np.concatenate([b for _, _, b in parts])
    del parts
    order_idx = np.argsort(key, kind="stable")
    key = key[order_idx]
    dup = np.flatnonzero(key[1:] == key[:-1])
    if dup.size:
        first_seen, again = sorted(order_idx[dup[0]:dup[0] + 2].tolist())
        raise ArpaError(f"{where}: line {section_line + again}: duplicate {n}-gram (also on line "
                        f"{section_line + first_seen})")
    return key, prob[order_idx], None if top else backoff[order_idx]


def read_arpa(path, unit: str | None = "word"):
    """Parse an ARPA file. Returns (vocab, keys, prob, bo, order, notes, unit).

    With unit "char" or "jamo", `<sp>` and `<U+XXXX>` are mapped back to the units they
    stand for; unit None takes detect_unit's answer from the unigrams.

    Accepts KenLM, SRILM and rnnkit files (tabs or spaces, optional text before
    `\\data\\`, gzip); reading stops at `\\end\\`. Raises ArpaError naming the line for
    anything malformed. A file without `<unk>` gets one with log10 probability -100, as
    KenLM does.
    """
    where = str(path)
    with _open_lines(path) as lines:
        header, text = _read_header(lines, where)
        order = len(header)
        _check_capacity(header, where)
        raw, first_line, p1, b1 = _read_unigrams(lines, header[1], order == 1, text, where)
        text = _check_section_end(lines, 1, header[1], where)
        if unit is None:
            unit = detect_unit(raw)
        unescape = unit in ("char", "jamo")
        words = list(map(unescape_token, raw)) if unescape else raw
        index = dict(zip(words, range(len(words))))
        if len(index) != len(words):
            seen = set()
            j = next(j for j, w in enumerate(words) if w in seen or seen.add(w))
            raise ArpaError(f"{where}: line {first_line + j}: duplicate unigram {raw[j]!r}")
        notes = []
        for special in ("<s>", "</s>"):
            if special not in index:
                raise ArpaError(f"{where}: the 1-grams have no {special}; not a sentence-level ARPA model")
        if "<unk>" not in index:
            notes.append("no <unk> in the file: added with log10 probability -100, as KenLM does")
            words.append("<unk>")
            index["<unk>"] = len(words) - 1
            p1 = np.append(p1, np.float32(-100))
            b1 = np.append(b1, np.float32(0))
        specials_pos = [index[s] for s in SPECIALS]
        rest = np.setdiff1d(np.arange(len(words)), specials_pos)
        perm = np.concatenate([np.array(specials_pos, dtype=np.int64), rest])
        vocab = Vocab([words[j] for j in perm.tolist()])
        V = len(vocab)
        keys, prob, bo = [None, None], [None, p1[perm]], [None, b1[perm]]
        get = vocab._index.get
        for n in range(2, order + 1):
            key, p, b = _read_ngrams(lines, n, header[n], n == order, text, where, keys, V, get, unescape)
            keys.append(key)
            prob.append(p)
            bo.append(b)
            text = _check_section_end(lines, n, header[n], where)
        if text != "\\end\\":
            got = "the end of the file" if text is None else repr(text[:60])
            raise ArpaError(f"{where}: line {lines.number}: expected \\end\\, got {got}")
    bo[order] = None
    return vocab, keys, prob, bo, order, notes, unit


__all__ = ["ngram_keys", "format_floats", "write_arpa", "read_arpa", "detect_unit", "ngram_words", "escape_token",
           "unescape_token", "UNK_ID", "MAX_ORDER", "MAX_LINE"]
