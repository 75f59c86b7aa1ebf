"""Training windows for the mouth refiner, cut from talking videos at their own resolution.

A window: a source frame i of a clip, warped (talkface.render.mouth, as the product warps a photo) to the
mouth shapes of `window` consecutive frames j of the same clip, next to those real frames, all
in the refiner's mouth crop (talkface.render.refine). Frame j is first brought into frame i's head pose (a
similarity on points speech does not move), so that the warp and the real frame differ only where
the mouth does. The still (frame i's own crop) conditions the discriminator; each frame's speech (the
MFCC columns around it) conditions the refiner, and the MFCC window of the middle frame feeds the
lip-sync expert used as a loss.

`cut_windows` writes them as shards (talkface.data.cut), one sample per window: `KEY.npz` with the
fields of `RefineWindows` for that window (without the leading N).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

from talkface.config import AudioConfig, RefinerConfig
from talkface.data.cut import Sample, Split, cut, video_key
from talkface.errors import TalkfaceError
from talkface.media.face import MOTION_POINTS, similarity
from talkface.render.refine import (
    crop_mouth,
    face_frame,
    moved_mouth_matrix,
    opening_map,
    painted_map,
    speech_slice,
)

STABLE = [33, 133, 362, 263, 168, 197, 4, 2]  # eye corners and the nose: speech does not move them
AUDIO_STEPS = 20  # MFCC columns per window given to the expert (200 ms, its audio_steps)
FIELDS = ("warped", "real", "opening", "painted", "still", "speech", "mfcc")


@dataclass
class RefineWindows:
    """warped, real: (N, window, H, W, 3) uint8; opening, painted: (N, window, H, W) uint8 (0..255: the new
    mouth opening, and where the warp painted it: `refine.painted_map`);
    still: (N, H, W, 3) uint8; speech: (N, window, n_mfcc, cfg.audio_steps) float32 (each frame's MFCC
    columns, `refine.speech_slice`); mfcc: (N, n_mfcc, AUDIO_STEPS) float32 (the middle frame's, for the expert)."""

    warped: np.ndarray
    real: np.ndarray
    opening: np.ndarray
    painted: np.ndarray
    still: np.ndarray
    speech: np.ndarray
    mfcc: np.ndarray

    def __len__(self) -> int:
        return len(self.warped)



def video_windows(path: str, cfg: RefinerConfig, sources: int = 2, per_source: int = 4, seed: int = 0) -> RefineWindows | None:
    """Training windows of one video (None when it cannot be read or shows too few faces)."""
    from talkface.media.audio import load_audio, mfcc_windows
    from talkface.media.video import iter_frames
    from talkface.metrics.landmarks import detect_landmarks
    from talkface.metrics.sync import audio_slice
    from talkface.render.mouth import MouthWarp

    try:
        frames = list(iter_frames(path))
        audio = load_audio(path, AudioConfig().sample_rate)
    except TalkfaceError:
        return None
    if len(frames) < cfg.window + 1 or frames[0].std() < 2:  # GRID has a few blank videos
        return None
    mfcc = mfcc_windows(audio, AudioConfig())
    n = min(len(frames), len(mfcc))
    lms = detect_landmarks(frames[:n]).astype(np.float64)
    found = ~np.isnan(lms).any((1, 2))
    starts = [t for t in range(n - cfg.window + 1) if found[t : t + cfg.window].all()]
    if not starts or found.sum() < 2:
        return None
    rng = np.random.default_rng([seed, len(path), sum(map(ord, os.path.basename(path)))])
    out = {k: [] for k in FIELDS}
    for i in rng.choice(np.flatnonzero(found), min(sources, int(found.sum())), replace=False):
        warp = MouthWarp(frames[i], lms[i])
        u, iod = face_frame(lms[i])
        h, w = frames[i].shape[:2]
        for j0 in rng.choice(starts, min(per_source, len(starts)), replace=False):
            warped, real, opening, painted, speech = [], [], [], [], []
            for j in range(j0, j0 + cfg.window):
                S = similarity(lms[j][STABLE], lms[i][STABLE])  # frame j's pose -> frame i's
                points = lms[j][MOTION_POINTS] @ S[:, :2].T + S[:, 2]
                M = moved_mouth_matrix(points, u, iod, cfg)
                frame, paint = warp.render_painted(points)
                warped.append(crop_mouth(frame, M, cfg))
                painted.append(np.round(painted_map(paint, M, cfg) * 255).astype(np.uint8))
                real.append(crop_mouth(cv2.warpAffine(frames[j], S, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), M, cfg))
                opening.append(np.round(opening_map(points, M, cfg) * 255).astype(np.uint8))
                speech.append(speech_slice(mfcc[j], cfg).astype(np.float32))
                if j == j0 + cfg.window // 2:
                    out["still"].append(crop_mouth(frames[i], M, cfg))
                    out["mfcc"].append(audio_slice(mfcc[j], AUDIO_STEPS).astype(np.float32))
            out["warped"].append(np.stack(warped))
            out["real"].append(np.stack(real))
            out["opening"].append(np.stack(opening))
            out["painted"].append(np.stack(painted))
            out["speech"].append(np.stack(speech))
    return RefineWindows(**{k: np.stack(v) for k, v in out.items()})


def training_videos(folder: str | os.PathLike, count: int, val_fraction: float = 0.05) -> list[str]:
    """`count` videos of a folder spread evenly over the clips `preprocess` puts in its training split
    (so a motion model's held-out sentences stay unseen by its refiner too)."""
    from talkface.data.mouths import list_videos
    from talkface.data.cut import Split, speaker_of

    paths = list_videos(folder)
    split = Split(val_fraction, len({speaker_of(p) for p in paths}) == 1)
    train = [p for p in paths if split(speaker_of(p), video_key(p, speaker_of(p))) == "train"]
    if not train:
        raise TalkfaceError("has no videos in the training split", folder)
    step = max(1, len(train) // max(count, 1))
    return train[::step][:count]


def window_samples(path: str, speaker: str, split: Split, cfg: RefinerConfig, seed: int = 0) -> list[Sample] | str:
    """The maker of window shards: a video's windows (2 source frames, 4 windows each), all on its side of the split."""
    from talkface.data.shards import encode_npz
    from talkface.media.video import video_info

    windows = video_windows(path, cfg, 2, 4, seed)
    if windows is None:
        return "no training windows (unreadable, too short, or too few frames with a face)"
    key = video_key(path, speaker)
    side, fps = split(speaker, key), video_info(path)["fps"]
    return [Sample(side, f"{key}_w{n}", {"npz": encode_npz({f: getattr(windows, f)[n] for f in FIELDS})}, speaker, cfg.window, fps)
            for n in range(len(windows))]


def cut_windows(
    videos: list[str], out: str, cfg: RefinerConfig, workers: int = 2, progress: bool = True, seed: int = 0, *,
    val_fraction: float = 0.05, videos_per_group: int = 50, shard_index: int = 0, num_shards: int = 1,
    speakers: dict[str, str] | None = None,
) -> dict:
    """Window shards of `videos` (videos, folders or list files) under `out`; the report (talkface.data.cut)."""
    return cut(videos, out, partial(window_samples, cfg=cfg, seed=seed), "windows", val_fraction, videos_per_group,
               workers, shard_index, num_shards, speakers, progress)


def read_windows(root: str, split: str = "train", limit: int | None = None) -> RefineWindows | None:
    """Up to `limit` windows of one split of the window shards under `root`, in memory (None when it has none)."""
    from talkface.data.shards import decode_npz, read_sample, shard_index, shard_paths

    try:
        paths = shard_paths(root, split)
    except TalkfaceError:
        return None
    parts: list[dict[str, np.ndarray]] = []
    for path in paths:
        for entry in shard_index(path):
            if limit is not None and len(parts) >= limit:
                break
            parts.append(decode_npz(read_sample(path, entry)["npz"]))
    if not parts:
        return None
    return RefineWindows(**{f: np.stack([p[f] for p in parts]) for f in FIELDS})


def window_data(spec: str, cfg: RefinerConfig, folder: str, workers: int = 2, progress: bool = True) -> str:
    """The window shards `train-refiner` reads: `spec` itself when it holds shards; else a folder of
    talking-face videos, `cfg.videos` of its training split cut into `folder` (an interrupted cut resumes)."""
    if os.path.isdir(os.path.join(spec, "train")):
        return spec
    report = cut_windows(training_videos(spec, cfg.videos), folder, cfg, workers, progress, cfg.seed)
    if not report["train"]["clips"]:
        raise TalkfaceError("gave no training windows (no readable video with a face)", spec)
    return folder
