"""Safe output files: every file rnnkit writes goes through `write_atomic`.

A write goes to a temporary file in the target's directory, is fsync'd and renamed
over the target, then the directory is fsync'd: an interrupted write never clobbers
a good file, and a finished one survives a crash. Around that:

- a symlink is written through: its target is replaced, the link is kept;
- an existing target that is not a regular file (device, FIFO, socket, directory)
  is refused, so `-o /dev/null` run as root cannot replace the system's /dev/null;
- an existing file keeps its permission bits (a 0600 model stays 0600);
- SIGTERM/SIGHUP (and SIGINT when it would kill the process) remove the temporary
  file before the process dies; kill -9 cannot be caught, so each write sweeps the
  stale temporary files of dead writers from its directory (see `sweep_stale`);
- `scratch_files` gives a job working files (RNN training's id file) with the same
  names, removal and sweeping;
- `check_outputs` lets a command refuse, before any work, an output that is one of
  its inputs or another of its outputs.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path

from .errors import OutputError

# .{name}.rnnkit-{pid}-{random}.tmp; the name is cut to 50 characters (200 bytes of
# UTF-8 at most) so the temporary name fits NAME_MAX (255 bytes) whenever the name does
TEMP_NAME = re.compile(r"\..*\.rnnkit-(\d+)-[a-z0-9_]+\.tmp")
TEMP_NAME_KEEP = 50
# A temporary file is stale when its writer is gone; the grace period spares a live
# writer whose pid we cannot see (another PID namespace or host sharing the directory),
# and after STALE_AFTER even a live pid is taken to be a reused one.
SWEEP_GRACE_SECONDS = 600
STALE_AFTER_SECONDS = 24 * 3600
# Signals that kill a process by default and that a user or a supervisor sends.
CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def file_kind(mode: int) -> str | None:
    """What a non-regular file is, for an error message; None for a regular file."""
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISSOCK, "a socket")]
    for test, kind in kinds:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "a special file"


def output_target(path) -> tuple[Path, os.stat_result | None]:
    """The file a write to `path` replaces (symlinks followed) and its stat (None if new).

    Raises OutputError when it cannot be written: a non-regular file, a read-only file,
    a missing or read-only directory, a symlink loop.
    """
    try:
        target = Path(path).resolve()
    except RuntimeError:   # a symlink loop, before Python 3.13 (which raises OSError ELOOP)
        raise OutputError(f"cannot write {path}: symlink loop") from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        status = target.stat()
    except FileNotFoundError:
        status = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if status is not None:
        kind = file_kind(status.st_mode)
        if kind:
            raise OutputError(f"cannot write {path}: it is {kind}, not a regular file")
        if not os.access(target, os.W_OK):
            # replacing would succeed (the directory is writable), but the user protected the file
            raise OutputError(f"cannot write {path}: the file is read-only")
    if not target.parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: directory {target.parent} is not writable")
    return target, status


def write_atomic(path, write_to) -> None:
    """Call write_to(binary_file) on a temporary file next to `path`'s target, then
    rename it over the target. On any failure the temporary file is removed and the
    target is left as it was. Raises OutputError when the target cannot be written."""
    target, status = output_target(path)
    directory = target.parent
    sweep_stale(directory)
    mode = stat.S_IMODE(status.st_mode) & 0o777 if status else 0o666 & ~current_umask()
    try:
        fd, tmp_name = temporary_file(directory, target.name)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with removed_on_signal(tmp_name):
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)   # mkstemp makes 0600
                write_to(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    fsync_directory(directory)


def temporary_file(directory, name: str) -> tuple[int, str]:
    """mkstemp in `directory` under the name pattern that sweep_stale knows: (fd, path)."""
    return tempfile.mkstemp(prefix=f".{name[:TEMP_NAME_KEEP]}.rnnkit-{os.getpid()}-", suffix=".tmp", dir=directory)


@contextlib.contextmanager
def scratch_files(directory, names: list[str]):
    """New empty files in `directory` (None: the system's temporary directory), one per
    name, that are removed when the block ends, however it ends: an exception, or a
    signal that would kill the process (removed_on_signal). Stale ones of killed
    processes are swept first. Yields their paths; raises OutputError when they cannot
    be made."""
    directory = Path(directory if directory is not None else tempfile.gettempdir())
    sweep_stale(directory)
    paths = []
    try:
        for name in names:
            try:
                fd, path = temporary_file(directory, name)
            except OSError as exc:
                raise OutputError(f"cannot make a temporary file in {directory}: {exc.strerror or exc}") from None
            os.close(fd)
            paths.append(path)
        with removed_on_signal(*paths):
            yield paths
    finally:
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def fsync_directory(directory: Path) -> None:
    """Make the rename durable. Best effort: some file systems cannot fsync a directory,
    and the file itself is already complete and in place."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def removed_on_signal(*tmp_names: str):
    """While the block runs, a signal that would kill the process removes tmp_names first.

    Only signals left at their default action (death) get a handler: Python handlers
    (SIGINT's KeyboardInterrupt, a trainer's stop-after-this-epoch) keep running, and a
    raised exception removes the file on its way out of write_atomic. Handlers can only
    be set in the main thread; elsewhere the write goes on without them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def remove_and_die(signum, frame):
        for tmp_name in tmp_names:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)   # die of the signal, with the status the caller expects
        # still here: as PID 1 (a container's init) the kernel ignores a default-action
        # signal; stop anyway, with the status a shell reports for that signal
        raise SystemExit(128 + signum)

    installed = [sig for sig in CLEANUP_SIGNALS if signal.getsignal(sig) == signal.SIG_DFL]
    for sig in installed:
        signal.signal(sig, remove_and_die)
    try:
        yield
    finally:
        for sig in installed:
            signal.signal(sig, signal.SIG_DFL)


def sweep_stale(directory: Path) -> None:
    """Remove the temporary files that killed writers (kill -9, power loss) left behind.

    Only names of write_atomic's pattern are touched, and only when untouched for
    SWEEP_GRACE_SECONDS and either their pid is gone or they are older than
    STALE_AFTER_SECONDS. Housekeeping: any error leaves the file where it is.
    """
    now = time.time()
    with contextlib.suppress(OSError):
        with os.scandir(directory) as entries:
            for entry in entries:
                match = TEMP_NAME.fullmatch(entry.name)
                if not match or not entry.is_file(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError):
                    age = now - entry.stat(follow_symlinks=False).st_mtime
                    if age > SWEEP_GRACE_SECONDS and (age > STALE_AFTER_SECONDS
                                                      or not process_alive(int(match.group(1)))):
                        os.unlink(entry.path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, owned by another user
        return True
    except OverflowError:     # not a pid this system can have
        return False
    return True


def file_identity(path) -> tuple:
    """What makes two paths the same file: device and inode when it exists (hard links
    and symlinks included), else the resolved path (two new outputs can coincide too)."""
    try:
        status = os.stat(path)
    except OSError:
        return ("path", str(Path(path).resolve()))
    return ("inode", status.st_dev, status.st_ino)


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | list[str] | None]) -> None:
    """Refuse, before any work, outputs a command must not write.

    outputs: option -> path, e.g. {"-o": "ko.model", "--arpa": None} (None: not given).
    inputs: description -> path or paths, e.g. {"the training corpus": "corpus.txt",
    "an -m model": ["a.model", "b.model"]}. Each output must be writable (output_target),
    must not be one of the inputs (hard links and symlinks count) and must not be
    another output. Raises OutputError with a one-line message.
    """
    outputs = {option: path for option, path in outputs.items() if path is not None}
    input_ids = []
    for what, paths in inputs.items():
        for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths or []:
            if os.path.exists(path):   # a missing input fails when it is read, with its own message
                input_ids.append((what, path, file_identity(path)))
    seen: dict[tuple, str] = {}
    for option, path in outputs.items():
        output_target(path)
        identity = file_identity(path)
        for what, input_path, input_id in input_ids:
            if identity == input_id:
                named = "" if str(input_path) == str(path) else f" ({input_path})"
                raise OutputError(f"{option} {path} is {what}{named}: refusing to overwrite an input")
        if identity in seen:
            other = seen[identity]
            raise OutputError(f"{option} {path} is the same file as {other} {outputs[other]}: "
                              "give each output its own path")
        seen[identity] = option
