"""What the default expressions take from GRID s1: its blinks (how often, how long, how deep, and
their median course in time) and how far its brows move, read with the face mesh from its videos.

    PYTHONPATH=src python scripts/expression_stats.py ../shared/data/grid_s1/video --every 10

`ExpressionConfig.blink_profile` is the median course printed here, as lid closure (0 open, 1 at
the median blink's deepest), from the first frame that closes; s1 blinks about 46 times a minute
while reading GRID's sentences, above conversation's 10.5-32.5, so the default rate is not his.
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from talkface.evaluate import read_video
from talkface.geometry import eye_openness
from talkface.metrics.expression import blink_events
from talkface.metrics.landmarks import detect_landmarks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", help="a folder of talking-face mp4s")
    ap.add_argument("--every", type=int, default=10, help="use every n-th video (sorted by name)")
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.videos, "*.mp4")))[:: args.every]
    frames_seen, events, courses, brows = 0, [], [], []
    for path in paths:
        frames, _ = read_video(path)
        lm = detect_landmarks(frames)
        if np.isnan(lm).any():
            continue
        o = eye_openness(lm).mean(-1)
        r = o / np.median(o)
        frames_seen += len(r)
        for i, length, depth in blink_events(o):
            events.append((length, depth))
            if i >= 3 and i + 7 <= len(r):
                courses.append(r[i - 3 : i + 7])
        eyes, mouth = lm[:, [33, 133, 362, 263]].mean(1), lm[:, [61, 291]].mean(1)
        d = np.linalg.norm(mouth - eyes, axis=-1)
        height = (eyes[:, 1] - lm[:, [105, 334, 66, 296]].mean(1)[:, 1]) / d
        brows.append(height - np.median(height))
    minutes = frames_seen / 25 / 60
    course = np.median(courses, 0)
    closure = (1 - course) / (1 - course.min())
    print(f"{len(paths)} videos, {minutes:.1f} min, {len(events)} blinks: {len(events) / minutes:.1f} a minute")
    print(f"blink length (frames below half depth): median {np.median([e[0] for e in events]):.1f}; depth (share of open): median {np.median([e[1] for e in events]):.2f}")
    print("median course, openness / median, from 3 frames before the deepest:", np.round(course, 2).tolist())
    print("as closure:", np.round(closure, 2).tolist())
    b = np.concatenate(brows)
    print(f"brow height (face sizes) around its median: std {b.std():.4f}, 95th percentile {np.percentile(b, 95):.4f}")


if __name__ == "__main__":
    main()
