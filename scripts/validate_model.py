"""Validation figures for a generator on the held-out clips of a shard folder (the model card's).

For each held-out clip the first frame is the still and the clip's own audio drives the model; the
generated crops are compared with the real ones:
  - mouth L1 and PSNR: over the region the generator must draw (cfg.model.mouth_mask), pixels 0-255;
  - face PSNR: over the whole crop;
  - mouth LMD: mean distance of the 40 lip landmarks (face mesh on the generated crop vs the
    landmarks stored with the real crop), divided by the inter-ocular distance;
  - the same for the trivial baseline that repeats the still, for scale.

    python scripts/validate_model.py --checkpoint W --data SHARDS [--limit N] [--out figures.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from talkface.checkpoint import load_generator
from talkface.data.shards import ShardDataset
from talkface.media.face import detect_faces
from talkface.streaming import FaceStream

LIPS = sorted({61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
               78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415})
EYES = (33, 263)  # outer eye corners


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def lip_distance(frames: np.ndarray, real_landmarks: np.ndarray) -> float:
    """Mean over frames (where a face is found) of the lip-landmark distance / inter-ocular distance."""
    out = []
    for frame, real in zip(frames, real_landmarks):
        faces = detect_faces(frame, max_faces=1)
        if not faces:
            continue
        lm = faces[0].landmarks
        iod = np.linalg.norm(real[EYES[0]] - real[EYES[1]])
        out.append(np.linalg.norm(lm[LIPS] - real[LIPS], axis=1).mean() / iod)
    return float(np.mean(out)) if out else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(2)
    generator, cfg = load_generator(args.checkpoint)
    val = ShardDataset(args.data, "val", cfg.audio)
    h, w = cfg.model.height, cfg.model.width
    y0, y1, x0, x1 = cfg.model.mouth_mask
    box = (slice(int(y0 * h), int(round(y1 * h))), slice(int(x0 * w), int(round(x1 * w))))
    rows = {"model": [], "still": []}
    start = time.time()
    n = len(val) if not args.limit else min(args.limit, len(val))
    for i in range(n):
        clip = val.full_clip(i)
        real = clip.frames
        fake = np.stack(list(FaceStream(generator, cfg, real[0]).run(iter([clip.audio])))[: len(real)])
        still = np.repeat(real[:1], len(real), 0)
        for name, frames in (("model", fake), ("still", still)):
            m, r = frames[:, box[0], box[1]], real[:, box[0], box[1]]
            rows[name].append({
                "mouth_l1": float(np.abs(m.astype(np.float64) - r).mean()),
                "mouth_psnr": psnr(m, r),
                "face_psnr": psnr(frames, real),
                "mouth_lmd": lip_distance(frames, clip.landmarks),
            })
    summary = {name: {k: float(np.nanmean([r[k] for r in v])) for k in v[0]} for name, v in rows.items()}
    summary["clips"] = n
    summary["seconds"] = round(time.time() - start, 1)
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
