"""Files shipped inside the package: the bundled models, the example face and speech (no heavy imports)."""
from __future__ import annotations

import os

BUNDLED_MODEL = "motion_grid_s1.safetensors"  # the default: speech moves the photo's own pixels (see MODEL_CARD.md)
PAPER_MODEL = "grid_s1.safetensors"  # the seed's direct generator, paper preset (see MODEL_CARD.md)
BUNDLED_MODELS = {"motion": BUNDLED_MODEL, "paper": PAPER_MODEL}  # names `--checkpoint` also takes
EXAMPLE_FACE = "example_face.png"
EXAMPLE_SPEECH = "example_speech.wav"


def asset(name: str) -> str:
    """Path of a file shipped inside the package (weights, the example face and speech)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", name)


def checkpoint_path(spec: str | os.PathLike | None) -> str:
    """The weights to load: the default model for None, a bundled model by name ('motion', 'paper'), or a path."""
    if spec is None:
        return asset(BUNDLED_MODEL)
    spec = os.fspath(spec)
    if spec in BUNDLED_MODELS and not os.path.exists(spec):
        return asset(BUNDLED_MODELS[spec])
    return spec
