"""A face made ready to move: its mouth at rest, the scale of its motion, and the warp of its pixels.

The motion model speaks in a face-independent unit (the rest mouth's width, in the face's upright
frame, relative to the mouth at rest). `FaceRig` turns that into pixel positions on one picture and
renders them with `talkface.warp.MouthWarp` (then, when the model has one, the mouth refiner draws
what the warp cannot show: `talkface.refine`): it is made once per photo (or once per video frame
when dubbing) and reused for every frame.
"""
from __future__ import annotations

import numpy as np

from talkface.media.face import MOTION_POINTS, MOUTH_CORNERS, Face, align_matrix
from talkface.models.refiner import MouthRefiner
from talkface.refine import Refinement
from talkface.warp import MouthWarp, close_mouth


class FaceRig:
    """picture (H, W, 3) uint8 and its face -> frames with the mouth moved by `motion` (P, 2).

    The rest shape is estimated from the picture itself (`close_mouth`): a photo whose mouth is open
    closes it in silence. `gain` scales every motion (1: as the model predicts). `refiner`: the
    model's mouth refiner (or its graph, `accel.RefinerGraph`), or None for the warp alone.
    """

    def __init__(self, picture: np.ndarray, face: Face, gain: float = 1.0, refiner: MouthRefiner | None = None):
        self.face = face
        self.warp = MouthWarp(picture, face.landmarks)
        self.refinement = Refinement(refiner, face.landmarks, self.warp.skin) if refiner is not None else None
        rest = close_mouth(face.landmarks)
        self.rest = rest[MOTION_POINTS].astype(np.float64)  # (P, 2) picture pixels
        width = float(np.linalg.norm(rest[MOUTH_CORNERS[0]] - rest[MOUTH_CORNERS[1]]))
        M = align_matrix(face)  # picture -> upright crop: a rotation times a scale
        rotation = M[:, :2] / np.hypot(M[0, 0], M[0, 1])
        # a row vector m in the upright frame is m @ rotation in the picture (rotation is orthonormal)
        self.unit = rotation * (width * gain)

    def target(self, motion: np.ndarray) -> np.ndarray:
        """motion (P, 2) in rest mouth widths -> positions (P, 2) of MOTION_POINTS in picture pixels"""
        return self.rest + np.asarray(motion, np.float64) @ self.unit

    def render(self, motion: np.ndarray, speech: np.ndarray) -> np.ndarray:
        """The picture with its mouth and chin moved by `motion` (P, 2), and the inside of the mouth drawn
        for the frame's speech (its MFCC window (n_mfcc, steps), as the motion model got it): (H, W, 3) uint8"""
        target = self.target(motion)
        if self.refinement is None:
            return self.warp.render(target)
        frame, painted = self.warp.render_painted(target)
        return self.refinement.apply(frame, target, painted, speech)
