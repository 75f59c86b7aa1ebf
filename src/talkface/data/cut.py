"""The one engine that cuts talking videos into tar shards, for every kind of training data.

A maker turns one video into samples (or an error message): aligned clips (`preprocess`), the
lip-sync expert's mouth crops (`data.mouths.cut_mouths`), the mouth refiner's training windows
(`data.refine.cut_windows`). The engine finds the videos, gives each its speaker and split, runs the
maker in worker processes and writes the shards in the main process.

Work is cut into groups of videos; group g becomes `train/g.tar` and `val/g.tar` (each with its index)
plus a report `groups/g.json`, written last. A group whose report exists is skipped, so an
interrupted run resumes where it stopped; `shard_index`/`num_shards` give each machine of a cluster
its groups. A worker that dies (killed, out of memory, a crash in native code) loses only the video
it was cutting: that video is reported as failed and a new worker takes the next one.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import NamedTuple

from tqdm import tqdm

from talkface.errors import TalkfaceError

VIDEO_EXTENSIONS = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm", ".m4v")
SPLITS = ("train", "val")


class Sample(NamedTuple):
    """One sample of a shard, as a maker makes it: `frames` video frames at `fps` (for the report's hours)."""

    split: str
    key: str
    files: dict[str, bytes]
    speaker: str
    frames: int
    fps: float = 25.0


class Split(NamedTuple):
    """Which side a sample goes to: a stable hash of its speaker (speaker-disjoint), or of a key when
    the data set has a single speaker and no speaker-disjoint split exists."""

    val_fraction: float
    single_speaker: bool

    def __call__(self, speaker: str, key: str) -> str:
        return split_of(speaker, key, self.val_fraction, self.single_speaker)


# A maker: (video path, its speaker, the split) -> samples, or why the video gave none. It runs in a
# worker process, so it must be picklable (a module-level function, or a functools.partial of one).
Maker = Callable[[str, str, Split], "list[Sample] | str"]

HDTF = re.compile(r"((?:WDA|WRA|RD)_.+)_\d+")  # WRA_KatieHill_000.mp4, RD_Radio1_000.mp4


def speaker_of(path: str) -> str:
    """The speaker a video belongs to, from the layouts of VoxCeleb2, LRS2/LRS3, HDTF and GRID."""
    parts = os.path.normpath(path).split(os.sep)
    m = HDTF.fullmatch(os.path.splitext(parts[-1])[0])
    if m:  # HDTF: a flat folder, the speaker in the file name
        return m.group(1)
    for p in reversed(parts[:-1]):
        if re.fullmatch(r"id\d+", p):  # VoxCeleb2: .../id00012/<youtube id>/00001.mp4
            return p
        m = re.fullmatch(r"(?:grid_)?(s\d+)", p)  # GRID: .../s1/... or grid_s1/video/...
        if m:
            return m.group(1)
    # LRS2 (main/<video>/00001.mp4: no speaker ids, the video stands in), LRS3 (trainval/<id>/00001.mp4)
    # and plain folders: the parent folder
    return parts[-2] if len(parts) > 1 else "unknown"


def read_speakers(path: str) -> dict[str, str]:
    """A speaker mapping file: lines `video<TAB or comma>speaker`, '#' comments. A video is a path
    (relative to the file's folder) or a bare file name; the result maps absolute paths and bare names."""
    base = os.path.dirname(os.path.abspath(path))
    found: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TalkfaceError(f"cannot be read as a speaker list ({getattr(e, 'strerror', None) or e})", path) from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        video, sep, speaker = line.partition("\t") if "\t" in line else line.rpartition(",")
        video, speaker = video.strip(), speaker.strip()
        if not sep or not video or not speaker:
            raise TalkfaceError(f"line {n} is not 'video<TAB or comma>speaker': {line[:60]!r}", path)
        if os.sep in video or "/" in video:
            video = os.path.normpath(os.path.join(base, video))
        found[video] = speaker
    return found


def speaker_for(path: str, speakers: dict[str, str] | None) -> str:
    """A video's speaker: from the mapping (by path, else by file name), else from its path's layout."""
    if speakers:
        for name in (os.path.normpath(os.path.abspath(path)), os.path.basename(path)):
            if name in speakers:
                return speakers[name]
    return speaker_of(path)


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
    return f"{speaker}_{video_id}_{clip:03d}".replace(".", "_").replace("-", "_").replace("/", "_")


def video_id(path: str, speaker: str) -> str:
    """A video's name within its speaker's: the file name, with the folder it is numbered in
    (VoxCeleb2: id00012/<youtube id>/00001.mp4) when that folder is not the speaker's."""
    folder, stem = os.path.basename(os.path.dirname(path)), os.path.splitext(os.path.basename(path))[0]
    return f"{folder}_{stem}" if stem.isdigit() and folder and folder != speaker else stem


def video_key(path: str, speaker: str) -> str:
    """The key of a video's first clip: samples of a whole video take its split, so that a clip held
    out of the aligned clips is held out of the mouth crops and refiner windows too."""
    return clip_key(speaker, video_id(path, speaker), 0)


def split_of(speaker: str, key: str, val_fraction: float, single_speaker: bool) -> str:
    """'val' or 'train' from a stable hash: of the speaker (speaker-disjoint), or of the clip when
    the whole data set has a single speaker and no speaker-disjoint split exists."""
    h = int(hashlib.sha1((key if single_speaker else speaker).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def _make(maker: Maker, path: str, speaker: str, split: Split) -> list[Sample] | str:
    try:
        return maker(path, speaker, split)
    except TalkfaceError as e:
        return e.problem
    except Exception as e:  # a broken file must not stop the run: report it
        return f"{type(e).__name__}: {e}"


def _serve(maker: Maker, conn) -> None:
    """A worker: videos in, their samples out, until the main process closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the main process, which ends its workers
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        result = _make(maker, *job)
        try:
            conn.send(result)
        except OSError:  # the main process is gone
            return


class Workers:
    """`count` spawned processes running one maker, one video each at a time. A worker that dies
    fails only its own video; a new one takes its place."""

    def __init__(self, maker: Maker, count: int):
        # spawn, not fork: a fork of a process that already runs mediapipe or torch threads can crash
        self.ctx = multiprocessing.get_context("spawn")
        self.maker, self.count = maker, count
        self.idle: list = []
        self.busy: dict = {}  # pipe -> (process, job id)

    def _start(self):
        here, there = self.ctx.Pipe()
        p = self.ctx.Process(target=_serve, args=(self.maker, there), daemon=True)
        p.start()
        there.close()
        return p, here

    def run(self, jobs: Iterable[tuple[object, tuple[str, str, Split]]]) -> Iterator[tuple[object, list[Sample] | str]]:
        """(id, (path, speaker, split)) -> (id, samples or error), in the order they finish."""
        jobs = iter(jobs)
        while True:
            while len(self.busy) < self.count:
                job = next(jobs, None)
                if job is None:
                    break
                p, conn = self.idle.pop() if self.idle else self._start()
                if not p.is_alive():  # died while idle: the job goes to a fresh worker
                    conn.close()
                    p, conn = self._start()
                conn.send(job[1])
                self.busy[conn] = (p, job[0])
            if not self.busy:
                return
            ready = wait(list(self.busy) + [p.sentinel for p, _ in self.busy.values()])
            for conn in list(self.busy):
                p, ident = self.busy[conn]
                if conn in ready or p.sentinel in ready:
                    try:
                        result = conn.recv()
                    except (EOFError, OSError):  # the worker died with this video
                        p.join()
                        code = p.exitcode
                        result = f"the preprocessing process died ({f'signal {-code}' if code and code < 0 else f'exit code {code}'})"
                        conn.close()
                    else:
                        self.idle.append((p, conn))
                    del self.busy[conn]
                    yield ident, result

    def close(self) -> None:
        """Idle workers end when their pipe closes; busy ones (a run stopped by an error) are killed."""
        for p, conn in self.idle:
            conn.close()
        for conn, (p, _) in self.busy.items():
            p.kill()
            conn.close()
        for p, _ in self.idle + list(self.busy.values()):
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        self.idle, self.busy = [], {}


def _in_process(maker: Maker, jobs) -> Iterator[tuple[object, list[Sample] | str]]:
    for ident, job in jobs:
        yield ident, _make(maker, *job)


def cut(
    inputs: list[str], out: str, maker: Maker, kind: str, val_fraction: float = 0.05, videos_per_group: int = 50,
    workers: int = 1, shard_index: int = 0, num_shards: int = 1, speakers: dict[str, str] | None = None, progress: bool = True,
) -> dict:
    """Cut the videos of `inputs` into shards under `out` with `maker`; returns (and writes to
    out/report.json) what was done and what failed. `workers` processes cut videos (0: this one)."""
    if not 0 <= shard_index < num_shards:
        raise TalkfaceError(f"--shard-index must be in [0, {num_shards})")
    videos = find_videos(inputs)
    if not videos:
        raise TalkfaceError("contains no videos", " ".join(inputs))
    who = {v: speaker_for(v, speakers) for v in videos}
    split = Split(val_fraction, len(set(who.values())) == 1)
    try:
        for sub in ("train", "val", "groups"):
            os.makedirs(os.path.join(out, sub), exist_ok=True)
    except OSError as e:
        raise TalkfaceError(f"cannot be made an output folder ({e.strerror})", out) from None
    groups = [videos[i : i + videos_per_group] for i in range(0, len(videos), videos_per_group)]
    mine = [g for g in range(len(groups)) if g % num_shards == shard_index]
    todo = [g for g in mine if not os.path.exists(group_report(out, g))]
    bar = tqdm(total=sum(len(groups[g]) for g in mine), initial=sum(len(groups[g]) for g in mine if g not in todo),
               desc=kind, unit="video", disable=not progress, dynamic_ncols=True)
    jobs = (((g, i), (path, who[path], split)) for g in todo for i, path in enumerate(groups[g]))
    pool = Workers(maker, workers) if workers > 0 else None
    made: dict[int, dict[int, list[Sample] | str]] = {g: {} for g in todo}
    try:
        for (g, i), result in (pool.run(jobs) if pool else _in_process(maker, jobs)):
            made[g][i] = result
            bar.update(1)
            if len(made[g]) == len(groups[g]):
                done = made.pop(g)
                write_group(out, g, groups[g], [done[i] for i in range(len(groups[g]))])
    finally:
        if pool:
            pool.close()
        bar.close()
    return write_report(out, kind, split.single_speaker)


def group_report(out: str, group: int) -> str:
    return os.path.join(out, "groups", f"{group:06d}.json")


def write_group(out: str, group: int, videos: list[str], results: list[list[Sample] | str]) -> dict:
    """A group's shards, then its report: the report exists only when both shards are complete."""
    from talkface.data.shards import INDEX_SUFFIX, ShardWriter

    report = {"group": group, "videos": len(videos), "failed": {}}
    report.update({s: {"clips": 0, "frames": 0, "seconds": 0.0, "speakers": set()} for s in SPLITS})
    writers: dict[str, ShardWriter] = {}
    try:
        for s in SPLITS:
            writers[s] = ShardWriter(os.path.join(out, s, f"{group:06d}.tar"))
        for path, result in zip(videos, results):
            if isinstance(result, str):
                report["failed"][os.path.abspath(path)] = result
                continue
            for s in result:
                writers[s.split].add(s.key, s.files, speaker=s.speaker, frames=s.frames)
                r = report[s.split]
                r["clips"] += 1
                r["frames"] += int(s.frames)
                r["seconds"] += s.frames / s.fps
                r["speakers"].add(s.speaker)
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():  # the group's shards go, so that none stands without its report
            w.abort()
            for done in (w.path, w.path + INDEX_SUFFIX):
                if os.path.exists(done):
                    os.remove(done)
        raise
    for s in SPLITS:
        report[s]["speakers"] = sorted(report[s]["speakers"])
    _write_json(group_report(out, group), report)
    return report


def _write_json(path: str, data: dict) -> None:
    """Whole or not at all: a half-written file (a full disk) is removed, never left under its name,
    and the failure is one line naming the file."""
    from talkface.data.shards import write_failure

    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise write_failure(e, path) from None


def write_report(out: str, kind: str, single_speaker: bool) -> dict:
    """out/report.json from the groups' reports (this machine's and any other's): per split the
    samples ("clips"), speakers and hours of video; and the failed videos with the reason."""
    reports = []
    folder = os.path.join(out, "groups")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                reports.append(json.load(f))
    summary = {
        "kind": kind,
        "videos": sum(r["videos"] for r in reports),
        "split": "by clip (a single speaker: no speaker-disjoint split exists)" if single_speaker else "by speaker",
    }
    for s in SPLITS:
        summary[s] = {
            "clips": sum(r[s]["clips"] for r in reports),
            "speakers": len({p for r in reports for p in r[s]["speakers"]}),
            "hours": sum(r[s]["seconds"] for r in reports) / 3600,
        }
    summary["failed"] = {k: v for r in reports for k, v in r["failed"].items()}
    _write_json(os.path.join(out, "report.json"), summary)
    return summary


def summary_line(report: dict, out: str) -> str:
    """The report in one line, as the CLI prints it."""
    sides = ", ".join(f"{report[s]['clips']} {s} ({report[s]['speakers']} speakers, {report[s]['hours']:.2f} h)" for s in SPLITS)
    return f"{report['kind']}: {sides}; split {report['split']}; {len(report['failed'])} videos failed, listed in {os.path.join(out, 'report.json')}"
