"""MPI (rnnkit[mpi]: mpi4py and MPICH from PyPI), two ranks on this machine only.

Data-parallel steps equal one process that adds the gradients of the same two halves of
each window, bit for bit, for the plain RNN and RNNME (with the direct table's summed
step); the CLI trains the default RNNME model, checkpoints and resumes under mpiexec; a
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
from steps import RUNS, setup  # noqa: E402

from rnnkit import kernel  # noqa: E402

# fork: the ranks start on this machine (no ssh), and talk over shared memory / loopback
LAUNCH = [MPIEXEC, "-launcher", "fork", "-n", "2"]


def run(args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([*LAUNCH, *map(str, args)], capture_output=True, text=True, timeout=120, env=env, **kwargs)


def one_process(kind: str, steps: int) -> dict:
    """The reference: each window's two halves of lanes (the two ranks' shares) run one
    after the other with the loss scaled by the whole window's tokens; their gradients
    (and direct-table gradients) are added, clipped and stepped once."""
    model, config, lanes = setup(kind)
    V, H, B = model.V, model.hidden, lanes.width
    weights, table = model.params, model.direct_table
    halves = [slice(0, B // 2), slice(B // 2, B)]
    h, history = np.zeros((B, H), dtype=np.float32), None
    for _, (inputs, targets, resets) in zip(range(steps), lanes.windows(config.bptt)):
        count = int((targets >= 0).sum())
        grads, table_grads, states = np.zeros_like(weights), 0, []
        for half in halves:
            part = [np.ascontiguousarray(a[:, half]) for a in (inputs, targets, resets)]
            h0 = np.ascontiguousarray(h[half])
            grad = np.zeros_like(weights)
            if kind == "rnn":
                _, _, hs, cache = kernel.forward(weights, *part, h0, V=V)
                kernel.backward(grad, cache, loss_scale=1.0 / count)
            else:
                own = None if history is None else np.ascontiguousarray(history[half])
                _, _, hs, cache = kernel.class_forward(weights, *part, h0, V=V, history=own, **model.output_args())
                kernel.class_backward(grad, cache, table=table, loss_scale=1.0 / count)   # direct_lr 0
                if table is not None:
                    dtable = np.zeros_like(table)
                    kernel.class_direct_gradient(dtable, cache, table=table, loss_scale=1.0 / count,
                                                 direct_l2=config.direct_l2 / count)
                    table_grads = table_grads + dtable
            grads = grads + grad if len(states) else grad
            states.append(hs[-1].copy())
        h = np.concatenate(states)
        history = model.next_history(history, inputs, resets)
        kernel.clip_grad_norm(grads, config.clip)
        kernel.sgd_update(weights, grads, config.learning_rate())   # sgd: W_xh's rate is the others'
        if table is not None:
            table -= np.float32(config.direct_lr * count) * table_grads
    return {"params": weights, "h": h, **({} if table is None else {"table": table, "history": history})}


def test_two_ranks_equal_one_process_adding_both_halves(tmp_path):
    """After 7 steps the weights, the carried state (all lanes) and history and the direct
    table are the reference's to the bit, for the plain RNN, a class model and one with
    direct connections, whether the embedding rows and table entries are summed packed or
    dense: an Allreduce of two buffers adds them once, and addition commutes."""
    out = tmp_path / "steps.npz"
    result = run([sys.executable, HERE / "mpi" / "steps.py", out, "7"])
    assert result.returncode == 0, result.stderr
    got = np.load(out)
    for kind, pack in RUNS:
        expected = one_process(kind, 7)
        for name, array in expected.items():
            assert np.array_equal(got[f"{kind}-{pack}-{name}"], array), (kind, pack, name)
        assert not np.array_equal(expected["params"], one_process(kind, 6)["params"])   # the steps did change them
    assert not np.array_equal(one_process("direct", 7)["table"], setup("direct")[0].direct_table)


def test_cli_trains_checkpoints_and_resumes_under_mpiexec(tmp_path):
    """`mpiexec -n 2 python -m mpi4py -m rnnkit train` trains the default RNNME model (with a
    weight average, whose direct table every rank keeps lazily): rank 0 alone prints and
    writes; two epochs in one run equal one epoch, then --resume for the second, bit for
    bit, weights and direct table (the checkpoint holds every lane's state, gathered from
    both ranks)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"문장 {i % 7} 하나 {i % 5}\n" for i in range(120)), encoding="utf-8")
    # sgd: Adam's rate decays over the planned epochs, which --epochs 1 then 2 changes
    common = [sys.executable, "-m", "mpi4py", "-m", "rnnkit", "train", corpus, "--hidden", 8, "--batch", 4,
              "--bptt", 6, "--threads", 1, "--seed", 2, "--optimizer", "sgd", "--average", 0.9]
    straight = run([*common, "-o", tmp_path / "a.model", "--epochs", 2])
    assert straight.returncode == 0, straight.stderr
    assert straight.stderr.count("Wrote") == 1 and "2 MPI ranks" in straight.stderr
    assert "classes, direct order 6 (4,194,304 entries)" in straight.stderr
    assert straight.stderr.count("epoch 1:") == 1
    first = run([*common, "-o", tmp_path / "b.model", "--epochs", 1])
    resumed = run([*common, "-o", tmp_path / "b.model", "--epochs", 2, "--resume"])
    assert first.returncode == 0 and resumed.returncode == 0, first.stderr + resumed.stderr
    from rnnkit.rnnlm import RNNModel
    a, b = RNNModel.load(tmp_path / "a.model"), RNNModel.load(tmp_path / "b.model")
    assert np.array_equal(a.params, b.params) and np.array_equal(a.direct_table, b.direct_table)
    assert a.direct_table.any() and not np.array_equal(a.direct_table, a.optimizer_arrays["raw_direct_table"])
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
    adagrad = run([sys.executable, "-m", "mpi4py", "-m", "rnnkit", "train", "-o", tmp_path / "m",
                   "--direct-optimizer", "adagrad"])
    assert adagrad.returncode == 1 and adagrad.stderr.count("Error:") == 1
    assert "MPI training steps the direct table by SGD" in adagrad.stderr and not (tmp_path / "m").exists()
    alone = run([sys.executable, HERE / "mpi" / "steps.py", tmp_path / "w.npz", "5", "fail"])
    assert alone.returncode != 0 and not (tmp_path / "w.npz").exists()
    errors = [line for line in alone.stderr.splitlines() if line.startswith("Error")]
    assert errors == ["Error: rank 1: the disk of rank 1 is full"], alone.stderr
