"""Seeded, structure-aware fuzzing of model files.

Tiny valid RNN, n-gram and mixture files are taken apart (meta.json as a dict, the
.npy members as bytes), mutated a few times each (meta.json fields changed, deleted,
retyped, swapped and nested; arrays swapped, retyped, reshaped and given NaN, infinite
or huge values; members truncated, bit-flipped, compressed, duplicated and renamed;
the finished file cut short or flipped), written back and loaded, and two sentences
are scored. Every outcome must be an RnnkitError with a one-line message, or scores
that are log10 probabilities: finite or -inf, and <= 0 (never NaN, +inf or > 0).
"""

import copy
import io
import json
import math
import random
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest

import rnnkit
import rnnkit.kenlm as rnnkit_kenlm
from rnnkit.errors import RnnkitError

from modelfile_craft import KINDS, SENTENCES, make_models, read_members

SEED = 20240611
CASES_PER_MODEL = 400

VALUES = [None, True, False, 0, 1, -1, 2, 3, 4, 8, 127, 128, 65536, 65537, 2**31, 2**63, 10**400,
          0.5, -0.5, 1e308, float("nan"), float("inf"), float("-inf"), "", "tanh", "logistic",
          "identity", "relu", "word", "char", "jamo", "kn", "arpa", "rnn", "ngram", "mix", "<unk>",
          "<s>", "</s>", "the", "cat", "x\ny", [], {}, [1, 2], ["<unk>", "<s>", "</s>"], {"a": 1},
          [0.5, 0.5], [1.0, 0.0], [0.25, 0.75]]
NOT_POSITIVE = [-np.inf, -3e38, -1e31, -99.0, -1e-3, 0.0, -0.0]
NOT_FINITE = [np.nan, np.inf]
POSITIVE = [1e-3, 0.5, 30.0, 1e29, 1e31, 3e38]
DTYPES = ["<f8", "<f2", "<i4", "<i8", "|u1", "|b1", ">f4", ">i8", "<c8", "object"]


class Draft:
    """A model file in pieces: meta (a dict, or raw bytes once made unparsable), members
    [name, bytes], the names to deflate, and edits of the finished file's bytes."""

    def __init__(self, meta, members):
        self.meta = meta
        self.members = [list(m) for m in members]
        self.deflated: set[str] = set()
        self.file_edits: list = []

    def write(self, path) -> None:
        raw = self.meta if isinstance(self.meta, bytes) else json.dumps(self.meta).encode()
        with zipfile.ZipFile(path, "w") as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate names are one of the mutations
            for name, data in [("meta.json", raw), *self.members]:
                info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED if name in self.deflated else zipfile.ZIP_STORED
                archive.writestr(info, data)
        data = bytearray(path.read_bytes())
        for edit in self.file_edits:
            data = edit(data)
        path.write_bytes(bytes(data))


# ---------------------------------------------------------------- meta.json mutations

def random_path(rng, meta) -> list:
    """A random walk from the root: stops early often, so top-level fields come up most."""
    path, node = [], meta
    while isinstance(node, (dict, list)) and len(node) and (not path or rng.random() < 0.65):
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append(key)
        node = node[key]
    return path


def parent_of(meta, path):
    node = meta
    for key in path[:-1]:
        node = node[key]
    return node


def meta_set(rng, draft):
    path = random_path(rng, draft.meta)
    if path:
        parent_of(draft.meta, path)[path[-1]] = copy.deepcopy(rng.choice(VALUES))


def meta_delete(rng, draft):
    path = random_path(rng, draft.meta)
    if path:
        del parent_of(draft.meta, path)[path[-1]]


def meta_retype(rng, draft):
    path = random_path(rng, draft.meta)
    if path:
        parent = parent_of(draft.meta, path)
        value = parent[path[-1]]
        options = [str(value), [value], {"value": value}]
        if isinstance(value, bool):
            options.append(int(value))
        elif isinstance(value, int):
            options += [value + 1, -value] + ([float(value)] if abs(value) < 2**1000 else [])
        elif isinstance(value, float) and math.isfinite(value):
            options += [int(value), value * 3]
        parent[path[-1]] = rng.choice(options)


def meta_swap(rng, draft):
    first, second = random_path(rng, draft.meta), random_path(rng, draft.meta)
    if first and second and first[:len(second)] != second and second[:len(first)] != first:
        a, b = parent_of(draft.meta, first), parent_of(draft.meta, second)
        a[first[-1]], b[second[-1]] = copy.deepcopy(b[second[-1]]), copy.deepcopy(a[first[-1]])


def meta_nest(rng, draft):
    """Wrap a field in lists, put a whole mixture inside a component, or nest beyond the
    JSON parser's recursion limit (written as text: json.dumps would overflow too)."""
    choice = rng.random()
    if choice < 0.4:
        path = random_path(rng, draft.meta)
        if path:
            parent = parent_of(draft.meta, path)
            for _ in range(rng.randrange(1, 30)):
                parent[path[-1]] = [parent[path[-1]]]
    elif choice < 0.7 and "components" in draft.meta and isinstance(draft.meta["components"], list) \
            and draft.meta["components"]:
        i = rng.randrange(len(draft.meta["components"]))
        draft.meta["components"][i] = {"type": "mix", "meta": copy.deepcopy(draft.meta)}
    else:
        depth = rng.choice([900, 5000, 100_000])
        text = json.dumps(draft.meta)
        draft.meta = (text[:-1] + ', "training": ' + "[" * depth + "]" * depth + "}").encode()


def meta_text(rng, draft):
    """Damage the JSON text itself."""
    text = json.dumps(draft.meta).encode()
    position = rng.randrange(len(text))
    draft.meta = rng.choice([text[:position], text[:position] + b"\xff" + text[position + 1:],
                             text[:position] + b"}" + text[position:]])


# ---------------------------------------------------------------- array and member mutations

def load_npy(data: bytes):
    """The member's array, or None once a mutation has made it unreadable (NumPy's header
    parser can raise almost anything on damaged text, and warn)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:
        return None


def save_npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def random_member(rng, draft):
    return rng.choice(draft.members) if draft.members else None


def array_values(rng, draft):
    member = random_member(rng, draft)
    array = load_npy(member[1]) if member else None
    if array is None or array.size == 0 or array.dtype.kind not in "fi":
        return
    array = array.copy()
    for _ in range(rng.randrange(1, 4)):
        index = rng.randrange(array.size)
        if array.dtype.kind == "i":  # n-gram keys (or an array a mutation made integer)
            largest = int(np.iinfo(array.dtype).max)
            array.flat[index] = rng.choice([-1, 0, largest, min(int(array.max()) + 1, largest),
                                            rng.randrange(min(10**6, largest))])
        elif member[0].split(".")[-2].startswith("bo_"):
            # a log10 backoff may be > 0 in a valid model, and a crafted large one makes
            # scores > 0: only a check that every context is normalised could refuse it
            with np.errstate(over="ignore"):
                array.flat[index] = rng.choice(NOT_POSITIVE + NOT_FINITE)
        else:
            with np.errstate(over="ignore"):  # a float16 array turns 3e38 into inf: fine
                array.flat[index] = rng.choice(NOT_POSITIVE + NOT_FINITE + POSITIVE)
    if array.dtype.kind == "i" and rng.random() < 0.3:
        array = array[::-1].copy()  # keys out of order
    member[1] = save_npy(array)


def array_dtype(rng, draft):
    member = random_member(rng, draft)
    array = load_npy(member[1]) if member else None
    if array is not None:
        dtype = rng.choice(DTYPES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # complex to real, NaN to integer: any bytes will do
            member[1] = save_npy(array.astype(object if dtype == "object" else np.dtype(dtype)))


def array_shape(rng, draft):
    member = random_member(rng, draft)
    array = load_npy(member[1]) if member else None
    if array is None:
        return
    array, choice = array.reshape(-1), rng.random()
    if choice < 0.3 and array.size % 2 == 0 and array.size:
        array = array.reshape(2, -1)
    elif choice < 0.6:
        array = array[:rng.randrange(array.size + 1)]
    else:
        array = np.concatenate([array, np.zeros(rng.randrange(1, 50), dtype=array.dtype)])
    member[1] = save_npy(array)


def members_swap(rng, draft):
    if len(draft.members) >= 2:
        a, b = rng.sample(draft.members, 2)
        a[1], b[1] = b[1], a[1]


def member_truncate(rng, draft):
    member = random_member(rng, draft)
    if member:
        member[1] = member[1][:rng.randrange(len(member[1]) + 1)]


def member_flip(rng, draft):
    """Flip bytes inside a member before the zip is written: the checksum matches, so the
    .npy header or data parser sees them."""
    member = random_member(rng, draft)
    if member and member[1]:
        data = bytearray(member[1])
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(min(len(data), 160) if rng.random() < 0.7 else len(data))] ^= 1 << rng.randrange(8)
        member[1] = bytes(data)


def member_compress(rng, draft):
    names = ["meta.json"] + [name for name, _ in draft.members]
    draft.deflated.add(rng.choice(names))


def member_duplicate(rng, draft):
    member = random_member(rng, draft)
    if member:
        draft.members.insert(rng.randrange(len(draft.members) + 1), [member[0], rng.choice(draft.members)[1]])


def member_rename(rng, draft):
    member = random_member(rng, draft)
    if member:
        member[0] = rng.choice(["params.npy", "adam_v.npy", "prob_1.npy", "keys_2.npy", "bo_9.npy",
                                "class_start.npy", "direct_table.npy", "raw_direct_table.npy",
                                "carry_history.npy", "c0.class_start.npy", "c0.direct_table.npy",
                                "c0.params.npy", "c1.prob_1.npy", "c7.prob_1.npy", "meta.json",
                                "../x.npy", "x.pkl", member[0].upper()])


def member_delete(rng, draft):
    if draft.members:
        draft.members.remove(random_member(rng, draft))


def file_truncate(rng, draft):
    fraction = rng.random()
    draft.file_edits.append(lambda data: data[:int(len(data) * fraction)])


def file_flip(rng, draft):
    positions = [rng.random() for _ in range(rng.randrange(1, 4))]
    bits = [1 << rng.randrange(8) for _ in positions]

    def flip(data):
        for position, bit in zip(positions, bits):
            data[int(position * len(data))] ^= bit
        return data
    draft.file_edits.append(flip)


META_MUTATIONS = [meta_set, meta_set, meta_delete, meta_retype, meta_retype, meta_swap, meta_nest]
OTHER_MUTATIONS = [meta_text, array_values, array_values, array_dtype, array_shape, members_swap,
                   member_truncate, member_flip, member_compress, member_duplicate, member_rename,
                   member_delete, file_truncate, file_flip]


def mutate(rng, draft) -> list[str]:
    applied = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        pool = META_MUTATIONS if rng.random() < 0.5 else OTHER_MUTATIONS
        mutation = rng.choice(pool)
        if isinstance(draft.meta, bytes) and mutation in META_MUTATIONS + [meta_text]:
            continue  # meta.json is already text that no longer parses
        mutation(rng, draft)
        applied.append(mutation.__name__)
    return applied


def judged(scores_of) -> str:
    """'error' (a one-line RnnkitError) or 'scored' (every score a log10 probability) for
    the scores scores_of() returns; anything else fails the test."""
    try:
        scores = scores_of()
    except RnnkitError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"multi-line error: {message!r}"
        return "error"
    for score in scores:
        assert not math.isnan(score) and score <= 0, f"score {score} is not a log10 probability"
    return "scored"


def outcome(path) -> str:
    """'error' or 'scored' through score_many."""
    return judged(lambda: rnnkit.load(path).score_many(SENTENCES))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("fuzz_models"))


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_model_files_fail_cleanly_or_score(models, tmp_path, kind):
    rng = random.Random(f"{SEED}-{kind}")
    meta, members = read_members(models[kind])
    counts = {"error": 0, "scored": 0}
    path = tmp_path / "fuzzed.model"
    for case in range(CASES_PER_MODEL):
        draft = Draft(copy.deepcopy(meta), members)
        applied = mutate(rng, draft)
        draft.write(path)
        try:
            counts[outcome(path)] += 1
        except Exception as exc:
            raise AssertionError(f"{kind} case {case} ({', '.join(applied)}): "
                                 f"{type(exc).__name__}: {exc}") from exc
    # both kinds of outcome are exercised, so the mutations neither all break the file
    # outright nor all leave it valid
    assert counts["error"] >= CASES_PER_MODEL // 3 and counts["scored"] >= 5, counts


# ---------------------------------------------------------------- mapped files, byte by byte
# The files above are rewritten by zipfile, unaligned, so they load by copying. Here the
# files rnnkit writes (aligned: their arrays load as views of the mapped file) are
# mutated in place, and the checksums are then made to fit again, so that the mutation
# reaches the array checks (rnnkit/schema.py) and the C queries instead of the checksum:
# vocabulary bytes and offsets, hash tables, keys, flags. Every outcome must still be an
# RnnkitError line or log-probabilities, from every query path.

MAPPED_CASES = 250


def members_of(data: bytes) -> list[tuple[int, int, int, int]]:
    """(central entry, local header, data start, data size) per member, read from the bytes."""
    found, position = [], data.find(b"PK\x01\x02")
    while position >= 0:
        size = struct.unpack_from("<I", data, position + 20)[0]
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        local = struct.unpack_from("<I", data, position + 42)[0]
        local_name, local_extra = struct.unpack_from("<HH", data, local + 26)
        found.append((position, local, local + 30 + local_name + local_extra, size))
        position = data.find(b"PK\x01\x02", position + 46 + name_length + extra_length + comment_length)
    return found


def with_checksums(data: bytearray) -> bytearray:
    """Every member's CRC-32 recomputed into its local header and central entry."""
    for central, local, start, size in members_of(bytes(data)):
        crc = zlib.crc32(data[start:start + size])
        struct.pack_into("<I", data, central + 16, crc)
        struct.pack_into("<I", data, local + 14, crc)
    return data


def mutate_mapped(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    data = bytearray(data)
    members = [m for m in members_of(bytes(data)) if m[3] > 128]
    how = rng.choice(["flip", "flip", "chunk", "chunk", "entries", "truncate", "raw_flip"])
    if how == "truncate":
        return bytes(data[:rng.randrange(len(data))]), how
    if how == "raw_flip":   # the checksums left as they were
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), how
    _, _, start, size = rng.choice(members)
    body = start + 128   # past the .npy header: the array's own bytes
    if how == "flip":
        for _ in range(rng.choice([1, 1, 2, 8])):
            data[rng.randrange(body, start + size)] ^= 1 << rng.randrange(8)
    elif how == "chunk":
        at = rng.randrange(body, start + size)
        length = min(rng.choice([1, 4, 8, 64, 4096]), start + size - at)
        fill = rng.choice([b"\x00", b"\xff", b"\x80", bytes([rng.randrange(256)])])
        data[at:at + length] = (fill * length)[:length]
    else:   # a few random 8-byte values: table entries, keys, offsets
        for _ in range(rng.choice([1, 3, 20])):
            at = body + 8 * rng.randrange(max(1, (size - 128) // 8))
            data[at:at + 8] = struct.pack("<q", rng.choice([0, -1, 1, 2**31, 2**62, -2**63, rng.getrandbits(63)]))
    return bytes(with_checksums(data)), how


def mapped_outcome(path) -> str:
    """'error' or 'scored' through score_many, score, token_logprobs and rnnkit.kenlm."""
    def scores_of() -> list:
        model = rnnkit.load(path)
        scores = list(model.score_many(SENTENCES)) + [model.score(s) for s in SENTENCES]
        scores += [float(v) for s in SENTENCES for v in model.token_logprobs(s)]
        lm = rnnkit_kenlm.Model(path)
        state, out = rnnkit_kenlm.State(), rnnkit_kenlm.State()
        lm.BeginSentenceWrite(state)
        for word in SENTENCES[0].split() + ["zzz", "</s>"]:
            scores.append(lm.BaseScore(state, word, out))
            state, out = out, state
        return scores + [lm.score(s) for s in SENTENCES] + [r[0] for s in SENTENCES for r in lm.full_scores(s)]
    return judged(scores_of)


@pytest.mark.parametrize("kind", ["ngram", "mix"])
def test_mutated_mapped_files_fail_cleanly_or_score(models, tmp_path, kind):
    rng = random.Random(f"{SEED}-mapped-{kind}")
    original = models[kind].read_bytes()
    counts = {"error": 0, "scored": 0}
    path = tmp_path / "fuzzed.model"
    for case in range(MAPPED_CASES):
        data, how = mutate_mapped(rng, original)
        path.write_bytes(data)
        try:
            counts[mapped_outcome(path)] += 1
        except Exception as exc:
            raise AssertionError(f"{kind} mapped case {case} ({how}): {type(exc).__name__}: {exc}") from exc
    assert counts["error"] >= MAPPED_CASES // 3 and counts["scored"] >= 10, counts
