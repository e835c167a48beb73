"""`rnnkit train` with classes and direct connections (RNNME, its default): the options,
their one-line errors, and info, export and --resume keeping the output layer."""

import json
import math

import pytest

from rnnkit import loader
from test_cli import CORPUS, assert_clean_error, invoke

SMALL = ["--hidden", 8, "--bptt", 8, "--batch", 4, "--epochs", 1, "--seed", 1, "--threads", 1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("rnnme_cli") / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


def info(path) -> dict:
    result = invoke(["info", "-m", path, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def train(corpus, out, *options):
    result = invoke(["train", corpus, "-o", out, *SMALL, *options], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_default_is_rnnme_and_export_keeps_it(corpus, tmp_path):
    """With no options: sqrt(V) classes and direct connections of order 6 in a 4M-entry
    table; the summary says so, info shows it and an exported copy keeps it (same scores)."""
    out, copy = tmp_path / "m.model", tmp_path / "copy.model"
    result = train(corpus, out)
    described = info(out)
    V = described["vocab_size"]
    assert (described["classes"], described["direct_order"], described["direct_size"]) == \
        (round(math.sqrt(V)), 6, 2**22)
    assert f"{round(math.sqrt(V))} classes, direct order 6 (4,194,304 entries)" in result.stderr
    assert invoke(["export", "-m", out, "-o", copy]).exit_code == 0
    assert {k: info(copy)[k] for k in ("classes", "direct_order", "direct_size")} == \
        {k: described[k] for k in ("classes", "direct_order", "direct_size")}
    sentences = ["나는 버스를 탔다", "메론을 먹는다"]
    assert loader.load(copy).score_many(sentences) == loader.load(out).score_many(sentences)


@pytest.mark.parametrize("options, expected", [
    (["--classes", 0], {}),                                             # the lecture's RNN
    (["--classes", 0, "--direct-size", 0], {}),
    (["--classes", 0, "--direct-order", 0], {}),
    (["--direct-order", 0], {"classes": 7, "direct_order": 0, "direct_size": 0}),
    (["--direct-size", 0], {"classes": 7, "direct_order": 0, "direct_size": 0}),
    (["--classes", 3, "--direct-order", 2, "--direct-size", "4k"], {"classes": 3, "direct_order": 2,
                                                                      "direct_size": 4096}),
    (["--classes", "auto", "--direct-size", 1000], {"classes": 7, "direct_order": 6, "direct_size": 1000}),
])
def test_output_layer_options(corpus, tmp_path, options, expected):
    """0 for --classes, --direct-order or --direct-size turns the default parts off;
    --classes 0 alone gives the lecture's RNN."""
    out = tmp_path / "m.model"
    train(corpus, out, *options)
    described = info(out)
    assert {k: described[k] for k in ("classes", "direct_order", "direct_size") if k in described} == expected


@pytest.mark.parametrize("options, code, message", [
    (["--classes", 100], 1, "Error: classes = 100 is more than the 49 units of the vocabulary; "
                            "give at most 49 (0: full softmax)"),
    (["--classes", -1], 2, "Invalid value for '--classes': expected a number of classes >= 0 or 'auto', got '-1'"),
    (["--classes", "many"], 2, "expected a number of classes >= 0 or 'auto', got 'many'"),
    (["--direct-order", 11], 1, "Error: direct order must be in [0, 10], got 11"),
    (["--classes", 0, "--direct-order", 3], 2,
     "Invalid value for --direct-order: 3 gives direct connections, which need --classes above 0"),
    (["--direct-order", 0, "--direct-size", "4M"], 2,
     "Invalid value for --direct-size: 4194304 gives direct connections, which need --direct-order above 0"),
    (["--direct-size", 0, "--direct-order", 4], 2,
     "Invalid value for --direct-order: 4 gives direct connections, which need --direct-size above 0"),
    (["--direct-size", "4T"], 2, "Invalid value for '--direct-size': expected a number of entries like 1048576 "
                                 "or 1M (K, M, G: 2^10, 2^20, 2^30), got '4T'"),
    (["--direct-size", "-4"], 2, "got '-4'"),
    (["--direct-size", "2000G"], 1, "Error: direct size must be in [1, 2^40] entries with direct order 6, "
                                    "got 2147483648000"),
    (["--direct-optimizer", "adam"], 2, "Invalid value for '--direct-optimizer': 'adam' is not one of 'sgd', "
                                        "'adagrad'."),
    (["--direct-lr", 200], 1, "Error: direct learning rate must be in [0, 100], got 200.0"),
    (["--direct-lr", -1], 2, "Invalid value for '--direct-lr': -1.0 is not in the range x>=0."),
])
def test_bad_output_layer_options(corpus, tmp_path, options, code, message):
    out = tmp_path / "m.model"
    result = invoke(["train", corpus, "-o", out, *SMALL, *options])
    assert_clean_error(result, code, message)
    assert not out.exists()


def test_a_table_too_large_for_memory(corpus, tmp_path, monkeypatch):
    """The memory check counts the table (and its copies) and names --direct-size."""
    import rnnkit.train as train_module
    monkeypatch.setattr(train_module, "physical_memory_bytes", lambda: 2**30)
    result = invoke(["train", corpus, "-o", tmp_path / "m.model", *SMALL, "--direct-size", "128M"])
    assert_clean_error(result, 1, "needs about 1.5 GiB, more than this machine's 1.0 GiB; lower --direct-size "
                                  "(the direct table takes 1.5 GiB), --hidden, --batch, --bptt or --max-vocab")


def test_resume_reads_the_output_layer_from_the_file(corpus, tmp_path):
    """--resume goes on with the file's classes and direct connections whatever the
    defaults or options say, as for --hidden."""
    out = tmp_path / "m.model"
    train(corpus, out, "--classes", 3, "--direct-order", 2, "--direct-size", "1K")
    result = invoke(["train", corpus, "-o", out, "--resume", "--epochs", 2, "--classes", 5, "--threads", 1])
    assert result.exit_code == 0, result.output
    described = info(out)
    assert (described["classes"], described["direct_order"], described["direct_size"]) == (3, 2, 1024)
    assert len(described["training"]["epochs"]) == 2


def test_direct_optimizer_and_rate_are_recorded_and_resumed(corpus, tmp_path):
    """--direct-optimizer adagrad and --direct-lr reach training and the file's settings;
    the file keeps AdaGrad's sums for --resume, which goes on with both, and an exported
    copy leaves them out."""
    out, copy = tmp_path / "m.model", tmp_path / "copy.model"
    train(corpus, out, "--direct-size", "1K", "--direct-optimizer", "adagrad", "--direct-lr", 0.2)
    hyper = info(out)["hyperparameters"]
    assert (hyper["direct_optimizer"], hyper["direct_lr"]) == ("adagrad", 0.2)
    assert loader.load(out).optimizer_arrays["direct_accum"].shape == (1024,)
    result = invoke(["train", corpus, "-o", out, "--resume", "--epochs", 2, "--threads", 1])
    assert result.exit_code == 0, result.output
    described = info(out)
    assert len(described["training"]["epochs"]) == 2
    assert (described["hyperparameters"]["direct_optimizer"], described["hyperparameters"]["direct_lr"]) == \
        ("adagrad", 0.2)
    assert invoke(["export", "-m", out, "-o", copy]).exit_code == 0
    assert "direct_accum" not in loader.load(copy).optimizer_arrays
