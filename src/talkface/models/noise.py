import torch
from torch import nn

from talkface.config import NoiseConfig


class NoiseGenerator(nn.Module):
    """2-layer GRU that turns i.i.d. N(0, std^2) noise into temporally coherent noise."""

    def __init__(self, cfg: NoiseConfig):
        super().__init__()
        self.gru = nn.GRU(cfg.dim, cfg.dim, num_layers=cfg.gru_layers, batch_first=True)
        self.dim = cfg.dim
        self.std = cfg.std

    def sample(self, batch: int, frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw input noise (B, T, dim), drawn frame by frame so a stream draws the same numbers."""
        draws = [torch.randn(batch, 1, self.dim, generator=generator) for _ in range(frames)]
        return torch.cat(draws, 1) * self.std

    def forward(self, z: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, T, dim) -> coherent noise (B, T, dim), hidden (layers, B, dim)"""
        return self.gru(z, hidden)
