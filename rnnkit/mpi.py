"""Synchronous data-parallel RNN training over MPI ranks (mpi4py; MPICH from PyPI).

    mpiexec -n 2 python -m mpi4py -m rnnkit train corpus.txt -o ko.model
    mpiexec -n 2 rnnkit train corpus.txt -o ko.model        # the ranks are detected too

Every rank reads the corpus and builds the same windows. Each step, rank r runs forward
and backward on its contiguous share of the window's lanes (np.array_split's), with the
loss scaled by the whole window's token count; the gradients are summed in one in-place
Allreduce of the kernel's flat gradient buffer, so every rank clips and steps the same
sum and the weights stay identical. The last hidden states of all lanes are gathered
after each step, so every rank carries the whole window's state, and a checkpoint that
rank 0 writes resumes on any number of ranks. Rank 0 alone validates (the others take
its figures by broadcast, so every rank keeps or rolls back alike), prints and writes.

With two ranks the sum is the same as one process adding the two shares' gradients
(floating-point addition of two terms commutes); with more, MPI's reduction order may
round differently in the last bit.

Failures: an error that every rank meets the same way (a bad option or corpus, a
diverged run) is printed by rank 0 alone and every rank exits with it. Anything else
on one rank (an interrupt, a failed write) ends all ranks with MPI_Abort after that
rank's one-line error; the other ranks ignore SIGINT and SIGTERM, so Ctrl-C reaches
training through rank 0, which saves its checkpoint first. Dropout masks are drawn from
(seed, step) with the shape of a rank's share, so the ranks' shares get the same pattern.
Direct connections (RNNME) would need their sparse table updates summed too: not yet.

Without mpiexec, mpi4py is never imported.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time

import numpy as np

from .errors import ConfigError, RnnkitError

# The variables an MPI launcher sets for its processes (MPICH's Hydra, Open MPI, Slurm's PMI).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
# How long another rank waits before it reports its own failure: rank 0 reports first
# when all of them fail, and its MPI_Abort ends the others.
REPORT_DELAY_SECONDS = 1.0


@functools.cache
def world() -> "Ranks | None":
    """The ranks this process trains among, or None when it runs alone."""
    launched = any(int(os.environ.get(name, "1") or 1) > 1 for name in SIZE_VARIABLES)
    if "mpi4py.MPI" not in sys.modules and not launched:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError("running under mpiexec needs mpi4py: pip install 'rnnkit[mpi]'") from None
    comm = MPI.COMM_WORLD
    return Ranks(comm, MPI) if comm.Get_size() > 1 else None


class Ranks:
    """This process's place among the ranks, and the collective steps of training."""

    def __init__(self, comm, mpi):
        self.comm, self.mpi = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.stepping = False   # set at the first collective: from then on a rank cannot leave alone
        self.allreduce_bytes = 0
        self.allreduce_seconds = 0.0
        if self.rank != 0:   # rank 0 alone reacts to Ctrl-C and SIGTERM (see the module docstring)
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def bounds(self, lanes: int) -> tuple[int, int]:
        if lanes < self.size:
            raise RnnkitError(f"the windows have {lanes} lanes, fewer than the {self.size} MPI ranks; "
                              "raise --batch or use fewer ranks")
        return (lanes * self.rank) // self.size, (lanes * (self.rank + 1)) // self.size

    def share(self, inputs, targets, resets, h0):
        """This rank's lanes of a (T, B) window and of its (B, H) carried state."""
        lo, hi = self.bounds(inputs.shape[1])
        return (np.ascontiguousarray(inputs[:, lo:hi]), np.ascontiguousarray(targets[:, lo:hi]),
                np.ascontiguousarray(resets[:, lo:hi]), np.ascontiguousarray(h0[lo:hi]))

    def gather_state(self, h: np.ndarray) -> np.ndarray:
        """Every rank's last hidden states, in lane order: (B, H)."""
        self.stepping = True
        counts = np.array(self.comm.allgather(h.size), dtype=np.int64)
        out = np.empty((int(counts.sum()) // max(h.shape[1], 1), h.shape[1]), dtype=np.float32)
        self.comm.Allgatherv(np.ascontiguousarray(h, dtype=np.float32), [out, counts])
        return out

    def sum_gradients(self, grads: np.ndarray, loss: float) -> float:
        """grads += every other rank's (one in-place Allreduce); the loss of the whole window."""
        self.stepping = True
        started = time.perf_counter()
        self.comm.Allreduce(self.mpi.IN_PLACE, grads, op=self.mpi.SUM)
        self.allreduce_seconds += time.perf_counter() - started
        self.allreduce_bytes += grads.nbytes
        return self.comm.allreduce(float(loss), op=self.mpi.SUM)

    def from_lead(self, function, *args):
        """function(*args) run on rank 0 alone, its result on every rank."""
        self.stepping = True
        return self.comm.bcast(function(*args) if self.lead else None, root=0)

    def abort(self, code: int) -> None:
        """End every rank now (MPICH adds its own line naming the rank)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)

    def finish(self, code: int) -> None:
        """Leave MPI and exit with `code` as every rank does (no MPI_Abort, which
        `python -m mpi4py` would call for a non-zero SystemExit, and its extra line)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.mpi.Finalize()
        os._exit(code)


@contextlib.contextmanager
def failures(ranks: "Ranks | None", echo):
    """Run a command's body under the failure rules of the module's docstring; `echo`
    prints a one-line error. Without ranks, the body runs as it is."""
    if ranks is None:
        yield
        return
    import click
    try:
        yield
    except BaseException as exc:
        exiting = isinstance(exc, (SystemExit, click.exceptions.Exit))   # already reported, if at all
        code = getattr(exc, "exit_code", getattr(exc, "code", 1))
        code = code if isinstance(code, int) else 1
        if exiting and code == 0:
            raise
        # what follows from the options and the files alone, every rank meets before training
        same_everywhere = isinstance(exc, (RnnkitError, click.ClickException)) or (exiting and code not in (130, 143))
        if same_everywhere and not ranks.stepping:
            if ranks.lead and isinstance(exc, click.ClickException):
                exc.show()
            elif ranks.lead and not exiting:
                echo(f"Error: {_one_line(exc)}")
            ranks.finish(code)
        if not ranks.lead:
            time.sleep(REPORT_DELAY_SECONDS)
        if not exiting:
            echo(f"Error: {_one_line(exc)}" if ranks.lead else f"Error: rank {ranks.rank}: {_one_line(exc)}")
        ranks.abort(code or 1)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
