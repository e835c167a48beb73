"""Bounded-memory n-gram building: a build spilled to disk equals the in-memory one byte
for byte, the spill files go with the build, and a corpus can be many files, globs,
gzip files and standard input, read a block at a time."""

from __future__ import annotations

import gzip
import io
import shutil
import gc
import tracemalloc
import zipfile
from itertools import chain
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnnkit import kernel, modelfile, ngram_build
from rnnkit.cli import cli
from rnnkit.errors import ConfigError, CorpusError
from rnnkit.ngram import NgramModel
from rnnkit.units import read_line_blocks, read_lines

FIXTURES = Path(__file__).parent / "fixtures" / "kenlm"


def invoke(args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def ptb(tmp_path_factory) -> Path:
    """The 3,370-line PTB sample as a plain text file (74k positions)."""
    path = tmp_path_factory.mktemp("ptb") / "ptb.txt"
    path.write_bytes(gzip.decompress((FIXTURES / "ptb_train.txt.gz").read_bytes()))
    return path


def arpa_bytes(model: NgramModel, tmp_path, name: str) -> bytes:
    model.write_arpa(tmp_path / name)
    return (tmp_path / name).read_bytes()


def assert_same_arrays(model: NgramModel, other: NgramModel) -> None:
    """The arrays of the two model files are equal: the query structures too (packed
    vocabulary, hash tables, KenLM's extendable flags), which the ARPA file lacks."""
    arrays, others = model.file_contents()[2], other.file_contents()[2]
    assert arrays.keys() == others.keys()
    assert all(arrays[name].dtype == others[name].dtype and np.array_equal(arrays[name], others[name])
               for name in arrays)


@pytest.fixture
def spills(monkeypatch):
    """Counts the columns that go to disk (so a test knows the spilled path ran)."""
    spilled = []
    spill = ngram_build.Column.spill

    def counting(self):
        spilled.append(self._path is None)
        spill(self)
    monkeypatch.setattr(ngram_build.Column, "spill", counting)
    return spilled


@pytest.mark.parametrize("smoothing, order, prune", [("kn", 5, None), ("wb", 3, None), ("addk", 3, None),
                                                     ("mle", 2, None), ("kn", 4, [0, 1, 2])])
def test_spilled_build_is_the_in_memory_build(ptb, tmp_path, spills, smoothing, order, prune):
    """The smallest budget cuts the sample into 73 chunks whose runs are merged from files;
    the ARPA file and the training record are those of the in-memory build."""
    local = NgramModel.train(read_lines(ptb), order, smoothing=smoothing, prune=prune)
    assert not spills
    spilled = NgramModel.train_file(ptb, order, smoothing=smoothing, prune=prune,
                                    memory=ngram_build.MIN_MEMORY, temp_dir=tmp_path)
    assert sum(spills) > 2 * order   # positions and every order's runs went to files
    assert arpa_bytes(spilled, tmp_path, "spilled.arpa") == arpa_bytes(local, tmp_path, "local.arpa")
    assert_same_arrays(spilled, local)
    same = {k: v for k, v in spilled.info.items() if k not in ("train_seconds", "corpus")}
    assert same == {k: v for k, v in local.info.items() if k != "train_seconds"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.arpa", "spilled.arpa"]  # spill dir gone


def test_spilled_orders_beyond_every_sentence(tmp_path, spills):
    """Orders longer than any sentence leave empty runs in every chunk; they merge to nothing."""
    lines = [f"w{i % 7} w{i % 5}" for i in range(3000)]
    local = NgramModel.train(lines, 6)
    spilled = NgramModel.train(lines, 6, memory=ngram_build.MIN_MEMORY, temp_dir=tmp_path)
    assert spills and local.ngram_counts()[4:] == [0, 0]
    assert arpa_bytes(spilled, tmp_path, "s.arpa") == arpa_bytes(local, tmp_path, "l.arpa")


def test_merge_runs_sums_counts_across_blocks(tmp_path):
    """Runs with shared, disjoint and empty key sets merge (blocks of 1,024) into the sorted
    union with summed counts."""
    rng = np.random.default_rng(5)
    with ngram_build.Workspace(ngram_build.MIN_MEMORY, tmp_path) as work:
        runs, every = [], []
        for size, high in ((5000, 8000), (0, 1), (3000, 4000), (7000, 10**12)):
            keys = np.unique(rng.integers(0, high, size))
            counts = rng.integers(1, 9, len(keys))
            runs.append(ngram_build.Run(work, keys, counts, spilled=True))
            every.append((keys, counts))
        keys, counts = ngram_build.merge_runs(runs, work.chunk_positions)
        assert len(list(tmp_path.iterdir())) == 1      # the workspace's own directory
    assert not list(tmp_path.iterdir())                # removed with everything in it
    union = np.concatenate([k for k, _ in every])
    expected, inverse = np.unique(union, return_inverse=True)
    assert np.array_equal(keys, expected)
    assert np.array_equal(counts, np.bincount(inverse, weights=np.concatenate([c for _, c in every])))


def test_spill_files_are_removed_when_the_build_fails(tmp_path, spills):
    """A corpus that turns out bad half-way fails with its own message, and the spill
    directory goes with the build."""
    def blocks():
        yield ["a b c d"] * 5000
        raise CorpusError("part.txt: not valid UTF-8 at line 3")
    with pytest.raises(CorpusError, match="line 3"):
        ngram_build.build(blocks(), 3, memory=ngram_build.MIN_MEMORY, temp_dir=tmp_path)
    assert spills and not list(tmp_path.iterdir())


# ---------------------------------------------------------------- what the build holds
#
# tracemalloc sees NumPy's arrays and Python's objects, so these hold to the byte on any
# machine, unlike the process's RSS (benchmarks/bench_scale.py measures that).

@pytest.mark.parametrize("memory", [None, ngram_build.MIN_MEMORY])
def test_the_hash_tables_are_built_beside_the_model_alone(ptb, tmp_path, monkeypatch, memory):
    """When the build makes the hash tables (its last and biggest step), what it holds is
    the model's other arrays: the counts, prune masks, position streams and the Python
    vocabulary (strs and a dict, several times the packed one) are gone."""
    held = []
    build_tables = kernel.ngram_hash_tables

    def spy(keys, V):
        gc.collect()   # what an earlier test left in cycles would otherwise count here, by chance
        held.append(tracemalloc.get_traced_memory()[0])
        return build_tables(keys, V)
    # a first build fills the caches a build may fill (compiled patterns, lazily imported
    # modules): what they hold depends on the tests before, and is not the build's
    NgramModel.train_file(ptb, 5, memory=memory, temp_dir=tmp_path)
    monkeypatch.setattr(kernel, "ngram_hash_tables", spy)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        model = NgramModel.train_file(ptb, 5, memory=memory, temp_dir=tmp_path)
    finally:
        tracemalloc.stop()
    arrays = model.file_contents()[2]
    model_bytes = sum(array.nbytes for name, array in arrays.items() if not name.startswith("table_"))
    assert len(held) == 1 and held[0] - before < 1.1 * model_bytes
    # the strs are decoded again when asked for: the units in first-occurrence order
    words = (word for line in read_lines(ptb) for word in line.split())
    assert model.vocab.tokens == list(dict.fromkeys(chain(["<unk>", "<s>", "</s>"], words)))


def test_save_writes_the_arrays_themselves(tmp_path):
    """Each member holds what np.save writes (any shape, dtype, order), and saving a big
    array allocates next to nothing: its bytes go to the file, not into a copy first."""
    arrays = {"f": np.arange(12, dtype=np.float32).reshape(3, 4), "i": np.arange(5, dtype=np.int64),
              "u": np.zeros(0, dtype=np.uint8), "scalar": np.array(2.5, dtype=np.float32),
              "strided": np.arange(20, dtype=np.int64)[::3], "fortran": np.asfortranarray(np.ones((2, 3), np.float32))}
    modelfile.save(tmp_path / "m.model", "ngram", {}, arrays)
    with zipfile.ZipFile(tmp_path / "m.model") as archive:
        for name, array in arrays.items():
            expected = io.BytesIO()
            np.save(expected, np.ascontiguousarray(array), allow_pickle=False)
            assert archive.read(f"{name}.npy") == expected.getvalue()
    big = {"keys": np.arange(2 << 20, dtype=np.int64)}   # 16 MiB
    tracemalloc.start()
    try:
        modelfile.save(tmp_path / "big.model", "ngram", {}, big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_memory_sizes():
    assert ngram_build.parse_size("500M") == 500 << 20
    assert ngram_build.parse_size("1.5g") == 3 << 29
    assert ngram_build.parse_size("65536") == 65536
    assert 0 < ngram_build.parse_size("10%") < ngram_build.parse_size("20%")
    for bad in ("", "M", "-1G", "0", "3X", "nan", "150%"):
        with pytest.raises(ConfigError, match="memory size"):
            ngram_build.parse_size(bad)
    with pytest.raises(ConfigError, match="memory must be at least 65536 bytes; got 1024"):
        NgramModel.train(["a b"], 2, memory=1024)


def test_cli_corpus_from_files_globs_gzip_and_stdin(ptb, tmp_path):
    """`rnnkit train a.txt b.txt.gz 'c/*.txt' -` reads them in that order: the model of the
    concatenated text, with or without --memory."""
    lines = ptb.read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "c").mkdir()
    parts = {"a.txt": lines[:900], "b.txt.gz": lines[900:1800], "c/1.txt": lines[1800:2400],
             "c/2.txt": lines[2400:3000]}
    for name, part in parts.items():
        data = "".join(part).encode("utf-8")
        (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    stdin = "".join(lines[3000:]).encode("utf-8")
    common = ["--type", "ngram", "--unit", "word", "--order", 3]
    whole = invoke(["train", ptb, *common, "-o", tmp_path / "whole.model", "--arpa", tmp_path / "whole.arpa"])
    assert whole.exit_code == 0, whole.output
    for extra in ([], ["--memory", "64K", "--temp-dir", tmp_path / "c"]):
        result = invoke(["train", tmp_path / "a.txt", tmp_path / "b.txt.gz", str(tmp_path / "c" / "*.txt"), "-",
                         *common, "-o", tmp_path / "parts.model", "--arpa", tmp_path / "parts.arpa", *extra],
                        input=stdin)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "parts.arpa").read_bytes() == (tmp_path / "whole.arpa").read_bytes()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["1.txt", "2.txt"]   # no spill left
    info = invoke(["info", "-m", tmp_path / "parts.model"]).stdout
    assert f"{tmp_path / 'a.txt'}, {tmp_path / 'b.txt.gz'}, {tmp_path / 'c' / '1.txt'}" in info


def test_cli_corpus_and_memory_errors(ptb, tmp_path):
    """Each bad corpus argument or size is a one-line error naming it."""
    cases = [
        (["train", tmp_path / "none" / "*.txt", "--type", "ngram"], 2, f"no file matches {tmp_path}/none/*.txt"),
        (["train", ptb, tmp_path / "absent.txt", "--type", "ngram"], 1, f"file not found: {tmp_path}/absent.txt"),
        (["train", ptb, "-", "-", "--type", "ngram"], 2, "'-' (standard input) can be given once"),
        (["train", ptb, "--type", "ngram", "--memory", "lots"], 2, "memory size must be a positive number"),
        (["train", ptb, "--type", "ngram", "--memory", "1K"], 1, "memory must be at least 65536 bytes"),
        (["train", ptb, "--memory", "1G"], 2, "--memory needs --type ngram"),
        (["train", ptb, "--type", "ngram", "--temp-dir", tmp_path / "nowhere"], 2, "does not exist"),
    ]
    for args, code, message in cases:
        result = invoke(args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output, (args, result.stderr)
    result = invoke(["train", ptb, "-", "--type", "ngram", "-o", tmp_path / "m"], input=b"\n \n")
    assert result.exit_code == 1 and result.stderr.strip() == "Error: standard input has no non-empty lines"


TRICKY = ("\ufeffbom start\r\nwindows\r\n\rlone cr\rmac\n\ncafe\u0301 nfd\n\ufeffinner bom kept\n"
          "last line without newline").encode("utf-8")


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 7, 64, 1 << 20])
def test_line_blocks_are_the_lines_of_the_file(tmp_path, block_bytes):
    """Any block size gives read_lines' lines: a CRLF cut between reads is one break, the
    BOM is dropped at the start of the file only, NFC holds; gzip reads the same."""
    plain, packed = tmp_path / "t.txt", tmp_path / "t.txt.gz"
    plain.write_bytes(TRICKY)
    packed.write_bytes(gzip.compress(TRICKY))
    expected = read_lines(plain)
    assert expected[:3] == ["bom start", "windows", ""] and "café nfd" in expected
    assert "\ufeffinner bom kept" in expected
    for path in (plain, packed):
        blocks = list(read_line_blocks(path, block_bytes))
        assert [line for block in blocks for line in block] == expected
        assert block_bytes > 7 or len(blocks) > 5


def test_line_block_errors_name_the_line_in_the_file(tmp_path):
    """An error in a later block names its line and byte offset in the whole file."""
    path = tmp_path / "bad.txt"
    path.write_bytes(b"one\ntwo\nthree\nfo\xffur\n")
    whole = str(pytest.raises(CorpusError, read_lines, path).value)
    assert whole.startswith(f"{path}: not valid UTF-8 at line 4 (byte offset 16 in the file, 2 in the line)")
    with pytest.raises(CorpusError) as blocked:
        list(read_line_blocks(path, 4))
    assert str(blocked.value) == whole
    path.write_bytes(b"one\ntwo\n\x00")
    with pytest.raises(CorpusError, match=r"NUL byte at byte offset 8\)"):
        list(read_line_blocks(path, 2))
    shutil.copy(path, tmp_path / "fake.gz")
    (tmp_path / "fake.gz").write_bytes(b"\x1f\x8b" + b"not gzip")
    with pytest.raises(CorpusError, match="cannot read .*fake.gz"):
        list(read_line_blocks(tmp_path / "fake.gz"))
