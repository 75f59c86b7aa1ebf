"""A face made ready to move: its mouth at rest, the scale of its motion, and the warps of its pixels.

The motion model speaks in a face-independent unit (the rest mouth's width, in the face's own
frame, relative to the mouth at rest). `FaceRig` turns that into pixel positions on one picture and
renders a frame in stages, each moving the photo's own pixels:

1. the mouth and chin (`talkface.render.mouth.MouthWarp`), then, when the model has one, the mouth refiner
   draws what the warp cannot show (`talkface.render.refine`);
2. the lids and brows (`talkface.render.eyes.EyeWarp`), for a frame's `Expression`;
3. the whole head, turned in 3-D (`talkface.render.head.HeadWarp`).

It is made once per photo (or once per video frame when dubbing) and reused for every frame.
`render` runs the stages in one go; apart (`warp_mouth`, then `finish` with the refiner's answer),
one refiner call serves the frames of many streams, or a whole chunk of one.
Where the face mesh gave depth, the mouth moves in the face's own 3-D frame: its width is the 3-D
one, and its motion is projected with the face's axes, so a turned face opens its mouth as far,
for its size, as a frontal one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from talkface.expression import Expression
from talkface.render.eyes import EyeWarp
from talkface.geometry import face_axes
from talkface.render.head import HeadWarp
from talkface.media.face import MOTION_POINTS, MOUTH_CORNERS, Face, align_matrix
from talkface.models.refiner import MouthRefiner
from talkface.render.refine import MouthCrop, Refinement, run_refiner
from talkface.render.mouth import MouthWarp, close_mouth


class FaceRig:
    """picture (H, W, 3) uint8 and its face -> frames with the mouth moved by `motion` (P, 2).

    The rest shape is estimated from the picture itself (`close_mouth`): a photo whose mouth is open
    closes it in silence. `gain` scales every motion (1: as the model predicts). `refiner`: the
    model's mouth refiner (or its graph, `accel.RefinerGraph`), or None for the warp alone.
    """

    def __init__(self, picture: np.ndarray, face: Face, gain: float = 1.0, refiner: MouthRefiner | None = None):
        self.face, self.shape = face, picture.shape[:2]
        self.warp = MouthWarp(picture, face.landmarks)
        self._eyes: EyeWarp | None = None
        self._head: HeadWarp | None = None
        self.refinement = Refinement(refiner, face.landmarks, self.warp.skin) if refiner is not None else None
        rest = close_mouth(face.landmarks)
        self.rest = rest[MOTION_POINTS].astype(np.float64)  # (P, 2) picture pixels
        points = face.points
        if points is not None:  # the face's own 3-D frame: a row vector m (right, down) is m @ axes[:2, :2] in the picture
            points = points.astype(np.float64)
            points[:, :2] = rest
            width = float(np.linalg.norm(points[MOUTH_CORNERS[0]] - points[MOUTH_CORNERS[1]]))
            self.unit = face_axes(points)[:2, :2] * (width * gain)
        else:
            width = float(np.linalg.norm(rest[MOUTH_CORNERS[0]] - rest[MOUTH_CORNERS[1]]))
            M = align_matrix(face)  # picture -> upright crop: a rotation times a scale
            rotation = M[:, :2] / np.hypot(M[0, 0], M[0, 1])
            # a row vector m in the upright frame is m @ rotation in the picture (rotation is orthonormal)
            self.unit = rotation * (width * gain)

    def target(self, motion: np.ndarray) -> np.ndarray:
        """motion (P, 2) in rest mouth widths -> positions (P, 2) of MOTION_POINTS in picture pixels"""
        return self.rest + np.asarray(motion, np.float64) @ self.unit

    def warp_mouth(self, motion: np.ndarray, speech: np.ndarray) -> Warped:
        """Stage 1: the picture with its mouth and chin moved by `motion` (P, 2), and what the refiner
        needs to draw the inside of the mouth for the frame's speech (its MFCC window (n_mfcc, steps))."""
        target = self.target(motion)
        if self.refinement is None:
            return Warped(self.warp.render(target))
        frame, painted = self.warp.render_painted(target)
        return Warped(frame, self.refinement.prepare(frame, target, painted, speech))

    def finish(self, warped: Warped, refined: torch.Tensor | None, expression: Expression | None = None) -> np.ndarray:
        """Stage 2: the refiner's answer for `warped.crop` (`run_refiner`; None when there is no crop) pasted
        in, then lids, brows and head moved by `expression` (None: they stay as in the picture): (H, W, 3) uint8"""
        frame = warped.frame if warped.crop is None else self.refinement.finish(warped.frame, warped.crop, refined)
        if expression is None:
            return frame
        if self._eyes is None:
            self._eyes, self._head = EyeWarp(self.face.landmarks, self.face.size), HeadWarp(self.face, self.shape)
        frame = self._eyes.render(frame, expression.closure, expression.brow)
        return self._head.render(frame, expression.pose, expression.shift) if expression.moves_head else frame

    def render(self, motion: np.ndarray, speech: np.ndarray, expression: Expression | None = None) -> np.ndarray:
        """The picture with its mouth and chin moved by `motion` (P, 2), and the inside of the mouth drawn
        for the frame's speech (its MFCC window (n_mfcc, steps), as the motion model got it); lids, brows
        and head moved by `expression` (None: they stay as in the picture): (H, W, 3) uint8"""
        warped = self.warp_mouth(motion, speech)
        refined = run_refiner(self.refinement.net, [warped.crop])[0] if warped.crop is not None else None
        return self.finish(warped, refined, expression)


@dataclass
class Warped:
    """A frame after the mouth warp (H, W, 3) uint8, and the refiner's input for it (None: nothing to redraw)."""

    frame: np.ndarray
    crop: MouthCrop | None = None
