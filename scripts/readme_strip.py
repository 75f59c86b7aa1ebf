"""The strip at the top of the README: a held-out GRID s1 sentence, real frames above the frames the
default model makes from the sentence's first frame and its audio (GRID corpus, CC BY 4.0), across
its words and through the default model's first blink (seed 0), with the yaw, pitch and roll of its
head (face mesh, its skull points followed to their pixels, against the first frame) under each of its frames.

    python scripts/readme_strip.py ../shared/data/grid_s1/video/bwat5a.mp4 docs/strip.png
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from talkface.evaluate import read_video
from talkface.geometry import eye_openness, head_pose
from talkface.metrics.landmarks import detect_landmarks
from talkface.media.face import detect_faces
from talkface.pipeline import Animator

WORDS = (0, 22, 30, 38, 47)  # across the words of a 3 s GRID sentence


def label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--checkpoint", default=None, help="default: the bundled model")
    args = ap.parse_args()
    real, _ = read_video(args.video)
    made = list(Animator(args.checkpoint).generate(real[0], args.video))
    made_lm = detect_landmarks(made, depth=True, skull=True)
    shut = eye_openness(made_lm[..., :2]).mean(-1)
    blink = int(np.nanargmin(shut))  # the default model's deepest blink
    frames = sorted(i for i in set(WORDS) | {blink - 2, blink, blink + 3} if 0 <= i < len(made))
    poses = head_pose(made_lm)
    face = detect_faces(real[0])[0]
    cx, cy = face.landmarks[[61, 291]].mean(0)
    s = face.size
    x0, x1, y0, y1 = int(cx - 1.3 * s), int(cx + 1.3 * s), int(cy - 1.6 * s), int(cy + 0.9 * s)
    rows = []
    for name, clip in (("real", real), ("talkface", made)):
        tiles = [cv2.resize(clip[i][y0:y1, x0:x1], (160, round(160 * (y1 - y0) / (x1 - x0))), interpolation=cv2.INTER_AREA) for i in frames]
        tiles[0] = label(tiles[0], name if name == "real" else "talkface")
        for tile, i in zip(tiles, frames):
            cv2.putText(tile, f"{i}", (140 - 8 * len(str(i)), 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            if name != "real":
                text = "{:+.1f} {:+.1f} {:+.1f}".format(*poses[i])
                cv2.putText(tile, text, (4, tile.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.concatenate(tiles, 1))
    cv2.imwrite(args.out, cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(args.out)


if __name__ == "__main__":
    main()
