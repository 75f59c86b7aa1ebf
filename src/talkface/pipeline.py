"""Image + audio in, mp4 out: the only place that touches files and devices around the networks."""
from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np
import torch
from tqdm import tqdm

from talkface.checkpoint import load_generator
from talkface.config import Config
from talkface.errors import TalkfaceError
from talkface.media.audio import iter_audio, num_frames
from talkface.media.image import load_image
from talkface.media.video import VideoWriter, prepare_output
from talkface.streaming import FaceStream

SILENCE_PEAK = 1e-4  # about -80 dBFS


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def scan_audio(path: str | os.PathLike, sample_rate: int) -> int:
    """Decode the whole file once (streamed) to count its samples and reject silence or garbage."""
    count, peak = 0, 0.0
    for chunk in iter_audio(path, sample_rate, chunk=sample_rate * 10):
        count += len(chunk)
        peak = max(peak, float(np.abs(chunk).max(initial=0.0)))
    if peak < SILENCE_PEAK:
        raise TalkfaceError("is silent (no sound above -80 dBFS)", path)
    if not np.isfinite(peak):
        raise TalkfaceError("contains invalid samples (NaN or infinity)", path)
    return count


def resize_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a face crop to the model's (H, W), cropping to its aspect ratio first."""
    h, w = size
    ih, iw = image.shape[:2]
    if ih * w > iw * h:  # too tall
        keep = iw * h // w
        top = (ih - keep) // 2
        image = image[top : top + keep]
    elif ih * w < iw * h:
        keep = ih * w // h
        left = (iw - keep) // 2
        image = image[:, left : left + keep]
    interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, (w, h), interpolation=interp))


class Animator:
    """A loaded generator and what it needs to turn a face and speech into a video."""

    def __init__(self, checkpoint: str | os.PathLike, device: str | None = None):
        self.device = pick_device(device)
        self.generator, self.cfg = load_generator(checkpoint, self.device)

    @property
    def size(self) -> tuple[int, int]:
        return self.cfg.model.height, self.cfg.model.width

    def stream(self, face: np.ndarray, seed: int = 0) -> FaceStream:
        """A live stream for a face crop (any size; resized to the model's)."""
        return FaceStream(self.generator, self.cfg, resize_crop(face, self.size), seed=seed)

    def frames(self, face: np.ndarray, audio: str | os.PathLike, seed: int = 0):
        """Iterator of generated crops (H, W, 3) uint8 for a face crop and an audio file."""
        chunks = iter_audio(audio, self.cfg.audio.sample_rate, chunk=self.cfg.audio.sample_rate)
        return self.stream(face, seed).run(chunks)

    def generate(
        self,
        image: str | os.PathLike | np.ndarray,
        audio: str | os.PathLike,
        out: str | os.PathLike,
        *,
        overwrite: bool = False,
        seed: int = 0,
        progress: bool | Callable[[int, int], None] = False,
    ) -> str:
        """Animate a face-crop image with speech and write an H.264/AAC mp4 to `out`."""
        out = prepare_output(out, overwrite)
        face = load_image(image) if not isinstance(image, np.ndarray) else image
        total = num_frames(scan_audio(audio, self.cfg.audio.sample_rate), self.cfg.audio)
        bar = tqdm(total=total, desc="generate", unit="frame", disable=progress is not True, dynamic_ncols=True)
        with VideoWriter(out, self.cfg.audio.fps, self.size, audio_path=audio) as writer:
            for i, frame in enumerate(self.frames(face, audio, seed), 1):
                writer.write(frame)
                bar.update(1)
                if callable(progress):
                    progress(i, total)
        bar.close()
        return out
