"""A long live run of `talkface serve`: streams at real-time pace for minutes, server memory watched.

Starts the real server (a subprocess on a free loopback port, the bundled model), uploads the
example photo, and runs `--streams` WebSocket clients that each send the example speech, looped, in
40 ms blocks at real-time pace for `--minutes`. Every 5 s it reads the server's resident memory
(VmRSS). Reports frames received per stream against the number expected, the server's time to
make a frame (from each frame's header), and the memory curve: RSS after the first minute and at
the end, and the slope of a line fitted to the samples after the first minute. Run:
    PYTHONPATH=src python benchmarks/soak.py [--minutes 5] [--streams 2] [--backend torch] [--batch-streams]
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import aiohttp
import numpy as np

from talkface.config import AudioConfig
from talkface.media.audio import load_audio, num_frames
from talkface.bundled import asset
from talkface.serve.app import FRAME_HEADER

RATE, BLOCK = 16000, 640  # 40 ms blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def one_stream(session: aiohttp.ClientSession, base: str, face: str, speech: np.ndarray, seconds: float, offset: int) -> dict:
    blocks = int(seconds * RATE / BLOCK)
    made_ms, frames = [], 0
    async with session.ws_connect(f"{base}/ws?face={face}", max_msg_size=2**22) as ws:
        assert (await ws.receive_json())["type"] == "ready"

        async def sender() -> None:
            t0 = time.perf_counter()
            for i in range(blocks):
                idx = np.arange(offset + i * BLOCK, offset + (i + 1) * BLOCK) % len(speech)
                await ws.send_bytes((speech[idx] * 32767).round().astype("<i2").tobytes())
                await asyncio.sleep(max(0.0, t0 + (i + 1) * BLOCK / RATE - time.perf_counter()))  # real-time pace
            await ws.send_str(json.dumps({"type": "end"}))

        task = asyncio.create_task(sender())
        last = None
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames += 1
                made_ms.append(FRAME_HEADER.unpack(msg.data[:12])[2])
            else:
                last = json.loads(msg.data)
                if last["type"] in ("done", "error"):
                    break
        await task
    return {"frames": frames, "last": last, "made_ms": made_ms, "samples": blocks * BLOCK}


async def watch(pid: int, samples: list, stop: asyncio.Event, t0: float) -> None:
    while not stop.is_set():
        samples.append((time.perf_counter() - t0, rss_mib(pid)))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


async def main_async(args: argparse.Namespace, base: str, pid: int) -> dict:
    speech = load_audio(asset("example_speech.wav"), RATE)
    async with aiohttp.ClientSession() as session:
        with open(asset("example_face.png"), "rb") as f:
            r = await session.post(f"{base}/api/face", data=f.read())
        face = (await r.json())["face"]
        samples: list[tuple[float, float]] = []
        stop, t0 = asyncio.Event(), time.perf_counter()
        watcher = asyncio.create_task(watch(pid, samples, stop, t0))
        streams = [one_stream(session, base, face, speech, args.minutes * 60, k * 7919) for k in range(args.streams)]
        results = await asyncio.gather(*streams)
        stop.set()
        await watcher
    return {"results": results, "rss": samples}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch-streams", action="store_true", help="the server makes all streams' frames in shared generator calls")
    args = p.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "talkface", "serve", "--port", str(port), "--backend", args.backend,
           "--max-audio-seconds", str(args.minutes * 60 + 60), "--max-streams", str(args.streams)] + (["--batch-streams"] if args.batch_streams else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("talkface serve:"), f"server did not start: {line!r}"
        out = asyncio.run(main_async(args, f"http://127.0.0.1:{port}", server.pid))
    finally:
        server.terminate()
        server.wait(10)

    rss = np.array(out["rss"])
    after = rss[rss[:, 0] >= 60] if (rss[:, 0] >= 60).sum() >= 2 else rss
    slope = float(np.polyfit(after[:, 0] / 60, after[:, 1], 1)[0]) if len(after) >= 2 else 0.0
    made = np.concatenate([r["made_ms"] for r in out["results"]])
    expected = num_frames(out["results"][0]["samples"], AudioConfig())
    result = {
        "benchmark": "soak", "minutes": args.minutes, "streams": args.streams, "backend": line.split("backend ")[-1].split(";")[0],
        "cpu_count": os.cpu_count(), "frames_per_stream": [r["frames"] for r in out["results"]], "frames_expected": expected,
        "ended": [r["last"]["type"] if r["last"] else None for r in out["results"]],
        "make_ms_p50": round(float(np.percentile(made, 50)), 2), "make_ms_p90": round(float(np.percentile(made, 90)), 2),
        "rss_mib_start": round(float(rss[0, 1]), 1), "rss_mib_after_1_min": round(float(after[0, 1]), 1),
        "rss_mib_end": round(float(rss[-1, 1]), 1), "rss_mib_max": round(float(rss[:, 1].max()), 1),
        "rss_slope_mib_per_min_after_1_min": round(slope, 2), "rss_samples": len(rss),
    }
    print(f"soak: {args.streams} stream(s) x {args.minutes:g} min at real-time pace, backend {result['backend']}")
    print(f"  frames per stream {result['frames_per_stream']} (expected {expected}), ended with {result['ended']}")
    print(f"  server time per frame (generation + paste-back + JPEG): p50 {result['make_ms_p50']} ms, p90 {result['make_ms_p90']} ms")
    print(f"  server RSS: {result['rss_mib_start']} MiB at start, {result['rss_mib_after_1_min']} after 1 min, {result['rss_mib_end']} at the end "
          f"(max {result['rss_mib_max']}); slope after 1 min {result['rss_slope_mib_per_min_after_1_min']} MiB/min over {len(rss)} samples")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
