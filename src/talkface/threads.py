"""How many threads torch may use for the small networks that run once per video frame, and calls
from many threads gathered into one batch."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on the calling thread alone. The motion model is so small that intra-op threads only wait
    on each other, and on a busy machine their spinning turned a 4 ms live step into 150 ms."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


class Batcher:
    """Calls from many threads gathered into one: `batcher(item)` -> `fn([item, ...])[i]`.

    While one batch runs, the items of the threads that call meanwhile queue; when it is done, one of
    those threads runs them all in the next call of `fn` (a list of items -> a list of results, in
    order) and hands each thread its result. A thread that finds nothing running runs at once, alone:
    batching costs no wait, it only happens when calls overlap. An error of `fn` is raised in every
    thread of its batch.
    """

    def __init__(self, fn: Callable[[list], list]):
        self.fn = fn
        self.cond = threading.Condition()
        self.queue: list[_Call] = []
        self.busy = False

    def __call__(self, item):
        call = _Call(item)
        with self.cond:
            self.queue.append(call)
            while not call.done:
                if self.busy:
                    self.cond.wait()
                    continue
                self.busy, batch, self.queue = True, self.queue, []
                self.cond.release()
                try:
                    results, error = self.fn([c.item for c in batch]), None
                    if len(results) != len(batch):
                        raise RuntimeError(f"a batch of {len(batch)} items gave {len(results)} results")
                except BaseException as e:  # handed to every waiting thread of this batch
                    results, error = [None] * len(batch), e
                finally:
                    self.cond.acquire()
                    self.busy = False
                    for c, result in zip(batch, results):
                        c.result, c.error, c.done = result, error, True
                    self.cond.notify_all()
        if call.error is not None:
            raise call.error
        return call.result


class _Call:
    def __init__(self, item):
        self.item, self.result, self.error, self.done = item, None, None, False
