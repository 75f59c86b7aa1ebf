"""Faster inference of the same generator: exact rewrites of the decoder, run by OpenVINO or ONNX Runtime.

Three rewrites change the arithmetic, not the function (outputs agree to float rounding):
- per-face constants: every decoder conv after a U-Net skip sees `cat(upsampled, skip, latent)`.
  The skip's share of that conv (and its bias), and the identity code's share of the first layer
  and of each stage's latent projection, depend only on the face: they are computed once per face;
- the broadcast latent: a conv of a map that is constant over space (the latent projection,
  broadcast) takes only 9 values, one per border case (top/middle/bottom x left/middle/right); they
  are one small matrix product per frame, expanded over the map, instead of k extra input channels
  of the conv. With the skip share gone too, each stage conv sees `cout` channels instead of `2 cout + k`;
- stride-2 transposed convs become one 2x2 conv with 4x the channels and a pixel interleave
  (sub-pixel form), which runs with the fast conv kernels (except in OpenVINO int8, whose own
  transposed convs are faster).
Together they take the decoder from about 197 to 114 MFLOP per frame (paper preset).

Backends share one interface: `encode(still)` once per face, then `decode(face, mfcc, z, state)`
for any number of frames, state carried. `TorchBackend` is the plain model (the reference).
`GraphBackend` exports the window CNN and the rewritten decoder to ONNX in memory at load time
and runs them with OpenVINO (`openvino`) or ONNX Runtime (`onnx`), in chunks of `CHUNK` frames
so that activations stay in cache; the GRUs stay in torch (small, and they carry the state).
The `-int8` variants add static int8 quantisation of the convs and matrix products (per-channel
weights, calibrated at load on synthetic faces speaking synthetic speech).

The motion model (the default) has one network worth a graph: its mouth refiner. `MotionBackend`
runs it as it is (`torch`) or exported whole to ONNX (`RefinerGraph`, float32) in OpenVINO or ONNX
Runtime; the motion network and the warp stay as they are.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkface.config import Config
from talkface.models import Generator, GeneratorState
from talkface.models.frame_decoder import FrameDecoder, inverse_tanh

BACKENDS = ("auto", "torch", "openvino", "openvino-int8", "onnx", "onnx-int8")
CHUNK = 25  # frames per decoder call in batched decoding (activations of one chunk fit in L2/L3)


@dataclass
class Face:
    """Per-face constants of the split decoder (each with a batch dimension of 1)."""

    first: torch.Tensor  # (1, C, h, w): the identity code's share of the first layer, plus its bias
    base: torch.Tensor  # (1, 3, H, W): the still in tanh's (atanh) space, or zeros (non-residual decoder)
    maps: list[torch.Tensor]  # per stage (1, C_i, H_i, W_i): the skip's share of the stage conv, plus its bias
    latents: list[torch.Tensor]  # per stage (1, 9 C_i): the identity code's share of the broadcast latent's 9 values

    def tensors(self) -> list[torch.Tensor]:
        return [self.first, self.base, *self.maps, *self.latents]


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


def border_cases(n: int) -> torch.Tensor:
    """Which of 3 border cases (first, inner, last) each of n >= 2 positions is."""
    assert n >= 2, "the broadcast-latent rewrite needs maps of at least 2 x 2"
    return torch.tensor([0] + [1] * (n - 2) + [2])


def constant_map_response(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 conv (zero padding 1) of a map equal to unit vector e_j everywhere, on a 3x3 map.

    weight: (cout, k, 3, 3) -> (k, cout * 9): row j holds the conv's 9 border-case values for e_j;
    for any map of size >= 2 x 2 that is constant z, the conv equals (z @ this) expanded by `border_cases`.
    """
    k = weight.shape[1]
    units = torch.eye(k)[:, :, None, None].expand(k, k, 3, 3)
    return F.conv2d(units, weight, padding=1).flatten(1)


class SplitDecoder(nn.Module):
    """The frame decoder with its per-face parts taken out as inputs (see `Face` and the module doc).

    forward(audio_noise, *face.tensors()) equals FrameDecoder(cat(audio, code, noise), skips, still).
    """

    def __init__(self, decoder: FrameDecoder, audio_dim: int, code_dim: int, residual: bool, subpixel: bool = True):
        super().__init__()
        self.residual = residual
        upsampler = fast_upsampler if subpixel else (lambda deconv: deconv)
        self.k = decoder.latent_per_stage  # 0: no latent projection per stage
        varying = lambda m: torch.cat([m[:audio_dim], m[audio_dim + code_dim :]])  # rows of audio and noise
        code_rows = lambda m: m[audio_dim : audio_dim + code_dim]
        t1 = decoder.t1[0]
        w = t1.weight.detach()  # (latent, C, h, w): latent = audio, code, noise; h, w the bottleneck
        self.shape = tuple(w.shape[1:])
        self.register_buffer("first_weight", varying(w.flatten(1)).contiguous())
        self.register_buffer("code_first", code_rows(w.flatten(1)).contiguous())
        self.register_buffer("first_bias", t1.bias.detach())
        self.first_post = nn.Sequential(*list(decoder.t1)[1:])
        self.ups = nn.ModuleList(nn.Sequential(upsampler(s["up"][0]), *list(s["up"])[1:]) for s in decoder.stages)
        self.convs, self.posts, self.skip_convs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        h, w_ = self.shape[1:]
        for i, s in enumerate(decoder.stages):
            h, w_ = 2 * h, 2 * w_
            conv = s["conv"][0]  # sees cat(upsampled, skip, latent projection broadcast over the map)
            c, weight = conv.out_channels, conv.weight.detach()
            up = nn.Conv2d(c, c, conv.kernel_size, conv.stride, conv.padding, bias=False)
            up.weight.data.copy_(weight[:, :c])
            skip = nn.Conv2d(c, c, conv.kernel_size, conv.stride, conv.padding)
            skip.weight.data.copy_(weight[:, c : 2 * c])
            skip.bias.data.copy_(conv.bias.detach())
            self.convs.append(up)
            self.skip_convs.append(skip)
            self.posts.append(nn.Sequential(*list(s["conv"])[1:]))
            if not self.k:
                continue
            response = constant_map_response(weight[:, 2 * c :])  # (k, 9 c)
            proj = s["latent"].weight.detach().t()  # (latent, k)
            self.register_buffer(f"latent_weight{i}", (varying(proj) @ response).contiguous())
            self.register_buffer(f"code_latent_weight{i}", (code_rows(proj) @ response).contiguous())
            self.register_buffer(f"latent_bias{i}", s["latent"].bias.detach() @ response)
            self.register_buffer(f"rows{i}", border_cases(h))
            self.register_buffer(f"cols{i}", border_cases(w_))
        self.last = upsampler(decoder.t6)

    @torch.no_grad()
    def face(self, still: torch.Tensor, code: torch.Tensor, skips: list[torch.Tensor]) -> Face:
        """still: (1, 3, H, W) (mouth masked), code: (1, code_dim), skips: 4 maps finest first -> the per-face constants"""
        first = (code @ self.code_first).view(1, *self.shape) + self.first_bias.view(1, -1, 1, 1)
        base = inverse_tanh(still) if self.residual else torch.zeros_like(still)  # as FrameDecoder does
        maps = [conv(s) for conv, s in zip(self.skip_convs, reversed(skips))]
        latents = [code @ getattr(self, f"code_latent_weight{i}") + getattr(self, f"latent_bias{i}") for i in range(len(self.convs))] if self.k else []
        return Face(first=first, base=base, maps=maps, latents=latents)

    def forward(self, audio_noise: torch.Tensor, first: torch.Tensor, base: torch.Tensor, *face: torch.Tensor) -> torch.Tensor:
        """audio_noise: (N, audio + noise), then `Face.tensors()` after first and base -> (N, 3, H, W)"""
        stages = len(self.convs)
        maps, latents = face[:stages], face[stages:]
        x = self.first_post((audio_noise @ self.first_weight).view(-1, *self.shape) + first)
        for i, (up, conv, post) in enumerate(zip(self.ups, self.convs, self.posts)):
            u = up(x)
            if not self.k:
                x = post(conv(u) + maps[i])
                continue
            cases = (audio_noise @ getattr(self, f"latent_weight{i}") + latents[i]).view(-1, u.shape[1], 3, 3)
            latent = cases.index_select(2, getattr(self, f"rows{i}")).index_select(3, getattr(self, f"cols{i}"))
            x = post(conv(u) + (latent + maps[i]))
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


def _export(module: nn.Module, args: tuple, names: list[str], batched: int = 1) -> bytes:
    """ONNX (opset 18) of `module`, the first axis of its first `batched` inputs dynamic."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, buf, dynamo=False, input_names=names, output_names=["out"],
            dynamic_axes={name: {0: "n"} for name in names[:batched]}, opset_version=18,
        )
    return buf.getvalue()


CACHED = 8  # exported graphs kept in the cache folder, the newest


def cache_folder() -> str:
    """Where exported graphs are kept between runs: $XDG_CACHE_HOME/talkface (by default ~/.cache/talkface)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "talkface")


def _weights_key(module: nn.Module) -> str:
    """A digest of a module's weights and buffers (names, shapes, values) and of the torch that exports it."""
    digest = hashlib.sha256(f"{torch.__version__} opset 18 {type(module).__name__}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _cached(name: str, make) -> bytes:
    """The bytes of `cache_folder()/name`, or `make()`'s, then kept there (the oldest beyond `CACHED` removed).
    Exporting the refiner took a quarter of a second of every run's start; reading it back, a hundredth.
    A folder that cannot be written only means exporting again next time."""
    path = os.path.join(cache_folder(), name)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        pass
    data = make()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".export-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # whole or not at all, should two runs export at once
        except OSError:
            os.unlink(tmp)
            raise
        kept = sorted((e for e in os.scandir(os.path.dirname(path)) if e.name.endswith(".onnx")), key=lambda e: e.stat().st_mtime, reverse=True)
        for old in kept[CACHED:]:
            os.remove(old.path)
    except OSError:
        pass
    return data


def _quantize(model: bytes, feeds: list[dict[str, np.ndarray]]) -> bytes:
    """Static int8 (QDQ, per-channel weights) of convs, transposed convs and matrix products, calibrated on `feeds`."""
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
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs advice through the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(
                    src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "ConvTranspose", "MatMul", "Gemm"],
                )
        finally:
            logging.getLogger().setLevel(level)
        with open(dst, "rb") as f:
            return f.read()


class OrtGraph:
    """An ONNX model in ONNX Runtime (CPU), any batch size."""

    def __init__(self, model: bytes, names: list[str], threads: int, chunk: int, streams: int = 1):
        import onnxruntime as ort  # a session runs concurrent calls in parallel whatever `streams`

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The cores are shared with audio decoding, JPEG encoding and the web server: no busy-waiting.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.names = names

    def __call__(self, x: np.ndarray, *consts: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.names[0]: x, **dict(zip(self.names[1:], consts))})[0]


class OpenVinoGraph:
    """An ONNX model compiled by OpenVINO (CPU): for batches of 1 (live) and of `chunk`, and for any size.

    Static shapes let OpenVINO plan memory and pick kernels once (a one-frame step takes about
    5 ms instead of 6.5 ms with a dynamic batch); other sizes (what is left of a long input after
    whole chunks, a live stream's backlog) run on the dynamic graph.
    `streams` > 1: that many requests run at once (from as many threads), each on `threads`
    threads; with one stream, OpenVINO runs concurrent requests one after the other. Each thread
    gets its own infer requests (a request is not safe to share between threads).
    """

    def __init__(self, model: bytes, names: list[str], threads: int, chunk: int, streams: int = 1):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads * streams, "INFERENCE_PRECISION_HINT": "f32"}
        config.update({"NUM_STREAMS": streams} if streams > 1 else {"PERFORMANCE_HINT": "LATENCY"})
        self.compiled = {}

        def compile_all() -> None:
            for n in (1, chunk, None):  # None: any batch size
                graph = core.read_model(model, b"")
                if n is not None:
                    shape = graph.input(0).get_partial_shape()
                    shape[0] = n
                    graph.reshape({graph.input(0).get_any_name(): shape})
                self.compiled[n] = core.compile_model(graph, "CPU", config)

        # OpenVINO's CPU plugin puts its own alternate signal stack on the thread that compiles, and
        # leaves it there; CPython runs its signal handlers on that stack, so after a compile on the
        # main thread a later signal (a child process ending) could kill the process. A thread of its own keeps it there.
        errors: list[BaseException] = []
        worker = threading.Thread(target=lambda: _catch(compile_all, errors), name="talkface-openvino-compile")
        worker.start()
        worker.join()
        if errors:
            raise errors[0]
        self.local = threading.local()

    def __call__(self, x: np.ndarray, *consts: np.ndarray) -> np.ndarray:
        requests = self.local.__dict__.setdefault("requests", {})
        n = len(x) if len(x) in self.compiled else None
        if n not in requests:
            requests[n] = self.compiled[n].create_infer_request()
        return requests[n].infer([x, *consts])[0].copy()


def _catch(fn, errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as e:  # raised again in the thread that waits
        errors.append(e)


RUNTIMES = {"onnx": OrtGraph, "openvino": OpenVinoGraph}


class GraphBackend:
    """Window CNN and split decoder exported to ONNX and run by OpenVINO or ONNX Runtime; GRUs in torch."""

    def __init__(self, generator: Generator, cfg: Config, runtime: str = "openvino", int8: bool = False,
                 threads: int | None = None, chunk: int = CHUNK, streams: int = 1):
        self.generator = generator.cpu().eval()
        self.cfg = cfg
        self.name = runtime + ("-int8" if int8 else "")
        m, a = cfg.model, cfg.audio
        # OpenVINO's int8 transposed convs beat the sub-pixel form (its pixel interleave is then the
        # larger cost); in float32 and in ONNX Runtime the sub-pixel form is faster.
        subpixel = not (int8 and runtime == "openvino")
        self.split = SplitDecoder(generator.decoder, m.audio.dim, m.identity.dim, m.residual, subpixel).eval()
        stages = len(self.split.convs)
        self.face_names = ["first", "base"] + [f"map{i}" for i in range(stages)] + ([f"latent{i}" for i in range(stages)] if self.split.k else [])
        threads = threads or torch.get_num_threads()
        graph = RUNTIMES[runtime]
        with torch.inference_mode():
            example = self.encode(torch.zeros(1, 3, m.height, m.width))
            window = _export(generator.audio_encoder.window, (torch.zeros(2, a.n_mfcc, a.steps),), ["mfcc"])
            decoder = _export(self.split, (torch.zeros(2, m.audio.dim + m.noise.dim), *example.tensors()), ["audio_noise", *self.face_names])
        self.chunk = chunk
        if int8:  # calibrated on what the float32 graphs see
            self.window = OrtGraph(window, ["mfcc"], threads, chunk)
            window_feeds, decoder_feeds = self._calibration()
            window, decoder = _quantize(window, window_feeds), _quantize(decoder, decoder_feeds)
        self.window = graph(window, ["mfcc"], threads, chunk, streams)
        self.decoder = graph(decoder, ["audio_noise", *self.face_names], threads, chunk, streams)

    def _run(self, graph, x: np.ndarray, *consts: np.ndarray) -> np.ndarray:
        """`graph` over `x` in chunks of `self.chunk` frames (activations of one chunk stay in cache)."""
        parts = [graph(x[i : i + self.chunk], *consts) for i in range(0, len(x), self.chunk)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    @torch.inference_mode()
    def _calibration(self) -> tuple[list[dict], list[dict]]:
        """Inputs seen on synthetic faces speaking synthetic speech (the real activation ranges)."""
        from talkface.data.synthetic import make_clip
        from talkface.media.audio import mfcc_windows
        from talkface.pixels import to_tensor

        m = self.cfg.model
        window_feeds, decoder_feeds = [], []
        for seed in range(3):
            clip = make_clip(seed, 24, (m.height, m.width), self.cfg.audio)
            mfcc = torch.from_numpy(mfcc_windows(clip.audio, self.cfg.audio))[None]
            face = self.encode(to_tensor(clip.frames[0])[None])
            z = self.generator.noise.sample(1, mfcc.shape[1], generator=torch.Generator().manual_seed(seed))
            window_feeds.append({"mfcc": mfcc[0].numpy()})
            audio_noise, _ = self._codes(mfcc, z, GeneratorState())
            decoder_feeds.append({"audio_noise": audio_noise, **dict(zip(self.face_names, (t.numpy() for t in face.tensors())))})
        return window_feeds, decoder_feeds

    @torch.inference_mode()
    def encode(self, still: torch.Tensor) -> Face:
        """still: (1, 3, H, W) in [-1, 1] -> per-face constants"""
        identity = self.generator.encode_identity(still.cpu().float())  # masks the still's mouth
        return self.split.face(identity.still, identity.code, identity.skips)

    @torch.inference_mode()
    def _codes(self, mfcc: torch.Tensor, z: torch.Tensor, state: GeneratorState) -> tuple[np.ndarray, GeneratorState]:
        g = self.generator
        per_window = self._run(self.window, mfcc[0].numpy())
        audio, audio_h = g.audio_encoder.gru(torch.from_numpy(per_window)[None], state.audio)
        noise, noise_h = g.noise(z, state.noise)
        return torch.cat([audio[0], noise[0]], -1).numpy(), GeneratorState(audio_h, noise_h)

    @torch.inference_mode()
    def decode(self, face: Face, mfcc: torch.Tensor, z: torch.Tensor, state: GeneratorState) -> tuple[torch.Tensor, GeneratorState]:
        """mfcc: (1, T, n_mfcc, steps), z: (1, T, noise) -> frames (T, 3, H, W), new state"""
        assert mfcc.shape[0] == 1 and z.shape[:2] == mfcc.shape[:2]
        audio_noise, state = self._codes(mfcc.cpu().float(), z.cpu().float(), state)
        frames = self._run(self.decoder, audio_noise, *(t.numpy() for t in face.tensors()))
        return torch.from_numpy(frames), state


class RefinerGraph:
    """The motion model's mouth refiner exported to ONNX and run by OpenVINO or ONNX Runtime (float32),
    any number of crops per call: called like the module, (crop, opening, speech) tensors -> the refined crop."""

    def __init__(self, refiner: nn.Module, runtime: str, threads: int = 1, streams: int = 1):
        self.cfg = refiner.cfg
        h, w = self.cfg.height, self.cfg.width
        inputs = (torch.zeros(1, 3, h, w), torch.zeros(1, 1, h, w), torch.zeros(1, *refiner.speech_shape))
        refiner = refiner.cpu().eval()

        def export() -> bytes:
            with torch.inference_mode():
                return _export(refiner, inputs, ["crop", "opening", "speech"], batched=3)

        model = _cached(f"refiner-{_weights_key(refiner)}.onnx", export)
        self.graph = RUNTIMES[runtime](model, ["crop", "opening", "speech"], threads, 1, streams)

    def __call__(self, crop: torch.Tensor, opening: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.graph(*(x.cpu().float().numpy() for x in (crop, opening, speech))))


class MotionBackend:
    """What runs the motion model's mouth refiner: the module itself (`torch`), or its graph. The motion
    network (a window CNN and GRUs, a fraction of a millisecond per frame) stays in torch."""

    def __init__(self, model: nn.Module, name: str, streams: int = 1):
        self.name = name
        self.refiner = model.refiner if name == "torch" or model.refiner is None else RefinerGraph(model.refiner, name, streams=streams)


def runtime_available(runtime: str) -> bool:
    """Whether the packages a graph backend needs import (the exporter needs onnx; int8 needs onnxruntime)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        if runtime == "openvino":
            import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def motion_backend_problem(model: nn.Module, name: str) -> str | None:
    """Why backend `name` cannot run a motion model (None: it can)."""
    if name.endswith("-int8"):
        return f"backend {name!r} quantises the seed's frame generator (--config paper); this model runs with torch, onnx or openvino"
    if name not in ("auto", "torch") and model.refiner is None:
        return f"backend {name!r} runs the mouth refiner, and this motion model has none; use torch"
    return None


def make_backend(generator: Generator, cfg: Config, name: str = "auto", streams: int = 1):
    """`auto` is the plain generator (for the motion model: its refiner in ONNX Runtime, on the CPU). The graph backends decode 1.8-2.9x faster in batches and need
    less CPU per live frame, but building one takes 2-3 s (about 5 s for int8), which a short clip
    does not win back: 30 s of speech took 7.8-8.5 s to `generate` with `torch`, 6.0-6.8 s with
    `openvino` plus 2.2-2.8 s to build it (README "Backends"). `streams`: how many threads will
    decode at once (a server's workers)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    on_cpu = next(generator.parameters()).device.type == "cpu"
    motion = cfg.kind == "motion"
    problem = motion_backend_problem(generator, name) if motion else None
    if problem:
        raise ValueError(problem)
    if motion and name == "auto":  # the refiner's graph in ONNX Runtime: 1.7-2.8x less CPU a frame than torch, built in half a second
        return MotionBackend(generator, "onnx" if on_cpu and generator.refiner is not None and runtime_available("onnx") else "torch", streams=streams)
    if name in ("auto", "torch"):
        return MotionBackend(generator, "torch") if motion else TorchBackend(generator)
    if not on_cpu:
        raise ValueError(f"backend {name!r} runs on the CPU; use backend 'torch' on {next(generator.parameters()).device}")
    runtime = name.removesuffix("-int8")
    if not runtime_available(runtime):
        raise ValueError(f"backend {name!r} needs the {runtime} package, which is not installed")
    if motion:
        return MotionBackend(generator, runtime, streams=streams)
    return GraphBackend(generator, cfg, runtime, int8=name.endswith("-int8"), streams=streams)
