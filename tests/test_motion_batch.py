"""Live streams of the motion model made together: shared model calls, each stream's own frames."""
import asyncio
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from talkface.config import preset
from talkface.errors import TalkfaceError
from talkface.media.face import MOTION_POINTS
from talkface.models.motion import MotionModel
from talkface.pipeline import Animator
from talkface.render.parallel import LiveRenderers
from talkface.render.refine import run_refiner
from talkface.streaming import MotionBatch, MotionStream, PhotoStream, PreparedPhoto, decode_motion
from talkface.threads import Batcher

from conftest import speech_like
from test_refine import opening_motion


@pytest.fixture(scope="module")
def model_and_cfg():
    """A tiny motion model with a refiner, both changing what they see (untrained: plumbing, not quality)."""
    cfg = preset("motion-tiny")
    cfg.motion.refiner.enabled = True
    torch.manual_seed(0)
    model = MotionModel(cfg)
    with torch.no_grad():
        model.head[-1].weight.mul_(4.0)
        model.refiner.decoder.t6.weight.normal_(0, 0.05)
    return model.eval(), cfg


@pytest.fixture(scope="module")
def photo(face_image, model_and_cfg):
    return PreparedPhoto(face_image, (model_and_cfg[1].model.height, model_and_cfg[1].model.width))


def alone(model, cfg, photo, audio, seed, chunk=640):
    live = PhotoStream(model, cfg, photo, seed=seed)
    frames = []
    for i in range(0, len(audio), chunk):
        frames += live.push(audio[i : i + chunk])
    return frames + live.flush()


def test_batcher_gathers_overlapping_calls_and_hands_errors_to_each_caller():
    sizes = []

    def slow_double(items):
        sizes.append(len(items))
        time.sleep(0.05)  # long enough for the other threads to queue behind the first call
        if "bad" in items:
            raise ValueError("bad item")
        return [2 * x for x in items]

    batcher = Batcher(slow_double)
    out, errors = {}, {}

    def call(x):
        try:
            out[x] = batcher(x)
        except ValueError as e:
            errors[x] = str(e)

    threads = [threading.Thread(target=call, args=(x,)) for x in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {x: 2 * x for x in range(5)} and max(sizes) > 1 and sum(sizes) == 5
    threads = [threading.Thread(target=call, args=(x,)) for x in ("bad", 7)]
    for t in threads:
        t.start()
        time.sleep(0.01)  # 7 queues while "bad" runs alone
    for t in threads:
        t.join()
    assert errors == {"bad": "bad item"} and out[7] == 14


def test_one_model_call_equals_each_stream_alone(model_and_cfg, photo):
    model, cfg = model_and_cfg
    audios = [speech_like(0.6, seed=s) for s in range(3)]
    batched = [MotionStream(model, cfg, seed=s) for s in range(3)]
    separate = [MotionStream(model, cfg, seed=s) for s in range(3)]
    calls = []
    decode = model.decode
    model.decode = lambda mfcc, *a: calls.append(mfcc.shape[0]) or decode(mfcc, *a)
    try:
        for i in range(0, len(audios[0]), 640):  # streams of different lengths take part where they have windows
            work = [(s, s.features.push(a[i : i + 640 * (1 + k)])) for k, (s, a) in enumerate(zip(batched, audios))]
            for (s, windows), out in zip(work, decode_motion(model, work)):
                expected = list(separate[batched.index(s)]._decode(windows))
                assert len(out) == len(expected) == len(windows)
                for (m, w), (m1, w1) in zip(out, expected):
                    assert np.abs(m - m1).max() < 1e-5 and np.array_equal(w, w1)
    finally:
        model.decode = decode
    assert max(calls) == 3

    rig = photo.rig(cfg.motion.gain, model.refiner)
    crops = [rig.warp(opening_motion(0.1 * k), windows[0]).prepared for k in (1, 2, 3)]
    assert all(c is not None for c in crops)  # opened wider than the photo's mouth: the refiner redraws it
    together = run_refiner(model.refiner, crops)
    for c, y in zip(crops, together):
        assert np.allclose(y, run_refiner(model.refiner, [c])[0], atol=1e-5)


def test_batched_streams_equal_each_stream_alone(model_and_cfg, photo):
    """Three streams (two of one face, all with their own seed) pushed from three threads at once through
    one MotionBatch: every frame equals the stream's alone, to float rounding, and calls were shared."""
    model, cfg = model_and_cfg
    audios = [speech_like(1.0, seed=10 + s) for s in range(3)]
    photos = [photo, photo, PreparedPhoto(cv2.flip(photo.picture, 1), (cfg.model.height, cfg.model.width))]
    sizes = []
    refiner = model.refiner

    class SlowRefiner:  # long enough that the other streams' crops queue behind each call
        cfg = refiner.cfg

        def __call__(self, *inputs):
            sizes.append(len(inputs[0]))
            time.sleep(0.03)
            return refiner(*inputs)

    batch = MotionBatch(model, SlowRefiner())
    streams = [batch.stream(cfg, p, seed=s) for s, p in enumerate(photos)]
    out = [[] for _ in streams]
    step = threading.Barrier(len(streams))

    def drive(k):
        for i in range(0, len(audios[k]), 640):
            step.wait()
            out[k] += streams[k].push(audios[k][i : i + 640])
        out[k] += streams[k].flush()

    threads = [threading.Thread(target=drive, args=(k,)) for k in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    worst = 0
    for k, (p, audio) in enumerate(zip(photos, audios)):
        expected = alone(model, cfg, p, audio, seed=k)
        assert len(out[k]) == len(expected) == 25
        worst = max(worst, max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(out[k], expected)))
    assert worst <= 2
    assert sum(sizes) > 0 and max(sizes) > 1
    assert not np.array_equal(np.stack(out[0]), np.stack(out[1]))  # one face, two seeds: other blinks and head motion


def _pushed(renderers, batch, cfg, photos, audio):
    """Each photo a live stream of `batch` (its own seed), its frames rendered by `renderers` a push at a time."""
    out = []
    for seed, p in enumerate(photos):
        stream, key = batch.stream(cfg, p, seed=seed), renderers.open(p.picture, p.face, cfg.motion.gain)
        frames = []
        for i in range(0, len(audio) + 640, 640):
            done = stream.crops.push(audio[i : i + 640]) if i < len(audio) else stream.crops.flush()
            frames += renderers.render(key, [job[1:] for job in stream.jobs(done)], stream.refine)
        renderers.close(key)
        out.append(frames)
    return out


def test_live_streams_rendered_in_worker_processes_equal_those_rendered_here(model_and_cfg, photo):
    model, cfg = model_and_cfg
    audio = speech_like(1.0, seed=12)
    photos = [photo, PreparedPhoto(cv2.flip(photo.picture, 1), (cfg.model.height, cfg.model.width))]
    made = {}
    for workers in (2, 0):
        renderers = LiveRenderers(model.refiner, lambda frame: frame.tobytes(), workers=workers)
        try:
            assert len(renderers.lanes) == workers
            made[workers] = _pushed(renderers, MotionBatch(model), cfg, photos, audio)
        finally:
            renderers.shutdown()
    assert made[2] == made[0]  # byte for byte
    for seed, (p, frames) in enumerate(zip(photos, made[2])):
        expected = alone(model, cfg, p, audio, seed=seed)
        assert len(frames) == len(expected) == 25
        got = [np.frombuffer(f, np.uint8).reshape(p.picture.shape) for f in frames]
        assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(got, expected)) <= 2


def test_live_workers_end_of_themselves_when_the_server_lets_go(model_and_cfg):
    model, _ = model_and_cfg
    renderers = LiveRenderers(model.refiner, lambda frame: frame.tobytes(), workers=3)
    processes = [lane.process for lane in renderers.lanes]
    for lane in renderers.lanes:
        lane.conn.close()
    for process in processes:  # each sees its own pipe's end: no worker holds another's open
        process.join(timeout=20)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    renderers.shutdown()


def test_a_live_worker_that_dies_is_a_clear_error(model_and_cfg, photo):
    model, cfg = model_and_cfg
    renderers = LiveRenderers(model.refiner, lambda frame: frame.tobytes(), workers=1)
    try:
        key = renderers.open(photo.picture, photo.face, cfg.motion.gain)
        renderers.rigs[key + 1] = renderers.lanes[0]
        with pytest.raises(RuntimeError, match="KeyError"):  # a stream the worker never rigged: its error, here
            renderers.render(key + 1, [(np.zeros((len(MOTION_POINTS), 2)), np.zeros((cfg.audio.n_mfcc, cfg.audio.steps), np.float32), None)], run_refiner)
        renderers.lanes[0].process.kill()
        renderers.lanes[0].process.join()
        with pytest.raises(TalkfaceError, match="rendering process died"):
            renderers.render(key, [(np.zeros((len(MOTION_POINTS), 2)), np.zeros((cfg.audio.n_mfcc, cfg.audio.steps), np.float32), None)], run_refiner)
        renderers.close(key)  # nothing to tell a dead worker
    finally:
        renderers.shutdown()


@pytest.fixture(scope="module")
def animator(motion_checkpoint):
    return Animator(motion_checkpoint, device="cpu")


def test_server_batches_motion_streams_and_seeds_each_stream(animator):
    import json

    import aiohttp
    from test_serve import run, upload_face

    from talkface.serve import Limits

    audio = speech_like(1.0, seed=4)

    async def frames_of(client, face, seed=None):
        query = f"/ws?face={face}" + (f"&seed={seed}" if seed is not None else "")
        frames = []
        async with client.ws_connect(query) as ws:
            ready = await ws.receive_json()
            for i in range(0, len(audio), 640):
                await ws.send_bytes((audio[i : i + 640] * 32767).round().astype("<i2").tobytes())
            await ws.send_str(json.dumps({"type": "end"}))
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames.append(cv2.imdecode(np.frombuffer(msg.data[12:], np.uint8), cv2.IMREAD_COLOR).astype(int))
                elif json.loads(msg.data)["type"] in ("done", "error"):
                    break
        return ready["seed"], frames

    async def scenario(client, service):
        info = await (await client.get("/api/info")).json()
        face = (await upload_face(client))["face"]
        bad = await client.get(f"/ws?face={face}&seed=-1")
        default = await asyncio.gather(frames_of(client, face), frames_of(client, face))
        chosen = await asyncio.gather(frames_of(client, face, 7), frames_of(client, face, 7))
        return info, (bad.status, await bad.json()), default, chosen

    info, bad, default, chosen = run(animator, scenario, Limits(max_streams=2), batch_streams=None)
    assert info["batched_streams"] is True
    assert bad[0] == 400 and "seed must be a whole number" in bad[1]["error"]
    (seed_a, a), (seed_b, b) = default
    assert seed_a != seed_b and len(a) == len(b) == 25
    assert max(np.abs(x - y).mean() for x, y in zip(a, b)) > 1  # their own blinks and head motion
    (seed_c, c), (seed_d, d) = chosen
    assert seed_c == seed_d == 7 and len(c) == len(d) == 25
    assert max(np.abs(x - y).max() for x, y in zip(c, d)) <= 2  # the same seed makes the same frames


def test_a_server_behind_skips_late_frames_and_stays_in_time(animator, monkeypatch):
    """Every frame made 0.06 s slower (1.5 times real time): a client sending at real-time pace gets its
    frames about `late_seconds` after their audio at most (late ones skipped, the indices rising to the
    last), where without skipping they would come later and later, and no other stream starts
    meanwhile; a client sending faster than real time, its frames made in half real time, gets every
    one (they are due at real-time pace)."""
    import json

    import aiohttp
    from test_serve import run, upload_face

    from talkface.media.audio import FeatureStream, num_frames
    from talkface.serve import Limits
    from talkface.serve.app import FRAME_HEADER, LiveStream

    push, cost = LiveStream.push, {}

    def slow_push(self, samples, late=None):
        frames = push(self, samples, late)
        time.sleep(cost["frame"] * len(frames))
        return frames

    monkeypatch.setattr(LiveStream, "push", slow_push)
    audio = speech_like(3.2, seed=5)
    n = num_frames(len(audio), animator.cfg.audio)

    async def frames_of(client, face, paced):
        sent, got = {}, []
        async with client.ws_connect(f"/ws?face={face}") as ws:
            await ws.receive_json()

            async def sender():
                for i in range(0, len(audio), 640):
                    await ws.send_bytes((audio[i : i + 640] * 32767).round().astype("<i2").tobytes())
                    sent[min(i + 640, len(audio))] = time.monotonic()
                    if paced:
                        await asyncio.sleep(0.04)
                await ws.send_str(json.dumps({"type": "end"}))

            task = asyncio.create_task(sender())
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    index, samples, _ = FRAME_HEADER.unpack(msg.data[:12])
                    got.append((index, time.monotonic() - sent[max(k for k in sent if k <= samples)]))
                else:
                    last = json.loads(msg.data)
                    break
            await task
        return got, last

    async def scenario(client, service):
        face = (await upload_face(client))["face"]
        cost["frame"] = 0.06
        paced = asyncio.create_task(frames_of(client, face, paced=True))
        while not any(live.skipped for live in service.live_streams) and not paced.done():
            await asyncio.sleep(0.05)
        try:  # while a stream skips frames, no other starts
            await client.ws_connect(f"/ws?face={face}")
            refused = None
        except aiohttp.WSServerHandshakeError as e:
            refused = e.status
        paced = await paced
        cost["frame"] = 0.02
        return paced, refused, await frames_of(client, face, paced=False)  # alone, it starts

    (paced, done), refused, (fast, fast_done) = run(animator, scenario, Limits(late_seconds=0.2, backlog_seconds=60), batch_streams=None)
    assert refused == 429
    indices = [i for i, _ in paced]
    assert done["type"] == "done" and done["frames"] == n and done["skipped"] > 0
    assert len(indices) + done["skipped"] == n and indices == sorted(set(indices)) and indices[-1] == n - 1
    # 0.2 s late at most when its push began, then that push's frames made (the tail, made after "end", waits on all of its own)
    spoken = [i for i in indices if FeatureStream(animator.cfg.audio).samples_needed(i) <= len(audio)]
    assert max(wait for i, wait in paced if i in spoken) < 0.7  # without skipping: the last 1.6 s late (0.06 s too long a frame, 80 frames)
    assert fast_done == {"type": "done", "frames": n, "skipped": 0} and [i for i, _ in fast] == list(range(n))
