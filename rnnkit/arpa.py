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
import re

import numpy as np

from .errors import ArpaError
from .vocab import SPECIALS, UNK_ID, Vocab

_NGRAM_HEADER = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)\s*$")
_SECTION = re.compile(r"^\\(\d+)-grams:\s*$")
_ESCAPED = re.compile(r"^<U\+([0-9A-F]{4,6})>$")
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
    match = _ESCAPED.match(token)
    return chr(int(match.group(1), 16)) if match else token


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

def _open_text(path) -> list[str]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ArpaError(f"ARPA file not found: {path}") from None
    except IsADirectoryError:
        raise ArpaError(f"{path} is a directory, not an ARPA file") from None
    except OSError as exc:
        raise ArpaError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ArpaError(f"{path}: corrupt gzip file ({exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ArpaError(f"{path}: line {line}: not valid UTF-8 (byte offset {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").split("\n")


def read_arpa(path, unit: str | None = "word"):
    """Parse an ARPA file. Returns (vocab, keys, prob, bo, order, notes, unit).

    With unit "char" or "jamo", `<sp>` and `<U+XXXX>` are mapped back to the units they
    stand for; unit None takes detect_unit's answer from the unigrams.

    Accepts KenLM, SRILM and rnnkit files (tabs or spaces, optional text before
    `\\data\\`, gzip). Raises ArpaError naming the line for anything malformed. A file
    without `<unk>` gets one with log10 probability -100, as KenLM does.
    """
    lines = _open_text(path)
    where = f"{path}"
    i = 0
    while i < len(lines) and lines[i].strip() != "\\data\\":
        i += 1
    if i == len(lines):
        raise ArpaError(f"{where}: no \\data\\ header; not an ARPA file")
    i += 1
    header: dict[int, int] = {}
    while i < len(lines) and not lines[i].strip().startswith("\\"):
        text = lines[i].strip()
        if text:
            m = _NGRAM_HEADER.match(text)
            if not m:
                raise ArpaError(f"{where}: line {i + 1}: expected 'ngram N=count', got {text[:60]!r}")
            header[int(m.group(1))] = int(m.group(2))
        i += 1
    order = len(header)
    if order == 0 or sorted(header) != list(range(1, order + 1)):
        raise ArpaError(f"{where}: line {i}: the \\data\\ header must list ngram 1..N counts; got {sorted(header)}")
    sections: dict[int, tuple[int, list[str]]] = {}
    for n in range(1, order + 1):
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i == len(lines):
            raise ArpaError(f"{where}: line {i}: file ends before the \\{n}-grams: section")
        m = _SECTION.match(lines[i].strip())
        if not m or int(m.group(1)) != n:
            raise ArpaError(f"{where}: line {i + 1}: expected '\\{n}-grams:', got {lines[i].strip()[:60]!r}")
        i += 1
        start = i
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("\\"):
            i += 1
        body = lines[start:i]
        if len(body) != header[n]:
            raise ArpaError(
                f"{where}: line {start}: the header says {header[n]} {n}-grams but the section has {len(body)}"
            )
        sections[n] = (start + 1, body)
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i == len(lines) or lines[i].strip() != "\\end\\":
        raise ArpaError(f"{where}: line {min(i + 1, len(lines))}: expected \\end\\")

    def fields_of(n):
        first_line, body = sections[n]
        fields = [line.split() for line in body]
        for j, f in enumerate(fields):
            if len(f) not in (n + 1, n + 2) or (len(f) == n + 2 and n == order):
                expect = f"{n + 1}" if n == order else f"{n + 1} or {n + 2}"
                raise ArpaError(
                    f"{where}: line {first_line + j}: a {n}-gram line needs {expect} fields "
                    f"(log10 prob, {n} words[, backoff]); got {len(f)}"
                )
        return first_line, fields

    def floats(column, first_line, n):
        try:
            return np.array(column, dtype=np.float64).astype(np.float32)
        except ValueError:
            for j, s in enumerate(column):
                try:
                    float(s)
                except ValueError:
                    raise ArpaError(f"{where}: line {first_line + j}: {s!r} is not a number ({n}-grams)") from None
            raise

    # unigrams define the vocabulary
    first_line, fields = fields_of(1)
    if unit is None:
        unit = detect_unit([f[1] for f in fields])
    unescape = unit in ("char", "jamo")
    words = [unescape_token(f[1]) if unescape else f[1] for f in fields]
    p1 = floats([f[0] for f in fields], first_line, 1)
    b1 = floats([f[2] if len(f) == 3 else "0" for f in fields], first_line, 1)
    index = {}
    for j, w in enumerate(words):
        if w in index:
            raise ArpaError(f"{where}: line {first_line + j}: duplicate unigram {w!r}")
        index[w] = j
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
    rest = [j for j in range(len(words)) if j not in set(specials_pos)]
    perm = np.array(specials_pos + rest, dtype=np.int64)
    vocab = Vocab([words[j] for j in perm])
    V = len(vocab)
    file_to_id = np.empty(len(words), dtype=np.int64)
    file_to_id[perm] = np.arange(V)
    keys, prob, bo = [None, None], [None, p1[perm]], [None, b1[perm]]
    token_index = {w: int(file_to_id[j]) for w, j in index.items()}

    for n in range(2, order + 1):
        first_line, fields = fields_of(n)
        count = len(fields)
        ids = np.empty((count, n), dtype=np.int64)
        get = token_index.get
        for j, f in enumerate(fields):
            row = [get(unescape_token(w) if unescape else w, -1) for w in f[1 : n + 1]]
            if -1 in row:
                missing = f[1 + row.index(-1)]
                raise ArpaError(f"{where}: line {first_line + j}: word {missing!r} is not among the 1-grams")
            ids[j] = row
        p = floats([f[0] for f in fields], first_line, n)
        b = floats([f[n + 1] if len(f) == n + 2 else "0" for f in fields], first_line, n) if n < order else None
        # index of the suffix (w2..wn) in order n-1, found order by order
        suffix = ids[:, n - 1].copy()
        ok = np.ones(count, dtype=bool)
        for m in range(2, n):
            key = ngram_keys(suffix, ids[:, n - m], V)
            if len(keys[m]) == 0:
                ok[:] = False
                break
            pos = np.minimum(np.searchsorted(keys[m], key), len(keys[m]) - 1)
            ok &= keys[m][pos] == key
            suffix = pos
        if not np.all(ok):
            j = int(np.flatnonzero(~ok)[0])
            raise ArpaError(
                f"{where}: line {first_line + j}: the {n}-gram {' '.join(fields[j][1:n + 1])!r} has no "
                f"lower-order entry for its last {n - 1} words (the file is not suffix-closed)"
            )
        if V and suffix.size and int(suffix.max()) >= (2**63 - 1) // V:
            raise ArpaError(f"{where}: too many {n - 1}-grams for 64-bit keys")
        key = ngram_keys(suffix, ids[:, 0], V)
        order_idx = np.argsort(key, kind="stable")
        key = key[order_idx]
        dup = np.flatnonzero(key[1:] == key[:-1])
        if dup.size:
            j = int(order_idx[dup[0] + 1])
            raise ArpaError(f"{where}: line {first_line + j}: duplicate {n}-gram {' '.join(fields[j][1:n + 1])!r}")
        keys.append(key)
        prob.append(p[order_idx])
        bo.append(b[order_idx] if b is not None else None)
    bo[order] = None
    return vocab, keys, prob, bo, order, notes, unit


__all__ = ["ngram_keys", "format_floats", "write_arpa", "read_arpa", "detect_unit", "ngram_words", "escape_token",
           "unescape_token", "UNK_ID"]
