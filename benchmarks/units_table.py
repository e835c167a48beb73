"""Which unit for Korean? One row per unit (char, jamo, word, morph, spm 8k, spm 32k) on nsmc.

Trains on the first 100,000 lines of nsmc's train.txt and tests on test.txt. Per unit:
the modified Kneser-Ney n-gram whose order does best on valid.txt, its test bits per
character on the open-vocabulary basis (an OOV unit pays for being spelled out, see
rnnkit/spelling.py; the closed figure, which charges P(<unk>) only, is shown beside it),
the test OOV rate, the vocabulary and the model file's size, and whether it prefers the
right sentence of the three pairs (나는 버스를 탔다 > 나는 버스를 태운다; after 선생님이
교실로 부리나케: 달려갔다 > 잘려갔다; 메론을 먹는다 > 메롱을 먹는다), by the score `rnnkit
rank` prints (a tie is a miss). With --rnn, an RNN per unit too (H=512 and one epoch, as quality_rnn.py
trains nsmc; RNNME by default: sqrt(V) classes, order-6 direct connections in a 16M-entry
table learning by AdaGrad; --rnn-lines and --hidden make a quicker one).

    python benchmarks/units_table.py                                  # n-grams, ~25 min on 2 cores
    python benchmarks/units_table.py --rnn --rnn-lines 20000 --hidden 128   # and quick RNNs
    python benchmarks/units_table.py --max-lines 300 --orders 2 --rnn --hidden 8   # seconds

Reads ../shared/data/nsmc (or $RNNKIT_SHARED/data/nsmc); exits cleanly when it is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_support import data_dir, first_missing, positive_int, skip

TRAIN_LINES = 100_000
# unit name -> (rnnkit unit, SentencePiece vocabulary, n-gram orders tried on valid)
UNITS = {
    "char": ("char", None, (3, 4, 5, 6, 7)),
    "jamo": ("jamo", None, (5, 6, 7, 8, 9, 10)),
    "word": ("word", None, (2, 3, 4)),
    "morph": ("morph", None, (2, 3, 4, 5, 6)),
    "spm8k": ("spm", 8000, (2, 3, 4, 5, 6)),
    "spm32k": ("spm", 32000, (2, 3, 4, 5)),
}
CONTEXT = "선생님이 교실로 부리나케"
PAIRS = [(None, "나는 버스를 탔다", "나는 버스를 태운다"), (CONTEXT, "달려갔다", "잘려갔다"),
         (None, "메론을 먹는다", "메롱을 먹는다")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", default=",".join(UNITS), help="comma-separated rows to build")
    parser.add_argument("--max-lines", type=positive_int, default=None,
                        help="use only the first N lines of train, valid and test (a quick check)")
    parser.add_argument("--orders", default=None, help="n-gram orders to try for every unit (default: per unit)")
    parser.add_argument("--rnn", action="store_true", help="train an RNN per unit too")
    parser.add_argument("--rnn-lines", type=positive_int, default=None,
                        help="train the RNNs on the first N training lines only (a quicker run)")
    parser.add_argument("--hidden", type=positive_int, default=512)
    parser.add_argument("--epochs", type=positive_int, default=1)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--classes", default="auto", help="the RNNs' output classes (auto: sqrt V; 0: full softmax)")
    parser.add_argument("--direct-order", type=int, default=6, help="the RNNs' direct connections (RNNME); 0: none")
    parser.add_argument("--direct-size", type=positive_int, default=16_777_216, help="direct-connection table entries")
    parser.add_argument("--direct-optimizer", choices=("sgd", "adagrad"), default="adagrad",
                        help="how the direct table learns (AdaGrad: one epoch of 100k nsmc lines, char, H=512, "
                             "test 3.8993 bits/char on the first 3,000 lines against 4.0696 by SGD)")
    parser.add_argument("--direct-lr", type=float, default=0.3, help="the table's rate (AdaGrad's first step)")
    parser.add_argument("--out", type=Path, default=Path("units-models"), help="where models are written")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    names = args.units.split(",")
    unknown = [name for name in names if name not in UNITS]
    if unknown:
        parser.error(f"unknown unit {unknown[0]!r}; choose from {', '.join(UNITS)}")
    data = data_dir("nsmc")
    splits = [data / f"{split}.txt" for split in ("train", "valid", "test")]
    missing = first_missing(*splits)
    if missing:
        return skip(f"{missing} not found")

    from rnnkit.units import read_lines

    caps = (args.max_lines or TRAIN_LINES, args.max_lines, args.max_lines)
    train_lines, valid_lines, test_lines = (read_lines(path)[:cap] for path, cap in zip(splits, caps))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        row = {"unit": name, **ngram_row(name, train_lines, valid_lines, test_lines, args)}
        if args.rnn:
            row.update(rnn_row(name, row.pop("tokenizer"), train_lines, valid_lines, test_lines, args))
        row.pop("tokenizer", None)
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), file=sys.stderr, flush=True)
    print_table(rows, len(train_lines), len(test_lines), args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


def make_tokenizer(name: str, train_lines: list[str]):
    from rnnkit.units import Tokenizer
    unit, spm_vocab, _ = UNITS[name]
    return Tokenizer.train_spm(train_lines, spm_vocab) if spm_vocab else Tokenizer(unit)


def ngram_row(name: str, train_lines, valid_lines, test_lines, args) -> dict:
    """The best n-gram on valid: test bits/char (open and closed), OOV rate, size, pairs."""
    from rnnkit.ngram import NgramModel

    started = time.perf_counter()
    tokenizer = make_tokenizer(name, train_lines)
    # split once: the segmenters (Kiwi above all) cost more than the n-grams
    train_units, valid_units, test_units = (tokenizer.split_lines(lines)
                                           for lines in (train_lines, valid_lines, test_lines))
    orders = [int(o) for o in args.orders.split(",")] if args.orders else UNITS[name][2]
    best = None
    for order in orders:
        model = NgramModel.train(train_units, order=order, unit=tokenizer)
        valid = model.evaluate(valid_lines, valid_units)["bits_per_char"]
        print(f"{name} {order}-gram: valid {valid:.4f} bits/char", file=sys.stderr, flush=True)
        if best is None or valid < best[1]:
            best = (order, valid, model)
    order, valid, model = best
    path = args.out / f"nsmc.{name}.{order}gram.model"
    model.save(path)
    test = model.evaluate(test_lines, test_units)
    return {"tokenizer": tokenizer, "vocab": len(model.vocab), "ngram_order": order, "ngram_valid_bpc": valid,
            "ngram_test_bpc": test["bits_per_char"], "ngram_test_bpc_closed": test["bits_per_char_closed"],
            "test_oov_rate": test["oov"] / test["tokens"], "test_tokens": test["tokens"],
            "ngram_bytes": path.stat().st_size, "ngram_pairs": pairs(model),
            "ngram_seconds": round(time.perf_counter() - started, 1)}


def pairs(model) -> list[bool]:
    """Per pair, whether the model scores the right sentence strictly higher, by the score
    `rnnkit rank` sorts on (a tie, two OOV words costing P(<unk>) each, is a miss)."""
    from rnnkit.ranking import rank
    out = []
    for context, right, wrong in PAIRS:
        scores = {row["candidate"]: row["continuation_log10" if context else "log10"]
                  for row in rank(model, [right, wrong], context)}
        out.append(scores[right] > scores[wrong])
    return out


def rnn_row(name: str, tokenizer, train_lines, valid_lines, test_lines, args) -> dict:
    from rnnkit.train import TrainConfig, train

    lines = train_lines[:args.rnn_lines] if args.rnn_lines else train_lines
    classes = args.classes if args.classes == "auto" else int(args.classes)
    config = TrainConfig(unit=tokenizer.unit, hidden=args.hidden, bptt=64, batch=32, epochs=args.epochs,
                         optimizer="adam", lr=3e-3, clip=1.0, seed=1, threads=args.threads, patience=10,
                         classes=classes, direct_order=args.direct_order if classes else 0,
                         direct_size=args.direct_size, direct_optimizer=args.direct_optimizer,
                         direct_lr=args.direct_lr)
    path = args.out / f"nsmc.{name}.rnn.model"
    started = time.perf_counter()
    model = train(lines, valid_lines, config, output_path=path, tokenizer=tokenizer,
                  notify=lambda text: print(f"{name} RNN: {text}", file=sys.stderr, flush=True))
    trained = time.perf_counter() - started
    test = model.evaluate(test_lines)
    model.save(path, resumable=False)
    return {"rnn_lines": len(lines), "rnn_test_bpc": test["bits_per_char"],
            "rnn_test_bpc_closed": test["bits_per_char_closed"], "rnn_bytes": path.stat().st_size,
            "rnn_pairs": pairs(model), "rnn_train_seconds": round(trained, 1)}


def print_table(rows: list[dict], n_train: int, n_test: int, args) -> None:
    output = (f" RNNME ({args.classes} classes, direct order {args.direct_order}, {args.direct_size:,} entries, "
              f"{args.direct_optimizer} {args.direct_lr:g})"
              if args.classes != "0" and args.direct_order else f" RNN ({args.classes} classes)")
    rnn = (f";{output} H={args.hidden}, {args.epochs} epoch(s) on {rows[0]['rnn_lines']:,} lines, "
           f"{args.threads} thread(s)") if args.rnn else ""
    print(f"\nnsmc, trained on {n_train:,} lines, tested on {n_test:,}{rnn}. Bits per character on the "
          "open-vocabulary basis (closed: OOV units cost P(<unk>) only); pairs: 버스/탔다, 달려갔다, 메론\n")
    head = "| unit | vocab | test OOV | n-gram order | test bits/char | (closed) | model MB | pairs |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---|"
    if args.rnn:
        head += " RNN test bits/char | (closed) | RNN MB | RNN training s | RNN pairs |"
        rule += "---:|---:|---:|---:|---|"
    print(head)
    print(rule)
    for r in rows:
        line = (f"| {r['unit']} | {r['vocab']:,} | {100 * r['test_oov_rate']:.2f}% | {r['ngram_order']} "
                f"| {r['ngram_test_bpc']:.4f} | {r['ngram_test_bpc_closed']:.4f} | {r['ngram_bytes'] / 1e6:.1f} "
                f"| {marks(r['ngram_pairs'])} |")
        if args.rnn:
            line += (f" {r['rnn_test_bpc']:.4f} | {r['rnn_test_bpc_closed']:.4f} | {r['rnn_bytes'] / 1e6:.1f} "
                     f"| {r['rnn_train_seconds']:.0f} | {marks(r['rnn_pairs'])} |")
        print(line)


def marks(results: list[bool]) -> str:
    return f"{sum(results)}/3 " + "".join("✓" if ok else "✗" for ok in results)


if __name__ == "__main__":
    sys.exit(main())
