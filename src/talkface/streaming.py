"""The generator one audio chunk at a time: the face is prepared once, recurrent state is carried.

`FaceStream` turns pushed audio into face crops; `PhotoStream` wraps it for a whole photo (the
face found, aligned and encoded once; every generated crop pasted back at full resolution);
`StreamBatch` runs many streams of different faces through one generator call per step, which is
how one GPU serves many live streams at once; `MotionBatch` does the same for the motion model (one
motion model call and one mouth refiner call for every stream with frames due).
They are the engine behind both offline generation (all of a file's audio pushed in chunks) and
live streaming (microphone chunks of any size), so the two produce the same frames.

Memory does not grow with the stream's length: `FeatureStream` keeps only the audio and MFCC
columns that later frames still need (under one window, 350 ms), the recurrent state has a fixed
size, and frames are returned as soon as their audio window is complete.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, partial
from itertools import pairwise

import numpy as np
import torch

from talkface.accel import TorchBackend
from talkface.config import Config
from talkface.expression import Expressions
from talkface.media.audio import FeatureStream
from talkface.media.face import Face, align, detect_faces, paste_back, pick_face
from talkface.models import Generator, GeneratorState
from talkface.models.generator import Identity
from talkface.models.motion import MotionModel
from talkface.pixels import to_tensor, to_uint8
from talkface.render.refine import Prepared, run_refiner
from talkface.render.rig import FaceRig, Job, footprint, lay, render_frames, rig_part
from talkface.threads import Batcher, one_thread


class _AudioStream:
    """Push 16 kHz mono samples, get one output per video frame as soon as its audio window is complete."""

    def __init__(self, cfg: Config, seed: int, max_batch: int):
        self.cfg, self.max_batch = cfg, max_batch
        self.features = FeatureStream(cfg.audio)
        self.noise_rng = torch.Generator().manual_seed(seed)
        self.state = GeneratorState()
        self.frames_out = 0

    def _decode(self, windows: np.ndarray) -> Iterator[np.ndarray]:
        for i in range(0, len(windows), self.max_batch):
            chunk = torch.from_numpy(windows[i : i + self.max_batch])[None]
            self.frames_out += chunk.shape[1]
            yield from self._outputs(chunk)

    def _outputs(self, mfcc: torch.Tensor) -> Iterator[np.ndarray]:
        raise NotImplementedError

    @property
    def samples_in(self) -> int:
        return self.features.samples_in

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Frames completed by these samples (possibly none)."""
        return list(self._decode(self.features.push(samples)))

    def flush(self) -> list[np.ndarray]:
        """The remaining frames once the audio has ended (its tail padded with silence)."""
        return list(self._decode(self.features.flush()))

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """All frames for an iterator of audio chunks, yielded as soon as each is ready."""
        for samples in chunks:
            yield from self._decode(self.features.push(samples))
        yield from self._decode(self.features.flush())


class FaceStream(_AudioStream):
    """Push 16 kHz mono samples, get face crops (H, W, 3) uint8 for every frame whose audio is complete.

    `model` is a backend from `talkface.accel.make_backend` (or a plain Generator, run as it is).
    """

    def __init__(self, model, cfg: Config, still: np.ndarray, seed: int = 0, max_batch: int = 32, face=None):
        h, w = cfg.model.height, cfg.model.width
        if still.shape != (h, w, 3) or still.dtype != np.uint8:
            raise ValueError(f"still must be ({h}, {w}, 3) uint8, got {still.shape} {still.dtype}")
        super().__init__(cfg, seed, max_batch)
        self.backend = TorchBackend(model) if isinstance(model, Generator) else model
        self.face = face if face is not None else self.backend.encode(to_tensor(still)[None])  # `face`: `still` already encoded

    def _outputs(self, mfcc: torch.Tensor) -> Iterator[np.ndarray]:
        z = self.backend.generator.noise.sample(1, mfcc.shape[1], generator=self.noise_rng)
        frames, self.state = self.backend.decode(self.face, mfcc, z, self.state)
        yield from to_uint8(frames)


class MotionStream(_AudioStream):
    """Push 16 kHz mono samples, get (the mouth motion (P, 2) float32, the MFCC window (n_mfcc, steps)
    it came from) for every frame whose audio is complete: the motion model's counterpart of
    `FaceStream` (`FaceRig.render` draws such a pair). `batch`: a `MotionBatch` whose other streams'
    frames are decoded in the same model calls."""

    def __init__(self, model: MotionModel, cfg: Config, seed: int = 0, max_batch: int = 32, batch: MotionBatch | None = None):
        super().__init__(cfg, seed, max_batch)
        self.model, self.batch = model, batch

    def _decode(self, windows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(windows), self.max_batch):
            chunk = windows[i : i + self.max_batch]
            yield from self.batch.motion((self, chunk)) if self.batch is not None else decode_motion(self.model, [(self, chunk)])[0]


def _stack_hidden(hidden: list[torch.Tensor | None], gru: torch.nn.GRU, device: torch.device) -> torch.Tensor | None:
    """Streams' GRU states (layers, 1, dim) as one batch; a stream that has not started yet starts from zeros (as None does)."""
    if all(h is None for h in hidden):
        return None
    zero = torch.zeros(gru.num_layers, 1, gru.hidden_size, device=device)
    return torch.cat([zero if h is None else h for h in hidden], 1)


@torch.inference_mode()
def decode_motion(model: MotionModel, work: list[tuple[MotionStream, np.ndarray]]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Streams' new MFCC windows (T, n_mfcc, steps) -> each stream's (motion (P, 2), window) pairs.

    Streams with as many new windows run in one model call, each with its own recurrent state and noise
    (drawn from its own generator, frame by frame): a stream's motion is the same, to float rounding,
    whatever else runs with it.
    """
    device = next(model.parameters()).device
    out: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in work]
    by_length: dict[int, list[int]] = {}
    for i, (_, windows) in enumerate(work):
        if len(windows):
            by_length.setdefault(len(windows), []).append(i)
    for t, rows in by_length.items():
        streams = [work[i][0] for i in rows]
        mfcc = torch.from_numpy(np.stack([work[i][1] for i in rows])).to(device)  # (B, T, n_mfcc, steps)
        z = torch.cat([model.noise.sample(1, t, generator=s.noise_rng) for s in streams]).to(device)
        state = GeneratorState(_stack_hidden([s.state.audio for s in streams], model.audio_encoder.gru, device),
                               _stack_hidden([s.state.noise for s in streams], model.noise.gru, device))
        with one_thread() if device.type == "cpu" else contextlib.nullcontext():
            motion, state = model.decode(mfcc, z, state)
        motion = motion.float().cpu().numpy()
        for b, (i, stream) in enumerate(zip(rows, streams)):
            stream.state = GeneratorState(state.audio[:, b : b + 1], state.noise[:, b : b + 1])
            stream.frames_out += t
            out[i] = list(zip(motion[b], work[i][1]))
    return out


class MotionBatch:
    """Live streams of the motion model made together: every stream that has frames due when a call
    is made joins one motion model call (`decode_motion`), and the mouth crops of all their frames
    one refiner call (`run_refiner`), whichever thread drives each stream (`threads.Batcher`: while
    one call runs, the next gathers). Each stream keeps its own recurrent state, noise, audio
    features and expressions; its warps and whatever follows run on its own thread (or, in the
    server, in its rig's worker process: `render.parallel.LiveRenderers`).

    `stream(cfg, photo, seed)`: a `PhotoStream` in the batch. Its frames equal a stream's alone with
    the same seed, to float rounding.
    """

    def __init__(self, model: MotionModel, refiner=None):
        """`refiner`: what runs the mouth refiner (`accel.MotionBackend.refiner`; default: the model's own)."""
        self.model = model.eval()
        self.refiner = model.refiner if refiner is None else refiner
        self.motion = Batcher(lambda work: decode_motion(self.model, work))
        self.refine = Batcher(self._refine)

    def _refine(self, groups: list[list[Prepared]]) -> list[np.ndarray]:
        refined = run_refiner(self.refiner, [c for g in groups for c in g])
        starts = np.cumsum([0] + [len(g) for g in groups])
        return [refined[a:b] for a, b in pairwise(starts)]

    def stream(self, cfg: Config, photo: PreparedPhoto, seed: int = 0) -> PhotoStream:
        return PhotoStream(self.model, cfg, photo, seed=seed, batch=self)


class PreparedPhoto:
    """A photo made ready to animate: its face found and aligned once.

    picture: (H, W, 3) uint8 RGB; its last row / column is dropped where odd (H.264 needs even
    sizes), as offline generation does. Raises TalkfaceError when no usable face is found.
    """

    def __init__(self, picture: np.ndarray, size: tuple[int, int], face_index: int | None = None, path: str | os.PathLike | None = None):
        h, w = picture.shape[:2]
        self.picture = np.ascontiguousarray(picture[: h - h % 2, : w - w % 2])
        self.face: Face = pick_face(detect_faces(self.picture), face_index, path)
        self.crop, self.M = align(self.picture, self.face, size)
        self._encoded: tuple[object, object] | None = None  # (backend, its encoding of the crop)
        self._rig: tuple[float, object, FaceRig] | None = None

    def rig(self, gain: float = 1.0, refiner=None) -> FaceRig:
        """The face rigged for the motion model (rest shape, motion scale, warp, the model's mouth refiner),
        made once, on the part of the photo that moves (`box`): its frames are patches (`whole` lays them in)."""
        if self._rig is None or self._rig[:2] != (gain, refiner):
            self._rig = (gain, refiner, rig_part(self.picture, self.face, gain, refiner)[0])
        return self._rig[2]

    @cached_property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the part of the photo that the motion model's frames change (`render.rig.footprint`)."""
        return footprint(self.face, self.shape)

    def whole(self, patch: np.ndarray) -> np.ndarray:
        """A full-resolution frame: a copy of the photo with a patch of `box` (a frame of `rig`) laid in."""
        return lay(self.picture.copy(), patch, self.box)

    def encoded(self, backend):
        """The crop encoded by `backend` (identity code and skips), computed once."""
        if self._encoded is None or self._encoded[0] is not backend:
            self._encoded = (backend, backend.encode(to_tensor(self.crop)[None]))
        return self._encoded[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.picture.shape[:2]

    def paste(self, crop: np.ndarray) -> np.ndarray:
        """A full-resolution frame: the photo with this generated crop blended in."""
        return paste_back(self.picture, crop, self.M, self.face)


class PhotoStream:
    """Push audio, get full-resolution frames of the photo speaking it.

    With the motion model, each frame's mouth motion (`MotionStream`) moves the photo's own pixels
    (`FaceRig`); with the seed's frame generator, each generated crop (`FaceStream`) is pasted back.
    """

    def __init__(self, model, cfg: Config, photo: PreparedPhoto, seed: int = 0, max_batch: int = 32, crops=None, refiner=None,
                 batch: MotionBatch | None = None):
        """`crops`: where the face crops come from instead of a `FaceStream` of `model` (e.g. `StreamBatch.stream`);
        `refiner`: what runs a motion model's mouth refiner (`accel.MotionBackend.refiner`; default: the model's own);
        `batch`: a `MotionBatch` that makes this stream's frames together with its other streams' (its refiner is used)."""
        self.photo = photo
        self.render = self._paste
        self.moves_photo = crops is None and isinstance(model, MotionModel)  # the motion model: `jobs` render its frames
        if self.moves_photo:
            refiner = batch.refiner if batch is not None else model.refiner if refiner is None else refiner
            crops = MotionStream(model, cfg, seed=seed, max_batch=max_batch, batch=batch)
            self.rig = photo.rig(cfg.motion.gain, refiner)
            # blinks, brows and head motion follow the same seed and speech
            enabled = cfg.motion.expression.enabled and model.expression is not None
            self.expressions = Expressions(cfg.motion.expression, cfg.audio, model.expression, seed) if enabled else None
            self.refine = batch.refine if batch is not None else partial(run_refiner, refiner)
            self.render = self._animate
        elif crops is None:
            backend = TorchBackend(model) if isinstance(model, Generator) else model
            crops = FaceStream(backend, cfg, photo.crop, seed=seed, max_batch=max_batch, face=photo.encoded(backend))
        self.crops = crops

    def _paste(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        return [self.photo.paste(c) for c in crops]

    def _animate(self, frames: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """(motion, speech) pairs -> frames: every mouth warped, then one refiner call for all their mouth crops."""
        return self.render_jobs(self.jobs(frames))

    def render_jobs(self, jobs: list[Job]) -> list[np.ndarray]:
        """`jobs`' frames (some or all of those `jobs` gave), full-resolution, in one refiner call."""
        return [self.photo.whole(patch) for patch in render_frames(jobs, self.refine)] if jobs else []

    def jobs(self, frames: list[tuple[np.ndarray, np.ndarray]]) -> list[Job]:
        """(motion, speech) of consecutive frames -> what `render_frames` renders them from; the
        expressions (blinks, head) are stepped here, in order."""
        expressions = self.expressions.steps([speech for _, speech in frames]) if self.expressions else [None] * len(frames)
        return [(self.rig, motion, speech, e) for (motion, speech), e in zip(frames, expressions)]

    @property
    def frames_out(self) -> int:
        return self.crops.frames_out

    @property
    def samples_in(self) -> int:
        return self.crops.samples_in

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Full-resolution frames (H, W, 3) uint8 completed by these samples (possibly none)."""
        return self.render(self.crops.push(samples))

    def flush(self) -> list[np.ndarray]:
        """The remaining frames once the audio has ended."""
        return self.render(self.crops.flush())

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for samples in chunks:
            yield from self.push(samples)
        yield from self.flush()


@dataclass
class _Slot:
    """One stream of a StreamBatch: its face, recurrent state, noise and audio features."""

    identity: Identity  # batch of 1
    audio_h: torch.Tensor  # (layers, 1, dim)
    noise_h: torch.Tensor
    noise_rng: torch.Generator
    features: FeatureStream
    frames_out: int = 0


class StreamBatch:
    """Many live streams, one face each, generated together: one generator call per step for every
    stream that has a frame ready, each with its own recurrent state, noise and audio features.

    Frames equal what each stream would get from its own `FaceStream` with the same seed (the
    batch only changes float rounding). Streams join (`add`) and leave (`remove`) at any time.
    Single-threaded use: `push({key: samples})` -> `{key: new crops}`. From many threads (a server's
    workers, one per stream): `stream(still)` gives each a `FaceStream`-like handle whose pushes
    are generated together with whatever the other threads ask for meanwhile (while one batch runs,
    the next gathers; then one of the waiting threads runs it: `threads.Batcher`).
    """

    def __init__(self, generator: Generator, cfg: Config, stills: Iterable[np.ndarray] = (), seeds: Iterable[int] | None = None):
        self.generator = generator.eval()
        self.cfg = cfg
        self.device = next(generator.parameters()).device
        self.slots: dict[int, _Slot] = {}
        self.next_key = 0
        self.lock = threading.Lock()  # slots join and leave from any thread
        self.gather = Batcher(self._generate)
        self._stacked: tuple[tuple[int, ...], Identity] | None = None  # identities of the last batch, stacked
        stills = list(stills)
        for still, seed in zip(stills, seeds if seeds is not None else [0] * len(stills)):
            self.add(still, seed)

    def __len__(self) -> int:
        return len(self.slots)

    @torch.inference_mode()
    def add(self, still: np.ndarray, seed: int = 0) -> int:
        """A new stream for a face crop (H, W, 3) uint8 at the model's size: its key."""
        m = self.cfg.model
        identity = self.generator.encode_identity(to_tensor(still)[None].to(self.device))
        slot = _Slot(
            identity,
            torch.zeros(m.audio.gru_layers, 1, m.audio.dim, device=self.device),
            torch.zeros(m.noise.gru_layers, 1, m.noise.dim, device=self.device),
            torch.Generator().manual_seed(seed),
            FeatureStream(self.cfg.audio),
        )
        with self.lock:
            key, self.next_key = self.next_key, self.next_key + 1
            self.slots[key] = slot
        return key

    def remove(self, key: int) -> None:
        with self.lock:
            self.slots.pop(key, None)

    def push(self, chunks: dict[int, np.ndarray | None]) -> dict[int, list[np.ndarray]]:
        """16 kHz mono samples for some streams (None: nothing new) -> each of those streams' new crops."""
        windows = {k: self.slots[k].features.push(c) if c is not None else [] for k, c in chunks.items()}
        return self._decode(windows)

    def flush(self, keys: Iterable[int] | None = None) -> dict[int, list[np.ndarray]]:
        """The remaining frames of these streams (default: all) once their audio has ended."""
        return self._decode({k: self.slots[k].features.flush() for k in (self.slots if keys is None else keys)})

    def stream(self, still: np.ndarray, seed: int = 0) -> "BatchedStream":
        """A handle for one thread's stream (push / flush / close), generated together with the others."""
        return BatchedStream(self, self.add(still, seed))

    def generate(self, key: int, windows: np.ndarray) -> list[np.ndarray]:
        """Thread-safe: crops for `windows` of stream `key`, in one batch with other threads' requests."""
        if len(windows) == 0:
            return []
        return self.gather((key, windows))

    def _generate(self, work: list[tuple[int, np.ndarray]]) -> list[list[np.ndarray]]:
        crops = self._decode(dict(work))
        return [crops.get(key, []) for key, _ in work]

    def _identity(self, keys: tuple[int, ...]) -> Identity:
        """The identities of these streams stacked into one batch (kept while the same streams step together)."""
        if self._stacked is None or self._stacked[0] != keys:
            who = [self.slots[k].identity for k in keys]
            stacked = Identity(
                torch.cat([w.code for w in who]),
                [torch.cat([w.skips[j] for w in who]) for j in range(len(who[0].skips))],
                torch.cat([w.still for w in who]),
            )
            self._stacked = (keys, stacked)
        return self._stacked[1]

    @torch.inference_mode()
    def _decode(self, windows: dict[int, np.ndarray | list]) -> dict[int, list[np.ndarray]]:
        out: dict[int, list[np.ndarray]] = {k: [] for k in windows}
        for step in range(max((len(w) for w in windows.values()), default=0)):
            keys = tuple(k for k, w in windows.items() if len(w) > step and k in self.slots)
            if not keys:
                continue
            slots = [self.slots[k] for k in keys]
            mfcc = torch.from_numpy(np.stack([windows[k][step] for k in keys]))[:, None].to(self.device)
            z = torch.cat([self.generator.noise.sample(1, 1, generator=s.noise_rng) for s in slots]).to(self.device)
            state = GeneratorState(torch.cat([s.audio_h for s in slots], 1), torch.cat([s.noise_h for s in slots], 1))
            frames, state = self.generator.decode(self._identity(keys), mfcc, z, state)
            for i, (k, slot, crop) in enumerate(zip(keys, slots, to_uint8(frames[:, 0]))):
                slot.audio_h, slot.noise_h = state.audio[:, i : i + 1], state.noise[:, i : i + 1]
                slot.frames_out += 1
                out[k].append(crop)
        return out


class BatchedStream:
    """One stream of a StreamBatch, used by one thread: the interface of `FaceStream`."""

    def __init__(self, batch: StreamBatch, key: int):
        self.batch, self.key = batch, key
        self.slot = batch.slots[key]

    @property
    def frames_out(self) -> int:
        return self.slot.frames_out

    @property
    def samples_in(self) -> int:
        return self.slot.features.samples_in

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        return self.batch.generate(self.key, self.slot.features.push(samples))

    def flush(self) -> list[np.ndarray]:
        return self.batch.generate(self.key, self.slot.features.flush())

    def close(self) -> None:
        self.batch.remove(self.key)
