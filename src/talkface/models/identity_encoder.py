import torch
from torch import nn

from talkface.models.layers import norm

from talkface.config import IdentityEncoderConfig


class IdentityEncoder(nn.Module):
    """6-layer CNN, 3xHxW face (or `in_channels` maps) -> `dim` code; the first 4 layers' outputs are the U-Net skips.

    Choice: 4x4 stride-2 convs (the first one stride `first_stride`), then one conv whose kernel
    covers the whole remaining map, so the code has no spatial extent.
    """

    def __init__(self, cfg: IdentityEncoderConfig, height: int, width: int, in_channels: int = 3):
        super().__init__()
        assert len(cfg.channels) == 5, "the identity encoder has 5 conv layers before the code layer"
        chans = (in_channels, *cfg.channels)
        layers = []
        for i in range(5):
            stride = cfg.first_stride if i == 0 else 2
            k, p = (4, 1) if stride == 2 else (3, 1)
            n: nn.Module = norm(chans[i + 1]) if i > 0 else nn.Identity()
            layers.append(nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], k, stride, p), n, nn.LeakyReLU(0.2)))
        self.layers = nn.ModuleList(layers)
        div = 16 * cfg.first_stride
        assert height % div == 0 and width % div == 0, f"frame size must be a multiple of {div}"
        self.bottleneck = (height // div, width // div)
        self.code = nn.Sequential(nn.Conv2d(chans[5], cfg.dim, self.bottleneck), nn.Tanh())
        self.dim = cfg.dim

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """image: (B, in_channels, H, W) in [-1, 1] -> code (B, dim), skips [4 maps, finest first]"""
        skips = []
        x = image
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < 4:
                skips.append(x)
        return self.code(x).flatten(1), skips
