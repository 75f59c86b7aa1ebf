"""The head warp: the photo's head turned, nodded and tilted in 3-D, its pixels moved by a piecewise-affine warp.

The face mesh's own 3-D points (x, y and mediapipe's depth) are rotated in the face's own frame
(`talkface.geometry.face_axes`) about a pivot behind the neck, and projected back onto the picture
(orthographically: a head is shallow next to its distance from the camera), so that near parts
(the nose) move more than far ones (the cheeks' edge) when the head turns. Around the face oval,
rings carry what surrounds the face: at `RINGS[0]` times the oval's size (hair, ears, the neck)
with the head, at `RINGS[1]` half as far, and at `RINGS[2]` not at all: from there outward the
picture stays exactly the photo's.

The warp is piecewise affine over a Delaunay mesh of those points, and smooth (neighbouring
triangles of a head turned by a few degrees differ in slope by hundredths), so it is computed the
cheap way round: once per photo, every pixel of a coarse grid over the head (every `GRID` pixels)
learns its triangle and barycentric weights in the photo's mesh; per frame, the points' moves are
spread over the grid by those weights (the forward displacement d), the backward map p - d(q) is
found by two fixed-point steps (q = p, then q = p - d(q)), enlarged to every pixel and sampled:
bicubically inside the ring that moves with the head (a bilinear pass at fractional offsets keeps
half of a sharp face's fine detail, the variance of its Laplacian; a bicubic one four fifths), and
bilinearly around it, where hair and background move less, at a fifth of the cost.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import sparse

from talkface.geometry import FACE_OVAL, delaunay, face_axes, pixel_box, rotation, signed_area
from talkface.media.face import Face

RINGS = (1.3, 1.65, 2.0)  # moving with the head, moving half as much, fixed: sizes relative to the oval
PIVOT = (1.5, 1.0)  # the pivot below the face's centre and behind it, in face sizes
INTERIOR_STEP = 5  # every 5th mesh point inside the oval carries the face's depth
GRID = 3  # the displacement is computed every GRID pixels and enlarged (3: within 0.07 px of every pixel's own, p99)
BAND = 16  # rows of the box remapped at once, each as wide as the ring is there


def _bands(inside: np.ndarray, sharp: np.ndarray) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """The box's bands of `BAND` rows, each cut to the columns where the mask `inside` (h, w) has any
    pixel: (y0, y1, [(x0, x1, interpolation), ...]), bicubic in the columns where `sharp` has any, bilinear beside them."""
    bands = []
    for ya in range(0, inside.shape[0], BAND):
        yb = min(ya + BAND, inside.shape[0])
        cols = np.flatnonzero(inside[ya:yb].any(0))
        if not len(cols):
            continue
        xa, xb = int(cols[0]), int(cols[-1]) + 1
        fine = np.flatnonzero(sharp[ya:yb, xa:xb].any(0))
        if len(fine):
            sa, sb = xa + int(fine[0]), xa + int(fine[-1]) + 1
            parts = [(xa, sa, cv2.INTER_LINEAR), (sa, sb, cv2.INTER_CUBIC), (sb, xb, cv2.INTER_LINEAR)]
        else:
            parts = [(xa, xb, cv2.INTER_LINEAR)]
        bands.append((ya, yb, [part for part in parts if part[1] > part[0]]))
    return bands


class HeadWarp:
    """One picture's head, ready to move: made once, reused for every frame.

    `render(frame, pose, shift)` gives `frame` (a picture of this face, (H, W, 3) uint8) with the head
    rotated by `pose` (yaw, pitch, roll degrees, `talkface.geometry`) and shifted by `shift` (across,
    down) in face sizes. A face without depth (`Face.depth` None) turns as if it were flat.
    """

    def __init__(self, face: Face, shape: tuple[int, int]):
        # the mesh is made from the landmarks' top-left corner (whole pixels): a crop of the picture gets
        # the same mesh to the bit (Delaunay's choice among points on a circle turns on the last bit)
        lm = np.asarray(face.landmarks, np.float64)
        self.anchor = np.floor(lm.min(0))
        lm -= self.anchor
        depth = np.zeros(len(lm)) if face.depth is None else np.asarray(face.depth, np.float64)
        points = np.concatenate([lm, depth[:, None]], 1)
        self.size = float(face.size)
        self.axes = face_axes(points)
        oval = points[FACE_OVAL]
        centre = oval.mean(0)
        # inner points near the oval would make slivers there, which the smallest turn folds
        near = np.linalg.norm(points[:, None, :2] - oval[None, :, :2], axis=-1).min(1) < 0.15 * face.size
        interior = [i for i in range(0, 468, INTERIOR_STEP) if i not in FACE_OVAL and not near[i]]
        rings = [np.concatenate([centre[:2] + k * (oval[:, :2] - centre[:2]), oval[:, 2:]], 1) for k in RINGS]
        self.points = np.concatenate([points[FACE_OVAL + interior], *rings])  # (N, 3)
        n = len(FACE_OVAL) + len(interior)
        self.groups = (slice(0, n + len(FACE_OVAL)), slice(n + len(FACE_OVAL), n + 2 * len(FACE_OVAL)), slice(n + 2 * len(FACE_OVAL), None))
        mid = points[[33, 263, 61, 291]].mean(0)
        self.pivot = mid + self.size * (PIVOT[0] * self.axes[1] + PIVOT[1] * self.axes[2])
        self.source = self.points[:, :2].copy()  # from `anchor`, as are `points` and `pivot`
        tris = delaunay(self.source)
        flip = signed_area(self.source, tris) < 0
        tris[flip] = tris[flip][:, ::-1]
        self.triangles = tris
        # what the warp may change: inside the fixed outer ring (the ring's own bounding box, where the half ring stays)
        outer = self.source[self.groups[2]]
        self.box = pixel_box(outer, 0, shape, self.anchor)
        if self.box is not None:
            ax, ay = self.anchor.astype(int)
            x0, y0, x1, y1 = box = self.box[0] - ax, self.box[1] - ay, self.box[2] - ax, self.box[3] - ay  # from `anchor`
            self.inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(self.inside, [np.round((outer - (x0, y0)) * 16).astype(np.int32)], 1, shift=4)
            # the head itself (inside the ring that moves with it) is sampled bicubically; what moves less around it bilinearly
            sharp = np.zeros_like(self.inside)
            ring = self.source[self.groups[0]][-len(FACE_OVAL):]
            cv2.fillPoly(sharp, [np.round((ring - (x0, y0)) * 16).astype(np.int32)], 1, shift=4)
            self.bands = _bands(self.inside, sharp)
            self._grid(box)

    def _moved(self, points: np.ndarray, pose: np.ndarray, shift: np.ndarray) -> np.ndarray:
        R = self.axes.T @ rotation(*pose) @ self.axes  # the rotation in the face's frame, in picture coordinates
        out = self.pivot + (points - self.pivot) @ R.T
        out[:, :2] += self.size * (shift[0] * self.axes[0, :2] + shift[1] * self.axes[1, :2])
        return out[:, :2]

    def target(self, pose, shift=(0.0, 0.0)) -> np.ndarray:
        """(N, 2) control points for a head rotated by `pose` (3,) degrees and shifted by `shift` (2,) face sizes."""
        pose, shift = np.asarray(pose, np.float64), np.asarray(shift, np.float64)
        tgt = self.source.copy()
        rigid, half, _ = self.groups
        tgt[rigid] = self._moved(self.points[rigid], pose, shift)
        tgt[half] = self._moved(self.points[half], pose / 2, shift / 2)
        return tgt

    def folded(self, pose, shift=(0.0, 0.0)) -> int:
        """How many triangles the pose turns over (0: the warp neither folds nor tears)."""
        return int((signed_area(self.target(pose, shift), self.triangles) < 0).sum())

    def _grid(self, box: tuple[int, int, int, int]) -> None:
        """Each coarse grid pixel's triangle corners (h, w, 3) and barycentric weights (h, w, 3) in the photo's mesh
        (all three corners the first point, weights 0, outside the mesh: no displacement there). box: `box` from `anchor`."""
        x0, y0, x1, y1 = box
        h, w = (y1 - y0 + GRID - 1) // GRID, (x1 - x0 + GRID - 1) // GRID
        # grid pixel i is box pixel GRID i + (GRID - 1) / 2, where cv2.resize puts it when enlarging GRID times
        self.origin = np.array([x0, y0]) + (GRID - 1) / 2
        src = (self.source - self.origin) / GRID
        ids = np.full((h, w), -1, np.int32)
        for k, t in enumerate(np.round(src[self.triangles] * 16).astype(np.int32)):
            cv2.fillConvexPoly(ids, t, k, lineType=cv2.LINE_8, shift=4)
        ys, xs = np.mgrid[:h, :w].astype(np.float64)
        corners = self.triangles[np.maximum(ids, 0)]  # (h, w, 3)
        a, b, c = (src[corners[..., k]] for k in range(3))
        det = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
        det = np.where(np.abs(det) > 1e-12, det, 1.0)
        wb = ((xs - a[..., 0]) * (c[..., 1] - a[..., 1]) - (ys - a[..., 1]) * (c[..., 0] - a[..., 0])) / det
        wc = ((b[..., 0] - a[..., 0]) * (ys - a[..., 1]) - (b[..., 1] - a[..., 1]) * (xs - a[..., 0])) / det
        weights = np.clip(np.stack([1 - wb - wc, wb, wc], -1), 0, 1)
        weights /= np.maximum(weights.sum(-1, keepdims=True), 1e-9)
        weights = np.where((ids >= 0)[..., None], weights, 0).astype(np.float32)
        # the displacement at each grid pixel is its weights times its corners' moves: one sparse product a frame
        rows = np.repeat(np.arange(h * w), 3)
        self._spread = sparse.csr_matrix((weights.ravel(), (rows, corners.ravel())), shape=(h * w, len(self.source)))
        self._at = np.stack([xs, ys], -1).astype(np.float32)  # each grid pixel's own position, in grid pixels
        self._at_px = self._at * np.float32(GRID) + (self.origin + self.anchor).astype(np.float32)  # and in picture pixels

    def _map(self, pose, shift) -> np.ndarray:
        """(h, w, 2) float32 over `box`: where each of its pixels samples the frame (x, y)."""
        x0, y0, x1, y1 = self.box
        h, w = self._at.shape[:2]
        moves = ((self.target(pose, shift) - self.source) / GRID).astype(np.float32)  # in grid pixels
        # the forward displacement at each grid pixel (h, w, 2); two products with a column are faster than one with both
        d = cv2.merge([self._spread @ np.ascontiguousarray(moves[:, k]) for k in (0, 1)]).reshape(h, w, 2)
        q = cv2.subtract(self._at, d)
        for step in range(2):  # q = p - d(q): where the content now at p came from
            back = cv2.remap(d, q, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            # the last step in picture pixels (enlarging is linear, so this commutes with it)
            q = cv2.subtract(self._at, back, dst=q) if step == 0 else cv2.scaleAdd(back, -float(GRID), self._at_px)
        return cv2.resize(q, (w * GRID, h * GRID), interpolation=cv2.INTER_LINEAR)[: y1 - y0, : x1 - x0]

    def maps(self, pose, shift=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """map_x, map_y (h, w) float32 over `box`: where each of its pixels samples the frame."""
        full = self._map(pose, shift)
        return np.ascontiguousarray(full[..., 0]), np.ascontiguousarray(full[..., 1])

    def render(self, frame: np.ndarray, pose, shift=(0.0, 0.0), out: np.ndarray | None = None) -> np.ndarray:
        """`frame` (H, W, 3) uint8 with the head moved; pixels outside the fixed outer ring stay exactly.
        `out`: where to write it (it may be `frame` itself: only the box inside the ring is written);
        None: a new picture (`frame` itself when the head does not move)."""
        if self.box is None or not np.any(np.abs(np.r_[pose, shift]) > 1e-6):
            if out is not None and out is not frame:
                out[...] = frame
            return frame if out is None else out
        x0, y0, x1, y1 = self.box
        full = self._map(pose, shift)
        warped = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for ya, yb, parts in self.bands:  # only what lies inside the ring
            for xa, xb, interpolation in parts:
                cv2.remap(frame, full[ya:yb, xa:xb], None, interpolation, dst=warped[ya:yb, xa:xb], borderMode=cv2.BORDER_REPLICATE)
        if out is None:
            out = frame.copy()
        cv2.copyTo(warped, self.inside, out[y0:y1, x0:x1])
        return out
