"""The torch device a command runs on: --device checked before any work, in one line when it cannot be had."""
from __future__ import annotations

import torch

from talkface.errors import TalkfaceError

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(device: str | None = None) -> torch.device:
    """`device` ("auto" or None: a CUDA GPU when torch sees one, else the CPU), or a TalkfaceError
    naming --device when torch does not know it or this machine does not have it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise TalkfaceError(f"--device {device!r} is not a device (choose {DEVICES})") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise TalkfaceError(f"--device {device}: torch sees no CUDA GPU on this machine (use --device cpu or auto)")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise TalkfaceError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA GPU(s), from cuda:0")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise TalkfaceError(f"--device {device}: this machine has no MPS device (use --device cpu or auto)")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise TalkfaceError(f"--device {device}: talkface runs on {DEVICES}")
    return chosen
