"""The web service against malformed, oversized, out-of-order and garbage uploads and WebSocket
messages (seeded, on 127.0.0.1); afterwards a well-behaved client still gets every frame."""
import asyncio
import io
import json
import logging
import re
import wave

import aiohttp
import numpy as np
import pytest
from PIL import Image

from conftest import speech_like, write_audio
from talkface.media.audio import num_frames
from talkface.pipeline import Animator
from talkface.serve import Limits
from test_serve import EXAMPLE, pcm, run, stream, upload_face

SEED = 99
LIMITS = Limits(max_upload_mb=1.0, max_audio_seconds=8.0, max_streams=2, max_jobs=1)
STEP_S = 20  # no single exchange may take longer


@pytest.fixture(scope="module")
def animator(tiny_weights):
    return Animator(tiny_weights, device="cpu", backend="torch")


def bad_uploads(rng: np.random.Generator, wav: bytes) -> list[tuple[str, str, dict]]:
    """(name, path, aiohttp request kwargs) of uploads that must each get a JSON 4xx answer."""
    out = []
    for i in range(15):
        out.append((f"garbage body {i}", "/api/face", {"data": rng.integers(0, 256, int(rng.integers(1, 50_000)), np.uint8).tobytes()}))
    for i in range(12):
        b = bytearray(EXAMPLE)
        if i % 3 == 0:
            b = b[: int(rng.integers(8, len(b) // 2))]
        else:
            for _ in range(int(rng.integers(20, 200))):
                b[int(rng.integers(8, len(b)))] = int(rng.integers(0, 256))
        out.append((f"broken photo {i}", "/api/face", {"data": bytes(b)}))
    no_face = io.BytesIO()
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(no_face, "PNG")
    out += [
        ("empty body", "/api/face", {"data": b""}),
        ("photo without a face", "/api/face", {"data": no_face.getvalue()}),
        ("oversized raw body", "/api/face", {"data": b"\0" * int(1.5 * 2**20)}),
        ("text as a photo", "/api/face", {"data": "not a photo".encode(), "headers": {"Content-Type": "text/plain"}}),
    ]

    def form(**fields) -> aiohttp.FormData:
        f = aiohttp.FormData()
        for name, value in fields.items():
            f.add_field(name.rstrip("_"), value, filename=f"{name}.bin")
        return f

    out += [
        ("multipart, wrong field", "/api/face", {"data": form(picture=EXAMPLE)}),
        ("multipart, empty image", "/api/face", {"data": form(image=b"")}),
        ("multipart, oversized image", "/api/face", {"data": form(image=b"\1" * int(1.2 * 2**20))}),
        ("multipart, two images", "/api/face", {"data": form(image=b"junk", image_=EXAMPLE)}),
        ("generate, no fields", "/api/generate", {"data": form(other=b"x")}),
        ("generate, no audio", "/api/generate", {"data": form(image=EXAMPLE)}),
        ("generate, no image", "/api/generate", {"data": form(audio=wav)}),
        ("generate, garbage audio", "/api/generate", {"data": form(image=EXAMPLE, audio=rng.integers(0, 256, 5000, np.uint8).tobytes())}),
        ("generate, garbage image", "/api/generate", {"data": form(image=b"GIF89a" + bytes(300), audio=wav)}),
        ("generate, silent audio", "/api/generate", {"data": form(image=EXAMPLE, audio=write_silence())}),
        ("generate, raw body", "/api/generate", {"data": EXAMPLE}),
    ]
    return out


def write_silence() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(16000))
    return buf.getvalue()


def bad_messages(rng: np.random.Generator) -> list[tuple[str, str | bytes]]:
    """WebSocket messages a client should not send, each alone on a fresh stream."""
    out: list[tuple[str, str | bytes]] = []
    for i in range(12):
        out.append((f"random text {i}", "".join(chr(int(c)) for c in rng.integers(1, 0x2FFF, int(rng.integers(0, 300))))))
    for i, text in enumerate(["", "{", "[1, 2]", '"end"', "null", "5", '{"type": "END"}', '{"type": null}', '{"type": ["end"]}', '{"end": true}', "{" * 5000, json.dumps({"type": "x" * 100_000})]):
        out.append((f"bad json {i}", text))
    for i in range(12):
        size = int(rng.integers(1, 20_000)) | 1  # odd: not int16
        out.append((f"odd-length binary {i}", rng.integers(0, 256, size, np.uint8).tobytes()))
    for i in range(10):
        out.append((f"binary garbage {i}", rng.integers(0, 256, int(rng.integers(1, 8_000)) * 2, np.uint8).tobytes()))
    out.append(("message over the size limit", b"\0" * (2**20 + 2)))
    out.append(("empty binary", b""))
    return out


async def expect_json_error(response: aiohttp.ClientResponse) -> tuple[int, str]:
    body = await response.read()
    try:
        return response.status, json.loads(body)["error"]
    except (ValueError, KeyError):
        return response.status, f"not a JSON error: {body[:80]!r}"


async def raw_requests(host: str, port: int, rng: np.random.Generator) -> list[bytes]:
    """Bytes that are not HTTP at all, straight to the socket: the first line of each answer (if any)."""
    payloads = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/face HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/face HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nshort",
        b"POST /api/face HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
        b"GET /ws?face=x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello
    ] + [rng.integers(0, 256, int(rng.integers(1, 4000)), np.uint8).tobytes() for _ in range(6)]
    answers = []
    for payload in payloads:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), STEP_S)
        try:
            writer.write(payload)
            await writer.drain()
            if payload.endswith(b"short"):
                writer.close()  # the body never comes
            answers.append(await asyncio.wait_for(reader.readline(), STEP_S))
        except (ConnectionError, asyncio.IncompleteReadError):
            answers.append(b"")
        finally:
            writer.close()
    return answers


def test_garbage_from_clients_is_answered_and_the_server_keeps_its_frame_rate(animator, tmp_path, caplog):
    rng = np.random.default_rng(SEED)
    wav = open(write_audio(tmp_path / "s.wav", speech_like(0.4)), "rb").read()
    uploads = bad_uploads(rng, wav)
    messages = bad_messages(rng)
    audio = speech_like(2.0, seed=8)
    expected = num_frames(len(audio), animator.cfg.audio)

    async def scenario(client, service):
        answers = {}
        for name, path, kw in uploads:
            r = await asyncio.wait_for(client.post(path, **kw), STEP_S)
            answers[name] = await expect_json_error(r)
        for name, path in (("GET a POST route", "/api/face"), ("unknown route", "/api/nothing"), ("ws without upgrade", "/ws?face=x"),
                           ("ws, unknown face", "/ws?face=" + "f" * 5000), ("ws, bad escape", "/ws?face=%ZZ%00")):
            answers[name] = await expect_json_error(await client.get(path))
        answers["POST the page"] = await expect_json_error(await client.post("/", data=b"x"))
        raw = await raw_requests(client.server.host, client.server.port, rng)

        face = (await upload_face(client))["face"]
        replies = {}
        for name, message in messages:
            async with client.ws_connect(f"/ws?face={face}", max_msg_size=0) as ws:
                assert (await asyncio.wait_for(ws.receive_json(), STEP_S))["type"] == "ready"
                await (ws.send_str(message) if isinstance(message, str) else ws.send_bytes(message))
                if isinstance(message, bytes) and len(message) % 2 == 0 and len(message) <= 2**20:
                    await ws.send_str('{"type": "end"}')  # garbage PCM is still PCM: it is animated
                got = []
                while True:
                    msg = await asyncio.wait_for(ws.receive(), STEP_S)
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        got.append(json.loads(msg.data)["type"])
                        if got[-1] in ("done", "error"):
                            break
                        if got[-1] == "warning":
                            await ws.send_str('{"type": "end"}')
                    elif msg.type != aiohttp.WSMsgType.BINARY:
                        got.append(msg.type.name)
                        break
                replies[name] = got
        # out of order: audio before reading "ready", "end" twice, audio after "end", a vanishing client
        async with client.ws_connect(f"/ws?face={face}") as ws:
            await ws.send_bytes(pcm(speech_like(0.2)))
            await ws.send_str('{"type": "end"}')
            await ws.send_str('{"type": "end"}')
            await ws.send_bytes(pcm(speech_like(0.2)))
            kinds = []
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    kinds.append(json.loads(msg.data)["type"])
            replies["out of order"] = [k for k in kinds if k != "warning"]
        for _ in range(4):
            ws = await client.ws_connect(f"/ws?face={face}")
            await ws.send_bytes(rng.integers(0, 256, 3000, np.uint8).tobytes()[:2999])
            ws._response.close()
        await asyncio.sleep(0.5)
        busy = []
        async with client.ws_connect(f"/ws?face={face}") as a, client.ws_connect(f"/ws?face={face}") as b:
            await a.receive_json(), await b.receive_json()
            try:
                await client.ws_connect(f"/ws?face={face}")
            except aiohttp.WSServerHandshakeError as e:
                busy.append(e.status)
        await asyncio.sleep(0.2)
        frames, last = await stream(client, face, audio, chunk=640, pace=1.0)
        return answers, raw, replies, busy, frames, last, service.streams, service.jobs

    with caplog.at_level(logging.WARNING):
        answers, raw, replies, busy, frames, last, streams, jobs = run(animator, scenario, LIMITS)

    assert len(answers) + len(raw) + len(replies) + 4 + 1 >= 100  # bad requests, connections and streams
    for name, (status, message) in answers.items():
        assert 400 <= status < 500 and not message.startswith("not a JSON"), (name, status, message)
    assert answers["oversized raw body"][0] == answers["multipart, oversized image"][0] == 413
    assert answers["photo without a face"] == (400, "image: no face found")
    assert all(a == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", a) for a in raw), raw
    for name, got in replies.items():
        assert got and got[-1] in ("done", "error", "CLOSE", "CLOSING", "CLOSED"), (name, got)
        assert "internal error" not in json.dumps(got)
    assert replies["message over the size limit"][-1] in ("CLOSE", "CLOSING", "CLOSED")
    assert replies["out of order"][-1] == "done"
    assert busy == [429]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no handler failed
    assert last == {"type": "done", "frames": expected, "skipped": 0}
    assert [f[0] for f in frames] == list(range(expected))  # every frame, in order
    assert np.median([f[2] for f in frames]) < 1000 / animator.cfg.audio.fps  # each made in less than a frame's time
    assert streams == 0 and jobs == 0
