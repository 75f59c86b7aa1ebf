import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from talkface.accel import GraphBackend, SplitDecoder, SubpixelDeconv, TorchBackend, border_cases, constant_map_response, make_backend, runtime_available
from talkface.config import paper, tiny
from talkface.errors import TalkfaceError
from talkface.media.audio import num_frames
from talkface.models import Generator, GeneratorState
from talkface.pipeline import Animator
from talkface.pixels import to_uint8

from conftest import speech_like, write_audio

needs_onnx = pytest.mark.skipif(not runtime_available("onnx"), reason="onnx / onnxruntime not installed")
needs_openvino = pytest.mark.skipif(not runtime_available("openvino"), reason="openvino not installed")
GRAPH_BACKENDS = [pytest.param("onnx", marks=needs_onnx), pytest.param("openvino", marks=needs_openvino)]


def test_subpixel_deconv_equals_transposed_conv():
    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose2d(8, 5, 4, 2, 1)
    x = torch.randn(3, 8, 5, 4)
    torch.testing.assert_close(SubpixelDeconv(deconv)(x), deconv(x), atol=1e-5, rtol=1e-5)


def test_constant_map_conv_takes_nine_values():
    """A 3x3 conv of a spatially constant map: 9 border-case values, expanded, equal the conv itself."""
    torch.manual_seed(0)
    weight = torch.randn(6, 4, 3, 3)
    z = torch.randn(2, 4)
    for h, w in [(2, 2), (3, 5), (8, 6)]:
        full = F.conv2d(z[:, :, None, None].expand(2, 4, h, w), weight, padding=1)
        cases = (z @ constant_map_response(weight)).view(2, 6, 3, 3)
        torch.testing.assert_close(cases.index_select(2, border_cases(h)).index_select(3, border_cases(w)), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(AssertionError):
        border_cases(1)


@pytest.mark.parametrize("preset,latent", [(tiny, None), (paper, None), (tiny, 0)])
def test_split_decoder_equals_decoder(preset, latent):
    cfg = preset()
    if latent is not None:
        cfg.model.latent_per_stage = latent
    torch.manual_seed(0)
    g = Generator(cfg).eval()
    m = cfg.model
    with torch.no_grad():
        for p in g.parameters():  # random, not initial, weights: biases and norms matter too
            p.add_(torch.randn_like(p) * 0.05)
    still = torch.rand(1, 3, m.height, m.width) * 2 - 1
    mfcc, z = torch.randn(1, 5, 13, 35) * 0.3, torch.randn(1, 5, m.noise.dim)
    with torch.inference_mode():
        identity = g.encode_identity(still)
        ref, _ = g.decode(identity, mfcc, z)
        audio, _ = g.audio_encoder(mfcc)
        noise, _ = g.noise(z)
        split = SplitDecoder(g.decoder, m.audio.dim, m.identity.dim, m.residual)
        face = split.face(identity.still, identity.code, identity.skips)
        out = split(torch.cat([audio, noise], -1)[0], *face.tensors())
    torch.testing.assert_close(out, ref[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("runtime", GRAPH_BACKENDS)
def test_graph_backend_matches_torch_with_state_carried(tiny_weights, runtime):
    anim = Animator(tiny_weights, device="cpu", backend="torch")
    g, cfg = anim.generator, anim.cfg
    fast, ref = GraphBackend(g, cfg, runtime, chunk=4), TorchBackend(g)
    assert fast.name == runtime
    still = torch.rand(1, 3, cfg.model.height, cfg.model.width) * 2 - 1
    mfcc = torch.randn(1, 15, 13, 35) * 0.3
    z = g.noise.sample(1, 15, generator=torch.Generator().manual_seed(0))
    outs = []
    for backend in (ref, fast):
        face, state, frames = backend.encode(still), GeneratorState(), []
        for lo, hi in [(0, 1), (1, 5), (5, 6), (6, 8), (8, 15)]:  # one frame, one chunk, one, a short batch, a chunk + the rest; state carried
            f, state = backend.decode(face, mfcc[:, lo:hi], z[:, lo:hi], state)
            frames.append(f)
        outs.append(to_uint8(torch.cat(frames)).astype(int))
    assert outs[0].shape == (15, cfg.model.height, cfg.model.width, 3)
    assert np.abs(outs[0] - outs[1]).max() <= 1  # float rounding only: at most one level of 255


@pytest.mark.parametrize("runtime", GRAPH_BACKENDS)
def test_graph_backend_serves_threads_at_once(tiny_weights, runtime):
    """The server decodes several streams on worker threads with one backend: results must not mix."""
    from concurrent.futures import ThreadPoolExecutor

    anim = Animator(tiny_weights, device="cpu", backend="torch")
    g, cfg = anim.generator, anim.cfg
    fast = GraphBackend(g, cfg, runtime, chunk=4, streams=2)
    gen = torch.Generator().manual_seed(1)
    jobs = [(torch.rand(1, 3, cfg.model.height, cfg.model.width, generator=gen) * 2 - 1, torch.randn(1, 9, 13, 35, generator=gen) * 0.3) for _ in range(4)]
    z = g.noise.sample(1, 9, generator=gen)

    def run(job):
        face, state, frames = fast.encode(job[0]), GeneratorState(), []
        for t in range(9):  # one frame at a time, as a live stream does
            f, state = fast.decode(face, job[1][:, t : t + 1], z[:, t : t + 1], state)
            frames.append(f)
        return torch.cat(frames)

    alone = [run(job) for job in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, jobs * 3))
    for i, frames in enumerate(together):
        torch.testing.assert_close(frames, alone[i % 4], atol=1e-5, rtol=0)


@pytest.mark.parametrize("runtime", GRAPH_BACKENDS)
def test_int8_backend_stays_close_to_torch(tiny_weights, runtime):
    """int8 changes the arithmetic: frames differ by a few levels of 255 on average, never wildly."""
    anim = Animator(tiny_weights, device="cpu", backend="torch")
    g, cfg = anim.generator, anim.cfg
    fast, ref = make_backend(g, cfg, f"{runtime}-int8"), TorchBackend(g)
    assert fast.name == f"{runtime}-int8"
    from talkface.data.synthetic import make_clip
    from talkface.media.audio import mfcc_windows
    from talkface.pixels import to_tensor

    clip = make_clip(11, 30, (cfg.model.height, cfg.model.width), cfg.audio)  # not one of the calibration clips
    still = to_tensor(clip.frames[0])[None]
    mfcc = torch.from_numpy(mfcc_windows(clip.audio, cfg.audio))[None]
    z = g.noise.sample(1, mfcc.shape[1], generator=torch.Generator().manual_seed(0))
    outs = [to_uint8(b.decode(b.encode(still), mfcc, z, GeneratorState())[0]).astype(int) for b in (ref, fast)]
    diff = np.abs(outs[0] - outs[1])
    assert 0 < diff.mean() < 3 and np.percentile(diff, 99) <= 16


def test_unknown_backend_is_a_clear_error(tiny_weights):
    with pytest.raises(TalkfaceError, match="unknown backend 'gpu'"):
        Animator(tiny_weights, backend="gpu")


@pytest.mark.parametrize("backend", ["torch", *GRAPH_BACKENDS])
def test_streamed_photo_frames_equal_offline_generate(tiny_weights, face_image, tmp_path, backend):
    """Audio pushed in odd-sized chunks gives the frames `generate` makes from the whole file."""
    audio = speech_like(1.3, seed=3)
    wav = write_audio(tmp_path / "s.wav", audio)
    anim = Animator(tiny_weights, device="cpu", backend=backend)
    offline = list(anim.generate(face_image, wav, seed=7))
    live = anim.live(anim.prepare(face_image), seed=7)
    streamed, sizes, pos = [], [1, 7, 160, 333, 640, 999, 4000, 17], 0
    samples = (np.round(np.clip(audio, -1, 1) * 32767) / 32767).astype(np.float32)  # as the wav stores them
    i = 0
    while pos < len(samples):
        n = sizes[i % len(sizes)]
        got = live.push(samples[pos : pos + n])
        streamed += got
        pos, i = pos + n, i + 1
    streamed += live.flush()
    assert len(streamed) == len(offline) == num_frames(len(audio), anim.cfg.audio) > 30
    assert streamed[0].shape == face_image.shape[:2] + (3,)  # full resolution (360x288 is even)
    diff = np.abs(np.stack(streamed).astype(int) - np.stack(offline).astype(int))
    # same seed, same networks: only float rounding of different batch sizes may differ
    assert diff.max() <= 2 and diff.mean() < 0.01


def test_stream_buffers_stay_bounded(tiny_weights):
    anim = Animator(tiny_weights, device="cpu", backend="torch")
    still = np.full((anim.cfg.model.height, anim.cfg.model.width, 3), 128, np.uint8)
    stream = anim.stream(still)
    rng = np.random.default_rng(0)
    sizes = []
    produced = 0
    for i in range(240):  # 240 pushes of 10-50 ms
        produced += len(stream.push((rng.standard_normal(int(rng.integers(160, 800))) * 0.1).astype(np.float32)))
        f = stream.features
        sizes.append((len(f.buffer), len(f.mfcc)))
    buffers, columns = np.array(sizes).T
    span = anim.cfg.audio.steps + 8
    assert produced > 90 and produced == stream.frames_out
    assert buffers.max() < 1200 + anim.cfg.audio.win_length and columns.max() <= span
    assert buffers[120:].max() <= buffers[:120].max() + 800 and columns[120:].max() <= columns[:120].max()


def test_stream_batch_equals_separate_streams(tiny_weights):
    """Three faces batched in one generator call per step: each gets the frames its own stream would."""
    from talkface.streaming import FaceStream, StreamBatch

    anim = Animator(tiny_weights, device="cpu", backend="torch")
    g, cfg = anim.generator, anim.cfg
    rng = np.random.default_rng(0)
    stills = [rng.integers(0, 256, (cfg.model.height, cfg.model.width, 3), dtype=np.uint8) for _ in range(3)]
    audios = [speech_like(s, seed=i) for i, s in enumerate([1.0, 0.6, 1.3])]  # different lengths: streams drop out
    seeds = [5, 6, 7]
    batch = StreamBatch(g, cfg, stills[:2], seeds[:2])
    got: dict[int, list[np.ndarray]] = {0: [], 1: []}
    for pos in range(0, 16000 * 2, 900):  # 56 ms pushes; a stream whose audio has ended gets None
        if pos == 2700:  # the third stream joins late
            assert batch.add(stills[2], seeds[2]) == 2
            got[2], start = [], pos
        chunks = {k: audios[k][pos - (start if k == 2 else 0) :][:900] for k in got}
        chunks = {k: (c if len(c) else None) for k, c in chunks.items()}
        for k, frames in batch.push(chunks).items():
            got[k] += frames
    for k, frames in batch.flush().items():
        got[k] += frames
    for k in range(3):
        alone = FaceStream(g, cfg, stills[k], seed=seeds[k])
        expected = alone.push(audios[k]) + alone.flush()
        assert len(got[k]) == len(expected) == num_frames(len(audios[k]), cfg.audio)
        diff = np.abs(np.stack(got[k]).astype(int) - np.stack(expected).astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.01
    batch.remove(1)
    assert len(batch) == 2


def test_stream_batch_serves_threads_together(tiny_weights):
    """Streams pushed from several threads at once are generated in shared batches, each as if alone."""
    from concurrent.futures import ThreadPoolExecutor

    from talkface.streaming import FaceStream, StreamBatch

    anim = Animator(tiny_weights, device="cpu", backend="torch")
    g, cfg = anim.generator, anim.cfg
    rng = np.random.default_rng(1)
    stills = [rng.integers(0, 256, (cfg.model.height, cfg.model.width, 3), dtype=np.uint8) for _ in range(4)]
    audios = [speech_like(0.8, seed=10 + i) for i in range(4)]
    batch = StreamBatch(g, cfg)
    calls = []
    decode = g.decode
    g.decode = lambda identity, *a, **k: calls.append(identity.code.shape[0]) or decode(identity, *a, **k)

    def run(i):
        stream = batch.stream(stills[i], seed=i)
        frames = []
        for pos in range(0, len(audios[i]), 640):
            frames += stream.push(audios[i][pos : pos + 640])
        frames += stream.flush()
        stream.close()
        return frames

    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(run, range(4)))
    finally:
        g.decode = decode
    for i in range(4):
        alone = FaceStream(g, cfg, stills[i], seed=i)
        expected = alone.push(audios[i]) + alone.flush()
        assert len(got[i]) == len(expected)
        assert np.abs(np.stack(got[i]).astype(int) - np.stack(expected).astype(int)).max() <= 2
    assert len(batch) == 0 and max(calls) > 1  # some steps really served several streams


def test_auto_backend_is_the_plain_generator(tiny_weights):
    assert Animator(tiny_weights, device="cpu").backend.name == "torch"


@pytest.mark.parametrize("runtime", GRAPH_BACKENDS)
def test_backend_built_once_when_threads_ask_at_once(tiny_weights, runtime):
    from concurrent.futures import ThreadPoolExecutor

    anim = Animator(tiny_weights, device="cpu", backend=runtime)
    with ThreadPoolExecutor(3) as pool:
        backends = list(pool.map(lambda _: anim.backend, range(3)))
    assert backends[0].name == runtime and all(b is backends[0] for b in backends)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the thread's signal stack through Linux's libc")
def test_building_the_openvino_backend_leaves_the_callers_signal_stack_alone(tiny_weights):
    """OpenVINO's CPU plugin installs an alternate signal stack on the thread that compiles and leaves
    it there; built on the main thread, a later signal handled on that stack killed the process."""
    pytest.importorskip("openvino")
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    def current() -> tuple:
        s = Stack()
        assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(s)) == 0
        return s.sp, s.flags, s.size

    before = current()
    assert Animator(tiny_weights, device="cpu", backend="openvino").backend.name == "openvino"
    assert current() == before
