"""The upper face's network: lid closure and brow raise per frame, from the seed's noise generator and the speech.

Blinks are spontaneous: they come from the noise generator's temporally coherent noise, timed by the
speech (a GRU sees both) and by the blink rate asked for. A sequence discriminator of the seed's kind
(a GRU over the motion and its audio, 1-D spatial pyramid pooling, 2 FC) judges whole clips of them.

The head: a network trained on videos whose heads move (`ExpressionNetConfig.head`) gives its pose
per frame as well, judged with the rest. Otherwise the first channels of the coherent noise drive the
head (`talkface.expression`), once scaled to unit spread (`calibrate`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talkface.config import AudioConfig, ExpressionNetConfig, NoiseConfig
from talkface.models.discriminators import pyramid_pool_1d
from talkface.models.noise import NoiseGenerator

HEAD_CHANNELS = 5  # yaw, pitch, roll and the shift across and down
POSE_RANGE = (30.0, 30.0, 30.0, 0.3, 0.3)  # a learned pose's limits: degrees, and face sizes for the shift
POSE_UNIT = (5.0, 5.0, 5.0, 0.05, 0.05)  # what the discriminator and the losses read as 1 in each of the pose's channels
RATE_UNIT = 20.0  # blinks a minute that the network reads as 1
SLICES = 7  # an MFCC window enters as its mean over this many slices of time


class SpeechSummary(nn.Module):
    """MFCC windows (B, T, n_mfcc, steps) -> (B, T, dim): each window averaged over `SLICES` slices, one linear layer."""

    def __init__(self, audio: AudioConfig, dim: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(audio.n_mfcc * SLICES, dim), nn.LeakyReLU(0.2))

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        b, t = mfcc.shape[:2]
        return self.fc(F.adaptive_avg_pool1d(mfcc.flatten(0, 1), SLICES).flatten(1)).view(b, t, -1)


def face_channels(cfg: ExpressionNetConfig) -> int:
    """How many values a frame of the upper face has: closure and brow, and the head's pose when learned."""
    return 2 + HEAD_CHANNELS * cfg.head


class ExpressionNet(nn.Module):
    """(MFCC windows, blink rate, noise) -> per frame lid closure (0 open .. 1 shut) and brow raise (face
    sizes), and with `cfg.head` the head's pose (yaw, pitch, roll degrees, shift across and down in face
    sizes, from the clip's median)."""

    def __init__(self, cfg: ExpressionNetConfig, audio: AudioConfig):
        super().__init__()
        self.noise = NoiseGenerator(NoiseConfig())
        self.speech = SpeechSummary(audio, cfg.audio_dim)
        self.gru = nn.GRU(self.noise.dim + cfg.audio_dim + 1, cfg.hidden, batch_first=True)
        self.learns_pose = cfg.head
        self.out = nn.Linear(cfg.hidden, face_channels(cfg))
        self.brow_range = cfg.brow_range
        self.register_buffer("pose_range", torch.tensor(POSE_RANGE), persistent=False)
        # the head's drive: the coherent noise's first channels, centred and scaled to unit spread (calibrate)
        self.register_buffer("drive_mean", torch.zeros(HEAD_CHANNELS))
        self.register_buffer("drive_std", torch.ones(HEAD_CHANNELS))

    def decode(self, mfcc: torch.Tensor, rate: torch.Tensor | float, z: torch.Tensor, state: tuple | None = None):
        """mfcc (B, T, n_mfcc, steps), rate: blinks a minute (B,) or one number, z: (B, T, noise dim)
        -> (closure, brow and the learned pose (B, T, face_channels), head drive (B, T, HEAD_CHANNELS), new state)"""
        b, t = mfcc.shape[:2]
        noise_h, gru_h = state if state is not None else (None, None)
        coherent, noise_h = self.noise(z, noise_h)
        rate = torch.as_tensor(rate, dtype=mfcc.dtype, device=mfcc.device).reshape(-1, 1, 1).expand(b, t, 1) / RATE_UNIT
        h, gru_h = self.gru(torch.cat([coherent, self.speech(mfcc), rate], -1), gru_h)
        o = self.out(h)
        face = torch.stack([torch.sigmoid(o[..., 0]), self.brow_range * torch.tanh(o[..., 1])], -1)
        if self.learns_pose:
            face = torch.cat([face, self.pose_range * torch.tanh(o[..., 2:])], -1)
        drive = (coherent[..., :HEAD_CHANNELS] - self.drive_mean) / self.drive_std
        return face, drive, (noise_h, gru_h)

    def forward(self, mfcc: torch.Tensor, rate: torch.Tensor | float, z: torch.Tensor | None = None) -> torch.Tensor:
        """closure, brow and the learned pose (B, T, face_channels) for a batch of clips"""
        if z is None:
            z = self.noise.sample(mfcc.shape[0], mfcc.shape[1]).to(mfcc)
        return self.decode(mfcc, rate, z)[0]

    @torch.no_grad()
    def calibrate(self, frames: int = 40000, block: int = 100, seed: int = 0) -> None:
        """Measure the coherent noise's first channels over a long run; set the head drive's centre, and its
        scale so that its power at low frequencies is unit white noise's: a slow filter of the drive
        (`talkface.expression`) then has the spread it would have from white noise."""
        z = self.noise.sample(1, frames, generator=torch.Generator().manual_seed(seed)).to(self.drive_mean)
        coherent, _ = self.noise(z)
        x = coherent[0, 100:, :HEAD_CHANNELS].double()  # past the GRU's start from zeros
        x = x[: len(x) // block * block]
        means = x.view(-1, block, HEAD_CHANNELS).mean(1)  # a block's mean of unit white noise has spread 1 / sqrt(block)
        self.drive_mean.copy_(x.mean(0).float())
        self.drive_std.copy_((means.std(0) * block**0.5).clamp_min(1e-3).float())


def soft_blinks(closure: torch.Tensor) -> torch.Tensor:
    """(B, T) lid closure -> (B,) the number of times it closes past the middle, softly (differentiable)."""
    shut = torch.sigmoid(12 * (closure - 0.6))
    return F.relu(shut.diff(dim=1)).sum(1)


class ExpressionDiscriminator(nn.Module):
    """The sequence discriminator of the upper face: per frame closure, brow (and the head's pose),
    their change, the rate asked for and the audio window; a GRU over the clip, 1-D spatial pyramid
    pooling, 2 FC -> one logit."""

    def __init__(self, cfg: ExpressionNetConfig, audio: AudioConfig):
        super().__init__()
        channels = face_channels(cfg)
        self.speech = SpeechSummary(audio, cfg.audio_dim)
        self.motion = nn.Sequential(nn.Linear(2 * channels + 1, cfg.audio_dim), nn.LeakyReLU(0.2))
        self.gru = nn.GRU(2 * cfg.audio_dim, cfg.disc_hidden, batch_first=True)
        self.levels = (1, 2, 4)
        self.fc = nn.Sequential(nn.Linear(cfg.disc_hidden * sum(self.levels), cfg.disc_hidden), nn.LeakyReLU(0.2), nn.Linear(cfg.disc_hidden, 1))
        self.register_buffer("scale", 1 / torch.tensor([1.0, cfg.brow_range, *POSE_UNIT][:channels]))

    def forward(self, face: torch.Tensor, mfcc: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        """face (B, T, face_channels), mfcc (B, T, n_mfcc, steps), rate (B,) blinks a minute -> logits (B,)"""
        b, t = face.shape[:2]
        x = face * self.scale
        change = torch.cat([torch.zeros_like(x[:, :1]), x.diff(dim=1)], 1)
        r = (rate / RATE_UNIT).reshape(b, 1, 1).expand(b, t, 1)
        h, _ = self.gru(torch.cat([self.motion(torch.cat([x, change, r], -1)), self.speech(mfcc)], -1))
        return self.fc(pyramid_pool_1d(h, self.levels)).squeeze(1)
