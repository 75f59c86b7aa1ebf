"""Training data of the motion model: per clip, MFCC windows and the motion of the mouth and chin.

Motion targets come from the face-mesh landmarks that `talkface preprocess` stores with every clip
(aligned crop pixels). Per clip, the mouth at rest is the mean shape of its most closed frames, and
each frame's `MOTION_POINTS` are expressed relative to it, in units of the rest mouth's width (the
crop is already upright). The same units move a photo's mouth at inference (talkface.render.rig).

Voices: each clip is also heard in `cfg.augment.variants` augmented copies of its audio (see `augment`),
each drawn from (seed, clip, variant), so that a model trained on one man's voice moves the mouth for
others too (`training.gan.MotionReader`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

from talkface.config import AugmentConfig, Config
from talkface.geometry import OUTER_EYES, eye_openness, head_pose
from talkface.media.face import (
    APERTURE_PAIRS,
    EYE_CORNERS,
    MOTION_POINTS,
    MOUTH_CORNERS,
    Face,
)
from talkface.metrics.expression import blink_events

BROW_TOPS = [105, 334, 66, 296]  # the middle of each brow's upper edge
REST_SHARE = 0.1  # the rest shape averages this share of a clip's most closed frames (at least 3)
POSE_SMOOTH = 1.5  # frames (Gaussian sigma): the face mesh's frame-to-frame jitter taken out of the head's pose, motion under about 2.5 Hz kept


def openness(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap over mouth width: (T, 478, 2) -> (T,)"""
    gap = np.mean([np.linalg.norm(landmarks[:, a] - landmarks[:, b], axis=-1) for a, b in APERTURE_PAIRS], 0)
    width = np.linalg.norm(landmarks[:, MOUTH_CORNERS[0]] - landmarks[:, MOUTH_CORNERS[1]], axis=-1)
    return gap / width


def motion_targets(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 2) aligned landmarks -> (T, P, 2) motion of MOTION_POINTS from the clip's rest shape,
    in rest mouth widths."""
    order = np.argsort(openness(landmarks))
    rest = landmarks[order[: max(3, int(len(order) * REST_SHARE))]].mean(0)
    width = np.linalg.norm(rest[MOUTH_CORNERS[0]] - rest[MOUTH_CORNERS[1]])
    return ((landmarks[:, MOTION_POINTS] - rest[MOTION_POINTS]) / width).astype(np.float32)


def face_targets(landmarks: np.ndarray, shut: float, fps: float) -> tuple[np.ndarray, float]:
    """(T, 478, 2) aligned landmarks -> (lid closure and brow raise (T, 2), blinks a minute).

    Closure: 0 at the clip's median eye openness, 1 at `shut` of it (clipped to 0..1). Brow raise: the
    brows' height over the eyes minus its median in the clip, in face sizes (eyes to mouth)."""
    open_ = eye_openness(landmarks).mean(-1)
    ratio = open_ / max(float(np.median(open_)), 1e-9)
    closure = np.clip((1 - ratio) / (1 - shut), 0, 1)
    eyes, mouth = landmarks[:, list(EYE_CORNERS)].mean(1), landmarks[:, list(MOUTH_CORNERS)].mean(1)
    size = np.maximum(np.linalg.norm(mouth - eyes, axis=-1), 1e-9)
    height = (eyes[:, 1] - landmarks[:, BROW_TOPS].mean(1)[:, 1]) / size
    return np.stack([closure, height - np.median(height)], -1).astype(np.float32), blink_rate(closure, shut, fps)


def blink_rate(closure: np.ndarray, shut: float, fps: float) -> float:
    """Blinks a minute in a series of lid closure (T,), counted as the face mesh's openness would count them."""
    return len(blink_events(1 - np.asarray(closure, np.float64) * (1 - shut))) / (len(closure) / fps / 60)


def head_track(points: list) -> np.ndarray:
    """The head's pose in each frame of a video, as `talkface preprocess` stores it with each clip:
    (T, 5) yaw, pitch, roll in degrees (`geometry.head_pose`, against the first face) and the face's
    centre across and down that face, in its face sizes; NaN where a frame has no face. `points`: per
    frame the face's landmarks with depth (478, 3), their skull points followed by
    `geometry.SkullTracker`, or None."""
    out = np.full((len(points), 5), np.nan, np.float32)
    ref = next((p for p in points if p is not None), None)
    if ref is None:
        return out
    out[:, :3] = head_pose(np.stack([p if p is not None else np.full_like(ref, np.nan) for p in points]), ref)
    faces = [Face.from_landmarks(p[:, :2]) if p is not None else None for p in points]
    first = Face.from_landmarks(ref[:, :2])
    across = ref[OUTER_EYES[1], :2] - ref[OUTER_EYES[0], :2]
    across = across / max(float(np.linalg.norm(across)), 1e-9)
    axes = np.stack([across, [-across[1], across[0]]])  # across the face, and down it
    for t, f in enumerate(faces):
        if f is not None:
            out[t, 3:] = axes @ (f.centre - first.centre) / first.size
    return out


def pose_targets(pose: np.ndarray) -> np.ndarray:
    """(T, 5) head pose as `talkface preprocess` stores it (`head_track`: yaw, pitch, roll degrees and
    the face's centre across and down in face sizes; NaN without a face) -> (T, 5) from the clip's
    median, frames without a face filled from their neighbours, the mesh's jitter smoothed away."""
    p = np.asarray(pose, np.float64).copy()
    t = np.arange(len(p))
    for c in range(p.shape[1]):
        found = np.isfinite(p[:, c])
        p[:, c] = np.interp(t, t[found], p[found, c]) if found.any() else 0.0
    p = ndimage.gaussian_filter1d(p, POSE_SMOOTH, axis=0, mode="nearest")
    return (p - np.median(p, 0)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-9)


def time_stretch(audio: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """`audio` played `rate` times faster at the same pitch (a phase vocoder): len(audio) / rate samples."""
    _, _, spec = signal.stft(audio, nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros")
    steps = np.arange(0, spec.shape[1] - 1, rate)
    expected = 2 * np.pi * hop * np.arange(spec.shape[0]) / n_fft  # phase advance per hop of each bin
    phase, out = np.angle(spec[:, 0]), np.empty((spec.shape[0], len(steps)), np.complex128)
    for j, t in enumerate(steps):
        i, a = int(t), t - int(t)
        out[:, j] = ((1 - a) * np.abs(spec[:, i]) + a * np.abs(spec[:, i + 1])) * np.exp(1j * phase)
        advance = np.angle(spec[:, i + 1]) - np.angle(spec[:, i]) - expected
        phase = phase + expected + np.angle(np.exp(1j * advance))  # wrapped to (-pi, pi]
    _, y = signal.istft(out, nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
    n = int(round(len(audio) / rate))
    return np.pad(y, (0, max(0, n - len(y))))[:n]


def augment(audio: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig, sample_rate: int) -> tuple[np.ndarray, float]:
    """One random voice variant of 16 kHz mono `audio`: (new audio, speed). Pitch and formants are
    moved by p, by resampling; with probability `cfg.pitch_p` the tempo is then drawn on its own
    (a phase vocoder plays it at speed r), otherwise it follows the pitch (r = p, as a tape played
    faster); duration / r. Then reverberation, band-limiting, noise, gain."""
    pitch = float(np.exp(rng.uniform(*np.log(cfg.speed))))
    up, down = 100, int(round(100 * pitch))
    out = signal.resample_poly(audio, up, down).astype(np.float64) if down != up else audio.astype(np.float64)
    speed = down / up  # the speed actually applied
    if rng.random() < cfg.pitch_p:
        tempo = float(np.exp(rng.uniform(*np.log(cfg.speed))))
        out = time_stretch(out, tempo / speed)
        speed = len(audio) / max(len(out), 1)
    level = _rms(out)
    if rng.random() < cfg.reverb_p:
        rt60 = rng.uniform(*cfg.reverb_s)
        t = np.arange(int(rt60 * sample_rate)) / sample_rate
        ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60) * 0.3
        ir[0] = 1.0
        out = signal.fftconvolve(out, ir)[: len(out)]
    if rng.random() < cfg.band_p:
        low, high = rng.uniform(80, 400), rng.uniform(2500, 0.45 * sample_rate)
        out = signal.sosfilt(signal.butter(4, [low, high], "bandpass", fs=sample_rate, output="sos"), out)
    out *= level / _rms(out)
    if rng.random() < cfg.noise_p:
        noise = rng.standard_normal(len(out))
        if rng.random() < 0.5:  # pink-ish: more energy at low frequencies
            noise = signal.lfilter([1.0], [1.0, -0.95], noise)
        out += noise * (level / _rms(noise)) * 10 ** (-rng.uniform(*cfg.snr_db) / 20)
    out *= 10 ** (rng.uniform(*cfg.gain_db) / 20)
    return np.clip(out, -1, 1).astype(np.float32), speed


def resample_motion(motion: np.ndarray, speed: float, frames: int) -> np.ndarray:
    """Motion (T, ...) of audio played `speed` times faster, at the same frame rate: `frames` frames."""
    src = np.minimum(np.arange(frames) * speed, len(motion) - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, len(motion) - 1)
    frac = (src - lo).reshape(-1, *[1] * (motion.ndim - 1))
    return ((1 - frac) * motion[lo] + frac * motion[hi]).astype(np.float32)


def read_audio_motion(root: str, split: str, cfg: Config, progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(audio, motion targets) of every clip of a split made by `talkface preprocess` (frames are not decoded)."""
    import io
    import json

    from tqdm import tqdm

    from talkface.data.shards import decode_wav, iter_samples, shard_paths
    from talkface.errors import TalkfaceError

    audio, motion = [], []
    paths = shard_paths(root, split)
    for path in tqdm(paths, desc=f"{split} shards", unit="shard", disable=not progress, dynamic_ncols=True):
        for sample in iter_samples(path):
            if "npy" not in sample:
                continue
            lm = np.load(io.BytesIO(sample["npy"]), allow_pickle=False).astype(np.float32)
            fps = json.loads(sample["json"]).get("fps", cfg.audio.fps)
            if abs(fps - cfg.audio.fps) > 0.01 or np.isnan(lm).any() or len(lm) < 8:
                continue
            audio.append(decode_wav(sample["wav"]))
            motion.append(motion_targets(lm))
    if not audio:
        raise TalkfaceError(f"holds no '{split}' clips with landmarks at {cfg.audio.fps:g} fps", root)
    return audio, motion
