"""The mouth refiner: the seed's identity encoder and frame decoder, redrawing a warped mouth crop."""
import dataclasses

import torch
from torch import nn

from talkface.config import AudioConfig, AudioEncoderConfig, FrameDiscriminatorConfig, IdentityEncoderConfig, ModelConfig, RefinerConfig
from talkface.models.audio_encoder import WindowEncoder
from talkface.models.discriminators import FrameDiscriminator
from talkface.models.frame_decoder import FrameDecoder
from talkface.models.identity_encoder import IdentityEncoder


def _layout(cfg: RefinerConfig) -> ModelConfig:
    """The seed's frame layout at the refiner's crop size."""
    return ModelConfig(
        height=cfg.height,
        width=cfg.width,
        identity=IdentityEncoderConfig(channels=tuple(cfg.channels), dim=cfg.dim, first_stride=2),
        frame_disc=FrameDiscriminatorConfig(channels=tuple(cfg.disc_channels), fc=128),
        latent_per_stage=0,
    )


class MouthRefiner(nn.Module):
    """Warped mouth crop + opening map + the frame's speech -> the crop with what the warp could not show.

    The identity encoder (6 layers, U-Net skips from the first 4) encodes the crop and the map; the
    seed's audio window encoder (5 conv + 2 FC, smaller) encodes the MFCC columns around the frame, so
    what the inside shows (teeth, tongue) can follow the sound and not only the opening's shape. The
    frame decoder (6 transposed + 4 convs) gets both codes and starts from the warped crop itself (its
    output is added to the crop in tanh's space), so an untrained refiner changes almost nothing.
    """

    def __init__(self, cfg: RefinerConfig, audio: AudioConfig | None = None):
        """audio: the motion model's MFCC settings (the refiner hears `cfg.audio_steps` of its columns)."""
        super().__init__()
        audio = audio or AudioConfig()
        self.cfg = cfg
        self.speech_shape = (audio.n_mfcc, cfg.audio_steps)
        layout = _layout(cfg)
        self.encoder = IdentityEncoder(layout.identity, cfg.height, cfg.width, in_channels=4)
        steps = dataclasses.replace(audio, window_ms=cfg.audio_steps * audio.hop_ms)
        self.speech = WindowEncoder(steps, AudioEncoderConfig(channels=tuple(cfg.audio_channels), fc=cfg.audio_dim * 2, dim=cfg.audio_dim))
        self.decoder = FrameDecoder(layout, cfg.dim + cfg.audio_dim, self.encoder.bottleneck)
        nn.init.zeros_(self.decoder.t6.weight)
        nn.init.zeros_(self.decoder.t6.bias)

    def forward(self, crop: torch.Tensor, opening: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        """crop: (N, 3, H, W) in [-1, 1], opening: (N, 1, H, W) in [0, 1], speech: (N, n_mfcc, audio_steps)
        -> (N, 3, H, W) in [-1, 1]"""
        code, skips = self.encoder(torch.cat([crop, opening * 2 - 1], 1))
        return self.decoder(torch.cat([code, self.speech(speech)], 1), skips, base=crop)


def mouth_discriminator(cfg: RefinerConfig) -> FrameDiscriminator:
    """The seed's frame discriminator at the refiner's crop size: a mouth crop and the still's -> real?"""
    return FrameDiscriminator(_layout(cfg))
