"""How well a motion model's mouth follows held-out speech, at the landmark level (no rendering).

For each validation clip of a preprocessed folder, the model hears the clip's audio (as recorded,
and in other voices: played faster or slower, which moves pitch and formants; or pitch and formants
moved at the same tempo) and its predicted lower-lip drop and inner-lip gap are compared with the
real ones: Pearson r over time, and the amplitude ratio (std of predicted over std of real). Prints
a table.

    python benchmarks/motion.py --checkpoint runs/motion/generator.safetensors --data shards/grid_s1
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import signal

from talkface.checkpoint import load_generator
from talkface.config import AugmentConfig
from talkface.data.motion import augment, read_audio_motion, resample_motion, time_stretch
from talkface.media.audio import mfcc_windows
from talkface.media.face import INNER_LIP_PAIRS, MOTION_POINTS

UPPER = [MOTION_POINTS.index(u) for u, _ in INNER_LIP_PAIRS]
LOWER = [MOTION_POINTS.index(lo) for _, lo in INNER_LIP_PAIRS]


def gap(motion: np.ndarray) -> np.ndarray:
    """Inner-lip gap change (T,) in rest mouth widths: lower lip drop minus upper lip drop."""
    return motion[:, LOWER, 1].mean(1) - motion[:, UPPER, 1].mean(1)


def predict(model, cfg, audio: np.ndarray, seed: int) -> np.ndarray:
    mfcc = torch.from_numpy(mfcc_windows(audio, cfg.audio))[None]
    with torch.inference_mode():
        z = model.noise.sample(1, mfcc.shape[1], generator=torch.Generator().manual_seed(seed))
        return model(mfcc, z)[0].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="a folder made by `talkface preprocess` (its val split is used)")
    ap.add_argument("--limit", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, cfg = load_generator(args.checkpoint)
    audio, motion = read_audio_motion(args.data, "val", cfg)
    audio, motion = audio[: args.limit], motion[: args.limit]
    voices = {"as recorded": (1.0, False), "x0.85 (lower)": (0.85, False), "x1.15 (higher)": (1.15, False), "x1.3 (higher)": (1.3, False),
              "x0.85 pitch, same tempo": (0.85, True), "x1.2 pitch, same tempo": (1.2, True)}
    print(f"{len(audio)} held-out clips; gap = inner-lip gap change, in rest mouth widths")
    print("| voice | r(gap) | amplitude ratio | silence gap (pred / real) |")
    print("|---|---|---|---|")
    for name, (speed, same_tempo) in voices.items():
        rs, ratios, rest_pred, rest_real = [], [], [], []
        for i, a in enumerate(audio):
            real = motion[i]
            if same_tempo:  # pitch and formants moved by resampling, the tempo put back by a phase vocoder
                down = round(100 * speed)
                a = time_stretch(signal.resample_poly(a, 100, down), 100 / down)
            elif speed != 1.0:  # only the speed: no noise, reverb or gain
                aug = AugmentConfig(speed=(speed, speed), pitch_p=0, gain_db=(0, 0), noise_p=0, reverb_p=0, band_p=0)
                a, s = augment(a, np.random.default_rng(i), aug, cfg.audio.sample_rate)
                real = resample_motion(real, s, int(len(real) / s))
            pred = predict(model, cfg, a, i)
            n = min(len(pred), len(real))
            g_pred, g_real = gap(pred[:n]), gap(real[:n])
            rs.append(np.corrcoef(g_pred, g_real)[0, 1])
            ratios.append(g_pred.std() / max(g_real.std(), 1e-6))
            quiet = g_real < np.quantile(g_real, 0.2)
            rest_pred.append(g_pred[quiet].mean())
            rest_real.append(g_real[quiet].mean())
        print(f"| {name} | {np.nanmean(rs):.3f} | {np.mean(ratios):.2f} | {np.mean(rest_pred):.3f} / {np.mean(rest_real):.3f} |")


if __name__ == "__main__":
    main()
