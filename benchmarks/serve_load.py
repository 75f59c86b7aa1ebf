"""How many concurrent live streams `talkface serve` holds at real-time pace, and at what latency.

Starts the real server (a subprocess on a free loopback port), uploads a photo (default: the
example face enlarged to 512x512, as in benchmarks/streaming.py; or `--photo PATH`), and for each
count N of `--streams` runs N WebSocket clients at once, each sending speech (`--speech PATH`, or
the example speech looped; each client from its own offset) in 40 ms blocks at real-time pace for
`--seconds`, then "end". The clients' start times are spread over one frame's time, as real
clients' would be.

Frame latency, measured on the client: from the moment the block of audio that completed a frame
was sent to the moment the frame arrived. Which block completes frame t follows from the audio
features (`FeatureStream`: the end of the frame's MFCC window, and the frame's own interval); the
frames made after "end" (the padded tail) count from the moment "end" was sent. Each frame's header
says how many samples the server had received when it made it; a frame made before its audio was
complete would be a bug, and is counted (`early`).

A count is sustained when p99 latency <= 250 ms, every expected frame arrived (none skipped by a
server that fell behind: it skips a frame it would send more than half a second late), and no stream
was stopped ("generation cannot keep up"). Run:
    PYTHONPATH=src python benchmarks/serve_load.py [--streams 1,2,4,6] [--seconds 20] [--photo P] [--speech S] [--device auto]
Also reported: the server's own time to make each frame (its header), its CPU time per frame delivered (its rendering processes included), and the cores used meanwhile by the server, the
clients and everything else on the machine (another job's load skews a row: rerun it). Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time

import aiohttp
import cv2
import numpy as np

from talkface.bundled import asset
from talkface.config import AudioConfig
from talkface.media.audio import FeatureStream, load_audio, num_frames
from talkface.media.image import load_image
from talkface.serve.app import FRAME_HEADER

RATE, BLOCK = 16000, 640  # 40 ms blocks
P99_LIMIT_MS = 250.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def example_512() -> np.ndarray:
    """The example face enlarged on a 512 x 512 canvas: the face about half its width."""
    face = load_image(asset("example_face.png"))
    scale = 512 / face.shape[0]
    big = cv2.resize(face, (round(face.shape[1] * scale), 512), interpolation=cv2.INTER_CUBIC)
    x0 = (big.shape[1] - 512) // 2
    return np.ascontiguousarray(big[:, x0 : x0 + 512])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live child processes (the server's renderers) so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(cpu_seconds(int(child)) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError):  # a child that ended meanwhile
            pass
    return total


def busy_seconds() -> float:
    """CPU time all processes of the machine have spent so far (Linux /proc/stat, every core together)."""
    with open("/proc/stat") as f:
        user, nice, system, _, _, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def samples_needed(cfg: AudioConfig, frames: int) -> np.ndarray:
    """(frames,): how many samples of a stream complete each frame (its MFCC window and its own interval)."""
    fs = FeatureStream(cfg)
    return np.array([fs.samples_needed(t) for t in range(frames)])


async def one_stream(session: aiohttp.ClientSession, base: str, face: str, speech: np.ndarray, blocks: int, offset: int, delay: float,
                     needed: np.ndarray) -> dict:
    await asyncio.sleep(delay)
    sent = np.full(blocks, np.nan)  # when block i was sent
    ended = [math.nan]
    arrivals: list[tuple[int, int, float]] = []  # (frame index, samples in its header, arrival time)
    made: list[float] = []  # the server's time to make each frame (its header)
    last = None
    async with session.ws_connect(f"{base}/ws?face={face}", max_msg_size=2**23) as ws:
        ready = await ws.receive_json()
        assert ready["type"] == "ready", ready

        async def sender() -> None:
            t0 = time.perf_counter()
            for i in range(blocks):
                idx = np.arange(offset + i * BLOCK, offset + (i + 1) * BLOCK) % len(speech)
                if ws.closed:
                    return
                sent[i] = time.perf_counter()
                await ws.send_bytes((speech[idx] * 32767).round().astype("<i2").tobytes())
                await asyncio.sleep(max(0.0, t0 + (i + 1) * BLOCK / RATE - time.perf_counter()))  # real-time pace
            ended[0] = time.perf_counter()
            await ws.send_str(json.dumps({"type": "end"}))

        task = asyncio.create_task(sender())
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                index, samples, ms = FRAME_HEADER.unpack(msg.data[:12])
                arrivals.append((index, samples, time.perf_counter()))
                made.append(ms)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                last = json.loads(msg.data)
                if last["type"] in ("done", "error"):
                    break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task
    latency, early = [], 0
    for index, samples, at in arrivals:
        block = math.ceil(needed[index] / BLOCK) - 1 if index < len(needed) else blocks
        start = sent[block] if block < blocks else ended[0]
        if block < blocks and samples < needed[index]:
            early += 1
        latency.append((at - start) * 1000)
    return {"frames": len(arrivals), "latency_ms": latency, "made_ms": made, "early": early, "last": last}


async def run_count(base: str, face: str, speech: np.ndarray, n: int, seconds: float, cfg: AudioConfig, pid: int) -> dict:
    blocks = round(seconds * RATE / BLOCK)
    expected = num_frames(blocks * BLOCK, cfg)
    needed = samples_needed(cfg, expected)
    frame_s = 1 / cfg.fps
    async with aiohttp.ClientSession() as session:
        load_before, server_cpu, client_cpu, busy, t0 = os.getloadavg(), cpu_seconds(pid), time.process_time(), busy_seconds(), time.perf_counter()
        results = await asyncio.gather(*[
            one_stream(session, base, face, speech, blocks, k * 7919, k * frame_s / n, needed) for k in range(n)
        ])
        load_after, server_cpu, client_cpu = os.getloadavg(), cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
        busy, wall = busy_seconds() - busy, time.perf_counter() - t0
    latency = np.concatenate([r["latency_ms"] for r in results]) if any(r["latency_ms"] for r in results) else np.array([math.nan])
    made = np.concatenate([r["made_ms"] for r in results]) if any(r["made_ms"] for r in results) else np.array([math.nan])
    stopped = sum(1 for r in results if not r["last"] or r["last"]["type"] != "done")
    row = {
        "streams": n, "latency_ms_p50": round(float(np.percentile(latency, 50)), 1), "latency_ms_p99": round(float(np.percentile(latency, 99)), 1),
        "latency_ms_max": round(float(np.max(latency)), 1),
        "made_ms_p50": round(float(np.percentile(made, 50)), 1), "made_ms_p99": round(float(np.percentile(made, 99)), 1), "frames": sum(r["frames"] for r in results), "frames_expected": expected * n,
        "skipped": sum(r["last"].get("skipped", 0) for r in results if r["last"] and r["last"]["type"] == "done"),
        "stopped": stopped, "early": sum(r["early"] for r in results),
        "errors": sorted({r["last"]["error"] for r in results if r["last"] and r["last"]["type"] == "error"}),
        "load_1min_before": round(load_before[0], 2), "load_1min_after": round(load_after[0], 2),
        "server_cpu_ms_per_frame": round(server_cpu * 1000 / max(1, sum(r["frames"] for r in results)), 1),
        "server_cores": round(server_cpu / wall, 2), "client_cores": round(client_cpu / wall, 2),
        "other_cores": round(max(0.0, busy - server_cpu - client_cpu) / wall, 2),  # everything else on the machine meanwhile
    }
    row["sustained"] = row["latency_ms_p99"] <= P99_LIMIT_MS and row["frames"] == row["frames_expected"] and stopped == 0
    return row


async def drive(args: argparse.Namespace, base: str, pid: int, photo: bytes, counts: list[int]) -> tuple[dict, list[dict]]:
    cfg = AudioConfig()
    speech = load_audio(args.speech or asset("example_speech.wav"), RATE)
    async with aiohttp.ClientSession() as session:
        r = await session.post(f"{base}/api/face", data=photo)
        answer = await r.json()
        assert r.status == 200, answer
        info = await (await session.get(f"{base}/api/info")).json()
    await run_count(base, answer["face"], speech, 1, 2.0, cfg, pid)  # warm-up (first calls, allocations), not reported
    rows = []
    for n in counts:
        await asyncio.sleep(args.pause)
        row = await run_count(base, answer["face"], speech, n, args.seconds, cfg, pid)
        rows.append(row)
        print(f"  {n:3d} streams: latency p50 {row['latency_ms_p50']:7.1f} ms, p99 {row['latency_ms_p99']:7.1f} ms, max {row['latency_ms_max']:7.1f} ms; "
              f"server made them in p50 {row['made_ms_p50']}, p99 {row['made_ms_p99']} ms; "
              f"frames {row['frames']}/{row['frames_expected']} ({row['skipped']} skipped, late), stopped {row['stopped']}; server {row['server_cpu_ms_per_frame']} ms CPU a frame, "
              f"{row['server_cores']} cores (client {row['client_cores']}, others {row['other_cores']}); load {row['load_1min_before']}->{row['load_1min_after']}"
              f"{'' if row['sustained'] else '  (not sustained)'}", flush=True)
    return {**answer, "backend": info["backend"]}, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="1,2,4,6", help="counts of concurrent streams to run, one after the other")
    p.add_argument("--seconds", type=float, default=20.0, help="audio each stream sends")
    p.add_argument("--photo", default=None, help="photo to animate (default: the example face enlarged to 512x512)")
    p.add_argument("--speech", default=None, help="speech to send, looped (default: the bundled example speech)")
    p.add_argument("--device", default="auto", help="passed to `talkface serve --device`")
    p.add_argument("--backend", default="auto", help="passed to `talkface serve --backend`")
    p.add_argument("--pause", type=float, default=2.0, help="seconds of quiet between counts")
    args = p.parse_args()
    counts = [int(x) for x in args.streams.split(",")]
    if args.photo:
        with open(args.photo, "rb") as f:
            photo = f.read()
    else:
        photo = cv2.imencode(".png", cv2.cvtColor(example_512(), cv2.COLOR_RGB2BGR))[1].tobytes()
    port = free_port()
    cmd = [sys.executable, "-m", "talkface", "serve", "--port", str(port), "--device", args.device, "--backend", args.backend,
           "--max-streams", str(max(counts)), "--max-audio-seconds", str(args.seconds + 60)]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            line = server.stdout.readline()
            if not line.startswith("talkface serve:"):
                log.seek(0)
                raise SystemExit(f"server did not start: {line!r}\n{log.read()[-2000:]}")
            print(f"serve load: {line.strip()}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.seconds:g} s of speech per stream", flush=True)
            face, rows = asyncio.run(drive(args, f"http://127.0.0.1:{port}", server.pid, photo, counts))
        finally:
            server.terminate()
            server.wait(10)
    print(f"  photo {face['width']}x{face['height']}; latency: block that completed a frame sent -> frame received (client clock)")
    sustained = max((r["streams"] for r in rows if r["sustained"]), default=0)
    print(f"  sustains {sustained} streams (p99 <= {P99_LIMIT_MS:g} ms, every frame, none stopped)")
    result = {"benchmark": "serve_load", "device": args.device, "backend": face["backend"], "cpu_count": os.cpu_count(),
              "photo": [face["height"], face["width"]], "seconds": args.seconds, "speech": args.speech or "example_speech.wav (looped)",
              "rows": rows, "sustained_streams": sustained}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
