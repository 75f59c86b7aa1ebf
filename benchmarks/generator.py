"""Speed of the paper-preset generator on this machine: batched throughput, one-frame latency, memory.

Random weights (speed does not depend on their values). Run:
    PYTHONPATH=src python benchmarks/generator.py [--frames 250] [--steps 200] [--threads N] [--device cpu]
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np
import torch

from talkface.config import paper
from talkface.models import Generator, GeneratorState


def peak_rss_mib() -> float:
    """Process RSS high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=250, help="clip length for the batched run (250 = 10 s at 25 fps)")
    p.add_argument("--repeats", type=int, default=3, help="timed batched runs (best and median reported)")
    p.add_argument("--steps", type=int, default=200, help="timed one-frame steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed one-frame steps first")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = paper()
    torch.manual_seed(0)
    g = Generator(cfg).to(device).eval()
    a, m = cfg.audio, cfg.model
    still = torch.rand(1, 3, m.height, m.width, device=device) * 2 - 1
    mfcc = torch.randn(1, args.frames, a.n_mfcc, a.steps, device=device) * 0.3
    z = g.noise.sample(1, args.frames).to(device)
    rss_start = peak_rss_mib()

    with torch.inference_mode():
        identity = g.encode_identity(still)
        # Batched: the whole clip in one decode call (as offline generation can).
        g.decode(identity, mfcc[:, :25], z[:, :25])  # warm-up
        times = []
        for _ in range(args.repeats):
            sync(device)
            t0 = time.perf_counter()
            g.decode(identity, mfcc, z)
            sync(device)
            times.append(time.perf_counter() - t0)
        rss_batched = peak_rss_mib()

        # One frame at a time: identity encoded once, state carried.
        state = GeneratorState()
        lat = []
        for i in range(args.warmup + args.steps):
            j = i % args.frames
            sync(device)
            t0 = time.perf_counter()
            _, state = g.decode(identity, mfcc[:, j : j + 1], z[:, j : j + 1], state)
            sync(device)
            if i >= args.warmup:
                lat.append(time.perf_counter() - t0)
        rss_stream = peak_rss_mib()

    lat_ms = np.array(lat) * 1000
    best, median = min(times), float(np.median(times))
    result = {
        "benchmark": "generator",
        "preset": "paper",
        "backend": "torch-eager-float32",
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other processes competing for the cores
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "batched_frames": args.frames,
        "batched_seconds_best": round(best, 3),
        "batched_seconds_median": round(median, 3),
        "batched_fps_best": round(args.frames / best, 1),
        "batched_fps_median": round(args.frames / median, 1),
        "step_ms_p50": round(float(np.percentile(lat_ms, 50)), 2),
        "step_ms_p90": round(float(np.percentile(lat_ms, 90)), 2),
        "step_ms_max": round(float(lat_ms.max()), 2),
        "steps_timed": len(lat),
        "peak_rss_mib_after_model": round(rss_start, 1),
        "peak_rss_mib_batched": round(rss_batched, 1),
        "peak_rss_mib_total": round(rss_stream, 1),
    }
    if device.type == "cuda":
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)

    print(f"paper generator, {result['backend']} on {device} ({result['cpu_count']} CPUs, {result['torch_threads']} torch threads, load {result['load_average_1min']})")
    print(f"  batched {args.frames} frames: {best:.2f} s best / {median:.2f} s median -> {args.frames / best:.1f} fps best, {args.frames / median:.1f} fps median")
    print(f"  one-frame step ({len(lat)} timed after {args.warmup} warm-up): p50 {result['step_ms_p50']} ms, p90 {result['step_ms_p90']} ms, max {result['step_ms_max']} ms")
    print(f"  peak RSS: {rss_start:.0f} MiB after model, {rss_batched:.0f} MiB after batched, {rss_stream:.0f} MiB at end")
    if "cuda_peak_mib" in result:
        print(f"  CUDA peak allocated: {result['cuda_peak_mib']} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
