"""The generator one audio chunk at a time: the face is prepared once, recurrent state is carried.

`FaceStream` turns pushed audio into face crops; `PhotoStream` wraps it for a whole photo (the
face found, aligned and encoded once; every generated crop pasted back at full resolution).
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
