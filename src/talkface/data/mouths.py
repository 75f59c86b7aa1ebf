"""Mouth-crop clips for the lip-sync expert: grayscale mouth crops + MFCC windows, per clip.

Two sources: procedural synthetic faces (tests), and a folder of talking-face videos such as GRID
(fixed camera), read directly with PyAV. Each video's mouth box is fixed, from the face-mesh lip
landmarks of its first frame. Crops are cached as one compressed .npz (default: under /tmp) so a
second run skips decoding.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from talkface.config import SyncConfig
from talkface.errors import TalkfaceError
from talkface.media.audio import load_audio, mfcc_windows
from talkface.metrics.landmarks import Box, detect_landmarks, mouth_box, mouth_crops


@dataclass
class MouthClips:
    """mouths[i]: (T, h + 2m, w + 2m) uint8 grayscale crops with `margin` m; mfcc[i]: (T', n_mfcc, steps)."""

    ids: list[str]
    mouths: list[np.ndarray]
    mfcc: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices) -> "MouthClips":
        return MouthClips([self.ids[i] for i in indices], [self.mouths[i] for i in indices], [self.mfcc[i] for i in indices])

    def split(self, val_clips: int) -> tuple["MouthClips", "MouthClips"]:
        """(train, validation): the last `val_clips` by sorted id are held out."""
        order = sorted(range(len(self)), key=lambda i: self.ids[i])
        if not 0 < val_clips < len(self):
            raise TalkfaceError(f"cannot hold out {val_clips} of {len(self)} clips for validation")
        return self.subset(order[:-val_clips]), self.subset(order[-val_clips:])


def synthetic_clips(cfg: SyncConfig, num_clips: int = 48, frames: int = 50, seed: int = 0) -> MouthClips:
    """Procedural faces (their mouth box is known, no detector needed) with their speech."""
    from talkface.data.synthetic import make_clip

    size = (cfg.crop_height * 2, cfg.crop_width)  # the mouth box spans the face's lower middle
    ids, mouths, mfcc = [], [], []
    for i in range(num_clips):
        clip = make_clip(seed * 1_000_003 + i, frames, size, cfg.audio)
        y0, y1, x0, x1 = clip.mouth_box
        box = Box((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 1.2, (x1 - x0) * 1.2 / 2)
        ids.append(f"synthetic{i:04d}")
        mouths.append(mouth_crops(clip.frames, box, cfg, cfg.margin))
        mfcc.append(mfcc_windows(clip.audio, cfg.audio))
    return MouthClips(ids, mouths, mfcc)


def list_videos(folder: str | os.PathLike) -> list[str]:
    """The .mp4 files of a folder, or of its `video/` subfolder (the GRID layout), sorted."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise TalkfaceError("is not a folder of videos (or 'synthetic')", folder)
    for d in (folder, os.path.join(folder, "video")):
        if os.path.isdir(d):
            files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith((".mp4", ".mov", ".mpg", ".avi", ".mkv")))
            if files:
                return files
    raise TalkfaceError("contains no videos (.mp4, .mov, .mpg, .avi, .mkv)", folder)


def video_clip(path: str, cfg: SyncConfig, margin: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(mouth crops, MFCC windows) of one video, or None when it cannot be read or shows no face in its first frame."""
    from talkface.media.video import iter_frames

    try:
        frames = list(iter_frames(path))
        audio = load_audio(path, cfg.audio.sample_rate)
    except TalkfaceError:  # a broken file among many is skipped, like a video without a face
        return None
    if not frames:
        return None
    lm = detect_landmarks(frames[:1])[0]
    if np.isnan(lm).any():
        return None
    crops = mouth_crops(frames, mouth_box(lm, cfg.box_width), cfg, margin)
    return crops, mfcc_windows(audio, cfg.audio).astype(np.float16)


def _cache_key(files: list[str], cfg: SyncConfig) -> str:
    what = {
        "files": [(os.path.basename(f), os.path.getsize(f)) for f in files],
        "audio": cfg.to_dict()["audio"],
        "crop": (cfg.crop_height, cfg.crop_width, cfg.margin, cfg.box_width),
        "version": 1,
    }
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def folder_clips(folder: str | os.PathLike, cfg: SyncConfig, cache_dir: str | None = None, limit: int | None = None, progress: bool = False) -> MouthClips:
    """Every video in `folder` as mouth crops + MFCC windows; cached in `cache_dir` (default: the temp folder)."""
    files = list_videos(folder)[:limit]
    cache_dir = cache_dir or tempfile.gettempdir()
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:
        raise TalkfaceError(f"cannot be made a cache folder ({e.strerror})", cache_dir) from None
    cache = os.path.join(cache_dir, f"talkface-mouths-{_cache_key(files, cfg)}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            n = int(z["count"])
            return MouthClips([str(z[f"id{i}"]) for i in range(n)], [z[f"mouth{i}"] for i in range(n)], [z[f"mfcc{i}"].astype(np.float32) for i in range(n)])
    from tqdm import tqdm

    ids, mouths, mfcc = [], [], []
    for path in tqdm(files, desc="mouth crops", unit="video", disable=not progress, dynamic_ncols=True):
        got = video_clip(path, cfg, cfg.margin)
        if got is None:
            continue
        ids.append(os.path.splitext(os.path.basename(path))[0])
        mouths.append(got[0])
        mfcc.append(got[1])
    if not ids:
        raise TalkfaceError("no face found in any of its videos", folder)
    arrays = {"count": np.array(len(ids))}
    for i, (name, m, a) in enumerate(zip(ids, mouths, mfcc)):
        arrays.update({f"id{i}": np.array(name), f"mouth{i}": m, f"mfcc{i}": a})
    tmp = cache + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, cache)
    return MouthClips(ids, mouths, [a.astype(np.float32) for a in mfcc])


def load_mouth_clips(spec: str, cfg: SyncConfig, cache_dir: str | None = None, progress: bool = False) -> MouthClips:
    """'synthetic', or a folder of talking-face videos."""
    if spec == "synthetic":
        return synthetic_clips(cfg, cfg.synthetic_clips, cfg.synthetic_frames, seed=cfg.seed)
    return folder_clips(spec, cfg, cache_dir, progress=progress)
