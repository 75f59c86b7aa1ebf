"""The one place that knows the networks' pixel range: [-1, 1] floats <-> uint8 RGB."""
import numpy as np
import torch


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]"""
    t = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)"""
    x = images.detach().float().movedim(-3, -1).add(1.0).mul(127.5).round_().clamp_(0, 255)
    return x.to(torch.uint8).cpu().numpy()
