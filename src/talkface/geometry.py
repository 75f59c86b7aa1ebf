"""Face geometry shared by the warps, the expressions and the metrics: named landmark sets, the face's
axes in the picture and its own 3-D frame, head pose angles, eye openness, piecewise-affine meshes
(triangle strips, signed areas, the sampling maps of a warp) and crops by an affine map.

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

import cv2
import numpy as np
from scipy.spatial import Delaunay

from talkface.media.face import EYE_CORNERS

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
# points on the skull that speech, blinks and brows barely move (eye corners, the nose's bridge, the
# forehead and temples): they carry the head's pose
RIGID = [33, 133, 362, 263, 168, 6, 10, 151, 9, 8, 127, 356, 21, 251, 54, 284, 103, 332, 109, 338, 67, 297]
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


def projected_rotation(model: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """(3, 3) the rotation R under which 3-D points `model` (K, 3), scaled and shifted, project best onto
    the picture points `seen` (K, 2) (orthographic: a head is shallow next to its distance from the
    camera): the least-squares affine map, its 2 x 3 part made the nearest pair of orthonormal rows."""
    a, b = model - model.mean(0), seen - seen.mean(0)
    M = np.linalg.lstsq(a, b, rcond=None)[0].T  # (2, 3): seen ~ M model
    u, _, vt = np.linalg.svd(M, full_matrices=False)
    rows = u @ vt
    return np.vstack([rows, np.cross(rows[0], rows[1])])


def head_pose(points: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """(T, 478, 2 or 3) landmarks -> (T, 3) yaw, pitch, roll in degrees of each frame's skull against
    `reference`'s (478, 3), with depth (default: the first frame with a face), in the reference
    face's own frame; NaN where a frame has no face. The reference's 3-D skull points (`RIGID`) are
    fitted to each frame's picture positions: the depth the mesh guesses frame by frame is not used
    (the lower face's shape sways it by degrees while the skull stands still)."""
    p = np.asarray(points, np.float64)
    out = np.full((len(p), 3), np.nan)
    found = [t for t in range(len(p)) if not np.isnan(p[t]).any()]
    if reference is None and not found:
        return out
    ref = np.asarray(reference, np.float64) if reference is not None else p[found[0]]
    if ref.shape[-1] != 3:
        raise ValueError("the reference face needs depth: (478, 3) landmarks")
    F = face_axes(ref)
    for t in found:
        R = F @ projected_rotation(ref[RIGID], p[t][RIGID, :2]) @ F.T  # the turn in the face's own frame
        out[t] = angles(R.T)
    return out


class SkullTracker:
    """Moves the skull points (`RIGID`) of each frame's face-mesh landmarks to where their pixels went.

    The face mesh fits its whole shape at once: when the jaw drops, it moves the skull's points too (on
    a photo whose pixels above the mouth never move, a pitch of 1.1 degrees standard deviation follows
    the mouth, r = -0.96), and it reads a warped nod at two thirds of its size. So each frame's skull
    points are found by following their pixels (pyramidal Lucas-Kanade, started at the mesh's guess)
    from the reference picture, or, where that fails, from the frame before: a point is found when it
    comes back to where it started (to `BACK_PX` pixels) and lies near the mesh's guess (`NEAR` face
    sizes). The found points are taken when at least `TAKEN` of them were found; otherwise (a real
    head turned or lit otherwise than in the reference) the frame keeps the mesh's points, as a fit of
    some of each would jump. `reference`: the picture and its landmarks (478, 2 or 3) (default: the
    first frame with a face). `__call__(frame, points)`: RGB (H, W, 3) and landmarks (478, 2 or 3),
    NaN without a face -> a copy of them, the skull points moved."""

    BACK_PX, NEAR, TAKEN = 0.5, 0.15, 0.8

    def __init__(self, reference: tuple[np.ndarray, np.ndarray] | None = None):
        self.reference = self.last = None
        if reference is not None:
            self._start(*reference)

    def _start(self, frame: np.ndarray, points: np.ndarray) -> None:
        p = np.asarray(points, np.float64)
        self.size = max(float(np.linalg.norm(p[list(MOUTH_ENDS), :2].mean(0) - p[list(OUTER_EYES), :2].mean(0))), 1.0)
        side = int(np.clip(0.3 * self.size, 11, 41)) | 1
        self.lk = {"winSize": (side, side), "maxLevel": 3, "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01)}
        self.shape = frame.shape[:2]
        self.reference = (self._gray(frame), p[RIGID, :2].astype(np.float32).reshape(-1, 1, 2))

    def _gray(self, frame: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        if gray.shape != self.shape:  # a video of the photo, cut to even sides: the same pixel coordinates
            h, w = min(gray.shape[0], self.shape[0]), min(gray.shape[1], self.shape[1])
            gray = np.pad(gray[:h, :w], ((0, self.shape[0] - h), (0, self.shape[1] - w)), mode="edge")
        return gray

    def _follow(self, start: tuple[np.ndarray, np.ndarray], gray: np.ndarray, guess: np.ndarray) -> np.ndarray | None:
        """The points of `start` (its picture, (K, 1, 2) points) found in `gray`, or None when too few are."""
        before, points = start
        found, ok, _ = cv2.calcOpticalFlowPyrLK(before, gray, points, guess.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **self.lk)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray, before, found, points.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **self.lk)
        good = ((ok[:, 0] == 1) & (ok_back[:, 0] == 1)
                & (np.linalg.norm(back - points, axis=-1)[:, 0] < self.BACK_PX)
                & (np.linalg.norm(found - guess, axis=-1)[:, 0] < self.NEAR * self.size))
        if good.mean() < self.TAKEN:
            return None
        return np.where(good[:, None, None], found, guess)

    def __call__(self, frame: np.ndarray, points: np.ndarray) -> np.ndarray:
        out = np.array(points, np.float32, copy=True)
        if np.isnan(out).any():
            self.last = None
            return out
        if self.reference is None:
            self._start(frame, out)
            self.last = self.reference
            return out
        gray = self._gray(frame)
        guess = out[RIGID, :2].reshape(-1, 1, 2)
        found = self._follow(self.reference, gray, guess)
        if found is None and self.last is not None:
            found = self._follow(self.last, gray, guess)
        if found is not None:
            out[RIGID, :2] = found[:, 0]
        self.last = (gray, out[RIGID, :2].reshape(-1, 1, 2).copy())
        return out


def axes_between(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors u (from left to right) and v (u turned a quarter, down the face in pictures)."""
    u = (right - left) / max(float(np.linalg.norm(right - left)), 1e-9)
    return u, np.array([-u[1], u[0]])


def eye_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A face's unit vectors in the picture: u along the line through its eyes (left to right), v down the face."""
    lm = np.asarray(landmarks, np.float64)
    return axes_between(lm[EYE_CORNERS[:2]].mean(0), lm[EYE_CORNERS[2:]].mean(0))


def signed_area(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T,) signed areas of triangles (T, 3) over points (N, 2): a triangle turned over changes sign."""
    a, b, c = (points[triangles[:, k]] for k in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def strip_triangles(top: list[int], bottom: list[int]) -> list[tuple[int, int, int]]:
    """Triangles between two rows of control points, left to right (a shared first or last point
    gives a single triangle there)."""
    tris = []
    for i in range(len(top) - 1):
        a, b, c, d = top[i], top[i + 1], bottom[i + 1], bottom[i]
        tris += [(a, b, c), (a, c, d)] if a != d else [(a, b, c)]
    return [t for t in tris if len(set(t)) == 3]


def warp_triangles(
    picture: np.ndarray, source: np.ndarray, target: np.ndarray, triangles: np.ndarray, out: np.ndarray, start: tuple[int, int] = (0, 0)
) -> tuple[int, int, int, int] | None:
    """A piecewise-affine warp, written into `out`: each pixel inside a triangle that moved takes the
    picture's pixel that the triangle's affine (target -> source) gives, sampled bilinearly (in 1/32
    pixel steps, as `cv2.remap`); every other pixel of `out` is left as it is.

    source, target: (N, 2) control points in picture pixels (x, y); triangles: (T, 3) indices into
    them, painted in order (a later one covers an earlier one where they overlap). picture: the pixels
    sampled, (h, w, 3) uint8, whose top-left pixel is the picture's pixel `start` (x, y): the whole
    picture, or a part of it holding every source point (beyond its edge, its edge pixels repeat).
    out: (H, W, 3) uint8, the picture written; it must not share memory with `picture`.
    Returns box = (x0, y0, x1, y1) (x1, y1 exclusive), the bounding box of the triangles that moved
    (clipped to `out`), or None when none moved.

    Each pixel takes the barycentric coordinates of its triangle, clamped to the triangle: a pixel
    that rasterising gives to a sliver it lies just outside of samples that sliver's edge, not a
    point far beyond it.
    """
    from talkface import kernels  # numba's, loaded with the warps (render.mouth), not with every use of this module

    h, w = out.shape[:2]
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    moved = (np.abs(target - source) > 1e-6).any(1)[triangles].any(1)
    tris = triangles[moved]
    tris = tris[np.abs(signed_area(target, tris)) > 1e-6]  # a collapsed triangle covers no pixel
    if len(tris) == 0:
        return None
    tgt, src = target[tris], source[tris]  # (M, 3, 2)
    x0, y0 = np.maximum(np.floor(tgt.reshape(-1, 2).min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(tgt.reshape(-1, 2).max(0)).astype(int) + 1, (w, h))
    if x1 <= x0 or y1 <= y0:
        return None
    # per triangle: the coefficients giving barycentric coordinates b1, b2 of box pixels from (x, y, 1),
    # and the source point s0 + b1 (s1 - s0) + b2 (s2 - s0) they give
    p = tgt - np.array([x0, y0], np.float64)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]  # (M, 2)
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    b1 = np.stack([e2[:, 1], -e2[:, 0], e2[:, 0] * p[:, 0, 1] - e2[:, 1] * p[:, 0, 0]], 1) / det[:, None]
    b2 = np.stack([-e1[:, 1], e1[:, 0], e1[:, 1] * p[:, 0, 0] - e1[:, 0] * p[:, 0, 1]], 1) / det[:, None]
    coef = np.concatenate([b1, b2, src[:, 0], src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]], 1).astype(np.float32)
    ids = np.full((y1 - y0, x1 - x0), len(tris), np.int32)  # each box pixel's triangle (len(tris): none)
    for k, t in enumerate(np.round(p * 16).astype(np.int32)):
        cv2.fillConvexPoly(ids, t, k, lineType=cv2.LINE_8, shift=4)
    written = out if out.flags.c_contiguous else np.ascontiguousarray(out)
    kernels.warp_triangles(np.ascontiguousarray(picture), int(start[0]), int(start[1]), ids, coef, written, int(x0), int(y0))
    if written is not out:
        out[y0:y1, x0:x1] = written[y0:y1, x0:x1]
    return int(x0), int(y0), int(x1), int(y1)


def delaunay(points: np.ndarray) -> np.ndarray:
    """(T, 3) int32 indices of a Delaunay triangulation of points (N, 2), the same for the points moved
    by whole pixels (a crop of the picture). Where points lie on one circle (a rectangle's corners),
    which triangles Delaunay picks turns on their last bits: it is made on the points measured from
    their box's corner and rounded to 1/64 pixel."""
    p = np.asarray(points, np.float64)
    return Delaunay(np.round((p - np.floor(p.min(0))) * 64) / 64).simplices.astype(np.int32)


def pixel_box(points: np.ndarray, margin: int, shape: tuple[int, ...], origin: tuple[float, float] = (0, 0)) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 (exclusive, picture pixels) of points (K, 2) measured from the picture's pixel
    `origin` (x, y, whole pixels), grown by `margin` pixels, clipped to a picture of `shape`; None when
    nothing of it is inside."""
    h, w = shape[:2]
    o = np.asarray(origin, np.int64)
    x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - margin + o, 0)
    x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + margin + 1 + o, (w, h))
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def affine_crop(image: np.ndarray, M: np.ndarray, size: tuple[int, int], shrink_below: float, factor: float = 1.0) -> np.ndarray:
    """`image` warped by M (2, 3), picture -> crop pixels, into a crop of `size` (h, w). Where M shrinks
    the picture below `shrink_below`, the region the crop covers is first shrunk by area averaging to
    `factor` times M's scale (no aliasing), so a 4K picture costs about as much as a small one."""
    h, w = size
    scale = float(np.hypot(M[0, 0], M[0, 1]))
    A, src = M, image
    if scale < shrink_below:
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ cv2.invertAffineTransform(M).T
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, (image.shape[1], image.shape[0]))
        if x1 > x0 and y1 > y0:
            f = factor * scale
            rw, rh = max(1, int(round((x1 - x0) * f))), max(1, int(round((y1 - y0) * f)))
            src = cv2.resize(image[y0:y1, x0:x1], (rw, rh), interpolation=cv2.INTER_AREA)
            sx, sy = rw / (x1 - x0), rh / (y1 - y0)
            A = M @ np.array([[1 / sx, 0, x0], [0, 1 / sy, y0], [0, 0, 1]])  # shrunk region -> picture -> crop
    return cv2.warpAffine(src, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
