"""Quality check: rnnkit's char RNN against the PyTorch anchor and rnnkit's own n-grams.

Trains with the anchor's unit, hidden size and token budget (char, H=512, B=32, T=64,
clip 1.0, seed 1; Adam from 3e-3 with rnnkit's linear decay where the anchor keeps 2e-3), then reports valid/test bits per character,
training wall time and tokens/s, beside the anchor's published figures
(../shared/reference/pytorch/README.md) and the best character n-gram rnnkit builds
from the same lines (order chosen on valid).

    python benchmarks/quality_rnn.py tinyshakespeare            # 3 epochs, independent lines
    python benchmarks/quality_rnn.py tinyshakespeare --stream   # state carried across lines
    python benchmarks/quality_rnn.py nsmc                       # first 100,000 lines, 1 epoch
    python benchmarks/quality_rnn.py nsmc --max-lines 300 --hidden 8 --epochs 1 --ngram-orders 3  # seconds
    python benchmarks/quality_rnn.py nsmc --classes auto --direct-order 6 --direct-size 16777216   # RNNME
    python benchmarks/quality_rnn.py nsmc --train-lines 200000 --eval-lines 3000 --time-budget 420 \
        --hidden 256 --classes auto --direct-order 6 --direct-size 16777216 --ngram-orders 6

Reads ../shared/data (or $RNNKIT_SHARED/data); exits cleanly when it is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_support import data_dir, first_missing, positive_int, skip

ANCHOR_TEST_BPC = {"tinyshakespeare": 2.4937, "nsmc": 4.3166}
ANCHOR_VALID_BPC = {"tinyshakespeare": 2.2978, "nsmc": 4.3190}
SETUPS = {"tinyshakespeare": {"epochs": 3, "max_lines": None}, "nsmc": {"epochs": 1, "max_lines": 100_000}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=sorted(SETUPS))
    parser.add_argument("--stream", action="store_true", help="carry the state across lines")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--hidden", type=positive_int, default=512)
    parser.add_argument("--epochs", type=positive_int, default=None)
    parser.add_argument("--max-lines", type=positive_int, default=None,
                        help="use only the first N lines of train, valid and test (a quick check; default: "
                             "every line, except nsmc's training lines: the first 100,000)")
    parser.add_argument("--train-lines", type=positive_int, default=None,
                        help="the first N training lines (overrides --max-lines and the default for train)")
    parser.add_argument("--eval-lines", type=positive_int, default=None,
                        help="the first N lines of valid and test (overrides --max-lines for them)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop training after this many seconds (Adam's decay then follows the time)")
    parser.add_argument("--classes", type=classes_arg, default=0,
                        help="output classes, or auto (sqrt of the vocabulary size); 0: full softmax")
    parser.add_argument("--direct-order", type=int, default=0,
                        help="order of the direct connections (RNNME; needs --classes); 0: none")
    parser.add_argument("--direct-size", type=int, default=0, help="entries of the direct-connection table")
    parser.add_argument("--direct-lr", type=float, default=None,
                        help="the table's rate per token [default: TrainConfig's, 0.03 for sgd (0.1 did better "
                             "for one epoch of nsmc), 0.3 for adagrad]")
    parser.add_argument("--direct-optimizer", choices=("sgd", "adagrad"), default="sgd",
                        help="how the table is updated: sgd, or adagrad (per-entry rates)")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="Adam's starting rate, decayed linearly to 5%% over the run")
    parser.add_argument("--average", type=float, default=0.0,
                        help="decay of the moving average of the weights that the model keeps (0: off)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="decoupled weight decay of the matrices")
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--bptt", type=positive_int, default=64)
    parser.add_argument("--ngram-orders", default="3,4,5,6,7", help="char n-gram orders to try")
    parser.add_argument("--out", type=Path, default=Path("quality-models"), help="where models are written")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    data = data_dir(args.corpus)
    splits = [data / f"{split}.txt" for split in ("train", "valid", "test")]
    missing = first_missing(*splits)
    if missing:
        return skip(f"{missing} not found")

    from rnnkit.units import read_lines
    from rnnkit.train import TrainConfig, train

    setup = SETUPS[args.corpus]
    eval_cap = args.eval_lines or args.max_lines
    caps = (args.train_lines or args.max_lines or setup["max_lines"], eval_cap, eval_cap)
    train_lines, valid_lines, test_lines = (read_lines(path)[:cap] for path, cap in zip(splits, caps))
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "stream" if args.stream else "independent"
    model_path = args.out / f"{args.corpus}.{mode}.rnn.model"
    config = TrainConfig(unit="char", hidden=args.hidden, bptt=args.bptt, batch=args.batch,
                         epochs=args.epochs or setup["epochs"], optimizer="adam", lr=args.lr, clip=1.0,
                         seed=1, threads=args.threads, stream=args.stream, patience=10,
                         average=args.average, weight_decay=args.weight_decay, time_budget=args.time_budget,
                         classes=args.classes, direct_order=args.direct_order, direct_size=args.direct_size,
                         direct_optimizer=args.direct_optimizer, direct_lr=args.direct_lr)
    started = time.perf_counter()
    model = train(train_lines, valid_lines, config, output_path=model_path,
                  notify=lambda text: print(text, file=sys.stderr, flush=True))
    wall = time.perf_counter() - started
    epochs = model.record["epochs"]
    tokens = sum(e["tokens"] for e in epochs)
    result = {
        "corpus": args.corpus, "mode": mode, "hidden": args.hidden, "threads": args.threads, "lr": args.lr,
        "average": args.average, "weight_decay": args.weight_decay, "batch": args.batch, "bptt": args.bptt,
        **model.output_settings(), "direct_lr": config.direct_rate(),
        "direct_optimizer": config.direct_optimizer, "time_budget": args.time_budget,
        "epochs": len(epochs),
        "max_lines": args.max_lines, "train_lines": len(train_lines), "eval_lines": eval_cap,
        "tokens_seen": tokens,
        "train_wall_s": round(wall, 1),
        "train_tokens_per_s": round(tokens / sum(e["seconds"] for e in epochs)),
        "rnn_valid_bpc": model.evaluate(valid_lines)["bits_per_char"],
        "rnn_test_bpc": model.evaluate(test_lines)["bits_per_char"],
        "anchor_valid_bpc": ANCHOR_VALID_BPC[args.corpus], "anchor_test_bpc": ANCHOR_TEST_BPC[args.corpus],
        "model": str(model_path),
    }
    ngram = best_ngram(train_lines, valid_lines, test_lines, args)
    result.update({key: value for key, value in ngram.items() if key != "model"})
    result.update(mixture(model, ngram["model"], valid_lines, test_lines, args))
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


def classes_arg(text: str):
    """--classes: a count or auto, as TrainConfig takes it."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of classes or auto, got {text!r}") from None


def best_ngram(train_lines, valid_lines, test_lines, args) -> dict:
    """The char n-gram (modified KN) whose order does best on valid."""
    from rnnkit.ngram import NgramModel

    best = None
    for order in (int(o) for o in args.ngram_orders.split(",")):
        model = NgramModel.train(train_lines, order=order, smoothing="kn", unit="char")
        valid = model.evaluate(valid_lines)["bits_per_char"]
        print(f"char {order}-gram kn: valid {valid:.4f} bits/char", file=sys.stderr, flush=True)
        if best is None or valid < best[1]:
            best = (order, valid, model)
    order, valid, model = best
    path = args.out / f"{args.corpus}.char{order}.ngram.model"
    model.save(path)
    return {"ngram_order": order, "ngram_valid_bpc": valid, "model": model,
            "ngram_test_bpc": model.evaluate(test_lines)["bits_per_char"], "ngram_model": str(path)}


def mixture(rnn, ngram, valid_lines, test_lines, args) -> dict:
    """The RNN and the n-gram interpolated token by token, the weight tuned on valid (EM)."""
    from rnnkit.mix import tune_weights

    mixed, _, _ = tune_weights([rnn, ngram], valid_lines)
    path = args.out / f"{args.corpus}.rnn+ngram.model"
    mixed.save(path)
    return {"mix_weights": [round(w, 4) for w in mixed.weights], "mix_model": str(path),
            "mix_valid_bpc": mixed.evaluate(valid_lines)["bits_per_char"],
            "mix_test_bpc": mixed.evaluate(test_lines)["bits_per_char"]}


def print_table(r: dict) -> None:
    evaluated = f"first {r['eval_lines']:,} lines of" if r["eval_lines"] else "all of"
    capped = f", {r['train_lines']:,} training lines, {evaluated} valid and test"
    output = ""
    if r.get("classes"):
        output = f", {r['classes']} classes" + (f", direct order {r['direct_order']} ({r['direct_size']:,} entries)"
                                               if r["direct_order"] else "")
    print(f"\n{r['corpus']} ({r['mode']} lines{capped}), char unit, H={r['hidden']}{output}, {r['epochs']} epoch(s), "
          f"{r['tokens_seen']:,} tokens seen, {r['threads']} thread(s): training {r['train_wall_s']:.0f} s, "
          f"{r['train_tokens_per_s']:,} tokens/s\n")
    print("| model | valid bits/char | test bits/char |")
    print("|---|---:|---:|")
    print(f"| PyTorch anchor (published) | {r['anchor_valid_bpc']:.4f} | {r['anchor_test_bpc']:.4f} |")
    print(f"| rnnkit RNN | {r['rnn_valid_bpc']:.4f} | {r['rnn_test_bpc']:.4f} |")
    print(f"| rnnkit char {r['ngram_order']}-gram KN | {r['ngram_valid_bpc']:.4f} | {r['ngram_test_bpc']:.4f} |")
    weights = "/".join(f"{w:.2f}" for w in r["mix_weights"])
    print(f"| RNN + {r['ngram_order']}-gram (weights {weights}, tuned on valid) | {r['mix_valid_bpc']:.4f} "
          f"| {r['mix_test_bpc']:.4f} |")


if __name__ == "__main__":
    sys.exit(main())
