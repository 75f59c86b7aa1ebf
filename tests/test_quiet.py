"""Commands that touch a face print only talkface's own lines on stderr, never mediapipe's native logs.

Each runs in a fresh process: TensorFlow Lite and absl print some lines once per process only.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import ASSETS, speech_like, write_audio, write_face_video

SRC = Path(__file__).parents[1] / "src"
ENV = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def talkface(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talkface", *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_generate_on_the_bundled_example_prints_nothing_on_stderr(tiny_checkpoint, tmp_path):
    p = talkface("generate", "--checkpoint", tiny_checkpoint, "--out", "talk.mp4", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == []
    assert p.stdout.splitlines() == ["talk.mp4"]


def test_a_photo_with_no_face_gives_exactly_one_line(tiny_checkpoint, tmp_path):
    photo = tmp_path / "wall.png"
    Image.fromarray(np.random.default_rng(0).integers(100, 140, (288, 360, 3), np.uint8)).save(photo)
    p = talkface("generate", "--checkpoint", tiny_checkpoint, "--image", photo, "--out", "talk.mp4", "--quiet", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.splitlines() == [f"talkface: error: {photo}: no face found"]
    assert not (tmp_path / "talk.mp4").exists()


def test_dub_evaluate_preprocess_and_train_sync_print_nothing_on_stderr(tiny_checkpoint, tmp_path):
    speech = write_audio(tmp_path / "speech.wav", speech_like(0.4, seed=5))
    (tmp_path / "clips").mkdir()
    for name in ("talk", "talk2", "talk3"):
        write_face_video(tmp_path / "clips" / f"{name}.mp4", 10, audio_path=speech)
    script = f"""
import sys
from talkface.cli import main
codes = [
    main(["dub", "--checkpoint", {str(tiny_checkpoint)!r}, "--video", "clips/talk.mp4", "--audio", "speech.wav", "--out", "dubbed.mp4", "--quiet"]),
    main(["evaluate", "--video", "clips/talk.mp4", "--audio", "speech.wav", "--out", "scores", "--quiet"]),
    main(["preprocess", "clips", "--out", "shards", "--clip-seconds", "0.2", "--quiet"]),
    main(["train-sync", "--data", "clips", "--out", "sync", "--cache", "cache", "--quiet",
          "--set", "steps=1", "--set", "batch_size=2", "--set", "val_clips=1"]),
]
sys.exit(max(codes))
"""
    p = subprocess.run([sys.executable, "-c", script], env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_servers_log_has_only_its_own_lines(tiny_checkpoint, tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "talkface", "serve", "--checkpoint", str(tiny_checkpoint), "--port", str(port)],
                              env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().startswith(f"talkface serve: http://127.0.0.1:{port}/")
        statuses = []
        for body in ((ASSETS / "example_face.png").read_bytes(), b"not a photo"):
            for attempt in range(100):  # the banner comes just before the socket listens
                try:
                    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/face", data=body), timeout=60) as r:
                        statuses.append(r.status)
                    break
                except urllib.error.HTTPError as e:
                    statuses.append(e.code)
                    break
                except urllib.error.URLError:
                    time.sleep(0.1)
        assert statuses == [200, 400]
        with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:  # not HTTP: logged in one line
            raw.sendall(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.")
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    lines = err.splitlines()
    assert all(line.startswith("talkface serve: ") for line in lines), lines
    requests = [line for line in lines if re.fullmatch(r"talkface serve: POST /api/face \d{3} \d+ ms", line)]
    assert [line.split()[4] for line in requests] == ["200", "400"]  # one line per request, the refused one included
    others = [line for line in lines if line not in requests]
    assert len(others) == 1 and "Error handling request" in others[0]  # the request that was not HTTP


def test_native_lines_are_dropped_and_everything_else_kept_across_threads(capfd):
    import threading

    from talkface import native_logs

    native = [b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
              b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
              b"W0000 00:00:1796034579.499510    8937 inference_feedback_manager.cc:114] Feedback manager requires a model\n",
              b"I0000 00:00:1796034579.5 12 gl_context.cc:357] GL version\n"]
    before = os.fstat(2)

    def work(k: int) -> None:
        for i in range(20):
            with native_logs.hidden():
                os.write(2, native[(k + i) % len(native)])
                os.write(2, f"ours {k} {i}\n".encode())
            os.write(2, f"outside {k} {i}\n".encode())

    expected = sorted([f"ours {k} {i}" for k in range(4) for i in range(20)] + [f"outside {k} {i}" for k in range(4) for i in range(20)])
    for _ in range(50):  # a line written by one thread just as another's capture ends was once lost
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(capfd.readouterr().err.splitlines()) == expected
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # stderr is itself again


def test_a_child_process_started_while_native_lines_are_hidden_neither_blocks_nor_loses_its_lines(capfd):
    from talkface import native_logs

    started = time.monotonic()
    with native_logs.hidden():  # the child's stderr is the capture's pipe, still open when the capture ends
        child = subprocess.Popen([sys.executable, "-c", "import sys; print('child early', file=sys.stderr, flush=True); sys.stdin.read(); "
                                  "print('INFO: native', file=sys.stderr, flush=True); print('child late', file=sys.stderr)"],
                                 stdin=subprocess.PIPE)
        os.write(2, b"ours\n")
    assert time.monotonic() - started < 30  # the capture gave up waiting for the child
    child.communicate(b"", timeout=60)
    err = ""
    for _ in range(200):  # the child's last lines pass through as they come
        err += capfd.readouterr().err
        if "child late" in err:
            break
        time.sleep(0.05)
    assert sorted(err.splitlines()) == ["child early", "child late", "ours"]


def test_a_native_line_written_in_pieces_is_dropped_whole_though_the_capture_ends_mid_line(capfd):
    import threading

    from talkface import native_logs

    begun = threading.Event()

    def native() -> None:  # as TensorFlow Lite writes its lines: prefix, message, newline
        os.write(2, b"INFO: ")
        begun.set()
        time.sleep(0.03)
        os.write(2, b"Created TensorFlow Lite XNNPACK delegate for CPU.")
        time.sleep(0.03)
        os.write(2, b"\n")

    with native_logs.hidden():
        writer = threading.Thread(target=native)
        writer.start()
        begun.wait()
    writer.join()
    assert capfd.readouterr().err == ""
    started = time.monotonic()
    with native_logs.hidden():
        os.write(2, b"\rdub:  45%")  # a progress bar's line, unfinished: passed on at once
    assert time.monotonic() - started < 0.1
    assert capfd.readouterr().err == "\rdub:  45%"
