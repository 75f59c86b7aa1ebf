import numpy as np
import pytest

from conftest import speech_like, write_audio
from talkface.config import AudioConfig
from talkface.errors import TalkfaceError
from talkface.media.audio import FeatureStream, iter_audio, load_audio, mfcc_windows, num_frames


def test_one_window_per_frame_and_streaming_matches_offline():
    cfg = AudioConfig()
    audio = speech_like(2.32)
    whole = mfcc_windows(audio, cfg)
    assert whole.shape == (num_frames(len(audio), cfg), 13, 35) == (58, 13, 35)
    stream, parts, i = FeatureStream(cfg), [], 0
    rng = np.random.default_rng(0)
    while i < len(audio):
        n = int(rng.integers(1, 4000))
        parts.append(stream.push(audio[i : i + n]))
        i += n
    parts.append(stream.flush())
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)


def test_frame_windows_are_local_in_time():
    cfg = AudioConfig()
    audio = np.zeros(16000, np.float32)
    audio[8000:8640] = 0.5 * np.sin(np.arange(640) * 0.3)  # a click during frame 12 (0.50-0.54 s)
    w = mfcc_windows(audio, cfg)
    energy = w[:, 0].max(1)
    silent = energy.min()
    hears = np.where(energy > silent + 1e-3)[0]
    reach = (cfg.window_ms / 2) / 40  # frames of context on each side
    assert 12 in hears and hears.min() >= 12 - reach - 1 and hears.max() <= 12 + reach + 1


def test_lookahead_is_what_the_stream_waits_for():
    cfg = AudioConfig()
    stream = FeatureStream(cfg)
    per_frame = 640
    lookahead = int(cfg.lookahead_ms * 16)
    got = stream.push(np.zeros(per_frame * 3 + lookahead - 200, np.float32))
    assert len(got) == 2  # frame 2's window is not complete yet
    got = stream.push(np.zeros(400, np.float32))
    assert len(got) == 1


@pytest.mark.parametrize("ext", [".wav", ".mp3", ".m4a", ".flac", ".ogg"])
def test_common_formats_any_rate_decode_to_16k_mono(tmp_path, ext):
    rate = 48000 if ext == ".ogg" else 44100
    t = np.arange(int(rate * 1.5)) / rate
    path = write_audio(tmp_path / f"tone file{ext}", 0.3 * np.sin(2 * np.pi * 440 * t), rate)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 24000) < 2000  # codec padding differs by format
    spectrum = np.abs(np.fft.rfft(audio[2000:18000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 5


def test_chunks_are_bounded(tmp_path):
    path = write_audio(tmp_path / "long.wav", speech_like(6.0))
    chunks = list(iter_audio(path, chunk=8000))
    assert max(len(c) for c in chunks) == 8000 and sum(len(c) for c in chunks) == 96000


def test_bad_audio_files_raise_clear_errors(tmp_path):
    with pytest.raises(TalkfaceError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(TalkfaceError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.mp3").write_bytes(b"this is not audio at all" * 50)
    with pytest.raises(TalkfaceError, match="junk.mp3"):
        load_audio(tmp_path / "junk.mp3")
