"""Speed of the mouth warp: one frame rendered from a still, as a live stream or a dub pays it per frame.

The package's example photo as it is (360x288) and cropped around the face and enlarged to 512x512
(the face fills about half of it). The mouth opens and closes through a cycle of openings from the
still's closed mouth (0 to 0.5 of the mouth's width, the jaw with it); each frame is one
`MouthWarp.render`. Wall time (p50, p90) and the process's CPU time per frame (p50: on a shared
machine, what the frame itself costs); the per-still precomputation (`MouthWarp(...)`) apart. Run:
    PYTHONPATH=src python benchmarks/warp.py [--frames 200]
Prints a table and one JSON line.

    PYTHONPATH=src python benchmarks/warp.py --strips /tmp/warp_strips [photo ...]
instead writes, for each photo (the example face when none is given), a PNG of its lower face: the
still, its mouth at rest (`close_mouth`), opened to several amounts, the jaw dropped, the lips rounded.
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
from talkface.render.mouth import MouthWarp, close_mouth, open_mouth

ASSETS = os.path.join(os.path.dirname(__file__), "..", "src", "talkface", "assets")
EXAMPLE = os.path.join(ASSETS, "example_face.png")


def pictures() -> dict[str, np.ndarray]:
    example = load_image(EXAMPLE)
    x0, y0, x1, y1 = detect_faces(example)[0].box
    side = (x1 - x0) + (y1 - y0)  # the face spans about half of the square
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    pad = cv2.copyMakeBorder(example, side, side, side, side, cv2.BORDER_REFLECT)
    square = pad[cy + side - side // 2 : cy + side + side // 2, cx + side - side // 2 : cx + side + side // 2]
    return {"512x512": cv2.resize(square, (512, 512), interpolation=cv2.INTER_CUBIC), "360x288": example}


def speed(picture: np.ndarray, frames: int) -> dict:
    face = detect_faces(picture)[0]
    MouthWarp(picture, face.landmarks)  # the first one also pays for imports
    t = time.perf_counter()
    warp = MouthWarp(picture, face.landmarks)
    setup_ms = 1000 * (time.perf_counter() - t)
    rest = close_mouth(face.landmarks)
    cycle = 0.25 - 0.25 * np.cos(np.linspace(0, 2 * np.pi, 25, endpoint=False))  # 0 .. 0.5 .. 0
    targets = [open_mouth(rest, o)[MOTION_POINTS] for o in cycle]
    for target in targets[:5]:
        warp.render(target)
    wall, cpu = [], []
    for i in range(frames):
        t, c = time.perf_counter(), time.process_time()
        warp.render(targets[i % len(targets)])
        wall.append(1000 * (time.perf_counter() - t))
        cpu.append(1000 * (time.process_time() - c))
    return {
        "face_width_px": int(face.box[2] - face.box[0]),
        "setup_ms": round(setup_ms, 2),
        "render_ms_p50": round(float(np.percentile(wall, 50)), 2),
        "render_ms_p90": round(float(np.percentile(wall, 90)), 2),
        "render_cpu_ms_p50": round(float(np.percentile(cpu, 50)), 2),
    }


def strips(out_dir: str, photos: list[str]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for path in photos or [EXAMPLE]:
        picture = load_image(path)
        lm = detect_faces(picture)[0].landmarks
        warp = MouthWarp(picture, lm)
        rest = close_mouth(lm)
        width = float(np.linalg.norm(lm[61] - lm[291]))
        shots = [("still", lm[MOTION_POINTS]), ("rest", rest[MOTION_POINTS])]
        shots += [(f"open {o}", open_mouth(rest, o)[MOTION_POINTS]) for o in (0.1, 0.25, 0.4, 0.55)]
        jaw = open_mouth(rest, 0.3)[MOTION_POINTS]
        jaw[40:] += (0.0, 0.3 * width)  # the chin drops further than the lips part
        rounded = open_mouth(rest, 0.2)[MOTION_POINTS]
        rounded[:40, 0] = rounded[:40, 0].mean() + 0.75 * (rounded[:40, 0] - rounded[:40, 0].mean())
        shots += [("jaw drop", jaw), ("rounded", rounded)]

        (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
        m = 0.3 * (x1 - x0)
        x0, y0 = int(max(x0 - m, 0)), int(max(lm[1, 1] - 0.1 * (y1 - y0), 0))  # from just above the nose tip
        x1, y1 = int(min(x1 + m, picture.shape[1])), int(min(y1 + m, picture.shape[0]))
        tiles = []
        for label, target in shots:
            tile = warp.render(target)[y0:y1, x0:x1]
            s = 320 / tile.shape[0]
            tile = cv2.resize(tile, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
            tiles.append(tile)
        grid = np.concatenate([np.concatenate(tiles[i : i + 4], 1) for i in range(0, len(tiles), 4)], 0)
        name = os.path.splitext(os.path.basename(path))[0]
        cv2.imwrite(os.path.join(out_dir, f"{name}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print(os.path.join(out_dir, f"{name}.png"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--strips", metavar="DIR", help="write looking strips to DIR instead of timing")
    p.add_argument("photos", nargs="*", help="photos for --strips (default: the example face)")
    args = p.parse_args()
    if args.strips:
        strips(args.strips, args.photos)
        return
    results = {name: speed(picture, args.frames) for name, picture in pictures().items()}
    print(f"{'picture':>9} {'face px':>8} {'setup ms':>9} {'p50 ms':>7} {'p90 ms':>7} {'cpu ms':>7}")
    for name, r in results.items():
        print(
            f"{name:>9} {r['face_width_px']:>8} {r['setup_ms']:>9.1f} {r['render_ms_p50']:>7.2f} "
            f"{r['render_ms_p90']:>7.2f} {r['render_cpu_ms_p50']:>7.2f}"
        )
    print(json.dumps({"cv2_threads": cv2.getNumThreads(), **results}))


if __name__ == "__main__":
    main()
