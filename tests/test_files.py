"""Safe output files (rnnkit.files): what a write may replace, what it keeps, what it leaves."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner

from rnnkit.cli import cli
from rnnkit.errors import OutputError
from rnnkit.files import check_outputs, sweep_stale, write_atomic

CORPUS = "\n".join(["나는 버스를 탔다", "나는 버스를 타고 학교에 갔다", "오늘은 날씨가 좋다",
                    "영화 정말 재미있다", "이 영화 최고", "버스를 타고 집에 왔다"] * 4) + "\n"


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_refused(result, match):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], result.stderr


def temp_files(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def write_bytes(data):
    return lambda handle: handle.write(data)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A corpus and two n-gram models (trained in milliseconds) shared by the CLI tests."""
    root = tmp_path_factory.mktemp("files")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    models = []
    for name, order in (("a.model", 2), ("b.model", 3)):
        result = invoke(["train", corpus, "--type", "ngram", "--order", order, "-o", root / name])
        assert result.exit_code == 0, result.output
        models.append(root / name)
    return {"root": root, "corpus": corpus, "a": models[0], "b": models[1]}


# ----------------------------------------------------------------------------------
# write_atomic: what it replaces
# ----------------------------------------------------------------------------------

def test_symlink_is_written_through(tmp_path):
    """A write to a symlink replaces its target and keeps the link."""
    target = tmp_path / "real.model"
    target.write_bytes(b"old")
    link = tmp_path / "link.model"
    link.symlink_to("real.model")
    write_atomic(link, write_bytes(b"new"))
    assert link.is_symlink() and os.readlink(link) == "real.model"
    assert target.read_bytes() == b"new"
    assert temp_files(tmp_path) == []


def test_dangling_symlink_creates_its_target(tmp_path):
    """A dangling link whose target directory exists gets its target created."""
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.model"
    link.symlink_to("sub/new.model")
    write_atomic(link, write_bytes(b"data"))
    assert link.is_symlink() and (tmp_path / "sub" / "new.model").read_bytes() == b"data"


def test_dangling_symlink_into_missing_directory_refused(tmp_path):
    """A link into a directory that does not exist is refused, naming the directory."""
    link = tmp_path / "link.model"
    link.symlink_to("nowhere/new.model")
    with pytest.raises(OutputError, match="nowhere does not exist"):
        write_atomic(link, write_bytes(b"data"))


@pytest.mark.parametrize("kind, make", [
    ("a FIFO (named pipe)", lambda p: os.mkfifo(p)),
    ("a directory", lambda p: p.mkdir()),
])
@pytest.mark.parametrize("through_link", [False, True])
def test_non_regular_target_refused(tmp_path, kind, make, through_link):
    """FIFOs and directories (devices and sockets alike) are refused with one line naming
    the path and what it is, also behind a symlink; nothing is created."""
    special = tmp_path / "special"
    make(special)
    path = special
    if through_link:
        path = tmp_path / "link"
        path.symlink_to("special")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputError) as info:
        write_atomic(path, write_bytes(b"data"))
    assert str(info.value) == f"cannot write {path}: it is {kind}, not a regular file"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_existing_mode_is_kept_new_file_follows_umask(tmp_path):
    """An existing 0600 file stays 0600; a new file gets 0666 & ~umask."""
    private = tmp_path / "private.model"
    private.write_bytes(b"old")
    private.chmod(0o600)
    write_atomic(private, write_bytes(b"new"))
    assert private.stat().st_mode & 0o777 == 0o600 and private.read_bytes() == b"new"
    old_umask = os.umask(0o027)
    try:
        write_atomic(tmp_path / "fresh.model", write_bytes(b"x"))
    finally:
        os.umask(old_umask)
    assert (tmp_path / "fresh.model").stat().st_mode & 0o777 == 0o640


def test_failed_write_keeps_target_and_leaves_no_temp_file(tmp_path):
    """An exception inside the write leaves the old file and no temporary file."""
    target = tmp_path / "m.model"
    target.write_bytes(b"good")

    def broken(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, broken)
    assert target.read_bytes() == b"good" and temp_files(tmp_path) == []


# ----------------------------------------------------------------------------------
# signals and stale temporary files
# ----------------------------------------------------------------------------------

SIGNALLED_WRITER = textwrap.dedent("""
    import os, signal, sys, time
    from rnnkit.files import write_atomic

    if sys.argv[2] == "as-pid-1":
        os.kill = lambda pid, signum: None   # as PID 1, a default-action signal is ignored

    def write_to(handle):
        handle.write(b"x" * 100_000)
        handle.flush()
        signal.raise_signal(signal.SIGTERM)   # mid-write, deterministically
        time.sleep(30)                        # never reached: SIGTERM ends the process

    write_atomic(sys.argv[1], write_to)
""")


@pytest.mark.parametrize("mode, status", [("normal", -signal.SIGTERM), ("as-pid-1", 128 + signal.SIGTERM)])
def test_sigterm_during_write_removes_temp_file(tmp_path, mode, status):
    """SIGTERM mid-write ends the process with the usual status (killed by the signal;
    as a container's PID 1, which survives it, exit 143), removes the temporary file and
    leaves the old model as it was."""
    target = tmp_path / "m.model"
    target.write_bytes(b"good")
    result = subprocess.run([sys.executable, "-c", SIGNALLED_WRITER, str(target), mode], timeout=20)
    assert result.returncode == status
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.model"]
    assert target.read_bytes() == b"good"


def test_python_signal_handler_runs_and_is_restored(tmp_path):
    """A Python handler set by the caller is not replaced: it runs, its exception removes
    the temporary file, and the handlers are as before afterwards."""
    def stop(signum, frame):
        raise SystemExit(3)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        def write_to(handle):
            handle.write(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)   # the handler raises before this ends

        with pytest.raises(SystemExit):
            write_atomic(tmp_path / "m.model", write_to)
        assert signal.getsignal(signal.SIGTERM) is stop
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []
    write_atomic(tmp_path / "m.model", write_bytes(b"ok"))
    assert signal.getsignal(signal.SIGTERM) == previous


def test_write_from_a_thread(tmp_path):
    """Outside the main thread no handler can be set: the write still happens."""
    errors = []

    def run():
        try:
            write_atomic(tmp_path / "m.model", write_bytes(b"from thread"))
        except Exception as exc:   # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors == [] and (tmp_path / "m.model").read_bytes() == b"from thread"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temp_files_swept_live_and_foreign_kept(tmp_path):
    """A temporary file of ours from a dead writer (kill -9) is swept once past the grace
    period; a live writer's, a fresh one and files not of our naming are kept."""
    hour_ago = time.time() - 3600
    two_days_ago = time.time() - 2 * 24 * 3600
    files = {
        f".m.model.rnnkit-{dead_pid()}-abc12345.tmp": (hour_ago, False),
        f".m.model.rnnkit-{os.getpid()}-abc12345.tmp": (hour_ago, True),    # live writer
        f".m.model.rnnkit-{dead_pid()}-fresh123.tmp": (time.time(), True),  # within the grace
        f".m.model.rnnkit-{os.getpid()}-old12345.tmp": (two_days_ago, False),  # pid reused
        ".m.model.abc12345.tmp": (two_days_ago, True),                      # not our naming
        "notes.tmp": (two_days_ago, True),
    }
    for name, (mtime, _) in files.items():
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (mtime, mtime))
    write_atomic(tmp_path / "other.model", write_bytes(b"x"))   # any write sweeps
    kept = {name for name, (_, keep) in files.items() if keep}
    assert set(temp_files(tmp_path)) == kept


def test_sweep_ignores_unreadable_directory(tmp_path):
    """Sweeping is housekeeping: a directory it cannot list is no error."""
    sweep_stale(tmp_path / "missing")


# ----------------------------------------------------------------------------------
# check_outputs and the CLI: an output is never an input
# ----------------------------------------------------------------------------------

def test_check_outputs_identity_rules(tmp_path):
    """Same file by inode (hard link, symlink) or, for new files, by resolved path."""
    source = tmp_path / "in.txt"
    source.write_text("text")
    os.link(source, tmp_path / "hard.txt")
    (tmp_path / "soft.txt").symlink_to("in.txt")
    for alias in ("in.txt", "hard.txt", "soft.txt"):
        with pytest.raises(OutputError, match="is the input"):
            check_outputs({"-o": tmp_path / alias}, {"the input": source})
    with pytest.raises(OutputError, match="--arpa .* is the same file as -o"):
        check_outputs({"-o": tmp_path / "new", "--arpa": tmp_path / "." / "new"}, {})
    check_outputs({"-o": tmp_path / "new", "--arpa": None}, {"the input": source, "absent": None,
                                                              "several": [tmp_path / "missing"]})


def test_train_refuses_corpus_as_output(work):
    """`train corpus.txt -o corpus.txt` fails with one line and the corpus is intact."""
    corpus = work["corpus"]
    result = invoke(["train", corpus, "--type", "ngram", "-o", corpus])
    assert_refused(result, f"-o {corpus} is the training corpus: refusing to overwrite an input")
    assert corpus.read_text(encoding="utf-8") == CORPUS


def test_train_refuses_hard_link_and_symlink_to_corpus(work, tmp_path):
    """An output that is the corpus under another name is the corpus."""
    hard = tmp_path / "hard.txt"
    os.link(work["corpus"], hard)
    soft = tmp_path / "soft.txt"
    soft.symlink_to(work["corpus"])
    for alias in (hard, soft):
        assert_refused(invoke(["train", work["corpus"], "--type", "ngram", "-o", alias]),
                       f"is the training corpus ({work['corpus']})")
    assert work["corpus"].read_text(encoding="utf-8") == CORPUS


def test_train_refuses_valid_text_and_arpa_equal_to_output(work, tmp_path):
    """-o naming --valid, and --arpa naming -o, are refused before training; nothing written."""
    valid = tmp_path / "valid.txt"
    valid.write_text("나는 버스를 탔다\n", encoding="utf-8")
    assert_refused(invoke(["train", work["corpus"], "-o", valid, "--valid", valid]), "is the --valid text")
    out = tmp_path / "kn.model"
    assert_refused(invoke(["train", work["corpus"], "--type", "ngram", "-o", out, "--arpa", out]),
                   f"--arpa {out} is the same file as -o {out}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["valid.txt"]


def test_train_refuses_fifo_output_before_training(work, tmp_path):
    """A FIFO as -o is refused at once (the write would otherwise block or replace it)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_refused(invoke(["train", work["corpus"], "--type", "ngram", "-o", fifo]), "it is a FIFO")


def test_train_resume_may_rewrite_its_model(work, tmp_path):
    """--resume reads -o and writes it back: that is the one allowed overlap."""
    model = tmp_path / "rnn.model"
    args = ["train", work["corpus"], "-o", model, "--hidden", 8, "--bptt", 4, "--batch", 4, "--threads", 1]
    assert invoke([*args, "--epochs", 1]).exit_code == 0
    result = invoke([*args, "--epochs", 2, "--resume"])
    assert result.exit_code == 0, result.output


def test_export_refuses_its_model(work):
    """export -o naming -m (also with --arpa) is refused and the model is unchanged."""
    before = work["a"].read_bytes()
    for extra in ([], ["--arpa"]):
        assert_refused(invoke(["export", "-m", work["a"], "-o", work["a"], *extra]),
                       f"-o {work['a']} is the -m model: refusing to overwrite an input")
    assert work["a"].read_bytes() == before


def test_mix_refuses_its_models_and_tune_text(work):
    """mix -o naming one of the -m models or the --tune text is refused."""
    before = work["b"].read_bytes()
    assert_refused(invoke(["mix", "-m", work["a"], "-m", work["b"], "-o", work["b"]]),
                   f"-o {work['b']} is an -m model")
    assert_refused(invoke(["mix", "-m", work["a"], "-m", work["b"], "--tune", work["corpus"],
                           "-o", work["corpus"]]), "is the --tune text")
    assert work["b"].read_bytes() == before
    assert work["corpus"].read_text(encoding="utf-8") == CORPUS


def test_info_plot_refuses_its_model(work):
    """info --plot naming the model is refused (before matplotlib is even needed)."""
    before = work["a"].read_bytes()
    assert_refused(invoke(["info", "-m", work["a"], "--plot", work["a"]]),
                   f"--plot {work['a']} is the -m model")
    assert work["a"].read_bytes() == before


def test_export_through_symlink_keeps_link_and_mode(work, tmp_path):
    """A CLI write through a symlink to a 0600 file updates the target, keeps link and mode."""
    target = tmp_path / "copy.model"
    target.write_bytes(b"old")
    target.chmod(0o600)
    link = tmp_path / "link.model"
    link.symlink_to(target)
    assert invoke(["export", "-m", work["a"], "-o", link]).exit_code == 0
    assert link.is_symlink() and target.read_bytes() == work["a"].read_bytes()
    assert target.stat().st_mode & 0o777 == 0o600
