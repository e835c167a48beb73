"""What a model file may hold: meta.json's fields and the arrays, per model type.

`modelfile.load` calls `validate` once the container has been read, so every model's
`from_file_contents` can trust its metadata and arrays. A field or array that rnnkit
cannot use gives one line naming it, the rule and the value, e.g.
    field 'hidden' must be an integer in 1..65536, got -3
instead of a traceback, a NaN score or a huge allocation later on.

The metadata is described declaratively (the Spec classes below: Integer, Number,
OneOf, ListOf, Record, ...); the arrays are checked against it by one function per
model type: names, dtypes, lengths and values.

Limits:
    hidden      1..MAX_HIDDEN (65536); the weights must hold exactly the V*H-sized
                layout for the vocabulary and hidden size (so the file's size bounds V*H)
    order       1..MAX_ORDER (100, arpa.py)
    classes     a class-factored RNN output: 1..V classes, a class map rising strictly
                from 0 to V, the class layer in the weights; direct connections of order
                1..MAX_DIRECT_ORDER (10) with a table of direct_size (1..2^40) entries,
                finite like the weights; a resumable file's AdaGrad sums of squares
                for it (`direct_accum`) of the same size, finite and >= 0; a mid-epoch
                checkpoint's lazily kept average of it (`carry_direct_average`, finite,
                and `carry_direct_synced`, steps in 0..train_state.step): both or neither
    weights     RNN weights and Adam's moments finite, |w| <= MAX_WEIGHT (1e30), which
                keeps every logit finite in float32 for tanh and logistic units
    n-grams     keys increasing and in range (a pass over each order: ~5 ms per 4M keys);
                a packed vocabulary's every unit UTF-8 and found at its own id (~0.1 s per
                million units); hash tables checked whole for size, range and occupancy,
                and by TABLE_SAMPLE lookups per order for where the keys sit (why a sample
                is enough: see TABLE_SAMPLE)
    nesting     free-form records (training, hyperparameters) at most MAX_DEPTH deep
    tokenizer   a morph model records Kiwi's settings (segmenter "kiwi" and its model
                type); an spm model holds its SentencePiece model as the uint8 array
                `spm_model` (raw bytes: binary stays binary, and meta.json stays small);
                no other unit has either
    spelling    distinct single characters (no surrogates) with a count each, at most
                MAX_COUNT, so the probabilities built from them stay finite
"""

from __future__ import annotations

import math
import sys

import numpy as np

from .arpa import MAX_ORDER
from .errors import ModelFileError
from .layout import DIRECT_HISTORY, MAX_DIRECT_ORDER, MAX_TABLE, layout_size
from .units import UNITS
from .vocab import SPECIALS

MAX_HIDDEN = 65536
MAX_WEIGHT = 1e30          # (H + 2) * MAX_WEIGHT stays far below float32's 3.4e38
MAX_DEPTH = 10             # training records nest 3 deep; describe() and json.dumps recurse
MAX_STEP = 2**31 - 1       # optimizer steps a model file may record: far beyond any run (the kernel takes int64)
MAX_COUNT = 2**53          # counts are summed as floats: exact up to here, never infinite


class SchemaError(ModelFileError):
    """A meta.json field or an array that rnnkit cannot use (modelfile.load adds the file)."""


def shown(value) -> str:
    """A value as a short one-line quote for a message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    text = repr(value)  # quotes strings and escapes line breaks: the message stays one line
    return text if len(text) <= 60 else text[:57] + "..."


def _join(field: str, key) -> str:
    """The path of a nested field; keys come from the file, so long ones are cut."""
    if isinstance(key, int):
        return f"{field}[{key}]"
    key = key if len(key) <= 40 else key[:37] + "..."
    return f"{field}.{key}" if field else key


# ---------------------------------------------------------------- metadata specs

class Spec:
    """One rule for a JSON value; `check` raises SchemaError naming the field."""

    expected = "valid"

    def check(self, value, field: str) -> None:
        if not self.accepts(value):
            self.refuse(value, field)

    def accepts(self, value) -> bool:
        raise NotImplementedError

    def refuse(self, value, field: str):
        raise SchemaError(f"field {field!r} must be {self.expected}, got {shown(value)}")


class Integer(Spec):
    """A JSON integer (not a boolean, not 8.0) in lo..hi."""

    def __init__(self, lo: int, hi: int | None = None):
        self.lo, self.hi = lo, hi
        self.expected = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"

    def accepts(self, value) -> bool:
        return type(value) is int and self.lo <= value and (self.hi is None or value <= self.hi)


class Number(Spec):
    """A JSON number that fits a float (an integer beyond 1.8e308 would not format)."""

    def __init__(self, lo: float | None = None, finite: bool = False):
        self.lo, self.finite = lo, finite
        self.expected = ("a finite number" if finite else "a number") + (f" >= {lo:g}" if lo is not None else "")

    def accepts(self, value) -> bool:
        if type(value) is int:
            value_ok = abs(value) <= sys.float_info.max
        else:
            value_ok = type(value) is float and (math.isfinite(value) or not self.finite)
        return value_ok and (self.lo is None or value >= self.lo)


class Boolean(Spec):
    expected = "true or false"

    def accepts(self, value) -> bool:
        return type(value) is bool


class String(Spec):
    expected = "a string"

    def accepts(self, value) -> bool:
        return isinstance(value, str)


class Null(Spec):
    expected = "null"

    def accepts(self, value) -> bool:
        return value is None


class OneOf(Spec):
    """One of a few strings; `choices` may be a function returning them, for lists that
    live in modules too costly to import before they are needed (the C kernel's)."""

    def __init__(self, choices):
        self._choices = choices

    @property
    def choices(self) -> tuple:
        return tuple(self._choices() if callable(self._choices) else self._choices)

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value in self.choices


class AnyOf(Spec):
    """The first alternative that accepts the value wins."""

    def __init__(self, *alternatives: Spec):
        self.alternatives = alternatives
        self.expected = " or ".join(a.expected for a in alternatives)

    def check(self, value, field: str) -> None:
        for alternative in self.alternatives:
            try:
                alternative.check(value, field)
                return
            except SchemaError:
                pass
        self.refuse(value, field)


class ListOf(Spec):
    def __init__(self, item: Spec, min_length: int = 0):
        self.item, self.min_length = item, min_length
        self.expected = f"a list of at least {min_length} items" if min_length else "a list"

    def check(self, value, field: str) -> None:
        if not isinstance(value, list) or len(value) < self.min_length:
            self.refuse(value, field)
        for i, item in enumerate(value):
            self.item.check(item, _join(field, i))


class Record(Spec):
    """A JSON object with known fields; other keys are checked with `extra`, or refused."""

    expected = "an object"

    def __init__(self, fields: dict[str, Spec], required: tuple = (), extra: Spec | None = None):
        self.fields, self.required, self.extra = fields, required, extra

    def check(self, value, field: str) -> None:
        if not isinstance(value, dict):
            self.refuse(value, field)
        for key in self.required:
            if key not in value:
                raise SchemaError(f"field {_join(field, key)!r} is missing")
        for key, item in value.items():
            spec = self.fields.get(key, self.extra)
            if spec is None:
                raise SchemaError(f"unexpected field {_join(field, key)!r}")
            spec.check(item, _join(field, key))


class EmptyOr(Spec):
    """{} (e.g. a training state left out of an exported model), or the record."""

    def __init__(self, record: Record):
        self.record = record

    def check(self, value, field: str) -> None:
        if value != {}:
            self.record.check(value, field)


class Anything(Spec):
    """Checked elsewhere (a mixture's component, once its type is known)."""

    def accepts(self, value) -> bool:
        return True


class Json(Spec):
    """Any JSON value nested at most MAX_DEPTH levels (free-form records rnnkit only shows)."""

    def check(self, value, field: str, depth: int = MAX_DEPTH) -> None:
        if isinstance(value, (dict, list)):
            if depth == 0:
                raise SchemaError(f"field {field!r} is nested deeper than {MAX_DEPTH} levels")
            for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
                self.check(item, _join(field, key), depth - 1)


class VocabList(Spec):
    expected = "a list of distinct strings starting with " + ", ".join(map(repr, SPECIALS))

    def check(self, value, field: str) -> None:
        if not isinstance(value, list) or tuple(value[:len(SPECIALS)]) != SPECIALS:
            self.refuse(value, field)
        if set(map(type, value)) != {str}:  # in C: a vocabulary can hold millions of units
            i = next(i for i, token in enumerate(value) if type(token) is not str)
            raise SchemaError(f"field {_join(field, i)!r} must be a string, got {shown(value[i])}")
        if len(set(value)) != len(value):
            seen = {}
            for i, token in enumerate(value):
                if token in seen:
                    raise SchemaError(f"field {field!r} holds {shown(token)} twice "
                                      f"(entries {seen[token]} and {i})")
                seen[token] = i


def _activations() -> tuple:
    from .kernel import ACTIVATIONS  # the C kernel loads only when an RNN is read
    return tuple(ACTIVATIONS)


def _smoothings() -> tuple:
    from .ngram import SMOOTHINGS  # ngram imports modelfile, which imports this module
    return (*SMOOTHINGS, "arpa")    # "arpa": read from an ARPA file, smoothing unknown


class Character(Spec):
    expected = "a single character"

    def accepts(self, value) -> bool:
        return isinstance(value, str) and len(value) == 1 and not 0xD800 <= ord(value) <= 0xDFFF


UNIT = OneOf(UNITS)
NUMBER = Number()
COUNT = Integer(0)

TOKENIZER = Record({"segmenter": OneOf(("kiwi", "sentencepiece")), "model_type": String(),
                    "kiwipiepy": String(), "pieces": COUNT, "source": String()},
                   required=("segmenter",))
SEGMENTERS = {"morph": "kiwi", "spm": "sentencepiece"}
SPELLING = Record({"chars": ListOf(Character()), "counts": ListOf(Integer(0, MAX_COUNT)),
                   "units": Integer(0, MAX_COUNT)},
                  required=("chars", "counts", "units"))

# what `rnnkit info` and `train --resume` read from a training record
EPOCH = Record({"epoch": COUNT, "train_loss": NUMBER, "valid_loss": NUMBER, "valid_bpc": NUMBER,
                "valid_ppl": NUMBER, "train_bpc": NUMBER, "lr": NUMBER, "seconds": NUMBER,
                "tokens_per_s": NUMBER, "tokens": COUNT, "kept": Boolean()},
               required=("epoch", "train_bpc", "valid_bpc", "lr", "tokens_per_s", "seconds"),
               extra=Json())
TRAINING = Record({"corpus": AnyOf(String(), Record({}, extra=NUMBER)), "epochs": ListOf(EPOCH)},
                  extra=Json())
TRAIN_STATE = EmptyOr(Record(
    {"epoch": COUNT, "lr": Number(lo=0, finite=True), "halving": Boolean(),
     "best_valid": AnyOf(Number(finite=True), Null()), "step": Integer(0, MAX_STEP),
     "stale": COUNT, "done": Boolean()},
    required=("epoch", "lr", "halving", "best_valid", "step", "stale", "done"), extra=Json()))

RNN_META = Record({"unit": UNIT, "tokenizer": TOKENIZER, "spelling": SPELLING,
                   "vocab": VocabList(), "hidden": Integer(1, MAX_HIDDEN),
                   "activation": OneOf(_activations), "stream": Boolean(),
                   "classes": Integer(1), "direct_order": Integer(0, MAX_DIRECT_ORDER),
                   "direct_size": Integer(0, MAX_TABLE),
                   "hyperparameters": Record({}, extra=Json()), "training": TRAINING,
                   "train_state": TRAIN_STATE},
                  required=("unit", "vocab", "hidden"))
# "vocab": format 1 kept an n-gram model's vocabulary here; format 2 stores it as arrays
NGRAM_META = Record({"order": Integer(1, MAX_ORDER), "unit": UNIT, "tokenizer": TOKENIZER,
                     "spelling": SPELLING, "smoothing": OneOf(_smoothings),
                     "vocab": VocabList(), "training": TRAINING},
                    required=("order", "unit"))
COMPONENT = Record({"type": OneOf(("rnn", "ngram")), "meta": Record({}, extra=Anything())},
                   required=("type", "meta"))
MIX_META = Record({"unit": UNIT, "weights": ListOf(Number(lo=0, finite=True)), "training": TRAINING,
                   "components": ListOf(COMPONENT, min_length=2)},
                  required=("unit", "weights", "components"))


# ---------------------------------------------------------------- arrays

def _take(arrays: dict, name: str, dtype, length: int | None = None) -> np.ndarray:
    """Remove and return arrays[name], a 1-D array of `dtype` (and `length` when given)."""
    if name not in arrays:
        raise SchemaError(f"array {name!r} is missing")
    array = arrays.pop(name)
    if array.dtype != dtype or array.ndim != 1 or (length is not None and array.size != length):
        want = f"{np.dtype(dtype).name} of shape ({length},)" if length is not None else \
            f"a flat {np.dtype(dtype).name} array"
        raise SchemaError(f"array {name!r} must be {want}, got {array.dtype.name} of shape {array.shape}")
    return array


def _values_within(array: np.ndarray, name: str, lo: float, hi: float, what: str) -> None:
    """lo <= every value <= hi. min() and max() allocate nothing and NaN fails both tests."""
    if array.size and not (lo <= array.min() and array.max() <= hi):
        bad = array[~((array >= lo) & (array <= hi))][0]
        raise SchemaError(f"array {name!r} must hold {what}, found {str(bad)}")  # str(): shortest float32 form


def _tokenizer(meta: dict, arrays: dict, field: str, prefix: str) -> None:
    """The unit's settings: Kiwi's for morph, a SentencePiece model for spm, none otherwise."""
    unit, settings = meta["unit"], meta.get("tokenizer")
    wanted = SEGMENTERS.get(unit)
    if wanted is None and settings is not None:
        raise SchemaError(f"unexpected field {_join(field, 'tokenizer')!r} (unit {unit!r} has no settings)")
    if wanted is not None:
        if settings is None:
            raise SchemaError(f"field {_join(field, 'tokenizer')!r} is missing (unit {unit!r} records its segmenter)")
        if settings["segmenter"] != wanted:
            raise SchemaError(f"field {_join(_join(field, 'tokenizer'), 'segmenter')!r} must be {wanted!r} "
                              f"for unit {unit!r}, got {shown(settings['segmenter'])}")
    if unit == "spm":
        if _take(arrays, prefix + "spm_model", np.uint8).size == 0:
            raise SchemaError(f"array {prefix + 'spm_model'!r} is empty (it holds the SentencePiece model)")


def _spelling(meta: dict, field: str) -> None:
    spelling = meta.get("spelling")
    if spelling is None:
        return
    chars, counts = spelling["chars"], spelling["counts"]
    if len(counts) != len(chars):
        raise SchemaError(f"field {_join(_join(field, 'spelling'), 'counts')!r} must hold one count per "
                          f"character ({len(chars)}), got {len(counts)}")
    if len(set(chars)) != len(chars):
        raise SchemaError(f"field {_join(_join(field, 'spelling'), 'chars')!r} holds a character twice")


def _refuse_leftovers(arrays: dict) -> None:
    if arrays:
        raise SchemaError(f"unexpected array {next(iter(arrays))!r}")


RNN_WEIGHT_ARRAYS = ("params", "raw_params", "adam_m", "adam_v")
# the direct table (and its raw copy behind an average, and AdaGrad's sums of squares for it)
TABLE_ARRAYS = ("direct_table", "raw_direct_table", "direct_accum")
SQUARES = ("adam_v", "direct_accum")   # sums of squares: never negative
EPOCH_START = "epoch_start_"   # a mid-epoch checkpoint's copy of each at the epoch's start (train.py)
CARRIED_STATE = "carry_h"      # a mid-epoch checkpoint's hidden state, lanes x hidden (train.py)
CARRIED_HISTORY = "carry_history"   # and its direct history, lanes x DIRECT_HISTORY input ids or -1
# and, with a direct table behind an average, the average as the run keeps it (lazily) and the
# step each entry of it is up to date with (train.TableAverage); its direct_table is that caught up
CARRIED_AVERAGE = "carry_direct_average"
CARRIED_SYNCED = "carry_direct_synced"


def _output_layer(meta: dict, field: str) -> tuple[int, int]:
    """(classes, direct_size) the metadata declares, checked against each other and V
    (0, 0: a full softmax)."""
    V, C = len(meta["vocab"]), meta.get("classes", 0)
    order, size = meta.get("direct_order", 0), meta.get("direct_size", 0)
    if C > V:
        raise SchemaError(f"field {_join(field, 'classes')!r} must be an integer in 1..{V} "
                          f"(the vocabulary size), got {C}")
    if (order or size) and not C:
        raise SchemaError(f"field {_join(field, 'direct_order')!r} needs a class-factored output "
                          f"(field {_join(field, 'classes')!r})")
    if bool(order) != bool(size):
        raise SchemaError(f"fields {_join(field, 'direct_order')!r} and {_join(field, 'direct_size')!r} "
                          f"must both be 0 or both be positive, got {order} and {size}")
    return C, size


def _finite_weights(array: np.ndarray, name: str, lo: float = -MAX_WEIGHT) -> None:
    _values_within(array, name, lo, MAX_WEIGHT, f"finite values in {lo:g}..{MAX_WEIGHT:g}")


def _carried(arrays: dict, name: str, dtype, width: int) -> np.ndarray:
    """A mid-epoch checkpoint's per-lane array: `dtype` of shape (lanes, width)."""
    array = arrays.pop(name)
    if array.dtype != dtype or array.ndim != 2 or array.shape[1] != width:
        raise SchemaError(f"array {name!r} must be {np.dtype(dtype).name} of shape (lanes, {width}), "
                          f"got {array.dtype.name} of shape {array.shape}")
    return array


def _rnn_arrays(meta: dict, arrays: dict, field: str = "", prefix: str = "") -> None:
    V, H = len(meta["vocab"]), meta["hidden"]
    C, table_size = _output_layer(meta, field)
    sizes = dict.fromkeys(RNN_WEIGHT_ARRAYS, layout_size(V, H, C))
    if table_size:
        sizes.update(dict.fromkeys(TABLE_ARRAYS, table_size))
    for name, size in sizes.items():
        for stored in (name, EPOCH_START + name):
            # the weights (and a table) always, the others only in a resumable file
            if stored in ("params", "direct_table") or prefix + stored in arrays:
                array = _take(arrays, prefix + stored, np.float32, size)
                _finite_weights(array, prefix + stored, 0.0 if name in SQUARES else -MAX_WEIGHT)
    if C:
        classes = _take(arrays, prefix + "class_start", np.int64, C + 1)
        if not (classes[0] == 0 and classes[-1] == V and (classes[1:] > classes[:-1]).all()):
            raise SchemaError(f"array {prefix + 'class_start'!r} must rise strictly from 0 to {V} "
                              "(every class holds a word)")
    lanes = None
    if prefix + CARRIED_STATE in arrays:
        h = _carried(arrays, prefix + CARRIED_STATE, np.float32, H)
        _finite_weights(h, prefix + CARRIED_STATE)
        lanes = h.shape[0]
    if table_size and prefix + CARRIED_HISTORY in arrays:   # only direct connections read a history
        history = _carried(arrays, prefix + CARRIED_HISTORY, np.int64, DIRECT_HISTORY)
        if lanes is None:
            raise SchemaError(f"array {prefix + CARRIED_HISTORY!r} comes without {prefix + CARRIED_STATE!r}")
        if history.shape[0] != lanes:
            raise SchemaError(f"array {prefix + CARRIED_HISTORY!r} must have a row per lane of "
                              f"{prefix + CARRIED_STATE!r} ({lanes}), got {history.shape[0]}")
        _values_within(history, prefix + CARRIED_HISTORY, -1, V - 1, f"input ids in 0..{V - 1} or -1")
    if table_size and (prefix + CARRIED_AVERAGE in arrays or prefix + CARRIED_SYNCED in arrays):
        _lazy_average(meta, arrays, prefix, table_size, lanes)


def _lazy_average(meta: dict, arrays: dict, prefix: str, table_size: int, lanes: int | None) -> None:
    """A mid-epoch checkpoint's lazily kept table average: both arrays, beside the carried state."""
    average_name, synced_name = prefix + CARRIED_AVERAGE, prefix + CARRIED_SYNCED
    if average_name not in arrays or synced_name not in arrays or lanes is None:
        raise SchemaError(f"arrays {average_name!r} and {synced_name!r} come together, with "
                          f"{prefix + CARRIED_STATE!r} (a mid-epoch checkpoint)")
    _finite_weights(_take(arrays, average_name, np.float32, table_size), average_name)
    step = meta.get("train_state", {}).get("step", 0)
    _values_within(_take(arrays, synced_name, np.int64, table_size), synced_name, 0, step,
                   f"training steps in 0..{step} (train_state.step)")


def _ngram_arrays(meta: dict, arrays: dict, prefix: str = "") -> None:
    """The n-gram arrays; with the vocabulary as arrays (format 2), also the query
    structures: a hash table per order n >= 2 and KenLM's extendable flags per n < N."""
    packed = "vocab" not in meta
    V = _packed_vocabulary(arrays, prefix) if packed else len(meta["vocab"])
    order = meta["order"]
    lower = V  # n-grams of the order below
    all_keys, tables = [None, None], [None, None]
    for n in range(1, order + 1):
        length = V
        if n > 1:
            name = f"{prefix}keys_{n}"
            keys = _take(arrays, name, np.int64)
            length = keys.size
            # key = index of the (n-1)-gram suffix * V + first word, sorted for lookups
            if length and not (keys[0] >= 0 and keys[-1] < lower * V and (keys[1:] > keys[:-1]).all()):
                raise SchemaError(f"array {name!r} must hold increasing n-gram keys in 0..{lower * V - 1}")
            all_keys.append(keys)
            if packed:
                tables.append(_hash_table(arrays, f"{prefix}table_{n}", all_keys, tables, V))
        prob = _take(arrays, f"{prefix}prob_{n}", np.float32, length)
        _values_within(prob, f"{prefix}prob_{n}", -np.inf, 0.0, "log10 probabilities (<= 0)")
        if n < order:
            bo = _take(arrays, f"{prefix}bo_{n}", np.float32, length)
            _values_within(bo, f"{prefix}bo_{n}", -np.inf, float(np.finfo(np.float32).max),
                           "log10 backoff weights (not NaN or +inf)")
            if packed:
                flags = _take(arrays, f"{prefix}extendable_{n}", np.uint8, length)
                _values_within(flags, f"{prefix}extendable_{n}", 0, 1, "flags (0 or 1)")
        lower = length


# A hash table holds at most this many keys or units (31-bit indices, csrc/ngram.c).
MAX_TABLE_KEYS = 2**31 - 1
# Keys of an n-gram table looked up at load, evenly spaced: a table is checked whole for
# its size, its entries' range and how many it holds, and by sampled lookups for where
# they sit. The C lookup compares the key at every probe, so a table can never make it
# read out of bounds or return a wrong n-gram; at worst a crafted table hides an n-gram
# (scored by backing off, as if the file's probabilities were changed). Accidental damage
# fails the zip checksum first. Looking up every key would cost about a second per 10
# million n-grams; the sample costs nothing.
TABLE_SAMPLE = 4096


def _table_of(arrays: dict, name: str, entries: int, what: str) -> np.ndarray:
    """arrays[name]: a hash table for `entries` keys (int64 entries: 0 when empty, else
    index << 32 | fingerprint, index < entries), holding that many: every probe
    sequence then ends at an empty entry."""
    from . import kernel   # the C kernel loads only when a model with tables is read
    if entries > MAX_TABLE_KEYS:
        raise SchemaError(f"{what} hold {entries} entries; a hash table holds at most {MAX_TABLE_KEYS}")
    table = _take(arrays, name, np.int64, kernel.ngram_table_size(entries))
    # index < entries for every entry, checked without a temporary: entries < entries << 32
    _values_within(table, name, 0, max((entries << 32) - 1, 0), f"0 or entries of indices below {entries}")
    if np.count_nonzero(table) != entries:
        raise SchemaError(f"array {name!r} must hold {entries} entries, holds {np.count_nonzero(table)}")
    return table


def _hash_table(arrays: dict, name: str, keys: list, tables: list, V: int) -> np.ndarray:
    """Order n's table (n = len(keys) - 1), checked against the keys of orders 2..n."""
    from . import kernel
    n = len(keys) - 1
    table = _table_of(arrays, name, keys[n].size, f"array 'keys_{n}'")
    miss = kernel.ngram_table_misses(keys, tables + [table], V, n, max(1, keys[n].size // TABLE_SAMPLE))
    if miss >= 0:
        raise SchemaError(f"array {name!r} does not find n-gram {miss} of order {n}")
    return table


def _packed_vocabulary(arrays: dict, prefix: str) -> int:
    """The vocabulary as arrays: UTF-8 text, offsets, hash table. Every unit is checked
    (UTF-8, found at its own id, so no two are equal): a million units take ~0.1 s.
    Returns its size V."""
    from . import kernel
    text_name, offsets_name, table_name = (prefix + name for name in ("vocab_text", "vocab_offsets", "vocab_table"))
    text = _take(arrays, text_name, np.uint8)
    offsets = _take(arrays, offsets_name, np.int64)
    V = offsets.size - 1
    if V < len(SPECIALS) or offsets[0] != 0 or offsets[-1] != text.size or (offsets[1:] < offsets[:-1]).any():
        raise SchemaError(f"array {offsets_name!r} must increase from 0 to the {text.size} bytes of {text_name!r} "
                          f"and delimit at least {len(SPECIALS)} units")
    firsts = [text[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(SPECIALS))]
    if firsts != [special.encode() for special in SPECIALS]:
        raise SchemaError(f"array {text_name!r} must start with the units " + ", ".join(map(repr, SPECIALS)))
    table = _table_of(arrays, table_name, V, f"array {offsets_name!r} (the units)")
    fault = kernel.vocab_table_fault(table, text, offsets)
    if fault is None:
        return V
    kind, unit = fault
    raw = text[offsets[unit]:offsets[unit + 1]].tobytes()
    if kind == "utf8":
        raise SchemaError(f"array {text_name!r} holds unit {unit} that is not UTF-8: {shown(raw)}")
    found = kernel.ngram_unit_id(kernel.ngram_vocab_tables(text, offsets, table), raw)
    if found != unit and text[offsets[found]:offsets[found + 1]].tobytes() == raw:
        raise SchemaError(f"array {text_name!r} holds {shown(raw.decode('utf-8', 'surrogatepass'))} twice "
                          f"(units {min(found, unit)} and {max(found, unit)})")
    raise SchemaError(f"array {table_name!r} does not find unit {unit}")


def _validate_rnn(meta: dict, arrays: dict, field: str = "", prefix: str = "") -> None:
    RNN_META.check(meta, field)
    _tokenizer(meta, arrays, field, prefix)
    _spelling(meta, field)
    if meta.get("train_state") and "epochs" not in meta.get("training", {}):
        # train --resume appends to the epoch record
        raise SchemaError(f"field {_join(_join(field, 'training'), 'epochs')!r} is missing "
                          "(a model with a training state keeps its epoch record)")
    _rnn_arrays(meta, arrays, field, prefix)


def _validate_ngram(meta: dict, arrays: dict, field: str = "", prefix: str = "") -> None:
    NGRAM_META.check(meta, field)
    _tokenizer(meta, arrays, field, prefix)
    _spelling(meta, field)
    _ngram_arrays(meta, arrays, prefix)


def _validate_mix(meta: dict, arrays: dict) -> None:
    MIX_META.check(meta, "")
    components, weights = meta["components"], meta["weights"]
    if len(weights) != len(components):
        raise SchemaError(f"field 'weights' must hold one weight per component ({len(components)}), "
                          f"got {len(weights)}")
    total = sum(float(w) for w in weights)  # floats first: huge integers would overflow
    if abs(total - 1.0) > 1e-6:
        raise SchemaError(f"field 'weights' must sum to 1, got {total:g}")
    for i, entry in enumerate(components):
        field = f"components[{i}].meta"
        validate_component = _validate_rnn if entry["type"] == "rnn" else _validate_ngram
        validate_component(entry["meta"], arrays, field, f"c{i}.")
        if entry["meta"]["unit"] != meta["unit"]:
            raise SchemaError(f"field '{field}.unit' must be {meta['unit']!r} (the mixture's unit), "
                              f"got {shown(entry['meta']['unit'])}")


VALIDATORS = {"rnn": _validate_rnn, "ngram": _validate_ngram, "mix": _validate_mix}


def validate(model_type: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Check meta.json (without format, version and type) and the arrays of a model of
    `model_type`; raises SchemaError naming the first field or array that is wrong."""
    remaining = dict(arrays)
    VALIDATORS[model_type](meta, remaining)
    _refuse_leftovers(remaining)
