"""The web service in-process on a loopback port: protocol, limits, broken clients, a bounded load test."""
import asyncio
import time
import json
import logging
import re
import resource
import struct

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from talkface.accel import runtime_available
from talkface.media.audio import num_frames
from talkface.pipeline import Animator
from talkface.serve import Limits, make_app
from talkface.serve.app import FRAME_HEADER, SERVICE, is_loopback

from conftest import ASSETS, speech_like, write_audio

EXAMPLE = (ASSETS / "example_face.png").read_bytes()


@pytest.fixture(scope="module")
def animator(tiny_weights):
    return Animator(tiny_weights, device="cpu", backend="torch")


def run(animator, scenario, limits=None, token=None, workers=2, batch_streams=False):
    """Run `scenario(client)` against the app on 127.0.0.1 (an ephemeral port)."""

    async def main():
        app = make_app(animator, limits or Limits(), token=token, workers=workers, batch_streams=batch_streams)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            return await scenario(client, app[SERVICE])

    return asyncio.run(main())


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes()


async def upload_face(client) -> dict:
    r = await client.post("/api/face", data=EXAMPLE)
    assert r.status == 200, await r.text()
    return await r.json()


async def stream(client, face: str, audio: np.ndarray, chunk: int = 640, pace: float = 0.0) -> tuple[list, dict]:
    """Send `audio` in chunks (optionally at `pace` x real time), then "end"; collect frames and the last message."""
    frames = []
    async with client.ws_connect(f"/ws?face={face}") as ws:
        ready = await ws.receive_json()
        assert ready["type"] == "ready"

        async def sender():
            for i in range(0, len(audio), chunk):
                await ws.send_bytes(pcm(audio[i : i + chunk]))
                if pace:
                    await asyncio.sleep(chunk / 16000 / pace)
            await ws.send_str(json.dumps({"type": "end"}))

        task = asyncio.create_task(sender())
        last = None
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames.append((*FRAME_HEADER.unpack(msg.data[:12]), msg.data[12:]))
            else:
                last = json.loads(msg.data)
                if last["type"] in ("done", "error"):
                    break
        await task
    return frames, last


def test_live_stream_gives_full_resolution_frames_in_order(animator):
    audio = speech_like(1.2, seed=2)

    async def scenario(client, service):
        info = await (await client.get("/api/info")).json()
        assert info["backend"] == "torch" and info["fps"] == 25
        assert info["model_kind"] == "frames" and info["crop"] == list(animator.size)  # the seed's generator draws a face crop
        face = await upload_face(client)
        assert (face["width"], face["height"]) == (360, 288) and 0 < face["mouth"][0] < 360
        frames, last = await stream(client, face["face"], audio, chunk=999)
        return frames, last, service.streams

    frames, last, open_streams = run(animator, scenario)
    n = num_frames(len(audio), animator.cfg.audio)
    assert last == {"type": "done", "frames": n, "skipped": 0} and open_streams == 0
    assert [f[0] for f in frames] == list(range(n))
    assert all(a[1] <= b[1] for a, b in zip(frames, frames[1:]))  # samples received never go back
    image = cv2.imdecode(np.frombuffer(frames[-1][3], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (288, 360, 3)


def test_limits_answer_with_status_and_json(animator, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="talkface.serve")
    wav = write_audio(tmp_path / "long.wav", speech_like(1.0))
    limits = Limits(max_upload_mb=0.2, max_audio_seconds=0.5, max_streams=1, max_jobs=1)

    async def scenario(client, service):
        out = {}
        r = await client.post("/api/face", data=b"x" * 300_000)
        out["big"] = (r.status, await r.json())
        r = await client.post("/api/face", data=b"not an image at all")
        out["garbage"] = (r.status, await r.json())
        r = await client.get("/ws?face=nope")
        out["unknown"] = (r.status, await r.json())
        form = aiohttp.FormData()
        form.add_field("image", EXAMPLE, filename="face.png")
        form.add_field("audio", open(wav, "rb").read(), filename="long.wav")
        r = await client.post("/api/generate", data=form)
        out["long"] = (r.status, await r.json())
        face = (await upload_face(client))["face"]
        async with client.ws_connect(f"/ws?face={face}") as first:
            await first.receive_json()
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await client.ws_connect(f"/ws?face={face}")
            out["busy"] = e.value.status
            r = await client.get(f"/ws?face={face}")
            out["busy_json"] = await r.json()
            await first.send_bytes(pcm(np.zeros(9000, np.float32)))  # 0.56 s > 0.5 s allowed per stream
            out["too_long"] = (await first.receive_json())
        return out

    out = run(animator, scenario, limits)
    assert out["big"][0] == 413 and "too large" in out["big"][1]["error"]
    assert out["garbage"][0] == 400 and "image" in out["garbage"][1]["error"]
    assert out["unknown"][0] == 400 and "unknown face" in out["unknown"][1]["error"]
    assert out["long"][0] == 400 and "too long" in out["long"][1]["error"]
    assert out["busy"] == 429 and "busy" in out["busy_json"]["error"]
    assert out["too_long"]["type"] == "error" and "too long" in out["too_long"]["error"]
    # one log line per request: method, path, status, duration
    logged = [m.groups() for r in caplog.records if (m := re.fullmatch(r"(\w+) (\S+) (\d{3}) \d+ ms", r.getMessage()))]
    assert [(method, path, int(status)) for method, path, status in logged][:5] == [
        ("POST", "/api/face", 413), ("POST", "/api/face", 400), ("GET", "/ws", 400), ("POST", "/api/generate", 400), ("POST", "/api/face", 200)]
    assert ("GET", "/ws", "429") in logged and ("GET", "/ws", "101") in logged  # the refused stream, the one that ran


def test_token_is_required_when_set(animator):
    async def scenario(client, service):
        a = await client.get("/api/info")
        b = await client.get("/api/info", headers={"Authorization": "Bearer s3cret"})
        c = await client.get("/?token=s3cret")
        d = await client.get("/api/info")  # the cookie set by the page's URL
        return a.status, (await a.json())["error"], b.status, c.status, d.status

    status, message, ok_header, ok_page, ok_cookie = run(animator, scenario, token="s3cret")
    assert status == 401 and "token" in message
    assert ok_header == ok_page == ok_cookie == 200
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")


def test_broken_clients_do_not_take_the_server_down(animator):
    async def scenario(client, service):
        face = (await upload_face(client))["face"]
        warnings = []
        async with client.ws_connect(f"/ws?face={face}") as ws:
            await ws.receive_json()
            await ws.send_str("{not json")
            await ws.send_bytes(b"\x01\x02\x03")  # odd length: not int16
            await ws.send_str(json.dumps({"type": 5}))
            for _ in range(3):
                warnings.append(await ws.receive_json())
        for _ in range(3):  # vanish mid-stream, after sending some speech
            ws = await client.ws_connect(f"/ws?face={face}")
            await ws.receive_json()
            await ws.send_bytes(pcm(speech_like(0.4)))
            ws._response.close()  # drop the connection without a closing handshake
        await asyncio.sleep(0.5)
        frames, last = await stream(client, face, speech_like(0.5))
        return warnings, frames, last, service.streams

    warnings, frames, last, open_streams = run(animator, scenario)
    assert [w["type"] for w in warnings] == ["warning"] * 3
    assert last["type"] == "done" and len(frames) == last["frames"] > 0
    assert open_streams == 0


def test_generate_returns_an_mp4(animator, tmp_path):
    wav = write_audio(tmp_path / "s.wav", speech_like(0.6))

    async def scenario(client, service):
        form = aiohttp.FormData()
        form.add_field("image", EXAMPLE, filename="face.png")
        form.add_field("audio", open(wav, "rb").read(), filename="s.wav")
        r = await client.post("/api/generate", data=form)
        return r.status, r.headers.get("Content-Type"), await r.read()

    status, kind, body = run(animator, scenario)
    assert status == 200 and kind == "video/mp4" and body[4:8] == b"ftyp"


def test_load_concurrent_streams_share_fairly_and_memory_stays_flat(animator):
    """3 streams at real-time pace for 2 s each, twice: every stream gets its frames, RSS does not climb."""
    audio = speech_like(2.0, seed=4)
    expected = num_frames(len(audio), animator.cfg.audio)

    async def scenario(client, service):
        face = (await upload_face(client))["face"]
        rss = []
        counts = []
        for _ in range(2):
            results = await asyncio.gather(*(stream(client, face, audio, chunk=640, pace=1.0) for _ in range(3)))
            counts.append([len(frames) for frames, _ in results])
            assert all(last["type"] == "done" for _, last in results)
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return counts, rss, service.streams

    counts, rss, open_streams = run(animator, scenario, Limits(max_streams=3))
    assert counts == [[expected] * 3] * 2 and open_streams == 0
    assert rss[1] - rss[0] < 50 * 1024  # KiB: the second round needs no new memory to speak of


@pytest.mark.skipif(not runtime_available("openvino"), reason="openvino not installed")
def test_info_of_the_motion_model_names_no_face_crop(motion_checkpoint):
    async def scenario(client, service):
        return await (await client.get("/api/info")).json()

    info = run(Animator(motion_checkpoint, device="cpu"), scenario)
    assert info["model_kind"] == "motion" and info["crop"] is None  # it moves the photo's own pixels, at full resolution
    assert info["sample_rate"] == 16000 and info["fps"] == 25 and info["limits"]["max_streams"] == Limits().max_streams


def test_openvino_backend_serves_two_streams_at_once(tiny_weights):
    """Worker threads share one OpenVINO backend (a stream each): every frame arrives, in order."""
    animator = Animator(tiny_weights, device="cpu", backend="openvino", streams=2)
    audios = [speech_like(0.8, seed=s) for s in (4, 5)]

    async def scenario(client, service):
        assert (await (await client.get("/api/info")).json())["backend"] == "openvino"
        face = await upload_face(client)
        return await asyncio.gather(*(stream(client, face["face"], a, chunk=640) for a in audios))

    for (frames, last), audio in zip(run(animator, scenario, Limits(max_streams=2)), audios):
        n = num_frames(len(audio), animator.cfg.audio)
        assert last == {"type": "done", "frames": n, "skipped": 0} and [f[0] for f in frames] == list(range(n))


def test_batched_streams_share_generator_calls(tiny_weights):
    """With streams batched, three clients at once each get every frame, in order, from shared calls."""
    animator = Animator(tiny_weights, device="cpu", backend="torch")
    audio = speech_like(1.0, seed=6)
    calls = []
    decode = animator.generator.decode

    def slow_decode(identity, *a, **k):  # long enough that the other streams' calls queue behind each one, however fast the machine
        calls.append(identity.code.shape[0])
        time.sleep(0.02)
        return decode(identity, *a, **k)

    animator.generator.decode = slow_decode

    async def scenario(client, service):
        assert (await (await client.get("/api/info")).json())["batched_streams"] is True
        face = (await upload_face(client))["face"]
        results = await asyncio.gather(*(stream(client, face, audio, chunk=640, pace=2.0) for _ in range(3)))
        return results, len(service.batch)

    try:
        results, left = run(animator, scenario, Limits(max_streams=3), workers=3, batch_streams=True)
    finally:
        animator.generator.decode = decode
    n = num_frames(len(audio), animator.cfg.audio)
    for frames, last in results:
        assert last == {"type": "done", "frames": n, "skipped": 0} and [f[0] for f in frames] == list(range(n))
    assert left == 0 and max(calls) > 1  # streams left the batch; some calls served several


def test_batched_streams_need_the_torch_backend(tiny_weights):
    from talkface.errors import TalkfaceError

    with pytest.raises(TalkfaceError, match="use backend torch"):
        make_app(Animator(tiny_weights, device="cpu", backend="onnx"), batch_streams=True)


def test_serve_on_a_busy_port_is_one_line_and_prints_no_address(capfd):
    import socket

    from talkface.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port)])
    out, err = capfd.readouterr()
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"talkface: error: cannot listen on 127.0.0.1:{port}: the port is in use (choose another with --port)"]


def test_listen_takes_a_free_port_and_names_a_bad_host():
    from talkface.errors import TalkfaceError
    from talkface.serve.app import listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()
    with pytest.raises(TalkfaceError, match="--host no.such.host.invalid: not an address"):
        listen("no.such.host.invalid", 0)


def test_generate_with_a_picture_as_the_audio_says_so(animator):
    async def scenario(client, service):
        form = aiohttp.FormData()
        form.add_field("image", EXAMPLE, filename="face.png")
        form.add_field("audio", EXAMPLE, filename="speech.wav")
        r = await client.post("/api/generate", data=form)
        return r.status, await r.json()

    status, body = run(animator, scenario)
    assert (status, body) == (400, {"error": "audio: is not an audio file (it holds a picture)"})
