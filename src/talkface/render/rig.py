"""A face made ready to move: its mouth at rest, the scale of its motion, and the warps of its pixels.

The motion model speaks in a face-independent unit (the rest mouth's width, in the face's own
frame, relative to the mouth at rest). `FaceRig` turns that into pixel positions on one picture and
renders a frame in stages, each moving the photo's own pixels:

1. the mouth and chin (`talkface.render.mouth.MouthWarp`), then, when the model has one, the mouth refiner
   draws what the warp cannot show (`talkface.render.refine`);
2. the lids and brows (`talkface.render.eyes.EyeWarp`), for a frame's `Expression`;
3. the whole head, turned in 3-D (`talkface.render.head.HeadWarp`).

It is made once per photo (or once per video frame when dubbing) and reused for every frame.
Where the face mesh gave depth, the mouth moves in the face's own 3-D frame: its width is the 3-D
one, and its motion is projected with the face's axes, so a turned face opens its mouth as far,
for its size, as a frontal one.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from talkface.expression import Expression
from talkface.render.eyes import EyeWarp
from talkface.geometry import FACE_OVAL, face_axes
from talkface.render.head import RINGS, HeadWarp
from talkface.media.face import MOTION_POINTS, MOUTH_CORNERS, Face, align_matrix
from talkface.models.refiner import MouthRefiner
from talkface.render.refine import Prepared, Refinement, run_refiner
from talkface.render.mouth import MouthWarp, close_mouth


FOOTPRINT_MARGIN = 0.1  # face sizes around the head's fixed ring that a rig's part of the picture takes in as well


def footprint(face: Face, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), all even (x1, y1 exclusive): the part of a picture of `shape` (H, W, both even)
    that a rig of `face` reads and changes. It is the box of the head's fixed outer ring (`RINGS`),
    which holds the mouth's and the eyes' meshes and the refiner's crop (0.16 face sizes or more
    inside it on every face looked at), grown by `FOOTPRINT_MARGIN`. Outside it, every frame is the
    picture: a rig made on this part alone renders it as a rig of the whole picture would (its frames
    are patches, laid back with `lay`), and a large picture is not copied whole for every frame."""
    oval = np.asarray(face.landmarks, np.float64)[FACE_OVAL]
    centre = oval.mean(0)
    ring = centre + RINGS[-1] * (oval - centre)
    margin = FOOTPRINT_MARGIN * face.size + 2
    (x0, y0), (x1, y1) = np.floor(ring.min(0) - margin), np.ceil(ring.max(0) + margin)
    h, w = shape
    x0, y0 = max(0, int(x0) // 2 * 2), max(0, int(y0) // 2 * 2)
    x1, y1 = min(w, -(-int(x1) // 2) * 2), min(h, -(-int(y1) // 2) * 2)
    return x0, y0, max(x1, x0), max(y1, y0)


def rig_part(picture: np.ndarray, face: Face, gain: float = 1.0, refiner: MouthRefiner | None = None) -> tuple[FaceRig, tuple[int, int, int, int]]:
    """A rig of the part of `picture` that a rig of `face` reads and changes (`footprint`), and that part's box:
    the rig's frames are patches of the picture there (`lay` lays them in)."""
    x0, y0, x1, y1 = box = footprint(face, picture.shape[:2])
    return FaceRig(np.ascontiguousarray(picture[y0:y1, x0:x1]), face.moved(x0, y0), gain, refiner), box


def lay(frame: np.ndarray, patch: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """`frame` (a copy of the picture, or an earlier result of this) with a patch of `box` laid in, in place."""
    x0, y0, x1, y1 = box
    frame[y0:y1, x0:x1] = patch
    return frame


class FaceRig:
    """picture (H, W, 3) uint8 and its face -> frames with the mouth moved by `motion` (P, 2).

    The rest shape is estimated from the picture itself (`close_mouth`): a photo whose mouth is open
    closes it in silence. `gain` scales every motion (1: as the model predicts). `refiner`: the
    model's mouth refiner (or its graph, `accel.RefinerGraph`), or None for the warp alone.
    """

    def __init__(self, picture: np.ndarray, face: Face, gain: float = 1.0, refiner: MouthRefiner | None = None, like: FaceRig | None = None):
        """`like`: the rig of the previous video frame of this face, whose mouth mesh and colours are reused (`MouthWarp`)."""
        self.face, self.shape = face, picture.shape[:2]
        self.mouth = MouthWarp(picture, face.landmarks, like.mouth if like is not None else None)
        self.refinement = Refinement(refiner, face.landmarks, self.mouth.skin) if refiner is not None else None
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

    @cached_property
    def eyes(self) -> EyeWarp:
        """The lids and brows, made when a frame first moves them (a dubbed frame never does). Two
        threads asking at once may both make one: the same, so either will do."""
        return EyeWarp(self.face.landmarks, self.face.size, self.mouth.picture)

    @cached_property
    def head(self) -> HeadWarp:
        return HeadWarp(self.face, self.shape)

    def target(self, motion: np.ndarray) -> np.ndarray:
        """motion (P, 2) in rest mouth widths -> positions (P, 2) of MOTION_POINTS in picture pixels"""
        return self.rest + np.asarray(motion, np.float64) @ self.unit

    def warp(self, motion: np.ndarray, speech: np.ndarray) -> Warped:
        """The first stage of `render`: the mouth and chin moved, and the refiner's input when the warp painted."""
        target = self.target(motion)
        if self.refinement is None:
            return Warped(self.mouth.render(target), None)
        frame, painted = self.mouth.render_painted(target)
        return Warped(frame, self.refinement.prepare(frame, target, painted, speech))

    def finish(self, warped: Warped, refined: np.ndarray | None, expression: Expression | None) -> np.ndarray:
        """The last stage of `render`: the refiner's output (for `warped.prepared`) added, lids, brows and head moved."""
        frame = warped.frame if refined is None else self.refinement.finish(warped.frame, warped.prepared, refined)
        if expression is None:
            return frame
        frame = self.eyes.render(frame, expression.closure, expression.brow, out=frame)  # the warp's own new picture: written in place
        return self.head.render(frame, expression.pose, expression.shift, out=frame) if expression.moves_head else frame

    def render(self, motion: np.ndarray, speech: np.ndarray, expression: Expression | None = None) -> np.ndarray:
        """The picture with its mouth and chin moved by `motion` (P, 2), and the inside of the mouth drawn
        for the frame's speech (its MFCC window (n_mfcc, steps), as the motion model got it); lids, brows
        and head moved by `expression` (None: they stay as in the picture): (H, W, 3) uint8"""
        return render_frames([(self, motion, speech, expression)])[0]


@dataclass
class Warped:
    """A frame after the mouth warp: the frame (H, W, 3) uint8, and its mouth crop prepared for the refiner (None: nothing to refine)."""

    frame: np.ndarray
    prepared: Prepared | None


Job = tuple[FaceRig, np.ndarray, np.ndarray, Expression | None]  # rig, motion (P, 2), speech (n_mfcc, steps), expression


def render_frames(jobs: Sequence[Job], refine: Callable[[list[Prepared]], Sequence[np.ndarray]] | None = None) -> list[np.ndarray]:
    """`FaceRig.render` for many frames at once (of one face or many), with one refiner call for every
    frame that needs it: `refine` (e.g. a `streaming.MotionBatch`'s, shared with other streams), by
    default `run_refiner` of the rigs' refiner (all rigs must share one: the model's). Frames equal
    those rendered one by one, to float rounding."""
    warped = [rig.warp(motion, speech) for rig, motion, speech, _ in jobs]
    todo = [i for i, w in enumerate(warped) if w.prepared is not None]
    refined: list[np.ndarray | None] = [None] * len(jobs)
    if todo:
        prepared = [warped[i].prepared for i in todo]
        outputs = refine(prepared) if refine is not None else run_refiner(jobs[todo[0]][0].refinement.net, prepared)
        for i, out in zip(todo, outputs):
            refined[i] = out
    return [rig.finish(w, r, expression) for (rig, _, _, expression), w, r in zip(jobs, warped, refined)]
