"""Procedural talking faces whose mouths follow their audio, with known ground truth.

Each clip has its own identity (face shape, skin tone, eye spacing, background) and its own
"speech": voiced syllables (harmonic tones under a smooth envelope) separated by silences. The
mouth opening follows the loudness envelope and the mouth width follows the vowel (the spectral
balance of the harmonics), so a model can only animate the mouth correctly by listening.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talkface.config import AudioConfig


@dataclass
class SyntheticClip:
    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray  # (T * sr / fps,) float32
    opening: np.ndarray  # (T,) mouth opening in [0, 1]
    width: np.ndarray  # (T,) mouth width in [0, 1]
    mouth_box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the mouth region, in pixels
    identity: dict


def _identity(rng: np.random.Generator) -> dict:
    return {
        "background": rng.uniform(0, 255, 3),
        "skin": rng.uniform([120, 80, 60], [250, 210, 180]),
        "face_w": rng.uniform(0.30, 0.40),
        "face_h": rng.uniform(0.38, 0.46),
        "eye_dx": rng.uniform(0.12, 0.18),
        "eye_y": rng.uniform(0.36, 0.42),
        "eye": rng.uniform(0, 90, 3),
        "lip": rng.uniform([90, 20, 30], [180, 80, 90]),
        "f0": rng.uniform(100, 220),
    }


def _speech(rng: np.random.Generator, frames: int, cfg: AudioConfig, f0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Audio, per-frame loudness envelope in [0, 1] and per-frame vowel value in [0, 1]."""
    sr, fps = cfg.sample_rate, cfg.fps
    n = int(round(frames * sr / fps))
    env = np.zeros(n, np.float32)
    vowel = np.zeros(n, np.float32)
    pos = int(rng.uniform(0, 0.4) * sr)
    while pos < n:
        length = int(rng.uniform(0.12, 0.35) * sr)
        end = min(n, pos + length)
        shape = np.sin(np.linspace(0, np.pi, length))[: end - pos] ** 1.5
        env[pos:end] = shape * rng.uniform(0.5, 1.0)
        vowel[pos:end] = rng.uniform(0, 1)
        pos = end + int(rng.choice([rng.uniform(0.02, 0.08), rng.uniform(0.2, 0.6)]) * sr)
    t = np.arange(n) / sr
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    # vowel 0: energy in the low harmonics ("oo"), vowel 1: in the high ones ("ee")
    voiced = np.zeros(n, np.float32)
    for k in range(1, 16):
        centre = 1 + vowel * 10
        gain = np.exp(-0.5 * ((k - centre) / 2.0) ** 2)
        voiced += gain * np.sin(k * phase)
    audio = 0.3 * env * voiced / 3 + rng.normal(0, 0.002, n)
    per_frame = lambda x: x[: int(frames * sr / fps)].reshape(frames, -1)
    return audio.astype(np.float32), per_frame(env).max(1), per_frame(vowel).mean(1)


def render_face(identity: dict, opening: float, width: float, size: tuple[int, int]) -> np.ndarray:
    """One RGB frame (H, W, 3) of the identity with the given mouth opening and width."""
    h, w = size
    s = 4  # draw at 4x and downsample for smooth edges
    H, W = h * s, w * s
    img = np.empty((H, W, 3), np.uint8)
    img[:] = identity["background"]
    cx, cy = W // 2, int(H * 0.52)
    cv2.ellipse(img, (cx, cy), (int(W * identity["face_w"] * 1.2), int(H * identity["face_h"])), 0, 0, 360, identity["skin"].tolist(), -1)
    ey = int(H * identity["eye_y"])
    for side in (-1, 1):
        ex = cx + side * int(W * identity["eye_dx"] * 1.3)
        cv2.ellipse(img, (ex, ey), (int(W * 0.06), int(H * 0.025)), 0, 0, 360, (245, 245, 245), -1)
        cv2.circle(img, (ex, ey), int(H * 0.018), identity["eye"].tolist(), -1)
    my = int(H * 0.72)
    mw = int(W * (0.10 + 0.08 * width))
    mh = int(H * (0.008 + 0.07 * opening))
    cv2.ellipse(img, (cx, my), (mw, mh + int(H * 0.012)), 0, 0, 360, identity["lip"].tolist(), -1)
    cv2.ellipse(img, (cx, my), (max(1, mw - int(W * 0.02)), mh), 0, 0, 360, (25, 10, 15), -1)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def mouth_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where the mouth is drawn (y0, y1, x0, x1): the same for every identity."""
    h, w = size
    return int(h * 0.62), int(h * 0.82), int(w * 0.28), int(w * 0.72)


def measure_opening(frames: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """Mouth opening read from pixels: how dark the mouth box is on average (only the mouth
    changes there, and an open mouth is dark). frames: (T, H, W, 3) uint8 -> (T,) in [0, 1]"""
    size = size or frames.shape[1:3]
    y0, y1, x0, x1 = mouth_box(size)
    return 1.0 - frames[:, y0:y1, x0:x1].astype(np.float32).mean((1, 2, 3)) / 255.0


def make_clip(seed: int, frames: int, size: tuple[int, int], cfg: AudioConfig) -> SyntheticClip:
    rng = np.random.default_rng(seed)
    ident = _identity(rng)
    audio, env, vowel = _speech(rng, frames, cfg, ident["f0"])
    # the mouth lags the envelope slightly and never snaps: a light temporal smoothing
    opening = np.clip(np.convolve(env, [0.25, 0.5, 0.25], mode="same"), 0, 1)
    width = np.where(opening > 0.05, vowel, 0.3)
    imgs = np.stack([render_face(ident, o, wd, size) for o, wd in zip(opening, width)])
    return SyntheticClip(imgs, audio, opening.astype(np.float32), width.astype(np.float32), mouth_box(size), ident)


def synthetic_motion(opening: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Mouth and chin motion (T, P, 2) in rest mouth widths (media.face.MOTION_POINTS order: outer lip
    loop, inner lip loop, chin) for a mouth opening and width per frame, as `render_face` draws them."""
    from talkface.media.face import CHIN, LIPS_INNER, LIPS_OUTER

    o, w = opening[:, None], (width - 0.3)[:, None]
    n_out, n_in = len(LIPS_OUTER), len(LIPS_INNER)
    dy = np.zeros((len(opening), n_out + n_in + len(CHIN)), np.float32)
    dx = np.zeros_like(dy)
    for first, n in ((0, n_out), (n_out, n_in)):
        half = n // 2
        dy[:, first + 1 : first + half] = -0.05 * o  # upper lip
        dy[:, first + half + 1 : first + n] = 0.35 * o  # lower lip
        dx[:, first] = -0.1 * w[:, 0]  # the corners
        dx[:, first + half] = 0.1 * w[:, 0]
    dy[:, n_out + n_in :] = 0.3 * o
    return np.stack([dx, dy], -1)


def synthetic_motion_clip(seed: int, frames: int, cfg: AudioConfig) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic speech (samples) and the mouth motion (T, P, 2) that follows it (opening from loudness,
    width from the vowel)."""
    rng = np.random.default_rng(seed)
    speech, env, vowel = _speech(rng, frames, cfg, rng.uniform(100, 220))
    opening = np.clip(np.convolve(env, [0.25, 0.5, 0.25], mode="same"), 0, 1)
    return speech, synthetic_motion(opening, np.where(opening > 0.05, vowel, 0.3))


BLINK = (0.5, 1.0, 1.0, 0.7, 0.4, 0.15)  # a synthetic blink's lid closure, frame by frame


def synthetic_eyes(seed: int, frames: int, fps: float) -> np.ndarray:
    """Lid closure and brow raise (T, 2) of a procedural face: blinks at random times, as many a
    minute as a rate drawn for the clip (0-60), each a little deeper or shallower, longer or shorter,
    with the jitter a face mesh reads in open eyes; and brows that drift a little."""
    rng = np.random.default_rng([seed, 0xB11])
    rate = rng.uniform(0, 60)
    face = np.zeros((frames, 2), np.float32)
    face[:, 0] = np.abs(np.convolve(rng.normal(0, 0.08, frames), np.ones(3) / 3, mode="same"))
    t = rng.exponential(60 / max(rate, 1e-3)) * fps * rng.uniform(0, 1)
    while t < frames:
        course = np.interp(np.arange(0, len(BLINK), rng.uniform(0.7, 1.3)), np.arange(len(BLINK)), BLINK) * rng.uniform(0.8, 1.1)
        at = int(t)
        n = min(len(course), frames - at)
        face[at : at + n, 0] = np.maximum(face[at : at + n, 0], course[:n])
        t += max(len(course) + 2, rng.exponential(60 / max(rate, 1e-3)) * fps)
    face[:, 0] = np.clip(face[:, 0], 0, 1)
    face[:, 1] = np.convolve(rng.normal(0, 0.01, frames), np.ones(9) / 3, mode="same")
    return face


SYNTHETIC_HEAD = (4.0, 2.5, 2.0, 0.02, 0.015)  # standard deviation of a synthetic head's yaw, pitch, roll (degrees) and shift (face sizes)


def synthetic_head(seed: int, frames: int, fps: float) -> np.ndarray:
    """The head's pose (T, 5) of a procedural talking video, as `talkface preprocess` stores it: per
    channel a slow random motion (white noise through a two-pole low-pass at 0.5 Hz, `SYNTHETIC_HEAD`
    standard deviation in the long run) with the face mesh's 0.3 degree frame-to-frame jitter."""
    rng = np.random.default_rng([seed, 0x4EAD])
    r = np.exp(-2 * np.pi * 0.5 / fps)
    warm = int(10 / (1 - r))  # ten time constants: from the motion's steady state
    x = rng.standard_normal((warm + frames, 5))
    y = np.zeros_like(x)
    for t in range(2, len(x)):
        y[t] = 2 * r * y[t - 1] - r * r * y[t - 2] + x[t]
    y = y[warm:] * np.sqrt((1 - r * r) ** 3 / (1 + r * r))  # unit variance
    jitter = rng.normal(0, 1, (frames, 5)) * np.array([0.3, 0.3, 0.3, 0.002, 0.002])
    return (y * np.array(SYNTHETIC_HEAD) + jitter).astype(np.float32)


def write_synthetic_shards(out: str, cfg, clips: int, frames: int, seed: int = 0, val: int = 0, per_shard: int = 16, speakers: int = 1) -> str:
    """A folder of shards (train/, val/) of procedural talking faces, laid out as `talkface preprocess`
    writes real ones: for the seed's GAN each clip's frames (H.264, lossless: crf 0) and speech; for the motion model
    (cfg.kind) its speech, the motion itself (`KEY.motion.npy`, in place of landmarks), its lids and
    brows (`KEY.face.npy`, `synthetic_eyes`) and its head's pose (`KEY.pose.npy`, `synthetic_head`). Clip i is
    spoken by speaker i % `speakers`; the last `val` clips are held out. Written once: a folder that
    holds them already is returned as it is."""
    import json
    import os

    from talkface.data.shards import ShardWriter, encode_frames, encode_npy, encode_wav

    if os.path.isfile(os.path.join(out, "synthetic.json")):
        return out
    for split in ("train", "val"):
        os.makedirs(os.path.join(out, split), exist_ok=True)
    size = (cfg.model.height, cfg.model.width)
    rate = cfg.audio.sample_rate
    writer, split_of = None, lambda i: "val" if i >= clips - val else "train"
    for i in range(clips):
        if writer is None or writer.count == per_shard or split_of(i) != split_of(i - 1):
            if writer is not None:
                writer.close()
            writer = ShardWriter(os.path.join(out, split_of(i), f"{i:06d}.tar"))
        key, speaker = f"synthetic{i:06d}", f"synthetic{i % speakers}"
        meta = json.dumps({"source": "synthetic", "speaker": speaker, "fps": cfg.audio.fps, "frames": frames}).encode()
        if cfg.kind == "motion":
            audio, motion = synthetic_motion_clip(seed * 1_000_003 + i, frames, cfg.audio)
            files = {"wav": encode_wav(audio, rate), "motion.npy": encode_npy(motion.astype(np.float32)),
                     "face.npy": encode_npy(synthetic_eyes(seed * 1_000_003 + i, frames, cfg.audio.fps)),
                     "pose.npy": encode_npy(synthetic_head(seed * 1_000_003 + i, frames, cfg.audio.fps)), "json": meta}
        else:
            clip = make_clip(seed * 1_000_003 + i, frames, size, cfg.audio)
            files = {"mp4": encode_frames(clip.frames, cfg.audio.fps, crf=0), "wav": encode_wav(clip.audio, rate), "json": meta}
        writer.add(key, files, speaker=speaker, frames=frames)
    if writer is not None:
        writer.close()
    with open(os.path.join(out, "synthetic.json"), "w") as f:
        json.dump({"clips": clips, "frames": frames, "seed": seed, "kind": cfg.kind}, f)
    return out

