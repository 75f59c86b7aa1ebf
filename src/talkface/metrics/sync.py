"""Lip-sync metrics: the expert's LSE-D / LSE-C / offset, and the network-free aperture measures."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from talkface.media.audio import mfcc_windows
from talkface.metrics.landmarks import clip_box, detect_landmarks, fallback_mouth_box, mouth_aperture, mouth_box, mouth_crops
from talkface.metrics.registry import register
from talkface.models.sync_expert import SyncExpert

SAMPLE_RATE = 16000
FPS = 25.0
SILENCE_DB = -30.0  # a frame is silent when its RMS is this far below the clip's loud frames (95th percentile)
SPEECH_BAND = (300.0, 4000.0)  # Hz


@functools.lru_cache(maxsize=1)
def shipped_expert() -> SyncExpert:
    from talkface.checkpoint import load_sync_expert

    return load_sync_expert()[0]


# -- the expert ------------------------------------------------------------------------------------
def expert_mouths(frames: np.ndarray, expert: SyncExpert, landmarks: np.ndarray | None = None) -> np.ndarray:
    """The expert's input crops (T, h, w) uint8: a fixed mouth box per clip, from its landmarks
    (median over frames), or the lower middle of the frame when no face is found (aligned crops)."""
    cfg = expert.cfg
    if landmarks is None:
        landmarks = detect_landmarks(frames)
    box = clip_box(landmarks, mouth_box, width=cfg.box_width) or fallback_mouth_box(frames.shape[1:3])
    return mouth_crops(frames, box, cfg)


def audio_slice(windows: np.ndarray, steps: int) -> np.ndarray:
    """The central `steps` MFCC columns of each window: (T, n_mfcc, S) -> (T, n_mfcc, steps)."""
    first = (windows.shape[-1] - steps) // 2
    return windows[..., first : first + steps]


def video_windows(mouths: np.ndarray, frames: int) -> np.ndarray:
    """Consecutive `frames` crops stacked: (T, h, w) -> (T - frames + 1, frames, h, w); window w is centred on frame w + frames // 2."""
    return np.lib.stride_tricks.sliding_window_view(mouths, frames, axis=0).transpose(0, 3, 1, 2)


@torch.inference_mode()
def embed(expert: SyncExpert, mouths: np.ndarray, windows: np.ndarray, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every video window (T - frames + 1, dim) and every frame's audio (T', dim)."""
    cfg = expert.cfg
    device = next(expert.parameters()).device
    vw = video_windows(mouths, cfg.frames)
    aw = audio_slice(windows, cfg.audio_steps)
    v = [expert.embed_video(torch.from_numpy(np.ascontiguousarray(vw[i : i + batch])).float().div(127.5).sub(1).to(device)) for i in range(0, len(vw), batch)]
    a = [expert.embed_audio(torch.from_numpy(np.ascontiguousarray(aw[i : i + batch])).float().to(device)) for i in range(0, len(aw), batch)]
    dim = cfg.dim
    return (torch.cat(v).cpu() if v else torch.zeros(0, dim)), (torch.cat(a).cpu() if a else torch.zeros(0, dim))


def offset_distances(video: torch.Tensor, audio: torch.Tensor, centre: int, max_offset: int, shift: int = 0) -> np.ndarray:
    """D[w, j] = distance(video[w], audio[w + centre + offsets[j] - shift]), NaN where that audio
    does not exist. offsets = -max_offset..max_offset; `shift` delays the audio by whole frames."""
    offsets = np.arange(-max_offset, max_offset + 1)
    idx = np.arange(len(video))[:, None] + centre + offsets[None] - shift
    ok = (idx >= 0) & (idx < len(audio))
    d = SyncExpert.distance(video[:, None], audio[np.clip(idx, 0, max(0, len(audio) - 1))]).numpy() if len(audio) else np.zeros(idx.shape)
    return np.where(ok, d, np.nan).astype(np.float64)


@dataclass
class SyncCurve:
    offsets: np.ndarray  # (K,) frames; positive: the audio comes later than the video
    distances: np.ndarray  # (W, K) per window, NaN where the offset runs off the clip or is left out
    mean: np.ndarray  # (K,) averaged over windows
    lse_d: float
    lse_c: float
    offset: int


def curve_scores(distances: np.ndarray, max_offset: int) -> SyncCurve:
    """Scores of the distance curve. An offset averaged over fewer than half the windows of the best
    covered one is left out: on a short clip the far offsets rest on a handful of windows, and the
    minimum of means over unequal counts favours the noisiest (a 21-frame clip has 17 windows in
    sync but 4 at +-15). Clips of 30 frames (1.2 s) or more search the whole range."""
    offsets = np.arange(-max_offset, max_offset + 1)
    counts = np.isfinite(distances).sum(0)
    distances = np.where(counts * 2 >= counts.max(initial=0), distances, np.nan)
    if not np.isfinite(distances).any():
        return SyncCurve(offsets, distances, np.full(len(offsets), np.nan), float("nan"), float("nan"), 0)
    with warnings.catch_warnings():  # windows or offsets that run off a short clip are all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(distances, 0)
        lse_d = float(np.nanmean(np.nanmin(distances, 1)))
    best = int(np.nanargmin(mean))
    return SyncCurve(offsets, distances, mean, lse_d, float(np.nanmedian(mean) - mean[best]), int(offsets[best]))


def sync_curve(frames: np.ndarray, audio: np.ndarray, expert: SyncExpert | None = None, landmarks: np.ndarray | None = None) -> SyncCurve:
    """The expert's distance between video and audio at every offset in -max_offset..+max_offset."""
    expert = expert or shipped_expert()
    cfg = expert.cfg
    windows = mfcc_windows(np.asarray(audio, np.float32), cfg.audio)
    n = min(len(frames), len(windows))
    if n < cfg.frames:
        raise ValueError(f"need at least {cfg.frames} frames with audio to measure sync, got {n}")
    video, speech = embed(expert, expert_mouths(frames[:n], expert, None if landmarks is None else landmarks[:n]), windows[:n])
    return curve_scores(offset_distances(video, speech, cfg.frames // 2, cfg.max_offset), cfg.max_offset)


@register("lse")
def lse(frames: np.ndarray, audio: np.ndarray, expert: SyncExpert | None = None, landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Lip-sync error from the lip-sync expert (SyncNet-style): lse_d, lse_c and sync_offset.

    Every 5-frame window of mouth crops is embedded by the expert's video tower, and the speech of
    the window's span (20 MFCC columns, 200 ms) by its audio tower, at every offset from -15 to +15
    frames (fewer on clips under 1.2 s, see `curve_scores`). lse_d: mean over windows of the
    smallest distance over offsets (unit-length embeddings, euclidean distance in [0, 2]; lower is
    better). lse_c: confidence, the median minus the minimum of the distance curve averaged over
    windows (higher is better). sync_offset: the offset in frames at that minimum (0 is in sync;
    positive means the audio is late).
    """
    c = sync_curve(frames, audio, expert, landmarks)
    return {"lse_d": c.lse_d, "lse_c": c.lse_c, "sync_offset": float(c.offset)}


# -- without a network -----------------------------------------------------------------------------
def speech_envelope(audio: np.ndarray, num_frames: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> np.ndarray:
    """RMS of the speech band (300-4000 Hz, zero-phase band-pass, so hum and hiss do not fill the
    pauses) within each video frame's interval: (num_frames,), 0 past the audio's end."""
    from scipy.signal import butter, sosfiltfilt

    audio = np.asarray(audio, np.float64)
    if len(audio) > 64:
        audio = sosfiltfilt(butter(4, SPEECH_BAND, btype="band", fs=sample_rate, output="sos"), audio)
    edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(int)
    env = np.zeros(num_frames)
    for t in range(num_frames):
        seg = audio[edges[t] : edges[t + 1]]
        env[t] = np.sqrt(np.mean(seg**2)) if len(seg) else 0.0
    return env


def loudness_db(envelope: np.ndarray, floor_db: float = -60.0) -> np.ndarray:
    """The envelope in dB relative to its loud frames (95th percentile), floored at `floor_db`."""
    loud = max(float(np.percentile(envelope, 95)) if len(envelope) else 0.0, 1e-12)
    return np.maximum(20 * np.log10(np.maximum(envelope, 1e-12) / loud), floor_db)


def silent(envelope: np.ndarray, db: float = SILENCE_DB) -> np.ndarray:
    """Frames whose RMS is more than |db| below the loud frames (the 95th percentile): (T,) bool."""
    loud = np.percentile(envelope, 95) if len(envelope) else 0.0
    return envelope < loud * 10 ** (db / 20)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Correlation over the entries where both are finite; 0 when either does not vary."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or x.std() < 1e-9 or y.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


@register("aperture")
def aperture(frames: np.ndarray, audio: np.ndarray, landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Mouth opening against speech loudness, with no network: aperture_corr, silence_aperture, speech_aperture.

    Aperture: the inner-lip gap (mean of three upper/lower face-mesh point pairs) divided by the
    inter-ocular distance, per frame (unitless; ~0 closed, ~0.2 wide open). Envelope: the RMS of
    the audio's speech band (300-4000 Hz) within each frame's 40 ms, in dB relative to the clip's
    loud frames, floored at -60 dB (loudness is perceived, and lips move, on a log scale). aperture_corr: Pearson correlation of
    aperture and envelope over the clip (-1..1, higher is better; a frozen face scores about 0;
    real GRID clips score about 0.5-0.8). silence_aperture: mean aperture over frames
    at least 30 dB quieter than the clip's loud frames (lips should rest: lower is better, compare
    with real video). speech_aperture: mean aperture over the other frames (for reference).
    """
    if landmarks is None:
        landmarks = detect_landmarks(frames)
    ap = mouth_aperture(landmarks)
    env = speech_envelope(audio, len(ap))
    quiet = silent(env)
    with np.errstate(all="ignore"):
        return {
            "aperture_corr": pearson(ap, loudness_db(env)),
            "silence_aperture": float(np.nanmean(ap[quiet])) if np.isfinite(ap[quiet]).any() else float("nan"),
            "speech_aperture": float(np.nanmean(ap[~quiet])) if np.isfinite(ap[~quiet]).any() else float("nan"),
        }
