"""Dask (rnnkit[dask]): a sharded n-gram build is the local build byte for byte, sharded
eval and score give the local totals and scores, and a missing scheduler is one line.

One LocalCluster of two worker processes (loopback only) serves the module; the
library is given its client, the CLI its scheduler address.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnnkit import sharding
from rnnkit.cli import cli
from rnnkit.ngram import NgramModel
from rnnkit.ngram_build import build_sharded
from rnnkit.units import read_lines

from test_ngram_build import assert_same_arrays

distributed = pytest.importorskip("distributed")   # in the test extras: CI runs these
FIXTURES = Path(__file__).parent / "fixtures" / "kenlm"


def invoke(args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpora")
    paths = {}
    for name in ("ptb_train.txt", "small_ko.txt", "ptb_queries.txt"):
        paths[name] = root / name
        paths[name].write_bytes(gzip.decompress((FIXTURES / f"{name}.gz").read_bytes()))
    return paths


def arpa(model: NgramModel, path: Path) -> bytes:
    model.write_arpa(path)
    return path.read_bytes()


@pytest.mark.parametrize("corpus, unit, order, smoothing, prune", [
    ("ptb_train.txt", "word", 5, "kn", None),
    ("ptb_train.txt", "word", 4, "wb", None),
    ("ptb_train.txt", "word", 3, "addk", None),
    ("ptb_train.txt", "word", 4, "kn", [0, 1, 2]),
    ("small_ko.txt", "word", 5, "kn", None),      # tiny: orders 4 and 5 need the fallback discounts
    ("small_ko.txt", "char", 4, "kn", None),
    ("small_ko.txt", "jamo", 1, "wb", None),
])
def test_sharded_build_is_the_local_build(client, corpora, tmp_path, corpus, unit, order, smoothing, prune):
    """Counted in 4 shards, estimated in 4 last-word partitions on 2 workers: the same ARPA
    bytes and training record (discounts, fallback orders) as the in-memory build."""
    path = corpora[corpus]
    local = NgramModel.train(read_lines(path), order, smoothing=smoothing, unit=unit, prune=prune)
    shards = sharding.make_shards([path], 4)
    assert len(shards) == 4 and shards[0].start == 0 and shards[-1].stop == path.stat().st_size
    sharded = build_sharded(client, [path], order, smoothing=smoothing, unit=unit, prune=prune)
    assert arpa(sharded, tmp_path / "s.arpa") == arpa(local, tmp_path / "l.arpa")
    assert_same_arrays(sharded, local)
    assert {k: v for k, v in sharded.info.items() if k not in ("train_seconds", "corpus")} == \
        {k: v for k, v in local.info.items() if k != "train_seconds"}
    if corpus == "small_ko.txt" and order == 5:
        assert local.info["discount_fallback"] == [4, 5]


def test_shards_with_disjoint_vocabularies(client, corpora, tmp_path):
    """Korean and English files (no unit in common) as shards, a gzip file and standard
    input among them: the vocabulary's first-occurrence order and every n-gram come out
    as one pass over the concatenation gives them."""
    korean, english = corpora["small_ko.txt"], corpora["ptb_queries.txt"]
    packed = tmp_path / "english.txt.gz"
    packed.write_bytes(gzip.compress(english.read_bytes()))
    stdin = b"stdin line one\nand two\n"
    whole = tmp_path / "whole.txt"
    whole.write_bytes(korean.read_bytes() + english.read_bytes() + stdin)
    common = ["--type", "ngram", "--unit", "word", "--order", 4]
    local = invoke(["train", whole, *common, "-o", tmp_path / "l.model", "--arpa", tmp_path / "l.arpa"])
    assert local.exit_code == 0, local.output
    result = invoke(["train", korean, packed, "-", *common, "-o", tmp_path / "s.model", "--arpa", tmp_path / "s.arpa",
                     "--scheduler", client.scheduler.address], input=stdin)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.arpa").read_bytes() == (tmp_path / "l.arpa").read_bytes()
    assert_same_arrays(NgramModel.load(tmp_path / "s.model"), NgramModel.load(tmp_path / "l.model"))


def test_sharded_eval_and_score_match_the_local_run(client, corpora, tmp_path):
    """eval: the same counts, and totals equal up to the order of a float sum (1e-12);
    score --file: the same sentence scores exactly, in file order (per token too)."""
    model = tmp_path / "kn.model"
    assert invoke(["train", corpora["ptb_train.txt"], "--type", "ngram", "--unit", "word", "-o", model]).exit_code == 0
    test = corpora["ptb_queries.txt"]
    address = ["--scheduler", client.scheduler.address]
    local = json.loads(invoke(["eval", test, "-m", model, "--json"]).stdout)
    result = invoke(["eval", test, "-m", model, "--json", *address])
    assert result.exit_code == 0, result.output
    sharded = json.loads(result.stdout)
    assert local.keys() == sharded.keys() and "log10_oov" in local
    for key, value in local.items():
        if isinstance(value, (int, str)):   # counts, and the bits-per-char basis
            assert sharded[key] == value, key
        else:
            assert sharded[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    for extra in ([], ["--per-token"]):
        local = invoke(["score", "--file", test, "-m", model, "--json", *extra]).stdout
        result = invoke(["score", "--file", test, "-m", model, "--json", *extra, *address])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == json.loads(local)


def test_sharded_scoring_options_that_do_not_shard(client, corpora, tmp_path):
    model = tmp_path / "kn.model"
    NgramModel.train(read_lines(corpora["small_ko.txt"]), 2).save(model)
    address = ["--scheduler", client.scheduler.address]
    cases = [(["score", "some sentence", "-m", model, *address], "--workers and --scheduler shard a --file"),
             (["eval", corpora["small_ko.txt"], "-m", model, "--format", "srilm", *address], "it is not sharded"),
             (["eval", corpora["small_ko.txt"], "-m", model, "--workers", 2, *address], "not both"),
             (["train", corpora["small_ko.txt"], "--type", "ngram", "--memory", "1G", *address], "--memory bounds")]
    for args, message in cases:
        result = invoke(args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)


def test_a_missing_scheduler_is_one_line(corpora, tmp_path, monkeypatch):
    monkeypatch.setattr(sharding, "CONNECT_TIMEOUT", "1s")
    for address, reason in (("tcp://127.0.0.1:9", "Timed out trying to connect"),
                            ("nonsense://127.0.0.1:9", "unknown address scheme 'nonsense'")):
        result = invoke(["train", corpora["small_ko.txt"], "--type", "ngram", "-o", tmp_path / "m", "--scheduler",
                         address])
        assert result.exit_code == 1, result.output
        line = f"Error: cannot reach the Dask scheduler at {address}: {reason}"
        assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "m").exists()


def test_a_local_cluster_from_workers(corpora, tmp_path):
    """--workers N starts (and stops) a LocalCluster of its own."""
    common = [corpora["small_ko.txt"], "--type", "ngram", "--order", 3]
    assert invoke(["train", *common, "-o", tmp_path / "l", "--arpa", tmp_path / "l.arpa"]).exit_code == 0
    result = invoke(["train", *common, "-o", tmp_path / "s", "--arpa", tmp_path / "s.arpa", "--workers", 1])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.arpa").read_bytes() == (tmp_path / "l.arpa").read_bytes()


def test_no_dask_import_without_the_options(corpora, tmp_path):
    code = ("import sys\nfrom click.testing import CliRunner\nfrom rnnkit.cli import cli\n"
            f"r = CliRunner().invoke(cli, ['train', {str(corpora['small_ko.txt'])!r}, '--type', 'ngram', '-o', "
            f"{str(tmp_path / 'm')!r}])\nassert r.exit_code == 0, r.output\n"
            f"r = CliRunner().invoke(cli, ['eval', {str(corpora['small_ko.txt'])!r}, '-m', {str(tmp_path / 'm')!r}])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
