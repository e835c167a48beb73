"""One entry point for every kind of model file: `rnnkit.load(path)`.

An rnnkit model file (a zip container, see modelfile.py) holds an RNN, an n-gram or a
mixture model; anything else is read as an ARPA file (KenLM, SRILM or rnnkit). This
module sits above the models: it imports them, they never import it, and a mixture's
components are built here by the same table as a stand-alone model.
"""

from __future__ import annotations

from pathlib import Path

from . import modelfile
from .errors import ModelFileError
from .mix import MixModel
from .ngram import NgramModel
from .rnnlm import RNNModel

# model type in the file -> class that builds it from (path, meta, arrays)
MODEL_KINDS = {"rnn": RNNModel, "ngram": NgramModel}


def load(path):
    """Load an RNN, n-gram or mixture model file, or an ARPA file, by its contents."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"model path is a directory, not a file: {path}")
    if not modelfile.is_model_file(path):
        return NgramModel.read_arpa(path)
    model_type, meta, arrays = modelfile.load(path)
    return from_contents(path, model_type, meta, arrays)


def from_contents(path, model_type: str, meta: dict, arrays: dict):
    """A model from what modelfile.load returned."""
    if model_type == "mix":
        return mixture_from_contents(path, meta, arrays)
    if model_type not in MODEL_KINDS:
        raise ModelFileError(f"{path}: unknown model type {model_type!r}")
    return MODEL_KINDS[model_type].from_file_contents(path, meta, arrays)


def mixture_from_contents(path, meta: dict, arrays: dict) -> MixModel:
    """A mixture file: component i's arrays are stored as `c{i}.NAME`."""
    try:
        components = []
        for i, entry in enumerate(meta["components"]):
            if entry["type"] not in MODEL_KINDS:
                raise ModelFileError(f"{path}: mixture component {i + 1} has type {entry['type']!r}; "
                                     f"expected one of {', '.join(MODEL_KINDS)}")
            prefix = f"c{i}."
            own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            components.append(MODEL_KINDS[entry["type"]].from_file_contents(path, entry["meta"], own))
        return MixModel(components, meta["weights"], meta.get("training"))
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: mixture model file is missing {exc}") from None
