"""The rnnkit model file: one zip container (NumPy .npz layout) per model.

Layout: a `meta.json` entry (format name, format version, model type, unit settings,
vocabulary, hyperparameters, training record) plus one `.npy` entry per array.
Arrays are loaded with allow_pickle=False, so a model file can never run code.

Files are written atomically by files.write_atomic (a temporary file renamed over the
target), so an interrupted write never clobbers a good model.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelFileError
from .files import write_atomic

FORMAT_NAME = "rnnkit-model"
FORMAT_VERSION = 1


def save(path, model_type: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write a model file atomically. `meta` must be JSON-serialisable."""
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "type": model_type, **meta}

    def write_to(handle):
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            # no indent: the vocabulary can hold millions of units, and only the compact
            # form goes through json's C encoder (indent=1 made saving 5x slower)
            archive.writestr("meta.json", json.dumps(header, ensure_ascii=False))
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
                archive.writestr(f"{name}.npy", buffer.getvalue())

    write_atomic(path, write_to)


def is_model_file(path) -> bool:
    """True when `path` starts like a zip container (an rnnkit model file)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def load(path, expected_type: str | None = None) -> tuple[str, dict, dict[str, np.ndarray]]:
    """Read a model file: returns (model_type, meta, arrays). Raises ModelFileError."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"model path is a directory, not a file: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                raise ModelFileError(f"{path}: corrupt model file (checksum mismatch)")
            meta = json.loads(archive.read("meta.json").decode("utf-8"))
            arrays = {}
            for name in archive.namelist():
                if name.endswith(".npy"):
                    with archive.open(name) as member:
                        arrays[name[:-4]] = np.load(io.BytesIO(member.read()), allow_pickle=False)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as exc:
        raise ModelFileError(f"{path}: not a valid rnnkit model file (corrupt or truncated: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not an rnnkit model file")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format version {version} is newer than this rnnkit "
            f"understands ({FORMAT_VERSION}); upgrade rnnkit"
        )
    model_type = meta.get("type")
    if expected_type is not None and model_type != expected_type:
        raise ModelFileError(f"{path}: is a {model_type} model, expected a {expected_type} model")
    return model_type, meta, arrays
