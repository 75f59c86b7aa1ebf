"""The real-time web service: a page, a face upload, a WebSocket that turns speech into frames, mp4 jobs.

Protocol of `/ws?face=ID[&seed=N]` (one live stream):
- `seed` (optional, 0 to 2**32 - 1): the seed of the stream's noise, blinks and head motion (the same
  seed and audio make the same frames); without it each stream gets its own (the count of streams
  the server has started), so two viewers of one face do not blink together
- server -> client, text: {"type": "ready", fps, width, height, sample_rate, lookahead_ms, max_seconds, seed}
- client -> server, binary: 16 kHz mono PCM, signed 16-bit little-endian, any number of samples
- client -> server, text: {"type": "end"} (the audio is over: the last frames follow, then "done")
- server -> client, binary: one frame = 12-byte header (uint32 frame index, uint32 samples received
  when it was made, float32 ms spent making it, little-endian) + a JPEG of the full-resolution frame.
  The indices rise; where the server falls behind (more streams than its cores keep up with), a
  frame that would come more than `Limits.late_seconds` (0.5 s) after its audio arrived is skipped,
  so that the face stays in time with the speech at fewer frames a second (the motion model only)
- server -> client, text: {"type": "error", "error": ...} (then the server closes) or
  {"type": "done", "frames": N, "skipped": K} (N frames made, K of them skipped)

Every limit answers with a JSON `{"error": ...}` and a status: 413 (upload too large), 400 (bad
input, audio too long), 429 (too many live streams or mp4 jobs; or a new live stream while the
running ones skip late frames, `Limits.behind_seconds`), 401 (missing or wrong token).

Live streams of the motion model are made together (`MotionBatch`): one motion model call and one
mouth refiner call serve every stream with frames due, while each stream's warps and JPEG run in a
worker process (`render.parallel.LiveRenderers`, one per core), so they spread over the cores.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import hmac
import json
import logging
import math
import os
import secrets
import socket
import struct
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from importlib import resources

import cv2
import numpy as np
from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from talkface.errors import TalkfaceError
from talkface.media.audio import FeatureStream
from talkface.media.face import MOUTH_CORNERS
from talkface.media.image import load_image
from talkface.pipeline import Animator, scan_audio
from talkface.render.parallel import LiveRenderers, cores
from talkface.streaming import MotionBatch, PhotoStream, PreparedPhoto, StreamBatch

log = logging.getLogger("talkface.serve")
FRAME_HEADER = struct.Struct("<IIf")
TOKEN_COOKIE = "talkface_token"
MAX_SEED = 2**32 - 1


@dataclass
class Limits:
    max_upload_mb: float = 20.0  # one request body (photo, or photo + audio)
    max_audio_seconds: float = 120.0  # an uploaded recording, and one live stream
    # live WebSocket streams at once: what a 2-core machine holds at p99 <= 250 ms with the example face
    # at 512x512, blinking and moving its head; a portrait with a wider face held 4 (benchmarks/serve_load.py;
    # README, "Batching across streams")
    max_streams: int = 6
    max_jobs: int = 1  # mp4 jobs at once (each takes the CPU for a while)
    max_faces: int = 32  # prepared photos kept (least recently used dropped)
    max_side: int = 720  # live streams animate the photo shrunk to this longest side (JPEG per frame)
    backlog_seconds: float = 4.0  # audio waiting to be animated before a stream is stopped
    # a live frame made later than this after its audio arrived (or was due, at real-time pace) is skipped,
    # not sent late: an overloaded server keeps its streams in time with their speech at fewer frames a second
    late_seconds: float = 0.5
    behind_seconds: float = 5.0  # no new live stream while one has skipped a late frame within this long: the cores are full
    jpeg_quality: int = 85


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port (port 0: any free one), or a TalkfaceError saying why not
    (the port is taken, the address is not this machine's): found before the model loads."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise TalkfaceError(f"--host {host}: not an address this machine can listen on ({e.strerror if isinstance(e, OSError) else e})") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # restart at once after a stop (TIME_WAIT); on Windows it would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        if e.errno == errno.EADDRINUSE:
            raise TalkfaceError(f"cannot listen on {shown}:{port}: the port is in use (choose another with --port)") from None
        raise TalkfaceError(f"cannot listen on {shown}:{port} ({e.strerror})") from None
    sock.setblocking(False)
    return sock


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def shrink(picture: np.ndarray, max_side: int) -> np.ndarray:
    h, w = picture.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return picture
    return cv2.resize(picture, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


class LiveStream:
    """A live stream as the server sends it: audio pushed, JPEG frames out. A batched motion stream's
    frames are rendered and encoded by its rig's worker process (`render.parallel.LiveRenderers`);
    any other stream's on the calling thread."""

    def __init__(self, stream: PhotoStream, quality: int, renderers: LiveRenderers | None = None, gain: float = 1.0):
        """`gain`: the motion model's (`MotionConfig.gain`), for the rig made in the worker."""
        self.stream, self.quality, self.renderers = stream, quality, renderers
        self.skipped, self.skipped_at = 0, -math.inf  # frames not made, too late (`push`), and when one last was (time.monotonic)
        self.key = None
        if renderers is not None:
            self.key = renderers.open(stream.photo.picture, stream.photo.face, gain, stream.expressions is not None)

    @property
    def frames_out(self) -> int:
        return self.stream.frames_out

    @property
    def samples_in(self) -> int:
        return self.stream.samples_in

    def push(self, samples: np.ndarray | None, late: Callable[[int], bool] | None = None) -> list[tuple[int, bytes]]:
        """The frames these samples complete (None: the audio has ended; the remaining frames), each
        (its index, its JPEG). `late(index)`: whether a frame comes too late to be worth showing; the
        motion model's late frames are skipped (their motion, blinks and head motion still advance),
        but never the last of a push. The seed's generator makes every frame."""
        stream = self.stream
        if not stream.moves_photo:
            frames = stream.push(samples) if samples is not None else stream.flush()
            first = self.frames_out - len(frames)
            return [(first + i, encode_jpeg(frame, self.quality)) for i, frame in enumerate(frames)]
        done = stream.crops.push(samples) if samples is not None else stream.crops.flush()
        jobs = stream.jobs(done)
        first = self.frames_out - len(jobs)
        keep = [i for i in range(len(jobs)) if late is None or i == len(jobs) - 1 or not late(first + i)]
        if len(keep) < len(jobs):
            self.skipped, self.skipped_at = self.skipped + len(jobs) - len(keep), time.monotonic()
        jobs = [jobs[i] for i in keep]
        if self.key is None:
            jpegs = [encode_jpeg(frame, self.quality) for frame in stream.render_jobs(jobs)]
        else:
            jpegs = self.renderers.render(self.key, [job[1:] for job in jobs], stream.refine)
        return [(first + i, jpeg) for i, jpeg in zip(keep, jpegs)]

    def close(self) -> None:
        if self.key is not None:
            self.renderers.close(self.key)
            self.key = None


class Service:
    """What the routes share: the model, a worker pool, prepared faces, counters for the limits."""

    def __init__(self, animator: Animator, limits: Limits, token: str | None = None, workers: int | None = None, batch_streams: bool | None = None):
        """`batch_streams`: make the live streams' frames in shared model calls; None: for the motion model
        always, for the seed's frame generator when it runs in torch on a GPU."""
        self.animator, self.limits, self.token = animator, limits, token
        _ = animator.backend  # build (export) it now, not on the first request
        if batch_streams is None:
            batch_streams = animator.motion or (animator.backend.name == "torch" and animator.device.type == "cuda")
        if batch_streams and not animator.motion and animator.backend.name != "torch":
            raise TalkfaceError(f"batching streams runs the plain generator: use backend torch, not {animator.backend.name}")
        workers = workers or cores()
        if batch_streams:  # a stream's worker waits for its batch now and then: one each, or streams queue behind waiting ones
            workers = max(workers, limits.max_streams + limits.max_jobs + 1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="talkface")
        self.faces: OrderedDict[str, PreparedPhoto] = OrderedDict()
        self.streams = 0
        self.streams_started = 0  # each stream's default seed
        self.jobs = 0
        self.frames_sent = 0
        self.live_streams: set[LiveStream] = set()  # those running
        # all live streams' networks run in shared calls (the way one GPU serves many streams; on a CPU,
        # the motion model's per-call cost is shared too)
        self.batch: MotionBatch | StreamBatch | None = None
        self.renderers: LiveRenderers | None = None  # the batched motion streams' pixel work, a worker process per core
        if batch_streams:
            self.batch = MotionBatch(animator.generator, animator.backend.refiner) if animator.motion else StreamBatch(animator.generator, animator.cfg)
        if isinstance(self.batch, MotionBatch):
            self.renderers = LiveRenderers(animator.backend.refiner, partial(encode_jpeg, quality=limits.jpeg_quality))

    def live(self, photo: PreparedPhoto, seed: int) -> LiveStream:
        if self.batch is None:
            return LiveStream(self.animator.live(photo, seed), self.limits.jpeg_quality)
        if isinstance(self.batch, MotionBatch):
            cfg = self.animator.cfg
            return LiveStream(self.batch.stream(cfg, photo, seed), self.limits.jpeg_quality, self.renderers, cfg.motion.gain)
        return LiveStream(PhotoStream(None, self.animator.cfg, photo, crops=self.batch.stream(photo.crop, seed)), self.limits.jpeg_quality)

    def release(self, live: LiveStream) -> None:
        if isinstance(self.batch, StreamBatch):
            live.stream.crops.close()
        live.close()

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def remember(self, photo: PreparedPhoto) -> str:
        key = uuid.uuid4().hex
        self.faces[key] = photo
        while len(self.faces) > self.limits.max_faces:
            self.faces.popitem(last=False)
        return key

    def info(self) -> dict:
        cfg = self.animator.cfg
        return {
            "fps": cfg.audio.fps,
            "sample_rate": cfg.audio.sample_rate,
            "model_kind": cfg.kind,  # "motion" (the photo's own pixels move) or "frames" (the seed's generator)
            "crop": None if self.animator.motion else [cfg.model.height, cfg.model.width],  # the face crop the generator draws
            "lookahead_ms": round(cfg.audio.lookahead_ms + 500 / cfg.audio.fps, 1),  # past the frame's centre
            "backend": self.animator.backend.name,
            "batched_streams": self.batch is not None,
            "streams": self.streams,
            "limits": {
                "max_upload_mb": self.limits.max_upload_mb,
                "max_audio_seconds": self.limits.max_audio_seconds,
                "max_streams": self.limits.max_streams,
                "max_jobs": self.limits.max_jobs,
            },
        }


SERVICE = web.AppKey("service", Service)


# -- middleware ---------------------------------------------------------------------------------
@web.middleware
async def access_log(request: web.Request, handler):
    """One log line per request: method, path, status and duration (a WebSocket's line comes when it closes)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:  # a redirect, or what the guard passes on
        status = e.status
        raise
    finally:
        log.info("%s %s %d %.0f ms", request.method, request.path, status, (time.perf_counter() - start) * 1000)


def _token_from(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


@web.middleware
async def guard(request: web.Request, handler):
    """Token check, size limits as JSON 413, and no traceback ever reaching a client."""
    service: Service = request.app[SERVICE]
    if service.token is not None and not request.path.startswith("/static/"):
        given = _token_from(request)
        if given is None or not hmac.compare_digest(given.encode(), service.token.encode()):
            return error(401, "missing or wrong access token (open the URL with ?token=...)")
    limit = int(service.limits.max_upload_mb * 2**20)
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"upload too large: {request.content_length / 2**20:.1f} MB (at most {service.limits.max_upload_mb:g} MB)")
    try:
        response = await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"upload too large (at most {service.limits.max_upload_mb:g} MB)")
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/json":
            return error(e.status, e.reason)
        raise
    except TalkfaceError as e:
        return error(400, e.problem)
    except Exception:
        log.exception("request %s failed", request.path)
        return error(500, "internal error")
    if service.token is not None and request.query.get("token") == service.token and isinstance(response, web.Response):
        # the page's own requests and its WebSocket then carry the token without putting it in every URL
        response.set_cookie(TOKEN_COOKIE, service.token, httponly=True, samesite="Strict")
    return response


# -- routes -------------------------------------------------------------------------------------
STATIC = resources.files("talkface.serve") / "static"


async def index(request: web.Request) -> web.Response:
    return web.Response(text=(STATIC / "index.html").read_text(encoding="utf-8"), content_type="text/html")


async def info(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].info())


async def example_face(request: web.Request) -> web.Response:
    data = (resources.files("talkface") / "assets" / "example_face.png").read_bytes()
    return web.Response(body=data, content_type="image/png")


async def _read_parts(request: web.Request, names: set[str], tmp: str) -> dict[str, str]:
    """Multipart fields `names` saved as files in `tmp` (a raw body counts as the field 'image')."""
    paths: dict[str, str] = {}
    if not request.content_type.startswith("multipart/"):
        body = await request.read()
        if not body:
            raise TalkfaceError("empty request: send the image as the body or as multipart field 'image'")
        paths["image"] = os.path.join(tmp, "image")
        with open(paths["image"], "wb") as f:
            f.write(body)
        return paths
    reader = await request.multipart()
    total, limit = 0, request.app[SERVICE].limits.max_upload_mb * 2**20
    async for part in reader:
        if part.name not in names or part.name in paths:
            await part.release()
            continue
        paths[part.name] = os.path.join(tmp, part.name + os.path.splitext(part.filename or "")[1][:8])
        with open(paths[part.name], "wb") as f:
            while chunk := await part.read_chunk(2**16):
                total += len(chunk)
                if total > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=int(limit), actual_size=total)
                f.write(chunk)
    return paths


async def prepare_face(request: web.Request) -> web.Response:
    """Photo in (raw body or multipart 'image'): face found and aligned once -> {"face": id, ...}."""
    service: Service = request.app[SERVICE]
    with tempfile.TemporaryDirectory() as tmp:
        paths = await _read_parts(request, {"image"}, tmp)
        if "image" not in paths:
            return error(400, "no 'image' field in the upload")

        def work() -> PreparedPhoto:
            picture = shrink(load_image(paths["image"]), service.limits.max_side)
            return service.animator.prepare(picture)

        try:
            photo = await service.run(work)
        except TalkfaceError as e:
            return error(400, f"image: {e.problem}")
    h, w = photo.shape
    mouth = photo.face.landmarks[MOUTH_CORNERS].mean(0)
    return web.json_response({"face": service.remember(photo), "width": w, "height": h, "mouth": [round(float(v), 1) for v in mouth], "face_size": round(photo.face.size, 1)})


async def generate(request: web.Request) -> web.Response:
    """Multipart 'image' + 'audio' -> the finished mp4 (attachment)."""
    service: Service = request.app[SERVICE]
    if service.jobs >= service.limits.max_jobs:
        return error(429, f"busy: {service.jobs} video job(s) running (at most {service.limits.max_jobs}); try again shortly")
    service.jobs += 1
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = await _read_parts(request, {"image", "audio"}, tmp)
            missing = {"image", "audio"} - set(paths)
            if missing:
                return error(400, f"missing upload field(s): {', '.join(sorted(missing))}")
            out = os.path.join(tmp, "talking.mp4")
            rate = service.animator.cfg.audio.sample_rate

            def work() -> bytes:
                try:
                    seconds = scan_audio(paths["audio"], rate) / rate
                except TalkfaceError as e:
                    raise TalkfaceError(f"audio: {e.problem}") from None
                if seconds > service.limits.max_audio_seconds:
                    raise TalkfaceError(f"audio too long: {seconds:.1f} s (at most {service.limits.max_audio_seconds:g} s)")
                try:
                    service.animator.generate(paths["image"], paths["audio"], out)
                except TalkfaceError as e:
                    what = "image" if e.path == paths["image"] else "audio" if e.path == paths["audio"] else None
                    raise TalkfaceError(f"{what}: {e.problem}" if what else e.problem) from None
                with open(out, "rb") as f:
                    return f.read()

            data = await service.run(work)
    finally:
        service.jobs -= 1
    return web.Response(body=data, content_type="video/mp4", headers={"Content-Disposition": 'attachment; filename="talking.mp4"'})


async def stream(request: web.Request) -> web.StreamResponse:
    """One live stream: PCM in, JPEG frames out (protocol in the module docstring)."""
    service: Service = request.app[SERVICE]
    photo = service.faces.get(request.query.get("face", ""))
    if photo is None:
        return error(400, "unknown face: upload a photo to /api/face first")
    seed = request.query.get("seed")
    if seed is not None and not (seed.isdigit() and int(seed) <= MAX_SEED):
        return error(400, f"seed must be a whole number from 0 to {MAX_SEED}, not {seed[:20]!r}")
    if service.streams >= service.limits.max_streams:
        return error(429, f"busy: {service.streams} live stream(s) running (at most {service.limits.max_streams}); try again shortly")
    if any(time.monotonic() - live.skipped_at < service.limits.behind_seconds for live in list(service.live_streams)):
        return error(429, f"busy: the {service.streams} live stream(s) running already fall behind (frames skipped); try again shortly")
    service.streams += 1
    seed = int(seed) if seed is not None else service.streams_started
    service.streams_started += 1
    # no permessage-deflate: frames are JPEG already, and deflating them only costs the server CPU
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=2**20, compress=False)
    try:
        await ws.prepare(request)
        await _stream(service, photo, seed, ws)
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client went away
    except Exception:
        log.exception("stream failed")
        with contextlib.suppress(Exception):
            await ws.send_json({"type": "error", "error": "internal error"})
    finally:
        service.streams -= 1
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _stream(service: Service, photo: PreparedPhoto, seed: int, ws: web.WebSocketResponse) -> None:
    live = await service.run(service.live, photo, seed)
    service.live_streams.add(live)
    try:
        await _run_stream(service, photo, live, seed, ws)
    finally:
        service.live_streams.discard(live)
        service.release(live)


async def _run_stream(service: Service, photo: PreparedPhoto, live: LiveStream, seed: int, ws: web.WebSocketResponse) -> None:
    cfg, limits = service.animator.cfg, service.limits
    rate = cfg.audio.sample_rate
    h, w = photo.shape
    await ws.send_json(
        {
            "type": "ready", "fps": cfg.audio.fps, "width": w, "height": h, "sample_rate": rate,
            "lookahead_ms": service.info()["lookahead_ms"], "max_seconds": limits.max_audio_seconds, "seed": seed,
        }
    )
    queue: asyncio.Queue = asyncio.Queue()
    backlog = [0]  # samples queued, not yet animated
    # when the audio arrived: the samples received by the end of each block, and the moment it came
    ends: list[int] = []
    times: list[float] = []
    features = FeatureStream(cfg.audio)

    making = [0.0, 0]  # how long a push takes to make its frames (s; the pushes since the first, which warms up, weighed 0.3 each), and the pushes made

    def late(index: int, ends: list[int], times: list[float], sent: float) -> bool:
        """Whether frame `index`, sent at `sent`, comes more than `late_seconds` after the later of the
        moment its audio arrived and the moment it would have at real-time pace (from the first block's
        arrival: a client sending faster than real time is not behind)."""
        needed = features.samples_needed(index)
        at = bisect.bisect_left(ends, needed)
        arrived = times[at] if at < len(times) else sent
        due = times[0] + (needed - ends[0]) / rate
        return sent - max(arrived, due) > limits.late_seconds

    def animate(samples: np.ndarray | None, ends: list[int], times: list[float]) -> list[tuple[int, int, float, bytes]]:
        t0 = time.perf_counter()
        sent = time.monotonic() + making[0]  # when this push's frames will go out, if it takes as long as pushes have
        frames = live.push(samples, lambda index: late(index, ends, times, sent) if ends else False)
        took = time.perf_counter() - t0
        if making[1]:
            making[0] = took if making[1] == 1 else 0.7 * making[0] + 0.3 * took
        making[1] += 1
        return [(index, live.samples_in, took * 1000, jpeg) for index, jpeg in frames]

    def arrival() -> tuple[list[int], list[float]]:
        """The arrivals that frames not yet made may need (from the block holding the next frame's audio on)."""
        first = max(0, bisect.bisect_left(ends, features.samples_needed(live.frames_out)) - 1)
        del ends[1:first], times[1:first]  # the first block stays: real-time pace counts from it
        return list(ends), list(times)

    async def worker() -> None:
        while True:
            item = await queue.get()
            parts, end = [], item is None
            while not end:  # take everything waiting: a backlog is animated in one batch
                parts.append(item)
                if queue.empty():
                    break
                item = queue.get_nowait()
                end = item is None
            if parts:
                samples = np.concatenate(parts)
                backlog[0] -= len(samples)
                for frame in await service.run(animate, samples, *arrival()):
                    await _send_frame(ws, frame)
                    service.frames_sent += 1
            if end:
                for frame in await service.run(animate, None, *arrival()):
                    await _send_frame(ws, frame)
                    service.frames_sent += 1
                await ws.send_json({"type": "done", "frames": live.frames_out, "skipped": live.skipped})
                return

    task = asyncio.create_task(worker())
    received = 0
    try:
        async for msg in ws:
            if task.done():
                break
            if msg.type == WSMsgType.BINARY:
                if len(msg.data) % 2:
                    await ws.send_json({"type": "warning", "error": "ignored a binary message of odd length (expected int16 PCM)"})
                    continue
                samples = np.frombuffer(msg.data, "<i2").astype(np.float32) / 32768.0
                received += len(samples)
                if received > limits.max_audio_seconds * rate:
                    await ws.send_json({"type": "error", "error": f"stream too long: at most {limits.max_audio_seconds:g} s of audio per stream"})
                    break
                backlog[0] += len(samples)
                ends.append(received)
                times.append(time.monotonic())
                if backlog[0] > limits.backlog_seconds * rate:
                    await ws.send_json({"type": "error", "error": f"generation cannot keep up: {backlog[0] / rate:.1f} s of audio waiting; stream stopped"})
                    break
                queue.put_nowait(samples)
            elif msg.type == WSMsgType.TEXT:
                try:
                    kind = json.loads(msg.data).get("type")
                except (ValueError, AttributeError):
                    kind = None
                if kind == "end":
                    queue.put_nowait(None)
                    await task
                    break
                await ws.send_json({"type": "warning", "error": 'ignored a text message that is not {"type": "end"}'})
            else:
                break
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # the caller logs it and tells the client


async def _send_frame(ws: web.WebSocketResponse, frame: tuple[int, int, float, bytes]) -> None:
    index, samples, ms, jpeg = frame
    await ws.send_bytes(FRAME_HEADER.pack(index, samples, ms) + jpeg)


# -- the app ------------------------------------------------------------------------------------
class OneLineBadRequests(logging.Filter):
    """aiohttp logs a request that is not HTTP (a port scanner, a TLS hello, a broken client) as an
    error with a traceback: it is the client's mistake, and one warning line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg, record.args = f"{record.getMessage()}: {error.code} {error.message}", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


BAD_REQUESTS = OneLineBadRequests()


def make_app(animator: Animator, limits: Limits | None = None, token: str | None = None, workers: int | None = None,
             batch_streams: bool | None = None) -> web.Application:
    limits = limits or Limits()
    if BAD_REQUESTS not in logging.getLogger("aiohttp.server").filters:
        logging.getLogger("aiohttp.server").addFilter(BAD_REQUESTS)
    app = web.Application(middlewares=[access_log, guard], client_max_size=int(limits.max_upload_mb * 2**20))
    service = Service(animator, limits, token, workers, batch_streams)
    app[SERVICE] = service
    app.router.add_get("/", index)
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/example-face", example_face)
    app.router.add_post("/api/face", prepare_face)
    app.router.add_post("/api/generate", generate)
    app.router.add_get("/ws", stream)
    app.router.add_static("/static/", str(STATIC))

    async def close_pool(app: web.Application) -> None:
        service.pool.shutdown(wait=False, cancel_futures=True)
        if service.renderers is not None:
            service.renderers.shutdown()

    app.on_cleanup.append(close_pool)
    return app


def serve(
    checkpoint: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    backend: str = "auto",
    limits: Limits | None = None,
    batch_streams: bool | None = None,
    mouth_scale: float = 1.0,
    still: bool = False,
    head_motion: float = 1.0,
    blinks: bool = True,
    device: str = "auto",
) -> None:
    """Run the service until interrupted. Off loopback an access token is required: one is made when not given.

    `batch_streams`: make all live streams' frames in shared model calls (`MotionBatch`, or `StreamBatch` for
    the seed's generator); None: always for the motion model, and for the seed's generator when it runs on
    a GPU (on a CPU a worker per stream is faster there: README, "Batching across streams").
    `mouth_scale`: how far every face's lips and chin move; `still`, `head_motion`, `blinks`: the rest of the face (`Animator`).
    `device`: where torch runs (auto: CUDA when present); the graph backends run on the CPU.
    """
    import torch

    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(16)
    if backend not in ("auto", "torch") and device not in ("auto", "cpu"):
        raise TalkfaceError(f"argument --device: the {backend} backend runs on the CPU, not {device} (use --backend torch)")
    sock = listen(host, port)
    # One intra-op thread per inference and one worker per core: streams run side by side.
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="talkface serve: %(message)s")
    # one worker thread per core, and as many OpenVINO streams (with one, its requests would queue)
    try:
        animator = Animator(checkpoint, device=device if backend in ("auto", "torch") else "cpu", backend=backend, streams=cores(),
                            mouth_scale=mouth_scale, still=still, head_motion=head_motion, blinks=blinks)
        app = make_app(animator, limits, token, batch_streams=batch_streams)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
        batched = ", streams batched" if app[SERVICE].batch is not None else ""

        async def announce(app: web.Application) -> None:  # the socket listens already: the address works once shown
            print(f"talkface serve: {url} (backend {animator.backend.name}{batched}; Ctrl+C to stop)", flush=True)

        app.on_startup.append(announce)
        web.run_app(app, sock=sock, print=None, access_log=None)
    finally:
        sock.close()
