"""The generator: audio encoder + identity encoder + noise generator -> frame decoder."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from talkface.config import Config
from talkface.models.audio_encoder import AudioEncoder
from talkface.models.frame_decoder import FrameDecoder
from talkface.models.identity_encoder import IdentityEncoder
from talkface.models.noise import NoiseGenerator


@dataclass
class Identity:
    """What the generator keeps of a still face: its code and its U-Net skips (batch of 1 or B)."""

    code: torch.Tensor
    skips: list[torch.Tensor]
    still: torch.Tensor


@dataclass
class GeneratorState:
    """Recurrent state carried from one chunk of frames to the next."""

    audio: torch.Tensor | None = None
    noise: torch.Tensor | None = None


class Generator(nn.Module):
    """Still face + MFCC windows (+ noise) -> frames. Causal in time: frame t sees windows <= t."""

    def __init__(self, cfg: Config):
        super().__init__()
        m = cfg.model
        self.audio_encoder = AudioEncoder(cfg.audio, m.audio)
        self.identity_encoder = IdentityEncoder(m.identity, m.height, m.width)
        self.noise = NoiseGenerator(m.noise)
        latent = m.audio.dim + m.identity.dim + m.noise.dim
        self.decoder = FrameDecoder(m, latent, self.identity_encoder.bottleneck)
        self.size = (m.height, m.width)
        self.residual = m.residual
        self.mouth_mask = m.mouth_mask

    def mask_mouth(self, still: torch.Tensor) -> torch.Tensor:
        """The still with its mouth region set to mid-grey (0): (B, 3, H, W) -> (B, 3, H, W)"""
        h, w = self.size
        y0, y1, x0, x1 = self.mouth_mask
        out = still.clone()
        out[:, :, int(y0 * h) : int(round(y1 * h)), int(x0 * w) : int(round(x1 * w))] = 0.0
        return out

    def encode_identity(self, still: torch.Tensor) -> Identity:
        """still: (B, 3, H, W) in [-1, 1] -> Identity (of the still with its mouth hidden)"""
        assert still.shape[1:] == (3, *self.size), f"expected (B, 3, {self.size[0]}, {self.size[1]}), got {tuple(still.shape)}"
        masked = self.mask_mouth(still)
        code, skips = self.identity_encoder(masked)
        return Identity(code, skips, masked)

    def codes(self, mfcc: torch.Tensor, z: torch.Tensor, state: GeneratorState | None = None) -> tuple[torch.Tensor, torch.Tensor, GeneratorState]:
        """The part that runs through time: mfcc (B, T, n_mfcc, steps), z (B, T, noise) ->
        audio codes (B, T, audio), noise codes (B, T, noise), new state"""
        state = state or GeneratorState()
        audio, audio_h = self.audio_encoder(mfcc, state.audio)
        noise, noise_h = self.noise(z, state.noise)
        return audio, noise, GeneratorState(audio_h, noise_h)

    def render(self, identity: Identity, audio: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The part that is frame by frame: codes (B, T, .) and a face (batch B or 1) -> frames (B, T, 3, H, W)"""
        b, t = audio.shape[:2]
        code = identity.code.unsqueeze(1).expand(b, t, -1)
        latent = torch.cat([audio, code, noise], -1).flatten(0, 1)
        per_frame = lambda x: x.unsqueeze(1).expand(b, t, *x.shape[1:]).flatten(0, 1)
        skips = [per_frame(s) for s in identity.skips]
        base = per_frame(identity.still) if self.residual else None
        return self.decoder(latent, skips, base).view(b, t, 3, *self.size)

    def decode(
        self, identity: Identity, mfcc: torch.Tensor, z: torch.Tensor, state: GeneratorState | None = None
    ) -> tuple[torch.Tensor, GeneratorState]:
        """mfcc: (B, T, n_mfcc, steps), z: (B, T, noise) -> frames (B, T, 3, H, W), new state"""
        audio, noise, state = self.codes(mfcc, z, state)
        return self.render(identity, audio, noise), state

    def forward(self, still: torch.Tensor, mfcc: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """still: (B, 3, H, W), mfcc: (B, T, n_mfcc, steps), z: (B, T, noise) or None -> (B, T, 3, H, W)"""
        if z is None:
            z = self.noise.sample(mfcc.shape[0], mfcc.shape[1]).to(mfcc)
        frames, _ = self.decode(self.encode_identity(still), mfcc, z)
        return frames
