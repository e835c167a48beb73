"""Synchronous data-parallel RNN training over MPI ranks (mpi4py; MPICH from PyPI).

    mpiexec -n 2 python -m mpi4py -m rnnkit train corpus.txt -o ko.model
    mpiexec -n 2 rnnkit train corpus.txt -o ko.model        # the ranks are detected too

Every rank reads the corpus and builds the same windows. Each step, rank r runs forward
and backward on its contiguous share of the window's lanes (np.array_split's), with the
loss scaled by the whole window's token count; the gradients are summed (Exchange), so
every rank clips and steps the same sum and the weights stay identical. The last hidden
states of all lanes are gathered after each step, so every rank carries the whole
window's state (and the direct history, which every rank computes from the whole window),
and a checkpoint that rank 0 writes resumes on any number of ranks. Rank 0 alone
validates (the others take its figures by broadcast, so every rank keeps or rolls back
alike), prints and writes.

The sums. The dense parameters are summed in one in-place Allreduce of the kernel's flat
gradient buffer. Two parts are mostly zero in a window: the embedding W_xh outside the
rows of the window's inputs, and the direct-connection table (RNNME) outside the entries
the window's features use (kernel.direct_entries). Every rank holds the whole window, so
every rank knows those rows and entries without asking the others; when they are few
(PACKED_ROWS, PACKED_ENTRIES) their values are packed into one more buffer and summed by a
second Allreduce, the rest of the part being zero on every rank. The direct table is not stepped
by backward under MPI (which, alone, updates it in place use by use): each rank
accumulates its share's table gradient (kernel.class_direct_gradient) and every rank takes
the summed SGD step. That step differs from the in-place one only in its L2 term: by
direct_lr x direct_l2 (3e-8 by default) times the sum, over an entry's uses in the window,
of how far the uses before had moved it.

With two ranks the sum is the same as one process adding the two shares' gradients
(floating-point addition of two terms commutes); with more, MPI's reduction order may
round differently in the last bit.

Failures: an error that every rank meets the same way (a bad option or corpus, a
diverged run) is printed by rank 0 alone and every rank exits with it. Anything else
on one rank (an interrupt, a failed write) ends all ranks with MPI_Abort after that
rank's one-line error; the other ranks ignore SIGINT and SIGTERM, so Ctrl-C reaches
training through rank 0, which saves its checkpoint first. Dropout masks are drawn from
(seed, step) with the shape of a rank's share, so the ranks' shares get the same pattern.

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

from . import kernel
from .errors import ConfigError, RnnkitError

# The variables an MPI launcher sets for its processes (MPICH's Hydra, Open MPI, Slurm's PMI).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
# How long another rank waits before it reports its own failure: rank 0 reports first
# when all of them fail, and its MPI_Abort ends the others.
REPORT_DELAY_SECONDS = 1.0
# The embedding rows and the direct-table entries a window uses are summed packed when they
# are less than this fraction of W_xh's rows, of the table (see Exchange). Measured on 2 ranks
# of this 2-core machine (fastest of 12): summing W_xh of V=10000, H=256 took 6.3 ms dense,
# 3.6 ms packed for 10% of its rows, 5.6 for 30%, 7.2 for 50%; a 4M-entry table (summed,
# stepped and cleared) 10.5 ms dense, 2.3 packed for 2% of the entries, 9.0 for 5%, 10.5 to
# 14.6 for 10% (gathering and scattering scattered entries costs more than a row's floats).
PACKED_ROWS = 0.3
PACKED_ENTRIES = 0.1


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
        self.exchange_bytes = 0       # what Exchange.sum has summed so far, and in how long
        self.exchange_seconds = 0.0
        self.pack = None   # Exchange packs as PACKED_ROWS and PACKED_ENTRIES say; True / False: always / never
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

    def share(self, inputs, targets, resets, h0, history=None):
        """This rank's lanes of a (T, B) window, of its (B, H) carried state and of its
        (B, K) direct history (None: none)."""
        lo, hi = self.bounds(inputs.shape[1])
        lanes = [np.ascontiguousarray(a[:, lo:hi]) for a in (inputs, targets, resets)]
        rows = [None if a is None else np.ascontiguousarray(a[lo:hi]) for a in (h0, history)]
        return (*lanes, *rows)

    def gather_state(self, h: np.ndarray) -> np.ndarray:
        """Every rank's last hidden states, in lane order: (B, H)."""
        self.stepping = True
        counts = np.array(self.comm.allgather(h.size), dtype=np.int64)
        out = np.empty((int(counts.sum()) // max(h.shape[1], 1), h.shape[1]), dtype=np.float32)
        self.comm.Allgatherv(np.ascontiguousarray(h, dtype=np.float32), [out, counts])
        return out

    def allreduce(self, buffer: np.ndarray) -> None:
        """buffer += every other rank's, in place."""
        self.stepping = True
        self.comm.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)
        self.exchange_bytes += buffer.nbytes

    def exchange(self, model) -> "Exchange":
        """How the steps of training `model` are summed across these ranks."""
        return Exchange(self, model)

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


class Exchange:
    """The sums of one run's training steps across the ranks (the module docstring)."""

    def __init__(self, ranks: Ranks, model):
        self.ranks, self.model = ranks, model
        # this rank's direct-table gradient; zero between steps
        self.table_grads = np.zeros(model.direct_table.size, np.float32) if model.direct_order else None

    def sum(self, grads: np.ndarray, loss: float, window: tuple, table_step: tuple | None = None) -> float:
        """grads += every other rank's; with table_step = (table, rate), table_grads too,
        then table -= rate * the sum. `window` is the whole window (inputs, targets, resets,
        direct history). Returns the loss of the whole window."""
        started = time.perf_counter()
        model, ranks = self.model, self.ranks
        inputs, targets, resets, history = window
        embedding = model.V * model.hidden
        rows = np.unique(inputs)   # W_xh's rows with a gradient on any rank
        packed_rows = self.packed(rows.size, model.V, PACKED_ROWS)
        entries = None
        if table_step is not None:
            entries = kernel.direct_entries(inputs, targets, resets, history=history, V=model.V,
                                            class_start=model.class_start, direct_order=model.direct_order,
                                            table_size=self.table_grads.size)
            entries = entries if self.packed(entries.size, self.table_grads.size, PACKED_ENTRIES) else None
        ranks.allreduce(grads[embedding:] if packed_rows else grads)
        embedding_rows = grads[:embedding].reshape(model.V, model.hidden)
        sparse = ([embedding_rows[rows].ravel()] if packed_rows else []) + \
                 ([np.take(self.table_grads, entries)] if entries is not None else [])
        if sparse:
            packed = np.concatenate(sparse)
            ranks.allreduce(packed)
            if packed_rows:
                embedding_rows[rows] = packed[:rows.size * model.hidden].reshape(rows.size, model.hidden)
            if entries is not None:
                self.step_entries(table_step, entries, packed[packed.size - entries.size:])
        if table_step is not None and entries is None:
            self.step_dense(table_step)
        ranks.exchange_seconds += time.perf_counter() - started
        return ranks.comm.allreduce(float(loss), op=ranks.mpi.SUM)

    def packed(self, used: int, size: int, fraction: float) -> bool:
        """Whether a part of `size` rows or entries of which a window uses `used` is summed packed."""
        return self.ranks.pack if self.ranks.pack is not None else used < fraction * size

    def step_entries(self, table_step: tuple, entries: np.ndarray, summed: np.ndarray) -> None:
        table, rate = table_step
        self.table_grads[entries] = 0.0
        kernel.sparse_sgd_update(table, entries, summed, rate)

    def step_dense(self, table_step: tuple) -> None:
        table, rate = table_step
        self.ranks.allreduce(self.table_grads)
        kernel.sgd_update(table, self.table_grads, rate)
        self.table_grads.fill(0.0)


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
