"""Speed of the mouth warp: one frame rendered from a still, as a live stream or a dub pays it per frame.

The package's example photo as it is (360x288) and cropped around the face and enlarged to 512x512
(the face fills about half of it). The mouth opens and closes through a cycle of openings from the
still's closed mouth (0 to 0.5 of the mouth's width, the jaw with it); each frame is one
`MouthWarp.render`. The per-still precomputation (`MouthWarp(...)`) is timed apart. Run:
    PYTHONPATH=src python benchmarks/warp.py [--frames 200]
Prints ms per frame (p50, p90) for each picture and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import cv2
import numpy as np

from talkface.media.face import MOTION_POINTS, detect_faces
from talkface.media.image import load_image
from talkface.warp import MouthWarp, close_mouth, open_mouth

ASSETS = os.path.join(os.path.dirname(__file__), "..", "src", "talkface", "assets")


def pictures() -> dict[str, np.ndarray]:
    example = load_image(os.path.join(ASSETS, "example_face.png"))
    x0, y0, x1, y1 = detect_faces(example)[0].box
    side = (x1 - x0) + (y1 - y0)  # the face spans about half of the square
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    pad = cv2.copyMakeBorder(example, side, side, side, side, cv2.BORDER_REFLECT)
    square = pad[cy + side - side // 2 : cy + side + side // 2, cx + side - side // 2 : cx + side + side // 2]
    return {"512x512": cv2.resize(square, (512, 512), interpolation=cv2.INTER_CUBIC), "360x288": example}


def speed(picture: np.ndarray, frames: int) -> dict:
    face = detect_faces(picture)[0]
    t = time.perf_counter()
    warp = MouthWarp(picture, face.landmarks)
    setup_ms = 1000 * (time.perf_counter() - t)
    rest = close_mouth(face.landmarks)
    cycle = 0.25 - 0.25 * np.cos(np.linspace(0, 2 * np.pi, 25, endpoint=False))  # 0 .. 0.5 .. 0
    targets = [open_mouth(rest, o)[MOTION_POINTS] for o in cycle]
    for target in targets[:5]:
        warp.render(target)
    times = []
    for i in range(frames):
        t = time.perf_counter()
        warp.render(targets[i % len(targets)])
        times.append(1000 * (time.perf_counter() - t))
    return {
        "face_width_px": int(face.box[2] - face.box[0]),
        "setup_ms": round(setup_ms, 2),
        "render_ms_p50": round(float(np.percentile(times, 50)), 2),
        "render_ms_p90": round(float(np.percentile(times, 90)), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200)
    args = p.parse_args()
    results = {name: speed(picture, args.frames) for name, picture in pictures().items()}
    print(f"{'picture':>9} {'face px':>8} {'setup ms':>9} {'p50 ms':>7} {'p90 ms':>7}")
    for name, r in results.items():
        print(f"{name:>9} {r['face_width_px']:>8} {r['setup_ms']:>9.1f} {r['render_ms_p50']:>7.2f} {r['render_ms_p90']:>7.2f}")
    print(json.dumps({"cv2_threads": cv2.getNumThreads(), **results}))


if __name__ == "__main__":
    main()
