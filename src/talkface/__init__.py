"""talkface: a still face and a speech recording in, a talking-face video out."""
__version__ = "0.1.0"
