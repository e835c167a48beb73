"""Reproduce the RNN language-model paper's Penn Treebank table with one command.

Mikolov's PhD thesis (Table 4.1) and Interspeech 2011 report test perplexity on
PTB: Kneser-Ney 3-gram 148.3, 5-gram 141.2, a single RNN LM 124.7, and the RNN
linearly interpolated with the KN5 model 105.7. This script trains all of them on
../shared/data/ptb/ptb.train.txt (word unit; the data's literal `<unk>` is the unknown
word and is counted like any word), tunes the mixture weight on ptb.valid.txt, and
prints test perplexities beside the paper's, with training time and tokens/s.

    python benchmarks/ptb_table.py                       # defaults below: RNN test 110.72, + KN5 103.15
    python benchmarks/ptb_table.py --epochs 7 --threads 2           # a longer plan on 2 threads
    python benchmarks/ptb_table.py --rnn-model ptb-models/ptb.rnn.model  # table of a trained RNN
    python benchmarks/ptb_table.py --rnn-model a.model --also-rnn b.model  # + a row mixing both with KN5
    python benchmarks/ptb_table.py --threads 2 --rnnme            # + RNNME and RNNME + KN5 rows
    python benchmarks/ptb_table.py --threads 2 --rnnme --direct-optimizer adagrad --direct-lr 0.1 \
        --rnnme-weight-decay 0.5 --rnnme-epochs 7 --rnn-model ptb-models/ptb.rnn.model   # RNNME's best settings
    python benchmarks/ptb_table.py --max-lines 500 --hidden 8 --epochs 1 --out /tmp/ptb  # seconds

Reads ../shared/data/ptb (or $RNNKIT_SHARED/data/ptb); exits cleanly when it is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_support import data_dir, first_missing, positive_int, skip

PAPER = {"KN 3-gram": 148.3, "KN 5-gram": 141.2, "RNN": 124.7, "RNN + KN5": 105.7}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=positive_int, default=256)
    parser.add_argument("--bptt", type=positive_int, default=35)
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--epochs", type=positive_int, default=5,
                        help="the planned run: Adam's rate decays linearly over it (on valid, 4-5 epochs "
                             "beat 7 and every longer plan tried: 130.13 / 130.28 against 131.46 at dropout 0.15)")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="dropout on the input rows and before the output layer (valid without weight decay 129.50; 0.15: 130.28)")
    parser.add_argument("--average", type=float, default=0.999,
                        help="decay of the moving average of the weights that the model keeps (0: off)")
    parser.add_argument("--weight-decay", type=float, default=0.3,
                        help="decoupled weight decay of the matrices (AdamW's); chosen on valid")
    parser.add_argument("--patience", type=int, default=None,
                        help="epochs without a better validation perplexity before stopping "
                             "(TrainConfig's default: 2; the learning rate still decays over the whole budget)")
    parser.add_argument("--embedding-lr-scale", type=float, default=None,
                        help="W_xh's learning rate over the others' (TrainConfig's default: 10 with adam)")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                        help="carry the RNN's state across sentences in training and evaluation, as the "
                             "paper's RNNLM does (the n-grams score sentences independently either way); "
                             "on valid 131.46 against 132.88 with sentences independent (7 epochs)")
    parser.add_argument("--time-budget", type=float, default=7200.0,
                        help="seconds of RNN training at most (the 5 epochs take ~15 min on 1 thread, ~9 min on 2)")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--max-lines", type=positive_int, default=None,
                        help="use only the first N lines of train, valid and test (a quick check; default: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("ptb-models"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rnn-model", type=Path, default=None,
                        help="evaluate and mix this trained RNN instead of training one "
                             "(its hyperparameters and training time come from its record)")
    parser.add_argument("--also-rnn", type=Path, action="append", default=[],
                        help="another trained RNN (repeatable): adds a row mixing every RNN with KN5")
    parser.add_argument("--rnnme", action="store_true",
                        help="also train RNNME (the same RNN with sqrt(V) output classes and direct connections) "
                             "and add its rows, with its epoch time against the RNN's")
    parser.add_argument("--direct-order", type=int, default=4, help="RNNME's direct connections: n-gram order")
    parser.add_argument("--direct-size", type=positive_int, default=16_777_216, help="RNNME's table entries")
    parser.add_argument("--direct-lr", type=float, default=None,
                        help="RNNME's table rate per token (TrainConfig's default: 0.03 sgd, 0.3 adagrad)")
    parser.add_argument("--direct-optimizer", choices=["sgd", "adagrad"], default="sgd",
                        help="how RNNME's table learns (TrainConfig.direct_optimizer)")
    parser.add_argument("--direct-l2", type=float, default=None,
                        help="RNNME's table L2 per use of an entry (TrainConfig's default: 1e-6)")
    parser.add_argument("--rnnme-epochs", type=positive_int, default=None,
                        help="RNNME's planned run (default: --epochs; its epoch costs a fraction of the RNN's)")
    parser.add_argument("--rnnme-weight-decay", type=float, default=None,
                        help="RNNME's weight decay (default: --weight-decay)")
    parser.add_argument("--rnnme-classes", type=positive_int, default=None,
                        help="RNNME's output classes (default: sqrt(V), RNNLM's rule; more classes cost more per "
                             "step and factor the softmax less)")
    parser.add_argument("--rnnme-hidden", type=positive_int, default=None,
                        help="RNNME's hidden size (default: --hidden; its class-factored output lets a larger H "
                             "cost less than the RNN's full softmax)")
    args = parser.parse_args()
    splits = [data_dir("ptb") / f"ptb.{split}.txt" for split in ("train", "valid", "test")]
    missing = first_missing(*splits)
    if missing:
        return skip(f"{missing} not found")

    from rnnkit.loader import load
    from rnnkit.mix import tune_weights
    from rnnkit.ngram import NgramModel
    from rnnkit.units import read_lines
    from rnnkit.train import train

    train_lines, valid_lines, test_lines = (read_lines(path)[:args.max_lines] for path in splits)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []

    def note(text):
        print(text, file=sys.stderr, flush=True)

    ngrams = {}
    for order in (3, 5):
        started = time.perf_counter()
        model = NgramModel.train(train_lines, order=order, smoothing="kn", unit="word")
        seconds = time.perf_counter() - started
        model.save(args.out / f"ptb.kn{order}.model")
        ngrams[order] = model
        ppl = model.evaluate(test_lines)["perplexity"]
        note(f"KN {order}-gram: test perplexity {ppl:.2f} ({seconds:.1f} s)")
        rows.append({"model": f"KN {order}-gram", "test_ppl": ppl, "train_s": seconds})

    from rnnkit import kernel
    kernel.set_num_threads(args.threads)  # evaluation and tuning too, not only training
    if args.rnn_model:
        rnn = load(args.rnn_model)
        if getattr(rnn, "model_type", None) != "rnn":
            print(f"error: {args.rnn_model} is not an RNN model file", file=sys.stderr)
            return 1
    else:
        rnn = train(train_lines, valid_lines, rnn_config(args), output_path=args.out / "ptb.rnn.model", notify=note)
    rows += rnn_rows("RNN", rnn, ngrams[5], valid_lines, test_lines, args.out, note)
    if args.rnnme:
        table = {name: value for name, value in (("direct_lr", args.direct_lr), ("direct_l2", args.direct_l2))
                 if value is not None}
        config = rnn_config(args, classes=args.rnnme_classes or "auto", direct_order=args.direct_order,
                            direct_size=args.direct_size, direct_optimizer=args.direct_optimizer, **table)
        config.epochs = args.rnnme_epochs or args.epochs
        if args.rnnme_weight_decay is not None:
            config.weight_decay = args.rnnme_weight_decay
        config.hidden = args.rnnme_hidden or args.hidden
        rnnme = train(train_lines, valid_lines, config, output_path=args.out / "ptb.rnnme.model", notify=note)
        rows += rnn_rows("RNNME", rnnme, ngrams[5], valid_lines, test_lines, args.out, note)
    if args.also_rnn:
        others = [load(path) for path in args.also_rnn]
        for path, other in zip(args.also_rnn, others):
            note(f"{path}: test perplexity {other.evaluate(test_lines)['perplexity']:.2f}")
        mixture, history, _ = tune_weights([rnn, *others, ngrams[5]], valid_lines)
        rows.append({"model": f"{1 + len(others)} RNNs + KN5", "test_ppl": mixture.evaluate(test_lines)["perplexity"],
                     "weights": mixture.weights, "valid_ppl": history[-1]})

    h = rnn.hyper
    mode = "state carried across sentences" if rnn.stream else "sentences independent"
    capped = f" (first {args.max_lines:,} lines of each split)" if args.max_lines else ""
    print(f"\nPenn Treebank{capped} test perplexity; RNN: {rnn.activation}, H={rnn.hidden}, {h.get('optimizer')}, "
          f"bptt {h.get('bptt')}, batch {h.get('batch')}, dropout {h.get('dropout')}, "
          f"weight decay {h.get('weight_decay', 0.0)}, {mode}, "
          f"{len(rnn.record['epochs'])} epochs\n")
    if args.rnnme:
        o = rnnme.output_settings()
        me = rnnme.hyper
        print(f"RNNME: the same RNN{f' at H={rnnme.hidden}' if rnnme.hidden != rnn.hidden else ''} "
              f"with {o['classes']} output classes and direct connections of order "
              f"{o['direct_order']} in a {o['direct_size']:,}-entry table ({me['direct_optimizer']}, rate "
              f"{me['direct_lr'] if me['direct_lr'] is not None else 'default'}, L2 {me['direct_l2']}); "
              f"weight decay {me['weight_decay']}, {len(rnnme.record['epochs'])} epochs\n")
    print("| model | paper | rnnkit | training time | tokens/s | s per epoch |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        train_s = f"{row['train_s']:.0f} s" if "train_s" in row else "-"
        speed = f"{row['tokens_per_s']:,.0f}" if "tokens_per_s" in row else "-"
        per_epoch = f"{row['train_s'] / row['epochs']:.1f}" if "epochs" in row else "-"
        extra = f" (weights {'/'.join(f'{w:.2f}' for w in row['weights'])})" if "weights" in row else ""
        print(f"| {row['model']}{extra} | {PAPER.get(row['model'], '-')} | {row['test_ppl']:.2f} | {train_s} "
              f"| {speed} | {per_epoch} |")
    timed = {row["model"]: row["train_s"] / row["epochs"] for row in rows if "epochs" in row}
    if "RNNME" in timed:
        sizes = f" (RNNME H={rnnme.hidden}, RNN H={rnn.hidden})" if rnnme.hidden != rnn.hidden else ""
        print(f"\nAn RNNME epoch takes {timed['RNN'] / timed['RNNME']:.1f}x less time than an RNN epoch{sizes}.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


def rnn_config(args, **output):
    """The table's RNN settings, with `output` (classes, direct connections) on top."""
    from rnnkit.train import TrainConfig
    config = TrainConfig(unit="word", hidden=args.hidden, bptt=args.bptt, batch=args.batch, epochs=args.epochs,
                         optimizer=args.optimizer, lr=args.lr, clip=args.clip, seed=args.seed,
                         threads=args.threads, time_budget=args.time_budget, dropout=args.dropout,
                         average=args.average, weight_decay=args.weight_decay,
                         stream=args.stream, embedding_lr_scale=args.embedding_lr_scale, **output)
    if args.patience is not None:
        config.patience = args.patience
    return config


def rnn_rows(name: str, rnn, kn5, valid_lines, test_lines, out: Path, note) -> list[dict]:
    """The RNN's row and its mixture-with-KN5 row (the weight tuned on valid)."""
    from rnnkit.mix import tune_weights
    epochs = rnn.record["epochs"]
    seconds = sum(e["seconds"] for e in epochs)  # training epochs (validation passes excluded)
    ppl = rnn.evaluate(test_lines)["perplexity"]
    note(f"{name}: test perplexity {ppl:.2f}")
    mixture, history, _ = tune_weights([rnn, kn5], valid_lines)
    mixture.save(out / f"ptb.{name.lower()}+kn5.model")
    return [{"model": name, "test_ppl": ppl, "train_s": seconds, "epochs": len(epochs),
             "tokens_per_s": sum(e["tokens"] for e in epochs) / seconds,
             "valid_ppl": rnn.evaluate(valid_lines)["perplexity"]},
            {"model": f"{name} + KN5", "test_ppl": mixture.evaluate(test_lines)["perplexity"],
             "weights": mixture.weights, "valid_ppl": history[-1]}]


if __name__ == "__main__":
    sys.exit(main())
