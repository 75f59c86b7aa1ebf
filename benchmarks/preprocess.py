"""Preprocessing throughput: clips per minute per worker on real talking videos.

    python benchmarks/preprocess.py VIDEO_FOLDER [--videos 12] [--workers 1 2]

Runs `talkface preprocess` on the first N videos of a folder (GRID by default) into a temporary
folder, once per worker count, and reports clips per minute overall and per worker.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from talkface.data.preprocess import PreprocessOptions, find_videos, preprocess

GRID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grid_s1" / "video"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=str(GRID))
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    videos = find_videos([args.folder])[: args.videos]
    print(f"cpus={os.cpu_count()} videos={len(videos)} from {args.folder}")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            listing = os.path.join(tmp, "videos.txt")
            Path(listing).write_text("\n".join(os.path.abspath(v) for v in videos))
            opts = PreprocessOptions(videos_per_group=max(1, len(videos) // (2 * workers)))
            start = time.perf_counter()
            report = preprocess([listing], os.path.join(tmp, "out"), opts, workers=workers, progress=False)
            minutes = (time.perf_counter() - start) / 60
        clips = report["train"]["clips"] + report["val"]["clips"]
        r = {"workers": workers, "clips": clips, "minutes": round(minutes, 3),
             "clips_per_min": round(clips / minutes, 1), "clips_per_min_per_worker": round(clips / minutes / workers, 1)}
        print(f"{workers} worker(s): {clips} clips in {minutes * 60:.1f} s = {r['clips_per_min']} clips/min, "
              f"{r['clips_per_min_per_worker']} per worker")
        print(json.dumps(r))


if __name__ == "__main__":
    main()
