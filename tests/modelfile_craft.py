"""Build small valid model files and take them apart and put them back together, so the
hostile and fuzz tests can craft broken ones (tests/test_modelfile_hostile.py,
tests/test_fuzz.py)."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
from dataclasses import asdict

import numpy as np

from rnnkit.mix import MixModel
from rnnkit.ngram import NgramModel
from rnnkit.rnnlm import RNNModel
from rnnkit.train import TrainConfig, train

LINES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog met on the mat",
    "the bird flew over the dog",
    "나는 버스를 탔다",
    "나는 학교에 갔다",
] * 4
SENTENCES = ["the cat sat on the log", "나는 고양이를 보았다"]


KINDS = ("rnn", "ngram", "mix", "rnnme", "rnnme-mix")


class Stop(Exception):
    """Ends a training run from its progress callback."""


def make_models(directory) -> dict:
    """Paths of a tiny resumable RNN, a 3-gram and their mixture, and of a tiny RNN with 3
    classes and direct connections (RNNME) stopped after its third step, whose file is a
    mid-epoch checkpoint (carried state and direct history, the epoch's start), and the
    RNNME's mixture with the 3-gram; all word units."""
    config = TrainConfig(unit="word", hidden=4, bptt=8, batch=4, epochs=1, seed=1, threads=1)
    paths = {kind: directory / f"{kind}.model" for kind in KINDS}
    rnn = train(LINES, LINES[:6], config, output_path=paths["rnn"])
    ngram = NgramModel.train(LINES, order=3, unit="word")
    ngram.save(paths["ngram"])
    MixModel([rnn, ngram], [0.25, 0.75]).save(paths["mix"])
    rnnme_config = TrainConfig(**{**asdict(config), "classes": 3, "direct_order": 3, "direct_size": 64,
                                  "checkpoint_minutes": 1e-9})   # a checkpoint after every step
    steps = []

    def stop_at_the_fourth(tokens, stats):   # before the fourth step's checkpoint
        steps.append(tokens)
        if len(steps) == 4:
            raise Stop
    try:
        train(LINES, LINES[:6], rnnme_config, output_path=paths["rnnme"], progress=stop_at_the_fourth)
    except Stop:
        pass
    MixModel([RNNModel.load(paths["rnnme"]), ngram], [0.5, 0.5]).save(paths["rnnme-mix"])
    return paths


def read_members(path) -> tuple[dict, list[tuple[str, bytes]]]:
    """(meta, [(member name, member bytes)]) of a model file, meta.json left out of the list."""
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("meta.json"))
        members = [(name, archive.read(name)) for name in archive.namelist() if name != "meta.json"]
    return meta, members


def write_members(path, meta, members, compression=zipfile.ZIP_STORED) -> None:
    """Write meta (a dict, or raw bytes) and the members in that order; duplicates kept."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w", compression=compression) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate names we mean to write
        archive.writestr("meta.json", raw)
        for name, data in members:
            archive.writestr(name, data)


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_header(descr: str, shape: tuple, fortran_order: bool = False) -> bytes:
    """A .npy header alone: it can claim any dtype and shape."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": fortran_order,
                                                  "shape": shape})
    return buffer.getvalue()


def array_of(members, name: str) -> np.ndarray:
    data = dict(members)[name + ".npy"]
    return np.load(io.BytesIO(data), allow_pickle=False)


def replace(members, name: str, data: bytes) -> list:
    return [(n, data if n == name + ".npy" else d) for n, d in members]


def patch_central_directory(path, name: str, offset: int, fmt: str, value) -> None:
    """Overwrite one field of `name`'s central-directory entry (offset from its signature):
    8 flags, 10 method, 16 CRC, 20 compressed size, 24 size, 42 local header offset."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        name_length = struct.unpack_from("<H", data, position + 28)[0]
        if data[position + 46: position + 46 + name_length] == encoded:
            struct.pack_into(fmt, data, position + offset, value)
            path.write_bytes(bytes(data))
            return
        position = data.find(b"PK\x01\x02", position + 4)
    raise KeyError(name)
