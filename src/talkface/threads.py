"""How many threads torch may use for the small networks that run once per video frame."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
