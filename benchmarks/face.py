"""The face front end on this machine: detection, tracking, align and paste_back speed at several
resolutions; landmark jitter with and without smoothing; what a fixed identity frame would cost a dub.

Uses the package's example face, and GRID clips when /work/shared-style data sits beside the checkout
(--grid). Run:
    PYTHONPATH=src python benchmarks/face.py [--grid ../shared/data/grid_s1/video] [--clips 5]
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time

import cv2
import numpy as np

from talkface.media.face import TEMPLATE_POINTS, Face, FaceTracker, align, blend_mask, detect_faces, paste_back
from talkface.media.image import load_image
from talkface.media.video import iter_frames

ASSETS = os.path.join(os.path.dirname(__file__), "..", "src", "talkface", "assets")
ALIGN_POINTS = list(TEMPLATE_POINTS)


def timed(fn, repeats: int) -> float:
    """Median milliseconds per call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def speed(repeats: int) -> dict:
    face_img = load_image(os.path.join(ASSETS, "example_face.png"))
    out = {"detect_ms_360x288": timed(lambda: detect_faces(face_img), max(3, repeats // 10))}
    for name, (w, h) in {"360x288": (360, 288), "1280x720": (1280, 720), "1920x1080": (1920, 1080), "3840x2160": (3840, 2160)}.items():
        scale = h / 288 * 0.8
        picture = cv2.resize(face_img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        canvas = np.full((h, w, 3), 128, np.uint8)
        ph, pw = min(h, picture.shape[0]), min(w, picture.shape[1])
        canvas[:ph, :pw] = picture[:ph, :pw]
        face = detect_faces(canvas)[0]
        crop, M = align(canvas, face)
        generated = np.clip(crop.astype(int) + 10, 0, 255).astype(np.uint8)
        out[f"align_ms_{name}"] = timed(lambda: align(canvas, face), repeats)
        out[f"paste_back_ms_{name}"] = timed(lambda: paste_back(canvas, generated, M, face), repeats)
        out[f"face_size_px_{name}"] = round(face.size, 1)
    return out


def jitter_and_reference(clips: list[str]) -> dict:
    """Frame-to-frame motion of the alignment points (in face sizes), raw and smoothed, and the
    difference a fixed (first-frame) identity still would leave at the blend mask's soft edge."""
    raw_steps, smooth_steps, track_ms, edge_diff = [], [], [], []
    for path in clips:
        frames = list(iter_frames(path))
        raw, smooth = [], []
        with FaceTracker(fps=25, beta=0.0, min_cutoff=1e9) as plain, FaceTracker(fps=25) as tracker:
            for frame in frames:
                raw.append(plain(frame))
                t = time.perf_counter()
                smooth.append(tracker(frame))
                track_ms.append(1000 * (time.perf_counter() - t))
        for seq, steps in ((raw, raw_steps), (smooth, smooth_steps)):
            pts = np.array([f.landmarks[ALIGN_POINTS] / f.size for f in seq])
            steps.append(np.linalg.norm(np.diff(pts, axis=0), axis=-1).mean())
        crop0, _ = align(frames[0], smooth[0])
        for frame, face in zip(frames[1:], smooth[1:]):
            crop, M = align(frame, face)
            mask = blend_mask(face, M, crop.shape[:2])
            ring = (mask > 0.1) & (mask < 0.9)
            edge_diff.append(np.abs(crop.astype(int) - crop0)[ring].mean())
    return {
        "clips": len(clips),
        "track_ms_per_frame": float(np.median(track_ms)),
        "align_points_step_raw": float(np.mean(raw_steps)),
        "align_points_step_smoothed": float(np.mean(smooth_steps)),
        "first_frame_still_edge_diff": float(np.mean(edge_diff)),
    }


def still_jitter(frames: int = 40) -> dict:
    """The example photo repeated with fresh sensor-like noise (sigma 4) in each frame: the spread of
    the alignment points, in face sizes, as face mesh tracks them and after smoothing."""
    picture = load_image(os.path.join(ASSETS, "example_face.png"))
    rng = np.random.default_rng(0)
    noisy = [np.clip(picture + rng.normal(0, 4, picture.shape), 0, 255).astype(np.uint8) for _ in range(frames)]
    out = {}
    for name, kwargs in {"raw": {"beta": 0.0, "min_cutoff": 1e9}, "smoothed": {}}.items():
        with FaceTracker(fps=25, **kwargs) as tracker:
            pts = np.array([(lambda f: f.landmarks[ALIGN_POINTS] / f.size)(tracker(frame)) for frame in noisy])
        out[f"still_jitter_{name}"] = float(pts[10:].std(0).mean())
    return out


def lag() -> dict:
    """A face moving sideways at 2 face sizes per second: how far the smoothed landmarks trail."""
    face = detect_faces(load_image(os.path.join(ASSETS, "example_face.png")))[0]
    from talkface.media.face import OneEuro

    f = OneEuro()
    speed = 2.0 / 25  # face sizes per frame
    out = [f(face.landmarks / face.size + (speed * t, 0.0), 1 / 25) for t in range(50)]
    trail = speed * 49 - (out[-1] - face.landmarks / face.size)[:, 0].mean()
    return {"lag_face_sizes_at_2_per_s": float(trail), "lag_frames_at_2_per_s": float(trail / speed)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--grid", default=os.path.join(here, "..", "..", "shared", "data", "grid_s1", "video"))
    p.add_argument("--clips", type=int, default=5)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    cv2.setNumThreads(1)
    result = speed(args.repeats)
    result.update(lag())
    result.update(still_jitter())
    clips = sorted(glob.glob(os.path.join(args.grid, "*.mp4")))[:: 97][: args.clips]
    if clips:
        result.update(jitter_and_reference(clips))
    for k, v in result.items():
        print(f"{k:40s} {v:12.4f}" if isinstance(v, float) else f"{k:40s} {v:>12}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
