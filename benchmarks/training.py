"""Training throughput: samples (clips) and frames per second of the GAN trainer, per preset.

    python benchmarks/training.py [--presets tiny paper] [--steps 10] [--device cpu|cuda]

Each step is a whole GAN step (discriminator phase, generator phase, EMA) on synthetic clips of
the preset's size; the first two steps are warm-up and not timed.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from talkface.config import override, preset
from talkface.data.synthetic import SyntheticDataset
from talkface.train import Trainer


def measure(name: str, steps: int, device: str, sets: list[str]) -> dict:
    cfg = override(preset(name), sets)
    data = SyntheticDataset(16, max(16, cfg.train.clip_frames), (cfg.model.height, cfg.model.width), cfg.audio)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, data, out, device=device)
        for _ in range(2):
            trainer.train_step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    b, t = cfg.train.batch_size, cfg.train.clip_frames
    return {"preset": name, "device": device, "batch": b, "clip_frames": t, "sec_per_step": round(seconds, 3),
            "samples_per_sec": round(b / seconds, 2), "frames_per_sec": round(b * t / seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    print(f"cpus={os.cpu_count()} torch_threads={torch.get_num_threads()} torch={torch.__version__}")
    for name in args.presets:
        r = measure(name, args.steps, args.device, args.set)
        print(f"{name:6s} {r['device']}: {r['sec_per_step']:.3f} s/step, {r['samples_per_sec']:.2f} clips/s "
              f"({r['batch']} x {r['clip_frames']} frames: {r['frames_per_sec']:.1f} frames/s)")
        print(json.dumps(r))


if __name__ == "__main__":
    main()
