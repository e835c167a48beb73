"""Crafted and corrupt model files: each gives one ModelFileError line naming the file and
the problem, before anything large is inflated or allocated (rnnkit/modelfile.py,
rnnkit/schema.py)."""

import copy
import json
import math
import tracemalloc
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import rnnkit
from rnnkit import modelfile
from rnnkit.cli import cli
from rnnkit.errors import ModelFileError
from rnnkit.rnnlm import RNNModel

from modelfile_craft import (SENTENCES, array_of, make_models, npy, npy_header, patch_central_directory,
                             read_members, replace, write_members)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("models"))


def load_error(path, loader=rnnkit.load) -> str:
    """The message of the ModelFileError that loading `path` raises; it must be one line
    that starts with the file's name."""
    with pytest.raises(ModelFileError) as caught:
        loader(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message[len(f"{path}: "):]


def peak_bytes_while(action) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# ---------------------------------------------------------------- finding 1: bombs

def test_deflated_member_is_refused_before_inflating(models, tmp_path):
    """A deflated member of 64 MiB of zeros (64 KiB on disk) is refused from its zip entry."""
    meta, members = read_members(models["rnn"])
    bomb = tmp_path / "bomb.model"
    with zipfile.ZipFile(bomb, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        for name, data in members:
            archive.writestr(name, data)
        info = zipfile.ZipInfo("zeros.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            member.write(npy_header("<f4", (16 << 20,)))
            block = bytes(1 << 20)
            for _ in range(64):
                member.write(block)
    assert bomb.stat().st_size < 200_000
    messages = []
    peak = peak_bytes_while(lambda: messages.append(load_error(bomb)))
    assert messages == ["member 'zeros.npy' is compressed (method 8); rnnkit writes stored members only"]
    assert peak < 1 << 20


def test_stored_member_whose_sizes_disagree(models, tmp_path):
    """A stored member that declares a larger uncompressed than stored size."""
    path = tmp_path / "sizes.model"
    path.write_bytes(models["rnn"].read_bytes())
    patch_central_directory(path, "params.npy", 24, "<L", 2_000_000_000)
    assert load_error(path) == "member 'params.npy' claims 2000000000 bytes but stores 964"


def test_members_that_overlap_claim_more_than_the_file(models, tmp_path):
    """Members pointing at the same bytes (the overlapping-entries bomb) sum past the file size."""
    meta, members = read_members(models["rnn"])
    path = tmp_path / "overlap.model"
    big = npy(np.zeros(5000, np.float32))
    write_members(path, meta, [("params.npy", big), ("adam_m.npy", b"")])
    with zipfile.ZipFile(path) as archive:
        first = archive.getinfo("params.npy").header_offset
    for offset, value in ((42, first), (20, len(big)), (24, len(big))):
        patch_central_directory(path, "adam_m.npy", offset, "<L", value)
    size = path.stat().st_size
    assert load_error(path) == f"members claim {2 * len(big) + len(json.dumps(meta))} bytes, more than the file's {size}"


def test_header_claiming_10_to_the_12_elements(models, tmp_path):
    """An .npy header that claims 10^12 float32 values in an empty member."""
    meta, members = read_members(models["rnn"])
    path = tmp_path / "huge.model"
    write_members(path, meta, replace(members, "adam_m", npy_header("<f4", (10**12,))))
    messages = []
    peak = peak_bytes_while(lambda: messages.append(load_error(path)))
    assert messages == ["array 'adam_m' claims shape (1000000000000,) of <f4 (4000000000000 bytes) "
                        "but its member holds 0 bytes"]
    assert peak < 1 << 20


def test_bomb_through_the_cli_is_one_error_line(models, tmp_path):
    meta, members = read_members(models["rnn"])
    path = tmp_path / "huge.model"
    write_members(path, meta, replace(members, "params", npy_header("<f4", (10**12,))))
    result = CliRunner().invoke(cli, ["score", "-m", str(path), "the cat"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith(f"Error: {path}: array 'params'")


@pytest.mark.parametrize("descr, expected", [
    ("<f8", "dtype <f8"), (">f4", "dtype >f4"), ("<c8", "dtype <c8"), ("|O", "dtype |O"), ("<i4", "dtype <i4"),
])
def test_dtypes_rnnkit_does_not_write(models, tmp_path, descr, expected):
    meta, members = read_members(models["rnn"])
    path = tmp_path / "dtype.model"
    params = array_of(members, "params")
    data = npy(params.astype(np.dtype(descr))) if descr != "|O" else \
        npy(params.astype(object), allow_pickle=True)  # a pickle: must never be unpickled
    write_members(path, meta, replace(members, "params", data))
    assert load_error(path) == f"array 'params' has {expected}; rnnkit stores only <f4, <i8, |u1"


def test_fortran_order_and_shapes(models, tmp_path):
    meta, members = read_members(models["rnn"])
    params = array_of(members, "params")
    path = tmp_path / "shape.model"
    fortran = npy_header("<f4", params.shape, fortran_order=True) + params.tobytes()
    write_members(path, meta, replace(members, "params", fortran))
    assert load_error(path) == "array 'params' is in Fortran order; rnnkit stores C order"
    write_members(path, meta, replace(members, "params", npy(params.reshape(11, -1))))
    assert load_error(path) == "array 'params' must be float32 of shape (209,), got float32 of shape (11, 19)"
    write_members(path, meta, replace(members, "params", npy(params[:-1])))
    assert load_error(path).startswith(f"array 'params' must be float32 of shape ({params.size},), got")


def test_truncated_files_and_members(models, tmp_path):
    data = models["mix"].read_bytes()
    path = tmp_path / "cut.model"
    for length in (10, 100, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:length])
        assert load_error(path).startswith("not a valid rnnkit model file (corrupt or truncated: ")
    meta, members = read_members(models["rnn"])
    short = dict(members)["params.npy"][:-8]
    write_members(path, meta, replace(members, "params", short))
    assert load_error(path).startswith("array 'params' claims shape (")


def test_checksum_mismatch(models, tmp_path):
    data = bytearray(models["rnn"].read_bytes())
    with zipfile.ZipFile(models["rnn"]) as archive:
        info = archive.getinfo("params.npy")
    data[info.header_offset + 30 + len("params.npy") + 200] ^= 0x40  # a weight's byte
    path = tmp_path / "flip.model"
    path.write_bytes(bytes(data))
    assert load_error(path) == "corrupt model file (checksum mismatch in 'params.npy')"


def test_member_names_and_flags(models, tmp_path):
    meta, members = read_members(models["rnn"])
    path = tmp_path / "names.model"
    write_members(path, meta, members + [members[0]])
    assert load_error(path) == "member 'params.npy' appears twice"
    write_members(path, meta, members + [("evil.pkl", b"cos\nsystem\n")])
    assert load_error(path) == "unexpected member 'evil.pkl' (only meta.json and .npy arrays)"
    write_members(path, meta, members + [("../up.npy", npy(np.zeros(1, np.float32)))])
    assert load_error(path) == "unexpected member '../up.npy' (only meta.json and .npy arrays)"
    write_members(path, meta, members + [("extra.npy", npy(np.zeros(1, np.float32)))])
    assert load_error(path) == "unexpected array 'extra'"
    write_members(path, meta, [m for m in members if m[0] != "params.npy"])
    assert load_error(path) == "array 'params' is missing"
    write_members(path, meta, members)
    patch_central_directory(path, "adam_v.npy", 8, "<H", 1)
    assert load_error(path) == "member 'adam_v.npy' is encrypted"


def test_meta_json_itself(models, tmp_path, monkeypatch):
    meta, members = read_members(models["rnn"])
    path = tmp_path / "meta.model"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("params.npy", dict(members)["params.npy"])
    assert load_error(path) == "there is no meta.json"
    write_members(path, b"\xff\xfe{}", members)
    assert load_error(path).startswith("meta.json is not valid UTF-8 JSON (")
    write_members(path, b'{"format": "rnnkit-model", ', members)
    assert load_error(path).startswith("meta.json is not valid UTF-8 JSON (")
    write_members(path, b"[1, 2]", members)
    assert load_error(path) == "not an rnnkit model file"
    write_members(path, json.dumps({**meta, "format": "other"}).encode(), members)
    assert load_error(path) == "not an rnnkit model file"
    monkeypatch.setattr(modelfile, "MAX_META_BYTES", 1000)
    write_members(path, meta, members)
    assert load_error(path).endswith("more than the 0 MiB allowed")


def test_deeply_nested_meta(models, tmp_path):
    """100,000 nested lists overflow json's recursion; 20 levels pass json but not the schema."""
    meta, members = read_members(models["rnn"])
    path = tmp_path / "deep.model"
    text = json.dumps(meta)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    write_members(path, text.encode(), members)
    assert load_error(path) == "meta.json is nested too deeply"
    nested = {**meta, "training": {**meta["training"], "note": json.loads("[" * 20 + "]" * 20)}}
    write_members(path, nested, members)
    assert load_error(path) == "field 'training.note" + "[0]" * 10 + "' is nested deeper than 10 levels"


def test_wrong_model_type_for_the_loader(models):
    assert load_error(models["ngram"], RNNModel.load) == "is a ngram model, expected a rnn model"


# ---------------------------------------------------------------- finding 2: metadata

def set_field(meta, dotted: str, value):
    """meta with the field at `dotted` (keys and list indexes, '.'-separated) set; the
    value DELETE removes it."""
    meta = copy.deepcopy(meta)
    *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
    target = meta
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return meta


DELETE = object()

BAD_FIELDS = [
    # model, field, value, message after "FILE: "
    ("rnn", "hidden", -3, "field 'hidden' must be an integer in 1..65536, got -3"),
    ("rnn", "hidden", "4", "field 'hidden' must be an integer in 1..65536, got '4'"),
    ("rnn", "hidden", 4.0, "field 'hidden' must be an integer in 1..65536, got 4.0"),
    ("rnn", "hidden", True, "field 'hidden' must be an integer in 1..65536, got true"),
    ("rnn", "hidden", 10**30, "field 'hidden' must be an integer in 1..65536, got 1000000000000000000000000000000"),
    ("rnn", "hidden", 5, "array 'params' must be float32 of shape (261,), got float32 of shape (209,)"),
    ("rnn", "hidden", DELETE, "field 'hidden' is missing"),
    ("rnn", "activation", "relu", "field 'activation' must be one of 'tanh', 'logistic', 'identity', got 'relu'"),
    ("rnn", "activation", ["tanh"], "field 'activation' must be one of 'tanh', 'logistic', 'identity', got a list of 1 item"),
    ("rnn", "unit", "byte", "field 'unit' must be one of 'char', 'word', 'jamo', 'morph', 'spm', got 'byte'"),
    ("rnn", "stream", "yes", "field 'stream' must be true or false, got 'yes'"),
    ("rnn", "vocab", {"<unk>": 0}, "field 'vocab' must be a list of distinct strings starting with '<unk>', '<s>', '</s>', got an object"),
    ("rnn", "vocab.0", "<UNK>", "field 'vocab' must be a list of distinct strings starting with '<unk>', '<s>', '</s>', got a list of 21 items"),
    ("rnn", "vocab.5", 7, "field 'vocab[5]' must be a string, got 7"),
    ("rnn", "vocab.5", ["a"], "field 'vocab[5]' must be a string, got a list of 1 item"),
    ("rnn", "vocab.6", "the", "field 'vocab' holds 'the' twice (entries 3 and 6)"),
    ("rnn", "vocab.7", "</s>", "field 'vocab' holds '</s>' twice (entries 2 and 7)"),
    ("rnn", "training", [], "field 'training' must be an object, got a list of 0 items"),
    ("rnn", "training.epochs.0.valid_bpc", "low", "field 'training.epochs[0].valid_bpc' must be a number, got 'low'"),
    ("rnn", "training.epochs.0.lr", 10**400, "field 'training.epochs[0].lr' must be a number, got " + "1" + "0" * 56 + "..."),
    ("rnn", "training.epochs.0.epoch", DELETE, "field 'training.epochs[0].epoch' is missing"),
    ("rnn", "training.epochs", DELETE, "field 'training.epochs' is missing (a model with a training state keeps its epoch record)"),
    ("rnn", "training.corpus", 5, "field 'training.corpus' must be a string or an object, got 5"),
    ("rnn", "hyperparameters", [1, 2], "field 'hyperparameters' must be an object, got a list of 2 items"),
    ("rnn", "train_state", [], "field 'train_state' must be an object, got a list of 0 items"),
    ("rnn", "train_state.lr", "fast", "field 'train_state.lr' must be a finite number >= 0, got 'fast'"),
    ("rnn", "train_state.lr", float("nan"), "field 'train_state.lr' must be a finite number >= 0, got nan"),
    ("rnn", "train_state.step", 2**40, "field 'train_state.step' must be an integer in 0..2147483647, got 1099511627776"),
    ("rnn", "train_state.best_valid", "x", "field 'train_state.best_valid' must be a finite number or null, got 'x'"),
    ("rnn", "train_state.done", DELETE, "field 'train_state.done' is missing"),
    ("rnn", "surprise", 1, "unexpected field 'surprise'"),
    ("rnn", "a\n" * 30, 1, "unexpected field " + repr("a\n" * 18 + "a...")),  # file keys are cut
    ("rnn", "version", "1", "field 'version' must be an integer >= 1, got '1'"),
    ("rnn", "version", 3, "model file format version 3 is newer than this rnnkit understands (2); upgrade rnnkit"),
    ("rnn", "type", "lstm", "field 'type' must be one of 'rnn', 'ngram', 'mix', got 'lstm'"),
    ("ngram", "order", 0, "field 'order' must be an integer in 1..100, got 0"),
    ("ngram", "order", 128, "field 'order' must be an integer in 1..100, got 128"),
    ("ngram", "order", "3", "field 'order' must be an integer in 1..100, got '3'"),
    ("ngram", "order", 2, "unexpected array 'bo_2'"),
    ("ngram", "order", 4, "array 'bo_3' is missing"),
    ("ngram", "smoothing", "magic", "field 'smoothing' must be one of 'kn', 'wb', 'addk', 'mle', 'arpa', got 'magic'"),
    ("ngram", "unit", DELETE, "field 'unit' is missing"),
    ("ngram", "vocab", "abc", "field 'vocab' must be a list of distinct strings starting with '<unk>', '<s>', '</s>', got 'abc'"),
    ("ngram", "training", "kn", "field 'training' must be an object, got 'kn'"),
    ("mix", "weights", [0.5], "field 'weights' must hold one weight per component (2), got 1"),
    ("mix", "weights", [0.7, 0.7], "field 'weights' must sum to 1, got 1.4"),
    ("mix", "weights", [-0.5, 1.5], "field 'weights[0]' must be a finite number >= 0, got -0.5"),
    ("mix", "weights", [float("nan"), 1.0], "field 'weights[0]' must be a finite number >= 0, got nan"),
    ("mix", "weights", "0.5,0.5", "field 'weights' must be a list, got '0.5,0.5'"),
    ("mix", "weights", [1e308, 10**308], "field 'weights' must sum to 1, got inf"),
    ("mix", "components", [], "field 'components' must be a list of at least 2 items, got a list of 0 items"),
    ("mix", "components.0.type", "mix", "field 'components[0].type' must be one of 'rnn', 'ngram', got 'mix'"),
    ("mix", "components.1.type", "rnn", "field 'components[1].meta.vocab' is missing"),
    ("mix", "components.1.meta", [], "field 'components[1].meta' must be an object, got a list of 0 items"),
    ("mix", "components.1.meta.order", 2, "unexpected array 'c1.bo_2'"),
    ("mix", "components.0.meta.unit", "char", "field 'components[0].meta.unit' must be 'word' (the mixture's unit), got 'char'"),
    ("mix", "components.0.meta.hidden", 0, "field 'components[0].meta.hidden' must be an integer in 1..65536, got 0"),
    ("mix", "components.0", "rnn", "field 'components[0]' must be an object, got 'rnn'"),
]


@pytest.mark.parametrize("kind, field, value, message", BAD_FIELDS,
                         ids=[f"{k}-{f}-{i}" for i, (k, f, _, _) in enumerate(BAD_FIELDS)])
def test_bad_metadata_field(models, tmp_path, kind, field, value, message):
    meta, members = read_members(models[kind])
    path = tmp_path / "bad.model"
    write_members(path, set_field(meta, field, value), members)
    assert load_error(path) == message


def test_mixture_with_a_missing_component_array(models, tmp_path):
    meta, members = read_members(models["mix"])
    path = tmp_path / "mix.model"
    write_members(path, meta, [m for m in members if m[0] != "c1.prob_2.npy"])
    assert load_error(path) == "array 'c1.prob_2' is missing"


@pytest.mark.parametrize("kind, name, index, value, message", [
    ("rnn", "params", 3, np.nan, "array 'params' must hold finite values in -1e+30..1e+30, found nan"),
    ("rnn", "params", 0, -np.inf, "array 'params' must hold finite values in -1e+30..1e+30, found -inf"),
    ("rnn", "params", 5, 3e33, "array 'params' must hold finite values in -1e+30..1e+30, found 3e+33"),
    ("rnn", "adam_v", 1, -1.0, "array 'adam_v' must hold finite values in 0..1e+30, found -1.0"),
    ("ngram", "prob_2", 4, 0.25, "array 'prob_2' must hold log10 probabilities (<= 0), found 0.25"),
    ("ngram", "prob_1", 3, np.nan, "array 'prob_1' must hold log10 probabilities (<= 0), found nan"),
    ("ngram", "bo_1", 3, np.inf, "array 'bo_1' must hold log10 backoff weights (not NaN or +inf), found inf"),
    ("ngram", "keys_2", 2, 0, "array 'keys_2' must hold increasing n-gram keys in 0..440"),
    ("ngram", "keys_3", -1, 10**12, "array 'keys_3' must hold increasing n-gram keys in 0..629"),
])
def test_bad_array_values(models, tmp_path, kind, name, index, value, message):
    meta, members = read_members(models[kind])
    array = array_of(members, name).copy()
    array[index] = value
    path = tmp_path / "values.model"
    write_members(path, meta, replace(members, name, npy(array)))
    assert load_error(path).startswith(message)


def test_swapped_arrays(models, tmp_path):
    meta, members = read_members(models["ngram"])
    data = dict(members)
    path = tmp_path / "swap.model"
    write_members(path, meta, replace(replace(members, "keys_2", data["prob_2.npy"]), "prob_2", data["keys_2.npy"]))
    assert load_error(path) == "array 'keys_2' must be a flat int64 array, got float32 of shape (30,)"


def test_valid_files_still_load_and_score(models):
    """The checks refuse nothing rnnkit writes: every fixture loads and scores finite."""
    for path in models.values():
        scores = rnnkit.load(path).score_many(SENTENCES)
        assert all(math.isfinite(s) and s < 0 for s in scores)
