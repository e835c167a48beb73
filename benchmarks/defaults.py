"""Which output layer should `rnnkit train` use by default? Each candidate trained the same way.

Trains the candidates with `rnnkit train` itself (the CLI's defaults, H=128 unless --hidden
says otherwise) on the same corpus for the same wall-clock budget, and reports per
candidate: the best validation bits/char the run reached (held-out every 20th line, the CLI's
rule), test bits/char on the first --eval-lines lines of nsmc's test.txt (open-vocabulary
basis), tokens trained, and the lecture's three pairs (by the score `rnnkit rank` sorts on).
With several --seeds each figure is the median over the seeds, and the pairs are counted
over every run.

    python benchmarks/defaults.py                             # bundled sample, 120 s each, seeds 1-4
    python benchmarks/defaults.py --budget 300 --seeds 1 --corpus ../shared/data/nsmc/train.txt --max-lines 100000
    python benchmarks/defaults.py --budget 2 --seeds 1 --max-lines 300 --eval-lines 50   # seconds

The test lines come from ../shared/data/nsmc (or $RNNKIT_SHARED/data/nsmc); without them
only the validation figure is shown.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_support import data_dir, positive_int
from units_table import pairs   # the lecture's three pairs, by the score `rnnkit rank` sorts on

# name -> the options of `rnnkit train` that set the output layer
CANDIDATES = {
    "plain RNN (full softmax)": ["--classes", "0"],
    "classes (sqrt V)": ["--classes", "auto", "--direct-order", "0"],
    "classes + direct order 3, 4M": ["--classes", "auto", "--direct-order", "3", "--direct-size", "4M"],
    "classes + direct order 4, 4M": ["--classes", "auto", "--direct-order", "4", "--direct-size", "4M"],
    "classes + direct order 6, 4M": ["--classes", "auto", "--direct-order", "6", "--direct-size", "4M"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None,
                        help="training text [default: the sample bundled in the package]")
    parser.add_argument("--max-lines", type=positive_int, default=None, help="only the first N training lines")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of training per run")
    parser.add_argument("--seeds", default="1,2,3,4", help="comma-separated seeds; one run per seed")
    parser.add_argument("--hidden", type=positive_int, default=128)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--eval-lines", type=positive_int, default=3000, help="first N lines of nsmc test.txt")
    args = parser.parse_args()

    import rnnkit
    from rnnkit.units import read_lines

    corpus = args.corpus or Path(rnnkit.__file__).parent / "data" / "nsmc_sample.txt"
    test_path = data_dir("nsmc") / "test.txt"
    test_lines = read_lines(test_path)[:args.eval_lines] if test_path.exists() else None
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as work:
        train_text = Path(work) / "train.txt"
        train_text.write_text("\n".join(read_lines(corpus)[:args.max_lines]) + "\n", encoding="utf-8")
        rows = [candidate_row(name, options, train_text, test_lines, seeds, args, Path(work))
                for name, options in CANDIDATES.items()]
    print_table(rows, corpus, seeds, args, test_lines is not None)
    return 0


def candidate_row(name, options, train_text, test_lines, seeds, args, work: Path) -> dict:
    import rnnkit
    runs = []
    for seed in seeds:
        path = work / "candidate.model"
        command = ["rnnkit", "train", str(train_text), "-o", str(path), "--hidden", str(args.hidden),
                   "--time-budget", str(args.budget), "--threads", str(args.threads), "--seed", str(seed),
                   *options]
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        model = rnnkit.load(path)
        epochs = model.record["epochs"]
        runs.append({"valid": min(e["valid_bpc"] for e in epochs), "tokens": sum(e["tokens"] for e in epochs),
                     "test": model.evaluate(test_lines)["bits_per_char"] if test_lines else None,
                     "pairs": pairs(model)})
        print(f"{name}, seed {seed}: valid {runs[-1]['valid']:.4f}, pairs {runs[-1]['pairs']}",
              file=sys.stderr, flush=True)
    def median(key):
        return statistics.median(run[key] for run in runs) if runs[0][key] is not None else None

    return {"name": name, "valid": median("valid"), "test": median("test"), "tokens": median("tokens"),
            "pairs": [sum(run["pairs"][i] for run in runs) for i in range(3)], "runs": len(runs)}


def print_table(rows, corpus, seeds, args, with_test: bool) -> None:
    lines = f"first {args.max_lines:,} lines of " if args.max_lines else ""
    print(f"\n{lines}{corpus.name}, char, H={args.hidden}, {args.budget:g} s of training per run on "
          f"{args.threads} thread(s), {len(seeds)} seed(s): medians; pairs right (버스/탔다, 달려갔다, 메론) over "
          f"all runs\n")
    test = f" test bits/char (first {args.eval_lines:,} nsmc test lines) |" if with_test else ""
    print(f"| output layer | tokens trained | valid bits/char |{test} pairs right |")
    print("|---|---:|---:|" + ("---:|" if with_test else "") + "---|")
    for r in rows:
        tested = f" {r['test']:.4f} |" if with_test else ""
        counts = " ".join(f"{ok}/{r['runs']}" for ok in r["pairs"])
        print(f"| {r['name']} | {r['tokens']:,.0f} | {r['valid']:.4f} |{tested} {counts} |")


if __name__ == "__main__":
    sys.exit(main())
