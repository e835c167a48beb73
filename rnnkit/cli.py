"""The `rnnkit` command line: train, score, eval, rank, sample, info (and demo).

Parsing, validation and printing only; the modelling lives in the library. Heavy
modules (NumPy, the C kernel) are imported inside the commands so `rnnkit --help`
and `rnnkit score` start fast. Results go to stdout (`--json`: one JSON document),
progress and notes to stderr. Library errors become one-line `Error: ...` messages.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from pathlib import Path

import click

from . import __version__

DEFAULT_MODEL = "rnnkit.model"
# RNNME by default. On the bundled sample, 120 s on 2 threads (medians of 4 runs on a
# shared machine), sqrt(V) classes with direct connections of order 6 in a 4M-entry table
# reached valid 4.204 bits/char, the plain RNN (--classes 0) 4.316, classes alone 4.439;
# order 4 did as well (4.208) but ranked the lecture's 달려갔다/잘려갔다 pair wrong once.
# The default run (10 epochs) takes 58 s against the plain RNN's 103 s, valid 4.167 vs
# 4.307. On 100k nsmc lines order 6 beat 4 and 3; such corpora gain from --direct-size 16M.
DEFAULT_CLASSES = "auto"
DEFAULT_DIRECT_ORDER = 6
DEFAULT_DIRECT_SIZE = "4M"
MODEL_ENV = "RNNKIT_MODEL"
MAX_THREADS = 1024
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def default_model_path() -> str:
    return os.environ.get(MODEL_ENV, DEFAULT_MODEL)


def library_errors(func):
    """Turn rnnkit's own exceptions (and Ctrl-C) into one-line click errors."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from .errors import RnnkitError
        try:
            return func(*args, **kwargs)
        except RnnkitError as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"input is not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return wrapper


def mpi_failures(func):
    """Under mpiexec, the failure rules of rnnkit.mpi: rank 0 reports what every rank
    meets; a failure on one rank ends them all. Alone, nothing changes (no mpi4py)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from . import mpi
        with mpi.failures(mpi.world(), lambda text: click.echo(text, err=True)):
            return func(*args, **kwargs)
    return wrapper


def model_option(func):
    return click.option("-m", "--model", "model_path", type=click.Path(dir_okay=False),
                        default=default_model_path, show_default=f"{DEFAULT_MODEL} or ${MODEL_ENV}",
                        help="Model file: rnnkit model or any ARPA file.")(func)


def models_option(func):
    """-m given several times mixes the models (with --weights, default equal)."""
    func = click.option("--weights", default=None,
                        help="Mixture weights for several -m models, e.g. 0.6,0.4 [default: equal].")(func)
    return click.option("-m", "--model", "model_paths", type=click.Path(dir_okay=False), multiple=True,
                        help=f"Model file: rnnkit model or any ARPA file [default: {DEFAULT_MODEL} or "
                             f"${MODEL_ENV}]. Repeat to mix models.")(func)


def threads_option(func):
    """--threads sets the kernel's thread count as soon as it is parsed (training,
    scoring and tuning all run through the kernel), so commands never see it."""
    def set_threads(ctx, param, value):
        if value is not None:
            from . import kernel
            kernel.set_num_threads(value)
    return click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, expose_value=False,
                        callback=set_threads,
                        help="Threads of the RNN kernel [default: OPENBLAS_NUM_THREADS or the CPU count].")(func)


class ClassCount(click.ParamType):
    """--classes: a number of classes (0: the full softmax) or `auto`."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number < 0:
            self.fail(f"expected a number of classes >= 0 or 'auto', got {value!r}", param, ctx)
        return number


class TableSize(click.ParamType):
    """--direct-size: a number of table entries, with an optional K, M or G (2^10, 2^20,
    2^30 entries)."""

    name = "ENTRIES"
    UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        text = str(value).strip().upper()
        digits, unit = (text[:-1], text[-1]) if text[-1:] in self.UNITS else (text, "")
        if not (digits.isascii() and digits.isdigit()):
            self.fail(f"expected a number of entries like 1048576 or 1M (K, M, G: 2^10, 2^20, 2^30), "
                      f"got {value!r}", param, ctx)
        return int(digits) * self.UNITS[unit]


def parse_weights(text: str | None, count: int) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint="--weights") from None


def model_files(model_paths: tuple[str, ...]) -> list[str]:
    """The model files -m names (the default model file without -m)."""
    return list(model_paths) or [default_model_path()]


def load_models(model_paths: tuple[str, ...], weights: str | None):
    """One model, or the mixture of several (-m repeated)."""
    paths = model_files(model_paths)
    if len(paths) == 1:
        if weights is not None:
            raise click.BadParameter("--weights needs two or more -m models", param_hint="--weights")
        return load_model(paths[0])
    from .mix import MixModel
    return MixModel([load_model(p) for p in paths], parse_weights(weights, len(paths)))


def cluster_options(func):
    """--workers / --scheduler: run on Dask (rnnkit.sharding); neither: Dask is not imported."""
    func = click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="Shard the work over the Dask cluster with this scheduler (its workers must "
                             "see the files at the same paths).")(func)
    return click.option("--workers", type=click.IntRange(1, MAX_THREADS), default=None,
                        help="Shard the work over a local Dask cluster of this many processes.")(func)


def sharded(workers: int | None, scheduler: str | None):
    """The Dask client the options ask for, or None."""
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    if workers is None and scheduler is None:
        return None
    from .sharding import connect
    return connect(workers, scheduler)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def emit_json(document) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=1))


def load_model(model_path: str):
    from . import loader
    if not Path(model_path).exists():
        hint = " (train one with `rnnkit train`, or pass -m)" if model_path == default_model_path() else ""
        raise click.ClickException(f"model file not found: {model_path}{hint}")
    return loader.load(model_path)


def gather_sentences(sentences: tuple[str, ...], file_path: str | None) -> list[str]:
    """Sentences from arguments, from --file, or from stdin when the only argument is '-'."""
    from .units import read_lines, read_text_lines
    if file_path is not None:
        if sentences:
            raise click.UsageError("give sentences as arguments or with --file, not both")
        return [line for line in read_lines(file_path) if line.strip()]
    if sentences == ("-",):
        lines = read_text_lines([sys.stdin.buffer.read()], name="standard input")
        return [line for line in lines if line.strip()]
    if not sentences:
        raise click.UsageError("no sentences: give them as arguments, with --file, or '-' for stdin")
    return read_text_lines(sentences, name="arguments")


@click.group(context_settings=CONTEXT)
@click.version_option(version=__version__, prog_name="rnnkit")
def cli():
    """rnnkit: n-gram and tanh-RNN language models, Korean first.

    \b
    Example:
      rnnkit train                       # train on the bundled Korean sample
      rnnkit score "나는 버스를 탔다"
      rnnkit rank "나는 버스를 탔다" "나는 버스를 태운다"
    """


# ----------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------

def memory_size(ctx, param, value):
    """--memory as bytes (lmplz's sizes: 500M, 2G, 80%)."""
    if value is None:
        return None
    from .errors import ConfigError
    from .ngram_build import parse_size
    try:
        return parse_size(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def corpus_sources(patterns: tuple[str, ...]) -> list:
    """Files, expanded globs ('c/*.txt', sorted) and '-' (standard input), in order."""
    import glob
    sources = []
    for pattern in patterns:
        if pattern == "-":
            if sys.stdin.buffer in sources:
                raise click.BadParameter("'-' (standard input) can be given once", param_hint="CORPUS")
            sources.append(sys.stdin.buffer)
        elif glob.has_magic(pattern) and not Path(pattern).exists():
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise click.BadParameter(f"no file matches {pattern}", param_hint="CORPUS")
            sources.extend(matches)
        else:
            sources.append(pattern)
    return sources


def corpus_blocks(sources: list):
    """The lines of every source, in order, a block at a time (units.read_line_blocks)."""
    from .units import read_line_blocks
    for source in sources:
        yield from read_line_blocks(source)


def read_corpus(sources: list) -> list[str]:
    """The lines of every source, in order, all in memory (a SentencePiece model trains on them)."""
    return [line for block in corpus_blocks(sources) for line in block]


@cli.command(context_settings=CONTEXT)
@click.argument("corpus", nargs=-1)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=default_model_path,
              show_default=f"{DEFAULT_MODEL} or ${MODEL_ENV}", help="Model file to write.")
@click.option("--type", "model_type", type=click.Choice(["rnn", "ngram"]), default="rnn", show_default=True,
              help="Model family.")
@click.option("--unit", type=click.Choice(["char", "word", "jamo", "morph", "spm"]), default="char",
              show_default=True,
              help="Modelling unit, for both families: Korean words are too sparse for word n-grams "
                   "(16% of nsmc's test words are unseen), so syllables are the default; --unit word "
                   "reproduces KenLM's models; morph: Kiwi's morphemes; spm: SentencePiece pieces "
                   "(morph and spm: pip install 'rnnkit[ko]').")
@click.option("--spm-vocab", type=click.IntRange(1, 1_000_000), default=None,
              help="--unit spm: train a SentencePiece model of this many pieces on the corpus "
                   "[default: 8000].")
@click.option("--spm-model", "spm_model", type=click.Path(dir_okay=False), default=None,
              help="--unit spm: use this SentencePiece model (a .model file) instead; it is stored "
                   "in the rnnkit model file.")
@click.option("--spm-type", type=click.Choice(["unigram", "bpe"]), default="unigram", show_default=True,
              help="--unit spm: the kind of SentencePiece model to train.")
@click.option("--order", type=click.IntRange(1), default=3, show_default=True, help="n-gram order.")
@click.option("--smoothing", type=click.Choice(["kn", "wb", "addk", "mle"]), default="kn", show_default=True,
              help="n-gram smoothing.")
@click.option("--k", "addk", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Add-k constant (k=1 is Laplace).")
@click.option("--prune", type=str, default=None, help="n-gram count cut-offs per order, e.g. 0,1,1.")
@click.option("--arpa", type=click.Path(dir_okay=False), default=None, help="Also write an n-gram model as ARPA.")
@click.option("--memory", type=str, default=None, callback=memory_size, metavar="SIZE",
              help="n-gram counting memory, e.g. 500M, 2G or 50% (lmplz's -S): beyond it counts spill to "
                   "sorted runs in --temp-dir [default: no limit].")
@click.option("--temp-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where --memory spills (lmplz's -T), and where RNN training encodes the corpus to a "
                   "memory-mapped id file [default: the system's temporary directory].")
@cluster_options
@click.option("--hidden", type=click.IntRange(1), default=128, show_default=True, help="RNN hidden size.")
@click.option("--bptt", type=click.IntRange(1), default=32, show_default=True, help="Steps of truncated BPTT.")
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True, help="Sequences per batch.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True, help="Maximum epochs.")
@click.option("--time-budget", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop training after this many seconds.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True,
              help="adam, or sgd with the RNNLM halving schedule.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Learning rate [default: 0.002 adam, 0.5 sgd].")
@click.option("--clip", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Gradient clipping by global norm (0: off).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Dropout on the input rows and before the output layer.")
@click.option("--average", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Keep a moving average of the weights with this decay per step (e.g. 0.999) and "
                   "use it as the model (0: off).")
@click.option("--weight-decay", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Decoupled weight decay: each step the weight matrices shrink by lr times this "
                   "(AdamW's; e.g. 0.05).")
@click.option("--classes", type=ClassCount(), default=DEFAULT_CLASSES, show_default=True,
              help="Output classes (RNNLM's frequency classes): each step computes P(class) P(unit | class), "
                   "C + |class| outputs instead of one per unit; auto: the square root of the vocabulary "
                   "size. 0: the full softmax, the lecture's RNN (no direct connections): --classes 0.")
@click.option("--direct-order", type=click.IntRange(0), default=DEFAULT_DIRECT_ORDER, show_default=True,
              help="Direct connections (RNNME): n-gram features of up to this many units (at most 10; the "
                   "last n-1 inputs), hashed into a table whose weights are added to the outputs. Needs "
                   "--classes. 0: none.")
@click.option("--direct-size", type=TableSize(), default=DEFAULT_DIRECT_SIZE, show_default=True,
              help="Entries of the direct-connection table, 4 bytes each: a number, or with K, M or G "
                   "(2^10, 2^20, 2^30 entries), e.g. 4M = 16 MiB. 0: no direct connections.")
@click.option("--direct-optimizer", type=click.Choice(["sgd", "adagrad"]), default="sgd", show_default=True,
              help="How the direct table learns: sgd, one rate for every entry, or adagrad, a rate per entry "
                   "that shrinks as the entry is used (rare n-grams keep learning, frequent ones settle).")
@click.option("--direct-lr", type=click.FloatRange(0), default=None,
              help="The direct table's rate per token [default: 0.03 sgd, 0.3 adagrad].")
@click.option("--min-count", type=click.IntRange(1), default=1, show_default=True,
              help="Rarer units become <unk>.")
@click.option("--max-vocab", type=click.IntRange(4), default=None,
              help="Keep the most frequent units only (the count includes <unk>, <s> and </s>).")
@click.option("--valid", "valid_path", type=click.Path(dir_okay=False), default=None,
              help="Validation text [default: every 20th line of the corpus].")
@click.option("--stream", is_flag=True,
              help="Carry the RNN state across lines (one text stream): eval, mix --tune and mixtures then "
                   "read a file's lines in order with the state running on; score and rank still start "
                   "each sentence at <s>.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=1, show_default=True, help="Random seed.")
@threads_option
@click.option("--checkpoint-minutes", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Also save the RNN this often within an epoch (0: after each epoch only). Ctrl-C or "
                   "SIGTERM saves it after the current step too.")
@click.option("--resume", is_flag=True,
              help="Continue training the model in --output, where it stopped, with the settings it was "
                   "trained with (options given now override them).")
@json_option
@library_errors
@mpi_failures
def train(corpus, output, model_type, unit, spm_vocab, spm_model, spm_type, order, smoothing, addk, prune,
          arpa, memory, temp_dir, workers, scheduler, hidden, bptt, batch, epochs, time_budget, optimizer, lr,
          clip, dropout, average, weight_decay, classes, direct_order, direct_size, direct_optimizer, direct_lr,
          min_count, max_vocab, valid_path, stream, seed, checkpoint_minutes, resume, as_json):
    """Train a language model on text files (one sentence per line).

    CORPUS: files (plain or gzip), globs ('c/*.txt') and '-' for standard input, read in turn.

    \b
    Example:
      rnnkit train                                  # bundled Korean sample, RNNME
      rnnkit train corpus.txt -o ko.model --hidden 256 --epochs 5
      rnnkit train corpus.txt --classes 0           # the lecture's plain RNN (full softmax)
      rnnkit train corpus.txt --type ngram --order 5 --arpa ko.arpa
      rnnkit train corpus.txt --type ngram --unit morph --order 4 -o morph.model
      rnnkit train corpus.txt --unit spm --spm-vocab 8000 -o spm.model
      rnnkit train a.txt b.txt.gz 'c/*.txt' - --type ngram --memory 1G --temp-dir /scratch
    """
    from . import mpi
    from .files import check_outputs
    from .units import read_lines
    if mpi.world() is not None and model_type != "rnn":
        raise click.BadParameter("MPI ranks train RNNs; shard an n-gram build with --workers or --scheduler",
                                 param_hint="--type")
    if arpa and model_type != "ngram":
        raise click.BadParameter("--arpa needs --type ngram", param_hint="--arpa")
    for option, value in (("--memory", memory), ("--workers", workers), ("--scheduler", scheduler)):
        if value is not None and model_type != "ngram":
            raise click.BadParameter(f"{option} needs --type ngram", param_hint=option)
    if memory is not None and (workers or scheduler):
        raise click.BadParameter("--memory bounds one process; a Dask build counts each shard in its worker's "
                                 "memory (use more workers)", param_hint="--memory")
    sources = corpus_sources(corpus) if corpus else [bundled_corpus()]
    # --resume reads -o and rewrites it: that one input may be overwritten
    check_outputs({"-o": output, "--arpa": arpa},
                  {"the training corpus": [s for s in sources if s is not sys.stdin.buffer],
                   "the --valid text": valid_path, "the --spm-model file": spm_model})
    if resume and model_type != "rnn":
        raise click.BadParameter("only RNN training can be resumed; n-grams train in one pass",
                                 param_hint="--resume")
    check_spm_options(unit, spm_vocab, spm_model, resume)
    if unit in ("morph", "spm") and (workers or scheduler):
        raise click.BadParameter(f"a Dask build takes char, word or jamo units, not {unit}",
                                 param_hint="--workers" if workers else "--scheduler")
    from .segment import require_unit
    require_unit(unit)   # before reading the corpus
    resume_hint = shlex.join(["rnnkit", "train", *corpus, "-o", output,
                              *(["--valid", valid_path] if valid_path else []), "--resume"])
    if not corpus:
        click.echo(f"No corpus given: training on the bundled Korean sample ({sources[0].name}, "
                   "NSMC reviews, CC0).", err=True)
    if model_type == "ngram":
        settings = dict(order=order, smoothing=smoothing, unit=unit, k=addk, prune=parse_prune(prune, order))
        lines = None
        if unit == "spm":   # the SentencePiece model is made from (or for) the text: read it once
            lines = read_corpus(sources)
            settings["unit"] = make_tokenizer(unit, lines, spm_vocab, spm_model, spm_type)
        model = train_ngram(sources, output, settings, arpa, memory, temp_dir, sharded(workers, scheduler), lines)
    else:
        # a SentencePiece model trains on the text in memory; otherwise training reads it once, in blocks
        lines = read_corpus(sources) if unit == "spm" and spm_model is None and not resume else None
        tokenizer = None if resume else make_tokenizer(unit, lines, spm_vocab, spm_model, spm_type)
        valid = read_lines(valid_path) if valid_path else None
        settings = dict(unit=unit, hidden=hidden, bptt=bptt, batch=batch, epochs=epochs, time_budget=time_budget,
                        optimizer=optimizer, lr=lr, clip=clip, dropout=dropout, average=average,
                        weight_decay=weight_decay, **output_layer(classes, direct_order, direct_size),
                        direct_optimizer=direct_optimizer, direct_lr=direct_lr,
                        min_count=min_count, max_vocab=max_vocab, stream=stream, seed=seed,
                        checkpoint_minutes=checkpoint_minutes)
        corpus = corpus_blocks(sources) if lines is None else lines
        model = train_rnn(corpus, valid, output, settings, resume, resume_hint, tokenizer, temp_dir)
    if as_json and (mpi.world() is None or mpi.world().lead):
        emit_json({"file": output, **model.describe()})


def output_layer(classes, direct_order: int, direct_size: int) -> dict:
    """--classes, --direct-order and --direct-size as TrainConfig takes them. Direct
    connections need classes, an order and a size: a 0 in any turns them off, and a
    direct option given with a value that a 0 among the others would drop is an error."""
    from click.core import ParameterSource
    ctx = click.get_current_context()
    if classes != 0 and direct_order and direct_size:
        return {"classes": classes, "direct_order": direct_order, "direct_size": direct_size}
    for name, value in (("direct_order", direct_order), ("direct_size", direct_size)):
        if value and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            option = "--" + name.replace("_", "-")
            missing = ("--classes above 0" if classes == 0 else
                       "--direct-size above 0" if name == "direct_order" else "--direct-order above 0")
            raise click.BadParameter(f"{value} gives direct connections, which need {missing}",
                                     param_hint=option)
    return {"classes": classes, "direct_order": 0, "direct_size": 0}


def check_spm_options(unit: str, spm_vocab, spm_model, resume: bool) -> None:
    given = [name for name, value in (("--spm-vocab", spm_vocab), ("--spm-model", spm_model)) if value is not None]
    if given and unit != "spm":
        raise click.BadParameter("is for --unit spm", param_hint=given[0])
    if len(given) == 2:
        raise click.UsageError("give --spm-vocab (train a SentencePiece model) or --spm-model (use one), not both")
    if given and resume:
        raise click.BadParameter("a resumed model keeps the units it was trained with", param_hint=given[0])


def make_tokenizer(unit: str, lines: list[str], spm_vocab, spm_model, spm_type):
    """The tokenizer a new model gets: for spm, a SentencePiece model trained on the
    corpus (all of it: for an RNN, the part held out for validation too) or read from a file."""
    from .units import Tokenizer
    if unit != "spm":
        return Tokenizer(unit)
    if spm_model is not None:
        return Tokenizer.spm_file(spm_model)
    click.echo(f"Training a SentencePiece {spm_type} model ({spm_vocab or 8000} pieces) on the corpus.", err=True)
    return Tokenizer.train_spm(lines, spm_vocab or 8000, spm_type)


def resume_settings(settings: dict, model, output: str) -> None:
    """--resume goes on with the settings the model file records, except the options
    given on the command line, so the short command an interrupt prints continues the run."""
    from click.core import ParameterSource
    ctx = click.get_current_context()
    options = {param.name: param for param in ctx.command.params}
    for name, value in (model.hyper if isinstance(model.hyper, dict) else {}).items():
        if name in settings and ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            try:
                settings[name] = options[name].type_cast_value(ctx, value)
            except click.BadParameter as exc:
                raise click.ClickException(f"{output}: the recorded training setting {name}={value!r} "
                                           f"is invalid ({exc.message})") from None


def bundled_corpus() -> Path:
    return Path(__file__).resolve().parent / "data" / "nsmc_sample.txt"


def parse_prune(prune: str | None, order: int) -> list[int] | None:
    if prune is None:
        return None
    try:
        values = [int(v) for v in prune.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {prune!r}", param_hint="--prune") from None
    if any(v < 0 for v in values) or len(values) > order:
        raise click.BadParameter(f"need at most {order} non-negative counts", param_hint="--prune")
    return values


def train_ngram(sources, output, settings, arpa, memory, temp_dir, cluster, lines=None):
    """One pass with nothing to save half-way: SIGINT or SIGTERM stops it at once, and the
    atomic writes leave no partial file (nor spill files: they go with the build).
    cluster: a Dask client context (see `sharded`) or None."""
    import time
    from .interrupts import EXIT_STATUS, Interrupted, StopSignals
    from .ngram import NgramModel
    started = time.perf_counter()
    written = []
    try:
        with StopSignals(at_once=True):
            if lines is not None:   # already read (an spm model was trained on them)
                model = NgramModel.train(lines, memory=memory, temp_dir=temp_dir, **settings)
            elif cluster is None:
                model = NgramModel.train_file(sources, memory=memory, temp_dir=temp_dir, **settings)
            else:
                from .ngram_build import build_sharded
                with cluster as client:
                    model = build_sharded(client, sources, **settings)
            model.save(output)
            written.append(output)
            click.echo(f"Wrote {output}: {model.unit} {model.order}-gram, {model.smoothing}, "
                       f"{len(model.vocab):,} units, {time.perf_counter() - started:.1f} s.", err=True)
            if arpa:
                model.write_arpa(arpa)
                click.echo(f"Wrote {arpa} (ARPA).", err=True)
    except Interrupted as stop:
        click.echo(f"Interrupted: {f'{output} written, {arpa} not' if written else 'nothing written'}.", err=True)
        click.get_current_context().exit(EXIT_STATUS[stop.signum])
    return model


class EpochProgress:
    """A click progress bar per epoch on stderr (only on a terminal) and one line per epoch."""

    def __init__(self):
        self.bar = None

    def __call__(self, tokens: int, stats: dict) -> None:
        if not sys.stderr.isatty():
            return   # a bar redrawn into a log file is noise; epochs are still reported
        if self.bar is None:
            self.bar = click.progressbar(length=stats["epoch_tokens"], file=sys.stderr, show_eta=True,
                                         show_percent=True, width=24)
            self.bar.__enter__()
            self.bar.update(stats["tokens"] - tokens)   # a resumed epoch starts part-way
        self.bar.label = f"loss {stats['loss']:.3f} {stats['tokens_per_s']:,.0f} tok/s"
        self.bar.update(tokens)

    def notify(self, text: str) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None
        click.echo(text, err=True)


def train_rnn(corpus, valid, output, settings, resume, resume_hint, tokenizer, temp_dir):
    """Under mpiexec every rank trains its share (rnnkit.mpi); rank 0 alone prints and writes."""
    from .interrupts import EXIT_STATUS
    from .mpi import world
    from .rnnlm import RNNModel
    from .train import TrainConfig, TrainingInterrupted, train as run_training
    resume_from = None
    if resume:
        if not Path(output).exists():
            raise click.BadParameter(f"nothing to resume: {output} does not exist", param_hint="--resume")
        resume_from = RNNModel.load(output)
        resume_settings(settings, resume_from, output)
        # the architecture comes from the model file, whatever the options say
        settings.update(unit=resume_from.unit, hidden=resume_from.hidden, stream=resume_from.stream,
                        classes=resume_from.classes, direct_order=resume_from.direct_order,
                        direct_size=resume_from.output_settings().get("direct_size", 0))
    ranks = world()
    lead = ranks is None or ranks.lead
    progress = EpochProgress()
    try:
        model = run_training(corpus, valid, TrainConfig(**settings), output_path=output if lead else None,
                             resume_from=resume_from, progress=progress if lead else None,
                             notify=progress.notify if lead else None, tokenizer=tokenizer, ranks=ranks,
                             temp_dir=temp_dir)
    except TrainingInterrupted as stop:
        if stop.saved is not None:
            outcome = f"saved {output} (resume with: {resume_hint})"
        else:
            outcome = "nothing saved" + (f"; {output} is as it was (resume with: {resume_hint})" if resume else "")
        progress.notify(f"Interrupted {stop.where()}: {outcome}")
        click.get_current_context().exit(EXIT_STATUS[stop.signum])
    summary = f"Wrote {output}: RNN, {model.unit} unit, {model.V:,} units, hidden {model.hidden}"
    if model.classes:
        summary += f", {model.classes} classes"
    if model.direct_order:
        summary += f", direct order {model.direct_order} ({model.direct_table.size:,} entries)"
    if model.record.get("epochs"):
        best = min(e["valid_bpc"] for e in model.record["epochs"])
        count = len(model.record["epochs"])
        summary += f", {count} epoch{'s' if count != 1 else ''}, best valid {best:.4f} bits/char"
    if ranks is not None:
        summary += f", {ranks.size} MPI ranks"
    if lead:
        click.echo(summary + ".", err=True)
    return model


# ----------------------------------------------------------------------------------
# score / eval / rank
# ----------------------------------------------------------------------------------

def surprisal_color(log10p: float):
    if log10p > -1.0:
        return "green"
    if log10p > -2.0:
        return "yellow"
    return "red"


@cli.command(context_settings=CONTEXT)
@click.argument("sentences", nargs=-1)
@click.option("--file", "file_path", type=click.Path(dir_okay=False), default=None, help="One sentence per line.")
@click.option("--per-token", is_flag=True, help="Show each token's log10 probability; OOVs marked.")
@models_option
@cluster_options
@json_option
@threads_option
@library_errors
def score(sentences, file_path, per_token, model_paths, weights, workers, scheduler, as_json):
    """Log10 probability of each sentence (<s> context, </s> predicted).

    \b
    Example:
      rnnkit score "나는 버스를 탔다" "나는 버스를 태운다"
      rnnkit score -m ko.model --per-token "선생님이 교실로 부리나케 달려갔다"
      cat sentences.txt | rnnkit score -
    """
    from .ranking import score_rows
    cluster = sharded(workers, scheduler)
    if cluster is not None and file_path is None:
        raise click.UsageError("--workers and --scheduler shard a --file")
    if cluster is None:
        lines = gather_sentences(sentences, file_path)
        model = load_models(model_paths, weights)
        results = score_rows(model, lines, per_token)
    else:
        if sentences:
            raise click.UsageError("give sentences as arguments or with --file, not both")
        from . import sharding
        model = load_models(model_paths, weights)   # here too: a bad model fails before any work
        with cluster as client:
            results = sharding.score(client, model_files(model_paths), parse_weights(weights, len(model_paths)),
                                     [file_path], per_token)
    if as_json:
        emit_json(results)
        return
    for result in results:
        click.echo(f"{result['log10']:.4f}\t{result['sentence']}")
        for row in result.get("tokens", []):
            extra = f"\t{row['ngram']}-gram" if model.model_type == "ngram" else ""
            oov = "\tOOV" if row["oov"] else ""
            shown = row["token"] if row["token"] != " " else "␣"
            click.echo("  " + click.style(f"{row['log10']:9.4f}  {shown}", fg=surprisal_color(row["log10"]))
                       + extra + oov)


@cli.command("eval", context_settings=CONTEXT)
@click.argument("file_path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--format", "output_format", type=click.Choice(["rnnkit", "srilm"]), default="rnnkit",
              show_default=True, help="srilm: the report of SRILM's `ngram -ppl` (OOVs left out of ppl).")
@click.option("--debug", type=click.IntRange(0, 2), default=0, show_default=True,
              help="With --format srilm, as SRILM's -debug: 1 adds each sentence, 2 each word.")
@models_option
@cluster_options
@json_option
@threads_option
@library_errors
def eval_command(file_path, output_format, debug, model_paths, weights, workers, scheduler, as_json):
    """Perplexity and bits per character of a text file.

    Perplexity follows KenLM and SRILM: 10^(-log10 total / (tokens + sentences)), each
    sentence scored as <s> w1 .. wn </s> with </s> counted; OOVs are scored as <unk>
    and counted. Bits per character divide the total by the NFC characters of the
    text, one newline per line included, so models with different units compare; a
    model trained by rnnkit also pays for spelling out each OOV unit there (open
    vocabulary), an ARPA file cannot (closed vocabulary): the basis line says which.
    --format srilm prints SRILM's report instead (see rnnkit.srilm).

    \b
    Example:
      rnnkit eval test.txt -m ko.model
      rnnkit eval test.txt -m kn5.arpa --format srilm --debug 2
    """
    from .units import read_lines
    if output_format == "srilm" and as_json:
        raise click.UsageError("--json and --format srilm are different outputs; give one")
    if debug and output_format != "srilm":
        raise click.UsageError("--debug is for --format srilm")
    cluster = sharded(workers, scheduler)
    if cluster is not None:
        if output_format == "srilm":
            raise click.UsageError("--format srilm prints sentence by sentence; it is not sharded")
        from . import sharding
        model = load_models(model_paths, weights)
        with cluster as client:
            stats = sharding.evaluate(client, model, model_files(model_paths),
                                      parse_weights(weights, len(model_paths)), [file_path])
    else:
        lines = read_lines(file_path)
        model = load_models(model_paths, weights)
        if output_format == "srilm":
            from .srilm import report
            for text in report(model, lines, file_path, debug):
                click.echo(text)
            return
        stats = model.evaluate(lines)
    if as_json:
        emit_json(stats)
        return
    for key in ("sentences", "tokens", "oov", "log10_total", "perplexity", "bits_per_char"):
        value = stats[key]
        text = f"{value:,}" if isinstance(value, int) else f"{value:.4f}"
        click.echo(f"{key.replace('_', ' '):<14}{text}")
    click.echo(f"{'bits/char on':<14}{stats['bits_per_char_basis']}")


@cli.command(context_settings=CONTEXT)
@click.argument("candidates", nargs=-1)
@click.option("--context", default=None, help="Rank continuations of this text.")
@click.option("--nbest", type=click.Path(dir_okay=False), default=None,
              help="Rescore an n-best list: lines id<TAB>score<TAB>sentence.")
@click.option("--lm-weight", type=float, default=1.0, show_default=True,
              help="n-best: combined = score + weight * LM log10.")
@models_option
@json_option
@threads_option
@library_errors
def rank(candidates, context, nbest, lm_weight, model_paths, weights, as_json):
    """Rank candidate sentences, best first.

    \b
    Example:
      rnnkit rank "나는 버스를 탔다" "나는 버스를 태운다"
      rnnkit rank --context "선생님이 교실로 부리나케" 달려갔다 잘려갔다
      rnnkit rank --nbest asr.nbest --lm-weight 0.5
    """
    from .ranking import rank as rank_candidates, rescore_nbest
    if nbest:
        if candidates or context:
            raise click.UsageError("--nbest takes no candidates or --context")
        groups = rescore_nbest(load_models(model_paths, weights), nbest, lm_weight)
        if as_json:
            emit_json(groups)
            return
        for row in (row for rows in groups.values() for row in rows):
            click.echo(f"{row['id']}\t{row['combined']:.4f}\t{row['score']:.4f}\t{row['lm_log10']:.4f}"
                       f"\t{row['sentence']}")
        return
    if len(candidates) < 1:
        raise click.UsageError("give at least one candidate")
    rows = rank_candidates(load_models(model_paths, weights), list(candidates), context)
    if as_json:
        emit_json(rows)
        return
    key = "continuation_log10" if context else "log10"
    for i, row in enumerate(rows, 1):
        click.echo(f"{i}\t{row[key]:.4f}\t{row['candidate']}")


@cli.command(context_settings=CONTEXT)
@click.option("-m", "--model", "model_paths", type=click.Path(dir_okay=False), multiple=True, required=True,
              help="A model to mix (give two or more).")
@click.option("--tune", "tune_path", type=click.Path(dir_okay=False), default=None,
              help="Held-out text: find the weights that minimise its perplexity (EM).")
@click.option("--weights", default=None, help="Fixed weights instead of --tune, e.g. 0.6,0.4.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the mixture as a model file every command accepts.")
@json_option
@threads_option
@library_errors
def mix(model_paths, tune_path, weights, output, as_json):
    """Interpolate models that share a unit: P = sum_i weight_i P_i.

    With --tune, the weights minimise the perplexity of held-out text (EM over
    per-token probabilities, as SRILM's compute-best-mix); the perplexity of each
    model and of the mixture on that text is printed.

    \b
    Example:
      rnnkit mix -m rnn.model -m kn5.arpa --tune valid.txt -o mixed.model
      rnnkit score -m rnn.model -m kn5.arpa --weights 0.6,0.4 "나는 버스를 탔다"
    """
    from .files import check_outputs
    from .mix import MixModel, tune_weights
    from .units import read_lines
    if len(model_paths) < 2:
        raise click.BadParameter("give at least two -m models", param_hint="-m")
    if tune_path and weights:
        raise click.UsageError("use --tune or --weights, not both")
    check_outputs({"-o": output}, {"an -m model": list(model_paths), "the --tune text": tune_path})
    components = [load_model(p) for p in model_paths]
    report = {"models": list(model_paths)}
    if tune_path:
        lines = [line for line in read_lines(tune_path) if line.strip()]
        mixture, history, singles = tune_weights(components, lines)
        report["tune"] = tune_path
        report["model_perplexity"] = singles
        report["mixture_perplexity"] = history[-1]
        report["em_perplexity"] = history
    else:
        mixture = MixModel(components, parse_weights(weights, len(components)))
    report["weights"] = mixture.weights
    if output:
        mixture.record = {k: v for k, v in report.items() if k != "em_perplexity"}
        mixture.save(output)
        click.echo(f"Wrote {output}.", err=True)
    if as_json:
        emit_json(report)
        return
    for i, path in enumerate(model_paths):
        line = f"{path}\tweight {mixture.weights[i]:.4f}"
        if "model_perplexity" in report:
            line += f"\tperplexity {report['model_perplexity'][i]:.2f}"
        click.echo(line)
    if "mixture_perplexity" in report:
        click.echo(f"mixture\tperplexity {report['mixture_perplexity']:.2f} on {tune_path} "
                   f"({len(report['em_perplexity']) - 1} EM iterations)")


# ----------------------------------------------------------------------------------
# sample / info
# ----------------------------------------------------------------------------------

@cli.command(context_settings=CONTEXT)
@click.option("-n", "count", type=click.IntRange(1), default=5, show_default=True, help="Sentences to sample.")
@click.option("--prefix", default="", help="Text every sample starts with.")
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Below 1: safer; above 1: wilder.")
@click.option("--top-k", type=click.IntRange(1), default=None, help="Sample among the k likeliest units.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Sample among the likeliest units holding this much probability.")
@click.option("--max-tokens", type=click.IntRange(1), default=200, show_default=True, help="Length limit in units.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Random seed for reproducible samples.")
@models_option
@json_option
@threads_option
@library_errors
def sample(count, prefix, temperature, top_k, top_p, max_tokens, seed, model_paths, weights, as_json):
    """Sample sentences from a model.

    \b
    Example:
      rnnkit sample -n 5 --prefix "오늘은" --temperature 0.8 --seed 1
    """
    model = load_models(model_paths, weights)
    texts = model.samples(n=count, prefix=prefix, temperature=temperature, top_k=top_k,
                          top_p=top_p, max_tokens=max_tokens, seed=seed)
    if as_json:
        emit_json(list(texts))
        return
    for text in texts:   # each as soon as it is drawn: -n 1000000 streams
        click.echo(text)


@cli.command(context_settings=CONTEXT)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Draw the training record (bits per character per epoch) to a PNG file.")
@model_option
@json_option
@library_errors
def info(plot, model_path, as_json):
    """What a model is: type, unit, vocabulary, size, training record.

    \b
    Example:
      rnnkit info -m ko.model
      rnnkit info --plot training.png
    """
    from .files import check_outputs
    check_outputs({"--plot": plot}, {"the -m model": model_path})
    model = load_model(model_path)
    description = {"file": model_path, "file_bytes": Path(model_path).stat().st_size, **model.describe()}
    if plot:
        draw_training_plot(description, plot)
    if as_json:
        emit_json(description)
        return
    for key, value in description.items():
        if key == "components":
            for i, part in enumerate(value, 1):
                size = f"hidden {part['hidden']}" if "hidden" in part else f"order {part.get('order')}"
                click.echo(f"{'component ' + str(i):<16}{part['type']}, {part['unit']} unit, "
                           f"{part['vocab_size']:,} units, {size}, weight {description['weights'][i - 1]:.4f}")
        elif key == "weights":
            click.echo(f"{key:<16}" + ", ".join(f"{w:.4f}" for w in value))
        elif key == "training" and isinstance(value, dict):
            for epoch in value.get("epochs", []):
                click.echo(f"epoch {epoch['epoch']:>3}   train {epoch['train_bpc']:.4f} bits/char   valid "
                           f"{epoch['valid_bpc']:.4f} bits/char   lr {epoch['lr']:.3g}   "
                           f"{epoch['tokens_per_s']:,.0f} tok/s   {epoch['seconds']:.1f} s")
            corpus = value.get("corpus")
            if isinstance(corpus, dict):   # an RNN's corpus counts
                click.echo(f"{'corpus':<16}" + ", ".join(f"{k} {v:,}" for k, v in corpus.items()))
            elif corpus:                   # an n-gram's corpus file name (NgramModel.train_file)
                click.echo(f"{'corpus':<16}{corpus}")
        elif isinstance(value, dict):
            if value:
                click.echo(f"{key:<16}" + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            click.echo(f"{key:<16}{value:,}" if isinstance(value, int) and not isinstance(value, bool)
                       else f"{key:<16}{value}")


@cli.command(context_settings=CONTEXT)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="File to write.")
@click.option("--arpa", is_flag=True, help="Write an n-gram model in the ARPA format instead.")
@model_option
@json_option
@library_errors
def export(output, arpa, model_path, as_json):
    """Write a copy of a model for scoring and sampling.

    An RNN's copy leaves out its training state (Adam's moments and the raw weights
    behind the average), which only `train --resume` reads: the weights' share of the
    file shrinks to a third (a quarter for a model trained with --average); a direct
    table is kept whole, without its training state (the raw table behind --average, the
    sums of squares of --direct-optimizer adagrad). With --arpa, an n-gram model (also
    one read from an ARPA file) is written in the ARPA format that KenLM and SRILM read.

    \b
    Example:
      rnnkit export -m ko.model -o ko.small.model
      rnnkit export -m kn5.model --arpa -o kn5.arpa
    """
    from .files import check_outputs
    check_outputs({"-o": output}, {"the -m model": model_path})
    model = load_model(model_path)
    if arpa:
        if model.model_type != "ngram":
            raise click.BadParameter(f"{model_path} is not an n-gram model; only n-grams have an ARPA form",
                                     param_hint="--arpa")
        model.write_arpa(output)
    else:
        model.save(output, resumable=False)
    before, after = Path(model_path).stat().st_size, Path(output).stat().st_size
    if as_json:
        emit_json({"output": output, "format": "arpa" if arpa else "rnnkit", "bytes": after,
                   "model": model_path, "model_bytes": before})
        return
    click.echo(f"Wrote {output} ({after:,} bytes; {model_path}: {before:,} bytes).", err=True)


def draw_training_plot(description: dict, path: str) -> None:
    epochs = (description.get("training") or {}).get("epochs") or []
    if not epochs:
        raise click.ClickException("this model has no training record to plot")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("--plot needs matplotlib: pip install 'rnnkit[plot]'") from None
    from .files import write_atomic
    xs = [e["epoch"] for e in epochs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [e["train_bpc"] for e in epochs], marker="o", label="train")
    ax.plot(xs, [e["valid_bpc"] for e in epochs], marker="o", label="valid")
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per character")
    ax.set_title(f"{Path(description['file']).name}: {description.get('type')} ({description.get('unit')})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)
    click.echo(f"Wrote {path}.", err=True)

# ----------------------------------------------------------------------------------
# demo: the lecture's hand-set RNNs on the same kernel
# ----------------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def demo():
    """The lecture's RNNs with hand-set weights, run on the language models' kernel.

    \b
    Example:
      rnnkit demo running-sum --input "2 -0.5 1 1"
      rnnkit demo compare --input "1 0, 0 1, 1 0"
      rnnkit demo parity --bits 0101101011
      rnnkit demo parity --train
    """


def show_demo(result: dict, as_json: bool) -> None:
    from .demos import format_table
    if as_json:
        emit_json(result)
    else:
        click.echo(format_table(result))


@demo.command("running-sum", context_settings=CONTEXT)
@click.option("--input", "text", default="2 -0.5 1 1", show_default=True, help="Numbers, one per step.")
@json_option
@library_errors
def demo_running_sum(text, as_json):
    """One linear hidden unit, all weights 1: h_t = h_{t-1} + x_t is the running total.

    \b
    Example:
      rnnkit demo running-sum --input "2 -0.5 1 1"
    """
    from .demos import running_sum
    show_demo(running_sum(text), as_json)


@demo.command("compare", context_settings=CONTEXT)
@click.option("--input", "text", default="1 0, 0 1, 1 0", show_default=True,
              help="Two numbers per step, steps separated by commas.")
@click.option("--gain", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True,
              help="Gain of the logistic output (large = hard threshold).")
@json_option
@library_errors
def demo_compare(text, gain, as_json):
    """Is the first input's running sum ahead of the second's? (1 while it is.)

    \b
    Example:
      rnnkit demo compare --input "1 0, 0 1, 1 0"
    """
    from .demos import compare
    show_demo(compare(text, gain=gain), as_json)


@demo.command("parity", context_settings=CONTEXT)
@click.option("--bits", default=None, help="Bit string [default: the lecture's 0101101011].")
@click.option("--train", "do_train", is_flag=True, help="Learn parity from random weights instead.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --train.")
@json_option
@library_errors
def demo_parity(bits, do_train, seed, as_json):
    """Parity of the bits so far: AND and OR units, output their difference (XOR).

    With --train, a small tanh RNN learns parity from random weights (same kernel and
    optimizer as the language models) and is tested on longer strings than it saw.

    \b
    Example:
      rnnkit demo parity --bits 0101101011
      rnnkit demo parity --train --seed 0
    """
    from .demos import LECTURE_BITS, parity, train_parity
    if do_train:
        show_demo(train_parity(seed=seed, bits=bits or LECTURE_BITS), as_json)
    else:
        show_demo(parity(bits or LECTURE_BITS), as_json)


if __name__ == "__main__":  # pragma: no cover
    cli()
