"""Frames rendered in worker processes: the same frames, in order, as in this process; a dead worker is a clear error."""
import os
import signal

import numpy as np
import pytest

from talkface.errors import TalkfaceError
from talkface.render.parallel import Renderer

SHAPE = (24, 32)


def paint(frames, items):
    """A task: each item (value, seconds to wait) -> a frame of that value, added to its input frame when there is one."""
    out = []
    for i, (value, _) in enumerate(items):
        frame = np.full((*SHAPE, 3), value, np.uint8)
        out.append(frame + frames[i] if frames is not None else frame)
    return out


def chunks(n, size, with_frames=False):
    for c in range(n):
        items = [((c * size + i) % 200, 0) for i in range(size - c % 2)]  # chunks of two sizes
        frames = np.full((len(items), *SHAPE, 3), 7, np.uint8) if with_frames else None
        yield frames, items


@pytest.mark.parametrize("with_frames", [False, True])
def test_workers_render_the_same_frames_in_order(with_frames):
    with Renderer(paint, SHAPE, chunk=5, workers=2) as workers:
        assert workers.workers == 2
        made = list(workers.map(chunks(12, 5, with_frames)))  # far more chunks than slots: slots are reused
    with Renderer(paint, SHAPE, chunk=5, workers=0) as here:
        expected = list(here.map(chunks(12, 5, with_frames)))
    assert len(made) == len(expected) == 12 * 5 - 6
    for a, b in zip(made, expected):
        assert np.array_equal(a, b)
    assert made[3][0, 0, 0] == 3 + 7 * with_frames


def crash(frames, items):
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_that_dies_is_a_clear_error():
    with Renderer(crash, SHAPE, chunk=2, workers=1) as workers:
        with pytest.raises(TalkfaceError, match="rendering process died"):
            list(workers.map(chunks(3, 2)))


def fail(frames, items):
    raise ValueError("bad frame")


def test_a_task_error_reaches_the_caller():
    with Renderer(fail, SHAPE, chunk=2, workers=1) as workers:
        with pytest.raises(ValueError, match="bad frame"):
            list(workers.map(chunks(3, 2)))
