"""RNN training reads its corpus from a memory-mapped id file (rnnkit/idcorpus.py): the same
batches and the same model as the in-memory path it replaced, the held-out lines, the id
dtype, temporary files that never outlive the run, and memory that does not grow with it."""

import gzip
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnnkit import batching, idcorpus
from rnnkit.cli import cli
from rnnkit.errors import CorpusError, OutputError
from rnnkit.rnnlm import RNNModel
from rnnkit.train import TrainConfig, TrainingInterrupted, new_model, train
from rnnkit.units import Tokenizer
from rnnkit.vocab import Vocab

KOREAN = [
    "나는 버스를 탔다", "나는 버스를 타고 학교에 갔다", "선생님이 교실로 부리나케 달려갔다", "메론을 먹는다",
    "오늘은 날씨가 좋다", "영화 정말 재미있다", "이 영화 최고", "버스를 타고 집에 왔다",
] * 6
LONG = "오늘은 버스를 타고 학교에 갔다가 영화를 보고 메론을 먹고 집에 왔다 " * 4   # 132 units: more than a batch
CORPUS = KOREAN[:20] + [LONG] + KOREAN[20:]
VALID = ["나는 학교에 갔다", "영화를 타고 버스에 왔다", "오늘은 메론이 최고"]
# sha256 digests (first 16 hex digits) of the vocabulary, of every training window (inputs,
# targets, resets) and of the trained model (weights, direct table, train and valid loss per
# epoch, corpus record), computed once with the in-memory path before the id file replaced
# it (commit 3056f1f): the windows digest is exact on any machine; the model's holds for
# the OpenBLAS kernels of the machine it was made on.
CASES = {
    "independent": (
        dict(hidden=8, bptt=8, batch=4, epochs=2, seed=3, threads=1, min_count=2, classes=0), None,
        {"vocab": "099a96c10644e4da", "windows": "3c425c5e1fee813c", "model": "e22c2ac7a158d9d8"}),
    "stream-rnnme": (
        dict(hidden=8, bptt=8, batch=4, epochs=2, seed=4, threads=1, max_vocab=30, stream=True, classes=4,
             direct_order=3, direct_size=512), VALID,
        {"vocab": "d7574798341bc96d", "windows": "eb092987e3ce9881", "model": "f019f14f02721b35"}),
}


def sha(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("case", CASES)
def test_same_batches_and_model_as_the_in_memory_path(case, tmp_path):
    """Independent sentences (full softmax, min-count 2, held-out validation) and --stream
    (classes, direct connections, max-vocab 30), with a line longer than a batch: the
    vocabulary, every window and the trained model are the in-memory path's, bit for bit."""
    settings, valid, expected = CASES[case]
    config = TrainConfig(**settings)
    every = None if valid is not None else idcorpus.hold_out_every(config.valid_fraction)
    with idcorpus.number([CORPUS], Tokenizer("char"), every, tmp_path) as numbered:
        model = new_model(numbered, config, Tokenizer("char"))
        lanes = batching.split_lanes(numbered.stream(model.vocab, independent=not config.stream), config.batch)
    assert lanes.steps > len(LONG) > config.batch * config.bptt
    windows = sha(*(part.tobytes() for window in lanes.windows(config.bptt) for part in window))
    trained = train(CORPUS, valid, config, temp_dir=tmp_path)
    table = b"" if trained.direct_table is None else trained.direct_table.tobytes()
    losses = [(epoch["train_loss"], epoch["valid_loss"]) for epoch in trained.record["epochs"]]
    assert {"vocab": sha(trained.vocab.tokens), "windows": windows,
            "model": sha(trained.params.tobytes(), table, losses, trained.record["corpus"])} == expected
    assert not list(tmp_path.iterdir())


def in_memory_windows(sentences: list[list[int]], B: int, T: int, independent: bool) -> list[tuple]:
    """The windows of the in-memory batching the id file replaced: the stream's inputs,
    targets and resets as arrays, cut into B lanes padded to one length, T rows at a time."""
    lengths = [len(s) + 1 for s in sentences]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    L = sum(lengths)
    streams = [np.array([x for s in sentences for x in [1, *s]], np.int32),
               np.array([x for s in sentences for x in [*s, 2]], np.int32), np.zeros(L, np.int32)]
    streams[2][starts if independent else 0] = 1
    cut = np.unique(np.searchsorted(starts, np.arange(B) * L // B))
    bounds = np.append(starts[cut[cut < len(starts)]], L)
    steps, width = int(np.diff(bounds).max()), len(bounds) - 1
    lanes = [np.zeros((steps, width), np.int32), np.full((steps, width), -1, np.int32),
             np.ones((steps, width), np.int32)]
    for k in range(width):
        for lane, stream in zip(lanes, streams):
            lane[:bounds[k + 1] - bounds[k], k] = stream[bounds[k]:bounds[k + 1]]
    lanes[2][0] = 1
    return [tuple(lane[t:t + T] for lane in lanes) for t in range(0, steps, T)]


@pytest.mark.parametrize("independent", [True, False], ids=["independent", "stream"])
def test_windows_match_the_in_memory_batching(tmp_path, independent):
    """Random sentences (empty ones, long ones, fewer than the lanes) through the id file:
    every window, from the first or from a resumed one, is the in-memory path's."""
    rng = np.random.default_rng(7)
    vocab = Vocab(["<unk>", "<s>", "</s>", *(f"w{i}" for i in range(3, 40))])   # w<i> has id i
    for trial in range(12):
        sentences = [rng.integers(3, 40, rng.choice([0, 1, 5, 30, 90])).tolist() for _ in range(rng.integers(1, 25))]
        B, T = int(rng.choice([1, 3, 7, 32])), int(rng.choice([1, 4, 16, 64]))
        text = [" ".join(f"w{i}" for i in s) for s in sentences]
        with idcorpus.number([text], Tokenizer("word"), None, tmp_path) as numbered:
            lanes = batching.split_lanes(numbered.stream(vocab, independent), B)
        expected = in_memory_windows(sentences, B, T, independent)
        assert lanes.num_windows(T) == len(expected)
        for first in (0, len(expected) // 2):
            for got, want in zip(lanes.windows(T, first), expected[first:], strict=True):
                for part, reference in zip(got, want):
                    assert part.dtype == np.int32 and part.flags.c_contiguous and np.array_equal(part, reference)


def test_held_out_lines_and_blocks():
    """Every 20th line is held out (a corpus shorter than that holds out its last line),
    and the ids do not depend on how the text is cut into blocks."""
    lines = [f"{i} {i % 7}" for i in range(100)]
    word = Tokenizer("word")
    with idcorpus.number([lines], word, 20) as whole, \
            idcorpus.number(iter([lines[:33], [], lines[33:70], lines[70:]]), word, 20) as cut:
        assert whole.held_out == cut.held_out == lines[19::20]
        assert whole.lines == cut.lines == 95
        vocab = Vocab.build(whole.unit_counts())
        stream = whole.stream(vocab)
        assert np.array_equal(stream.ids, cut.stream(vocab).ids) and stream.ids.dtype == np.uint8
        kept = [line for i, line in enumerate(lines) if (i + 1) % 20]
        assert np.array_equal(stream.ids, batching.make_stream([vocab.encode(line.split()) for line in kept]).ids)
        assert whole.unit_counts()["</s>"] == 95 and "19" not in whole.unit_counts()
    with idcorpus.number([["a b", "a", "c d"]], word, 20) as short:
        assert (short.held_out, short.lines, short.unit_counts()) == (["c d"], 2, {"a": 2, "b": 1, "</s>": 2})
        assert short.stream(Vocab.build(short.unit_counts())).ids.tolist() == [3, 4, 2, 3, 2]
    with pytest.raises(CorpusError, match="^need at least 2 lines to hold out validation text, got 1; "):
        with idcorpus.number(iter([["only"]]), word, 20):
            pass
    with pytest.raises(CorpusError, match="^the training corpus has no lines$"):
        with idcorpus.number(iter([[], []]), word):
            pass


@pytest.mark.parametrize("size, dtype", [(256, np.uint8), (257, np.uint16), (65_536, np.uint16),
                                         (65_537, np.uint32)])
def test_id_dtype_at_the_boundaries(size, dtype):
    """The smallest unsigned dtype that holds id size - 1: 65,536 units still fit uint16."""
    assert idcorpus.id_dtype(size) == dtype


def test_ids_across_the_uint16_boundary(tmp_path):
    """A corpus of 65,533 or 65,534 distinct words (65,536 or 65,537 units with the
    specials): uint16 for the first, uint32 for the second, the top id read back intact."""
    words = [f"w{i}" for i in range(65_534)]
    for count, dtype in ((65_533, np.uint16), (65_534, np.uint32)):
        text = [" ".join(words[:count]), words[0]]
        with idcorpus.number([text], Tokenizer("word"), None, tmp_path) as numbered:
            vocab = Vocab.build(numbered.unit_counts())
            stream = numbered.stream(vocab)
        assert len(vocab) == count + 3 and stream.ids.dtype == dtype and not stream.ids.flags.writeable
        top = vocab.id(words[count - 1])
        assert top == count + 2 and stream.ids[count - 1] == top and stream.ids.max() == top
        assert stream.ids[-2:].tolist() == [vocab.id(words[0]), 2]


class StopAfter:
    """Blocks of KOREAN, then `error` raised (the pass's files exist by then)."""

    def __init__(self, directory: Path, error: BaseException):
        self.directory, self.error = directory, error

    def __iter__(self):
        yield KOREAN
        assert len(list(self.directory.iterdir())) == 3, "the pass writes its files in the temp dir"
        raise self.error


def test_temporary_files_never_outlive_the_run(tmp_path):
    """Success, a corpus error and Ctrl-C during the pass, Ctrl-C during training: the temp
    dir is left empty each time."""
    config = TrainConfig(hidden=8, bptt=8, batch=4, epochs=1, threads=1, classes=0)
    train(KOREAN, VALID, config, temp_dir=tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(CorpusError, match="not valid UTF-8"):
        train(iter(StopAfter(tmp_path, CorpusError("b.txt: not valid UTF-8 at line 3"))), VALID, config,
              temp_dir=tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt):
        train(iter(StopAfter(tmp_path, KeyboardInterrupt())), VALID, config, temp_dir=tmp_path)
    assert not list(tmp_path.iterdir())

    def interrupt(tokens, stats):
        signal.raise_signal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted):
        train(KOREAN, VALID, config, temp_dir=tmp_path, progress=interrupt)
    assert not list(tmp_path.iterdir())
    with pytest.raises(OutputError, match=f"^cannot make a temporary file in {re.escape(str(tmp_path / 'absent'))}: "):
        train(KOREAN, VALID, config, temp_dir=tmp_path / "absent")


def test_sigterm_during_the_pass_removes_the_files(tmp_path):
    """`rnnkit train -` killed by SIGTERM while it reads standard input: the files go too."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "rnnkit", "train", "-", "-o", tmp_path / "m.model",
                                "--temp-dir", scratch], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write("\n".join(KOREAN).encode())   # and no end of input: the pass waits for more
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while len(list(scratch.iterdir())) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert len(list(scratch.iterdir())) == 3, process.stderr.read1().decode() if process.poll() is not None else ""
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == -signal.SIGTERM
    process.stdin.close()
    process.stderr.close()
    assert not list(scratch.iterdir()) and not (tmp_path / "m.model").exists()


def test_cli_reads_every_source_once_in_order(tmp_path):
    """`rnnkit train a.txt b.txt.gz - --temp-dir D`: the RNN's corpus is all three in
    order (every 20th line held out as usual), and D is left empty, also when a corpus
    file turns out not to be UTF-8 half-way."""
    (tmp_path / "a.txt").write_text("\n".join(KOREAN[:20]) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(KOREAN[20:40]) + "\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "m.model"
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "a.txt"), str(tmp_path / "b.txt.gz"), "-",
                                      "-o", str(out), "--temp-dir", str(scratch), "--hidden", "8", "--epochs", "1",
                                      "--threads", "1", "--classes", "0"], input="\n".join(KOREAN[40:]) + "\n")
    assert result.exit_code == 0, result.output
    corpus = RNNModel.load(out).record["corpus"]
    assert (corpus["train_lines"], corpus["valid_lines"]) == (46, 2)
    assert corpus["train_tokens"] == sum(len(line) + 1 for i, line in enumerate(KOREAN) if (i + 1) % 20)
    assert not list(scratch.iterdir())
    (tmp_path / "bad.txt").write_bytes(b"\xff\n")
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "a.txt"), str(tmp_path / "bad.txt"), "-o", str(out),
                                      "--temp-dir", str(scratch), "--classes", "0"])
    assert result.exit_code == 1 and f"Error: {tmp_path / 'bad.txt'}: not valid UTF-8 at line 1" in result.output
    assert not list(scratch.iterdir())


def resident_kib(path_part: str) -> int:
    """Resident KiB of this process's mappings whose path contains path_part."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):   # a mapping's first line: its addresses ... its path
            inside = path_part in line
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_mapped_pages_are_given_back(tmp_path, monkeypatch):
    """Pages read through the map count as resident: the lanes give them back every
    RELEASE_EVERY windows, and `release` leaves none of the ids' pages resident."""
    monkeypatch.setattr(batching, "RELEASE_EVERY", 4)
    rng = np.random.default_rng(0)
    lines = [" ".join(f"w{i}" for i in rng.integers(0, 300, 9)) for _ in range(20_000)]
    with idcorpus.number([lines], Tokenizer("word"), None, tmp_path) as numbered:
        stream = numbered.stream(Vocab.build(numbered.unit_counts()))
    assert stream.ids.dtype == np.uint16 and stream.ids.nbytes == 400_000
    release, calls = stream.release, []
    stream.release = lambda: calls.append(len(calls))
    lanes = batching.split_lanes(stream, 8)
    assert sum(int((targets >= 0).sum()) for _, targets, _ in lanes.windows(16)) == len(stream)
    assert len(calls) == lanes.num_windows(16) // 4
    assert resident_kib(".corpus-vocab-ids.") > 0
    release()
    assert resident_kib(".corpus-vocab-ids.") == 0
