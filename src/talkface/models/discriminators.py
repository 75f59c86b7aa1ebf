"""The two critics: a frame discriminator (identity/realism) and a sequence discriminator (sync, motion)."""
import torch
import torch.nn.functional as F
from torch import nn

from talkface.config import AudioConfig, ModelConfig
from talkface.models.audio_encoder import WindowEncoder
from talkface.config import AudioEncoderConfig


def conv_pool(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(0.2), nn.AvgPool2d(2))


def conv_pool_stack(channels: tuple[int, ...], cin: int) -> nn.Sequential:
    chans = (cin, *channels)
    return nn.Sequential(*(conv_pool(chans[i], chans[i + 1]) for i in range(len(channels))))


class FrameDiscriminator(nn.Module):
    """Frame concatenated with the still -> 4 conv+pool -> 2 FC -> one logit (real and same identity)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.frame_disc
        assert len(d.channels) == 4, "the frame discriminator has 4 conv+pool layers"
        self.features = conv_pool_stack(d.channels, 6)
        flat = d.channels[-1] * (cfg.height // 16) * (cfg.width // 16)
        self.fc = nn.Sequential(nn.Linear(flat, d.fc), nn.LeakyReLU(0.2), nn.Linear(d.fc, 1))

    def forward(self, frame: torch.Tensor, still: torch.Tensor) -> torch.Tensor:
        """frame, still: (N, 3, H, W) -> logits (N,)"""
        return self.fc(self.features(torch.cat([frame, still], 1)).flatten(1)).squeeze(1)


def pyramid_pool_1d(x: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """1-D spatial pyramid pooling over time: (B, T, C) -> (B, C * sum(levels)) for any T >= 1."""
    x = x.transpose(1, 2)
    return torch.cat([F.adaptive_max_pool1d(x, n).flatten(1) for n in levels], 1)


class SequenceDiscriminator(nn.Module):
    """Per-frame CNN + per-window audio CNN -> GRU over the sequence -> 1-D SPP -> 2 FC -> one logit.

    Choice: the audio condition enters at every time step (concatenated with the frame features),
    so the GRU can judge whether the mouth follows the speech.
    """

    def __init__(self, audio: AudioConfig, cfg: ModelConfig):
        super().__init__()
        d = cfg.seq_disc
        self.frames = conv_pool_stack(d.channels, 3)
        flat = d.channels[-1] * (cfg.height // 16) * (cfg.width // 16)
        self.frame_fc = nn.Sequential(nn.Linear(flat, d.hidden), nn.LeakyReLU(0.2))
        small = AudioEncoderConfig(channels=(16, 32, 32, 64, 64), fc=d.audio_dim, dim=d.audio_dim)
        self.audio = WindowEncoder(audio, small)
        self.gru = nn.GRU(d.hidden + d.audio_dim, d.hidden, batch_first=True)
        self.levels = d.pyramid
        self.fc = nn.Sequential(nn.Linear(d.hidden * sum(d.pyramid), d.fc), nn.LeakyReLU(0.2), nn.Linear(d.fc, 1))

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
        """frames: (B, T, 3, H, W), mfcc: (B, T, n_mfcc, steps) -> logits (B,)"""
        b, t = frames.shape[:2]
        f = self.frame_fc(self.frames(frames.flatten(0, 1)).flatten(1)).view(b, t, -1)
        a = self.audio(mfcc.flatten(0, 1)).view(b, t, -1)
        out, _ = self.gru(torch.cat([f, a], -1))
        return self.fc(pyramid_pool_1d(out, self.levels)).squeeze(1)
