"""A video that cannot be written (a disk that fills up mid-run or as the file is closed) ends in exit
code 2 with one line, and leaves neither the output nor a temporary file behind.

A full disk is simulated in a child process: PyAV's output container is wrapped so that its `mux` or
`close` raises OSError(ENOSPC), or it writes to /dev/full. The child keeps a crash (PyAV touching a closed container) from
taking pytest down with it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import speech_like, write_audio, write_face_video

SRC = Path(__file__).parents[1] / "src"

DRIVER = """
import errno, json, os, sys
import av
from talkface.cli import main

fail_at, argv = sys.argv[1], json.loads(sys.argv[2])
real_open = av.open


class FullDisk:
    def __init__(self, container):
        self.container, self.muxed = container, 0

    def mux(self, packet):
        self.muxed += 1
        if fail_at == "mux" and self.muxed > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.container.mux(packet)

    def close(self):
        self.container.close()
        if fail_at == "close":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.container, name)


def open_(file, mode="r", *args, **kwargs):
    if mode == "w" and fail_at == "/dev/full":  # FFmpeg's own writes fail, with ENOSPC
        return real_open("/dev/full", mode, *args, **kwargs)
    container = real_open(file, mode, *args, **kwargs)
    return FullDisk(container) if mode == "w" else container


av.open = open_
try:
    code = main(argv)
except SystemExit as e:
    code = e.code
sys.exit(code)
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    speech = Path(write_audio(d / "speech.wav", speech_like(1.2, seed=4)))
    write_face_video(d / "face.mp4", 12)
    return {"speech": speech, "video": d / "face.mp4"}


def run_child(fail_at: str, argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", DRIVER, fail_at, json.dumps([str(a) for a in argv])], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fail_at", ["mux", "close", "/dev/full"])
@pytest.mark.parametrize("command", ["generate", "dub"])
def test_a_full_disk_ends_in_one_line_and_leaves_nothing(command, fail_at, files, tiny_checkpoint, tmp_path):
    if fail_at == "/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    out = tmp_path / "out.mp4"
    given = ["--video", files["video"]] if command == "dub" else []
    p = run_child(fail_at, [command, "--checkpoint", tiny_checkpoint, "--quiet", *given, "--audio", files["speech"], "--out", out])
    lines = p.stderr.splitlines()
    assert p.returncode == 2, (p.returncode, lines[-5:])
    assert lines == [f"talkface: error: {out}: cannot be written: no space left on the device"]
    assert p.stdout == ""
    assert list(tmp_path.iterdir()) == []  # neither the video nor its temporary file


def test_the_writer_refuses_samples_the_encoder_cannot_take(tmp_path):
    """Two channels of 1e20 in opposite phase cancel in the mono pre-scan; the writer finds them."""
    import av
    import numpy as np

    from talkface.errors import TalkfaceError
    from talkface.media.video import VideoWriter

    speech = speech_like(0.4, seed=2)
    stereo = np.stack([speech, speech]).astype(np.float32)
    stereo[:, 2000] = (1e20, -1e20)
    audio = tmp_path / "opposed.wav"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("pcm_f32le", rate=16000)
        s.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(stereo.T.reshape(1, -1).copy(), format="flt", layout="stereo")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    out = tmp_path / "out.mp4"
    with pytest.raises(TalkfaceError, match="contains invalid samples") as caught:
        with VideoWriter(out, 25, (64, 48), audio_path=audio) as writer:
            for _ in range(10):
                writer.write(np.zeros((64, 48, 3), np.uint8))
    assert caught.value.path == str(audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opposed.wav"]


def test_a_writer_that_failed_refuses_more_work_and_closes_once(tmp_path):
    import numpy as np

    from talkface.media.video import VideoWriter, iter_frames

    out = tmp_path / "out.mp4"
    with VideoWriter(out, 25, (64, 48)) as writer:
        writer.write(np.zeros((64, 48, 3), np.uint8))
        writer.close()  # closed inside the block: leaving it does not close again
    assert len(list(iter_frames(out))) == 1
    writer = VideoWriter(tmp_path / "aborted.mp4", 25, (64, 48))
    writer.write(np.zeros((64, 48, 3), np.uint8))
    writer.abort()
    writer.abort()
    with pytest.raises(RuntimeError, match="has already stopped"):
        writer.write(np.zeros((64, 48, 3), np.uint8))
    with pytest.raises(RuntimeError, match="has already stopped"):
        writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_patches_of_a_frame_encode_as_the_whole_frames_would(tmp_path):
    from talkface.media.video import VideoWriter, iter_frames

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (96, 128, 3), np.uint8)
    frames = []
    for i in range(8):
        frame = base.copy()
        frame[20:60, 30 + 4 * i : 70 + 4 * i] = (30 * i, 200, 90)
        frames.append(frame)
    box = (28, 20, 104, 60)
    with VideoWriter(tmp_path / "whole.mp4", 25, (96, 128)) as writer:
        for frame in frames:
            writer.write(frame)
    with VideoWriter(tmp_path / "patched.mp4", 25, (96, 128)) as writer:
        with pytest.raises(ValueError, match="whole frame"):
            writer.write(frames[0][20:60, 28:104], at=(28, 20))
        writer.write(frames[0])
        for frame in frames[1:]:
            writer.write(frame[20:60, 28:104], at=box[:2])
        with pytest.raises(ValueError, match="even"):
            writer.write(frames[0][21:61, 28:104], at=(28, 21))
    whole, patched = list(iter_frames(tmp_path / "whole.mp4")), list(iter_frames(tmp_path / "patched.mp4"))
    assert len(whole) == len(patched) == 8
    assert all(np.array_equal(a, b) for a, b in zip(whole, patched))
