"""Talking videos -> aligned clips in tar shards, with a speaker-disjoint train/validation split.

The clip maker of the shard engine (talkface.data.cut): each video is cut into clips of
`clip_seconds`, each clip a sample of aligned face crops, its audio, landmarks (in the crop), the
head's pose in the video (`data.motion.head_track`) and metadata.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import numpy as np

from talkface.data.cut import Sample, Split, clip_key, cut, read_speakers, video_id
from talkface.data.cut import find_videos, speaker_of, split_of  # noqa: F401 (preprocessing's API, as before)


@dataclass
class PreprocessOptions:
    size: tuple[int, int] = (128, 96)
    clip_seconds: float = 3.0  # longer videos are cut into clips of this length (the last one kept if >= 1 s)
    val_fraction: float = 0.05
    videos_per_group: int = 50
    sample_rate: int = 16000
    min_face_frames: float = 0.9  # a clip needs a tracked face in this fraction of its frames


def process_video(path: str, speaker: str, split: Split, opts: PreprocessOptions) -> list[Sample] | str:
    """Clips of one video as samples, or why it gave none (what it raises, the engine reports)."""
    from talkface.data.motion import head_track
    from talkface.data.shards import clip_files
    from talkface.geometry import SkullTracker
    from talkface.media.audio import load_audio
    from talkface.media.face import FaceTracker, align
    from talkface.media.video import iter_frames, video_info

    info = video_info(path)
    if not info["has_audio"]:
        return "no audio track"
    audio = load_audio(path, opts.sample_rate)
    fps = info["fps"]
    crops, marks, ok, skulls = [], [], [], []
    skull = SkullTracker()
    with FaceTracker(fps=fps) as tracker:
        for frame in iter_frames(path):
            face = tracker(frame)
            skulls.append(skull(frame, face.points) if face is not None and face.depth is not None else None)
            if face is None:
                crops.append(np.zeros((*opts.size, 3), np.uint8))
                marks.append(np.zeros((478, 2), np.float32))
                ok.append(False)
                continue
            crop, M = align(frame, face, opts.size)
            crops.append(crop)
            marks.append(face.landmarks @ M[:, :2].T + M[:, 2])
            ok.append(True)
    if not crops:
        return "no video frames"
    if not any(ok):
        return "no face found"
    pose = head_track(skulls)
    per_clip = max(1, int(round(opts.clip_seconds * fps)))
    name = video_id(path, speaker)
    out = []
    spf = opts.sample_rate / fps
    for c, start in enumerate(range(0, len(crops), per_clip)):
        end = min(len(crops), start + per_clip)
        if end - start < min(per_clip, fps):
            continue
        if np.mean(ok[start:end]) < opts.min_face_frames:
            continue
        clip_audio = audio[int(round(start * spf)) : int(round(end * spf))]
        if len(clip_audio) < (end - start) * spf * 0.9:
            continue
        key = clip_key(speaker, name, c)
        meta = {"source": os.path.abspath(path), "speaker": speaker, "fps": fps, "start": start, "frames": end - start, "size": list(opts.size)}
        files = clip_files(np.stack(crops[start:end]), clip_audio, np.stack(marks[start:end]), meta, opts.sample_rate, pose[start:end])
        out.append(Sample(split(speaker, key), key, files, speaker, end - start, fps))
    if not out:
        return "no clip with a face in enough frames"
    return out


def preprocess(
    inputs: list[str], out: str, opts: PreprocessOptions | None = None, workers: int = 1,
    shard_index: int = 0, num_shards: int = 1, progress: bool = True, speakers: str | dict[str, str] | None = None,
) -> dict:
    """Preprocess `inputs` into `out`; returns (and writes to out/report.json) what was done and what
    failed. `speakers`: a speaker mapping file (`read_speakers`) or its mapping."""
    opts = opts or PreprocessOptions()
    if isinstance(speakers, str):
        speakers = read_speakers(speakers)
    return cut(inputs, out, partial(process_video, opts=opts), "clips", opts.val_fraction, opts.videos_per_group,
               workers, shard_index, num_shards, speakers, progress)
