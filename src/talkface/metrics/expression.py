"""The face around the mouth, measured: blinks from the eye openness, head motion from the head's pose."""
from __future__ import annotations

import numpy as np

from talkface.geometry import eye_openness
from talkface.metrics.registry import register
from talkface.metrics.sync import FPS, loudness_db, speech_envelope

BLINK_DEPTH = 0.5  # a blink: the eyes' openness falls below this share of its median
BLINK_GAP = 5  # frames between two blinks' deepest points (200 ms)
SPEECH_DB = -25.0  # frames louder than this (relative to the loud frames) are speech, quieter than PAUSE_DB pause
PAUSE_DB = -40.0


def blink_events(openness: np.ndarray) -> list[tuple[int, int, float]]:
    """(frame of the deepest point, frames below half way between open and that depth, depth as a share of open)
    per blink in a series of eye openness (T,) (NaN where no face)."""
    o = np.asarray(openness, np.float64)
    base = float(np.nanmedian(o)) if np.isfinite(o).any() else np.nan
    if not np.isfinite(base) or base <= 0:
        return []
    r = np.where(np.isfinite(o), o / base, 1.0)
    minima = [i for i in range(1, len(r) - 1) if r[i] < BLINK_DEPTH and r[i] <= r[i - 1] and r[i] <= r[i + 1]]
    kept: list[int] = []
    for i in minima:
        if kept and i - kept[-1] < BLINK_GAP:
            if r[i] < r[kept[-1]]:
                kept[-1] = i
            continue
        kept.append(i)
    events = []
    for i in kept:
        half = (1 + r[i]) / 2
        a = b = i
        while a > 0 and r[a - 1] < half:
            a -= 1
        while b < len(r) - 1 and r[b + 1] < half:
            b += 1
        events.append((i, b - a + 1, float(r[i])))
    return events


@register("blinks")
def blinks(frames: np.ndarray, landmarks: np.ndarray | None = None) -> dict[str, float]:
    """Blinks from the face mesh's eye openness (lid gap over eye width, both eyes): blinks_per_min,
    blink_ms (median time below half way to the blink's depth) and blink_depth (median openness at
    the deepest point as a share of the clip's median openness; at most 0.5 by definition of a blink).
    Conversation: 10.5-32.5 blinks a minute, 100-400 ms each; neither higher nor lower is better, near a real video's is."""
    from talkface.metrics.image import _landmarks

    lm = _landmarks(frames, landmarks)
    events = blink_events(eye_openness(lm).mean(-1))
    minutes = len(lm) / FPS / 60
    return {
        "blinks_per_min": len(events) / minutes if minutes > 0 else float("nan"),
        "blink_ms": float(np.median([e[1] for e in events])) * 1000 / FPS if events else float("nan"),
        "blink_depth": float(np.median([e[2] for e in events])) if events else float("nan"),
    }


@register("head_motion")
def head_motion(audio: np.ndarray, poses: np.ndarray) -> dict[str, float]:
    """The head's rotation over the clip, from the face mesh's 3-D skull points in the full frames, following their pixels (degrees):
    yaw_std, pitch_std, roll_std (standard deviation over the clip), head_jump (the largest change of
    any angle from one frame to the next, from the second frame on) and head_speed_ratio (mean angular speed in speech over
    that in pauses; real talking videos: about 1.0-1.3). A still head reads about 0.3 degrees; lower head_jump is
    better, the spreads should lie near a real video's (in the wild: yaw 2-14, pitch 1.3-7.6, roll 0.8-7.7)."""
    p = np.asarray(poses, np.float64)
    found = np.isfinite(p).all(1)
    out = {k: float("nan") for k in ("yaw_std", "pitch_std", "roll_std", "head_jump", "head_speed_ratio")}
    if found.sum() < 2:
        return out
    std = p[found].std(0)
    out.update(yaw_std=float(std[0]), pitch_std=float(std[1]), roll_std=float(std[2]))
    # NaN across a frame without a face; the first step is left out: the face mesh detects the first
    # frame and tracks the rest, and the two read a still photo up to 1.5 degrees apart
    step = np.abs(np.diff(p, axis=0))[1:]
    both = np.isfinite(step).all(1)
    out["head_jump"] = float(step[both].max()) if both.any() else float("nan")
    speed = np.linalg.norm(np.diff(p, axis=0), axis=1)[1:]
    db = loudness_db(speech_envelope(audio, len(p)))[2:]
    speech, pause = both & (db > SPEECH_DB), both & (db < PAUSE_DB)
    if speech.sum() >= 5 and pause.sum() >= 5:
        out["head_speed_ratio"] = float(speed[speech].mean() / max(speed[pause].mean(), 1e-9))
    return out
