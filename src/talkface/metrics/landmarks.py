"""Face landmarks for the metrics: mediapipe face mesh, and the measures and boxes read from it.

`detect_landmarks` is the only function that calls mediapipe, so another detector (or the shared
face-alignment module) can replace it without touching the metrics. Landmarks are (T, 478, 2)
float32 pixel coordinates (x, y); frames where no face is found are NaN.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from talkface.config import SyncConfig
from talkface.media.face import APERTURE_PAIRS, EYE_CORNERS, MOUTH_CORNERS, NUM_LANDMARKS, FaceMesh
from talkface.media.face import IRIS_CENTRES as IRIS

FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
MIN_DETECT_SIDE = 256  # small frames (e.g. 128x96 crops) are enlarged before detection


def detect_landmarks(frames: Iterable[np.ndarray], depth: bool = False, skull: bool | tuple[np.ndarray, np.ndarray] = False) -> np.ndarray:
    """Face-mesh landmarks of a video's frames, tracked from frame to frame.

    frames: RGB uint8 (H, W, 3) arrays, one video in order -> (T, 478, 2) float32 pixels, NaN where
    no face is found; with `depth`, (T, 478, 3): each point's depth in pixels too (larger: farther).
    With `skull`, the skull's points follow their pixels from the first frame with a face, or from a
    given reference (picture, landmarks) (`geometry.SkullTracker`): what the head's pose is read from.
    """
    from talkface.geometry import SkullTracker  # geometry names its landmarks from media.face, as this module

    out, k = [], 3 if depth else 2
    follow = SkullTracker(skull if isinstance(skull, tuple) else None) if skull is not False else None
    with FaceMesh(static=False, max_faces=1) as mesh:
        for frame in frames:
            h, w = frame.shape[:2]
            scale = max(1.0, MIN_DETECT_SIDE / min(h, w))
            image = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC) if scale > 1 else frame
            result = mesh.process(np.ascontiguousarray(image))
            if not result.multi_face_landmarks:
                out.append(np.full((NUM_LANDMARKS, k), np.nan, np.float32))
                continue
            pts = result.multi_face_landmarks[0].landmark
            found = np.array([(p.x * w, p.y * h, p.z * w)[:k] for p in pts], np.float32)[:NUM_LANDMARKS]
            out.append(follow(frame, found) if follow is not None else found)
    if not out:
        return np.zeros((0, NUM_LANDMARKS, k), np.float32)
    return np.stack(out)


def _dist(lm: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1)


def eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 2) each: the iris centres, or the eye-corner midpoints when irises are missing."""
    if lm.shape[-2] > max(IRIS):
        return lm[..., IRIS[0], :], lm[..., IRIS[1], :]
    a, b, c, d = EYE_CORNERS  # when the iris points are missing
    return (lm[..., a, :] + lm[..., b, :]) / 2, (lm[..., c, :] + lm[..., d, :]) / 2


def inter_ocular(lm: np.ndarray) -> np.ndarray:
    """Distance between the eye centres, in pixels: (..., N, 2) -> (...)"""
    left, right = eye_centres(lm)
    return np.linalg.norm(left - right, axis=-1)


def mouth_aperture(lm: np.ndarray) -> np.ndarray:
    """Inner-lip opening over inter-ocular distance: (T, N, 2) -> (T,); 0 closed, ~0.2 wide open."""
    gap = np.mean([_dist(lm, a, b) for a, b in APERTURE_PAIRS], axis=0)
    return gap / inter_ocular(lm)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: centre (cx, cy) and size (w, h)."""

    cx: float
    cy: float
    w: float
    h: float

    def scaled(self, factor: float) -> "Box":
        return Box(self.cx, self.cy, self.w * factor, self.h * factor)

    def bounds(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """Integer (y0, y1, x0, x1), clipped to an image of `shape`."""
        H, W = shape[:2]
        y0, y1 = int(round(self.cy - self.h / 2)), int(round(self.cy + self.h / 2))
        x0, x1 = int(round(self.cx - self.w / 2)), int(round(self.cx + self.w / 2))
        return max(0, y0), min(H, max(y1, y0 + 1)), max(0, x0), min(W, max(x1, x0 + 1))

    def crop(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The box resampled to `size` (h, w); parts outside the image repeat its border."""
        h, w = size
        sx, sy = w / self.w, h / self.h
        m = np.array([[sx, 0, w / 2 - sx * self.cx], [0, sy, h / 2 - sy * self.cy]], np.float32)
        interp = cv2.INTER_AREA if sx < 0.7 else cv2.INTER_LINEAR
        if interp == cv2.INTER_AREA:  # warpAffine has no area filter: shrink first, then warp
            small = cv2.resize(image, (max(1, round(image.shape[1] * sx)), max(1, round(image.shape[0] * sy))), interpolation=cv2.INTER_AREA)
            m[0, 0] *= image.shape[1] / small.shape[1]
            m[1, 1] *= image.shape[0] / small.shape[0]
            image, interp = small, cv2.INTER_LINEAR
        return cv2.warpAffine(image, m, (w, h), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def mouth_box(lm: np.ndarray, width: float = 1.4, aspect: float = 2.0) -> Box:
    """The mouth region of one frame's landmarks (N, 2): `width` inter-ocular distances wide,
    width / `aspect` high, centred a little below the mouth corners (which barely move as the jaw opens)."""
    iod = float(inter_ocular(lm))
    corners = lm[list(MOUTH_CORNERS)].mean(0)
    return Box(float(corners[0]), float(corners[1] + 0.1 * iod), width * iod, width * iod / aspect)


def face_box(lm: np.ndarray, aspect: float = 4 / 3) -> Box:
    """A face crop of one frame's landmarks (N, 2) with height / width = `aspect`: the face oval
    (forehead to chin) fills 85% of the height."""
    oval = lm[list(FACE_OVAL)]
    lo, hi = oval.min(0), oval.max(0)
    h = (hi[1] - lo[1]) / 0.85
    return Box(float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), h / aspect, h)


def median_box(boxes: list[Box]) -> Box | None:
    """One box for a clip: the per-field median of per-frame boxes (robust to a bad detection)."""
    if not boxes:
        return None
    return Box(*np.median(np.array([(b.cx, b.cy, b.w, b.h) for b in boxes]), axis=0).tolist())


def clip_box(landmarks: np.ndarray, make: Callable[..., Box] = mouth_box, **kwargs) -> Box | None:
    """`make` (mouth_box or face_box) applied to every frame with a face, then the median; None if no face."""
    found = ~np.isnan(landmarks).any(axis=(1, 2))
    return median_box([make(lm, **kwargs) for lm in landmarks[found]])


def fallback_mouth_box(shape: tuple[int, ...], aspect: float = 2.0) -> Box:
    """Where the mouth sits in an aligned face crop when no face is detected: the lower middle."""
    H, W = shape[:2]
    w = 0.55 * W
    return Box(W / 2, 0.74 * H, w, w / aspect)


def to_gray(frame: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> gray (H, W) uint8."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def mouth_crops(frames: Iterable[np.ndarray], box: Box, cfg: SyncConfig, margin: int = 0) -> np.ndarray:
    """Grayscale crops (T, h + 2 margin, w + 2 margin) uint8 of `box` (grown to include the margin)."""
    h, w = cfg.crop_height, cfg.crop_width
    grown = Box(box.cx, box.cy, box.w * (w + 2 * margin) / w, box.h * (h + 2 * margin) / h)
    size = (h + 2 * margin, w + 2 * margin)
    crops = [grown.crop(to_gray(f), size) for f in frames]
    return np.stack(crops) if crops else np.zeros((0, *size), np.uint8)
