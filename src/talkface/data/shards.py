"""Clip shards: WebDataset-style tar files of aligned face crops, audio and metadata.

One sample per clip, keyed by `<video>-<clip>`, as consecutive tar members:
  KEY.mp4   the aligned face crops, H.264 (small: a GRID sentence is ~50 kB)
  KEY.wav   the clip's audio, 16 kHz mono 16-bit PCM
  KEY.npy   aligned face-mesh landmarks (T, 478, 2) float16, crop pixels
  KEY.json  source path, speaker, fps, frame range, crop size
Other shards (the lip-sync expert's mouth crops, the refiner's windows) hold one KEY.npz per sample.

Each shard has an index beside it (`NAME.tar.idx.json`): every sample's key, speaker, frame count
and the byte range of each of its members, so a sample is read with one seek and the trainers can
start anywhere in a stream without reading what comes before. The writer makes the index with the
shard; for a shard without one (or whose size changed) it is rebuilt from the tar's headers.
"""
from __future__ import annotations

import errno
import glob
import io
import json
import os
import tarfile
import wave
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from talkface.errors import TalkfaceError


@dataclass
class Clip:
    key: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray  # (T * sr / fps,) float32
    landmarks: np.ndarray | None  # (T, 478, 2) float32
    meta: dict


def encode_frames(frames: np.ndarray, fps: float, crf: int = 18) -> bytes:
    """(T, H, W, 3) uint8 -> H.264 mp4 bytes."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=int(round(fps)))
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def decode_frames(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def encode_wav(audio: np.ndarray, rate: int) -> bytes:
    """Mono float samples -> WAV bytes, 16-bit PCM (x 32767, rounded)."""
    pcm = np.rint(np.clip(np.asarray(audio, np.float32), -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def decode_wav(data: bytes) -> np.ndarray:
    """16-bit PCM WAV bytes -> mono float32 samples (/ 32768), channels averaged."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM audio, got {8 * w.getsampwidth()}-bit")
        channels = w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    audio = pcm.astype(np.float32) / 32768
    return audio if channels == 1 else audio.reshape(-1, channels).mean(1)


INDEX_SUFFIX = ".idx.json"
INDEX_VERSION = 1


class CorruptShard(TalkfaceError):
    """A shard (or one of its samples) that cannot be read: truncated, overwritten or not a tar."""


def write_failure(e: OSError, path: str) -> TalkfaceError:
    """A full disk (or quota) as a one-line error naming the file; other OS errors likewise."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return TalkfaceError("cannot be written: no space left on the device", path)
    return TalkfaceError(f"cannot be written ({e.strerror or e})", path)


class ShardWriter:
    """Writes samples into one tar and its index, atomically: both appear under their names only
    when closed, and a failed write (a full disk) removes what was begun."""

    def __init__(self, path: str):
        self.path, self.tmp = path, path + ".tmp"
        try:
            self.tar = tarfile.open(self.tmp, "w")
        except OSError as e:
            raise write_failure(e, path) from None
        self.count = 0
        self.entries: list[dict] = []

    def add(self, key: str, files: dict[str, bytes], speaker: str = "unknown", frames: int = 0) -> None:
        """One sample: its files by extension, and what the index tells about it."""
        members = {}
        try:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                self.tar.addfile(info, io.BytesIO(data))
                members[ext] = [self.tar.offset - tarfile.BLOCKSIZE * ((len(data) + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE), len(data)]
        except OSError as e:
            self.abort()
            raise write_failure(e, self.path) from None
        self.entries.append({"key": key, "speaker": speaker, "frames": int(frames), "members": members})
        self.count += 1

    def close(self) -> None:
        try:
            self.tar.close()
            size = os.path.getsize(self.tmp)
            _write_json(self.path + INDEX_SUFFIX + ".tmp", {"version": INDEX_VERSION, "size": size, "samples": self.entries})
        except OSError as e:
            self.abort()
            raise write_failure(e, self.path) from None
        os.replace(self.tmp, self.path)
        os.replace(self.path + INDEX_SUFFIX + ".tmp", self.path + INDEX_SUFFIX)

    def abort(self) -> None:
        try:
            self.tar.close()
        except OSError:
            pass
        for p in (self.tmp, self.path + INDEX_SUFFIX + ".tmp"):
            if os.path.exists(p):
                os.remove(p)


def _write_json(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, separators=(",", ":"))


def shard_index(path: str) -> list[dict]:
    """The index of a shard: [{key, speaker, frames, members: {ext: [offset, size]}}], from its index
    file, or rebuilt from the tar's headers (and saved beside it when the folder is writable).
    Raises CorruptShard when the tar cannot be read to its end."""
    side = path + INDEX_SUFFIX
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise CorruptShard(f"cannot be read ({e.strerror})", path) from None
    try:
        with open(side) as f:
            index = json.load(f)
        if index.get("version") == INDEX_VERSION and index.get("size") == size:
            return index["samples"]
    except (OSError, ValueError):
        pass
    samples = _scan(path)
    try:
        tmp = f"{side}.{os.getpid()}.tmp"
        _write_json(tmp, {"version": INDEX_VERSION, "size": size, "samples": samples})
        os.replace(tmp, side)
    except OSError:  # a read-only data set: the index lives in memory only
        pass
    return samples


def _scan(path: str) -> list[dict]:
    samples: list[dict] = []
    try:
        with tarfile.open(path, "r") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = member.name.split(".", 1)
                if not samples or samples[-1]["key"] != key:
                    samples.append({"key": key, "speaker": "unknown", "frames": 0, "members": {}})
                samples[-1]["members"][ext] = [member.offset_data, member.size]
                if ext == "json":
                    meta = json.loads(tar.extractfile(member).read())
                    samples[-1]["speaker"] = str(meta.get("speaker", "unknown"))
                    samples[-1]["frames"] = int(meta.get("frames", 0))
    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
        raise CorruptShard(f"is not a readable shard ({type(e).__name__}: {str(e)[:60]})", path) from None
    return samples


def read_sample(path: str, entry: dict) -> dict[str, bytes]:
    """One sample of a shard by its index entry: {'__key__': key, ext: bytes, ...}."""
    out: dict[str, bytes] = {"__key__": entry["key"]}
    try:
        with open(path, "rb") as f:
            for ext, (offset, size) in entry["members"].items():
                f.seek(offset)
                data = f.read(size)
                if len(data) != size:
                    raise EOFError("the shard ends early")
                out[ext] = data
    except (OSError, EOFError) as e:
        raise CorruptShard(f"cannot be read ({e})", path) from None
    return out


def clip_files(frames: np.ndarray, audio: np.ndarray, landmarks: np.ndarray, meta: dict, rate: int, pose: np.ndarray | None = None) -> dict[str, bytes]:
    files = {
        "mp4": encode_frames(frames, meta["fps"]),
        "wav": encode_wav(audio, rate),
        "npy": encode_npy(landmarks.astype(np.float16)),
        "json": json.dumps(meta).encode(),
    }
    if pose is not None:  # the head's pose in the video, frame by frame (data.motion.head_track)
        files["pose.npy"] = encode_npy(np.asarray(pose, np.float32))
    return files


def encode_npy(a: np.ndarray) -> bytes:
    """An array -> .npy bytes (no pickled objects)."""
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """Named arrays -> compressed .npz bytes (no pickled objects)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_npz(data: bytes) -> dict[str, np.ndarray]:
    """A sample's .npz bytes -> its named arrays; never unpickles (loading data must not run code)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def iter_samples(path: str) -> Iterator[dict[str, bytes]]:
    """Raw samples of one tar: {'__key__': key, 'mp4': bytes, ...}, in order."""
    current: dict[str, bytes] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = member.name.split(".", 1)
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current[ext] = tar.extractfile(member).read()
    if current:
        yield current


def to_clip(sample: dict[str, bytes]) -> Clip:
    lm = np.load(io.BytesIO(sample["npy"]), allow_pickle=False).astype(np.float32) if "npy" in sample else None
    return Clip(sample["__key__"], decode_frames(sample["mp4"]), decode_wav(sample["wav"]), lm, json.loads(sample["json"]))


def shard_paths(root: str | os.PathLike, split: str) -> list[str]:
    paths = sorted(glob.glob(os.path.join(os.fspath(root), split, "*.tar")))
    if not paths:
        raise TalkfaceError(f"holds no '{split}' shards (make them with `talkface preprocess`)", root)
    return paths
