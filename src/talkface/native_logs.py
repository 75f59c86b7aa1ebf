"""Native libraries' log lines (mediapipe, TensorFlow Lite, absl) kept off stderr.

mediapipe's graphs write INFO and WARNING lines straight to file descriptor 2 from their C++
threads ("Created TensorFlow Lite XNNPACK delegate", "All log messages before absl::InitializeLog()",
"W0000 ... inference_feedback_manager ..."), and read no setting that silences them
(GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL are ignored). So while mediapipe runs, descriptor 2
points into a pipe that a thread of ours reads; when the last caller is done, everything else
written there meanwhile (our messages, a progress bar, another thread's log) goes on to the real
stderr, in order, and only the native log lines are dropped.

A pipe, not a file: a write another thread had begun before descriptor 2 was put back still lands
in the pipe, and the pipe ends only once that write is done, so waiting for its end loses nothing.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# absl / glog lines ("W0000 00:00:1796034579.499510    8937 file.cc:114] ..."; fatal ones are kept),
# TensorFlow Lite's "INFO: ..." lines and absl's note about its own initialisation.
NATIVE_LINE = re.compile(rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] |INFO: |WARNING: All log messages before absl::InitializeLog\(\))")
# the start of such a line, which TensorFlow Lite writes in pieces ("INFO: ", the message, "\n")
NATIVE_START = re.compile(rb"^(?:[IWE]\d{4} |INFO: |WARNING: )")
LINE_END_WAIT_S = 0.2  # how long the capture stays for the rest of a native line begun in it
PIPE_BYTES = 1 << 20  # room for a burst of lines while the reading thread waits its turn
CHILD_WAIT_S = 1.0  # a child process started meanwhile holds the pipe open: its lines then pass live

_lock = threading.Lock()
_depth = 0  # callers inside `hidden()`; descriptor 2 is redirected while it is above 0
_saved: int | None = None  # the real stderr, duplicated
_reader: _Reader | None = None


def keep(data: bytes) -> bytes:
    """`data` without its native log lines."""
    return b"".join(line for line in data.splitlines(keepends=True) if not NATIVE_LINE.match(line))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:
            return


class _Reader(threading.Thread):
    """Reads the pipe until every writer has closed it: holds what it reads until `release`, then
    passes the rest on to `out` line by line as it comes (only a child process still writes then)."""

    def __init__(self, fd: int):
        super().__init__(name="talkface-native-logs", daemon=True)
        os.set_blocking(fd, False)  # read under the guard only, so what was written is in the pipe or held
        self.fd = fd
        self.held = bytearray()
        self.out: int | None = None
        self.ended = False
        self.guard = threading.Lock()

    def run(self) -> None:
        poll = select.poll()
        poll.register(self.fd, select.POLLIN)
        try:
            while True:
                poll.poll()
                with self.guard:
                    if not self._drain():
                        break
                    if self.out is not None:
                        self._pass_lines()
        finally:
            with self.guard:
                self.ended = True
                os.close(self.fd)
                if self.out is not None:
                    _write_all(self.out, keep(bytes(self.held)))
                    os.close(self.out)
                    self.held.clear()

    def _drain(self) -> bool:
        """What the pipe holds now, added to `held` (the guard held); False once every writer has closed it."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self.held += chunk

    def _pass_lines(self) -> None:
        end = self.held.rfind(b"\n") + 1
        if end:
            _write_all(self.out, keep(bytes(self.held[:end])))
            del self.held[:end]

    def mid_line(self) -> bool:
        """A native line begun, its end not yet written."""
        with self.guard:
            if not self.ended:
                self._drain()
            return bool(NATIVE_START.match(self.held[self.held.rfind(b"\n") + 1 :]))

    def finish(self) -> None:
        """Pass on what was written up to now (all of it once the pipe has ended) to descriptor 2,
        the real stderr again; whatever a child process writes later follows as it comes."""
        self.join(CHILD_WAIT_S)
        with self.guard:
            if self.is_alive():
                self.out = os.dup(2)
                self._pass_lines()
            else:
                _write_all(2, keep(bytes(self.held)))
                self.held.clear()


def _flush() -> None:
    if sys.stderr is not None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def _start() -> None:
    global _saved, _reader
    _flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to protect
        return
    try:
        read, write = os.pipe()
    except OSError:  # nowhere to hold the lines: let them through
        os.close(saved)
        return
    try:
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # a smaller pipe still works: the reading thread keeps up
        pass
    reader = _Reader(read)
    try:
        reader.start()
    except RuntimeError:  # no thread to read with: let the lines through
        for fd in (saved, read, write):
            os.close(fd)
        return
    os.dup2(write, 2)
    os.close(write)
    _saved, _reader = saved, reader


def _stop() -> None:
    global _saved, _reader
    if _saved is None:
        return
    _flush()
    waited = time.monotonic() + LINE_END_WAIT_S
    while _reader.mid_line() and time.monotonic() < waited:  # else its last piece would reach stderr alone
        time.sleep(0.002)
    os.dup2(_saved, 2)
    os.close(_saved)
    _reader.finish()
    _saved = _reader = None


@contextmanager
def hidden() -> Iterator[None]:
    """Run the body with native log lines dropped from stderr; anything else written is kept.

    Safe across threads: the first caller in redirects descriptor 2, the last one out restores it.
    """
    global _depth
    with _lock:
        if _depth == 0:
            _start()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _stop()
