"""n-gram benchmark: rnnkit modified Kneser-Ney against KenLM's published figures, NLTK,
and the `kenlm` Python module's query speed and load time.

    python benchmarks/bench_ngram.py            # order 3 and 5 on nsmc/train.txt, NLTK if installed
    python benchmarks/bench_ngram.py --orders 5 --json out.json
    python benchmarks/bench_ngram.py --orders 3 5 --max-lines 2000 --repeats 1 --nltk-cap 1   # seconds

Each configuration runs in its own child process so that peak RSS is its own. It first
verifies (test perplexity of the order-5 model equals KenLM's 11,835 with 48,505 OOVs),
then times: build (read text, count, estimate, write rnnkit's model file), ARPA export,
and scoring nsmc/test.txt (one warm-up, median of 3). NLTK's KneserNeyInterpolated is
fitted on the 20,000-line slice in the same run, next to rnnkit on the same slice (both
builds: median of 9 for rnnkit, of 3 for NLTK, each a fresh model; the full-file builds run once); NLTK
scores so slowly that it is timed on a few sentences under a time cap. Skips cleanly when
../shared (the data) is absent. Timing is wall clock (time.perf_counter). --max-lines runs on
the first lines of each file instead (a quick check: no KenLM verification then).

Queries against the `kenlm` module (skipped when it is not installed): the highest order's
model file and its ARPA export are loaded in a fresh child process, and nsmc/test.txt is
scored three ways, each next to kenlm's own way in the same rounds (interleaved, one
warm-up round, median of --repeats): the whole file (rnnkit score_many; kenlm has no
batch call, so its one score() call per sentence), one score(sentence) call at a time, and
BaseScore word by word through rnnkit.kenlm (kenlm.State and BaseScore for kenlm); kenlm
with its model loaded from the ARPA file and, when there is one, from its binary file. Load
times: the rnnkit model file (memory-mapped; the first load after the file's pages were
dropped from the page cache (posix_fadvise DONTNEED, so they are read back as for a file
written long ago), then the median of 5 warm loads), RSS after the load beside the size of
its arrays, and the ARPA file in rnnkit and in kenlm; with KenLM's build_binary (found with
--kenlm-bin, $KENLM_BIN or on PATH; kpu/kenlm's compile_query_only.sh builds it) also
kenlm's binary file, loaded the same two ways.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_support import data_dir, first_missing, positive_int, skip

DATA = data_dir("nsmc")
KENLM = {  # ../shared/reference/kenlm/README.md, "Speed anchor"
    "build_o5_s": 20.5, "build_o5_rss_mib": 1008, "score_python_sps": 265_000, "score_query_sps": 351_000,
    "ppl_o5": 11835, "oov_o5": 48505,
}
NLTK_README = {"fit_o3_20k_s": 5.4, "fit_o3_20k_mib": 210, "score_tokens_per_s": 6}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_rnnkit(order: int, train: str, test: str, workdir: str, repeats: int, build_repeats: int,
                 keep_arpa: bool = False) -> dict:
    from rnnkit.ngram import NgramModel
    from rnnkit.units import read_lines

    out = {"tool": "rnnkit", "order": order, "train": Path(train).name}
    base_rss = rss_mib()
    model_path = Path(workdir) / f"o{order}.model"
    builds, fits = [], []
    for _ in range(build_repeats):
        model = None  # free the previous build first: peak RSS stays that of one build
        t0 = time.perf_counter()
        model = NgramModel.train_file(train, order)
        fits.append(time.perf_counter() - t0)
        model.save(model_path)
        builds.append(time.perf_counter() - t0)
    out["build_s"] = statistics.median(builds)
    out["build_runs_s"] = builds
    out["fit_s"] = statistics.median(fits)  # read + count + estimate, in memory (what NLTK's fit does)
    out["build_rss_mib"] = rss_mib()
    out["base_rss_mib"] = base_rss
    out["ngrams"] = model.ngram_counts()
    out["model_mib"] = model_path.stat().st_size / 2**20
    lines = read_lines(test)
    stats = model.evaluate(lines)
    out.update(perplexity=stats["perplexity"], oov=stats["oov"], tokens=stats["predicted"], sentences=len(lines))
    model.score_many(lines)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.score_many(lines)
        times.append(time.perf_counter() - t)
    out["score_sps"] = len(lines) / statistics.median(times)
    out["score_sps_best"] = len(lines) / min(times)
    out["score_tps"] = stats["predicted"] / statistics.median(times)
    t = time.perf_counter()
    loaded = NgramModel.load(model_path)
    out["load_s"] = time.perf_counter() - t
    del loaded
    arpa = Path(workdir) / f"o{order}.arpa"
    t = time.perf_counter()
    model.write_arpa(arpa)
    out["arpa_s"] = time.perf_counter() - t
    out["arpa_mib"] = arpa.stat().st_size / 2**20
    out["peak_rss_mib"] = rss_mib()
    if not keep_arpa:
        arpa.unlink()
    return out


def child_nltk(order: int, train: str, test: str, cap_s: float, build_repeats: int) -> dict:
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import padded_everygram_pipeline, pad_both_ends
    from nltk.util import ngrams

    out = {"tool": "nltk", "order": order, "train": Path(train).name}
    import nltk

    out["version"] = nltk.__version__
    builds = []
    for _ in range(build_repeats):
        model = None
        t = time.perf_counter()  # reading counts on both sides
        text = Path(train).read_text(encoding="utf-8").split("\n")
        sentences = [line.split() for line in text if line]
        grams, vocab = padded_everygram_pipeline(order, sentences)
        model = KneserNeyInterpolated(order)
        model.fit(grams, vocab)
        builds.append(time.perf_counter() - t)
    out["build_s"] = statistics.median(builds)
    out["build_runs_s"] = builds
    out["build_rss_mib"] = rss_mib()
    queries = [line.split() for line in Path(test).read_text(encoding="utf-8").split("\n") if line]
    scored_tokens, scored_sentences = 0, 0
    t = time.perf_counter()
    for words in queries:
        for gram in ngrams(list(pad_both_ends(words, n=order)), order):
            model.logscore(gram[-1], gram[:-1])
            scored_tokens += 1
            if time.perf_counter() - t > cap_s:
                break
        else:
            scored_sentences += 1
            continue
        break
    elapsed = time.perf_counter() - t
    out["score_tps"] = scored_tokens / elapsed
    out["score_tokens"] = scored_tokens
    out["score_capped_s"] = elapsed
    return out


def resident_mib() -> float:
    """RSS now, mapped files included (Linux; elsewhere the peak, ru_maxrss)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return rss_mib()


def drop_from_page_cache(path: Path) -> None:
    """Let the kernel forget the file's pages, so the next load reads it as a file written
    long ago is read (the pages of a file just written come from the write path). Where
    there is no posix_fadvise the first load is simply a warm one."""
    if hasattr(os, "posix_fadvise"):
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def load_times(load, path: Path) -> tuple[float, float]:
    """(first load after the page cache dropped the file, median of 5 loads after it)."""
    drop_from_page_cache(path)
    t = time.perf_counter()
    load(path)
    first = time.perf_counter() - t
    warm = []
    for _ in range(5):
        t = time.perf_counter()
        load(path)
        warm.append(time.perf_counter() - t)
    return first, statistics.median(warm)


def base_score_chain(model, state_class, lines):
    """BaseScore word by word, as decoders call it, from <s> to </s> for every line."""
    def run():
        state, out = state_class(), state_class()
        for line in lines:
            model.BeginSentenceWrite(state)
            for word in line.split():
                model.BaseScore(state, word, out)
                state, out = out, state
            model.BaseScore(state, "</s>", out)
    return run


def child_query(model_path: str, arpa_path: str, test: str, repeats: int, kenlm_binary: str) -> dict:
    """Query speed of the three ways against the kenlm module, and load times."""
    import kenlm

    import rnnkit.kenlm as rk
    from rnnkit.ngram import NgramModel
    from rnnkit.units import read_lines

    model_path, arpa_path = Path(model_path), Path(arpa_path)
    out = {"tool": "query", "model_mib": model_path.stat().st_size / 2**20}
    out["rss_before_load_mib"] = resident_mib()
    # first: a model loaded before the pages are dropped would keep them mapped
    out["load_first_s"], out["load_warm_s"] = load_times(NgramModel.load, model_path)
    model = NgramModel.load(model_path)
    out["rss_after_load_mib"] = resident_mib()
    out["arrays_mib"] = sum(a.nbytes for a in model.file_contents()[2].values()) / 2**20
    t = time.perf_counter()
    NgramModel.read_arpa(arpa_path)
    out["load_arpa_s"] = time.perf_counter() - t
    t = time.perf_counter()
    theirs = kenlm.Model(str(arpa_path))
    out["kenlm_load_arpa_s"] = time.perf_counter() - t
    if kenlm_binary:
        out["kenlm_binary_mib"] = Path(kenlm_binary).stat().st_size / 2**20
        out["kenlm_load_binary_first_s"], out["kenlm_load_binary_warm_s"] = load_times(
            lambda path: kenlm.Model(str(path)), Path(kenlm_binary))
    ours = rk.Model(model_path)
    # kenlm as loaded from its ARPA file (its memory in 2 MiB pages where the kernel gives
    # them), and from its binary file (mapped, as rnnkit's model file is) when there is one
    sides = {"rnnkit": None, "kenlm": theirs}
    if kenlm_binary:
        sides["kenlm_binary"] = kenlm.Model(kenlm_binary)
    lines = read_lines(test)
    for line in lines[:200]:   # the same model on every side
        assert all(abs(ours.score(line) - peer.score(line)) < 1e-3 for peer in list(sides.values())[1:]), line
    runs = {("file", "rnnkit"): lambda: model.score_many(lines),
            ("call", "rnnkit"): lambda: [model.score(line) for line in lines],
            ("kenlm_call", "rnnkit"): lambda: [ours.score(line) for line in lines],
            ("base", "rnnkit"): base_score_chain(ours, rk.State, lines)}
    for side, peer in list(sides.items())[1:]:   # kenlm has no batch call: "file" is its score() loop
        runs["call", side] = (lambda peer: lambda: [peer.score(line) for line in lines])(peer)
        runs["base", side] = base_score_chain(peer, kenlm.State, lines)
    times = {key: [] for key in runs}
    for round_ in range(repeats + 1):   # round 0 warms up; the ways take turns
        for key, run in runs.items():
            t = time.perf_counter()
            run()
            if round_:
                times[key].append(time.perf_counter() - t)
    for (mode, side), values in times.items():
        out[f"{mode}_{side}_sps"] = len(lines) / statistics.median(values)
    out["sentences"] = len(lines)
    out["words"] = sum(len(line.split()) for line in lines)
    return out


def find_build_binary(given: str | None) -> str | None:
    for candidate in (given, os.environ.get("KENLM_BIN")):
        if candidate:
            path = Path(candidate)
            path = path / "build_binary" if path.is_dir() else path
            if path.exists():
                return str(path)
    return shutil.which("build_binary")


def print_query_table(q: dict, order: int) -> None:
    binary = "call_kenlm_binary_sps" in q
    print(f"\n| order {order}, nsmc/test.txt ({q['sentences']:,} sentences, {q['words']:,} words), "
          f"sentences/s | rnnkit | kenlm module, model from ARPA (same run) | rnnkit / kenlm |"
          + (" kenlm, from its binary file | rnnkit / kenlm binary |" if binary else ""))
    print("|---|---|---|---|" + ("---|---|" if binary else ""))
    rows = [("whole file (rnnkit score_many; kenlm: score() per sentence)", "file", "call"),
            ("one score(sentence) call at a time", "call", "call"),
            ("one rnnkit.kenlm Model.score call at a time", "kenlm_call", "call"),
            ("BaseScore word by word (rnnkit.kenlm / kenlm State)", "base", "base")]
    for label, mine, theirs in rows:
        a, b = q[f"{mine}_rnnkit_sps"], q[f"{theirs}_kenlm_sps"]
        row = f"| {label} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |"
        if binary:
            c = q[f"{theirs}_kenlm_binary_sps"]
            row += f" {c:,.0f} | {a / c:.2f}x |"
        print(row)
    ratio = q["rss_after_load_mib"] / q["arrays_mib"]
    print(f"\n| loading the order-{order} model | time | note |")
    print("|---|---|---|")
    print(f"| rnnkit model file ({q['model_mib']:.0f} MiB), memory-mapped: warm (median of 5) | "
          f"{q['load_warm_s']:.2f} s | RSS after loading {q['rss_after_load_mib']:.0f} MiB = {ratio:.2f}x its "
          f"arrays ({q['arrays_mib']:.0f} MiB; {q['rss_before_load_mib']:.0f} MiB before) |")
    print(f"| rnnkit model file, first load after its pages left the page cache | {q['load_first_s']:.2f} s | "
          f"reads the file |")
    print(f"| rnnkit from the ARPA file | {q['load_arpa_s']:.1f} s | - |")
    print(f"| kenlm module from the ARPA file | {q['kenlm_load_arpa_s']:.1f} s | - |")
    if "kenlm_load_binary_warm_s" in q:
        print(f"| kenlm module from build_binary's file ({q['kenlm_binary_mib']:.0f} MiB, probing): warm / first | "
              f"{q['kenlm_load_binary_warm_s']:.2f} s / {q['kenlm_load_binary_first_s']:.2f} s | - |")
    else:
        print("| kenlm binary file | - | build_binary not found (--kenlm-bin, $KENLM_BIN, PATH) |")


def first_lines(source: Path, count: int, workdir: str) -> Path:
    """A copy of the first `count` lines of `source` in workdir, under the same name."""
    with source.open(encoding="utf-8") as lines:
        head = "".join(line for _, line in zip(range(count), lines))
    target = Path(workdir) / source.name
    target.write_text(head, encoding="utf-8")
    return target


def run_child(args: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().split("\n")[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, nargs="*", default=[3, 5], help="full-file orders (none: only the NLTK slice)")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--nltk-cap", type=float, default=30.0, help="seconds of NLTK scoring")
    parser.add_argument("--max-lines", type=positive_int, default=None,
                        help="use only the first N lines of each file (a quick check; default: all)")
    parser.add_argument("--no-nltk", action="store_true")
    parser.add_argument("--no-query", action="store_true", help="skip the comparison with the kenlm module")
    parser.add_argument("--kenlm-bin", default=None, help="KenLM's build_binary (or its folder)")
    parser.add_argument("--json", default=None, help="write raw numbers here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, order, *rest = args.child
        if kind == "rnnkit":
            result = child_rnnkit(int(order), rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]), rest[5] == "1")
        elif kind == "query":
            result = child_query(rest[0], rest[1], rest[2], int(rest[3]), rest[4])
        else:
            result = child_nltk(int(order), rest[0], rest[1], float(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return 0

    train, slice20k, test = DATA / "train.txt", DATA / "train-20k.txt", DATA / "test.txt"
    missing = first_missing(train, test)
    if missing:
        return skip(f"{missing} not found (the benchmark needs ../shared/data/nsmc)")
    cpu = platform.processor() or platform.machine()
    head = f"first {args.max_lines:,} lines of " if args.max_lines else ""
    print(f"# rnnkit n-gram benchmark\n\nPython {platform.python_version()}, {os.cpu_count()} CPUs ({cpu}), "
          f"NumPy {__import__('numpy').__version__}; corpus {head}nsmc/train.txt (word unit), "
          f"queries {head}nsmc/test.txt\n")
    results = []
    query = None
    try:
        import kenlm  # noqa: F401
    except ImportError:
        print("kenlm module not installed: the query comparison is skipped\n")
        args.no_query = True
    query_order = max(args.orders) if args.orders and not args.no_query else None
    with tempfile.TemporaryDirectory() as workdir:
        if args.max_lines:
            train, test = (first_lines(path, args.max_lines, workdir) for path in (train, test))
            if slice20k.exists():
                slice20k = first_lines(slice20k, args.max_lines, workdir)
        for order in args.orders:
            print(f"... rnnkit order {order} ({head or 'full '}train.txt)", file=sys.stderr, flush=True)
            keep = "1" if order == query_order else "0"
            r = run_child(["rnnkit", str(order), str(train), str(test), workdir, str(args.repeats), "1", keep])
            if order == 5 and not args.max_lines:  # verify before reporting: KenLM's test perplexity and OOVs
                assert abs(r["perplexity"] / KENLM["ppl_o5"] - 1) < 1e-3 and r["oov"] == KENLM["oov_o5"], r
                print(f"verified: order-5 test perplexity {r['perplexity']:.1f} with {r['oov']} OOVs "
                      f"(KenLM {KENLM['ppl_o5']}, {KENLM['oov_o5']})\n")
            results.append(r)
        if query_order:
            model, arpa = Path(workdir) / f"o{query_order}.model", Path(workdir) / f"o{query_order}.arpa"
            binary = ""
            build_binary = find_build_binary(args.kenlm_bin)
            if build_binary:
                print("... KenLM build_binary", file=sys.stderr, flush=True)
                binary = str(Path(workdir) / f"o{query_order}.kenlm")
                subprocess.run([build_binary, str(arpa), binary], check=True, capture_output=True)
            print(f"... queries, order {query_order}, against the kenlm module", file=sys.stderr, flush=True)
            query = run_child(["query", str(query_order), str(model), str(arpa), str(test), str(args.repeats), binary])
            arpa.unlink()
        nltk_ok = False
        if not args.no_nltk and slice20k.exists():
            print("... rnnkit order 3 (20k slice)", file=sys.stderr, flush=True)
            # a 0.2 s build is noisy on a shared machine: 9 of them (NLTK: --repeats, ~4 s each)
            small = run_child(["rnnkit", "3", str(slice20k), str(test), workdir, str(args.repeats), "9", "0"])
            results.append(small)
            try:
                import nltk  # noqa: F401
                nltk_ok = True
            except ImportError:
                print("NLTK not installed: NLTK rows skipped\n")
            if nltk_ok:
                print("... NLTK order 3 (20k slice)", file=sys.stderr, flush=True)
                results.append(run_child(["nltk", "3", str(slice20k), str(test), str(args.nltk_cap), str(args.repeats)]))

    print("| measure | rnnkit | KenLM (README) | rnnkit / KenLM |")
    print("|---|---|---|---|")
    for r in results:
        if r["tool"] != "rnnkit" or r["train"] != "train.txt":
            continue
        o = r["order"]
        counts = "/".join(f"{c / 1e6:.2f}M" for c in r["ngrams"])
        kb = f"{KENLM['build_o5_s']} s" if o == 5 else "-"
        km = f"{KENLM['build_o5_rss_mib']} MiB" if o == 5 else "-"
        rb = f"{r['build_s'] / KENLM['build_o5_s']:.2f}x time" if o == 5 else "-"
        rm = f"{r['build_rss_mib'] / KENLM['build_o5_rss_mib']:.2f}x memory" if o == 5 else "-"
        print(f"| order {o}: build to model file (n-grams {counts}) | {r['build_s']:.1f} s | {kb} | {rb} |")
        print(f"| order {o}: peak RSS of the build | {r['build_rss_mib']:.0f} MiB | {km} | {rm} |")
        print(f"| order {o}: ARPA export ({r['arpa_mib']:.0f} MiB) | {r['arpa_s']:.1f} s | - | - |")
        print(f"| order {o}: peak RSS incl. ARPA export | {r['peak_rss_mib']:.0f} MiB | - | - |")
        print(f"| order {o}: model file size / load | {r['model_mib']:.0f} MiB / {r['load_s']:.1f} s | "
              f"binary 394 MiB (o5) | - |")
        print(f"| order {o}: score test.txt ({r['sentences']:,} sentences) | {r['score_sps']:,.0f} sentences/s "
              f"({r['score_tps']:,.0f} tokens/s) | Python {KENLM['score_python_sps']:,} / query "
              f"{KENLM['score_query_sps']:,} sentences/s | {r['score_sps'] / KENLM['score_python_sps']:.2f}x Python module |")
        print(f"| order {o}: test perplexity (OOVs) | {r['perplexity']:,.1f} ({r['oov']:,}) | "
              f"{KENLM['ppl_o5'] if o == 5 else '-'} | - |")
    if query:
        print_query_table(query, query_order)
    small = next((r for r in results if r["tool"] == "rnnkit" and r["train"] == "train-20k.txt"), None)
    nl = next((r for r in results if r["tool"] == "nltk"), None)
    if small and nl:
        print("\n| order 3, nsmc/train-20k.txt | rnnkit | NLTK " + nl["version"] + " (same run) | rnnkit speed-up |")
        print("|---|---|---|---|")
        print(f"| build in memory (read the file, fit) | {small['fit_s']:.3f} s | {nl['build_s']:.2f} s | "
              f"{nl['build_s'] / small['fit_s']:,.1f}x |")
        print(f"| build to a model file (rnnkit only: NLTK keeps its model in memory) | {small['build_s']:.3f} s, "
              f"{small['build_rss_mib']:.0f} MiB | {nl['build_s']:.2f} s, {nl['build_rss_mib']:.0f} MiB (no file) | "
              f"{nl['build_s'] / small['build_s']:,.1f}x |")
        print(f"| scoring test.txt | {small['score_tps']:,.0f} tokens/s | {nl['score_tps']:,.1f} tokens/s "
              f"({nl['score_tokens']} tokens in {nl['score_capped_s']:.0f} s) | {small['score_tps'] / nl['score_tps']:,.0f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"kenlm_readme": KENLM, "results": results, "query": query}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
