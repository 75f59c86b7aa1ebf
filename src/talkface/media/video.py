"""Video out (H.264 + AAC mp4, frames streamed, written atomically) and video in (frames, fps)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np

from talkface.errors import TalkfaceError
from talkface.media.audio import decode_problem

AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def prepare_output(path: str | os.PathLike, overwrite: bool = False, suffix: str = ".mp4", inputs: Iterable = (),
                   overwrite_option: str = "overwrite=True") -> str:
    """Check an output path before any work is done: its folder exists, it is none of the `inputs`
    (paths; anything else is skipped), and it is not clobbered (the error names `overwrite_option`:
    the Python argument, or the command line's flag)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise TalkfaceError("the output folder does not exist", folder)
    if os.path.isdir(path):
        raise TalkfaceError("is a directory; give a file name for the output", path)
    for given in inputs:
        if isinstance(given, (str, os.PathLike)) and os.path.exists(path) and os.path.exists(given) and os.path.samefile(path, given):
            raise TalkfaceError("is also an input; give the output another name", path)
    if os.path.exists(path) and not overwrite:
        raise TalkfaceError(f"already exists (pass {overwrite_option} to replace it)", path)
    if not os.access(folder, os.W_OK):
        raise TalkfaceError("the output folder is not writable", folder)
    if suffix and not path.lower().endswith(suffix):
        raise TalkfaceError(f"the output must be a {suffix} file", path)
    return path


class VideoWriter:
    """Write RGB frames as H.264 (yuv420p) with an optional audio track muxed as AAC.

    The file appears at `path` only when `close()` succeeds: until then it is a temporary file in
    the same folder, removed if anything fails, so no half-written video is ever left behind.
    Audio is interleaved with the frames as they arrive.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        size: tuple[int, int],
        audio_path: str | os.PathLike | None = None,
        crf: int = 18,
        audio_start: float = 0.0,
    ):
        self.path = os.fspath(path)
        height, width = size
        if height % 2 or width % 2:
            raise ValueError(f"H.264 needs even frame dimensions, got {width}x{height}")
        folder = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(suffix=".mp4", prefix=".talkface-", dir=folder)
        os.close(fd)
        self.fps = Fraction(fps).limit_denominator(1001)
        try:
            self.container = av.open(self.tmp, "w", format="mp4")
            self.video = self.container.add_stream("libx264", rate=self.fps)
            self.video.width, self.video.height = width, height
            self.video.pix_fmt = "yuv420p"
            self.video.options = {"crf": str(crf), "preset": "veryfast"}
            self.audio_frames = None
            if audio_path is not None:
                self._open_audio(os.fspath(audio_path), audio_start)
        except BaseException:
            self._discard()
            raise
        self.frames_written = 0

    def _open_audio(self, audio_path: str, start: float) -> None:
        self.audio_in = av.open(audio_path, metadata_errors="replace")
        src = self.audio_in.streams.audio[0]
        # AAC pads its last 1024-sample frame; at 44.1 kHz or more that tail stays under one video frame
        rate = src.rate if src.rate in AAC_RATES and src.rate >= 44100 else 48000
        layout = "stereo" if src.channels and src.channels >= 2 else "mono"
        self.audio = self.container.add_stream("aac", rate=rate)
        self.audio.layout = layout
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self.audio_frames = self._audio_frames(src, start)
        self.audio_time = 0.0
        self.audio_done = False

    def _audio_frames(self, src: av.audio.stream.AudioStream, start: float) -> Iterator[av.AudioFrame]:
        skip = int(round(start * self.audio.rate))
        frames = (r for f in self.audio_in.decode(src) for r in self.resampler.resample(f))
        for frame in frames:
            if skip >= frame.samples:
                skip -= frame.samples
                continue
            if skip:
                data = np.ascontiguousarray(frame.to_ndarray()[:, skip:])
                frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=self.audio.layout.name)
                frame.sample_rate = self.audio.rate
                skip = 0
            frame.pts = None
            yield frame

    def _pump_audio(self, until: float, cut: bool = False) -> None:
        """Encode audio up to `until` seconds; with `cut`, the last frame is trimmed to end there."""
        if self.audio_frames is None or self.audio_done:
            return
        while self.audio_time < until:
            frame = next(self.audio_frames, None)
            if frame is None:
                self.audio_done = True
                break
            room = int(round((until - self.audio_time) * self.audio.rate))
            if cut and frame.samples > room:
                frame = self._trimmed(frame, room)
                self.audio_done = True
            self.audio_time += frame.samples / self.audio.rate
            for packet in self.audio.encode(frame):
                self.container.mux(packet)

    def _trimmed(self, frame: av.AudioFrame, samples: int) -> av.AudioFrame:
        data = np.ascontiguousarray(frame.to_ndarray()[:, :samples])
        out = av.AudioFrame.from_ndarray(data, format="fltp", layout=self.audio.layout.name)
        out.sample_rate = self.audio.rate
        return out

    def write(self, frame: np.ndarray) -> None:
        """frame: (H, W, 3) uint8 RGB."""
        try:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in self.video.encode(vf):
                self.container.mux(packet)
            self.frames_written += 1
            self._pump_audio(self.frames_written / float(self.fps))
        except BaseException:
            self.abort()
            raise

    def close(self) -> str:
        """Finish encoding (audio trimmed to the video's length) and move the file into place."""
        try:
            for packet in self.video.encode():
                self.container.mux(packet)
            self._pump_audio(self.frames_written / float(self.fps), cut=True)
            if self.audio_frames is not None:
                for packet in self.audio.encode():
                    self.container.mux(packet)
                self.audio_in.close()
            self.container.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.path)
        except BaseException:
            self._discard()
            raise
        return self.path

    def abort(self) -> None:
        """Stop and remove the temporary file; nothing appears at `path`."""
        self._discard()

    def _discard(self) -> None:
        for name in ("container", "audio_in"):
            obj = getattr(self, name, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    pass
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def video_info(path: str | os.PathLike) -> dict:
    """fps, frame count (estimated when the container does not say), size and whether audio exists."""
    path = os.fspath(path)
    try:
        with av.open(path, metadata_errors="replace") as c:
            if not c.streams.video:
                raise TalkfaceError("has no video track", path)
            v = c.streams.video[0]
            if v.codec_context is None:
                raise TalkfaceError("has a video track that cannot be decoded", path)
            fps = float(v.average_rate or v.guessed_rate or 25)
            frames = v.frames or (int(round(float(v.duration * v.time_base) * fps)) if v.duration else 0)
            return {
                "fps": fps,
                "frames": frames,
                "width": v.codec_context.width,
                "height": v.codec_context.height,
                "has_audio": bool(c.streams.audio),
                "duration": float(c.duration / av.time_base) if c.duration else frames / fps,
            }
    except av.error.FFmpegError as e:
        raise TalkfaceError(f"cannot be read as video ({decode_problem(e)})", path) from None


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB, turned upright when the stream carries a display rotation (phone videos)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4  # counterclockwise quarter turns
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _decoded(path: str) -> Iterator[av.VideoFrame]:
    """The first video stream's frames as PyAV frames, in presentation order."""
    try:
        with av.open(path, metadata_errors="replace") as c:
            if not c.streams.video:
                raise TalkfaceError("has no video track", path)
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            yield from c.decode(stream)
    except av.error.FFmpegError as e:
        raise TalkfaceError(f"cannot be read as video ({decode_problem(e)})", path) from None


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """RGB uint8 frames (H, W, 3) of the first video stream, decoded one at a time."""
    for frame in _decoded(os.fspath(path)):
        yield _rgb(frame)


def _backward(path: str, pts: list[int], chunk: int) -> Iterator[np.ndarray]:
    """Frames pts[-2], pts[-3], ..., pts[0]: decoded forward a segment of `chunk` frames at a time
    (each from the keyframe before it) and handed out in reverse, so memory holds one segment."""
    end = len(pts) - 1
    seekable = all(p is not None for p in pts) and all(a < b for a, b in zip(pts, pts[1:]))
    while end > 0:
        start = max(0, end - chunk)
        wanted = {p: i for i, p in enumerate(pts[start:end], start)} if seekable else None
        segment: list[np.ndarray | None] = [None] * (end - start)
        try:
            with av.open(path, metadata_errors="replace") as c:
                stream = c.streams.video[0]
                stream.thread_type = "AUTO"
                if seekable and start > 0:
                    c.seek(pts[start], stream=stream, backward=True, any_frame=False)
                for i, frame in enumerate(c.decode(stream)):
                    index = wanted.get(frame.pts) if seekable else i
                    if seekable and frame.pts is not None and frame.pts > pts[end - 1]:
                        break
                    if index is not None and start <= index < end:
                        segment[index - start] = _rgb(frame)
                    if not seekable and i >= end - 1:
                        break
        except av.error.FFmpegError as e:
            raise TalkfaceError(f"cannot be read as video ({decode_problem(e)})", path) from None
        if any(f is None for f in segment):  # the seek landed past the segment: decode from the start
            seekable = False
            continue
        yield from reversed(segment)
        end = start


def iter_frames_pingpong(path: str | os.PathLike, memory: int = 256 * 2**20) -> Iterator[np.ndarray]:
    """Frames 0, 1, ..., N-1, N-2, ..., 0, 1, ... without end: a video played back and forth.

    The forward passes stream; the backward ones hold at most `memory` bytes of frames at a time.
    """
    path = os.fspath(path)
    pts: list[int] = []
    last = None
    for frame in _decoded(path):
        pts.append(frame.pts)
        last = _rgb(frame)
        yield last
    if last is None:
        return
    chunk = max(4, memory // last.nbytes)
    while True:
        if len(pts) == 1:
            yield last
            continue
        yield from _backward(path, pts, chunk)
        for i, frame in enumerate(iter_frames(path)):
            if i > 0:
                yield frame
