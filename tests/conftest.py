import asyncio
import os
import tempfile
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from talkface.config import AudioConfig

torch.set_num_threads(min(2, os.cpu_count() or 1))
# exported graphs (talkface.accel.cache_folder) go to a folder of this run's, not the user's cache; the
# commands the tests start inherit it
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="talkface-test-cache-")


def write_audio(path, samples: np.ndarray, rate: int = 16000, codec: str | None = None) -> str:
    """Encode mono float samples to any container PyAV knows, by the file's extension."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    codec = codec or {".wav": "pcm_s16le", ".mp3": "libmp3lame", ".m4a": "aac", ".flac": "flac", ".ogg": "libopus"}[ext]
    fmt = "ipod" if ext == ".m4a" else None
    with av.open(path, "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = "mono"
        fmt_name = s.codec_context.codec.audio_formats[0].name
        frame_len = {"libmp3lame": 1152, "libopus": 960}.get(codec, 1024)
        for i in range(0, len(samples), frame_len):
            block = np.asarray(samples[i : i + frame_len], np.float32)
            if fmt_name.startswith("s16"):
                data = (np.clip(block, -1, 1) * 32767).astype(np.int16)[None]
            elif fmt_name.startswith("s32"):
                data = (np.clip(block, -1, 1) * 2147483647).astype(np.int32)[None]
            else:
                data = block[None]
            f = av.AudioFrame.from_ndarray(data, format=fmt_name, layout="mono")
            f.sample_rate = rate
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    from talkface.data.synthetic import _speech

    frames = int(round(seconds * 25))
    audio, _, _ = _speech(np.random.default_rng(seed), frames, AudioConfig(sample_rate=rate), 140.0)
    return audio


@pytest.fixture
def one_thread():
    """Torch in one thread, for many calls of a tiny model: on a busy machine a second thread mostly
    spins waiting for the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def speech_wav(tmp_path):
    return write_audio(tmp_path / "speech.wav", speech_like(2.0))


ASSETS = Path(__file__).parents[1] / "src" / "talkface" / "assets"
SHARED = Path(__file__).parents[1].parent / "shared"  # beside the repository checkout


def no_grid(path) -> str:
    """Why a test that needs the GRID data is skipped."""
    return f"GRID s1 data not found at {path}: this test needs the GRID speaker s1 clips in ../shared/data/grid_s1 beside the checkout"


@pytest.fixture(scope="session")
def face_image() -> np.ndarray:
    """A real frontal face, 360x288 (a GRID frame shipped as the package's example)."""
    from talkface.media.image import load_image

    return load_image(ASSETS / "example_face.png")


@pytest.fixture(scope="session")
def grid_video() -> Path:
    """A real talking-face clip from the GRID data set beside the checkout (skipped where it is absent)."""
    path = SHARED / "data" / "grid_s1" / "video" / "bbaf2n.mp4"
    if not path.exists():
        pytest.skip(no_grid(path))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Release weights (safetensors + config) of a freshly initialised tiny generator.

    Pipeline tests check shapes, frame counts, durations and untouched pixels, not quality, so the
    weights need no training (a two-step Trainer run would cost seconds for nothing they check).
    """
    from talkface.checkpoint import save_release
    from talkface.config import tiny
    from talkface.models import Generator

    cfg = tiny()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_run") / "generator.safetensors"
    save_release(path, Generator(cfg), cfg)
    return path


def write_face_video(path, frames: int, fps: float = 25.0, blank: tuple[int, ...] = (), audio_path=None, step: float = 1.5) -> list[np.ndarray]:
    """A clip of the example face drifting sideways, with each frame's index as a grey square in the
    top-left corner; frames listed in `blank` show no face. Returns the frames as decoded."""
    import cv2

    from talkface.media.image import load_image
    from talkface.media.video import VideoWriter, iter_frames

    face = load_image(ASSETS / "example_face.png")
    h, w = face.shape[:2]
    with VideoWriter(path, fps, (h, w), audio_path=audio_path) as writer:
        for i in range(frames):
            shift = np.float32([[1, 0, step * i], [0, 1, 0]])
            frame = cv2.warpAffine(face, shift, (w, h), borderMode=cv2.BORDER_REPLICATE)
            if i in blank:
                frame = np.full_like(face, 90)
            frame[:16, :16] = (10 + 12 * i) % 256
            writer.write(frame)
    return list(iter_frames(path))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> str:
    """Release weights of a tiny generator trained for 2 steps on synthetic faces."""
    from talkface.config import override, tiny
    from talkface.data.synthetic import write_synthetic_shards
    from talkface.training.gan import gan_task
    from talkface.training.loop import Trainer

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = override(tiny(), ["train.batch_size=2", "train.clip_frames=4", "train.checkpoint_every=1000", "train.log_every=1"])
    data = write_synthetic_shards(str(out / "data"), cfg, 4, 8, seed=1)
    Trainer(gan_task(cfg), data, str(out)).fit(2, progress=False)
    return str(out / "generator.safetensors")


@pytest.fixture(scope="session")
def motion_checkpoint(tmp_path_factory) -> Path:
    """Release weights of an untrained tiny motion model whose output layer is enlarged, so that its
    (random, audio-dependent) motion visibly moves the mouth: pipeline tests check plumbing, not quality."""
    from talkface.checkpoint import save_release
    from talkface.config import preset
    from talkface.models.motion import MotionModel

    cfg = preset("motion-tiny")
    torch.manual_seed(0)
    model = MotionModel(cfg)
    with torch.no_grad():
        model.head[-1].weight.mul_(4.0)
    path = tmp_path_factory.mktemp("motion_run") / "generator.safetensors"
    save_release(path, model, cfg)
    return path


class ServerThread:
    """The app on 127.0.0.1 (an ephemeral port) in a thread of its own, for a browser or curl to reach."""

    def __init__(self, app):
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        ready = threading.Event()

        def main():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        assert ready.wait(30)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
