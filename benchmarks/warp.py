"""Speed of the mouth warp: one frame rendered from a still, as a live stream or a dub pays it per frame.

The package's example photo as it is (360x288) and cropped around the face and enlarged to 512x512
(the face fills about half of it). The mouth opens and closes through a cycle of openings from the
still's closed mouth (0 to 0.5 of the mouth's width, the jaw with it); each frame is one
`MouthWarp.render`. Wall time (p50, p90) and the process's CPU time per frame (p50: on a shared
machine, what the frame itself costs); the per-still precomputation (`MouthWarp(...)`) apart. Run:
    PYTHONPATH=src python benchmarks/warp.py [--frames 200]
Prints a table and one JSON line.

    PYTHONPATH=src python benchmarks/warp.py --stages [--frames 100]
instead times every stage of a `FaceRig.render` frame with blinks, brows and head motion, at
360x288, 512x512 and 1920x1080 (the example face enlarged onto a wide picture): the mouth warp, its
painting (seam and painted mouth), the refiner's paste (its network replaced by one that changes
nothing, so none of its time counts), the eye warp, the head warp and the whole frame, each in
process CPU ms per frame (mean). Stages are timed by wrapping the warps' methods.

    PYTHONPATH=src python benchmarks/warp.py --strips /tmp/warp_strips [photo ...]
instead writes, for each photo (the example face when none is given), a PNG of its lower face: the
still, its mouth at rest (`close_mouth`), opened to several amounts, the jaw dropped, the lips rounded.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads, as the `talkface` command does: idle BLAS threads spin, doubling the CPU time

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from talkface.bundled import checkpoint_path  # noqa: E402
from talkface.checkpoint import load_generator  # noqa: E402
from talkface.expression import Expression  # noqa: E402
from talkface.media.face import MOTION_POINTS, detect_faces  # noqa: E402
from talkface.media.image import load_image  # noqa: E402
from talkface.render.eyes import EyeWarp  # noqa: E402
from talkface.render.head import HeadWarp  # noqa: E402
from talkface.render.mouth import MouthWarp, close_mouth, open_mouth  # noqa: E402
from talkface.render.refine import Refinement  # noqa: E402
from talkface.render.rig import FaceRig  # noqa: E402

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


def wide(picture: np.ndarray) -> np.ndarray:
    """The example enlarged to 1080 rows and set, mirrored at its sides, on a 1920x1080 picture."""
    tall = cv2.resize(picture, (round(picture.shape[1] * 1080 / picture.shape[0]), 1080), interpolation=cv2.INTER_CUBIC)
    side = (1920 - tall.shape[1]) // 2
    return cv2.copyMakeBorder(tall, 0, 0, side, 1920 - tall.shape[1] - side, cv2.BORDER_REFLECT)


class _Unchanged:
    """A mouth refiner that changes nothing: what `Refinement.prepare` and `finish` cost around the network."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, x, opening, sound):
        return x


STAGES = {  # stage: (class, method); each stage's time excludes the stages timed inside it
    "frame": (FaceRig, "render"),
    "mouth": (MouthWarp, "render_painted"),
    "paint": [(MouthWarp, "_paint_seam"), (MouthWarp, "_paint_mouth")],
    "paste": [(Refinement, "prepare"), (Refinement, "finish")],
    "eyes": (EyeWarp, "render"),
    "head": (HeadWarp, "render"),
}


def _timed(totals: dict, stage: str, fn):
    def wrapper(*args, **kwargs):
        c = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[stage] += time.process_time() - c
    return wrapper


def stage_speed(picture: np.ndarray, frames: int) -> dict:
    face = detect_faces(picture)[0]
    cfg = load_generator(checkpoint_path(None))[1]
    rig = FaceRig(picture, face, cfg.motion.gain, _Unchanged(cfg.motion.refiner))
    unit_inv = np.linalg.inv(rig.unit)
    rest = close_mouth(face.landmarks)
    cycle = 0.25 - 0.25 * np.cos(np.linspace(0, 2 * np.pi, 25, endpoint=False))
    motions = [(open_mouth(rest, o)[MOTION_POINTS] - rig.rest) @ unit_inv for o in cycle]
    speech = np.random.default_rng(0).standard_normal((cfg.audio.n_mfcc, cfg.audio.steps)).astype(np.float32)
    blink = [0.0] * 21 + [0.5, 1.0, 1.0, 0.5]  # one blink a second, as often as the eye warp runs in speech
    expressions = [
        Expression((blink[i % 25],) * 2, 0.02 * (i % 50 >= 40), (4 * np.sin(i / 9), 2 * np.sin(i / 13), 1.5 * np.sin(i / 17)), (0.01 * np.sin(i / 11), 0.0))
        for i in range(frames)
    ]
    for i in range(5):
        rig.render(motions[i], speech, expressions[i])
    totals = dict.fromkeys(STAGES, 0.0)
    saved = []
    for stage, where in STAGES.items():
        for cls, name in where if isinstance(where, list) else [where]:
            saved.append((cls, name, getattr(cls, name)))
            setattr(cls, name, _timed(totals, stage, getattr(cls, name)))
    try:
        for i in range(frames):
            rig.render(motions[i % len(motions)], speech, expressions[i])
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
    ms = {k: 1000 * v / frames for k, v in totals.items()}
    ms["mouth"] -= ms["paint"]
    ms["frame"] -= ms["mouth"] + ms["paint"] + ms["paste"] + ms["eyes"] + ms["head"]  # what the rig itself adds
    ms["rig"] = ms.pop("frame")
    ms["total"] = sum(ms.values())
    return {"face_width_px": int(face.box[2] - face.box[0]), **{k: round(v, 2) for k, v in ms.items()}}


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
    p.add_argument("--stages", action="store_true", help="time each stage of a full FaceRig frame instead")
    p.add_argument("photos", nargs="*", help="photos for --strips (default: the example face)")
    args = p.parse_args()
    if args.strips:
        strips(args.strips, args.photos)
        return
    if args.stages:
        cv2.setNumThreads(1)  # as each rendering process has it
        shots = pictures()
        shots["1920x1080"] = wide(shots["360x288"])
        results = {name: stage_speed(shots[name], args.frames) for name in ("360x288", "512x512", "1920x1080")}
        keys = list(next(iter(results.values())))[1:]
        print(f"{'picture':>9} {'face px':>8} " + " ".join(f"{k:>7}" for k in keys) + "   (CPU ms per frame)")
        for name, r in results.items():
            print(f"{name:>9} {r['face_width_px']:>8} " + " ".join(f"{r[k]:>7.2f}" for k in keys))
        print(json.dumps({"cv2_threads": cv2.getNumThreads(), "frames": args.frames, **results}))
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
