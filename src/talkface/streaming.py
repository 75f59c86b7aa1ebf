"""The generator one audio chunk at a time: the face is encoded once, recurrent state is carried.

`FaceStream` is the engine behind both offline generation (all of a file's audio pushed in
chunks) and live streaming (microphone chunks of any size), so the two produce the same frames.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from talkface.config import Config
from talkface.media.audio import FeatureStream
from talkface.models import Generator, GeneratorState
from talkface.pixels import to_tensor, to_uint8


class FaceStream:
    """Push 16 kHz mono samples, get face crops (H, W, 3) uint8 for every frame whose audio is complete."""

    def __init__(self, generator: Generator, cfg: Config, still: np.ndarray, seed: int = 0, max_batch: int = 32):
        h, w = cfg.model.height, cfg.model.width
        assert still.shape == (h, w, 3) and still.dtype == np.uint8, f"still must be ({h}, {w}, 3) uint8, got {still.shape} {still.dtype}"
        self.generator, self.cfg, self.max_batch = generator, cfg, max_batch
        self.device = next(generator.parameters()).device
        self.features = FeatureStream(cfg.audio)
        self.noise = torch.Generator().manual_seed(seed)
        self.state = GeneratorState()
        with torch.inference_mode():
            self.identity = generator.encode_identity(to_tensor(still)[None].to(self.device))
        self.frames_out = 0

    @torch.inference_mode()
    def _decode(self, windows: np.ndarray) -> Iterator[np.ndarray]:
        for i in range(0, len(windows), self.max_batch):
            chunk = torch.from_numpy(windows[i : i + self.max_batch])[None].to(self.device)
            z = self.generator.noise.sample(1, chunk.shape[1], generator=self.noise).to(self.device)
            frames, self.state = self.generator.decode(self.identity, chunk, z, self.state)
            self.frames_out += chunk.shape[1]
            yield from to_uint8(frames[0])

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Frames completed by these samples (possibly none)."""
        return list(self._decode(self.features.push(samples)))

    def flush(self) -> list[np.ndarray]:
        """The remaining frames once the audio has ended (its tail padded with silence)."""
        return list(self._decode(self.features.flush()))

    def run(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """All frames for an iterator of audio chunks, yielded as soon as each is ready."""
        for samples in chunks:
            yield from self._decode(self.features.push(samples))
        yield from self._decode(self.features.flush())
