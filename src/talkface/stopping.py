"""Signals that end a run: Ctrl-C (SIGINT), SIGTERM (kill, timeout, docker stop) and SIGHUP (the
terminal closed) all raise `Stopped` in the main thread, so every cleanup a run has (the temporary
video above all) runs for each of them.

Native code can swallow an exception raised while it calls back into Python (PyAV's resampler
does), and the job would then run to its end; so the signal is also remembered, and `check()`, called
in the loops that decode and encode, raises it again (Python's note on the swallowed one is dropped).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

_received: int | None = None


class Stopped(KeyboardInterrupt):
    """The run was ended by a signal (a KeyboardInterrupt, so that what cleans up after Ctrl-C cleans up after it too)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame) -> None:
    global _received
    first = _received is None
    _received = signum
    if first:  # a second signal while the first one's cleanup runs must not cut that cleanup short
        raise Stopped(signum)


def check() -> None:
    """Raise `Stopped` if a signal has ended the run (again, in case native code swallowed it)."""
    if _received is not None:
        raise Stopped(_received)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, the signals that end a run raise `Stopped` (main thread only; signals that
    were ignored stay ignored, as under nohup)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _stop)
    hook = sys.unraisablehook

    def unraisable(info) -> None:
        if not isinstance(info.exc_value, Stopped):  # a swallowed stop is raised again by `check()`
            hook(info)

    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        _received = None
