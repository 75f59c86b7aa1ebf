"""Score talking-face videos: a model against real videos, or any video against an audio file.

Against real videos, what is scored is what users see: a model's full-resolution frames (as
`Animator.generate` makes them from the video's first frame and its audio), aligned to one
evaluation crop together with the real frames. Anything that makes frames from a still and speech
can be scored the same way (`score_clip` with other `FrameSource`s). Landmarks are detected once
per video and shared by every metric. Results go to `metrics.json` and a self-contained
`report.html` in the output folder, both written only once everything has been computed.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from talkface import __version__
from talkface.errors import TalkfaceError
from talkface.media.face import NUM_LANDMARKS, Face
from talkface.metrics import applicable, compute, describe, list_metrics
from talkface.geometry import SkullTracker, eye_openness, head_pose
from talkface.metrics.landmarks import detect_landmarks, mouth_aperture
from talkface.metrics.sync import FPS, SAMPLE_RATE, SyncCurve, speech_envelope, sync_curve

if TYPE_CHECKING:
    from talkface.pipeline import Animator

MAX_SIDE = 640  # videos scored without ground truth are shrunk to this (landmark measures are scale-free)
# (H, W) of the crop that generated and real faces are compared in, whatever the model's own crop:
# the template's eye-to-mouth distance is then 84 px, about what a 512x512 talking-head video shows
EVAL_SIZE = (256, 192)
STRIP = 8  # sample frames per row in the report

# A row of an evaluation against real video: (the still (H, W, 3) uint8, the audio's path) ->
# full-resolution frames at 25 fps, at least one per 40 ms of the audio (later ones are ignored).
FrameSource = Callable[[np.ndarray, str], Iterable[np.ndarray]]


@dataclass
class ClipScore:
    """Scores of one clip (generated and, when there is ground truth, real) and what the report plots."""

    name: str
    scores: dict[str, dict[str, float]]  # row ("generated", a source's name, "real" or "video") -> metric -> value
    envelope: np.ndarray
    apertures: dict[str, np.ndarray]  # per row: (T,) aperture
    curves: dict[str, SyncCurve] = field(default_factory=dict)
    strips: dict[str, np.ndarray] = field(default_factory=dict)  # per row: (n, H, W, 3) sample frames
    previews: dict[str, np.ndarray] = field(default_factory=dict)  # per row: the full frames the strips were cut from
    eyes: dict[str, np.ndarray] = field(default_factory=dict)  # per row: (T,) eye openness (lid gap / eye width, both eyes)
    poses: dict[str, np.ndarray] = field(default_factory=dict)  # per row: (T, 3) head yaw, pitch, roll in degrees


def score(frames: np.ndarray, audio: np.ndarray, *, real: np.ndarray | None = None, still: np.ndarray | None = None,
          expert=None, landmarks: np.ndarray | None = None, real_landmarks: np.ndarray | None = None,
          names: list[str] | None = None, poses: np.ndarray | None = None) -> tuple[dict[str, float], SyncCurve | None, np.ndarray]:
    """Every applicable registered metric (or `names`) on one clip; also its sync curve and aperture series."""
    if landmarks is None:
        landmarks = detect_landmarks(frames)
    if real is not None and real_landmarks is None:
        real_landmarks = detect_landmarks(real)
    inputs = {"frames": frames, "audio": audio, "real": real, "still": still, "expert": expert, "landmarks": landmarks,
              "real_landmarks": real_landmarks, "poses": poses}
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


def sample_indices(count: int, samples: int = STRIP) -> np.ndarray:
    """`samples` frame numbers spread evenly over `count` frames, first and last included."""
    return np.linspace(0, count - 1, min(samples, count)).round().astype(int)


def _strip(frames: np.ndarray, count: int = STRIP) -> np.ndarray:
    return frames[sample_indices(len(frames), count)]


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


def resample_indices(count: int, fps: float, target: float = FPS) -> np.ndarray:
    """Which of `count` frames at `fps` is shown at each tick of a `target` fps clock (nearest in time)."""
    if abs(fps - target) < 0.01:
        return np.arange(count)
    ticks = max(1, int(count / fps * target))
    return np.minimum(np.round(np.arange(ticks) * fps / target).astype(int), count - 1)


def resample_frames(frames: np.ndarray, fps: float, target: float = FPS) -> np.ndarray:
    """The frames shown at each tick of a `target` fps clock: the metrics and the expert work on 25 fps."""
    if abs(fps - target) < 0.01:
        return frames
    return frames[resample_indices(len(frames), fps, target)]


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
    with_depth = detect_landmarks(frames, depth=True, skull=True)
    poses = head_pose(with_depth)
    scores, curve, ap = score(frames, speech, still=frames[0], expert=expert, landmarks=with_depth[..., :2], poses=poses)
    clip = ClipScore(os.path.basename(os.fspath(video)), {"video": scores}, speech_envelope(speech, n), {"video": ap},
                     {"video": curve} if curve else {}, {"video": _strip(frames)},
                     eyes={"video": eye_openness(with_depth[..., :2]).mean(-1)}, poses={"video": poses})
    meta = {"mode": "video", "video": os.path.abspath(video), "audio": os.path.abspath(audio), "frames": n, "source_fps": fps, "cut_at_seconds": max_seconds}
    return meta, [clip]


def face_crops(frames: Iterable[np.ndarray], size: tuple[int, int], fps: float = 25.0,
               keep: Callable[[int, np.ndarray], None] | None = None, start: Face | None = None) -> tuple[np.ndarray, Face, np.ndarray]:
    """Every frame's face aligned to the (H, W) template (media.face, tracked and smoothed), the face
    as found in the first frame, and the head's pose in every full frame ((T, 3) degrees, NaN where
    the face is lost). Frames where the face is lost reuse its last position; a first frame without
    a face is a TalkfaceError (it is the still everything is made from), unless `start` says where
    the face is until the tracker finds it. `keep(i, frame)` sees every full frame as it streams by."""
    from talkface.media.face import FaceTracker, align

    crops, points, first, last = [], [], start, start
    skull = SkullTracker()
    with FaceTracker(fps) as tracker:
        for i, frame in enumerate(frames):
            face = tracker(frame)
            if first is None:
                if face is None:
                    raise TalkfaceError("shows no face in its first frame (the still)")
                first = face
            last = face or last
            crops.append(align(frame, last, size)[0])
            points.append(skull(frame, face.points) if face is not None and face.depth is not None else np.full((NUM_LANDMARKS, 3), np.nan))
            if keep is not None:
                keep(i, frame)
    if first is None:
        raise TalkfaceError("has no video frames")
    return np.stack(crops), first, head_pose(np.stack(points))


def frames_at(path: str | os.PathLike, indices: Iterable[int]) -> np.ndarray:
    """A video's frames at `indices` (frame numbers, any order, repeats allowed), decoded in one pass: (n, H, W, 3)."""
    from talkface.media.video import iter_frames

    indices = [int(i) for i in indices]
    wanted, found = set(indices), {}
    frames = iter_frames(path)
    for i, frame in enumerate(frames):
        if i in wanted:
            found[i] = frame
            if len(found) == len(wanted):
                break
    frames.close()
    if len(found) < len(wanted):
        raise TalkfaceError(f"has fewer than {max(wanted) + 1} frames", path)
    return np.stack([found[i] for i in indices])


def still_source(still: np.ndarray, audio: str) -> Iterator[np.ndarray]:
    """The still, repeated: a face that never moves (the floor a model should rise above)."""
    return itertools.repeat(still)


def model_source(animator: Animator, seed: int = 0) -> FrameSource:
    """A model as users see it: `Animator.generate`'s full-resolution frames, the largest face animated."""

    def frames(still: np.ndarray, audio: str) -> Iterator[np.ndarray]:
        return animator.generate(still, audio, face_index=0, crop=False, seed=seed)

    return frames


def _made(frames: Iterable[np.ndarray], face: Face, size: tuple[int, int], count: int, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `count` frames of a source, their face tracked and aligned as the real video's is
    (count, H, W, 3), the full frames at `picks`, and the head's pose per frame (count, 3); the
    other full frames are let go as they stream by. Until the tracker finds the face, it is where
    the still's `face` is."""
    kept, picked = [], set(picks.tolist())
    crops, _, poses = face_crops(itertools.islice(frames, count), size, keep=lambda i, f: kept.append(f) if i in picked else None, start=face)
    if len(crops) < count:
        raise TalkfaceError(f"only {len(crops)} frames were made for {count} frames of speech")
    return crops, np.stack(kept), poses


def score_clip(path: str | os.PathLike, sources: dict[str, FrameSource], size: tuple[int, int] = EVAL_SIZE, expert=None,
               samples: int = STRIP) -> ClipScore:
    """One real talking video against frames made from its first frame and its own audio.

    Each source is given the video's first full frame (the still) and the video's path (its audio)
    and makes full-resolution frames. The face is tracked through every frame, real and made alike,
    and aligned to the evaluation template at `size`: a head that moves (on purpose, as the default
    model's does, or as the real speaker's does) does not count against the mouth's fidelity
    measures, and the head's pose in the full frames is measured for both. Every source's crops are
    scored against the real crops, then the real crops alone (the reference). Rows of `scores`: the sources in order,
    then "real"; `strips` (crops) and `previews` (full frames), `samples` per row, start with "real".
    """
    from talkface.media.audio import check_readable, load_audio
    from talkface.media.video import iter_frames, video_info

    path = os.fspath(path)
    try:
        fps = video_info(check_readable(path, "video"))["fps"]
        crops, face, real_poses = face_crops(iter_frames(path), size, fps)
        shown = resample_indices(len(crops), fps)
        speech = load_audio(path, SAMPLE_RATE)
        n = min(len(shown), int(len(speech) * FPS / SAMPLE_RATE))
        if n < 5:
            raise TalkfaceError("is too short to score (fewer than 5 frames with audio)")
        real, real_poses = crops[shown[:n]], real_poses[shown[:n]]
        del crops
        picks = sample_indices(n, samples)
        still, *previews = frames_at(path, [0, *shown[picks]])
        real_lms = detect_landmarks(real)
        scores, apertures, curves, eyes, head = {}, {}, {}, {}, {}
        strips, full = {"real": real[picks]}, {"real": np.stack(previews)}
        for row, source in sources.items():
            made, full[row], head[row] = _made(source(still, path), face, size, n, picks)
            lms = detect_landmarks(made)
            eyes[row] = eye_openness(lms).mean(-1)
            scores[row], curve, apertures[row] = score(made, speech, real=real, still=real[0], expert=expert, landmarks=lms,
                                                       real_landmarks=real_lms, poses=head[row])
            strips[row] = made[picks]
            if curve is not None:
                curves[row] = curve
    except TalkfaceError as e:
        raise TalkfaceError(e.problem, e.path or path) from None
    scores["real"], curve, apertures["real"] = score(real, speech, still=real[0], expert=expert, landmarks=real_lms, poses=real_poses)
    eyes["real"], head["real"] = eye_openness(real_lms).mean(-1), real_poses
    if curve is not None:
        curves["real"] = curve
    name = os.path.splitext(os.path.basename(path))[0]
    return ClipScore(name, scores, speech_envelope(speech, n), apertures, curves, strips, full, eyes, head)


def evaluate_checkpoint(checkpoint: str | os.PathLike | None, data: str | os.PathLike, limit: int | None = None, expert=None,
                        device: str | None = None, seed: int = 0, progress: bool = False,
                        size: tuple[int, int] = EVAL_SIZE) -> tuple[dict, list[ClipScore]]:
    """A model (None: the bundled one) against a folder of real talking videos: for each video, its
    first frame is the still and its own audio drives `Animator.generate`; the full-resolution
    frames are scored against the real ones in the evaluation crop (`score_clip`), and the real
    frames are scored too, as the reference."""
    from talkface.data.mouths import list_videos
    from talkface.bundled import checkpoint_path
    from talkface.pipeline import Animator

    checkpoint = checkpoint_path(checkpoint)
    animator = Animator(checkpoint, device=device)
    sources = {"generated": model_source(animator, seed)}
    files = list_videos(data)[:limit]
    clips = [score_clip(path, sources, size, expert) for path in tqdm(files, desc="evaluate", unit="video", disable=not progress, dynamic_ncols=True)]
    meta = {"mode": "checkpoint", "checkpoint": os.path.abspath(checkpoint), "data": os.path.abspath(data), "videos": len(clips),
            "eval_size": list(size), "model_kind": animator.cfg.kind,
            "model_size": None if animator.motion else list(animator.size),  # the motion model has no face crop: it moves the full frame's pixels
            "seed": seed}
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


def results_paths(out_dir: str | os.PathLike, overwrite: bool = False, overwrite_option: str = "overwrite=True") -> tuple[str, str]:
    """metrics.json and report.html in `out_dir`, or a TalkfaceError when they cannot be written there:
    checked before any work, and again as they are written. `overwrite_option` is what the error
    tells the caller to pass (the command line's `--overwrite`, the Python API's `overwrite=True`)."""
    out_dir = os.fspath(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise TalkfaceError("the output folder's parent does not exist", parent)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise TalkfaceError("is a file; give a folder for the results", out_dir)
    json_path, html_path = os.path.join(out_dir, "metrics.json"), os.path.join(out_dir, "report.html")
    if os.path.exists(json_path) and not overwrite:
        raise TalkfaceError(f"already exists (pass {overwrite_option} to replace it)", json_path)
    if not os.access(out_dir if os.path.isdir(out_dir) else parent, os.W_OK):
        raise TalkfaceError("the output folder is not writable", out_dir if os.path.isdir(out_dir) else parent)
    return json_path, html_path


def write_results(out_dir: str | os.PathLike, meta: dict, clips: list[ClipScore], overwrite: bool = False,
                  overwrite_option: str = "overwrite=True") -> tuple[str, str]:
    """metrics.json and report.html in `out_dir` (created if its parent exists), each written atomically."""
    from talkface.report import render_html

    out_dir = os.fspath(out_dir)
    json_path, html_path = results_paths(out_dir, overwrite, overwrite_option)
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
