"""Talking videos -> aligned clips in tar shards, with a speaker-disjoint train/validation split.

Work is cut into groups of videos; group g becomes `train/g.tar` and `val/g.tar` plus a report
`groups/g.json`, written last. A group whose report exists is skipped, so an interrupted run
resumes where it stopped; `shard_index`/`num_shards` give each machine of a cluster its groups.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from talkface.errors import TalkfaceError

VIDEO_EXTENSIONS = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class PreprocessOptions:
    size: tuple[int, int] = (128, 96)
    clip_seconds: float = 3.0  # longer videos are cut into clips of this length (the last one kept if >= 1 s)
    val_fraction: float = 0.05
    videos_per_group: int = 50
    sample_rate: int = 16000
    min_face_frames: float = 0.9  # a clip needs a tracked face in this fraction of its frames


def speaker_of(path: str) -> str:
    """The speaker a video belongs to, from the layouts of VoxCeleb2, LRS2/LRS3 and GRID."""
    parts = os.path.normpath(path).split(os.sep)
    for p in reversed(parts[:-1]):
        if re.fullmatch(r"id\d+", p):  # VoxCeleb2: .../id00012/<youtube id>/00001.mp4
            return p
        m = re.fullmatch(r"(?:grid_)?(s\d+)", p)  # GRID: .../s1/... or grid_s1/video/...
        if m:
            return m.group(1)
    # LRS2/LRS3 (main/<video>/<n>.mp4, trainval/<id>/<n>.mp4) and plain folders: the parent folder
    return parts[-2] if len(parts) > 1 else "unknown"


def find_videos(inputs: Iterable[str]) -> list[str]:
    """Videos under folders (recursively), listed in text files (one path a line), or given directly."""
    found: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(VIDEO_EXTENSIONS)]
        elif os.path.isfile(item) and item.lower().endswith((".txt", ".lst", ".list")):
            base = os.path.dirname(os.path.abspath(item))
            with open(item) as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        found.append(line if os.path.isabs(line) else os.path.join(base, line))
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise TalkfaceError("no such file or folder", item)
    return sorted(dict.fromkeys(found))


def clip_key(speaker: str, video_id: str, clip: int) -> str:
    """A clip's key in the shards: speaker, video and the clip's number within the video."""
    return f"{speaker}_{video_id}_{clip:03d}".replace(".", "_").replace("-", "_")


def split_of(speaker: str, key: str, val_fraction: float, single_speaker: bool) -> str:
    """'val' or 'train' from a stable hash: of the speaker (speaker-disjoint), or of the clip when
    the whole data set has a single speaker and no speaker-disjoint split exists."""
    h = int(hashlib.sha1((key if single_speaker else speaker).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def process_video(path: str, opts: PreprocessOptions, single_speaker: bool) -> tuple[list[tuple[str, str, dict]], str | None]:
    """Clips of one video as (split, key, files) or an error message; never raises for bad videos."""
    from talkface.data.shards import clip_files
    from talkface.media.audio import load_audio
    from talkface.media.face import FaceTracker, align
    from talkface.media.video import iter_frames, video_info

    try:
        info = video_info(path)
        if not info["has_audio"]:
            return [], "no audio track"
        audio = load_audio(path, opts.sample_rate)
        fps = info["fps"]
        crops, marks, ok = [], [], []
        with FaceTracker(fps=fps) as tracker:
            for frame in iter_frames(path):
                face = tracker(frame)
                if face is None:
                    crops.append(np.zeros((*opts.size, 3), np.uint8))
                    marks.append(np.zeros((478, 2), np.float32))
                    ok.append(False)
                    continue
                crop, M = align(frame, face, opts.size)
                crops.append(crop)
                marks.append(face.landmarks @ M[:, :2].T + M[:, 2])
                ok.append(True)
    except TalkfaceError as e:
        return [], e.problem
    except Exception as e:  # a broken file must not stop the run: report it
        return [], f"{type(e).__name__}: {e}"
    if not crops:
        return [], "no video frames"
    if not any(ok):
        return [], "no face found"
    per_clip = max(1, int(round(opts.clip_seconds * fps)))
    video_id = os.path.splitext(os.path.basename(path))[0]
    speaker = speaker_of(path)
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
        key = clip_key(speaker, video_id, c)
        meta = {"source": os.path.abspath(path), "speaker": speaker, "fps": fps, "start": start, "frames": end - start, "size": list(opts.size)}
        split = split_of(speaker, key, opts.val_fraction, single_speaker)
        out.append((split, key, clip_files(np.stack(crops[start:end]), clip_audio, np.stack(marks[start:end]), meta, opts.sample_rate)))
    if not out:
        return [], "no clip with a face in enough frames"
    return out, None


def process_group(group: int, videos: list[str], out: str, opts: PreprocessOptions, single_speaker: bool) -> dict:
    from talkface.data.shards import ShardWriter

    writers = {s: ShardWriter(os.path.join(out, s, f"{group:06d}.tar")) for s in ("train", "val")}
    report = {"group": group, "videos": len(videos), "clips": {"train": 0, "val": 0}, "failed": {}}
    try:
        for path in videos:
            clips, error = process_video(path, opts, single_speaker)
            if error:
                report["failed"][path] = error
            for split, key, files in clips:
                meta = json.loads(files["json"])
                writers[split].add(key, files, speaker=meta["speaker"], frames=meta["frames"])
                report["clips"][split] += 1
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    tmp = os.path.join(out, "groups", f"{group:06d}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, tmp[:-4])
    return report


def preprocess(
    inputs: list[str], out: str, opts: PreprocessOptions | None = None, workers: int = 1,
    shard_index: int = 0, num_shards: int = 1, progress: bool = True,
) -> dict:
    """Preprocess `inputs` into `out`; returns (and writes to out/report.json) what was done and what failed."""
    opts = opts or PreprocessOptions()
    if not 0 <= shard_index < num_shards:
        raise TalkfaceError(f"--shard-index must be in [0, {num_shards})")
    videos = find_videos(inputs)
    if not videos:
        raise TalkfaceError("contains no videos", " ".join(inputs))
    single_speaker = len({speaker_of(v) for v in videos}) == 1
    for sub in ("train", "val", "groups"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    groups = [(g, videos[i : i + opts.videos_per_group]) for g, i in enumerate(range(0, len(videos), opts.videos_per_group))]
    mine = [(g, v) for g, v in groups if g % num_shards == shard_index]
    todo = [(g, v) for g, v in mine if not os.path.exists(os.path.join(out, "groups", f"{g:06d}.json"))]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="preprocess", unit="group", disable=not progress)
    if workers > 1 and len(todo) > 1:
        # spawn, not fork: a fork of a process that already runs mediapipe or torch threads can crash
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(process_group, g, v, out, opts, single_speaker) for g, v in todo]
            for f in futures:
                f.result()
                bar.update(1)
    else:
        for g, v in todo:
            process_group(g, v, out, opts, single_speaker)
            bar.update(1)
    bar.close()
    return write_report(out, single_speaker)


def write_report(out: str, single_speaker: bool) -> dict:
    reports = []
    folder = os.path.join(out, "groups")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                reports.append(json.load(f))
    summary = {
        "videos": sum(r["videos"] for r in reports),
        "clips": {s: sum(r["clips"][s] for r in reports) for s in ("train", "val")},
        "failed": {k: v for r in reports for k, v in r["failed"].items()},
        "split": "by clip (a single speaker: no speaker-disjoint split exists)" if single_speaker else "by speaker",
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
