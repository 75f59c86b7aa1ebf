"""The mouth refiner at work: a mouth crop of the warped frame in, its corrections pasted back.

`mouth_matrix` places the crop: a box `box_width` inter-ocular distances wide and half as high,
centred 0.1 of that distance below the mouth corners, upright in the face's frame (the lip-sync
expert's mouth box, turned with the head). `opening_map` draws the new mouth opening into it, and
`speech_slice` cuts the frame's speech (the MFCC columns around it) from the motion model's window.
`Refinement` is made once per face (a photo, or a video frame when dubbing) and applied to every
warped frame: the network redraws the crop, and only the change it makes where the warp had nothing
of the photo's to show (the painted inside of a mouth opened wider than the photo's, `mouth_region`),
faded to nothing at the crop's edges, is added to the full-resolution frame: the photo's own pixels
(lips, skin, the teeth it shows) stay as the warp moved them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from talkface.config import RefinerConfig
from talkface.geometry import affine_crop, eye_axes
from talkface.media.face import LIPS_INNER, MOTION_POINTS, MOUTH_CORNERS
from talkface.metrics.landmarks import inter_ocular
from talkface.metrics.sync import audio_slice
from talkface.models.refiner import MouthRefiner
from talkface.pixels import to_tensor
from talkface.threads import one_thread
from talkface.render.mouth import Painted

_CORNER_ROWS = [MOTION_POINTS.index(i) for i in MOUTH_CORNERS]
_INNER_ROWS = [MOTION_POINTS.index(i) for i in LIPS_INNER]
LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601
EDGE = 0.15  # share of the crop's height over which changes fade out toward its border
LIP_MARGIN = 0.05  # the refiner changes what the warp painted and this share of the crop's width around it


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """A face's left-to-right unit vector (between the eyes) and its inter-ocular (iris) distance in pixels."""
    lm = np.asarray(landmarks, np.float64)
    return eye_axes(lm)[0], float(inter_ocular(lm))


def mouth_matrix(corners: np.ndarray, u: np.ndarray, iod: float, cfg: RefinerConfig) -> np.ndarray:
    """M (2, 3) taking picture pixels to the mouth crop's, for mouth corners (2, 2), the face's unit
    left-to-right vector u (2,) and its inter-ocular distance."""
    v = np.array([-u[1], u[0]])
    centre = np.asarray(corners, np.float64).mean(0) + 0.1 * iod * v
    scale = cfg.width / (cfg.box_width * iod)
    R = scale * np.stack([u, v])  # rows: the crop's x and y axes
    return np.hstack([R, (np.array([cfg.width / 2, cfg.height / 2]) - R @ centre)[:, None]])


def moved_mouth_matrix(points: np.ndarray, u: np.ndarray, iod: float, cfg: RefinerConfig) -> np.ndarray:
    """`mouth_matrix` for a face whose MOTION_POINTS sit at `points` (53, 2): the crop follows the moved mouth's corners."""
    return mouth_matrix(np.asarray(points)[_CORNER_ROWS], u, iod, cfg)


def _offset(M: np.ndarray, x0: float, y0: float) -> np.ndarray:
    """M (picture -> crop) for pixels of a region of the picture whose top-left corner is (x0, y0)."""
    out = M.copy()
    out[:, 2] += M[:, :2] @ np.array([x0, y0], np.float64)
    return out


def _covered(M: np.ndarray, size: tuple[int, int], shape: tuple[int, ...], before: int = 0, after: int = 0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the picture pixels (of `shape`) that a crop of `size` (h, w) covers, grown by
    `before` pixels up and left and `after` down and right, clipped."""
    h, w = size
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ cv2.invertAffineTransform(M).T
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - before, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + after, (shape[1], shape[0]))
    return int(x0), int(y0), int(x1), int(y1)


def crop_mouth(picture: np.ndarray, M: np.ndarray, cfg: RefinerConfig) -> np.ndarray:
    """The mouth crop (height, width, 3) of a picture; a large face is shrunk by area first (no aliasing)."""
    return affine_crop(picture, M, (cfg.height, cfg.width), shrink_below=0.7)


def opening_map(points: np.ndarray, M: np.ndarray, cfg: RefinerConfig) -> np.ndarray:
    """(height, width) float32 in [0, 1]: inside the inner lips of MOTION_POINTS positions (53, 2) in picture pixels."""
    loop = np.asarray(points, np.float64)[_INNER_ROWS] @ M[:, :2].T + M[:, 2]
    out = np.zeros((cfg.height, cfg.width), np.uint8)
    cv2.fillPoly(out, [np.round(loop * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return out.astype(np.float32) / 255


def luma(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB -> (..., 1, H, W), BT.601 weights."""
    return (images * LUMA.to(images).view(3, 1, 1)).sum(-3, keepdim=True)


def grey(change: torch.Tensor) -> torch.Tensor:
    """A change (N, 3, H, W) of the crop -> its luma, the same in every channel: the refiner learns light
    and shade (teeth, the shadow of a tongue), not one man's colours; in use it takes the hue of the
    photo's light (`Refinement`)."""
    return luma(change).expand_as(change)


def speech_slice(window: np.ndarray, cfg: RefinerConfig) -> np.ndarray:
    """A frame's MFCC window (n_mfcc, steps), as the motion model gets it -> the refiner's (n_mfcc, audio_steps) around the frame."""
    return audio_slice(window, cfg.audio_steps)


def painted_map(painted: Painted | None, M: np.ndarray, cfg: RefinerConfig) -> np.ndarray:
    """(height, width) float32 in [0, 1]: where the warp painted the inside of the mouth (`MouthWarp.render_painted`), in the crop."""
    if painted is None:
        return np.zeros((cfg.height, cfg.width), np.float32)
    return cv2.warpAffine(painted.alpha, _offset(M, painted.x0, painted.y0), (cfg.width, cfg.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def mouth_region(painted: np.ndarray, cfg: RefinerConfig) -> np.ndarray:
    """(height, width) float32 in [0, 1]: where the refiner may change the crop: what the warp painted
    (`painted_map`: the photo had nothing to show there) grown by `LIP_MARGIN` of the crop's width,
    with a soft edge. The photo's own pixels (its lips, and the teeth it shows) keep the warp's; a
    mouth no wider open than the photo's is left as it is."""
    r = max(1, round(LIP_MARGIN * cfg.width / 2))
    grown = cv2.dilate(painted, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return cv2.GaussianBlur(grown, (0, 0), r / 2)


def edge_fade(cfg: RefinerConfig) -> np.ndarray:
    """(height, width) float32: 1 in the middle of the crop, falling smoothly to 0 at its border."""
    edge = EDGE * cfg.height

    def ramp(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / edge
        t = np.clip(d - 0.15, 0, 1)  # the outermost pixels stay exactly 0
        return t * t * (3 - 2 * t)

    return np.outer(ramp(cfg.height), ramp(cfg.width)).astype(np.float32)


class Refinement:
    """A refiner ready for one face: `prepare` a warped frame's mouth crop, run the network on it (`run_refiner`,
    for many frames at once), `finish` the frame with its answer.

    landmarks: (478, 2) the face's mesh in the picture (its axes and size place the crop); skin: the RGB
    colour of the face's cheeks (`warp.MouthWarp.skin`): the refiner draws light and shade (`grey`),
    given the hue of the light the photo was taken in at the same luma, so drawn teeth are lit like the
    face (a neutral grey reads blue next to warm lips).
    """

    def __init__(self, net: MouthRefiner, landmarks: np.ndarray, skin: np.ndarray):
        self.net, self.cfg = net, net.cfg  # or anything called like it (accel.RefinerGraph)
        self.u, self.iod = face_frame(landmarks)
        self.fade = edge_fade(self.cfg)
        skin = np.maximum(np.asarray(skin, np.float32), 1.0)
        self.tint = skin / float(skin @ LUMA.numpy())  # luma 1

    def prepare(self, frame: np.ndarray, points: np.ndarray, painted: Painted | None, speech: np.ndarray) -> "Prepared | None":
        """What the network needs for one warped frame (H, W, 3) uint8 whose MOTION_POINTS sit at `points`
        (53, 2), where its warp painted the mouth, and the frame's MFCC window (n_mfcc, steps): None when
        nothing was painted (the frame stays as it is)."""
        if painted is None:
            return None
        cfg = self.cfg
        M = moved_mouth_matrix(points, self.u, self.iod, cfg)
        return Prepared(crop_mouth(frame, M, cfg), opening_map(points, M, cfg), speech_slice(speech, cfg), M,
                        self.fade * mouth_region(painted_map(painted, M, cfg), cfg))

    def finish(self, frame: np.ndarray, prepared: Prepared, refined: np.ndarray) -> np.ndarray:
        """The frame with the network's redrawing (`refined`: its output for `prepared`, (3, height, width)
        float32 in [-1, 1]) added where the warp painted, in place."""
        change = luma_change(refined, prepared.crop) * self.tint * prepared.where[..., None]
        return paste_change(frame, change, prepared.M, out=frame)


@dataclass
class Prepared:
    """One frame's mouth crop ready for the network: crop (height, width, 3) uint8, opening (height, width)
    and speech (n_mfcc, audio_steps) float32, M (2, 3) picture -> crop, where (height, width) the network may change it."""

    crop: np.ndarray
    opening: np.ndarray
    speech: np.ndarray
    M: np.ndarray
    where: np.ndarray


@torch.inference_mode()
def run_refiner(net, prepared: list[Prepared]) -> np.ndarray:
    """One network call for many frames' crops (of any faces): (N, 3, height, width) float32 in [-1, 1].
    `net`: the model's refiner, or anything called like it (accel.RefinerGraph)."""
    module = isinstance(net, torch.nn.Module)
    device = next(net.parameters()).device if module else torch.device("cpu")
    x = to_tensor(np.stack([p.crop for p in prepared])).to(device)
    opening = torch.from_numpy(np.stack([p.opening for p in prepared]))[:, None].to(device)
    sound = torch.from_numpy(np.stack([p.speech for p in prepared])).float().to(device)
    with one_thread() if module and device.type == "cpu" and len(prepared) == 1 else contextlib.nullcontext():
        return net(x, opening, sound).float().cpu().numpy()


def luma_change(refined: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """The network's change of a crop (uint8 (h, w, 3) -> its output (3, h, w) in [-1, 1]), as (h, w, 1) luma in pixel levels (`grey`)."""
    before = crop.astype(np.float32) @ (LUMA.numpy() / 127.5) - 1
    return ((np.tensordot(LUMA.numpy(), refined, 1) - before) * 127.5)[..., None]


def paste_change(frame: np.ndarray, change: np.ndarray, M: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """frame (H, W, 3) uint8 plus a change (h, w, 3) float32 made in crop pixels (M: picture -> crop);
    only the pixels the crop covers can change. `out`: where to write it (it may be `frame` itself);
    None: a new picture (`frame` itself when nothing changes)."""
    x0, y0, x1, y1 = _covered(M, change.shape[:2], frame.shape, after=1)
    if out is None:
        if x1 <= x0 or y1 <= y0:
            return frame
        out = frame.copy()
    elif out is not frame:
        out[...] = frame
    if x1 <= x0 or y1 <= y0:
        return out
    delta = cv2.warpAffine(change, _offset(M, x0, y0), (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = frame[y0:y1, x0:x1].astype(np.float32) + delta
    out[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
    return out
