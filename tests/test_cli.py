"""The rnnkit command line, driven through click's CliRunner: every command, every error."""

import json
import os

import pytest
from click.testing import CliRunner

from rnnkit.cli import cli

CORPUS = "\n".join([
    "나는 버스를 탔다", "나는 버스를 타고 학교에 갔다", "선생님이 교실로 부리나케 달려갔다",
    "메론을 먹는다", "오늘은 날씨가 좋다", "영화 정말 재미있다", "이 영화 최고", "버스를 타고 집에 왔다",
] * 5) + "\n"

COMMANDS = ["train", "score", "eval", "rank", "sample", "info", "export"]


def invoke(args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def assert_clean_error(result, code=1, match=None):
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error") or "Error:" in result.stderr, result.stderr
    assert "Traceback" not in result.output
    if match:
        assert match in result.stderr, result.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A corpus and a small RNN model trained once for the whole module."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    model = root / "rnn.model"
    result = invoke(["train", corpus, "-o", model, "--hidden", 16, "--epochs", 2, "--bptt", 8,
                     "--batch", 4, "--seed", 1, "--threads", 1], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"root": root, "corpus": corpus, "model": model}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_example(command):
    """-h works for every command and shows a real example."""
    result = invoke([command, "-h"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "rnnkit " + command in result.output


def test_top_level_help_and_version():
    """rnnkit --help lists the commands; --version prints the version."""
    result = invoke(["--help"])
    assert result.exit_code == 0 and all(c in result.output for c in COMMANDS)
    assert invoke(["--version"]).exit_code == 0


def test_train_reports_and_writes(workspace):
    """train writes the model and reports epochs on stderr, not stdout."""
    assert workspace["model"].exists()
    info = json.loads(invoke(["info", "-m", workspace["model"], "--json"], catch_exceptions=False).stdout)
    assert info["type"] == "rnn" and info["unit"] == "char" and info["hidden"] == 16
    assert len(info["training"]["epochs"]) >= 1


def test_train_bundled_corpus_default_output(tmp_path, monkeypatch):
    """With no corpus, train uses the bundled sample (says so) and writes the default model file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNNKIT_MODEL", raising=False)
    result = invoke(["train", "--hidden", 8, "--epochs", 1, "--time-budget", 2, "--threads", 1],
                    catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "bundled" in result.stderr
    assert (tmp_path / "rnnkit.model").exists()
    score = invoke(["score", "영화 최고", "--json"], catch_exceptions=False)
    assert score.exit_code == 0
    assert json.loads(score.stdout)[0]["log10"] < 0


def test_score_arguments_file_stdin(workspace):
    """score takes arguments, --file and '-' (stdin) and agrees across them."""
    m = workspace["model"]
    args = json.loads(invoke(["score", "-m", m, "--json", "나는 버스를 탔다", "메론을 먹는다"]).stdout)
    path = workspace["root"] / "s.txt"
    path.write_text("나는 버스를 탔다\n메론을 먹는다\n", encoding="utf-8")
    from_file = json.loads(invoke(["score", "-m", m, "--json", "--file", path]).stdout)
    from_stdin = json.loads(invoke(["score", "-m", m, "--json", "-"], input="나는 버스를 탔다\n메론을 먹는다\n").stdout)
    assert [r["log10"] for r in args] == [r["log10"] for r in from_file] == [r["log10"] for r in from_stdin]
    text = invoke(["score", "-m", m, "나는 버스를 탔다"]).stdout
    assert text.split("\t")[1].strip() == "나는 버스를 탔다"


def test_score_per_token(workspace):
    """--per-token lists every unit and </s>, their log10 summing to the sentence score."""
    result = invoke(["score", "-m", workspace["model"], "--per-token", "--json", "영화 최고"])
    doc = json.loads(result.stdout)[0]
    assert [row["token"] for row in doc["tokens"]] == ["영", "화", " ", "최", "고", "</s>"]
    assert sum(r["log10"] for r in doc["tokens"]) == pytest.approx(doc["log10"])
    oov = json.loads(invoke(["score", "-m", workspace["model"], "--per-token", "--json", "쀍"]).stdout)[0]
    assert oov["tokens"][0]["oov"] is True
    plain = invoke(["score", "-m", workspace["model"], "--per-token", "영화"]).stdout
    assert "</s>" in plain and "\x1b[" not in plain   # no colour codes when not a terminal


def test_eval(workspace):
    """eval reports tokens, sentences, OOVs, log10 total, perplexity and bits per character."""
    result = invoke(["eval", "-m", workspace["model"], workspace["corpus"], "--json"], catch_exceptions=False)
    stats = json.loads(result.stdout)
    assert stats["sentences"] == 40 and stats["oov"] == 0
    assert stats["perplexity"] == pytest.approx(10 ** (-stats["log10_total"] / (stats["tokens"] + 40)))
    assert "perplexity" in invoke(["eval", "-m", workspace["model"], workspace["corpus"]]).stdout


def test_threads_option_on_scoring_commands(workspace):
    """--threads (as on train) sets the kernel's threads for eval, score, rank, sample and mix."""
    from rnnkit import kernel
    before = kernel.get_num_threads()
    try:
        one = invoke(["eval", "-m", workspace["model"], workspace["corpus"], "--json", "--threads", "1"])
        assert kernel.get_num_threads() == 1
        two = invoke(["eval", "-m", workspace["model"], workspace["corpus"], "--json", "--threads", "2"])
        assert kernel.get_num_threads() == 2
        assert json.loads(one.stdout)["log10_total"] == pytest.approx(json.loads(two.stdout)["log10_total"], rel=1e-6)
        for args in (["score", "영화"], ["rank", "영화", "버스"], ["sample", "--seed", "1"],
                     ["mix", "-m", workspace["model"], "--weights", "0.5,0.5"]):
            assert invoke([*args, "-m", workspace["model"], "--threads", "1"]).exit_code == 0, args
    finally:
        kernel.set_num_threads(before)


def test_rank_candidates_context_and_nbest(workspace):
    """rank orders candidates best first, ranks continuations of a context, rescores n-best lists."""
    m = workspace["model"]
    rows = json.loads(invoke(["rank", "-m", m, "--json", "나는 버스를 탔다", "탔다 버스를 나는"]).stdout)
    assert rows[0]["log10"] >= rows[1]["log10"]
    ctx = json.loads(invoke(["rank", "-m", m, "--json", "--context", "선생님이 교실로 부리나케",
                             "달려갔다", "잘려갔다"]).stdout)
    assert {r["candidate"] for r in ctx} == {"달려갔다", "잘려갔다"}
    assert ctx[0]["continuation_log10"] >= ctx[1]["continuation_log10"]
    assert all(r["continuation_log10"] > r["log10"] for r in ctx)
    nbest = workspace["root"] / "list.nbest"
    nbest.write_text("1\t-1.0\t나는 버스를 탔다\n1\t-1.0\t탔다 버스를 나는\n2\t-3.0\t메론을 먹는다\n", encoding="utf-8")
    groups = json.loads(invoke(["rank", "-m", m, "--json", "--nbest", nbest, "--lm-weight", 0.5]).stdout)
    assert set(groups) == {"1", "2"} and len(groups["1"]) == 2
    first = groups["1"][0]
    assert first["combined"] == pytest.approx(first["score"] + 0.5 * first["lm_log10"])


def test_sample(workspace):
    """sample prints n samples starting with the prefix, reproducibly with a seed."""
    m = workspace["model"]
    a = json.loads(invoke(["sample", "-m", m, "-n", 3, "--seed", 4, "--prefix", "나는", "--json"]).stdout)
    b = json.loads(invoke(["sample", "-m", m, "-n", 3, "--seed", 4, "--prefix", "나는", "--json"]).stdout)
    assert a == b and len(a) == 3 and all(s.startswith("나는") for s in a)


def test_info_plot_without_or_with_matplotlib(workspace, tmp_path):
    """info --plot draws a PNG with matplotlib, or says how to install it."""
    out = tmp_path / "plot.png"
    result = invoke(["info", "-m", workspace["model"], "--plot", out])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert_clean_error(result, 1, "pip install")
    else:
        assert result.exit_code == 0 and out.read_bytes()[:4] == b"\x89PNG"


def test_model_from_environment(workspace, tmp_path, monkeypatch):
    """RNNKIT_MODEL names the default model file."""
    monkeypatch.setenv("RNNKIT_MODEL", str(workspace["model"]))
    assert invoke(["score", "영화"]).exit_code == 0


# ----------------------------------------------------------------------------------
# errors: one line, no traceback, exit 1 or 2, nothing clobbered
# ----------------------------------------------------------------------------------

def test_error_missing_corpus(tmp_path):
    """A missing corpus file is a one-line error."""
    assert_clean_error(invoke(["train", tmp_path / "nope.txt", "-o", tmp_path / "m"]), 1, "not found")


def test_error_empty_binary_and_non_utf8_corpus(tmp_path):
    """Empty, binary and non-UTF-8 corpora are refused with what is wrong, and no model appears."""
    out = tmp_path / "m.model"
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert_clean_error(invoke(["train", empty, "-o", out]), 1, "empty")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x00\x01\x02abc\n")
    assert_clean_error(invoke(["train", binary, "-o", out]), 1, "binary")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9\n".encode("latin-1"))
    assert_clean_error(invoke(["train", latin, "-o", out]), 1, "UTF-8")
    assert not out.exists()


def test_error_missing_and_corrupt_model(workspace, tmp_path):
    """A missing or corrupt model file is a one-line error, for every command that reads one."""
    missing = tmp_path / "none.model"
    for args in (["score", "x"], ["eval", workspace["corpus"]], ["rank", "a", "b"], ["sample"], ["info"]):
        assert_clean_error(invoke([*args, "-m", missing]), 1, "not found")
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(workspace["model"].read_bytes()[:1000])
    assert_clean_error(invoke(["score", "-m", corrupt, "x"]), 1)


def test_error_bad_arpa_line(tmp_path):
    """An ARPA file with a bad line names the line."""
    arpa = tmp_path / "bad.arpa"
    arpa.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\nnot a number here\n\\end\\\n", encoding="utf-8")
    result = invoke(["score", "-m", arpa, "x"])
    assert_clean_error(result, 1)
    assert "line" in result.stderr


@pytest.mark.parametrize("args, code", [
    (["sample", "--temperature", "0"], 2),
    (["sample", "--temperature", "-1"], 2),
    (["sample", "--top-p", "1.5"], 2),
    (["sample", "--top-p", "0"], 2),
    (["sample", "--top-k", "0"], 2),
    (["train", "--hidden", "-4"], 2),
    (["train", "--epochs", "0"], 2),
    (["train", "--unit", "byte"], 2),
    (["score"], 2),
    (["score", "--threads", "0", "영화"], 2),
])
def test_error_bad_option_values(workspace, args, code):
    """Bad option values are usage errors (exit 2) with a one-line message."""
    result = invoke([*args, "-m", workspace["model"]] if args[0] != "train" else [*args, workspace["corpus"]])
    assert_clean_error(result, code)


def test_error_unwritable_output(workspace, tmp_path):
    """An output path in a missing or read-only directory is refused before training starts."""
    result = invoke(["train", workspace["corpus"], "-o", tmp_path / "no" / "such" / "m.model"])
    assert_clean_error(result, 1, "does not exist")
    if os.geteuid() != 0:   # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert_clean_error(invoke(["train", workspace["corpus"], "-o", ro / "m.model"]), 1)


def test_error_wrong_model_kind_for_option(workspace, tmp_path):
    """--arpa with an RNN is refused; --resume without a model is refused."""
    assert_clean_error(invoke(["train", workspace["corpus"], "-o", tmp_path / "m", "--arpa", tmp_path / "a.arpa"]), 2, "--arpa")
    assert_clean_error(invoke(["train", workspace["corpus"], "-o", tmp_path / "absent", "--resume"]), 2, "resume")
    assert_clean_error(invoke(["train", workspace["corpus"], "--type", "ngram", "-o", tmp_path / "n", "--resume"]), 2,
                       "resume")
    ngram = tmp_path / "kn.model"
    assert invoke(["train", workspace["corpus"], "--type", "ngram", "-o", ngram]).exit_code == 0
    assert_clean_error(invoke(["train", workspace["corpus"], "-o", ngram, "--resume"]), 1, "ngram model")


def test_interrupt_keeps_last_good_model(workspace, tmp_path, monkeypatch):
    """Ctrl-C during training is a clean error and leaves the previous model file intact."""
    out = tmp_path / "keep.model"
    out.write_bytes(workspace["model"].read_bytes())
    before = out.read_bytes()
    import rnnkit.train as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module.Trainer, "epoch", interrupted)
    result = invoke(["train", workspace["corpus"], "-o", out, "--hidden", 8, "--epochs", 1])
    assert_clean_error(result, 1, "interrupted")
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------
# demo: the lecture's networks
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sub", ["running-sum", "compare", "parity"])
def test_demo_help_and_json(sub):
    """Each demo has help with an example and prints weights and steps (x, h, y) as JSON."""
    assert "Example:" in invoke(["demo", sub, "-h"]).output
    result = invoke(["demo", sub, "--json"], catch_exceptions=False)
    doc = json.loads(result.stdout)
    assert doc["weights"] and all({"x", "h", "y"} <= set(step) for step in doc["steps"])


def test_demo_values_and_errors():
    """running-sum prints the running total; parity the parity so far; bad bits are clean errors."""
    doc = json.loads(invoke(["demo", "running-sum", "--input", "2 -0.5 1 1", "--json"]).stdout)
    assert [step["y"] for step in doc["steps"]] == pytest.approx([2, 1.5, 2.5, 3.5])
    bits = "0101101011"
    doc = json.loads(invoke(["demo", "parity", "--bits", bits, "--json"]).stdout)
    expected = [sum(map(int, bits[: i + 1])) % 2 for i in range(len(bits))]
    assert [round(step["y"]) for step in doc["steps"]] == expected
    assert_clean_error(invoke(["demo", "parity", "--bits", "0102"]), 1, "only 0 and 1")
    assert_clean_error(invoke(["demo", "compare", "--input", "1 2 3"]), 1)


# ----------------------------------------------------------------------------------
# n-gram models through the CLI
# ----------------------------------------------------------------------------------

def test_both_families_default_to_char_units(workspace, tmp_path):
    """One default unit for both families: an n-gram and an RNN trained without --unit are
    char models. train --json prints what it wrote, as info --json describes it."""
    ngram, rnn = tmp_path / "kn.model", tmp_path / "rnn.model"
    written = [json.loads(invoke(["train", workspace["corpus"], "-o", path, "--json", *extra]).stdout)
               for path, extra in ((ngram, ["--type", "ngram"]), (rnn, ["--hidden", 4, "--epochs", 1]))]
    assert [w["unit"] for w in written] == ["char", "char"]
    assert [w["type"] for w in written] == ["ngram", "rnn"] and written[0]["file"] == str(ngram)
    assert [json.loads(invoke(["info", "-m", m, "--json"]).stdout)["unit"] for m in (ngram, rnn)] == ["char", "char"]


def test_ngram_train_arpa_score_info(workspace, tmp_path):
    """train --type ngram writes the model and its ARPA; both score alike; per-token shows n-gram lengths."""
    model, arpa = tmp_path / "kn.model", tmp_path / "kn.arpa"
    result = invoke(["train", workspace["corpus"], "--type", "ngram", "--unit", "word", "--order", 3, "-o", model,
                     "--arpa", arpa], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert arpa.read_text(encoding="utf-8").startswith("\\data\\")
    a = json.loads(invoke(["score", "-m", model, "--json", "나는 버스를 탔다"]).stdout)[0]["log10"]
    b = json.loads(invoke(["score", "-m", arpa, "--json", "나는 버스를 탔다"]).stdout)[0]["log10"]
    assert a == pytest.approx(b, abs=1e-4)
    rows = json.loads(invoke(["score", "-m", model, "--json", "--per-token", "나는 버스를 탔다"]).stdout)[0]["tokens"]
    assert [r["token"] for r in rows] == ["나는", "버스를", "탔다", "</s>"]
    assert all(1 <= r["ngram"] <= 3 for r in rows)
    text = invoke(["score", "-m", model, "--per-token", "나는 없는단어"]).stdout
    assert "OOV" in text and "-gram" in text
    info = json.loads(invoke(["info", "-m", model, "--json"]).stdout)
    assert info["type"] == "ngram" and info["order"] == 3
    samples = json.loads(invoke(["sample", "-m", model, "-n", 2, "--seed", 1, "--json"]).stdout)
    assert len(samples) == 2


def test_ngram_bad_prune_option(workspace, tmp_path):
    """A malformed --prune value is a usage error."""
    result = invoke(["train", workspace["corpus"], "--type", "ngram", "--prune", "a,b", "-o", tmp_path / "m"])
    assert_clean_error(result, 2, "--prune")


def test_export_scoring_copy_and_arpa(workspace, tmp_path):
    """export drops the RNN's training state (same scores, smaller file, no resume) and
    writes an n-gram model as ARPA; an RNN has no ARPA form."""
    small = tmp_path / "rnn.small.model"
    result = invoke(["export", "-m", workspace["model"], "-o", small], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from rnnkit import loader
    weights = loader.load(workspace["model"]).params.nbytes
    assert workspace["model"].stat().st_size - small.stat().st_size >= 2 * weights   # Adam's two moments
    scores = [json.loads(invoke(["score", "-m", m, "--json", "나는 버스를 탔다"]).stdout)[0]["log10"]
              for m in (workspace["model"], small)]
    assert scores[0] == scores[1]
    assert_clean_error(invoke(["train", workspace["corpus"], "-o", small, "--resume"]), 1, "no training state")
    assert_clean_error(invoke(["export", "-m", workspace["model"], "--arpa", "-o", tmp_path / "r.arpa"]), 2,
                       "not an n-gram")
    ngram, arpa = tmp_path / "kn.model", tmp_path / "kn.arpa"
    invoke(["train", workspace["corpus"], "--type", "ngram", "--order", 3, "-o", ngram], catch_exceptions=False)
    assert invoke(["export", "-m", ngram, "--arpa", "-o", arpa]).exit_code == 0
    assert arpa.read_text(encoding="utf-8").startswith("\\data\\")
    scores = [json.loads(invoke(["score", "-m", m, "--json", "나는 버스를 탔다"]).stdout)[0]["log10"]
              for m in (ngram, arpa)]
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)


@pytest.mark.parametrize("options, code, match", [
    (["--seed", -1], 2, "--seed"),
    (["--max-vocab", 1], 2, "--max-vocab"),
    (["--max-vocab", 2], 2, "--max-vocab"),
    (["--lr", "1e10"], 1, "learning rate must be in (0, 100]"),
    (["--hidden", 100000], 1, "GiB, more than this machine's"),
    (["--threads", 2**31], 2, "--threads"),
])
def test_hostile_training_options_get_one_line_errors(workspace, tmp_path, options, code, match):
    """Each of these gave a traceback; now a one-line error that names the option or the
    figure, and nothing is written."""
    out = tmp_path / "m.model"
    assert_clean_error(invoke(["train", workspace["corpus"], "-o", out, "--epochs", 1, *options]), code, match)
    assert not out.exists()


def test_sample_streams_and_refuses_a_negative_seed(workspace):
    """sample -n prints each sentence as it is drawn (the API's samples() is a generator),
    and a negative seed is a usage error, not a NumPy traceback."""
    from rnnkit import loader
    samples = loader.load(workspace["model"]).samples(n=10**9, seed=1, max_tokens=5)
    assert [next(samples) for _ in range(3)]          # no waiting for a billion samples
    assert_clean_error(invoke(["sample", "-m", workspace["model"], "--seed", -5]), 2, "--seed")


def test_info_on_an_ngram_trained_from_a_file(workspace, tmp_path):
    """NgramModel.train_file records the corpus as a file name; info prints it (it crashed
    calling .items() on the string)."""
    from rnnkit.ngram import NgramModel
    path = tmp_path / "kn.model"
    NgramModel.train_file(workspace["corpus"], 2).save(path)
    result = invoke(["info", "-m", path])
    assert result.exit_code == 0, result.output
    assert f"corpus          {workspace['corpus']}" in result.stdout
