from torch import nn


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm: per-sample, so training, evaluation and one-frame streaming behave alike."""
    return nn.GroupNorm(min(8, channels // 2) or 1, channels)
