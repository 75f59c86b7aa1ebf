"""talkface: a still face and a speech recording in, a talking-face video out."""
__version__ = "0.1.0"

__all__ = ["Animator", "__version__"]


def __getattr__(name: str):
    # imported on first use, so `import talkface` stays cheap (no torch, no mediapipe)
    if name == "Animator":
        from talkface.pipeline import Animator

        return Animator
    raise AttributeError(f"module 'talkface' has no attribute {name!r}")
