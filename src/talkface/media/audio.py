"""Audio in: any file PyAV can decode -> 16 kHz mono float32; MFCC windows, one per video frame.

Features are computed frame by frame on a fixed grid (no per-file normalisation), so the offline
path and a live stream that pushes audio in chunks of any size produce the same windows.

The MFCC are librosa's (slaney mel filterbank, power in dB, orthonormal DCT-II), computed by the
few numpy lines below: librosa's first call compiles numba code for seconds at every start-up.
tests/test_audio.py holds them to librosa's output.
"""
from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterator

import av
import numpy as np

from talkface import stopping
from talkface.config import AudioConfig
from talkface.errors import TalkfaceError

MFCC_SCALE = 1 / 100.0  # keeps dB-scale coefficients near unit range
MIN_SAMPLE_RATE = 4000
MAX_PEAK = 1000.0  # +60 dBFS: float samples beyond it are not sound but garbage (and AAC refuses them)


def probe_duration(path: str | os.PathLike) -> float | None:
    """Duration in seconds from the container's metadata, or None when it does not say."""
    try:
        with av.open(os.fspath(path), metadata_errors="replace") as c:
            if not c.streams.audio:
                return None
            s = c.streams.audio[0]
            if s.duration is not None and s.time_base is not None:
                return float(s.duration * s.time_base)
            if c.duration is not None:
                return c.duration / av.time_base
    except (av.error.FFmpegError, OSError):
        return None
    return None


def iter_audio(path: str | os.PathLike, sample_rate: int = 16000, chunk: int = 16000) -> Iterator[np.ndarray]:
    """Decode the first audio stream of any file (wav, mp3, m4a, flac, ogg, a video's track).

    Yields mono float32 arrays of `chunk` samples (the last one shorter) at `sample_rate`; memory
    does not grow with the file's length.
    """
    path = check_readable(path, "audio file")
    try:
        container = av.open(path, metadata_errors="replace")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise TalkfaceError(f"cannot be read as audio ({decode_problem(e)})", path) from None
    with container:
        if not container.streams.audio:
            raise TalkfaceError("is not an audio file (it holds a picture)" if is_picture(container) else "has no audio track", path)
        codec = container.streams.audio[0].codec_context
        if codec is None:
            raise TalkfaceError("has an audio track that cannot be decoded", path)
        rate = codec.sample_rate
        if rate and rate < MIN_SAMPLE_RATE:  # a corrupt header, or not speech: hours of "audio" from a few bytes
            raise TalkfaceError(f"has a sample rate of {rate} Hz (speech needs at least {MIN_SAMPLE_RATE} Hz)", path)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        pending: list[np.ndarray] = []
        have = 0
        got_any = False
        try:
            for frame in container.decode(container.streams.audio[0]):
                stopping.check()
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1))
                    have += out.samples
                while have >= chunk:
                    block = np.concatenate(pending)
                    yield block[:chunk]
                    got_any = True
                    pending, have = [block[chunk:]], have - chunk
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1))
                have += out.samples
            stopping.check()
        except av.error.FFmpegError as e:
            raise TalkfaceError(f"is corrupt: decoding failed ({decode_problem(e)})", path) from None
        if have:
            yield np.concatenate(pending)
            got_any = True
        if not got_any:
            raise TalkfaceError("contains no audio samples", path)


def is_picture(container: av.container.InputContainer) -> bool:
    """Whether FFmpeg opened the file as a still picture (png, jpeg, webp, gif, ...), not as a video."""
    name = container.format.name
    return name in ("image2", "gif", "apng") or name.endswith("_pipe")


def check_readable(path: str | os.PathLike, what: str) -> str:
    """The path as a string, or a TalkfaceError saying why it cannot be read."""
    path = os.fspath(path)
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise TalkfaceError("is a symbolic link that loops (following it leads back to it)", path) from None
        if e.errno == errno.EACCES:
            raise TalkfaceError("permission denied", path) from None
        if os.path.islink(path):
            raise TalkfaceError(f"is a symbolic link to a missing file ({os.readlink(path)})", path) from None
        raise TalkfaceError("no such file", path) from None
    if os.path.isdir(path):
        raise TalkfaceError(f"is a directory, not an {what}" if what[0] in "aeiou" else f"is a directory, not a {what}", path)
    if not os.access(path, os.R_OK):
        raise TalkfaceError("permission denied", path)
    if os.path.getsize(path) == 0:
        raise TalkfaceError("the file is empty", path)
    return path


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """The whole file as 16 kHz (or `sample_rate`) mono float32, shape (n,)."""
    return np.concatenate(list(iter_audio(path, sample_rate)))


def decode_problem(e: Exception) -> str:
    """FFmpeg's reason for a failure, in a few words and without the path."""
    text = (getattr(e, "strerror", None) or str(e)).split(":")[-1].strip() or type(e).__name__
    return {"End of file": "the file ends early", "Invalid data found when processing input": "unknown format or corrupt data"}.get(text, text)


def num_frames(num_samples: int, cfg: AudioConfig) -> int:
    """Video frames needed to cover `num_samples` of audio (the last one may run past its end)."""
    return math.ceil(num_samples * cfg.fps / cfg.sample_rate - 1e-9)


def hann(n: int) -> np.ndarray:
    """The periodic Hann window (n,) float32, as librosa.filters.get_window("hann", n, fftbins=True)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_MEL_STEP_HZ = 200.0 / 3
_LOG_HZ = 1000.0
_LOG_MEL = _LOG_HZ / _MEL_STEP_HZ
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    log = _LOG_MEL + np.log(np.maximum(hz, _LOG_HZ) / _LOG_HZ) / _LOG_STEP
    return np.where(hz >= _LOG_HZ, log, hz / _MEL_STEP_HZ)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    return np.where(mel >= _LOG_MEL, _LOG_HZ * np.exp(_LOG_STEP * (mel - _LOG_MEL)), mel * _MEL_STEP_HZ)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangles from 0 Hz to Nyquist, each of unit area (slaney
    norm): librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    ramps = edges[:, None] - fft_hz[None, :]
    widths = np.diff(edges)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    triangles = np.maximum(0, np.minimum(rising, falling)).astype(np.float32)
    return (triangles * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def power_to_db(power: np.ndarray, amin: float = 1e-10) -> np.ndarray:
    """10 log10(power), floored at `amin`: librosa.power_to_db(power, ref=1.0, amin=amin, top_db=None)."""
    return 10.0 * np.log10(np.maximum(amin, power))


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float64: the first n_out rows of the orthonormal DCT-II, so that `D @ x` is
    scipy.fft.dct(x, type=2, norm="ortho", axis=0)[:n_out] (the MFCC of a log-mel spectrogram)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    d[0] /= np.sqrt(2.0)
    return d


class FeatureStream:
    """Push audio samples, pull MFCC windows (n_mfcc, steps) for every frame whose window is complete.

    Frame t's window is centred (by `cfg.centre`) on the middle of the frame's interval; the start of
    the audio is padded with silence so early frames have a full window.
    """

    def __init__(self, cfg: AudioConfig):
        self.cfg = cfg
        hop, steps = cfg.hop, cfg.steps
        self.frame_samples = cfg.sample_rate / cfg.fps
        self.span = (steps - 1) * hop + cfg.win_length
        self.pad = max(0, int(round(cfg.centre * self.span - 0.5 * self.frame_samples)))
        self.buffer = np.zeros(self.pad, np.float32)  # padded audio not yet consumed by MFCC frames
        self.buffer_start = 0  # index (in padded samples) of buffer[0]
        self.mfcc: list[np.ndarray] = []  # computed MFCC columns, oldest first
        self.mfcc_start = 0  # global index of self.mfcc[0]
        self.next_frame = 0
        self.samples_in = 0
        self.mel = mel_filterbank(cfg.sample_rate, cfg.win_length, cfg.n_mels)
        self.window = hann(cfg.win_length)
        self.dct = dct_matrix(cfg.n_mfcc, cfg.n_mels)

    def first_column(self, t: int) -> int:
        """Global MFCC index at which frame t's window starts."""
        centre = (t + 0.5) * self.frame_samples
        start = centre - self.cfg.centre * self.span + self.pad
        return max(0, int(round(start / self.cfg.hop)))

    def samples_needed(self, t: int) -> int:
        """How many samples of a stream complete frame t: its MFCC window's and its own interval's."""
        window_end = (self.first_column(t) + self.cfg.steps - 1) * self.cfg.hop + self.cfg.win_length - self.pad
        return max(window_end, math.floor(t * self.frame_samples) + 1)

    def _columns(self, audio: np.ndarray) -> np.ndarray:
        """MFCC columns of every complete `win_length` frame in `audio`, hop by hop."""
        hop, n = self.cfg.hop, self.cfg.win_length
        count = 1 + (len(audio) - n) // hop
        frames = np.lib.stride_tricks.sliding_window_view(audio, n)[::hop][:count]
        power = np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2
        return (self.dct @ power_to_db(self.mel @ power.T) * MFCC_SCALE).astype(np.float32)

    def _ingest(self, samples: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, samples])
        hop, n = self.cfg.hop, self.cfg.win_length
        done = self.mfcc_start + len(self.mfcc)  # next global MFCC column to compute
        offset = done * hop - self.buffer_start
        if len(self.buffer) - offset >= n:
            cols = self._columns(self.buffer[offset:])
            self.mfcc.extend(cols.T)
            keep_from = (done + cols.shape[1]) * hop - self.buffer_start
            self.buffer = self.buffer[keep_from:]
            self.buffer_start += keep_from

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add mono samples; returns windows (N, n_mfcc, steps) for the frames completed by them."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.samples_in += len(samples)
        self._ingest(samples)
        return self._emit(limit=num_frames(self.samples_in, self.cfg))

    def _emit(self, limit: int) -> np.ndarray:
        out = []
        steps = self.cfg.steps
        while self.next_frame < limit:
            first = self.first_column(self.next_frame)
            if first + steps > self.mfcc_start + len(self.mfcc):
                break
            lo = first - self.mfcc_start
            out.append(np.stack(self.mfcc[lo : lo + steps], 1))
            self.next_frame += 1
        drop = self.first_column(self.next_frame) - self.mfcc_start  # columns no later frame needs
        if drop > 0:
            del self.mfcc[:drop]
            self.mfcc_start += drop
        if not out:
            return np.zeros((0, self.cfg.n_mfcc, steps), np.float32)
        return np.stack(out)

    def flush(self) -> np.ndarray:
        """End of audio: pad with silence and return the windows of the frames still owed."""
        total = num_frames(self.samples_in, self.cfg)
        if self.next_frame >= total:
            return np.zeros((0, self.cfg.n_mfcc, self.cfg.steps), np.float32)
        end = (self.first_column(total - 1) + self.cfg.steps - 1) * self.cfg.hop + self.cfg.win_length
        self._ingest(np.zeros(max(0, end - self.buffer_start - len(self.buffer)), np.float32))
        return self._emit(limit=total)


def mfcc_windows(audio: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """All windows of a whole signal: (num_frames(len(audio)), n_mfcc, steps)."""
    stream = FeatureStream(cfg)
    return np.concatenate([stream.push(audio), stream.flush()])
