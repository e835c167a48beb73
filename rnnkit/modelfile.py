"""The rnnkit model file: one zip container (NumPy .npz layout) per model.

Layout: a `meta.json` entry (format name, format version, model type, unit settings,
vocabulary, hyperparameters, training record) plus one stored (uncompressed) `.npy`
entry per array. Loading reads only that: arrays of float32, int64 or uint8 whose .npy
headers are parsed strictly, so a model file can never run code (no pickles), and
nothing is inflated or allocated beyond what the file holds (see `load`).

Memory-mapped loading. A stored member's bytes lie contiguously in the file, and `save`
pads each member's local header (a zip extra field, as Android's zipalign does) so that
every array's data starts at a multiple of ALIGNMENT (64) bytes in the file. `load`
maps the file and hands out arrays that are views of the mapping: no array is read or
copied, and processes that load the same file share its pages in the page cache. The
mapping is copy-on-write (mmap.ACCESS_COPY): an array written in place (an RNN resumed
for training) gets private pages, never changes the file. A member that is not aligned
(a file written by another zip tool) is copied instead; a file that cannot be mapped is
read. The checksums of every member are still verified, which reads the mapped pages
once (from the page cache when the file was loaded before).

A mapped file must not shrink while a model from it is in use: reading a page beyond
the new end of the file kills the process with SIGBUS (on Windows the file cannot be
changed at all while mapped). rnnkit never writes a file in place: files are written
atomically by files.write_atomic (a temporary file renamed over the target), so the
mapped file lives on unchanged until the model is gone, and an interrupted write never
clobbers a good model. Only another program truncating the file in place can do it.

Format versions: 1 (rnnkit <= 0.1: n-gram vocabularies in meta.json, members not
aligned) is still read; 2 is written. A file from a newer version is refused with a
message saying so.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import mmap
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import schema
from .errors import ModelFileError
from .files import write_atomic

FORMAT_NAME = "rnnkit-model"
FORMAT_VERSION = 2
MEMBER_TIME = (1980, 1, 1, 0, 0, 0)   # the earliest time a zip member can carry
ALIGNMENT = 64                        # array data starts at a multiple of this in the file
# The padding extra field: Android zipalign's header id, then the alignment (uint16) and
# zeros. Any zip reader skips extra fields it does not know.
PADDING_ID = 0xD935
PADDING_HEADER = struct.Struct("<HHH")
ZIP64_EXTRA = 20   # zipfile adds a zip64 record to a local header by its rule below


def save(path, model_type: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write a model file atomically. `meta` must be JSON-serialisable."""
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "type": model_type, **meta}

    def member(name: str) -> zipfile.ZipInfo:
        # a fixed timestamp: the same model gives the same bytes, whenever it is saved
        return zipfile.ZipInfo(name, date_time=MEMBER_TIME)

    def write_to(handle):
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            # no indent: the vocabulary can hold millions of units, and only the compact
            # form goes through json's C encoder (indent=1 made saving 5x slower)
            archive.writestr(member("meta.json"), json.dumps(header, ensure_ascii=False))
            for name, array in arrays.items():
                array = np.ascontiguousarray(array)
                npy_header = _npy_header(array)
                info = member(f"{name}.npy")
                info.file_size = len(npy_header) + array.nbytes   # what writestr would set
                info.extra = _padding(handle.tell(), info, info.file_size)
                # the array's own bytes are written, not a copy of them (the biggest
                # arrays of an n-gram model are tens of MiB, written at its peak memory)
                with archive.open(info, "w") as data:
                    data.write(npy_header)
                    data.write(array.reshape(-1).view(np.uint8))

    write_atomic(path, write_to)


def _npy_header(array: np.ndarray) -> bytes:
    """The .npy header (format 1.0) np.save writes for the array, padded so that the data
    starts 64-aligned in the member."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(array))
    return buffer.getvalue()


def _padding(header_offset: int, info: zipfile.ZipInfo, size: int) -> bytes:
    """The extra field that makes a member's data start at a multiple of ALIGNMENT."""
    # zipfile (ZipFile.open for writing) adds a zip64 record to the local header after
    # our extra field when size * 1.05 > ZIP64_LIMIT (tests check the alignment of
    # written files)
    zip64 = ZIP64_EXTRA if size * 1.05 > zipfile.ZIP64_LIMIT else 0
    start = header_offset + LOCAL_HEADER.size + len(info.filename.encode()) + PADDING_HEADER.size + zip64
    zeros = -start % ALIGNMENT
    return PADDING_HEADER.pack(PADDING_ID, 2 + zeros, ALIGNMENT) + bytes(zeros)


def is_model_file(path) -> bool:
    """True when `path` starts like a zip container (an rnnkit model file)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def load(path, expected_type: str | None = None) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Read a model file: returns (model_type, meta, arrays). Raises ModelFileError.

    Everything is checked before it is used: the container (stored members whose sizes
    fit in the file, checksums), each array's header against its member's size before
    anything is allocated, and then meta.json and the arrays against the model type's
    schema (rnnkit/schema.py), so the models can trust what they get.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"model path is a directory, not a file: {path}")
    try:
        with open(path, "rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            members = _members(handle, file_size)
            if "meta.json" not in members:
                raise ModelFileError("there is no meta.json")
            meta = _read_meta(handle, members.pop("meta.json"))
            model_type = _check_header(meta, expected_type)
            mapping = _map(handle)
            arrays = {name[:-4]: _read_array(handle, mapping, file_size, info) for name, info in members.items()}
        body = {key: value for key, value in meta.items() if key not in HEADER_FIELDS}
        schema.validate(model_type, body, arrays)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return model_type, meta, arrays


HEADER_FIELDS = ("format", "version", "type")
MODEL_TYPES = ("rnn", "ngram", "mix")
MAX_META_BYTES = 256 << 20          # meta.json holds the vocabulary: millions of units fit
# float32 weights and probabilities, int64 n-gram keys, offsets and hash tables, uint8
# for raw bytes and flags (a SentencePiece model, a packed vocabulary's text, KenLM's
# extendable flags: schema.py names where each may be)
ARRAY_DTYPES = ("<f4", "<i8", "|u1")
MEMBER_NAME = re.compile(r"meta\.json|[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\.npy")
# a zip member's local header (APPNOTE 4.3.7): signature, 5 shorts, 3 longs, name and
# extra-field lengths; the member's data follows the name and the extra field
LOCAL_HEADER = struct.Struct("<4s5H3L2H")
LOCAL_SIGNATURE = b"PK\x03\x04"
# the .npy format 1.0 that np.save writes for a plain array: magic and version, the
# header's length, the header padded with spaces to a newline, then the data
NPY_MAGIC = b"\x93NUMPY\x01\x00"
NPY_LENGTH = struct.Struct("<H")
NPY_HEADER = re.compile(r"\{'descr': '([<>|=]?[A-Za-z][A-Za-z0-9]*)', 'fortran_order': (False|True), "
                        r"'shape': \(((?:[0-9]+, )*[0-9]+,?|)\), \} *\n")
MAX_NPY_HEADER = 4096               # np.save pads a plain array's header to 128 bytes


def _members(handle, file_size: int) -> dict[str, zipfile.ZipInfo]:
    """The zip's members by name, after checking what rnnkit's writer guarantees: stored
    (never compressed: a small deflated member can inflate to gigabytes), not encrypted,
    unique names, and sizes that together fit in the file (no member overlaps another)."""
    try:
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, struct.error) as exc:
        reason = " ".join(str(exc).split())[:200]  # zipfile's own words, kept to one short line
        raise ModelFileError(f"not a valid rnnkit model file (corrupt or truncated: {reason})") from None
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if not MEMBER_NAME.fullmatch(name):
            raise ModelFileError(f"unexpected member {name[:80]!r} (only meta.json and .npy arrays)")
        if name in members:
            raise ModelFileError(f"member {name!r} appears twice")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ModelFileError(f"member {name!r} is compressed (method {info.compress_type}); "
                                 "rnnkit writes stored members only")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"member {name!r} is encrypted")
        if info.file_size != info.compress_size:
            raise ModelFileError(f"member {name!r} claims {info.file_size} bytes but stores "
                                 f"{info.compress_size}")
        total += info.file_size
        members[name] = info
    if total > file_size:
        raise ModelFileError(f"members claim {total} bytes, more than the file's {file_size}")
    return members


def _seek_data(handle, info: zipfile.ZipInfo) -> int:
    """Position `handle` at the member's data; returns its offset in the file."""
    handle.seek(info.header_offset)
    raw = handle.read(LOCAL_HEADER.size)
    if len(raw) != LOCAL_HEADER.size or raw[:4] != LOCAL_SIGNATURE:
        raise ModelFileError(f"member {info.filename!r} has no local header (corrupt or truncated)")
    *_, name_length, extra_length = LOCAL_HEADER.unpack(raw)
    offset = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
    handle.seek(offset)
    return offset


def _read_meta(handle, info: zipfile.ZipInfo) -> dict:
    if info.file_size > MAX_META_BYTES:
        raise ModelFileError(f"meta.json has {info.file_size} bytes, more than the "
                             f"{MAX_META_BYTES >> 20} MiB allowed")
    _seek_data(handle, info)
    raw = handle.read(info.file_size)
    if len(raw) != info.file_size:
        raise ModelFileError("meta.json is truncated")
    _check_crc(info, zlib.crc32(raw))
    try:
        meta = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ModelFileError("meta.json is nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ModelFileError(f"meta.json is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError("not an rnnkit model file")
    return meta


def _check_header(meta: dict, expected_type: str | None) -> str:
    """The model type, once the format version is one this rnnkit reads."""
    version = meta.get("version")
    schema.Integer(1).check(version, "version")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"model file format version {version} is newer than this rnnkit "
                             f"understands ({FORMAT_VERSION}); upgrade rnnkit")
    model_type = meta.get("type")
    schema.OneOf(MODEL_TYPES).check(model_type, "type")
    if expected_type is not None and model_type != expected_type:
        raise ModelFileError(f"is a {model_type} model, expected a {expected_type} model")
    return model_type


def _map(handle) -> mmap.mmap | None:
    """The whole file mapped copy-on-write, or None where it cannot be mapped (then the
    arrays are read)."""
    try:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):
        return None
    # n-gram queries are random reads all over the arrays: with 2 MiB pages (Linux maps a
    # file's large page-cache folios so when asked) they miss the TLB far less often
    with contextlib.suppress(AttributeError, OSError):
        mapping.madvise(mmap.MADV_HUGEPAGE)
    return mapping


def _read_array(handle, mapping, file_size: int, info: zipfile.ZipInfo) -> np.ndarray:
    """One .npy member, once its header's dtype and shape are known to match the member's
    size: a view of the mapped file where its data is aligned, else read into a new array."""
    name = info.filename[:-4]
    offset = _seek_data(handle, info)
    dtype, shape, header_size = _read_npy_header(handle, name)
    payload = info.file_size - header_size
    if math.prod(shape) * dtype.itemsize != payload:
        raise ModelFileError(f"array {name!r} claims shape {shape} of {dtype.str} "
                             f"({math.prod(shape) * dtype.itemsize} bytes) but its member holds "
                             f"{payload} bytes")
    start = offset + header_size
    if start + payload > file_size:
        raise ModelFileError(f"array {name!r} is truncated")
    if mapping is None:
        array = np.empty(shape, dtype=dtype)
        if handle.readinto(memoryview(array).cast("B")) != payload:
            raise ModelFileError(f"array {name!r} is truncated")
        data = memoryview(array).cast("B")
    else:
        data = memoryview(mapping)[start:start + payload]
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
        if not array.flags.aligned:   # written by another tool: C needs aligned arrays
            array = array.copy()
    handle.seek(offset)
    crc = zlib.crc32(handle.read(header_size))
    _check_crc(info, zlib.crc32(data, crc))
    return array


def _read_npy_header(handle, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, header size) of the .npy array at the handle's position.

    Parsed here, strictly, as np.save writes it for a plain array: NumPy's own reader
    hands the header text to ast.literal_eval, which answers crafted text with
    MemoryError, RecursionError or SyntaxError, and accepts any dtype.
    """
    magic = handle.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        raise ModelFileError(f"array {name!r} is not a .npy array of format 1.0")
    raw_length = handle.read(NPY_LENGTH.size)
    length = NPY_LENGTH.unpack(raw_length)[0] if len(raw_length) == NPY_LENGTH.size else -1
    text = handle.read(length) if 0 <= length <= MAX_NPY_HEADER else b""
    match = NPY_HEADER.fullmatch(text.decode("latin-1"))
    if match is None:
        raise ModelFileError(f"array {name!r} has a malformed .npy header")
    descr, fortran_order, shape_text = match.groups()
    if descr not in ARRAY_DTYPES:
        raise ModelFileError(f"array {name!r} has dtype {descr}; rnnkit stores only "
                             f"{', '.join(ARRAY_DTYPES)}")
    if fortran_order == "True":
        raise ModelFileError(f"array {name!r} is in Fortran order; rnnkit stores C order")
    shape = tuple(int(n) for n in shape_text.replace(",", " ").split())
    return np.dtype(descr), shape, len(magic) + len(raw_length) + len(text)


def _check_crc(info: zipfile.ZipInfo, crc: int) -> None:
    if crc != info.CRC:
        raise ModelFileError(f"corrupt model file (checksum mismatch in {info.filename!r})")
