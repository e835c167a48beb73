"""Work spread over a Dask cluster (`--workers N` or `--scheduler tcp://HOST:PORT`).

Imported only when one of those options is given, and Dask only from here: without them
nothing changes and Dask is never imported.

Shards
    Text is cut by byte range at line starts (`units.line_start`): a plain file into
    pieces of about `total bytes / pieces`, a gzip file whole (a gzip stream cannot be
    entered part-way), standard input as the bytes the client reads. Each worker reads
    its own shards, so with a remote scheduler the files must be at the same paths on
    the workers (a shared file system). The empty and all-blank checks are the whole
    file's, as `read_lines` makes them.

Scoring (`evaluate`, `score`)
    Each worker loads the model once (kept by path, size and modification time) and
    scores its shards; the client adds the counts and log10 totals of the shards in
    order. An n-gram model's sentence scores equal the local ones exactly, and a corpus
    total is a sum in another order than the local run's, so it may differ in the last
    bits (1e-12 relative), and perplexity with it. An RNN scores sentences in batches
    whose float32 GEMMs round with the batch's shape, so its figures agree to about
    1e-10 (nsmc test, 200 lines: 1.3e-11 relative).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, CorpusError

CONNECT_TIMEOUT = "10s"
SHARDS_PER_WORKER = 2   # a little slack for uneven shards


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None):
    """A dask.distributed Client: on a new LocalCluster of `workers` processes (one thread
    each), or on the cluster whose scheduler listens at `scheduler`."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--workers and --scheduler need Dask: pip install 'rnnkit[dask]'") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, ValueError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {str(exc).splitlines()[0]}") from None
        with client:
            yield client
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1; got {workers!r}")
    # on loopback only, the scheduler's HTTP server too (on any free port: never a clash)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=40) as cluster, Client(cluster) as client:
        yield client


def worker_count(client) -> int:
    return max(len(client.scheduler_info(n_workers=-1)["workers"]), 1)


# ---------------------------------------------------------------- shards

@dataclass(frozen=True)
class Shard:
    """Lines of one source: a plain file's bytes [start, stop) (both line starts), a whole
    gzip file (stop None), or text the client read (data: standard input)."""
    name: str
    start: int = 0
    stop: int | None = None
    data: bytes | None = None

    def blocks(self):
        from .units import read_line_blocks, read_range_blocks
        if self.data is not None:
            import io
            return read_line_blocks(io.BytesIO(self.data), name=self.name)
        if self.stop is None:
            return read_line_blocks(self.name)
        return read_range_blocks(self.name, self.start, self.stop)


def make_shards(sources: list, pieces: int) -> list[Shard]:
    """Shards of about equal size covering the sources in order (see the module's docstring)."""
    from .units import line_start, read_line_blocks
    sizes, shards = {}, []
    for source in sources:
        if hasattr(source, "read"):
            continue
        path = Path(source)
        if not path.is_file():
            list(read_line_blocks(path))   # the message of a missing file or a directory
        sizes[str(source)] = path.stat().st_size
        if sizes[str(source)] == 0:
            raise CorpusError(f"{source} is empty")
    step = max(sum(sizes.values()) // max(pieces, 1), 1)
    for source in sources:
        if hasattr(source, "read"):
            shards.append(Shard("standard input", data=source.read()))
            continue
        name = str(source)
        with open(name, "rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        if gzipped:
            shards.append(Shard(name))
            continue
        cuts = sorted({0, sizes[name], *(line_start(name, offset) for offset in range(step, sizes[name], step))})
        shards.extend(Shard(name, start, stop) for start, stop in zip(cuts, cuts[1:]))
    return shards


def check_text(shards: list[Shard], any_text: list[bool]) -> None:
    """read_lines' all-blank check, per file, from what each shard saw."""
    seen: dict[str, bool] = {}
    for shard, text in zip(shards, any_text):
        seen[shard.name] = seen.get(shard.name, False) or text
    for name, text in seen.items():
        if not text:
            raise CorpusError(f"{name} has no non-empty lines")


# ---------------------------------------------------------------- scoring on workers

_MODELS: dict = {}


def _worker_model(paths: tuple, weights):
    """The model (a mixture for several paths), loaded once per worker process."""
    key = (paths, None if weights is None else tuple(weights),
           tuple((os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths))
    if key not in _MODELS:
        from . import loader
        models = [loader.load(p) for p in paths]
        if len(models) == 1:
            model = models[0]
        else:
            from .mix import MixModel
            model = MixModel(models, None if weights is None else list(weights))
        _MODELS.clear()
        _MODELS[key] = model
    return _MODELS[key]


def _shard_lines(shard: Shard) -> tuple[list[str], bool]:
    lines = [line for block in shard.blocks() for line in block]
    return lines, any(line.strip() for line in lines)


def _evaluate_shard(shard: Shard, paths: tuple, weights) -> tuple[dict, bool]:
    lines, text = _shard_lines(shard)
    return (_worker_model(paths, weights).evaluate(lines) if lines else None), text


def _score_shard(shard: Shard, paths: tuple, weights, per_token: bool) -> list:
    from .ranking import score_rows
    lines = [line for line in _shard_lines(shard)[0] if line.strip()]
    return score_rows(_worker_model(paths, weights), lines, per_token)


def _check_stream(model) -> None:
    if getattr(model, "stream", False):
        raise ConfigError("a --stream RNN reads a file's lines in order with its state running on: "
                          "evaluate it without --workers or --scheduler")


def evaluate(client, model, paths: list[str], weights, sources: list) -> dict:
    """`model.evaluate` of the sources' lines, sharded over the cluster's workers."""
    from .metrics import combine_summaries
    _check_stream(model)
    shards = make_shards(sources, worker_count(client) * SHARDS_PER_WORKER)
    results = client.gather([client.submit(_evaluate_shard, shard, tuple(paths), weights, pure=False)
                             for shard in shards])
    check_text(shards, [text for _, text in results])
    return combine_summaries([summary for summary, _ in results if summary is not None])


def score(client, paths: list[str], weights, sources: list, per_token: bool) -> list:
    """Score rows (see rnnkit.scoring.score_rows) of the sources' non-blank lines, in order."""
    shards = make_shards(sources, worker_count(client) * SHARDS_PER_WORKER)
    futures = [client.submit(_score_shard, shard, tuple(paths), weights, per_token, pure=False) for shard in shards]
    parts = client.gather(futures)
    rows = [row for part in parts for row in part]
    if not rows:
        raise CorpusError(f"{shards[0].name if shards else 'the input'} has no non-empty lines")
    return rows


__all__ = ["connect", "make_shards", "Shard", "evaluate", "score"]
