"""The generator one audio chunk at a time: the face is prepared once, recurrent state is carried.

`FaceStream` turns pushed audio into face crops; `PhotoStream` wraps it for a whole photo (the
face found, aligned and encoded once; every generated crop pasted back at full resolution);
`StreamBatch` runs many streams of different faces through one generator call per step, which is
how one GPU serves many live streams at once.
They are the engine behind both offline generation (all of a file's audio pushed in chunks) and
live streaming (microphone chunks of any size), so the two produce the same frames.

Memory does not grow with the stream's length: `FeatureStream` keeps only the audio and MFCC
columns that later frames still need (under one window, 350 ms), the recurrent state has a fixed
size, and frames are returned as soon as their audio window is complete.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from talkface.accel import TorchBackend
from talkface.config import Config
from talkface.media.audio import FeatureStream
from talkface.media.face import Face, align, detect_faces, paste_back, pick_face
from talkface.models import Generator, GeneratorState
from talkface.models.generator import Identity
from talkface.pixels import to_tensor, to_uint8


class FaceStream:
    """Push 16 kHz mono samples, get face crops (H, W, 3) uint8 for every frame whose audio is complete.

    `model` is a backend from `talkface.accel.make_backend` (or a plain Generator, run as it is).
    """

    def __init__(self, model, cfg: Config, still: np.ndarray, seed: int = 0, max_batch: int = 32, face=None):
        h, w = cfg.model.height, cfg.model.width
        assert still.shape == (h, w, 3) and still.dtype == np.uint8, f"still must be ({h}, {w}, 3) uint8, got {still.shape} {still.dtype}"
        self.backend = TorchBackend(model) if isinstance(model, Generator) else model
        self.cfg, self.max_batch = cfg, max_batch
        self.features = FeatureStream(cfg.audio)
        self.noise_rng = torch.Generator().manual_seed(seed)
        self.state = GeneratorState()
        self.face = face if face is not None else self.backend.encode(to_tensor(still)[None])  # `face`: `still` already encoded
        self.frames_out = 0

    def _decode(self, windows: np.ndarray) -> Iterator[np.ndarray]:
        for i in range(0, len(windows), self.max_batch):
            chunk = torch.from_numpy(windows[i : i + self.max_batch])[None]
            z = self.backend.generator.noise.sample(1, chunk.shape[1], generator=self.noise_rng)
            frames, self.state = self.backend.decode(self.face, chunk, z, self.state)
            self.frames_out += chunk.shape[1]
            yield from to_uint8(frames)

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
    """Push audio, get full-resolution frames of the photo speaking it (see `FaceStream`)."""

    def __init__(self, model, cfg: Config, photo: PreparedPhoto, seed: int = 0, max_batch: int = 32):
        self.photo = photo
        backend = TorchBackend(model) if isinstance(model, Generator) else model
        self.crops = FaceStream(backend, cfg, photo.crop, seed=seed, max_batch=max_batch, face=photo.encoded(backend))

    @property
    def frames_out(self) -> int:
        return self.crops.frames_out

    @property
    def samples_in(self) -> int:
        return self.crops.samples_in

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Full-resolution frames (H, W, 3) uint8 completed by these samples (possibly none)."""
        return [self.photo.paste(c) for c in self.crops.push(samples)]

    def flush(self) -> list[np.ndarray]:
        """The remaining frames once the audio has ended."""
        return [self.photo.paste(c) for c in self.crops.flush()]

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for crop in self.crops.run(chunks):
            yield self.photo.paste(crop)


class StreamBatch:
    """Many live streams, one face each, generated together: one generator call per step for every
    stream that has a frame ready, each with its own recurrent state, noise and audio features.

    Frames equal what each stream would get from its own `FaceStream` with the same seed (the
    batch only changes float rounding). Stream i's frames come out in order; a push may give some
    streams no frame (their audio window is not complete yet) and others several.
    """

    def __init__(self, generator: Generator, cfg: Config, stills: list[np.ndarray], seeds: list[int] | None = None):
        self.generator = generator.eval()
        self.device = next(generator.parameters()).device
        self.features = [FeatureStream(cfg.audio) for _ in stills]
        self.noise_rngs = [torch.Generator().manual_seed(s) for s in (seeds or [0] * len(stills))]
        m = cfg.model
        with torch.inference_mode():
            self.identity = generator.encode_identity(to_tensor(np.stack(stills)).to(self.device))
        n = len(stills)
        self.audio_h = torch.zeros(m.audio.gru_layers, n, m.audio.dim, device=self.device)
        self.noise_h = torch.zeros(m.noise.gru_layers, n, m.noise.dim, device=self.device)

    def __len__(self) -> int:
        return len(self.features)

    def push(self, chunks: list[np.ndarray | None]) -> list[list[np.ndarray]]:
        """One chunk of 16 kHz mono samples per stream (None: nothing new) -> each stream's new crops."""
        assert len(chunks) == len(self), f"{len(self)} streams, {len(chunks)} chunks"
        return self._decode([f.push(c) if c is not None else [] for f, c in zip(self.features, chunks)])

    def flush(self) -> list[list[np.ndarray]]:
        """Every stream's remaining frames once all audio has ended."""
        return self._decode([f.flush() for f in self.features])

    @torch.inference_mode()
    def _decode(self, windows: list) -> list[list[np.ndarray]]:
        out: list[list[np.ndarray]] = [[] for _ in windows]
        for step in range(max((len(w) for w in windows), default=0)):
            ready = [i for i, w in enumerate(windows) if len(w) > step]
            mfcc = torch.from_numpy(np.stack([windows[i][step] for i in ready]))[:, None].to(self.device)
            z = torch.cat([self.generator.noise.sample(1, 1, generator=self.noise_rngs[i]) for i in ready]).to(self.device)
            if len(ready) == len(windows):
                identity, state = self.identity, GeneratorState(self.audio_h, self.noise_h)
            else:
                sel = torch.tensor(ready, device=self.device)
                who = self.identity
                identity = Identity(who.code[sel], [s[sel] for s in who.skips], who.still[sel])
                state = GeneratorState(self.audio_h[:, sel], self.noise_h[:, sel])
            frames, state = self.generator.decode(identity, mfcc, z, state)
            if len(ready) == len(windows):
                self.audio_h, self.noise_h = state.audio, state.noise
            else:
                self.audio_h[:, sel], self.noise_h[:, sel] = state.audio, state.noise
            for i, crop in zip(ready, to_uint8(frames[:, 0])):
                out[i].append(crop)
        return out
