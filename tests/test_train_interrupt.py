"""Interrupted RNN training: mid-epoch checkpoints, SIGINT/SIGTERM, exact resume, the CLI's message."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from rnnkit import loader as lm, rnnlm
from rnnkit.cli import cli
from rnnkit.errors import RnnkitError
from rnnkit.train import TrainConfig, TrainingInterrupted, train

KOREAN = [
    "나는 버스를 탔다", "나는 버스를 타고 학교에 갔다", "선생님이 교실로 부리나케 달려갔다", "메론을 먹는다",
    "오늘은 날씨가 좋다", "영화 정말 재미있다", "이 영화 최고", "버스를 타고 집에 왔다",
] * 6
# held-out sentences the corpus does not contain, so that a late epoch gets worse and is rolled back
VALID = ["나는 학교에 갔다", "영화를 타고 버스에 왔다", "오늘은 메론이 최고"]
WINDOWS = 19   # windows per epoch of KOREAN with bptt 8 and batch 4
SMALL = dict(hidden=16, bptt=8, batch=4, seed=2, threads=1, epochs=4, patience=5)


def signal_at(step: int, signum=signal.SIGINT):
    """A progress callback that sends the signal to this process after the run's step-th step."""
    calls = []

    def progress(tokens, stats):
        calls.append(tokens)
        if len(calls) == step:
            signal.raise_signal(signum)
    return progress


def timeless(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in ("seconds", "tokens_per_s")} for e in epochs]


RNNME = dict(classes=5, direct_order=3, direct_size=1024)   # class-factored output, direct connections


@pytest.mark.parametrize("settings", [
    dict(optimizer="adam", lr=0.1, dropout=0.3, average=0.9, weight_decay=0.5),
    dict(optimizer="sgd", lr=2.0),
    dict(optimizer="adam", lr=0.2, dropout=0.3, average=0.9, weight_decay=0.5, direct_lr=0.3, **RNNME),
    dict(optimizer="sgd", lr=2.0, direct_lr=0.3, **RNNME),
    dict(optimizer="adam", lr=0.2, dropout=0.3, average=0.9, weight_decay=0.5, direct_optimizer="adagrad",
         direct_lr=0.3, **RNNME),
], ids=["adam", "sgd", "adam-rnnme", "sgd-rnnme", "adam-rnnme-adagrad"])
def test_resume_mid_epoch_is_bit_identical(tmp_path, settings):
    """Interrupted by SIGINT in epoch 1 and again in epoch 4 (which validation rolls back),
    each time resumed from the mid-epoch checkpoint: the same weights, direct table (also
    the raw one behind an average), AdaGrad's sums of squares and record as one run."""
    config = dict(SMALL, **settings)
    straight = train(KOREAN, VALID, TrainConfig(**config))
    assert not straight.record["epochs"][3]["kept"], "epoch 4 should be rolled back"
    path = tmp_path / "m.model"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as first:
        train(KOREAN, VALID, TrainConfig(**config), output_path=path, progress=signal_at(7))
    stop = first.value
    assert (stop.signum, stop.epoch, stop.window, stop.windows, stop.saved, stop.steps) == \
        (signal.SIGINT, 1, 7, WINDOWS, path, 7)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    state = rnnlm.RNNModel.load(path).train_state
    assert state["partial"]["window"] == 7 and state["epoch"] == 0 and state["step"] == 7

    with pytest.raises(TrainingInterrupted) as second:
        train(KOREAN, VALID, TrainConfig(**config), output_path=path, progress=signal_at(3 * WINDOWS + 5 - 7),
              resume_from=rnnlm.RNNModel.load(path))
    assert (second.value.epoch, second.value.window) == (4, 5)

    resumed = train(KOREAN, VALID, TrainConfig(**config), output_path=path, resume_from=rnnlm.RNNModel.load(path))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert np.array_equal(straight.params, resumed.params)
    assert timeless(straight.record["epochs"]) == timeless(resumed.record["epochs"])
    saved = rnnlm.RNNModel.load(path)
    assert "partial" not in saved.train_state and set(saved.optimizer_arrays) == set(straight.optimizer_arrays)
    for name, array in straight.optimizer_arrays.items():
        assert np.array_equal(array, saved.optimizer_arrays[name]), name
    if "classes" in settings:
        assert np.array_equal(straight.direct_table, resumed.direct_table)
        assert np.array_equal(straight.direct_table, saved.direct_table)
        assert saved.score_many(VALID) == straight.score_many(VALID)


def test_mid_epoch_resume_refuses_other_batching(tmp_path):
    """A mid-epoch checkpoint's window number only means something with its bptt and batch."""
    path = tmp_path / "m.model"
    with pytest.raises(TrainingInterrupted):
        train(KOREAN, VALID, TrainConfig(**SMALL), output_path=path, progress=signal_at(3))
    with pytest.raises(RnnkitError, match=r"cannot resume mid-epoch: the checkpoint stands at step 3 of 19 "
                                          r"\(bptt 8, 4 lanes\).* 31 steps \(bptt 5"):
        train(KOREAN, VALID, TrainConfig(**dict(SMALL, bptt=5)), output_path=path,
              resume_from=rnnlm.RNNModel.load(path))
    with pytest.raises(RnnkitError, match="--average"):
        train(KOREAN, VALID, TrainConfig(**dict(SMALL, average=0.5)), output_path=path,
              resume_from=rnnlm.RNNModel.load(path))


def test_mid_epoch_resume_refuses_another_direct_optimizer(tmp_path):
    """AdaGrad's sums of squares are part of the epoch start a mid-epoch checkpoint keeps."""
    path = tmp_path / "m.model"
    with pytest.raises(TrainingInterrupted):
        train(KOREAN, VALID, TrainConfig(**SMALL, **RNNME), output_path=path, progress=signal_at(3))
    with pytest.raises(RnnkitError, match=r"epoch start holds .* this run needs .*direct_accum.*--direct-optimizer"):
        train(KOREAN, VALID, TrainConfig(**SMALL, **RNNME, direct_optimizer="adagrad"), output_path=path,
              resume_from=rnnlm.RNNModel.load(path))


def test_time_based_checkpoints(tmp_path):
    """With a tiny interval the state is saved after every step (a usable, resumable model);
    with 0 only at epoch ends."""
    path, seen = tmp_path / "m.model", []

    def look(tokens, stats):
        seen.append(rnnlm.RNNModel.load(path).train_state.get("partial", {}).get("window")
                    if path.exists() else None)
    train(KOREAN, VALID, TrainConfig(**dict(SMALL, epochs=1, checkpoint_minutes=1e-6)), output_path=path,
          progress=look)
    # at step k the file holds step k-1 (saved before the progress of step k)
    assert seen == [None, *range(1, WINDOWS)]
    assert "partial" not in rnnlm.RNNModel.load(path).train_state
    path.unlink()
    seen.clear()
    train(KOREAN, VALID, TrainConfig(**dict(SMALL, epochs=1, checkpoint_minutes=0)), output_path=path,
          progress=look)
    assert seen == [None] * WINDOWS


def test_a_second_signal_stops_at_once(tmp_path):
    """The user insists: the second signal does not wait for the step to end, and the
    exception names the checkpoint written before it (the file is intact)."""
    path, calls = tmp_path / "m.model", []

    def twice(tokens, stats):
        calls.append(tokens)
        if len(calls) == 5:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        train(KOREAN, VALID, TrainConfig(**dict(SMALL, checkpoint_minutes=1e-6)), output_path=path, progress=twice)
    assert (stop.value.epoch, stop.value.window, stop.value.saved, stop.value.steps) == (1, 4, path, 5)
    assert rnnlm.RNNModel.load(path).train_state["partial"]["window"] == 4


def test_off_the_main_thread_no_handler_is_installed():
    """Signal handlers can only be set in the main thread; training elsewhere still runs."""
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "model", train(KOREAN, VALID, TrainConfig(**dict(SMALL, epochs=1)))))
    worker.start()
    worker.join()
    assert len(result["model"].record["epochs"]) == 1


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(KOREAN) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def valid(tmp_path):
    path = tmp_path / "valid.txt"
    path.write_text("\n".join(VALID) + "\n", encoding="utf-8")
    return path


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


CLI_SMALL = ["--hidden", 16, "--bptt", 8, "--batch", 4, "--epochs", 2, "--seed", 2, "--threads", 1]


def test_cli_interrupt_message_and_resume(tmp_path, corpus, valid, monkeypatch):
    """SIGTERM at step 5: one line saying what was saved and how to go on, status 143; the
    short resume command it prints finishes the run exactly as an uninterrupted one."""
    import rnnkit.cli as cli_module
    out, straight = tmp_path / "m.model", tmp_path / "straight.model"
    assert invoke(["train", corpus, "-o", straight, "--valid", valid, *CLI_SMALL]).exit_code == 0
    fire = signal_at(5, signal.SIGTERM)
    monkeypatch.setattr(cli_module.EpochProgress, "__call__", lambda self, tokens, stats: fire(tokens, stats))
    result = invoke(["train", corpus, "-o", out, "--valid", valid, *CLI_SMALL])
    assert result.exit_code == 143, result.output
    resume = f"rnnkit train {corpus} -o {out} --valid {valid} --resume"
    assert result.stderr.splitlines()[-1] == \
        f"Interrupted at epoch 1, step 5 of {WINDOWS}: saved {out} (resume with: {resume})"
    monkeypatch.undo()
    resumed = invoke(resume.split()[1:])
    assert resumed.exit_code == 0, resumed.output
    assert np.array_equal(rnnlm.RNNModel.load(out).params, rnnlm.RNNModel.load(straight).params)


def test_cli_interrupt_before_the_first_step(tmp_path, corpus, monkeypatch):
    """A signal during the first validation pass: nothing to save, and the message says so."""
    import rnnkit.train as train_module
    validate = train_module._valid_loss

    def interrupted_validation(*args):
        signal.raise_signal(signal.SIGINT)
        return validate(*args)
    monkeypatch.setattr(train_module, "_valid_loss", interrupted_validation)
    out = tmp_path / "m.model"
    result = invoke(["train", corpus, "-o", out, *CLI_SMALL])
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-1] == "Interrupted before the first training step: nothing saved"
    assert not out.exists()


def test_cli_ngram_interrupt_writes_nothing(tmp_path, corpus, monkeypatch):
    """n-gram training is one pass: an interrupt keeps the old output and leaves no temporary file."""
    from rnnkit.ngram import NgramModel
    out = tmp_path / "n.model"
    out.write_bytes(b"previous")
    train_ngram = NgramModel.train_file

    def interrupted(*args, **kwargs):
        model = train_ngram(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return model
    monkeypatch.setattr(NgramModel, "train_file", interrupted)
    result = invoke(["train", corpus, "--type", "ngram", "-o", out])
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-1] == "Interrupted: nothing written."
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "n.model"]


def test_sigterm_to_a_training_process(tmp_path):
    """SIGTERM to `python -m rnnkit train` on the bundled sample: status 143, a model that
    loads and scores, and a --resume that completes the epoch."""
    out = tmp_path / "m.model"
    process = subprocess.Popen(
        [sys.executable, "-m", "rnnkit", "train", "-o", str(out), "--hidden", "8", "--bptt", "8", "--batch", "64",
         "--epochs", "1", "--threads", "1", "--checkpoint-minutes", "0.0002"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 20
    while not out.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 143, stderr
    assert f"saved {out} (resume with: rnnkit train -o {out} --resume)" in stderr.splitlines()[-1]
    partial = rnnlm.RNNModel.load(out).train_state["partial"]
    assert 0 < partial["window"] < partial["windows"]
    assert np.isfinite(lm.load(out).score("영화 정말 재미있다"))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    resumed = invoke(["train", "-o", out, "--resume", "--threads", 1])
    assert resumed.exit_code == 0, resumed.output
    finished = rnnlm.RNNModel.load(out)
    assert len(finished.record["epochs"]) == 1 and "partial" not in finished.train_state
