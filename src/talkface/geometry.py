"""Face geometry shared by the warps, the expressions and the metrics: named landmark sets, the face's
own 3-D frame, head pose angles and eye openness.

Landmarks are mediapipe face-mesh indices. Each eye's sets run from its outer corner to its inner
one, so that the same position in two sets faces the same way across the eye:

    brow_upper, brow_lower   the brow's upper and lower edge (5 points)
    ring3_upper              the fold under the brow, corner to corner (9)
    crease                   the lid's crease (9)
    upper, lower             the lid margins (9 each, the eye's corners shared)
    ring2_lower, ring3_lower the rings under the eye (9 each)

Poses: a face's frame is three unit rows in picture coordinates (x right, y down, z away from the
camera, in pixels like x): `axes[0]` from the face's left to its right (the picture's left to
right on a frontal face), `axes[1]` down the face, `axes[2]` into the picture. Angles are degrees:
yaw about the face's up axis (positive: the face turns toward the picture's right), pitch about its
left-right axis (positive: the chin goes down), roll in the picture's plane (positive: clockwise).
"""
from __future__ import annotations

import numpy as np

EYES = {
    "left": {  # the eye on the picture's left
        "upper": [33, 246, 161, 160, 159, 158, 157, 173, 133],
        "lower": [33, 7, 163, 144, 145, 153, 154, 155, 133],
        "crease": [130, 247, 30, 29, 27, 28, 56, 190, 243],
        "ring3_upper": [226, 113, 225, 224, 223, 222, 221, 189, 244],
        "ring2_lower": [130, 25, 110, 24, 23, 22, 26, 112, 243],
        "ring3_lower": [226, 31, 228, 229, 230, 231, 232, 233, 244],
        "brow_lower": [46, 53, 52, 65, 55],
        "brow_upper": [70, 63, 105, 66, 107],
    },
    "right": {
        "upper": [263, 466, 388, 387, 386, 385, 384, 398, 362],
        "lower": [263, 249, 390, 373, 374, 380, 381, 382, 362],
        "crease": [359, 467, 260, 259, 257, 258, 286, 414, 463],
        "ring3_upper": [446, 342, 445, 444, 443, 442, 441, 413, 464],
        "ring2_lower": [359, 255, 339, 254, 253, 252, 256, 341, 463],
        "ring3_lower": [446, 261, 448, 449, 450, 451, 452, 453, 464],
        "brow_lower": [276, 283, 282, 295, 285],
        "brow_upper": [300, 293, 334, 296, 336],
    },
}
# (upper, lower) lid margin points facing each other across the middle of each eye
EYE_PAIRS = {side: list(zip(e["upper"][3:6], e["lower"][3:6])) for side, e in EYES.items()}
EYE_WIDTH = {"left": (33, 133), "right": (263, 362)}
# the face oval as a loop, clockwise from the top of the forehead
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# points on the skull that speech and expressions barely move: they carry the head's pose
RIGID = [33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 2, 98, 327, 10, 151, 9, 8, 234, 454, 127, 356, 93, 323, 116, 345]
OUTER_EYES, MOUTH_ENDS = (33, 263), (61, 291)


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """(..., 478, 2) landmarks -> (..., 2) each eye's lid gap over its width (left, right); ~0.3 open, ~0.05 closed."""
    lm = np.asarray(landmarks, np.float64)
    out = []
    for side in ("left", "right"):
        gap = np.mean([np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1) for a, b in EYE_PAIRS[side]], 0)
        a, b = EYE_WIDTH[side]
        out.append(gap / np.maximum(np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1), 1e-9))
    return np.stack(out, -1)


def face_axes(points: np.ndarray) -> np.ndarray:
    """(478, 3) landmarks (x, y, depth) -> (3, 3) the face's frame: rows right, down, into the picture."""
    p = np.asarray(points, np.float64)
    right = p[OUTER_EYES[1]] - p[OUTER_EYES[0]]
    down = p[list(MOUTH_ENDS)].mean(0) - p[list(OUTER_EYES)].mean(0)
    x = right / max(float(np.linalg.norm(right)), 1e-9)
    z = np.cross(x, down)  # x right and y down: their cross product points into the picture
    z /= max(float(np.linalg.norm(z)), 1e-9)
    return np.stack([x, np.cross(z, x), z])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) rotation of points given in a face's frame (x right, y down, z in), angles in degrees."""
    a, b, c = np.radians([yaw, pitch, roll])
    turn = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])  # the face's front turns toward +x
    nod = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])  # the front goes down
    tilt = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return tilt @ nod @ turn


def angles(axes: np.ndarray) -> np.ndarray:
    """(..., 3, 3) face frames (as `face_axes`) -> (..., 3) yaw, pitch, roll in degrees, read as the
    rotation that takes a frontal, upright face (the identity frame) there."""
    R = np.swapaxes(np.asarray(axes, np.float64), -1, -2)  # columns: the face's axes in picture coordinates
    yaw = np.degrees(np.arctan2(R[..., 2, 0], R[..., 2, 2]))
    pitch = np.degrees(np.arcsin(np.clip(R[..., 2, 1], -1, 1)))
    roll = np.degrees(np.arctan2(-R[..., 0, 1], R[..., 1, 1]))
    return np.stack([yaw, pitch, roll], -1)


def head_pose(points: np.ndarray) -> np.ndarray:
    """(T, 478, 3) landmarks with depth -> (T, 3) yaw, pitch, roll in degrees (NaN where a frame has no face)."""
    p = np.asarray(points, np.float64)
    out = np.full((len(p), 3), np.nan)
    for t, frame in enumerate(p):
        if not np.isnan(frame).any():
            out[t] = angles(face_axes(frame))
    return out
