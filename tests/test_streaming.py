import numpy as np
import pytest
import torch

from talkface.accel import OnnxBackend, SplitDecoder, SubpixelDeconv, TorchBackend, make_backend, onnx_available
from talkface.config import paper, tiny
from talkface.errors import TalkfaceError
from talkface.media.audio import num_frames
from talkface.models import Generator, GeneratorState
from talkface.pipeline import Animator
from talkface.pixels import to_uint8

from conftest import speech_like, write_audio

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="onnx / onnxruntime not installed")


def test_subpixel_deconv_equals_transposed_conv():
    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose2d(8, 5, 4, 2, 1)
    x = torch.randn(3, 8, 5, 4)
    torch.testing.assert_close(SubpixelDeconv(deconv)(x), deconv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", [tiny, paper])
def test_split_decoder_equals_decoder(preset):
    cfg = preset()
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
        out = split(torch.cat([audio, noise], -1)[0], face.first, face.base, *face.skips, *face.latents)
    torch.testing.assert_close(out, ref[0], atol=1e-4, rtol=1e-4)


@needs_onnx
def test_onnx_backend_matches_torch_with_state_carried(tiny_weights):
    anim = Animator(tiny_weights, device="cpu", backend="torch")
    g, cfg = anim.generator, anim.cfg
    onnx, ref = make_backend(g, cfg, "onnx"), TorchBackend(g)
    assert isinstance(onnx, OnnxBackend)
    still = torch.rand(1, 3, cfg.model.height, cfg.model.width) * 2 - 1
    mfcc = torch.randn(1, 9, 13, 35) * 0.3
    z = g.noise.sample(1, 9, generator=torch.Generator().manual_seed(0))
    outs = []
    for backend in (ref, onnx):
        face, state, frames = backend.encode(still), GeneratorState(), []
        for lo, hi in [(0, 1), (1, 5), (5, 9)]:  # chunks of different sizes, state carried
            f, state = backend.decode(face, mfcc[:, lo:hi], z[:, lo:hi], state)
            frames.append(f)
        outs.append(to_uint8(torch.cat(frames)).astype(int))
    assert outs[0].shape == (9, cfg.model.height, cfg.model.width, 3)
    assert np.abs(outs[0] - outs[1]).max() <= 1  # float rounding only: at most one level of 255


def test_unknown_backend_is_a_clear_error(tiny_weights):
    with pytest.raises(TalkfaceError, match="unknown backend 'gpu'"):
        Animator(tiny_weights, backend="gpu")


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnx", marks=needs_onnx)])
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
