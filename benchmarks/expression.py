"""The face around the mouth on a long take: blinks, head motion, the background, seeds, --still and dub.

A minute of continuous speech is made from GRID s1 sentences (each cut to its words with a natural
pause of `PAUSE` seconds between them) and animated on a portrait with the defaults; the face mesh
(tracked, with depth, its skull points following their pixels) reads the eyes and the head's pose in
every frame, as `talkface evaluate` does.

    PYTHONPATH=src python benchmarks/expression.py PHOTO [--grid ../shared/data/grid_s1] [--seconds 60]

Prints: blinks a minute, their median length and depth; yaw / pitch / roll standard deviations, the
largest jump between frames, the mean pose's distance from the photo's (as the tracker reads the
photo itself, repeated: the first row, which is also the measurement's noise floor), the head's speed in speech
over pauses; the largest change of any pixel farther than a face width from the face oval; the same
with --still (no blinks, the head at the photo's noise floor); whether the same seed repeats the
video exactly and another seed changes it; and for dub, how closely a dubbed video keeps the head
motion of its source (a video made here with head motion, dubbed with other speech).
"""
from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import cv2
import numpy as np

from talkface.geometry import FACE_OVAL, eye_openness, head_pose
from talkface.media.audio import load_audio
from talkface.media.face import detect_faces
from talkface.media.image import load_image
from talkface.metrics import compute
from talkface.metrics.landmarks import detect_landmarks
from talkface.pipeline import Animator

PAUSE = 0.35  # seconds of silence between sentences


def grid_speech(grid: str, seconds: float, out: str, first: int = 1) -> str:
    """A wav of GRID s1 sentences (every 7th from `first`), each cut to its words (from its word timings), `PAUSE` apart."""
    import av

    parts, total = [], 0.0
    for align in sorted(glob.glob(os.path.join(grid, "align", "*.align")))[first::7]:
        words = [line.split() for line in open(align)]
        spoken = [(int(a), int(b)) for a, b, w in words if w not in ("sil", "sp")]
        start, end = spoken[0][0] / 25000, spoken[-1][1] / 25000  # GRID's timings count 1000 a frame at 25 fps
        audio = load_audio(os.path.join(grid, "video", os.path.basename(align).replace(".align", ".mp4")))
        parts += [audio[int(start * 16000) : int(end * 16000)], np.zeros(int(PAUSE * 16000), np.float32)]
        total += end - start + PAUSE
        if total >= seconds:
            break
    audio = np.concatenate(parts)[: int(seconds * 16000)]
    with av.open(out, "w") as c:
        s = c.add_stream("pcm_s16le", rate=16000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return out


def far_mask(picture: np.ndarray) -> np.ndarray:
    """Pixels farther than a face width from the face oval."""
    face = detect_faces(picture)[0]
    oval = face.landmarks[FACE_OVAL]
    width = float(oval[:, 0].max() - oval[:, 0].min())
    inside = np.zeros(picture.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(oval).astype(np.int32)], 1)
    distance = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
    return distance > width


def measure(frames, audio: np.ndarray, picture: np.ndarray, floor: np.ndarray | None = None) -> dict[str, float]:
    """Blinks, head motion and the far background's largest change over a stream of frames; the mean
    pose against `floor` (the mean pose the tracker reads on the photo itself, repeated)."""
    far, worst = far_mask(picture), [0]

    def watched():
        for f in frames:
            worst[0] = max(worst[0], int(np.abs(f[far].astype(int) - picture[far]).max()))
            yield f

    reference = detect_faces(picture)[0].points
    lm = detect_landmarks(watched(), depth=True, skull=(picture, reference))
    poses = head_pose(lm, reference=reference)  # against the photo's own pose
    out = compute("blinks", frames=np.zeros((len(lm), 1, 1, 3), np.uint8), landmarks=lm[..., :2])
    out.update(compute("head_motion", audio=audio, poses=poses))
    out["mean_pose"] = np.nanmean(poses, 0)
    out["mean_pose_off"] = float(np.abs(out["mean_pose"] - (floor if floor is not None else 0)).max())
    out["background_max_change"] = worst[0]
    out["frames"] = len(lm)
    out["eye_openness_min_share"] = float(np.nanmin(eye_openness(lm[..., :2]).mean(-1)) / np.nanmedian(eye_openness(lm[..., :2]).mean(-1)))
    return out


def show(name: str, m: dict) -> None:
    keys = ("frames", "blinks_per_min", "blink_ms", "blink_depth", "yaw_std", "pitch_std", "roll_std", "head_jump", "mean_pose_off",
            "head_speed_ratio", "background_max_change")
    print(f"| {name} | " + " | ".join(f"{m[k]:.3g}" if isinstance(m[k], float) else str(m[k]) for k in keys) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo")
    ap.add_argument("--grid", default="../shared/data/grid_s1")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    picture = load_image(args.photo)
    picture = picture[: picture.shape[0] // 2 * 2, : picture.shape[1] // 2 * 2]
    with tempfile.TemporaryDirectory() as tmp:
        speech = grid_speech(args.grid, args.seconds, os.path.join(tmp, "speech.wav"))
        audio = load_audio(speech)
        print(f"{os.path.basename(args.photo)} {picture.shape[1]}x{picture.shape[0]}, {len(audio) / 16000:.1f} s of GRID s1 sentences {PAUSE} s apart\n")
        print("| run | frames | blinks/min | blink ms | blink depth | yaw std | pitch std | roll std | largest jump | mean pose off | speed speech/pause | far background max change |")
        print("|" + " --- |" * 12)
        floor = measure((picture for _ in range(len(audio) * 25 // 16000)), audio, picture)
        show("the photo, repeated", floor)
        t = time.perf_counter()
        show("default, seed 0", measure(Animator().generate(picture, speech, seed=0), audio, picture, floor["mean_pose"]))
        print(f"(the default run and its measurement: {time.perf_counter() - t:.0f} s)")
        show("default, seed 1", measure(Animator().generate(picture, speech, seed=1), audio, picture, floor["mean_pose"]))
        show("--still", measure(Animator(still=True).generate(picture, speech), audio, picture, floor["mean_pose"]))

        from talkface.expression import Expressions
        from talkface.media.audio import mfcc_windows

        animator = Animator()
        cfg = animator.cfg
        applied = np.array([e.pose for e in Expressions(cfg.motion.expression, cfg.audio, animator.generator.expression, 0).steps(mfcc_windows(audio, cfg.audio))])
        print(f"\nthe motion applied (seed 0, before any measurement): yaw/pitch/roll std {np.round(applied.std(0), 2).tolist()}, "
              f"largest step between frames {np.round(np.abs(np.diff(applied, axis=0)).max(0), 2).tolist()}, mean {np.round(applied.mean(0), 2).tolist()}")

        short = os.path.join(tmp, "short.wav")
        grid_speech(args.grid, 8.0, short)
        runs = [np.stack(list(Animator().generate(picture, short, seed=s))) for s in (0, 0, 1)]
        print(f"\nseed 0 twice identical: {np.array_equal(runs[0], runs[1])}; seed 1 differs: {not np.array_equal(runs[0], runs[2])} "
              f"(mean abs difference {np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(runs[0], runs[2])]):.2f})")  # frame by frame: a tall photo's frames in int64 filled 20 GB

        source = os.path.join(tmp, "moving.mp4")
        Animator().generate(picture, short, source, seed=5)
        other = grid_speech(args.grid, 8.0, os.path.join(tmp, "other.wav"), first=3)
        dubbed = Animator().dub(source, other, os.path.join(tmp, "dubbed.mp4"), fit="cut", seed=9)
        from talkface.evaluate import read_video

        before, after = (head_pose(detect_landmarks(read_video(p)[0], depth=True, skull=True)) for p in (source, dubbed))
        n = min(len(before), len(after))
        r = [np.corrcoef(before[:n, k], after[:n, k])[0, 1] for k in range(3)]
        print(f"dub keeps the source's head motion: yaw/pitch/roll std source {np.round(np.nanstd(before, 0), 2).tolist()}, "
              f"dubbed {np.round(np.nanstd(after, 0), 2).tolist()}, correlation {np.round(r, 3).tolist()}")


if __name__ == "__main__":
    main()
