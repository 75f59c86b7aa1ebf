"""Offline speed on continuous speech: `generate` on a 512x512 and a 1920x1080 photo, and `dub` of a 512x512 talking video.

The speech is a minute of GRID s1 sentences, each cut to its words, 0.35 s apart (as
`benchmarks/expression.py` makes it): pauses no longer than natural ones, so the mouth refiner
works on most frames. The photos are the bundled example face, cropped around the face and
enlarged to 512x512 (`benchmarks/warp.py`), and enlarged to 1080 rows on a 1920x1080 picture, or
photos given. The talking video to dub is made first by `generate` from the 512x512 photo with
other GRID sentences (it moves its head and blinks); it is then dubbed with the minute of speech.

Each run is the `talkface` command in a fresh process with the defaults, timed wall-clock, as a
user sees it; the figure is how many times faster than real time (seconds of speech / seconds of
run). Run on an idle machine:
    PYTHONPATH=src python benchmarks/offline.py [--grid ../shared/data/grid_s1] [--seconds 60] [--photo512 P] [--photo1080 P] [--repeat 1]
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from expression import grid_speech  # noqa: E402
from warp import pictures, wide  # noqa: E402

from talkface.media.image import load_image  # noqa: E402


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (with its children) of `python -m talkface ARGS` in a fresh process."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "talkface", *args, "--quiet"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def save(picture: np.ndarray, path: str) -> str:
    cv2.imwrite(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="../shared/data/grid_s1")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--photo512", help="a 512x512 photo (default: the example face, enlarged)")
    ap.add_argument("--photo1080", help="a 1920x1080 photo (default: the example face on a 1920x1080 picture)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        speech = grid_speech(args.grid, args.seconds, os.path.join(tmp, "speech.wav"))
        other = grid_speech(args.grid, args.seconds, os.path.join(tmp, "other.wav"), first=3)
        example = pictures()["512x512"]
        p512 = args.photo512 or save(example, os.path.join(tmp, "photo512.png"))
        p1080 = args.photo1080 or save(wide(pictures()["360x288"]), os.path.join(tmp, "photo1080.png"))
        video = os.path.join(tmp, "talking512.mp4")
        subprocess.run([sys.executable, "-m", "talkface", "generate", "--image", p512, "--audio", other, "--out", video, "--quiet"], check=True, stdout=subprocess.DEVNULL)
        runs = {
            "generate 512x512": ["generate", "--image", p512, "--audio", speech, "--out", os.path.join(tmp, "a.mp4"), "--overwrite"],
            "generate 1920x1080": ["generate", "--image", p1080, "--audio", speech, "--out", os.path.join(tmp, "b.mp4"), "--overwrite"],
            "dub 512x512": ["dub", "--video", video, "--audio", speech, "--out", os.path.join(tmp, "c.mp4"), "--overwrite"],
        }
        sizes = {"generate 512x512": load_image(p512).shape, "generate 1920x1080": load_image(p1080).shape, "dub 512x512": load_image(p512).shape}
        print(f"{args.seconds:.0f} s of continuous GRID s1 speech; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start\n")
        print("| run | picture | wall s | CPU s | x real time |")
        print("| --- | --- | --- | --- | --- |")
        for name, command in runs.items():
            for _ in range(args.repeat):
                wall, cpu = timed(command)
                h, w = sizes[name][:2]
                rows.append({"run": name, "picture": f"{w}x{h}", "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "x_real_time": round(args.seconds / wall, 2)})
                print(f"| {name} | {w}x{h} | {wall:.1f} | {cpu:.1f} | {args.seconds / wall:.2f} |", flush=True)
    print(json.dumps({"seconds": args.seconds, "runs": rows}))


if __name__ == "__main__":
    main()
