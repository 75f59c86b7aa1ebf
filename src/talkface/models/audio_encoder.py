import torch
from torch import nn


from talkface.config import AudioConfig, AudioEncoderConfig


def conv_block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    # BatchNorm (statistics over the batch, not per window): loudness differences between windows
    # survive, which per-sample norms would erase; in eval mode it is a fixed affine map.
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class WindowEncoder(nn.Module):
    """5 conv + 2 FC layers on one MFCC window, VGG-M style (pooling after conv 1, 2 and 5)."""

    def __init__(self, audio: AudioConfig, cfg: AudioEncoderConfig):
        super().__init__()
        assert len(cfg.channels) == 5, "the audio encoder has 5 conv layers"
        pools = (True, True, False, False, True)
        chans = (1, *cfg.channels)
        self.convs = nn.Sequential(*(conv_block(chans[i], chans[i + 1], pools[i]) for i in range(5)))
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 1, audio.n_mfcc, audio.steps)).numel()
        self.fc = nn.Sequential(nn.Linear(flat, cfg.fc), nn.LeakyReLU(0.2), nn.Linear(cfg.fc, cfg.dim), nn.Tanh())

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        """mfcc: (N, n_mfcc, steps) -> (N, dim)"""
        return self.fc(self.convs(mfcc.unsqueeze(1)).flatten(1))


class AudioEncoder(nn.Module):
    """Per-window CNN, then a causal 2-layer GRU over time (so frames can be produced one at a time)."""

    def __init__(self, audio: AudioConfig, cfg: AudioEncoderConfig):
        super().__init__()
        self.window = WindowEncoder(audio, cfg)
        self.gru = nn.GRU(cfg.dim, cfg.dim, num_layers=cfg.gru_layers, batch_first=True)
        self.dim = cfg.dim

    def forward(self, mfcc: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mfcc: (B, T, n_mfcc, steps) -> codes (B, T, dim), GRU hidden (layers, B, dim)"""
        b, t = mfcc.shape[:2]
        per_window = self.window(mfcc.flatten(0, 1)).view(b, t, -1)
        out, hidden = self.gru(per_window, hidden)
        return out, hidden
