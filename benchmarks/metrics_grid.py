"""How the metrics read real GRID clips held out from the sync expert's training (prints figures).

For each clip: the expert's offset and LSE-D / LSE-C with the clip's own audio, with its audio
delayed and advanced by 5 frames, and with unrelated audio (another clip's); the aperture
correlation of the real face and of a frozen one (its first frame repeated); and the time taken.

    PYTHONPATH=src python benchmarks/metrics_grid.py [--clips 20] [--grid ../shared/data/grid_s1]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from talkface.data.mouths import list_videos
from talkface.evaluate import read_video
from talkface.media.audio import load_audio
from talkface.metrics import compute
from talkface.metrics.landmarks import detect_landmarks

SHIFT = 5 * 640  # 5 frames of 16 kHz audio


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--grid", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grid_s1"))
    p.add_argument("--clips", type=int, default=20, help="the last N clips by sorted id (held out from training)")
    args = p.parse_args()
    files = list_videos(args.grid)[-args.clips :]
    rows = {k: [] for k in ("in_sync", "late5", "early5", "unrelated")}
    corr_real, corr_frozen, seconds = [], [], []
    other = load_audio(files[0])
    for path in files:
        frames, _ = read_video(path)
        audio = load_audio(path)
        tick = time.time()
        lm = detect_landmarks(frames)
        variants = {
            "in_sync": audio,
            "late5": np.concatenate([np.zeros(SHIFT, np.float32), audio]),
            "early5": audio[SHIFT:],
            "unrelated": other if path != files[0] else load_audio(files[1]),
        }
        for name, a in variants.items():
            rows[name].append(compute("lse", frames=frames, audio=a, landmarks=lm))
        corr_real.append(compute("aperture", frames=frames, audio=audio, landmarks=lm)["aperture_corr"])
        seconds.append(time.time() - tick)
        frozen = np.repeat(frames[:1], len(frames), 0)
        corr_frozen.append(compute("aperture", frames=frozen, audio=audio)["aperture_corr"])
    expected = {"in_sync": 0, "late5": 5, "early5": -5}
    print(f"{len(files)} held-out GRID clips")
    for name, rs in rows.items():
        off = np.array([r["sync_offset"] for r in rs])
        hit = f"offset within 1 of {expected[name]:+d}: {np.mean(np.abs(off - expected[name]) <= 1):.0%}" if name in expected else ""
        print(f"{name:10s} LSE-D {np.mean([r['lse_d'] for r in rs]):.3f}  LSE-C {np.mean([r['lse_c'] for r in rs]):.3f}  {hit}")
    print(f"aperture_corr real {np.mean(corr_real):.3f} (min {np.min(corr_real):.3f})  frozen {np.mean(corr_frozen):.3f} (max |.| {np.max(np.abs(corr_frozen)):.3f})")
    print(f"landmarks + 4 sync curves + aperture: {np.mean(seconds):.2f} s per 3 s clip")


if __name__ == "__main__":
    main()
