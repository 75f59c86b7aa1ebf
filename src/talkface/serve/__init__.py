"""`talkface serve`: a web page where a photo speaks live with your microphone or an audio file."""
from talkface.serve.app import Limits, make_app, serve

__all__ = ["Limits", "make_app", "serve"]
