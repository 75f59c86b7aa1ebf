"""A SyncNet-style lip-sync expert: mouth crops and speech mapped to one embedding space.

The video tower sees `frames` consecutive grayscale mouth crops stacked as channels; the audio tower
sees the MFCC columns of the same 200 ms. Embeddings are L2-normalised, so in-sync pairs are close
(cosine near 1, euclidean distance near 0) and out-of-sync pairs are far apart.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from talkface.config import SyncConfig
from talkface.models.layers import norm


def _tower(in_channels: int, channels: tuple[int, ...], stride: int = 2) -> nn.Sequential:
    """Conv 3x3 + GroupNorm + ReLU layers, each halving the resolution."""
    layers: list[nn.Module] = []
    prev = in_channels
    for c in channels:
        layers += [nn.Conv2d(prev, c, 3, stride, 1), norm(c), nn.ReLU(inplace=True)]
        prev = c
    return nn.Sequential(*layers)


def _flat_size(net: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return net(torch.zeros(1, *shape)).numel()


class SyncExpert(nn.Module):
    """Embeds mouth crops and speech; `distance` and `logits` compare them."""

    def __init__(self, cfg: SyncConfig):
        super().__init__()
        self.cfg = cfg
        self.video_shape = (cfg.frames, cfg.crop_height, cfg.crop_width)
        self.audio_shape = (1, cfg.audio.n_mfcc, cfg.audio_steps)
        self.video = _tower(cfg.frames, cfg.video_channels)
        self.audio = _tower(1, cfg.audio_channels)
        self.video_fc = nn.Sequential(nn.Flatten(), nn.Linear(_flat_size(self.video, self.video_shape), 256), nn.ReLU(inplace=True), nn.Linear(256, cfg.dim))
        self.audio_fc = nn.Sequential(nn.Flatten(), nn.Linear(_flat_size(self.audio, self.audio_shape), 256), nn.ReLU(inplace=True), nn.Linear(256, cfg.dim))
        # SigLIP-style calibration: logit = exp(log_scale) * cosine + bias
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-5.0))

    def embed_video(self, mouths: torch.Tensor) -> torch.Tensor:
        """mouths: (B, frames, h, w) grayscale in [-1, 1] -> (B, dim), unit length"""
        assert mouths.shape[1:] == self.video_shape, f"expected (B, {self.video_shape}), got {tuple(mouths.shape)}"
        return F.normalize(self.video_fc(self.video(mouths)), dim=-1)

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """mfcc: (B, n_mfcc, audio_steps) -> (B, dim), unit length"""
        assert mfcc.shape[1:] == self.audio_shape[1:], f"expected (B, {self.audio_shape[1:]}), got {tuple(mfcc.shape)}"
        return F.normalize(self.audio_fc(self.audio(mfcc[:, None])), dim=-1)

    def logits(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, dim), (M, dim) -> (N, M) in-sync logits"""
        return self.log_scale.exp() * video @ audio.T + self.bias

    @staticmethod
    def distance(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Embeddings (..., dim) x2 -> euclidean distance (...), in [0, 2]"""
        return (video - audio).norm(dim=-1)

    def forward(self, mouths: torch.Tensor, mfcc: torch.Tensor, pairs: bool = False) -> torch.Tensor:
        """mouths: (B, frames, h, w), mfcc: (B or M, n_mfcc, audio_steps) -> distance (B,); with `pairs`,
        the in-sync logits of every video window with every audio window (B, M), as training wants."""
        video, audio = self.embed_video(mouths), self.embed_audio(mfcc)
        return self.logits(video, audio) if pairs else self.distance(video, audio)
