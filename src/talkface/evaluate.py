"""Score talking-face videos: a model against real videos, or any video against an audio file.

Landmarks are detected once per video and shared by every metric. Results go to `metrics.json`
and a self-contained `report.html` in the output folder, both written only once everything has
been computed.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from talkface import __version__
from talkface.errors import TalkfaceError
from talkface.metrics import applicable, compute, describe, list_metrics
from talkface.metrics.landmarks import detect_landmarks, mouth_aperture
from talkface.metrics.sync import FPS, SyncCurve, speech_envelope, sync_curve

MAX_SIDE = 640  # videos scored without ground truth are shrunk to this (landmark measures are scale-free)


@dataclass
class ClipScore:
    """Scores of one clip (generated and, when there is ground truth, real) and what the report plots."""

    name: str
    scores: dict[str, dict[str, float]]  # "generated" / "real" -> metric -> value
    envelope: np.ndarray
    apertures: dict[str, np.ndarray]  # per row: (T,) aperture
    curves: dict[str, SyncCurve] = field(default_factory=dict)
    strips: dict[str, np.ndarray] = field(default_factory=dict)  # per row: (n, H, W, 3) sample frames


def score(frames: np.ndarray, audio: np.ndarray, *, real: np.ndarray | None = None, still: np.ndarray | None = None,
          expert=None, landmarks: np.ndarray | None = None, real_landmarks: np.ndarray | None = None,
          names: list[str] | None = None) -> tuple[dict[str, float], SyncCurve | None, np.ndarray]:
    """Every applicable registered metric (or `names`) on one clip; also its sync curve and aperture series."""
    if landmarks is None:
        landmarks = detect_landmarks(frames)
    if real is not None and real_landmarks is None:
        real_landmarks = detect_landmarks(real)
    inputs = {"frames": frames, "audio": audio, "real": real, "still": still, "expert": expert, "landmarks": landmarks, "real_landmarks": real_landmarks}
    available = {k for k, v in inputs.items() if v is not None}
    out: dict[str, float] = {}
    curve = None
    for name in names or list_metrics():
        if not applicable(name, available):
            continue
        if name == "lse":  # keep the whole curve for the report
            curve = sync_curve(frames, audio, expert, landmarks)
            out.update({"lse_d": curve.lse_d, "lse_c": curve.lse_c, "sync_offset": float(curve.offset)})
        else:
            out.update(compute(name, **inputs))
    return out, curve, mouth_aperture(landmarks)


def _strip(frames: np.ndarray, count: int = 8) -> np.ndarray:
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return frames[idx]


def _shrink(frame: np.ndarray, max_side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return frame
    return cv2.resize(frame, (round(w * s) // 2 * 2, round(h * s) // 2 * 2), interpolation=cv2.INTER_AREA)


def read_video(path: str | os.PathLike, max_seconds: float | None = None, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """All frames (T, H, W, 3) uint8 (optionally shrunk and cut) and the fps."""
    from talkface.media.audio import check_readable
    from talkface.media.video import iter_frames, video_info

    path = check_readable(path, "video")
    fps = video_info(path)["fps"]
    frames = []
    for f in iter_frames(path):
        if max_seconds is not None and len(frames) >= max_seconds * fps:
            break
        frames.append(_shrink(f, max_side) if max_side else f)
    if not frames:
        raise TalkfaceError("has no video frames", path)
    return np.stack(frames), fps


def resample_frames(frames: np.ndarray, fps: float, target: float = FPS) -> np.ndarray:
    """The frames shown at each tick of a `target` fps clock (nearest in time): the metrics and the
    expert work on 25 fps."""
    if abs(fps - target) < 0.01:
        return frames
    count = max(1, int(len(frames) / fps * target))
    idx = np.minimum(np.round(np.arange(count) * fps / target).astype(int), len(frames) - 1)
    return frames[idx]


def evaluate_video(video: str | os.PathLike, audio: str | os.PathLike, expert=None, max_seconds: float = 120.0) -> tuple[dict, list[ClipScore]]:
    """Score any talking video against an audio file; the video's first frame is the identity reference."""
    from talkface.media.audio import load_audio

    frames, fps = read_video(video, max_seconds, MAX_SIDE)
    frames = resample_frames(frames, fps)
    speech = load_audio(audio)[: int(round(len(frames) / FPS * 16000))]
    n = min(len(frames), int(len(speech) * FPS / 16000))
    if n < 5:
        raise TalkfaceError("overlaps the video by less than 5 frames", audio)
    frames = frames[:n]
    scores, curve, ap = score(frames, speech, still=frames[0], expert=expert)
    clip = ClipScore(os.path.basename(os.fspath(video)), {"video": scores}, speech_envelope(speech, n), {"video": ap},
                     {"video": curve} if curve else {}, {"video": _strip(frames)})
    meta = {"mode": "video", "video": os.path.abspath(video), "audio": os.path.abspath(audio), "frames": n, "source_fps": fps, "cut_at_seconds": max_seconds}
    return meta, [clip]


def face_crops(frames: np.ndarray, size: tuple[int, int], fps: float = 25.0) -> np.ndarray:
    """Every frame's face aligned to the model's (H, W) template (media.face, tracked and smoothed);
    frames where the face is lost reuse its last position, and a video with no face at all is
    centre-cropped."""
    from talkface.media.face import FaceTracker, align
    from talkface.pipeline import resize_crop

    with FaceTracker(fps) as tracker:
        faces = [tracker(f) for f in frames]
    found = [f for f in faces if f is not None]
    if not found:
        return np.stack([resize_crop(f, size) for f in frames])
    crops, last = [], found[0]
    for frame, face in zip(frames, faces):
        last = face or last
        crops.append(align(frame, last, size)[0])
    return np.stack(crops)


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, limit: int | None = None, expert=None,
                        device: str | None = None, seed: int = 0, progress: bool = False) -> tuple[dict, list[ClipScore]]:
    """For each video: its first frame (face crop) is the still, its own audio drives the model,
    and the generated crops are scored against the real crops (which are scored too, as the reference)."""
    from talkface.data.mouths import list_videos
    from talkface.media.audio import load_audio
    from talkface.pipeline import Animator

    animator = Animator(checkpoint, device=device)
    files = list_videos(data)[:limit]
    clips = []
    for path in tqdm(files, desc="evaluate", unit="video", disable=not progress, dynamic_ncols=True):
        frames, fps = read_video(path)
        speech = load_audio(path, animator.cfg.audio.sample_rate)
        real = resample_frames(face_crops(frames, animator.size, fps), fps, animator.cfg.audio.fps)
        chunks = (speech[i : i + 16000] for i in range(0, len(speech), 16000))
        generated = np.stack(list(animator.stream(real[0], seed).run(chunks)))
        n = min(len(generated), len(real))
        if n < 5:
            raise TalkfaceError("is too short to score (fewer than 5 frames)", path)
        generated, real = generated[:n], real[:n]
        real_lms = detect_landmarks(real)
        gen_scores, gen_curve, gen_ap = score(generated, speech, real=real, still=real[0], expert=expert, real_landmarks=real_lms)
        real_scores, real_curve, real_ap = score(real, speech, still=real[0], expert=expert, landmarks=real_lms)
        curves = {k: c for k, c in (("generated", gen_curve), ("real", real_curve)) if c is not None}
        clips.append(ClipScore(os.path.splitext(os.path.basename(path))[0], {"generated": gen_scores, "real": real_scores},
                               speech_envelope(speech, n), {"generated": gen_ap, "real": real_ap}, curves,
                               {"real": _strip(real), "generated": _strip(generated)}))
    meta = {"mode": "checkpoint", "checkpoint": os.path.abspath(checkpoint), "data": os.path.abspath(data), "videos": len(clips),
            "model_size": list(animator.size), "seed": seed}
    return meta, clips


def _clean(x):
    """JSON-safe numbers: NaN -> null, +-inf -> "inf" / "-inf"."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, np.integer):
        return int(x)
    return x


def summarise(clips: list[ClipScore]) -> dict[str, dict[str, float]]:
    """Per row (generated / real / video): the mean of each metric over clips (NaN-free values only)."""
    rows: dict[str, dict[str, list[float]]] = {}
    for c in clips:
        for row, values in c.scores.items():
            for k, v in values.items():
                rows.setdefault(row, {}).setdefault(k, []).append(v)
    out = {}
    for row, values in rows.items():
        out[row] = {}
        for k, vs in values.items():
            vs = [v for v in vs if not math.isnan(v)]
            out[row][k] = float(np.mean(vs)) if vs else float("nan")
    return out


def expert_info(expert=None) -> dict[str, str]:
    from talkface.checkpoint import default_sync_expert, read_metadata

    if expert is not None:
        return {"path": "(given)"}
    path = default_sync_expert()
    meta = read_metadata(path)
    return {"path": path, **{k: meta[k] for k in ("talkface_version", "steps", "train_seconds") if k in meta}}


def write_results(out_dir: str | os.PathLike, meta: dict, clips: list[ClipScore], overwrite: bool = False) -> tuple[str, str]:
    """metrics.json and report.html in `out_dir` (created if its parent exists), each written atomically."""
    from talkface.report import render_html

    out_dir = os.fspath(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise TalkfaceError("the output folder's parent does not exist", parent)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise TalkfaceError("is a file; give a folder for the results", out_dir)
    json_path, html_path = os.path.join(out_dir, "metrics.json"), os.path.join(out_dir, "report.html")
    if os.path.exists(json_path) and not overwrite:
        raise TalkfaceError("already exists (pass --overwrite to replace it)", json_path)
    names = sorted({k for c in clips for s in c.scores.values() for k in s})
    doc = {
        "talkface_version": __version__,
        **meta,
        "sync_expert": expert_info() if any("lse_d" in s for c in clips for s in c.scores.values()) else None,
        "mean": summarise(clips),
        "clips": [{"name": c.name, **c.scores} for c in clips],
        "metrics": {name: describe(name) for name in list_metrics()},
        "values": names,
    }
    html = render_html(doc, clips)
    os.makedirs(out_dir, exist_ok=True)
    for path, text in ((json_path, json.dumps(_clean(doc), indent=2)), (html_path, html)):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return json_path, html_path
