"""Native libraries' log lines (mediapipe, TensorFlow Lite, absl) kept off stderr.

mediapipe's graphs write INFO and WARNING lines straight to file descriptor 2 from their C++
threads ("Created TensorFlow Lite XNNPACK delegate", "All log messages before absl::InitializeLog()",
"W0000 ... inference_feedback_manager ..."), and read no setting that silences them
(GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL are ignored). So while mediapipe runs, descriptor 2
points at a temporary file; when the last caller is done, everything else written there meanwhile
(our messages, a progress bar, another thread's log) goes on to the real stderr, in order, and
only the native log lines are dropped.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# absl / glog lines ("W0000 00:00:1796034579.499510    8937 file.cc:114] ..."; fatal ones are kept),
# TensorFlow Lite's "INFO: ..." lines and absl's note about its own initialisation.
NATIVE_LINE = re.compile(rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] |INFO: |WARNING: All log messages before absl::InitializeLog\(\))")

_lock = threading.Lock()
_depth = 0  # callers inside `hidden()`; descriptor 2 is redirected while it is above 0
_saved: int | None = None  # the real stderr, duplicated
_capture = None  # the temporary file descriptor 2 points at meanwhile


def keep(data: bytes) -> bytes:
    """`data` without its native log lines."""
    return b"".join(line for line in data.splitlines(keepends=True) if not NATIVE_LINE.match(line))


def _flush() -> None:
    if sys.stderr is not None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def _start() -> None:
    global _saved, _capture
    _flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to protect
        return
    try:
        capture = tempfile.TemporaryFile()
        os.dup2(capture.fileno(), 2)
    except OSError:  # nowhere to hold the lines: let them through
        os.close(saved)
        return
    _saved, _capture = saved, capture


def _stop() -> None:
    global _saved, _capture
    if _saved is None:
        return
    _flush()
    os.dup2(_saved, 2)
    os.close(_saved)
    _capture.seek(0)
    data = keep(_capture.read())
    _capture.close()
    _saved = _capture = None
    while data:
        try:
            data = data[os.write(2, data):]
        except OSError:
            break


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
