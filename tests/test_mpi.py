"""MPI (rnnkit[mpi]: mpi4py and MPICH from PyPI), two ranks on this machine only.

Data-parallel steps equal one process that adds the gradients of the same two halves of
each window, bit for bit; the CLI trains, checkpoints and resumes under mpiexec; a
failure on one rank ends both with its one-line error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")   # in the test extras: CI runs these
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "mpi"))
from steps import setup  # noqa: E402

from rnnkit import kernel  # noqa: E402

# fork: the ranks start on this machine (no ssh), and talk over shared memory / loopback
LAUNCH = [MPIEXEC, "-launcher", "fork", "-n", "2"]


def run(args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([*LAUNCH, *map(str, args)], capture_output=True, text=True, timeout=120, env=env, **kwargs)


def one_process(steps: int) -> np.ndarray:
    """The reference: each window's two halves of lanes (the two ranks' shares) run one
    after the other with the loss scaled by the whole window's tokens; their gradients
    are added, clipped and stepped once."""
    model, config, lanes = setup()
    V, H, B = model.V, model.hidden, lanes.width
    weights = model.params
    halves = [slice(0, B // 2), slice(B // 2, B)]
    h = np.zeros((B, H), dtype=np.float32)
    for _, (inputs, targets, resets) in zip(range(steps), lanes.windows(config.bptt)):
        count = int((targets >= 0).sum())
        grads = []
        for half in halves:
            part = [np.ascontiguousarray(a[:, half]) for a in (inputs, targets, resets)]
            _, _, hs, cache = kernel.forward(weights, *part, np.ascontiguousarray(h[half]), V=V)
            grad = np.zeros_like(weights)
            kernel.backward(grad, cache, loss_scale=1.0 / count)
            grads.append((grad, hs[-1].copy()))
        total = grads[0][0] + grads[1][0]
        h = np.concatenate([grads[0][1], grads[1][1]])
        kernel.clip_grad_norm(total, config.clip)
        kernel.sgd_update(weights, total, config.learning_rate())   # sgd: W_xh's rate is the others'
    return np.concatenate([weights, h.ravel()])


def test_two_ranks_equal_one_process_adding_both_halves(tmp_path):
    """After 7 steps the weights and the carried state (all lanes) are the reference's to
    the bit: an Allreduce of two buffers adds them once, and addition commutes."""
    out = tmp_path / "weights.npy"
    result = run([sys.executable, HERE / "mpi" / "steps.py", out, "7"])
    assert result.returncode == 0, result.stderr
    expected = one_process(7)
    got = np.load(out)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert not np.array_equal(expected, one_process(6))   # the steps did change the weights


def test_cli_trains_checkpoints_and_resumes_under_mpiexec(tmp_path):
    """`mpiexec -n 2 python -m mpi4py -m rnnkit train`: rank 0 alone prints and writes; two
    epochs in one run equal one epoch, then --resume for the second, bit for bit (the
    checkpoint holds every lane's state, gathered from both ranks)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"문장 {i % 7} 하나 {i % 5}\n" for i in range(120)), encoding="utf-8")
    # sgd: Adam's rate decays over the planned epochs, which --epochs 1 then 2 changes
    common = [sys.executable, "-m", "mpi4py", "-m", "rnnkit", "train", corpus, "--hidden", 8, "--batch", 4,
              "--bptt", 6, "--threads", 1, "--seed", 2, "--optimizer", "sgd", "--classes", 0]
    straight = run([*common, "-o", tmp_path / "a.model", "--epochs", 2])
    assert straight.returncode == 0, straight.stderr
    assert straight.stderr.count("Wrote") == 1 and "2 MPI ranks" in straight.stderr
    assert straight.stderr.count("epoch 1:") == 1
    first = run([*common, "-o", tmp_path / "b.model", "--epochs", 1])
    resumed = run([*common, "-o", tmp_path / "b.model", "--epochs", 2, "--resume"])
    assert first.returncode == 0 and resumed.returncode == 0, first.stderr + resumed.stderr
    from rnnkit.rnnlm import RNNModel
    a, b = RNNModel.load(tmp_path / "a.model"), RNNModel.load(tmp_path / "b.model")
    assert np.array_equal(a.params, b.params)
    assert a.record["epochs"][1]["valid_bpc"] == b.record["epochs"][1]["valid_bpc"]


def test_failures_end_every_rank_with_one_line(tmp_path):
    """An error every rank meets (a missing corpus, an n-gram under MPI) is printed once
    by rank 0; an error on rank 1 alone mid-training ends both ranks with its line."""
    missing = run([sys.executable, "-m", "mpi4py", "-m", "rnnkit", "train", tmp_path / "absent.txt",
                   "-o", tmp_path / "m", "--classes", 0])   # the plain RNN, which MPI trains
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"Error: file not found: {tmp_path / 'absent.txt'}"
    ngram = run([sys.executable, "-m", "mpi4py", "-m", "rnnkit", "train", "--type", "ngram", "-o", tmp_path / "m"])
    assert ngram.returncode == 2 and ngram.stderr.count("Error:") == 1 and "MPI ranks train RNNs" in ngram.stderr
    alone = run([sys.executable, HERE / "mpi" / "steps.py", tmp_path / "w.npy", "5", "fail"])
    assert alone.returncode != 0 and not (tmp_path / "w.npy").exists()
    errors = [line for line in alone.stderr.splitlines() if line.startswith("Error")]
    assert errors == ["Error: rank 1: the disk of rank 1 is full"], alone.stderr
