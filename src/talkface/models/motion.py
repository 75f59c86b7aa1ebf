"""The default model's networks: speech -> mouth and chin motion, and the critic of motion sequences.

The seed's audio encoder (5 conv + 2 FC per MFCC window, a 2-layer GRU over time) and noise
generator (a 2-layer GRU over N(0, 0.77^2) noise) feed a small head that predicts, per video
frame, where each point of `media.face.MOTION_POINTS` sits relative to the mouth at rest. The
pixels are then moved by `talkface.render.mouth`; an optional mouth refiner (`models.refiner`, run by
`talkface.render.refine`) draws only what the warp cannot show: the inside of the mouth. The upper
face (blinks, brows, the head's drive) has its own small network, `models.expression.ExpressionNet`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talkface.config import Config
from talkface.models.audio_encoder import AudioEncoder
from talkface.models.discriminators import pyramid_pool_1d
from talkface.models.expression import ExpressionNet
from talkface.models.generator import GeneratorState
from talkface.models.noise import NoiseGenerator
from talkface.models.refiner import MouthRefiner


class MotionModel(nn.Module):
    """MFCC windows (+ noise) -> motion (B, T, P, 2). Causal in time: frame t sees windows <= t.

    Units: the rest mouth's width, in the face's upright frame (x right, y down); zero is the mouth at rest.
    """

    kind = "motion"

    def __init__(self, cfg: Config):
        super().__init__()
        m = cfg.motion
        self.audio_encoder = AudioEncoder(cfg.audio, m.audio)
        self.noise = NoiseGenerator(m.noise)
        self.points = m.points
        self.head = nn.Sequential(nn.Linear(m.audio.dim + m.noise.dim, m.hidden), nn.LeakyReLU(0.2), nn.Linear(m.hidden, m.points * 2))
        nn.init.zeros_(self.head[-1].bias)  # untrained, the mouth stays at rest
        # what the warp of the photo's pixels cannot show, drawn over the warped mouth (talkface.render.refine)
        self.refiner = MouthRefiner(m.refiner, cfg.audio) if m.refiner.enabled else None
        # blinks, brows and the head (talkface.expression)
        self.expression = ExpressionNet(m.expression.net, cfg.audio) if m.expression.net.enabled else None

    def decode(self, mfcc: torch.Tensor, z: torch.Tensor, state: GeneratorState | None = None) -> tuple[torch.Tensor, GeneratorState]:
        """mfcc: (B, T, n_mfcc, steps), z: (B, T, noise) -> motion (B, T, P, 2), new state"""
        state = state or GeneratorState()
        audio, audio_h = self.audio_encoder(mfcc, state.audio)
        noise, noise_h = self.noise(z, state.noise)
        motion = self.head(torch.cat([audio, noise], -1))
        return motion.view(*motion.shape[:2], self.points, 2), GeneratorState(audio_h, noise_h)

    def forward(self, mfcc: torch.Tensor, z: torch.Tensor | None = None, face: tuple | None = None):
        """mfcc: (B, T, n_mfcc, steps), z: (B, T, noise) or None -> motion (B, T, P, 2).
        `face`: (clip MFCC windows, blink rates, noise) for `expression` -> (motion, its closure, brow and learned pose (B, T', face_channels))."""
        if z is None:
            z = self.noise.sample(mfcc.shape[0], mfcc.shape[1]).to(mfcc)
        motion = self.decode(mfcc, z)[0]
        return motion if face is None else (motion, self.expression.decode(*face)[0])


class MotionDiscriminator(nn.Module):
    """The sequence discriminator for motion: per step the motion and its audio window, a GRU over the
    sequence, 1-D spatial pyramid pooling (any length), 2 FC -> one logit (real and in sync).

    Choice: the audio window enters as its MFCC averaged over 5-step slices (13 x 7 numbers), a
    cheap summary that keeps the rhythm of the speech the GRU needs to judge sync.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        d, a = cfg.motion.seq_disc, cfg.audio
        self.slices = max(1, a.steps // 5)
        self.audio = nn.Sequential(nn.Linear(a.n_mfcc * self.slices, d.audio_dim), nn.LeakyReLU(0.2))
        self.motion = nn.Sequential(nn.Linear(cfg.motion.points * 4, d.hidden), nn.LeakyReLU(0.2))
        self.gru = nn.GRU(d.hidden + d.audio_dim, d.hidden, batch_first=True)
        self.levels = d.pyramid
        self.fc = nn.Sequential(nn.Linear(d.hidden * sum(d.pyramid), d.fc), nn.LeakyReLU(0.2), nn.Linear(d.fc, 1))

    def forward(self, motion: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
        """motion: (B, T, P, 2), mfcc: (B, T, n_mfcc, steps) -> logits (B,)"""
        b, t = motion.shape[:2]
        flat = motion.flatten(2)
        velocity = torch.cat([torch.zeros_like(flat[:, :1]), flat.diff(dim=1)], 1)
        m = self.motion(torch.cat([flat, velocity], -1))
        a = self.audio(F.adaptive_avg_pool1d(mfcc.flatten(0, 1), self.slices).flatten(1)).view(b, t, -1)
        out, _ = self.gru(torch.cat([m, a], -1))
        return self.fc(pyramid_pool_1d(out, self.levels)).squeeze(1)
