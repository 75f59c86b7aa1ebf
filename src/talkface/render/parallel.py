"""Frames rendered side by side, one worker process per core.

The warps are numpy and OpenCV code that takes and drops the GIL hundreds of times a frame: two
threads rendered no faster than one. So an offline run forks worker processes once the face is
rigged (they inherit the rig, the refiner and whatever else the task needs, without pickling), sends
each a chunk of frames' small inputs (motion, speech window, expression; or a slot holding a video
frame) and gets the frames back in slots of shared memory. Each chunk is rendered by
`render_frames` in its worker, one refiner call for the chunk, exactly as a stream renders the
frames one push completes: only float rounding differs.

Where processes are not forked (off Linux: Windows has no fork, and macOS's system libraries are not
safe in a forked child; a thread other than the main one, such as a server's worker, where forking
would copy locks other threads hold), the chunks are rendered in this process, in order, by the same
task.
"""
from __future__ import annotations

import collections
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
