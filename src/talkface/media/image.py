"""Images in: any common format, mode or bit depth -> 8-bit RGB, upright (EXIF orientation applied)."""
from __future__ import annotations

import os
import re
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from talkface.errors import TalkfaceError
from talkface.media.audio import check_readable


def load_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Grayscale, palette, RGBA (composited on white), CMYK, 16-bit and float
    images are converted; a file that is not an image raises TalkfaceError."""
    path = check_readable(path, "image")
    try:
        with warnings.catch_warnings():  # Pillow's notes on odd files (a decompression bomb, corrupt EXIF or TIFF tags)
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except Image.DecompressionBombError as e:
        size = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(e))
        detail = f": {size[1]} pixels (at most {size[2]})" if size else ""
        raise TalkfaceError(f"is too large{detail}", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise TalkfaceError(f"cannot be read as an image ({_problem(e)})", path) from None


def _problem(e: Exception) -> str:
    """What went wrong, in a few words and without the path (the message names it already)."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image, or a format that cannot be read"
    text = str(e)
    if "truncated" in text.lower() or isinstance(e, EOFError):
        return "the file is truncated"
    if any(sign in text.lower() for sign in ("broken data stream", "decoder error", "crc", "unrecognized data stream")):
        return "its data is corrupt"
    return text.split(":")[0].strip() or type(e).__name__


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        if im.mode == "F" and a.max() <= 1.0:
            top = 1.0
        g = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, -1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if im.mode == "RGB" and im.getbands() == ("R", "G", "B"):
        return np.asarray(im)
    return np.asarray(im.convert("RGB"))
