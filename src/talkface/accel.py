"""Faster inference of the same generator: exact rewrites of the decoder, run by ONNX Runtime on CPU.

Two rewrites change the arithmetic, not the function (outputs agree to float rounding):
- per-face constants: in the decoder, every conv after a U-Net skip sees `cat(upsampled, skip)`;
  the skip half of that conv, and the identity code's share of the first layer, depend only on
  the face, so they are computed once per face and added (about a quarter of the decoder's work);
- stride-2 transposed convs become one 2x2 conv with 4x the channels and a pixel interleave
  (sub-pixel form), which ONNX Runtime runs with its fast conv kernels.

Backends share one interface: `encode(still)` once per face, then `decode(face, mfcc, z, state)`
for any number of frames, state carried. `TorchBackend` is the plain model (the reference);
`OnnxBackend` exports the window CNN and the rewritten decoder to ONNX in memory at load time
(the GRUs stay in torch: they are small and carry the state); `int8=True` adds static int8
quantisation of their convs and matrix products, calibrated on synthetic faces and speech.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkface.config import Config
from talkface.models import Generator, GeneratorState
from talkface.models.frame_decoder import FrameDecoder

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


@dataclass
class Face:
    """Per-face constants: the identity code's share of the first decoder layer and each skip conv's share."""

    first: torch.Tensor  # (1, C, h, w)
    skips: list[torch.Tensor]  # coarsest first, (1, C_i, H_i, W_i)
    latents: list[torch.Tensor]  # per stage, (1, k): the identity code's share of the stage's latent projection
    base: torch.Tensor  # (1, 3, H, W): the still in tanh's (atanh) space, or zeros (non-residual decoder)


class SubpixelDeconv(nn.Module):
    """ConvTranspose2d(kernel 4, stride 2, padding 1) as one 2x2 conv giving the 4 output phases.

    Output pixel (2m + a, 2n + b) sees input rows {m - 1, m} (a = 0, kernel rows 3, 1) or {m, m + 1}
    (a = 1, kernel rows 2, 0), and likewise for columns; each phase is a 2x2 conv of the padded input
    at offset (a, b).
    """

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        assert deconv.kernel_size == (4, 4) and deconv.stride == (2, 2) and deconv.padding == (1, 1)
        taps = {0: [3, 1], 1: [2, 0]}
        w = deconv.weight.detach()  # (cin, cout, 4, 4)
        phases = [w[:, :, taps[a]][:, :, :, taps[b]].transpose(0, 1) for a in (0, 1) for b in (0, 1)]
        self.register_buffer("weight", torch.cat(phases, 0).contiguous())  # (4 cout, cin, 2, 2)
        self.register_buffer("bias", deconv.bias.detach().repeat(4))
        self.cout = deconv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, cin, H, W) -> (N, cout, 2H, 2W)"""
        n, _, h, w = x.shape
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias)  # (N, 4 cout, H + 1, W + 1)
        c = self.cout
        phases = [y[:, (2 * a + b) * c : (2 * a + b + 1) * c, a : a + h, b : b + w] for a in (0, 1) for b in (0, 1)]
        y = torch.stack(phases, 2).view(n, c, 2, 2, h, w)
        return y.permute(0, 1, 4, 2, 5, 3).reshape(n, c, 2 * h, 2 * w)


def fast_upsampler(deconv: nn.ConvTranspose2d) -> nn.Module:
    if deconv.kernel_size == (4, 4) and deconv.stride == (2, 2) and deconv.padding == (1, 1):
        return SubpixelDeconv(deconv)
    return deconv


class SplitDecoder(nn.Module):
    """The frame decoder with its per-face parts taken out as inputs (see `Face`)."""

    def __init__(self, decoder: FrameDecoder, audio_dim: int, code_dim: int, residual: bool):
        super().__init__()
        self.residual = residual
        t1 = decoder.t1[0]
        w = t1.weight.detach()  # (latent, C, h, w): latent = audio, code, noise
        self.shape = tuple(w.shape[1:])
        flat = w.flatten(1)
        self.register_buffer("first_weight", torch.cat([flat[:audio_dim], flat[audio_dim + code_dim :]]).contiguous())
        self.register_buffer("code_weight", flat[audio_dim : audio_dim + code_dim].contiguous())
        self.register_buffer("first_bias", t1.bias.detach())
        self.first_post = nn.Sequential(*list(decoder.t1)[1:])
        self.ups = nn.ModuleList(nn.Sequential(fast_upsampler(s["up"][0]), *list(s["up"])[1:]) for s in decoder.stages)
        self.convs, self.skip_convs, self.posts = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.k = decoder.latent_per_stage
        self.latent_weights, self.code_latent_weights = [], []
        for i, s in enumerate(decoder.stages):
            # the conv sees cat(upsampled, skip, latent projection broadcast over the map)
            conv = s["conv"][0]
            c = conv.out_channels
            w = conv.weight.detach()
            up = nn.Conv2d(c + self.k, c, conv.kernel_size, conv.stride, conv.padding, bias=False)
            skip = nn.Conv2d(c, c, conv.kernel_size, conv.stride, conv.padding)
            up.weight.data.copy_(torch.cat([w[:, :c], w[:, 2 * c :]], 1))
            skip.weight.data.copy_(w[:, c : 2 * c])
            skip.bias.data.copy_(conv.bias.detach())
            self.convs.append(up)
            self.skip_convs.append(skip)
            self.posts.append(nn.Sequential(*list(s["conv"])[1:]))
            if self.k:
                lw = s["latent"].weight.detach()  # (k, latent)
                self.register_buffer(f"latent_weight{i}", torch.cat([lw[:, :audio_dim], lw[:, audio_dim + code_dim :]], 1).t().contiguous())
                self.register_buffer(f"code_latent_weight{i}", lw[:, audio_dim : audio_dim + code_dim].t().contiguous())
                self.register_buffer(f"latent_bias{i}", s["latent"].bias.detach())
        self.last = fast_upsampler(decoder.t6)

    @torch.no_grad()
    def face(self, still: torch.Tensor, code: torch.Tensor, skips: list[torch.Tensor]) -> Face:
        """still: (1, 3, H, W), code: (1, code_dim), skips: 4 maps finest first -> the per-face constants"""
        first = (code @ self.code_weight).view(1, *self.shape) + self.first_bias.view(1, -1, 1, 1)
        # as FrameDecoder does with `base`
        base = torch.atanh(still.clamp(-0.995, 0.995)) if self.residual else torch.zeros_like(still)
        latents = [code @ getattr(self, f"code_latent_weight{i}") + getattr(self, f"latent_bias{i}") for i in range(len(self.convs))] if self.k else []
        return Face(first=first, skips=[conv(s) for conv, s in zip(self.skip_convs, reversed(skips))], latents=latents, base=base)

    def forward(self, audio_noise: torch.Tensor, first: torch.Tensor, base: torch.Tensor, *face: torch.Tensor) -> torch.Tensor:
        """audio_noise: (N, audio + noise), then from `face`: first, base, the skips, the stage latents -> (N, 3, H, W)"""
        stages = len(self.convs)
        skips, latents = face[:stages], face[stages:]
        x = self.first_post((audio_noise @ self.first_weight).view(-1, *self.shape) + first)
        for i, (up, conv, post, skip) in enumerate(zip(self.ups, self.convs, self.posts, skips)):
            u = up(x)
            if self.k:
                z = audio_noise @ getattr(self, f"latent_weight{i}") + latents[i]  # (N, k)
                u = torch.cat([u, z[:, :, None, None].expand(-1, -1, u.shape[2], u.shape[3])], 1)
            x = post(conv(u) + skip)
        return torch.tanh(self.last(x) + base)


class TorchBackend:
    """The plain generator (any device): the reference every other backend is compared with."""

    name = "torch"

    def __init__(self, generator: Generator):
        self.generator = generator
        self.device = next(generator.parameters()).device

    @torch.inference_mode()
    def encode(self, still: torch.Tensor):
        """still: (1, 3, H, W) in [-1, 1] -> the generator's Identity"""
        return self.generator.encode_identity(still.to(self.device))

    @torch.inference_mode()
    def decode(self, face, mfcc: torch.Tensor, z: torch.Tensor, state: GeneratorState) -> tuple[torch.Tensor, GeneratorState]:
        """mfcc: (1, T, n_mfcc, steps), z: (1, T, noise) -> frames (T, 3, H, W) on the CPU, new state"""
        frames, state = self.generator.decode(face, mfcc.to(self.device), z.to(self.device), state)
        return frames[0].cpu(), state


def _export(module: nn.Module, args: tuple, names: list[str], dynamic: dict) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, input_names=names, output_names=["out"], dynamic_axes=dynamic, opset_version=18)
    return buf.getvalue()


def _session(model: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The cores are shared with audio decoding, JPEG encoding and the web server: no busy-waiting.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _quantize(model: bytes, feeds: list[dict[str, np.ndarray]]) -> bytes:
    """Static int8 (QDQ, per-channel weights) of convs and matrix products, calibrated on `feeds`."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import logging

            level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs advice through the root logger
            try:
                quantize_static(
                    src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                )
            finally:
                logging.getLogger().setLevel(level)
        with open(dst, "rb") as f:
            return f.read()


class OnnxBackend:
    """Window CNN and split decoder in ONNX Runtime (CPU), GRUs in torch; optionally int8."""

    def __init__(self, generator: Generator, cfg: Config, int8: bool = False, threads: int | None = None):
        self.generator = generator.cpu().eval()
        self.cfg = cfg
        self.name = "onnx-int8" if int8 else "onnx"
        m, a = cfg.model, cfg.audio
        self.split = SplitDecoder(generator.decoder, m.audio.dim, m.identity.dim, m.residual).eval()
        stages = len(self.split.convs)
        self.face_names = ["first", "base"] + [f"skip{i}" for i in range(stages)] + ([f"latent{i}" for i in range(stages)] if self.split.k else [])
        threads = threads or torch.get_num_threads()
        with torch.inference_mode():
            example_face = self.encode(torch.zeros(1, 3, m.height, m.width))
        window = _export(generator.audio_encoder.window, (torch.zeros(2, a.n_mfcc, a.steps),), ["mfcc"], {"mfcc": {0: "n"}})
        decoder = _export(
            self.split,
            (torch.zeros(2, m.audio.dim + m.noise.dim), example_face.first, example_face.base, *example_face.skips, *example_face.latents),
            ["audio_noise", *self.face_names],
            {"audio_noise": {0: "n"}},
        )
        self.window, self.decoder = _session(window, threads), _session(decoder, threads)
        if int8:  # calibrated with the float32 sessions
            window_feeds, decoder_feeds = self._calibration()
            self.window = _session(_quantize(window, window_feeds), threads)
            self.decoder = _session(_quantize(decoder, decoder_feeds), threads)

    @torch.inference_mode()
    def _calibration(self) -> tuple[list[dict], list[dict]]:
        """Inputs seen on synthetic faces speaking synthetic speech (the real activation ranges)."""
        from talkface.data.synthetic import make_clip

        m = self.cfg.model
        window_feeds, decoder_feeds = [], []
        for seed in range(3):
            clip = make_clip(seed, 24, (m.height, m.width), self.cfg.audio)
            from talkface.media.audio import mfcc_windows
            from talkface.pixels import to_tensor

            mfcc = torch.from_numpy(mfcc_windows(clip.audio, self.cfg.audio))[None]
            face = self.encode(to_tensor(clip.frames[0])[None])
            z = self.generator.noise.sample(1, mfcc.shape[1], generator=torch.Generator().manual_seed(seed))
            window_feeds.append({"mfcc": mfcc[0].numpy()})
            audio_noise, _ = self._codes(mfcc, z, GeneratorState())
            decoder_feeds.append({"audio_noise": audio_noise, **self._face_feeds(face)})
        return window_feeds, decoder_feeds

    @torch.inference_mode()
    def encode(self, still: torch.Tensor) -> Face:
        """still: (1, 3, H, W) in [-1, 1] -> per-face constants"""
        identity = self.generator.encode_identity(still.cpu().float())  # masks the still's mouth
        return self.split.face(identity.still, identity.code, identity.skips)

    def _face_feeds(self, face: Face) -> dict[str, np.ndarray]:
        return dict(zip(self.face_names, (t.numpy() for t in [face.first, face.base, *face.skips, *face.latents])))

    @torch.inference_mode()
    def _codes(self, mfcc: torch.Tensor, z: torch.Tensor, state: GeneratorState) -> tuple[np.ndarray, GeneratorState]:
        g = self.generator
        per_window = self.window.run(None, {"mfcc": mfcc[0].numpy()})[0]
        audio, audio_h = g.audio_encoder.gru(torch.from_numpy(per_window)[None], state.audio)
        noise, noise_h = g.noise(z, state.noise)
        return torch.cat([audio[0], noise[0]], -1).numpy(), GeneratorState(audio_h, noise_h)

    @torch.inference_mode()
    def decode(self, face: Face, mfcc: torch.Tensor, z: torch.Tensor, state: GeneratorState) -> tuple[torch.Tensor, GeneratorState]:
        """mfcc: (1, T, n_mfcc, steps), z: (1, T, noise) -> frames (T, 3, H, W), new state"""
        assert mfcc.shape[0] == 1 and z.shape[:2] == mfcc.shape[:2]
        audio_noise, state = self._codes(mfcc.cpu().float(), z.cpu().float(), state)
        frames = self.decoder.run(None, {"audio_noise": audio_noise, **self._face_feeds(face)})[0]
        return torch.from_numpy(frames), state


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_backend(generator: Generator, cfg: Config, name: str = "auto"):
    """`auto` is the plain generator: on the shared 2-core machine where this was measured
    (benchmarks/streaming.py), ONNX Runtime used less CPU per frame but was not faster in wall time."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    on_cpu = next(generator.parameters()).device.type == "cpu"
    if name == "auto":
        name = "torch"
    if name == "torch":
        return TorchBackend(generator)
    if not on_cpu:
        raise ValueError(f"backend {name!r} runs on the CPU; use backend 'torch' on {next(generator.parameters()).device}")
    return OnnxBackend(generator, cfg, int8=name == "onnx-int8")
