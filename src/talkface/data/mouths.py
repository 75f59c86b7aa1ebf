"""Mouth-crop clips for the lip-sync expert: grayscale mouth crops + MFCC windows, per clip.

Two sources: procedural synthetic faces (tests), and talking-face videos such as GRID (fixed camera),
read directly with PyAV. Each video's mouth box is fixed, from the face-mesh lip landmarks of its first
frame. Both are written as shards (talkface.data.cut), one sample per clip: `KEY.npz` holding
`mouths` (T, crop_height + 2 margin, crop_width + 2 margin) uint8 and `mfcc` (T', n_mfcc, steps) float16.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import numpy as np

from talkface.config import SyncConfig
from talkface.data.cut import Sample, Split, cut, video_key, write_group, write_report
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


def video_clip(path: str, cfg: SyncConfig, margin: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(mouth crops, MFCC windows) of one video, or why it gives none (unreadable, no face in its first frame)."""
    from talkface.media.video import iter_frames

    try:
        frames = list(iter_frames(path))
        audio = load_audio(path, cfg.audio.sample_rate)
    except TalkfaceError as e:  # a broken file among many is skipped, like a video without a face
        return e.problem
    if not frames:
        return "no video frames"
    lm = detect_landmarks(frames[:1])[0]
    if np.isnan(lm).any():
        return "no face found in the first frame"
    crops = mouth_crops(frames, mouth_box(lm, cfg.box_width), cfg, margin)
    return crops, mfcc_windows(audio, cfg.audio).astype(np.float16)


def mouth_sample(path: str, speaker: str, split: Split, cfg: SyncConfig) -> list[Sample] | str:
    """The maker of mouth shards: one sample per video."""
    from talkface.data.shards import encode_npz
    from talkface.media.video import video_info

    got = video_clip(path, cfg, cfg.margin)
    if isinstance(got, str):
        return got
    mouths, mfcc = got
    key = video_key(path, speaker)
    files = {"npz": encode_npz({"mouths": mouths, "mfcc": mfcc})}
    return [Sample(split(speaker, key), key, files, speaker, len(mouths), video_info(path)["fps"])]


def cut_mouths(
    inputs: list[str], out: str, cfg: SyncConfig, workers: int = 1, progress: bool = True, *, val_fraction: float = 0.05,
    videos_per_group: int = 50, shard_index: int = 0, num_shards: int = 1, speakers: dict[str, str] | None = None,
) -> dict:
    """Mouth shards of the videos of `inputs` (folders, list files, videos) under `out`; the report (talkface.data.cut)."""
    return cut(inputs, out, partial(mouth_sample, cfg=cfg), "mouths", val_fraction, videos_per_group,
               workers, shard_index, num_shards, speakers, progress)


def synthetic_mouth_shards(out: str, cfg: SyncConfig, num_clips: int = 48, frames: int = 50, seed: int = 0) -> dict:
    """`synthetic_clips` as mouth shards: each clip its own speaker, the last `cfg.val_clips` (or a
    fifth, when there are not that many) in val/, the others in train/; the report (talkface.data.cut)."""
    from talkface.data.shards import encode_npz

    for sub in ("train", "val", "groups"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    clips = synthetic_clips(cfg, num_clips, frames, seed)
    held = cfg.val_clips if 0 < cfg.val_clips < num_clips else max(1, num_clips // 5)
    results = [[Sample("val" if i >= num_clips - held else "train", name, {"npz": encode_npz({"mouths": m, "mfcc": a.astype(np.float16)})}, name, len(m))]
               for i, (name, m, a) in enumerate(zip(clips.ids, clips.mouths, clips.mfcc))]
    write_group(out, 0, clips.ids, results)
    return write_report(out, "mouths", single_speaker=False)


def mouth_data(spec: str, cfg: SyncConfig, folder: str, workers: int = 1, progress: bool = True) -> str:
    """The mouth shards `train-sync` reads: `spec` itself when it holds shards; else 'synthetic' or a
    folder of talking-face videos, cut into `folder` (an interrupted cut resumes there)."""
    if os.path.isdir(os.path.join(spec, "train")):
        return spec
    if spec == "synthetic":
        if not os.path.isfile(os.path.join(folder, "report.json")):
            synthetic_mouth_shards(folder, cfg, cfg.synthetic_clips, cfg.synthetic_frames, seed=cfg.seed)
        return folder
    if not os.path.isdir(spec):
        raise TalkfaceError("is not a folder of videos, of mouth shards, or 'synthetic'", spec)
    report = cut_mouths([spec], folder, cfg, workers=workers, progress=progress)
    if not report["train"]["clips"]:
        raise TalkfaceError("no face found in any of its videos", spec)
    return folder
