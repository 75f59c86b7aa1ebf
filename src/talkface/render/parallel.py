"""Frames rendered side by side, one worker process per core.

The warps are numpy and OpenCV code that takes and drops the GIL hundreds of times a frame: two
threads rendered no faster than one. So an offline run forks worker processes once the face is
rigged (they inherit the rig, the refiner and whatever else the task needs, without pickling), sends
each a chunk of frames' small inputs (motion, speech window, expression; or a slot holding a video
frame) and gets the frames back in slots of shared memory. Each chunk is rendered by
`render_frames` in its worker, one refiner call for the chunk, exactly as a stream renders the
frames one push completes: only float rounding differs.

The server's live streams render the same way, a push at a time (`LiveRenderers`): each stream's
rig lives in one worker, which warps the frames, finishes them around the refiner's output (the
refiner runs in the server, once for every stream's crops) and encodes them.

Where processes are not forked (off Linux: Windows has no fork, and macOS's system libraries are not
safe in a forked child; a thread other than the main one, such as a server's worker, where forking
would copy locks other threads hold), the chunks are rendered in this process, in order, by the same
task.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import mmap
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import cv2
import numpy as np
import torch

from talkface.errors import TalkfaceError
from talkface.render.rig import lay, render_frames, rig_part

# A task: (input frames (n, H, W, 3) uint8 view of their slots, or None; one item per frame) -> the frames.
Task = Callable[[np.ndarray | None, Sequence[Any]], list[np.ndarray]]

_task: Task | None = None  # set in the parent just before the workers are forked; they inherit it
_slots: np.ndarray | None = None


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def can_fork() -> bool:
    """Linux only (macOS offers fork, but its system libraries are not safe in a forked child), from the main thread."""
    return sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()


def _start_worker() -> None:
    """In a new worker: the parent alone answers Ctrl-C (and ends the workers); one thread for torch (and OpenCV, as forked)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _render(first: int, count: int, inputs: bool, items: Sequence[Any]) -> None:
    """In a worker: render a chunk whose frames go to slots first .. first + count - 1 (holding its input frames when `inputs`)."""
    frames = _task(_slots[first : first + count] if inputs else None, items)
    for i, frame in enumerate(frames):
        _slots[first + i] = frame


class Renderer:
    """Chunks of frames rendered by `task` in `workers` processes (0: in this process), in order.

    shape: (H, W) of every frame (in and out); chunk: the most frames one `map` chunk holds. At most
    two chunks per worker are in flight, so memory stays flat however long the run.
    """

    def __init__(self, task: Task, shape: tuple[int, int], chunk: int, workers: int | None = None):
        global _task, _slots
        self.task, self.chunk = task, chunk
        self.workers = (cores() if workers is None else workers) if can_fork() else 0
        self.depth = max(1, 2 * self.workers)  # chunks in flight
        self.pool: ProcessPoolExecutor | None = None
        if self.workers:
            h, w = shape
            size = self.depth * chunk * h * w * 3
            self.buffer = mmap.mmap(-1, size)  # anonymous and shared: the forked workers see the same pages
            self.slots = np.frombuffer(self.buffer, np.uint8).reshape(self.depth * chunk, h, w, 3)
            _task, _slots = task, self.slots
            # OpenCV's thread pool cannot be taken down in a forked child (its threads are not there): the
            # workers are forked with it set to one thread, i.e. unused
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                self.pool = ProcessPoolExecutor(self.workers, multiprocessing.get_context("fork"), initializer=_start_worker)
                self.pool.submit(int).result()  # fork them all now, before this process starts threads of its own
            finally:
                _task, _slots = None, None
                cv2.setNumThreads(threads)

    def map(self, chunks: Iterable[tuple[np.ndarray | None, Sequence[Any]]]) -> Iterator[np.ndarray]:
        """(input frames (n, H, W, 3) or None, n items) per chunk, n <= chunk -> every chunk's frames, in order."""
        if self.pool is None:
            for frames, items in chunks:
                yield from self.task(frames, items)
            return
        pending: collections.deque[tuple[Future, int, int]] = collections.deque()
        free = collections.deque(range(self.depth))
        try:
            for frames, items in chunks:
                if not free:
                    yield from self._collect(pending, free)
                place = free.popleft() * self.chunk
                if frames is not None:
                    self.slots[place : place + len(items)] = frames
                pending.append((self.pool.submit(_render, place, len(items), frames is not None, items), place, len(items)))
            while pending:
                yield from self._collect(pending, free)
        finally:
            for future, _, _ in pending:
                future.cancel()

    def _collect(self, pending: collections.deque, free: collections.deque) -> Iterator[np.ndarray]:
        future, place, count = pending.popleft()
        try:
            future.result()
        except BrokenProcessPool:
            raise TalkfaceError("a rendering process died (out of memory, or killed)") from None
        for i in range(count):
            yield self.slots[place + i].copy()
        free.append(place // self.chunk)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- live streams ---------------------------------------------------------------------------------
# On the server's threads, the streams shared one interpreter lock: two streams got 1.3-1.6 cores of
# two and a p99 latency past 250 ms (README, "Batching across streams").

Encode = Callable[[np.ndarray], bytes]  # a finished frame -> what is sent (e.g. a JPEG)


def _serve_rigs(conn, refiner, encode: Encode, inherited: list) -> None:
    """A live worker: requests (what, key, *args) in, (True, result) or (False, message) out, until the
    server is gone. `inherited`: the server's ends of this worker's pipe and of the workers forked before
    it, which it closes, so that it sees its pipe end when the server lets go of it."""
    _start_worker()
    for end in inherited:
        end.close()
    photos: dict[int, _Photo] = {}
    warped: dict[int, tuple[list, list]] = {}
    while True:
        try:
            what, key, *args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if what == "open":
                photos[key], result = _Photo(refiner, *args), None
            elif what == "warp":
                (jobs,) = args
                frames = [photos[key].rig.warp(motion, speech) for motion, speech, _ in jobs]
                warped[key] = (frames, [expression for _, _, expression in jobs])
                result = [w.prepared for w in frames]
            elif what == "finish":
                (refined,) = args
                frames, expressions = warped.pop(key)
                photo = photos[key]
                result = [encode(photo.whole(photo.rig.finish(w, r, e))) for w, r, e in zip(frames, refined, expressions)]
            else:  # "close"
                photos.pop(key, None)
                warped.pop(key, None)
                result = None
        except Exception as e:  # noqa: BLE001 - handed to the server, which ends that stream with it
            conn.send((False, f"{type(e).__name__}: {e}"))
        else:
            conn.send((True, result))


class _Photo:
    """A live stream's photo: rigged on the part of it that moves (`render.rig.footprint`), and the frame
    that each of the rig's patches is laid in before it is encoded (the rest of it never changes)."""

    def __init__(self, refiner, picture: np.ndarray, face, gain: float, expressive: bool):
        self.rig, self.box = rig_part(picture, face, gain, refiner)
        if expressive:  # the lids' and head's warps made now, not in the stream's first frame
            _ = self.rig.eyes, self.rig.head
        self.frame = picture.copy()

    def whole(self, patch: np.ndarray) -> np.ndarray:
        """The frame with this patch laid in: the same array every time, to be encoded before the next."""
        return lay(self.frame, patch, self.box)


class _Lane:
    """One live worker process and the streams it renders; one request at a time."""

    def __init__(self, context, refiner, encode: Encode, earlier: list[_Lane]):
        self.conn, child = context.Pipe()
        args = (child, refiner, encode, [self.conn] + [lane.conn for lane in earlier])
        self.process = context.Process(target=_serve_rigs, args=args, daemon=True, name="talkface-live")
        self.process.start()
        child.close()
        self.lock = threading.Lock()
        self.streams = 0

    def call(self, what: str, key: int, *args):
        with self.lock:
            try:
                self.conn.send((what, key, *args))
                ok, result = self.conn.recv()
            except (EOFError, OSError):
                raise TalkfaceError("a rendering process died (out of memory, or killed)") from None
        if not ok:
            raise RuntimeError(f"rendering a live frame failed: {result}")
        return result


class LiveRenderers:
    """Live streams' frames rendered in one worker process per core (`workers`; 0, or where processes
    are not forked: in the calling thread), each stream's rig in one of them.

    `open(picture, face, gain, expressive)` rigs a stream's photo and returns its key; `render(key, jobs, refine)`
    renders `render.rig.render_frames` jobs (motion, speech, expression; the rig's place is the key's)
    with `refine` (e.g. a `streaming.MotionBatch`'s, shared by every stream) and returns each frame
    `encode`d; `close(key)` frees it. Frames equal `render_frames`' exactly: the same code runs, on
    the same inputs, in another process. Make it from the main thread before other threads start.
    """

    def __init__(self, refiner, encode: Encode, workers: int | None = None):
        self.refiner, self.encode = refiner, encode
        self.workers = (cores() if workers is None else workers) if can_fork() else 0
        self.lanes: list[_Lane] = []
        if self.workers:
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # as for `Renderer`: OpenCV's pool cannot be taken down in a forked child
            try:
                context = multiprocessing.get_context("fork")
                for _ in range(self.workers):
                    self.lanes.append(_Lane(context, refiner, encode, self.lanes))
            finally:
                cv2.setNumThreads(threads)
        self.rigs: dict[int, Any] = {}  # key -> its photo (no workers) or its lane
        self.lock = threading.Lock()
        self.keys = itertools.count()

    def open(self, picture: np.ndarray, face, gain: float, expressive: bool = True) -> int:
        """A stream's photo rigged (`expressive`: with its lids' and head's warps, for `Expression`s); its key."""
        key = next(self.keys)
        if not self.lanes:
            self.rigs[key] = _Photo(self.refiner, picture, face, gain, expressive)
            return key
        with self.lock:
            lane = min(self.lanes, key=lambda lane: lane.streams)
            lane.streams += 1
            self.rigs[key] = lane
        try:
            lane.call("open", key, picture, face, gain, expressive)
        except BaseException:
            self.close(key)
            raise
        return key

    def render(self, key: int, jobs: Sequence[tuple[np.ndarray, np.ndarray, Any]], refine: Callable[[list], Sequence[np.ndarray]]) -> list[bytes]:
        """(motion, speech, expression) per frame, in order -> the frames, encoded."""
        if not jobs:
            return []
        place = self.rigs[key]
        if not isinstance(place, _Lane):
            return [self.encode(place.whole(patch)) for patch in render_frames([(place.rig, *job) for job in jobs], refine)]
        prepared = place.call("warp", key, list(jobs))
        todo = [i for i, p in enumerate(prepared) if p is not None]
        refined: list[np.ndarray | None] = [None] * len(prepared)
        if todo:
            for i, out in zip(todo, refine([prepared[i] for i in todo])):
                refined[i] = out
        return place.call("finish", key, refined)

    def close(self, key: int) -> None:
        with self.lock:
            place = self.rigs.pop(key, None)
            if isinstance(place, _Lane):
                place.streams -= 1
        if isinstance(place, _Lane) and place.process.is_alive():
            with contextlib.suppress(TalkfaceError):
                place.call("close", key)

    def shutdown(self) -> None:
        for lane in self.lanes:
            lane.conn.close()
        for lane in self.lanes:
            lane.process.join(timeout=5)
            if lane.process.is_alive():
                lane.process.kill()
        self.lanes = []
