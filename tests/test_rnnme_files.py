"""RNN models with classes and direct connections (RNNME) in model files: saving and
loading bit for bit (also exported and inside mixtures), and every class-map, table and
direct-setting field or array that rnnkit cannot use refused in one line."""

import numpy as np
import pytest

import rnnkit
from rnnkit.errors import ModelFileError
from rnnkit.mix import MixModel
from rnnkit.rnnlm import RNNModel
from rnnkit.train import TrainConfig, train

from modelfile_craft import LINES, array_of, make_models, npy, read_members, replace, write_members
from test_modelfile_hostile import DELETE, load_error, set_field
from test_rnnme_model import KOREAN, MODELS, class_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("rnnme_models"))


def assert_same_model(a: RNNModel, b: RNNModel) -> None:
    assert np.array_equal(a.params, b.params) and np.array_equal(a.class_start, b.class_start)
    assert (a.direct_table is None) == (b.direct_table is None)
    if a.direct_table is not None:
        assert np.array_equal(a.direct_table, b.direct_table)
    assert a.direct_order == b.direct_order and a.describe() == b.describe()
    assert a.score_many(KOREAN) == b.score_many(KOREAN)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("resumable", [True, False])
def test_class_model_file_round_trip(tmp_path, kind, resumable):
    """Saved (whole, or exported without training state) and loaded: the same class map,
    table, weights and scores, bit for bit."""
    model = class_model(**MODELS[kind])
    path = tmp_path / "c.model"
    model.save(path, resumable=resumable)
    loaded = rnnkit.load(path)
    assert_same_model(model, loaded)
    assert loaded.class_start.dtype == np.int32 and loaded.optimizer_arrays == {}


def test_mixture_with_a_class_component_round_trip(tmp_path):
    mixture = MixModel([class_model(direct_order=4), class_model(classes=3, direct_order=0)], [0.3, 0.7])
    path = tmp_path / "mix.model"
    mixture.save(path)
    loaded = rnnkit.load(path)
    for saved, read in zip(mixture.components, loaded.components):
        assert_same_model(saved, read)
    assert loaded.score_many(KOREAN) == mixture.score_many(KOREAN)


def test_class_checkpoint_holds_the_direct_history(models):
    """make_models' RNNME file (a mid-epoch checkpoint) holds the class map, the table,
    Adam's moments, the carried state and direct history, and the epoch's start, table
    included."""
    model = rnnkit.load(models["rnnme"])
    assert (model.classes, model.direct_order, model.direct_table.size) == (3, 3, 64)
    assert set(model.optimizer_arrays) == {"adam_m", "adam_v", "carry_h", "carry_history", "epoch_start_params",
                                           "epoch_start_direct_table", "epoch_start_adam_m", "epoch_start_adam_v"}
    history = model.optimizer_arrays["carry_history"]
    assert history.shape == (4, 8) and (history >= 0).any() and history.max() < model.V
    assert model.describe()["hyperparameters"]["direct_size"] == 64


BAD_FIELDS = [
    # model, field, value, message after "FILE: " (the word vocabulary has 21 units, H = 4)
    ("rnnme", "classes", 0, "field 'classes' must be an integer >= 1, got 0"),
    ("rnnme", "classes", 25, "field 'classes' must be an integer in 1..21 (the vocabulary size), got 25"),
    ("rnnme", "classes", 10**40, "field 'classes' must be an integer in 1..21 (the vocabulary size), got "
                                 "10000000000000000000000000000000000000000"),
    ("rnnme", "classes", 4, "array 'params' must be float32 of shape (229,), got float32 of shape (224,)"),
    ("rnnme", "classes", DELETE, "field 'direct_order' needs a class-factored output (field 'classes')"),
    ("rnnme", "direct_order", 11, "field 'direct_order' must be an integer in 0..10, got 11"),
    ("rnnme", "direct_order", -1, "field 'direct_order' must be an integer in 0..10, got -1"),
    ("rnnme", "direct_order", 0, "fields 'direct_order' and 'direct_size' must both be 0 or both be "
                                 "positive, got 0 and 64"),
    ("rnnme", "direct_size", 0, "fields 'direct_order' and 'direct_size' must both be 0 or both be "
                                "positive, got 3 and 0"),
    ("rnnme", "direct_size", 2**40 + 1, "field 'direct_size' must be an integer in 0..1099511627776, "
                                        "got 1099511627777"),
    ("rnnme", "direct_size", 65, "array 'direct_table' must be float32 of shape (65,), got float32 of shape (64,)"),
    ("rnnme", "direct_size", "64", "field 'direct_size' must be an integer in 0..1099511627776, got '64'"),
    ("rnnme-mix", "components.0.meta.classes", 30,
     "field 'components[0].meta.classes' must be an integer in 1..21 (the vocabulary size), got 30"),
    ("rnnme-mix", "components.0.meta.direct_order", 0,
     "fields 'components[0].meta.direct_order' and 'components[0].meta.direct_size' must both be 0 or "
     "both be positive, got 0 and 64"),
]


@pytest.mark.parametrize("kind, field, value, message", BAD_FIELDS,
                         ids=[f"{k}-{f}-{i}" for i, (k, f, _, _) in enumerate(BAD_FIELDS)])
def test_bad_class_field(models, tmp_path, kind, field, value, message):
    meta, members = read_members(models[kind])
    path = tmp_path / "bad.model"
    write_members(path, set_field(meta, field, value), members)
    assert load_error(path) == message


BAD_ARRAYS = [
    # model, array, new value (a function of the stored one), message after "FILE: "
    ("rnnme", "class_start", lambda a: a[::-1].copy(), "array 'class_start' must rise strictly from 0 to 21"),
    ("rnnme", "class_start", lambda a: np.array([0, 5, 5, 21]), "array 'class_start' must rise strictly from 0 to 21"),
    ("rnnme", "class_start", lambda a: np.array([0, 5, 9, 20]), "array 'class_start' must rise strictly from 0 to 21"),
    ("rnnme", "class_start", lambda a: np.array([-1, 5, 9, 21]), "array 'class_start' must rise strictly from 0 to 21"),
    ("rnnme", "class_start", lambda a: np.array([0, 5, 21]),
     "array 'class_start' must be int64 of shape (4,), got int64 of shape (3,)"),
    ("rnnme", "class_start", lambda a: a.astype(np.float32),
     "array 'class_start' must be int64 of shape (4,), got float32 of shape (4,)"),
    ("rnnme", "direct_table", lambda a: np.where(np.arange(a.size) == 7, np.nan, a).astype(np.float32),
     "array 'direct_table' must hold finite values in -1e+30..1e+30, found nan"),
    ("rnnme", "direct_table", lambda a: np.full_like(a, np.inf), "array 'direct_table' must hold finite values"),
    ("rnnme", "direct_table", lambda a: np.full_like(a, -2e30), "array 'direct_table' must hold finite values"),
    ("rnnme", "direct_table", lambda a: a.astype(np.int64),
     "array 'direct_table' must be float32 of shape (64,), got int64 of shape (64,)"),
    ("rnnme", "carry_history", lambda a: a[:3].copy(),
     "array 'carry_history' must have a row per lane of 'carry_h' (4), got 3"),
    ("rnnme", "carry_history", lambda a: a[:, :4].copy(),
     "array 'carry_history' must be int64 of shape (lanes, 8), got int64 of shape (4, 4)"),
    ("rnnme", "carry_history", lambda a: np.where(a == a.max(), 21, a),
     "array 'carry_history' must hold input ids in 0..20 or -1, found 21"),
    ("rnnme", "carry_history", lambda a: np.full_like(a, -2), "array 'carry_history' must hold input ids in 0..20 or -1, found -2"),
    ("rnnme", "epoch_start_direct_table", lambda a: a[1:].copy(),
     "array 'epoch_start_direct_table' must be float32 of shape (64,), got float32 of shape (63,)"),
    ("rnnme", "epoch_start_direct_table", lambda a: np.full_like(a, np.nan),
     "array 'epoch_start_direct_table' must hold finite values"),
    ("rnnme-mix", "c0.class_start", lambda a: a[:-1].copy(),
     "array 'c0.class_start' must be int64 of shape (4,), got int64 of shape (3,)"),
    ("rnnme-mix", "c0.direct_table", lambda a: np.full_like(a, np.nan), "array 'c0.direct_table' must hold finite"),
]


@pytest.mark.parametrize("kind, name, change, message", BAD_ARRAYS,
                         ids=[f"{k}-{n}-{i}" for i, (k, n, _, _) in enumerate(BAD_ARRAYS)])
def test_bad_class_array(models, tmp_path, kind, name, change, message):
    meta, members = read_members(models[kind])
    path = tmp_path / "bad.model"
    write_members(path, meta, replace(members, name, npy(change(array_of(members, name)))))
    assert load_error(path).startswith(message)


@pytest.mark.parametrize("name, message", [
    ("class_start", "array 'class_start' is missing"),
    ("direct_table", "array 'direct_table' is missing"),
    ("carry_h", "array 'carry_history' comes without 'carry_h'"),
])
def test_missing_class_array(models, tmp_path, name, message):
    meta, members = read_members(models["rnnme"])
    path = tmp_path / "bad.model"
    write_members(path, meta, [m for m in members if m[0] != f"{name}.npy"])
    assert load_error(path) == message


@pytest.mark.parametrize("accum, message", [
    (np.full(64, 2.5, np.float32), None),
    (np.zeros(63, np.float32), "array 'direct_accum' must be float32 of shape (64,), got float32 of shape (63,)"),
    (np.zeros(64, np.int64), "array 'direct_accum' must be float32 of shape (64,), got int64 of shape (64,)"),
    (np.where(np.arange(64) == 5, -1.0, 1.0).astype(np.float32),
     "array 'direct_accum' must hold finite values in 0..1e+30, found -1.0"),
    (np.full(64, np.nan, np.float32), "array 'direct_accum' must hold finite values in 0..1e+30, found nan"),
    (np.full(64, np.inf, np.float32), "array 'direct_accum' must hold finite values in 0..1e+30, found inf"),
])
def test_adagrad_sums_in_a_checkpoint(models, tmp_path, accum, message):
    """AdaGrad's sums of squares (and their epoch-start copy) load as optimizer state when
    they are the table's size, float32, finite and >= 0; otherwise one line names them."""
    meta, members = read_members(models["rnnme"])
    path = tmp_path / "adagrad.model"
    for name in ("direct_accum", "epoch_start_direct_accum"):
        write_members(path, meta, members + [(f"{name}.npy", npy(accum))])
        if message is None:
            assert np.array_equal(rnnkit.load(path).optimizer_arrays[name], accum)
        else:
            assert load_error(path) == message.replace("direct_accum", name)


LAZY = {"carry_direct_average": np.full(64, 0.5, np.float32), "carry_direct_synced": np.arange(64) % 4}


@pytest.mark.parametrize("change, message", [
    ({}, None),
    ({"carry_direct_average": None}, "arrays 'carry_direct_average' and 'carry_direct_synced' come together, "
                                     "with 'carry_h' (a mid-epoch checkpoint)"),
    ({"carry_direct_synced": np.arange(64) % 5},
     "array 'carry_direct_synced' must hold training steps in 0..3 (train_state.step), found 4"),
    ({"carry_direct_synced": np.full(64, -1)},
     "array 'carry_direct_synced' must hold training steps in 0..3 (train_state.step), found -1"),
    ({"carry_direct_synced": np.zeros(64, np.float32)},
     "array 'carry_direct_synced' must be int64 of shape (64,), got float32 of shape (64,)"),
    ({"carry_direct_average": np.full(64, np.nan, np.float32)},
     "array 'carry_direct_average' must hold finite values in -1e+30..1e+30, found nan"),
    ({"carry_direct_average": np.zeros(65, np.float32)},
     "array 'carry_direct_average' must be float32 of shape (64,), got float32 of shape (65,)"),
])
def test_lazy_table_average_in_a_checkpoint(models, tmp_path, change, message):
    """A mid-epoch checkpoint's lazily kept table average (train.TableAverage) loads as
    training state when both arrays are there, the table's size, the average finite and
    the steps within the file's; otherwise one line names them. make_models' RNNME file
    stands at step 3."""
    meta, members = read_members(models["rnnme"])
    assert meta["train_state"]["step"] == 3
    arrays = {name: array for name, array in {**LAZY, **change}.items() if array is not None}
    path = tmp_path / "lazy.model"
    write_members(path, meta, members + [(f"{name}.npy", npy(array)) for name, array in arrays.items()])
    if message is None:
        loaded = rnnkit.load(path).optimizer_arrays
        assert all(np.array_equal(loaded[name], array) for name, array in arrays.items())
    else:
        assert load_error(path) == message


def test_export_leaves_the_adagrad_sums_out(tmp_path):
    """A model trained with AdaGrad keeps its sums of squares for --resume; a copy for
    scoring (resumable=False, as `rnnkit export` writes) drops them and scores the same."""
    config = TrainConfig(unit="word", hidden=4, bptt=8, batch=4, epochs=1, seed=1, threads=1, classes=3,
                         direct_order=3, direct_size=64, direct_optimizer="adagrad")
    model = train(LINES, LINES[:6], config)
    whole, copy = tmp_path / "whole.model", tmp_path / "copy.model"
    model.save(whole)
    model.save(copy, resumable=False)
    assert "direct_accum" in rnnkit.load(whole).optimizer_arrays
    assert rnnkit.load(copy).optimizer_arrays == {}
    assert rnnkit.load(copy).score_many(KOREAN) == model.score_many(KOREAN)


@pytest.mark.parametrize("name", ["class_start", "direct_table", "raw_direct_table", "direct_accum",
                                  "carry_history"])
def test_class_arrays_in_a_plain_rnn_are_refused(models, tmp_path, name):
    """A full-softmax RNN's file holds no class map or table: one found there is unexpected."""
    meta, members = read_members(models["rnn"])
    path = tmp_path / "bad.model"
    write_members(path, meta, members + [(f"{name}.npy", npy(np.zeros(4, np.int64)))])
    assert load_error(path) == f"unexpected array {name!r}"


def test_resuming_a_checkpoint_without_its_direct_history(models, tmp_path):
    """A mid-epoch checkpoint of a model with direct connections must carry the direct
    history: without it the resumed run would not be the uninterrupted one."""
    meta, members = read_members(models["rnnme"])
    path = tmp_path / "bad.model"
    write_members(path, meta, [m for m in members if m[0] != "carry_history.npy"])
    model = rnnkit.load(path)
    config = TrainConfig(**model.hyper)
    with pytest.raises(ModelFileError, match=r"^mid-epoch checkpoint: no carry_history array \(the direct "
                                             r"history of each of its 4 lanes\)$"):
        train(LINES, LINES[:6], config, output_path=path, resume_from=model)


def test_resuming_the_checkpoint_finishes_the_epoch(models, tmp_path):
    """make_models' checkpoint resumes to the end of its epoch: a model whose record has
    the epoch and no partial state."""
    path = tmp_path / "resumed.model"
    path.write_bytes(models["rnnme"].read_bytes())
    model = rnnkit.load(path)
    train(LINES, LINES[:6], TrainConfig(**model.hyper), output_path=path, resume_from=model)
    finished = rnnkit.load(path)
    assert len(finished.record["epochs"]) == 1 and "partial" not in finished.train_state
    assert not any(name.startswith(("carry", "epoch_start")) for name in finished.optimizer_arrays)
