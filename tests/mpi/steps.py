"""Run under mpiexec by tests/test_mpi.py: `steps` SGD steps of a small RNN through
Trainer with the ranks of rnnkit.mpi; rank 0 saves the weights to `out`. With `fail`,
rank 1 raises after the first step (the failure rules of rnnkit.mpi end every rank).

    mpiexec -n 2 python tests/mpi/steps.py OUT STEPS [fail]
"""

from __future__ import annotations

import sys

import click
import numpy as np

from rnnkit import batching, mpi
from rnnkit.errors import RnnkitError
from rnnkit.rnnlm import RNNModel
from rnnkit.train import TrainConfig, Trainer, init_params
from rnnkit.vocab import Vocab


def setup(seed: int = 5, V: int = 23, H: int = 12, sentences: int = 80, lanes: int = 6):
    """The model, settings and lanes every rank (and the one-process reference) starts from."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(3, V, rng.integers(0, 12)).astype(np.int32) for _ in range(sentences)]
    vocab = Vocab(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(V - 3)])
    config = TrainConfig(unit="word", hidden=H, batch=lanes, bptt=5, optimizer="sgd", lr=0.3, clip=1.0)
    params = init_params(V, H, np.random.default_rng(seed), None)
    model = RNNModel(vocab, "word", H, params, hyper=config.hyperparameters(), train_state={"step": 0})
    return model, config, batching.split_lanes(batching.make_stream(ids), lanes)


def main(out: str, steps: int, fail: bool) -> None:
    ranks = mpi.world()
    model, config, lanes = setup()
    trainer = Trainer(model, config, lanes, ranks=ranks)
    h = np.zeros((lanes.width, model.hidden), dtype=np.float32)
    for step, window in enumerate(lanes.windows(config.bptt)):
        if step == steps:
            break
        _, _, h, _ = trainer.step(*window, h)   # (loss, tokens, state, direct history)
        if fail and ranks.rank == 1:
            raise RnnkitError("the disk of rank 1 is full")
    if ranks.lead:
        np.save(out, np.concatenate([model.params, h.ravel()]))


if __name__ == "__main__":
    with mpi.failures(mpi.world(), lambda text: click.echo(text, err=True)):
        main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["fail"])
