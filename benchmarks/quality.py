"""What users see, between a face that never moves and the real video (prints markdown tables).

For every talking clip of each folder, its first frame is the still and its own audio the speech.
Rows: `still` (the still repeated: the floor), each checkpoint (the full-resolution frames of
`Animator.generate`), and `real` (the video itself: the ceiling). Every row is aligned to the
evaluation crop and scored by `talkface.evaluate.score_clip`, the code behind `talkface evaluate`.

    PYTHONPATH=src python benchmarks/quality.py FOLDER [FOLDER ...] [--checkpoint NAME=PATH ...] [--limit N] [--out DIR]

Without --checkpoint: paper = the GRID s1 direct generator, default = the bundled model;
`--with-still` adds each motion model with `--still` (the mouth alone). Blinks and head motion are
scored for every row alike (the face is tracked in made frames as in real ones). Writes,
per folder, to DIR/<folder name>/: quality.md (the tables printed), metrics.json and report.html
(every value of every clip, as `talkface evaluate` writes them), and strips/<clip>.png (evaluation
crops, ~8 frames across the clip, one labelled row per source: real, still, each checkpoint) with
strips/<clip>_frames.png (the same frames, whole).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import cv2
import numpy as np

from talkface.data.mouths import list_videos
from talkface.evaluate import EVAL_SIZE, ClipScore, FrameSource, model_source, score_clip, still_source, summarise, write_results
from talkface.bundled import BUNDLED_MODEL, PAPER_MODEL, asset
from talkface.pipeline import Animator

COLUMNS = ("speech_aperture", "silence_aperture", "aperture_corr", "lse_c", "lse_d", "sync_offset", "sync_within_1", "lmd_mouth",
           "psnr_mouth", "ssim_mouth", "mouth_sharpness", "mouth_sharpness_ratio", "upper_face_ssim", "landmark_jitter",
           "blinks_per_min", "blink_ms", "blink_depth", "yaw_std", "pitch_std", "roll_std", "head_jump", "head_speed_ratio")
LABEL_WIDTH = 96  # pixels left of each strip row for its name


def parse_checkpoints(specs: list[str] | None) -> dict[str, str]:
    if not specs:
        return {"paper": asset(PAPER_MODEL), "default": asset(BUNDLED_MODEL)}
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--checkpoint wants NAME=PATH, not {spec!r}")
        if name in ("still", "real") or name in out:
            raise SystemExit(f"--checkpoint name {name!r} is taken")
        out[name] = path
    return out


def fmt(v) -> str:
    if isinstance(v, str):
        return v
    if v is None or math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])


def mean_table(clips: list[ClipScore]) -> str:
    """Rows x COLUMNS: means over clips, and the share of clips whose offset is within one frame."""
    means = summarise(clips)
    rows = []
    for row, values in means.items():
        offsets = [c.scores[row].get("sync_offset", math.nan) for c in clips]
        offsets = [o for o in offsets if not math.isnan(o)]
        within = {"sync_within_1": float(np.mean([abs(o) <= 1 for o in offsets])) if offsets else math.nan}
        rows.append([row] + [{**values, **within}.get(k, math.nan) for k in COLUMNS])
    return markdown(["row", *COLUMNS], rows)


def clip_table(clips: list[ClipScore]) -> str:
    """One line per clip and row: how wide the mouth opens in speech (against real), how sharp it is
    (against the still, the photo's own detail), how far the lips are from the real ones, the offset."""
    rows = []
    for c in clips:
        real, still = c.scores["real"], c.scores["still"]
        for row, s in c.scores.items():
            rows.append([c.name, str(len(c.envelope)), row,
                         s.get("speech_aperture", math.nan) / real.get("speech_aperture", math.nan),
                         s.get("mouth_sharpness", math.nan) / still.get("mouth_sharpness", math.nan),
                         s.get("lmd_mouth", math.nan), s.get("sync_offset", math.nan)])
    return markdown(["clip", "frames", "row", "speech_aperture / real", "mouth_sharpness / still", "lmd_mouth", "sync_offset"], rows)


def strip_image(strips: dict[str, np.ndarray], height: int) -> np.ndarray:
    """One labelled row per source of its sample frames, scaled to `height`: (rows * height, W, 3) RGB."""
    rows = []
    for name, frames in strips.items():
        scaled = [cv2.resize(f, (round(f.shape[1] * height / f.shape[0]), height), interpolation=cv2.INTER_AREA if f.shape[0] > height else cv2.INTER_LINEAR)
                  for f in frames]
        label = np.full((height, LABEL_WIDTH, 3), 255, np.uint8)
        cv2.putText(label, name, (6, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, *scaled], 1))
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])


def write_png(path: str, image: np.ndarray) -> None:
    cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def run_folder(folder: str, sources: dict[str, FrameSource], limit: int | None, out: str, meta: dict) -> str:
    """Score every clip of `folder`; write the tables, results and strips to `out`; return the tables."""
    os.makedirs(os.path.join(out, "strips"), exist_ok=True)
    clips = []
    for path in list_videos(folder)[:limit]:
        tick = time.time()
        clip = score_clip(path, sources)
        write_png(os.path.join(out, "strips", f"{clip.name}.png"), strip_image(clip.strips, EVAL_SIZE[0]))
        write_png(os.path.join(out, "strips", f"{clip.name}_frames.png"), strip_image(clip.previews, EVAL_SIZE[0]))
        clips.append(clip)
        print(f"{clip.name}: {len(clip.envelope)} frames, {time.time() - tick:.1f} s", file=sys.stderr)
    write_results(out, {**meta, "mode": "benchmark", "data": os.path.abspath(folder), "videos": len(clips)}, clips, overwrite=True)
    text = f"## {os.path.abspath(folder)}: {len(clips)} clips\n\nMeans over clips:\n\n{mean_table(clips)}\n\nPer clip:\n\n{clip_table(clips)}\n"
    with open(os.path.join(out, "quality.md"), "w") as f:
        f.write(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="folders of talking videos with their audio")
    p.add_argument("--checkpoint", action="append", metavar="NAME=PATH", help="a model to score (repeat for more); default: paper and default")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips of each folder (by name)")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "talkface-quality"), help="output folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-still", action="store_true", help="also each motion checkpoint with --still (the mouth alone, no blinks or head motion)")
    args = p.parse_args()
    checkpoints = parse_checkpoints(args.checkpoint)
    start = time.time()
    sources: dict[str, FrameSource] = {"still": still_source}
    for name, path in checkpoints.items():
        animator = Animator(path, device=args.device)
        sources[name] = model_source(animator, args.seed)
        if args.with_still and animator.motion:
            sources[f"{name} --still"] = model_source(Animator(path, device=args.device, still=True), args.seed)
    meta = {"checkpoints": {k: os.path.abspath(v) for k, v in checkpoints.items()}, "eval_size": list(EVAL_SIZE), "seed": args.seed}
    names: set[str] = set()
    for folder in args.folders:
        name = base = os.path.basename(os.path.normpath(folder))
        while name in names:
            name = f"{base}-{len(names)}"
        names.add(name)
        print(run_folder(folder, sources, args.limit, os.path.join(args.out, name), meta))
    print(f"wall time {time.time() - start:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
