"""Video out (H.264 + AAC mp4, frames streamed, written atomically) and video in (frames, fps)."""
from __future__ import annotations

import collections
import errno
import math
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import cv2
import numpy as np

from talkface import stopping
from talkface.errors import TalkfaceError
from talkface.media.audio import MAX_PEAK, decode_problem

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
    Audio is interleaved with the frames as they arrive. A failure to write (a full disk) is a
    TalkfaceError naming `path`; once anything has failed or the writer is closed, every later call
    raises without touching the encoders (PyAV crashes on a closed container). Safe to call from
    several threads: one call runs at a time.
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
        self._lock = threading.RLock()
        self._finished = False  # closed, aborted or failed: the encoders must not be touched again
        self.written = False  # the video is at `path`
        try:
            fd, self.tmp = tempfile.mkstemp(suffix=".mp4", prefix=".talkface-", dir=folder)
        except OSError as e:
            raise _write_error(e, self.path) from None
        os.close(fd)
        self.fps = Fraction(fps).limit_denominator(1001)
        try:
            self.container = av.open(self.tmp, "w", format="mp4")
            self.video = self.container.add_stream("libx264", rate=self.fps)
            self.video.width, self.video.height = width, height
            self.video.pix_fmt = "yuv420p"
            # veryfast's search cut to its cheapest (diamond motion search, one subpixel pass, no sub-block
            # partitions): 40% less encoding time, for 0.06-0.6 dB of PSNR (at 39-54 dB) and files 0-14% larger.
            # The frames are rendered by a process per core meanwhile: the encoder takes a quarter of the
            # cores (x264's own choice, 1.5 threads a core, costs 15% more time on two cores)
            from talkface.render.parallel import cores

            self.video.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "subme=1:me=dia:partitions=none", "threads": str(max(1, cores() // 4))}
            self._picture = av.VideoFrame(width, height, "yuv420p")
            self._planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in self._picture.planes]
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
        self.audio_frames = self._audio_frames(src, start, audio_path)
        self.audio_time = 0.0
        self.audio_done = False

    def _audio_frames(self, src: av.audio.stream.AudioStream, start: float, path: str) -> Iterator[av.AudioFrame]:
        skip = int(round(start * self.audio.rate))
        frames = (r for f in self.audio_in.decode(src) for r in self.resampler.resample(f))
        for frame in frames:
            stopping.check()
            if not np.abs(frame.to_ndarray()).max(initial=0.0) <= MAX_PEAK:  # NaN too: the encoder would fail on it mid-run
                raise TalkfaceError("contains invalid samples (NaN, infinity or far beyond full scale 1.0)", path)
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

    def write(self, frame: np.ndarray, at: tuple[int, int] | None = None) -> None:
        """frame: (H, W, 3) uint8 RGB. With `at` (x, y), `frame` is a patch that changes only that part of
        the last frame written (all else stays): x, y and its sides must be even (the colour planes are
        halved), and a whole frame must have come first. An animated photo changes only around its face,
        so the rest of a large picture is neither copied nor converted again."""
        if at is not None and (at[0] % 2 or at[1] % 2 or frame.shape[0] % 2 or frame.shape[1] % 2):
            raise ValueError(f"a patch needs even corners and sides, got {frame.shape[1]}x{frame.shape[0]} at {at}")
        # BT.601 limited range, as FFmpeg's own conversion gives, at a quarter of its time (and before the lock)
        planes = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420)
        h, w = frame.shape[:2]
        y, u, v = planes[:h], planes[h : h + h // 4].reshape(h // 2, w // 2), planes[h + h // 4 :].reshape(h // 2, w // 2)
        with self._lock:
            self._check_open()
            if at is not None and not self.frames_written:
                raise ValueError("a patch needs a whole frame written before it")
            x0, y0 = at if at is not None else (0, 0)
            # one picture, reused: the encoder copies each frame it is given before `encode` returns
            for plane, part, k in zip(self._planes, (y, u, v), (1, 2, 2)):
                plane[y0 // k : y0 // k + part.shape[0], x0 // k : x0 // k + part.shape[1]] = part
            try:
                self._picture.pts = self.frames_written
                for packet in self.video.encode(self._picture):
                    self.container.mux(packet)
                self.frames_written += 1
                self._pump_audio(self.frames_written / float(self.fps))
            except BaseException as e:
                self._discard()
                if isinstance(e, (OSError, av.error.FFmpegError)):
                    raise _write_error(e, self.path) from None
                raise

    def close(self) -> str:
        """Finish encoding (audio trimmed to the video's length) and move the file into place."""
        with self._lock:
            self._check_open()
            try:
                for packet in self.video.encode():
                    self.container.mux(packet)
                self._pump_audio(self.frames_written / float(self.fps), cut=True)
                if self.audio_frames is not None:
                    for packet in self.audio.encode():
                        self.container.mux(packet)
                    self.audio_in.close()
                self.container.close()
                self._finished = True
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(self.tmp, 0o666 & ~umask)
                os.replace(self.tmp, self.path)
                self.written = True
            except BaseException as e:
                self._discard()
                if isinstance(e, (OSError, av.error.FFmpegError)):
                    raise _write_error(e, self.path) from None
                raise
        return self.path

    def abort(self) -> None:
        """Stop and remove the temporary file; nothing appears at `path`."""
        with self._lock:
            self._discard()

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"the writer of {self.path} has already stopped")

    def _discard(self) -> None:
        self._finished = True
        for name in ("container", "audio_in"):
            obj = getattr(self, name, None)
            if obj is not None:
                setattr(self, name, None)  # closed once only
                try:
                    obj.close()
                except Exception:
                    pass
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.written:  # unless closed already
            self.close()


def _write_error(e: Exception, path: str) -> TalkfaceError:
    """What stopped a video from being written, as the one error the user sees."""
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return TalkfaceError("cannot be written: no space left on the device", path)
    if isinstance(e, OSError):
        return TalkfaceError(f"cannot be written ({e.strerror or decode_problem(e)})", path)
    return TalkfaceError(f"cannot be encoded ({decode_problem(e)})", path)


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


def iter_frames(path: str | os.PathLike, fps: float | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames (H, W, 3) of the first video stream, decoded one at a time.

    With `fps`, the frames shown at a constant rate: output frame j is the one on screen at the
    middle of its interval, (j + 0.5) / fps after the first, by each frame's own timestamp; a video
    of variable frame rate keeps its timing (frames repeated or dropped), one of that rate is unchanged.
    """
    frames = ((_rgb(f), *_when(f)) for f in _decoded(os.fspath(path)))
    if fps is None:
        yield from (rgb for rgb, _, _ in frames)
    else:
        yield from on_grid(frames, fps)


def _when(frame: av.VideoFrame) -> tuple[float | None, float | None]:
    """A decoded frame's time and duration in seconds (None where the stream does not say)."""
    duration = getattr(frame, "duration", None)
    base = frame.time_base
    return frame.time, float(duration * base) if duration and base else None


def on_grid(frames: Iterable[tuple[object, float | None, float | None]], fps: float) -> Iterator:
    """(item, time, duration) in presentation order -> the items on screen at t0 + (j + 0.5) / fps,
    j = 0, 1, ... until the last one's end (t0: the first's time). A missing or backward time is
    taken as one interval after the previous frame's."""
    step = 1.0 / fps
    start = previous = None
    held, length, j = None, step, 0
    for item, time, duration in frames:
        if start is None:
            start = previous = time if time is not None else 0.0
        if time is None or time < previous or (held is not None and time == previous):
            time = previous + step
        if held is not None:
            while start + (j + 0.5) * step < time:
                yield held
                j += 1
        held, previous, length = item, time, duration or step
    if held is not None:
        while start + (j + 0.5) * step < previous + length or j == 0:
            yield held
            j += 1


def frames_on_grid(path: str | os.PathLike, fps: float) -> int | None:
    """How many frames `iter_frames(path, fps)` gives, from the packets' timestamps (nothing is
    decoded); None when they do not say."""
    path = os.fspath(path)
    start = end = None
    try:
        with av.open(path, metadata_errors="replace") as c:
            stream = c.streams.video[0]
            for packet in c.demux(stream):
                if packet.pts is None or packet.time_base is None:
                    continue
                time = float(packet.pts * packet.time_base)
                length = float(packet.duration * packet.time_base) if packet.duration else 1.0 / fps
                start = time if start is None else min(start, time)
                end = time + length if end is None else max(end, time + length)
    except (av.error.FFmpegError, IndexError):
        return None
    return None if start is None else max(1, math.ceil((end - start) * fps - 0.5 - 1e-6))


def _backward(path: str, pts: list[int | None], order: list[int], chunk: int) -> Iterator[np.ndarray]:
    """Frames order[-2], order[-3], ..., order[0] (indices of the video's frames, whose timestamps are
    `pts`; `order` never decreases): decoded forward a segment of `chunk` at a time (each from the
    keyframe before it) and handed out in reverse, so memory holds one segment."""
    end = len(order) - 1
    seekable = all(p is not None for p in pts) and all(a < b for a, b in zip(pts, pts[1:]))
    while end > 0:
        start = max(0, end - chunk)
        wanted = set(order[start:end])
        first, last = min(wanted), max(wanted)
        index_of = {p: i for i, p in enumerate(pts)} if seekable else None
        got: dict[int, np.ndarray] = {}
        try:
            with av.open(path, metadata_errors="replace") as c:
                stream = c.streams.video[0]
                stream.thread_type = "AUTO"
                if seekable and first > 0:
                    c.seek(pts[first], stream=stream, backward=True, any_frame=False)
                for i, frame in enumerate(c.decode(stream)):
                    index = index_of.get(frame.pts) if seekable else i
                    if seekable and frame.pts is not None and frame.pts > pts[last]:
                        break
                    if index in wanted:
                        got[index] = _rgb(frame)
                    if not seekable and i >= last:
                        break
        except av.error.FFmpegError as e:
            raise TalkfaceError(f"cannot be read as video ({decode_problem(e)})", path) from None
        if len(got) < len(wanted):  # the seek landed past the segment: decode from the start
            if not seekable:
                raise TalkfaceError("cannot be read as video (its frames differ from one reading to the next)", path)
            seekable = False
            continue
        yield from (got[order[k]] for k in reversed(range(start, end)))
        end = start


def _forward(path: str, order: list[int]) -> Iterator[np.ndarray]:
    """Frames order[1], order[2], ..., order[-1], decoded in one forward pass (`order` never decreases)."""
    counts = collections.Counter(order[1:])
    for i, frame in enumerate(_decoded(path)):
        if i > order[-1]:
            return
        if counts[i]:
            rgb = _rgb(frame)
            for _ in range(counts[i]):
                yield rgb


def iter_frames_pingpong(path: str | os.PathLike, memory: int = 256 * 2**20, fps: float | None = None) -> Iterator[np.ndarray]:
    """Frames 0, 1, ..., N-1, N-2, ..., 0, 1, ... without end: a video played back and forth (with
    `fps`, its frames at that constant rate, as `iter_frames` gives them).

    The forward passes stream; the backward ones hold at most `memory` bytes of frames at a time.
    """
    path = os.fspath(path)
    pts: list[int | None] = []
    order: list[int] = []  # the video's frame shown at each step of one forward pass
    last = None

    def timed() -> Iterator[tuple[tuple[int, np.ndarray], float | None, float | None]]:
        for i, frame in enumerate(_decoded(path)):
            pts.append(frame.pts)
            yield (i, _rgb(frame)), *_when(frame)

    steps = on_grid(timed(), fps) if fps is not None else ((item for item, _, _ in timed()))
    for i, rgb in steps:
        order.append(i)
        last = rgb
        yield rgb
    if last is None:
        return
    chunk = max(4, memory // last.nbytes)
    while True:
        if len(order) == 1:
            yield last
            continue
        yield from _backward(path, pts, order, chunk)
        yield from _forward(path, order)
