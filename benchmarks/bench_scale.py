"""Scale benchmark: bounded-memory and Dask n-gram builds, MPI data-parallel RNN steps.

    python benchmarks/bench_scale.py                         # all parts (about 10 minutes on 2 cores)
    python benchmarks/bench_scale.py --parts spill mpi       # some of: memory, spill, dask, mpi
    python benchmarks/bench_scale.py --max-lines 5000 --scale 1 --mpi-steps 3 --workers 1   # seconds

memory  nsmc/train.txt, word 5-gram KN (KenLM's anchor: lmplz 20.5 s, 1,008 MiB): the build
        (train from the file + write the model file) in memory and with --memory; time,
        peak RSS, and whether the models are the same (a digest of every array).
spill   a corpus made by concatenating the shared corpora `--scale` times (4: at least 4x
        the budget), char 3-gram, --memory BUDGET: peak RSS against the budget, next to
        the same build of one copy (what does not grow with the corpus is the constant).
dask    the memory part's build on a local Dask cluster of 1 and 2 workers: time, the
        client's and each worker's peak RSS; same model as the local build.
mpi     training steps of configuration C1 (V=10000 H=256 B=32 T=35, random ids, Adam) and
        of `rnnkit train`'s default RNNME model of the bundled sample: 1 process x 1 thread,
        1 x 2 threads, 2 MPI ranks x 1 thread (the embedding rows and direct table summed
        as rnnkit.mpi chooses, packed, dense): tokens/s, and the bytes summed and the
        exchange's seconds per step.
Then a projection to 10 billion tokens, with its arithmetic.

Each build runs in its own child process so that its peak RSS is its own. Timing is wall
clock. Skips cleanly when ../shared (the data) is absent; the MPI part when mpi4py is not
installed, the Dask part when Dask is not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_support import SHARED, data_dir, first_missing, positive_int, skip

LMPLZ = {"build_s": 20.5, "rss_mib": 1008}   # ../shared/reference/kenlm/README.md, "Speed anchor"
CONCATENATED = [("nsmc", "train.txt"), ("kowiki", "train.txt"), ("wikitext-2", "train.txt"),
                ("ptb", "ptb.train.txt"), ("tinyshakespeare", "train.txt")]
C1 = {"V": 10000, "H": 256, "B": 32, "T": 35}
# how MPI ranks sum the embedding rows and the direct table (rnnkit.mpi.Exchange): as it
# chooses, always packed, always dense
EXCHANGES = {"auto": None, "packed": True, "dense": False}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def digest(model) -> str:
    """The model's arrays (keys, probabilities, backoffs) as one hash: same hash, same ARPA."""
    h = hashlib.sha256()
    for name, array in sorted(model.file_contents()[2].items()):
        h.update(name.encode())
        h.update(memoryview(array).cast("B"))   # no copy: the digest must not raise the peak
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- children

def child_build(corpus: list[str], unit: str, order: int, memory: str, workers: int, out: str) -> dict:
    from rnnkit.ngram import NgramModel
    from rnnkit.ngram_build import build_sharded, parse_size
    started = time.perf_counter()
    if workers:
        from rnnkit.sharding import connect
        with connect(workers=workers) as client:
            model = build_sharded(client, corpus, order, unit=unit)
            worker_peaks = sorted(client.run(peak_mib).values())
    else:
        model = NgramModel.train_file(corpus, order, unit=unit, memory=parse_size(memory) if memory else None)
        worker_peaks = []
    model.save(out)
    seconds, rss = time.perf_counter() - started, peak_mib()
    return {"seconds": seconds, "rss_mib": rss, "worker_rss_mib": worker_peaks, "digest": digest(model),
            "ngrams": model.ngram_counts(), "tokens": model.info["tokens"],
            "corpus_mib": sum(os.path.getsize(p) for p in corpus) / 2**20}


def child_mpi(setup: str, steps: int, threads: int, exchange: str) -> dict | None:
    """Training steps through Trainer (data-parallel under mpiexec, the exchange's choice
    forced or not) of C1 or RNNME; rank 0 reports."""
    import numpy as np
    from rnnkit import kernel, mpi
    from rnnkit.train import Trainer
    kernel.set_num_threads(threads)
    ranks = mpi.world()
    if ranks is not None:
        ranks.pack = EXCHANGES[exchange]
    model, config, lanes = (c1_model if setup == "C1" else rnnme_model)(steps)
    trainer = Trainer(model, config, lanes, ranks=ranks)
    h = np.zeros((lanes.width, model.hidden), dtype=np.float32)
    history = None
    windows = lanes.windows(config.bptt)
    for _ in range(2):   # warm-up: buffers, BLAS threads, the first collectives
        _, _, h, history = trainer.step(*next(windows), h, history)
    if ranks is not None:
        ranks.exchange_bytes, ranks.exchange_seconds = 0, 0.0
        ranks.comm.Barrier()
    tokens, started = 0, time.perf_counter()
    for _ in range(steps):
        _, count, h, history = trainer.step(*next(windows), h, history)
        tokens += count
    seconds = time.perf_counter() - started
    if ranks is not None and not ranks.lead:
        return None
    return {"setup": setup, "ranks": ranks.size if ranks else 1, "threads": threads, "exchange": exchange,
            "tokens_per_s": tokens / seconds, "step_s": seconds / steps, "params": int(model.params.size),
            "exchange_bytes": ranks.exchange_bytes / steps if ranks else 0,
            "exchange_s": ranks.exchange_seconds / steps if ranks else 0.0}


def c1_model(steps: int):
    """C1 on random ids, Adam."""
    import numpy as np
    from rnnkit import batching
    from rnnkit.rnnlm import RNNModel
    from rnnkit.train import TrainConfig, init_params
    from rnnkit.vocab import Vocab
    V, H, B, T = C1["V"], C1["H"], C1["B"], C1["T"]
    rng = np.random.default_rng(1)
    ids = [rng.integers(3, V, 40).astype(np.int32) for _ in range(B * (steps + 2))]
    config = TrainConfig(unit="word", hidden=H, batch=B, bptt=T)
    vocab = Vocab(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(V - 3)])
    model = RNNModel(vocab, "word", H, init_params(V, H, np.random.default_rng(1), None), train_state={"step": 0})
    return model, config, batching.split_lanes(batching.make_stream(ids), B)


def rnnme_model(steps: int):
    """`rnnkit train`'s default model of the bundled sample: RNNME (classes, direct connections)."""
    from rnnkit import batching, cli, idcorpus
    from rnnkit.train import TrainConfig, new_model
    from rnnkit.units import Tokenizer
    config = TrainConfig(classes=cli.DEFAULT_CLASSES, direct_order=cli.DEFAULT_DIRECT_ORDER,
                         direct_size=cli.TableSize().convert(cli.DEFAULT_DIRECT_SIZE, None, None))
    lines, tokenizer = cli.bundled_corpus().read_text(encoding="utf-8").splitlines(), Tokenizer(config.unit)
    with idcorpus.number([lines], tokenizer, idcorpus.hold_out_every(config.valid_fraction)) as numbered:
        model = new_model(numbered, config, tokenizer)
        return model, config, batching.split_lanes(numbered.stream(model.vocab), config.batch)


def run_child(args: list[str], launcher: list[str] = ()) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                            env=env)
    if result.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().split("\n")[-1])


# ---------------------------------------------------------------- parts

def first_lines(source: Path, count: int | None, target: Path) -> Path:
    """`source`, or a copy of its first `count` lines."""
    if count is None:
        return source
    with source.open("rb") as lines:
        target.write_bytes(b"".join(line for _, line in zip(range(count), lines)))
    return target


def build_rows(results: list[tuple[str, dict]], reference: str | None) -> None:
    """A table of builds; `reference`: the digest every build must match (None: no column)."""
    print("| build | time | peak RSS | n-grams |" + (" same model as in memory |" if reference else ""))
    print("|---|---|---|---|" + ("---|" if reference else ""))
    for label, r in results:
        rss = f"{r['rss_mib']:,.0f} MiB"
        if r["worker_rss_mib"]:
            rss += " client; workers " + " / ".join(f"{w:,.0f}" for w in r["worker_rss_mib"]) + " MiB"
        counts = "/".join(f"{c / 1e6:.2f}M" for c in r["ngrams"])
        same = f" {'yes' if r['digest'] == reference else 'NO'} |" if reference else ""
        print(f"| {label} | {r['seconds']:.1f} s | {rss} | {counts} |{same}")


def part_memory(train: Path, args, work: Path, dask: bool) -> list[tuple[str, dict]]:
    corpus = [str(train)]
    common = ["word", "5"]
    rows = [("in memory", run_child(["build", json.dumps(corpus), *common, "", "0", str(work / "m.model")]))]
    for budget in args.memory:
        rows.append((f"--memory {budget} (spilled)",
                     run_child(["build", json.dumps(corpus), *common, budget, "0", str(work / "m.model")])))
    if dask:
        for workers in args.workers:
            rows.append((f"Dask, {workers} worker{'s' if workers > 1 else ''}",
                         run_child(["build", json.dumps(corpus), *common, "", str(workers), str(work / "m.model")])))
    return rows


def part_spill(args, work: Path) -> None:
    """One copy of the concatenated corpora, and `scale` copies, at the same budget."""
    sources = [data_dir(name) / file for name, file in CONCATENATED]
    one = work / "concatenated.txt"
    with one.open("wb") as out:
        for source in sources:
            out.write(first_lines(source, args.max_lines, work / "head.txt").read_bytes())
    many = work / f"concatenated-x{args.scale}.txt"
    with many.open("wb") as out:
        for _ in range(args.scale):
            out.write(one.read_bytes())
    budget = args.spill_memory
    names = ", ".join(name for name, _ in CONCATENATED)
    print(f"\n## Bounded memory: char 3-gram of the shared corpora concatenated ({names}), --memory {budget}\n")
    rows = [(f"1 copy ({one.stat().st_size / 2**20:,.0f} MiB)",
             run_child(["build", json.dumps([str(one)]), "char", "3", budget, "0", str(work / "s.model")])),
            (f"{args.scale} copies ({many.stat().st_size / 2**20:,.0f} MiB)",
             run_child(["build", json.dumps([str(many)]), "char", "3", budget, "0", str(work / "s.model")]))]
    build_rows(rows, None)   # n copies count n times as much: another model
    from rnnkit.ngram_build import parse_size
    limit = parse_size(budget) / 2**20
    small, big = rows[0][1]["rss_mib"], rows[1][1]["rss_mib"]
    print(f"\nThe {args.scale}-copy corpus is {rows[1][1]['corpus_mib'] / limit:.1f}x the budget; its peak RSS "
          f"is the budget plus {big - limit:,.0f} MiB, against {small - limit:,.0f} MiB for one copy: the constant "
          "is the interpreter, NumPy, the vocabulary and the distinct n-grams (which do not grow with copies).")


def part_mpi(args) -> list[dict] | None:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec = None
    if mpiexec is None:
        print("\nMPI part skipped: mpi4py / mpiexec not installed (pip install 'rnnkit[mpi]')")
        return None
    steps = str(args.mpi_steps)
    two = [mpiexec, "-launcher", "fork", "-n", "2"]
    # (model, threads, exchange, launcher): one process at 1 and 2 threads, 2 ranks at 1
    # thread as the exchange chooses and with the choice forced each way
    runs = [(setup, threads, exchange, launcher) for setup in ("C1", "RNNME")
            for threads, exchange, launcher in ((1, "auto", ()), (2, "auto", ()), (1, "auto", two),
                                                (1, "packed", two), (1, "dense", two))]
    rows = [run_child(["mpi", setup, steps, str(threads), exchange], launcher)
            for setup, threads, exchange, launcher in runs]
    print(f"\n## MPI data-parallel training, {steps} steps after 2 warm-up\n")
    print(f"C1: V={C1['V']:,} H={C1['H']} B={C1['B']} T={C1['T']}, random ids, Adam. RNNME: `rnnkit train`'s "
          "default model of the bundled sample (char, H=128 B=32 T=32, sqrt(V) classes, direct order 6 in a "
          "4M-entry table), Adam. Exchange: how the ranks sum the embedding rows and the direct table "
          "(auto: packed when the window uses less than 30% of the rows, 10% of the table). Summed per step: the buffers "
          "summed, and the time of the whole exchange (packing, the Allreduces, the table's step).\n")
    print("| model | layout | exchange | tokens/s | step | summed per step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        summed = (f"{r['exchange_bytes'] / 2**20:.1f} MiB in {r['exchange_s'] * 1e3:.1f} ms"
                  if r["ranks"] > 1 else "-")
        plural = ("s" if r["ranks"] > 1 else "", "s" if r["threads"] > 1 else "")
        layout = f"{r['ranks']} rank{plural[0]} x {r['threads']} thread{plural[1]}"
        exchange = r["exchange"] if r["ranks"] > 1 else "-"
        print(f"| {r['setup']} | {layout} | {exchange} | {r['tokens_per_s']:,.0f} | {r['step_s'] * 1e3:.0f} ms "
              f"| {summed} |")
    return rows


def projection(memory_rows, mpi_rows) -> None:
    """10 billion tokens, from the measured rates (linear scaling stated, not measured)."""
    print("\n## Projection to 10 billion tokens\n")
    tokens = 10e9
    if memory_rows:
        # the spilled local build if there is one (it is what scales past memory), else in memory
        label, spilled = next((row for row in memory_rows if row[0].startswith("--memory")), memory_rows[0])
        rate = spilled["tokens"] / spilled["seconds"]
        print(f"- n-gram build ({label}): {spilled['tokens']:,} tokens in {spilled['seconds']:.1f} s = "
              f"{rate:,.0f} tokens/s; 10e9 / {rate:,.0f} = {tokens / rate / 3600:,.1f} hours on one process, "
              f"if the rate held. It will not quite: the chunk sorts grow as n log n, and the distinct n-grams "
              f"(held in memory, about 30 bytes each; {sum(spilled['ngrams']):,} here, "
              f"{sum(spilled['ngrams']) / spilled['tokens']:.1f} per token) must fit one machine; pruning or "
              "more memory is the way past that.")
    if mpi_rows:
        one, two = mpi_rows[0], mpi_rows[2]   # C1: 1 process x 1 thread, 2 ranks x 1 thread
        grad_mib = 4 * one["params"] / 2**20
        print(f"- RNN (C1): 2 ranks x 1 thread run {two['tokens_per_s']:,.0f} tokens/s, 1 x 1 thread "
              f"{one['tokens_per_s']:,.0f}; one epoch over 10e9 tokens at 2 ranks: 10e9 / {two['tokens_per_s']:,.0f} "
              f"= {tokens / two['tokens_per_s'] / 86400:,.1f} days.")
        compute = one["step_s"]
        for ranks in (8, 64):
            # a ring Allreduce sends and receives 2 (R-1)/R of the buffer per rank; at 10 GB/s
            wire = 2 * (ranks - 1) / ranks * 4 * one["params"] / 10e9
            step = compute + wire
            rate = ranks * C1["B"] * C1["T"] / step
            print(f"- {ranks} ranks (one 1-thread C1 step of {compute * 1e3:.0f} ms each, a ring Allreduce of "
                  f"{grad_mib:.1f} MiB at 10 GB/s = {wire * 1e3:.1f} ms): {ranks} x {C1['B'] * C1['T']} tokens / "
                  f"{step * 1e3:.0f} ms = {rate:,.0f} tokens/s; 10e9 tokens in {tokens / rate / 3600:,.1f} hours "
                  f"(the global batch grows to {ranks * C1['B']} lanes: the rate may need retuning).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["memory", "spill", "dask", "mpi"],
                        choices=["memory", "spill", "dask", "mpi"])
    parser.add_argument("--max-lines", type=positive_int, default=None,
                        help="use only the first N lines of each file (a quick check; default: all)")
    parser.add_argument("--memory", nargs="*", default=["400M", "100M"], help="budgets of the memory part")
    parser.add_argument("--spill-memory", default="64M", help="budget of the spill part")
    parser.add_argument("--scale", type=positive_int, default=4, help="copies of the concatenated corpora")
    parser.add_argument("--workers", type=positive_int, nargs="*", default=[1, 2])
    parser.add_argument("--mpi-steps", type=positive_int, default=20)
    parser.add_argument("--json", default=None, help="write raw numbers here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "build":
            result = child_build(json.loads(rest[0]), rest[1], int(rest[2]), rest[3], int(rest[4]), rest[5])
        else:
            result = child_mpi(rest[0], int(rest[1]), int(rest[2]), rest[3])
        if result is not None:
            print(json.dumps(result))
        return 0

    needed = [data_dir("nsmc") / "train.txt"] + [data_dir(n) / f for n, f in CONCATENATED]
    missing = first_missing(*needed)
    if missing:
        return skip(f"{missing} not found (the benchmark needs {SHARED / 'data'})")
    try:
        import distributed  # noqa: F401
        dask = "dask" in args.parts
    except ImportError:
        dask = False
        if "dask" in args.parts:
            print("Dask part skipped: dask[distributed] not installed (pip install 'rnnkit[dask]')")
    cpu = platform.processor() or platform.machine()
    head = f"first {args.max_lines:,} lines of " if args.max_lines else ""
    print(f"# rnnkit scale benchmark\n\nPython {platform.python_version()}, {os.cpu_count()} CPUs ({cpu}), "
          f"NumPy {__import__('numpy').__version__}\n")
    raw = {}
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        memory_rows = None
        if "memory" in args.parts or dask:
            train = first_lines(data_dir("nsmc") / "train.txt", args.max_lines, work / "train.txt")
            print(f"## n-gram build: {head}nsmc/train.txt, word 5-gram KN, to the model file\n")
            if "memory" not in args.parts:
                args.memory = []
            memory_rows = part_memory(train, args, work, dask)
            build_rows(memory_rows, memory_rows[0][1]["digest"])
            print(f"\nKenLM lmplz (README anchor, full file): {LMPLZ['build_s']} s, {LMPLZ['rss_mib']:,} MiB.")
            raw["builds"] = memory_rows
        if "spill" in args.parts:
            part_spill(args, work)
        mpi_rows = part_mpi(args) if "mpi" in args.parts else None
        raw["mpi"] = mpi_rows
        projection(memory_rows, mpi_rows)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
