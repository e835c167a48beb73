"""Run under mpiexec by tests/test_mpi.py: `steps` SGD steps of small models through
Trainer with the ranks of rnnkit.mpi, for each of RUNS; rank 0 saves the weights, the
carried state and history and the direct table of each to the .npz `out`. With `fail`,
rank 1 raises after the first step (the failure rules of rnnkit.mpi end every rank).

    mpiexec -n 2 python tests/mpi/steps.py OUT STEPS [fail]
"""

from __future__ import annotations

import sys

import click
import numpy as np

from rnnkit import batching, mpi
from rnnkit.errors import RnnkitError
from rnnkit.layout import frequency_classes
from rnnkit.rnnlm import RNNModel
from rnnkit.train import TrainConfig, Trainer, init_params
from rnnkit.vocab import Vocab

# (model kind, the exchange's choice: None as rnnkit.mpi chooses, True packed, False dense)
RUNS = [("rnn", None), ("class", True), ("class", False), ("direct", True), ("direct", False)]
CLASSES, ORDER, TABLE = 4, 3, 997


def setup(kind: str = "rnn", seed: int = 5, V: int = 23, H: int = 12, sentences: int = 80, lanes: int = 6):
    """The model (the plain RNN, with classes, or with classes and direct connections),
    settings and lanes every rank (and the one-process reference) starts from."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(3, V, rng.integers(0, 12)).astype(np.int32) for _ in range(sentences)]
    vocab = Vocab(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(V - 3)])
    output = {"rnn": {}, "class": {"classes": CLASSES},
              "direct": {"classes": CLASSES, "direct_order": ORDER, "direct_size": TABLE}}[kind]
    # a large L2 so that its term shows in the table's steps
    config = TrainConfig(unit="word", hidden=H, batch=lanes, bptt=5, optimizer="sgd", lr=0.3, clip=1.0,
                         direct_lr=0.1, direct_l2=1e-3, **output)
    class_start = frequency_classes(np.arange(V, 0, -1), CLASSES) if kind != "rnn" else None
    params = init_params(V, H, np.random.default_rng(seed), None, class_start)
    table = (rng.standard_normal(TABLE) * 0.1).astype(np.float32) if kind == "direct" else None
    model = RNNModel(vocab, "word", H, params, hyper=config.hyperparameters(), train_state={"step": 0},
                     class_start=class_start, direct_order=ORDER if kind == "direct" else 0, direct_table=table)
    return model, config, batching.split_lanes(batching.make_stream(ids), lanes)


def train(ranks, kind: str, pack: bool | None, steps: int, fail: bool) -> dict:
    ranks.pack = pack
    model, config, lanes = setup(kind)
    trainer = Trainer(model, config, lanes, ranks=ranks)
    h, history = np.zeros((lanes.width, model.hidden), dtype=np.float32), None
    for _, window in zip(range(steps), lanes.windows(config.bptt)):
        _, _, h, history = trainer.step(*window, h, history)
        if fail and ranks.rank == 1:
            raise RnnkitError("the disk of rank 1 is full")
    table = {} if model.direct_table is None else {"table": model.direct_table, "history": history}
    return {"params": model.params, "h": h, **table}


def main(out: str, steps: int, fail: bool) -> None:
    ranks = mpi.world()
    saved = {}
    for kind, pack in RUNS:
        for name, array in train(ranks, kind, pack, steps, fail).items():
            saved[f"{kind}-{pack}-{name}"] = array
    if ranks.lead:
        np.savez(out, **saved)


if __name__ == "__main__":
    with mpi.failures(mpi.world(), lambda text: click.echo(text, err=True)):
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["fail"])
