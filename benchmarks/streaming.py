"""Speed of what the product runs: a live one-frame step at full resolution, and batched generation, per backend.

With a motion model (the default), only the live step is timed, on the example photo and on a
512x512 enlargement of it: the warp's cost grows with the face's size in pixels.

The bundled paper-preset model (`--checkpoint random` for random weights: the same speed, but the
output differences of int8 are only meaningful with trained weights), the package's example photo
(360x288) and example speech. Run:
    PYTHONPATH=src python benchmarks/streaming.py [--backends torch,openvino,openvino-int8,onnx,onnx-int8] [--steps 200] [--threads N]

1. Live step: 40 ms of audio (640 samples) pushed into a `PhotoStream` gives one full-resolution
   frame: MFCC + networks + paste-back. p50/p90 over `--steps` steps after warm-up, and the process's
   CPU time per step (`--threads 1` is how `talkface serve` runs each stream); JPEG encoding (what
   `talkface serve` adds) timed apart.
2. Batched: a 10 s clip (250 frames: the example speech's windows, repeated) decoded in one call by
   each backend, interleaved with the plain eager float32 generator (the baseline of
   benchmarks/generator.py) so that both see the same load on a shared machine; speed-up = baseline
   time / backend time, per round (best and median). The baseline is also timed alone, first,
   before any backend is built (no other runtime's thread pool in the process).
   Output difference: max and mean abs difference of uint8 frames against the baseline.
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import cv2
import numpy as np
import torch

from talkface.accel import make_backend
from talkface.checkpoint import load_generator
from talkface.config import Config, paper
from talkface.media.audio import load_audio, mfcc_windows
from talkface.media.image import load_image
from talkface.models import Generator, GeneratorState
from talkface.bundled import checkpoint_path
from talkface.pixels import to_tensor, to_uint8
from talkface.streaming import PhotoStream, PreparedPhoto

ASSETS = os.path.join(os.path.dirname(__file__), "..", "src", "talkface", "assets")


def speechy(seconds: float, seed: int = 0) -> np.ndarray:
    from talkface.data.synthetic import _speech

    cfg = paper().audio
    audio, _, _ = _speech(np.random.default_rng(seed), int(seconds * cfg.fps), cfg, 140.0)
    return audio


def live_step(stream: PhotoStream, cfg, steps: int, warmup: int) -> dict:
    audio = speechy((steps + warmup) * 0.04 + 1.0)
    hop = int(cfg.audio.sample_rate / cfg.audio.fps)
    times, cpu, jpeg_ms, frame = [], [], [], None
    for i in range(0, len(audio) - hop, hop):
        t0, c0 = time.perf_counter(), time.process_time()
        frames = stream.push(audio[i : i + hop])
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if len(frames) == 1:
            frame = frames[0]
            if stream.frames_out > warmup:
                times.append(dt)
                cpu.append(dc)
                t1 = time.perf_counter()
                cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
                jpeg_ms.append((time.perf_counter() - t1) * 1000)
        if len(times) >= steps:
            break
    ms = np.array(times) * 1000
    return {
        "step_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "step_ms_p90": round(float(np.percentile(ms, 90)), 2),
        "step_ms_max": round(float(ms.max()), 2),
        "cpu_ms_mean": round(float(np.mean(cpu)) * 1000, 2),  # CPU time of the whole process per step, all threads
        "steps": len(ms),
        "jpeg_ms_p50": round(float(np.median(jpeg_ms)), 2),
        "frame_shape": list(frame.shape),
    }


def batched_inputs(g: Generator, cfg: Config, photo: PreparedPhoto, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The example speech's windows (repeated to `frames`), their noise, and the example face's aligned crop."""
    a = cfg.audio
    windows = mfcc_windows(load_audio(os.path.join(ASSETS, "example_speech.wav"), a.sample_rate), a)
    mfcc = torch.from_numpy(np.resize(windows, (frames, *windows.shape[1:])))[None]
    z = g.noise.sample(1, frames, generator=torch.Generator().manual_seed(1))
    return mfcc, z, to_tensor(photo.crop)[None]


@torch.inference_mode()
def baseline_rounds(g: Generator, cfg: Config, photo: PreparedPhoto, frames: int, rounds: int) -> list[float]:
    """The eager float32 baseline timed before any other backend exists in the process (no other
    runtime's threads around), on the same inputs as the interleaved rounds."""
    mfcc, z, crop = batched_inputs(g, cfg, photo, frames)
    identity = g.encode_identity(crop)
    g.decode(identity, mfcc[:, :25], z[:, :25])  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        g.decode(identity, mfcc, z)
        times.append(time.perf_counter() - t0)
    return times


def large_photo(photo: PreparedPhoto, side: int = 512) -> np.ndarray:
    """The example face enlarged on a `side` x `side` canvas: the face about half its width."""
    face = photo.picture
    scale = side / face.shape[0]
    big = cv2.resize(face, (round(face.shape[1] * scale), side), interpolation=cv2.INTER_CUBIC)
    x0 = (big.shape[1] - side) // 2
    return np.ascontiguousarray(big[:, x0 : x0 + side])


def motion_live(model, cfg: Config, photo: PreparedPhoto, args) -> None:
    """The motion model: a live step (MFCC + motion model + warp of the photo's pixels + the mouth
    refiner, when the model has one, run by each backend that can, + blinks, brows and head motion)
    at the example's 360x288 and on a 512x512 photo; with torch also `--still` (the mouth alone)."""
    import copy
    size = (cfg.model.height, cfg.model.width)
    print(f"motion model on {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    result = {"benchmark": "streaming", "kind": "motion", "torch_threads": torch.get_num_threads(), "load_average_1min_start": round(os.getloadavg()[0], 2), "live": {}}
    names = ["torch"]
    if model.refiner is not None:
        names += [n for n in args.backends.split(",") if n in ("openvino", "onnx")]
    backends = {name: make_backend(model, cfg, name) for name in names}
    what = "MFCC + motion + warp" + (" + refiner" if model.refiner is not None else "")
    for name, picture in (("example", photo.picture), ("512x512", large_photo(photo))):
        prepared = PreparedPhoto(picture, size)
        still = copy.deepcopy(cfg)
        still.motion.expression.enabled = False
        runs = [(n, b, cfg, " + expressions") for n, b in backends.items()] + [("torch --still", backends["torch"], still, "")]
        for backend_name, backend, run_cfg, extra in runs:
            stream = PhotoStream(model, run_cfg, prepared, refiner=backend.refiner)
            r = live_step(stream, run_cfg, args.steps, args.warmup)
            result["live"][f"{name} {backend_name}"] = r
            print(
                f"  live step ({r['frame_shape'][1]}x{r['frame_shape'][0]}, {backend_name}: {what}{extra}): p50 {r['step_ms_p50']} ms, "
                f"p90 {r['step_ms_p90']} ms, max {r['step_ms_max']} ms over {r['steps']}, CPU {r['cpu_ms_mean']} ms a step; + JPEG {r['jpeg_ms_p50']} ms"
            )
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,openvino,openvino-int8,onnx,onnx-int8")
    p.add_argument("--checkpoint", default=None, help="weights (default: the bundled model; 'random' for random paper-preset weights)")
    p.add_argument("--steps", type=int, default=200, help="timed live steps per backend")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--frames", type=int, default=250, help="batched clip length")
    p.add_argument("--rounds", type=int, default=3, help="interleaved batched rounds")
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime intra-op threads (default: torch's choice)")
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--skip-batched", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.checkpoint == "random":
        cfg = paper()
        torch.manual_seed(0)
        g = Generator(cfg).eval()
    else:
        g, cfg = load_generator(checkpoint_path(args.checkpoint), torch.device("cpu"))
    photo = PreparedPhoto(load_image(os.path.join(ASSETS, "example_face.png")), (cfg.model.height, cfg.model.width))
    if cfg.kind == "motion":
        motion_live(g, cfg, photo, args)
        return
    baseline_alone = [] if args.skip_batched else baseline_rounds(g, cfg, photo, args.frames, args.rounds)
    names = args.backends.split(",")
    built, build_s = {}, {}
    for name in names:
        t0 = time.perf_counter()
        built[name] = make_backend(g, cfg, name)
        build_s[name] = round(time.perf_counter() - t0, 2)

    result: dict = {
        "benchmark": "streaming",
        "preset": "paper",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_start": round(os.getloadavg()[0], 2),
        "backend_build_seconds": build_s,
        "live": {},
        "batched": {},
    }
    print(f"paper generator on {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")

    if not args.skip_live:
        for name in names:
            r = live_step(PhotoStream(built[name], cfg, photo), cfg, args.steps, args.warmup)
            result["live"][name] = r
            print(
                f"  live step {name:10s} (generation + paste-back, {r['frame_shape'][1]}x{r['frame_shape'][0]}): "
                f"p50 {r['step_ms_p50']} ms, p90 {r['step_ms_p90']} ms, max {r['step_ms_max']} ms over {r['steps']}, "
                f"CPU {r['cpu_ms_mean']} ms a step; + JPEG {r['jpeg_ms_p50']} ms"
            )

    if args.skip_batched:
        print(json.dumps(result))
        return
    mfcc, z, crop = batched_inputs(g, cfg, photo, args.frames)
    with torch.inference_mode():
        identity = g.encode_identity(crop)
        reference = to_uint8(g.decode(identity, mfcc, z)[0][0]).astype(np.int16)
    faces = {name: built[name].encode(crop) for name in names}
    times: dict[str, list[float]] = {"baseline": [], **{n: [] for n in names}}
    outputs = {}
    order = ["baseline", *names]
    for r in range(args.rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotated: no one is always first
            t0 = time.perf_counter()
            if name == "baseline":
                with torch.inference_mode():
                    g.decode(identity, mfcc, z)
            else:
                frames, _ = built[name].decode(faces[name], mfcc, z, GeneratorState())
                outputs[name] = frames
            times[name].append(time.perf_counter() - t0)
    alone = np.array(baseline_alone)
    result["batched"]["baseline_alone"] = {"seconds_best": round(alone.min(), 3), "seconds_median": round(float(np.median(alone)), 3)}
    print(f"  batched {args.frames} frames, eager float32 baseline before any backend was built: best {alone.min():.2f} s, median {np.median(alone):.2f} s")
    base = np.array(times["baseline"])
    result["batched"]["baseline"] = {"seconds_best": round(base.min(), 3), "seconds_median": round(float(np.median(base)), 3), "fps_best": round(args.frames / base.min(), 1)}
    print(f"  batched {args.frames} frames, eager float32 baseline: best {base.min():.2f} s ({args.frames / base.min():.1f} fps), median {np.median(base):.2f} s")
    for name in names:
        t = np.array(times[name])
        ratio = base / t
        diff = np.abs(to_uint8(outputs[name]).astype(np.int16) - reference)
        r = {
            "seconds_best": round(t.min(), 3),
            "seconds_median": round(float(np.median(t)), 3),
            "fps_best": round(args.frames / t.min(), 1),
            "speedup_best": round(float(base.min() / t.min()), 2),
            "speedup_median_of_rounds": round(float(np.median(ratio)), 2),
            "speedup_best_vs_baseline_alone": round(float(alone.min() / t.min()), 2),
            "max_abs_uint8_diff": int(diff.max()),
            "mean_abs_uint8_diff": round(float(diff.mean()), 4),
        }
        result["batched"][name] = r
        print(
            f"  batched {name:10s}: best {r['seconds_best']} s ({r['fps_best']} fps), x{r['speedup_best']} best / "
            f"x{r['speedup_median_of_rounds']} median vs baseline (x{r['speedup_best_vs_baseline_alone']} best vs baseline alone); uint8 diff max {r['max_abs_uint8_diff']}, mean {r['mean_abs_uint8_diff']}"
        )
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(f"  peak RSS {result['peak_rss_mib']} MiB; load at end {result['load_average_1min_end']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
