"""How many concurrent live 25 fps streams one device sustains by batching across streams.

`StreamBatch` with B streams of different faces: every 40 ms tick each stream pushes 40 ms of
speech (MFCC on the CPU, then one generator call for all B frames). A tick must take under 40 ms
for B streams to run at 25 fps; the figure is the largest B whose p90 tick time is under 40 ms.
Crops only: pasting into each stream's photo and JPEG encoding are per-stream CPU work on top
(benchmarks/streaming.py times them: about 3-4 ms and 0.4 ms a frame at 360x288).

The bundled model (paper preset). Run:
    PYTHONPATH=src python benchmarks/streams.py [--device cpu|cuda] [--streams 1,2,4,8,16,32] [--ticks 50]
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from talkface.checkpoint import load_generator
from talkface.media.audio import load_audio
from talkface.media.image import load_image
from talkface.bundled import PAPER_MODEL, asset
from talkface.pipeline import pick_device
from talkface.streaming import PreparedPhoto, StreamBatch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--streams", default="1,2,4,8,16,32", help="batch sizes to try, ascending")
    p.add_argument("--ticks", type=int, default=50, help="timed ticks per batch size (after 10 untimed)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    g, cfg = load_generator(asset(PAPER_MODEL), device)  # batching streams serves the frame generator
    crop = PreparedPhoto(load_image(asset("example_face.png")), (cfg.model.height, cfg.model.width)).crop
    speech = load_audio(asset("example_speech.wav"), cfg.audio.sample_rate)
    hop = int(cfg.audio.sample_rate / cfg.audio.fps)
    rng = np.random.default_rng(0)

    rows = []
    print(f"streams batched on {device} ({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.1f})")
    for b in [int(x) for x in args.streams.split(",")]:
        # different faces (the example crop, brightened or darkened) and different offsets into the speech
        stills = [np.clip(crop.astype(int) + int(d), 0, 255).astype(np.uint8) for d in rng.integers(-30, 30, b)]
        offsets = rng.integers(0, len(speech) - hop, b)
        batch = StreamBatch(g, cfg, stills, seeds=list(range(b)))
        times, frames = [], 0
        for tick in range(10 + args.ticks):
            chunks = {k: np.take(speech, np.arange(o + tick * hop, o + (tick + 1) * hop), mode="wrap") for k, o in enumerate(offsets)}
            sync(device)
            t0 = time.perf_counter()
            out = batch.push(chunks)
            sync(device)
            if tick >= 10:
                times.append(time.perf_counter() - t0)
                frames += sum(len(f) for f in out.values())
        ms = np.array(times) * 1000
        row = {"streams": b, "tick_ms_p50": round(float(np.percentile(ms, 50)), 2), "tick_ms_p90": round(float(np.percentile(ms, 90)), 2),
               "frames_per_second": round(frames / float(np.sum(times)), 1), "real_time": bool(np.percentile(ms, 90) < 1000 / cfg.audio.fps)}
        rows.append(row)
        print(f"  {b:4d} streams: tick p50 {row['tick_ms_p50']} ms, p90 {row['tick_ms_p90']} ms, {row['frames_per_second']} frames/s -> "
              f"{'keeps up with' if row['real_time'] else 'falls behind'} 25 fps")
    sustained = max((r["streams"] for r in rows if r["real_time"]), default=0)
    print(f"  sustains {sustained} concurrent 25 fps streams (largest batch tried with p90 tick < 40 ms)")
    result = {"benchmark": "streams", "device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_average_1min": round(os.getloadavg()[0], 2), "rows": rows, "sustained_streams": sustained}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
