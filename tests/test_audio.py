import numpy as np
import pytest

from conftest import speech_like, write_audio
from talkface.config import AudioConfig
from talkface.errors import TalkfaceError
from talkface.media.audio import MFCC_SCALE, FeatureStream, dct_matrix, hann, iter_audio, load_audio, mel_filterbank, mfcc_windows, num_frames, power_to_db


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


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(24000) / 16000
    return {
        "speech-like": speech_like(1.5, seed=7),
        "noise": (0.1 * rng.standard_normal(24000)).astype(np.float32),
        "silence": np.zeros(24000, np.float32),
        "loud": np.clip(4 * np.sin(2 * np.pi * 180 * t) + rng.standard_normal(24000), -1, 1).astype(np.float32),
        "faint tones": (1e-5 * (np.sin(2 * np.pi * 300 * t) + np.sin(2 * np.pi * 5200 * t))).astype(np.float32),
    }


class _LibrosaStream(FeatureStream):
    """FeatureStream with librosa computing the MFCC columns (what the numpy code replaces)."""

    def _columns(self, audio):
        import librosa

        cfg = self.cfg
        frames = np.lib.stride_tricks.sliding_window_view(audio, cfg.win_length)[:: cfg.hop]
        window = librosa.filters.get_window("hann", cfg.win_length, fftbins=True).astype(np.float32)
        power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
        mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.win_length, n_mels=cfg.n_mels)
        logmel = librosa.power_to_db(mel @ power.T, ref=1.0, amin=1e-10, top_db=None)
        return (librosa.feature.mfcc(S=logmel, n_mfcc=cfg.n_mfcc, dct_type=2, norm="ortho") * MFCC_SCALE).astype(np.float32)


def test_mfcc_equals_librosa():
    librosa = pytest.importorskip("librosa", reason="librosa, the MFCC reference, is not installed (a test dependency: pip install -e '.[test]')")
    cfg = AudioConfig()
    n = cfg.win_length
    np.testing.assert_allclose(mel_filterbank(cfg.sample_rate, n, cfg.n_mels), librosa.filters.mel(sr=cfg.sample_rate, n_fft=n, n_mels=cfg.n_mels), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(hann(n), librosa.filters.get_window("hann", n, fftbins=True).astype(np.float32))
    for name, audio in _signals().items():
        frames = np.lib.stride_tricks.sliding_window_view(audio, n)[:: cfg.hop]
        power = (np.abs(np.fft.rfft(frames * hann(n), axis=1)) ** 2).T
        ours = dct_matrix(cfg.n_mfcc, cfg.n_mels) @ power_to_db(mel_filterbank(cfg.sample_rate, n, cfg.n_mels) @ power)
        mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=n, n_mels=cfg.n_mels)
        theirs = librosa.feature.mfcc(S=librosa.power_to_db(mel @ power, ref=1.0, amin=1e-10, top_db=None), n_mfcc=cfg.n_mfcc, dct_type=2, norm="ortho")
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4, err_msg=name)
        windows = mfcc_windows(audio, cfg)
        reference = np.concatenate([(s := _LibrosaStream(cfg)).push(audio), s.flush()])
        np.testing.assert_allclose(windows / MFCC_SCALE, reference / MFCC_SCALE, rtol=0, atol=1e-4, err_msg=name)
