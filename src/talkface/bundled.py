"""Files shipped inside the package: the bundled model, the example face and speech (no heavy imports)."""
from __future__ import annotations

import os

BUNDLED_MODEL = "grid_s1.safetensors"  # the paper preset trained on GRID speaker s1 (see MODEL_CARD.md)
EXAMPLE_FACE = "example_face.png"
EXAMPLE_SPEECH = "example_speech.wav"


def asset(name: str) -> str:
    """Path of a file shipped inside the package (weights, the example face and speech)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", name)
