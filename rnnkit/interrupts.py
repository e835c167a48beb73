"""Ctrl-C (SIGINT) and SIGTERM during a long job: stop cleanly instead of dying mid-write.

Both signals are treated alike. `StopSignals` installs its handler only for the
duration of a `with` block and only in the main thread (Python delivers signals
there alone), leaves a signal that is ignored (SIG_IGN, as under nohup) ignored, and
puts the previous handlers back afterwards.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# what a shell reports for a process ended by the signal: 128 + its number
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
    """A job stopped because of a signal (`signum`). A KeyboardInterrupt, so code that
    already stops on Ctrl-C stops on it too."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Within `with StopSignals() as stop:`, the first SIGINT or SIGTERM only sets
    `stop.signum`: the job polls it and stops at a point where it can save its work.
    A second signal (the user insists) raises Interrupted at once, as does the first
    one with at_once=True (for a job with nothing to save half-way)."""

    def __init__(self, at_once: bool = False):
        self.at_once = at_once
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            # None: the previous handler was not set from Python; the default is the closest
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self.previous = {}

    def handle(self, signum: int, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if self.at_once or not first:
            raise Interrupted(signum)
