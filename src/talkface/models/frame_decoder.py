import torch
from torch import nn

from talkface.models.layers import norm

from talkface.config import ModelConfig


def inverse_tanh(x: torch.Tensor) -> torch.Tensor:
    """atanh of x clamped to +-0.995, written with log so that it exports to ONNX."""
    x = x.clamp(-0.995, 0.995)
    return 0.5 * torch.log((1 + x) / (1 - x))


class FrameDecoder(nn.Module):
    """6 transposed convs and 4 convs, alternating; a skip is concatenated before each conv.

    latent (audio + identity + noise) -> T1 -> [T2, cat skip4, C1] -> [T3, cat skip3, C2]
    -> [T4, cat skip2, C3] -> [T5, cat skip1, C4] -> T6 -> tanh image.
    Choice: a linear projection of the latent is also concatenated before each conv (broadcast
    over the map), so speech reaches the mouth's pixels through a short path at every scale.
    """

    def __init__(self, cfg: ModelConfig, latent_dim: int, bottleneck: tuple[int, int]):
        super().__init__()
        c = cfg.identity.channels  # mirror the encoder; c[0..3] are the skip widths
        first_stride = cfg.identity.first_stride
        self.t1 = nn.Sequential(nn.ConvTranspose2d(latent_dim, c[4], bottleneck), norm(c[4]), nn.ReLU())
        widths = [c[4], c[3], c[2], c[1], c[0]]
        k = cfg.latent_per_stage
        self.stages = nn.ModuleList(
            nn.ModuleDict(
                {
                    "up": nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), norm(cout), nn.ReLU()),
                    "latent": nn.Linear(latent_dim, k) if k else nn.Identity(),
                    "conv": nn.Sequential(nn.Conv2d(2 * cout + k, cout, 3, 1, 1), norm(cout), nn.ReLU()),
                }
            )
            for cin, cout in zip(widths[:-1], widths[1:])
        )
        self.latent_per_stage = k
        k, p = (4, 1) if first_stride == 2 else (3, 1)
        self.t6 = nn.ConvTranspose2d(c[0], 3, k, first_stride, p)

    def forward(self, latent: torch.Tensor, skips: list[torch.Tensor], base: torch.Tensor | None = None) -> torch.Tensor:
        """latent: (N, latent_dim), skips: 4 maps (N, C_i, H_i, W_i) finest first, base: (N, 3, H, W) -> (N, 3, H, W)

        With `base` (the still), the last layer's output is added to it before the tanh, in tanh's
        own (atanh) space: the decoder learns what changes, starting from a copy of the still.
        """
        x = self.t1(latent[:, :, None, None])
        for stage, skip in zip(self.stages, reversed(skips)):
            up = stage["up"](x)
            parts = [up, skip]
            if self.latent_per_stage:
                z = stage["latent"](latent)[:, :, None, None]
                parts.append(z.expand(-1, -1, *up.shape[2:]))
            x = stage["conv"](torch.cat(parts, 1))
        x = self.t6(x)
        if base is not None:
            x = x + inverse_tanh(base)
        return torch.tanh(x)
