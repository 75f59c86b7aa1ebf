"""Every signal that ends a run (Ctrl-C, SIGTERM, SIGHUP) removes the temporary video and ends in one
line, even when native code swallows the interrupt."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import speech_like, write_audio, write_face_video
from talkface import stopping
from talkface.cli import main
from talkface.media.audio import iter_audio

SRC = Path(__file__).parents[1] / "src"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    speech = Path(write_audio(d / "speech.wav", np.tile(speech_like(2.0, seed=6), 30)))  # a minute: still writing when stopped
    write_face_video(d / "face.mp4", 12)
    return {"speech": speech, "video": d / "face.mp4"}


def _default_signals() -> None:
    for signum in stopping.SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


@pytest.fixture
def interruptible():
    """Ctrl-C raises KeyboardInterrupt in this process, even where a background shell set it to be ignored."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("name, command", [("SIGTERM", "generate"), ("SIGINT", "generate"), ("SIGHUP", "dub"), ("SIGTERM", "dub")])
def test_a_signal_mid_write_leaves_nothing_behind(name, command, files, tiny_checkpoint, tmp_path):
    if not hasattr(signal, name):
        pytest.skip(f"no {name} here")
    out = tmp_path / "out.mp4"
    given = ["--video", str(files["video"])] if command == "dub" else []
    argv = [command, "--checkpoint", str(tiny_checkpoint), "--quiet", *given, "--audio", str(files["speech"]), "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    # a shell's background job (CI started with `&`, or under nohup) inherits ignored signals: the child gets them back
    child = subprocess.Popen([sys.executable, "-m", "talkface", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".talkface-*")) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.poll() is None, "the run ended before it could be stopped"
        assert list(tmp_path.glob(".talkface-*")), "no temporary video appeared"
        time.sleep(0.2)
        child.send_signal(getattr(signal, name))
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    signum = getattr(signal, name)
    expected = "talkface: interrupted" if name == "SIGINT" else f"talkface: stopped by {name}"
    assert (child.returncode, stderr.splitlines(), stdout) == (128 + signum, [expected], "")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_that_native_code_swallowed_still_ends_the_decoding(files, interruptible):
    before = signal.getsignal(signal.SIGINT)
    chunks = iter_audio(files["speech"], 16000, chunk=16000)
    with stopping.stop_on_signals():
        next(chunks)
        try:  # what PyAV's resampler does to an exception raised in a callback
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt):
            for _ in chunks:
                pass
    assert signal.getsignal(signal.SIGINT) is before


def test_the_command_puts_the_signal_handlers_back(tmp_path, capfd):
    before = {s: signal.getsignal(s) for s in stopping.SIGNALS}
    assert main(["generate", "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert {s: signal.getsignal(s) for s in stopping.SIGNALS} == before
    assert capfd.readouterr().err.count("\n") == 1


def test_a_swallowed_stop_leaves_no_note_on_stderr(monkeypatch):
    """Python's note on an exception that native code dropped is not printed for a stop, only for others."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(type(info.exc_value)))

    def dropped(error: BaseException):
        return type("Unraisable", (), {"exc_type": type(error), "exc_value": error, "exc_traceback": None, "err_msg": None, "object": None})()

    with stopping.stop_on_signals():
        sys.unraisablehook(dropped(stopping.Stopped(signal.SIGTERM)))
        sys.unraisablehook(dropped(ValueError("a real problem")))
    assert seen == [ValueError]
    sys.unraisablehook(dropped(stopping.Stopped(signal.SIGINT)))  # the hook is put back
    assert seen == [ValueError, stopping.Stopped]
