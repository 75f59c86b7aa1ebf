"""The head warp: the photo's head turned, nodded and tilted in 3-D, its pixels moved by a piecewise-affine warp.

The face mesh's own 3-D points (x, y and mediapipe's depth) are rotated in the face's own frame
(`talkface.geometry.face_axes`) about a pivot behind the neck, and projected back onto the picture
(orthographically: a head is shallow next to its distance from the camera), so that near parts
(the nose) move more than far ones (the cheeks' edge) when the head turns. Around the face oval,
rings carry what surrounds the face: at `RINGS[0]` times the oval's size (hair, ears, the neck)
with the head, at `RINGS[1]` half as far, and at `RINGS[2]` not at all: from there outward the
picture stays exactly the photo's.

The maps of a large head are computed at half the resolution and enlarged: a piecewise-affine map
is linear inside each triangle, so the enlarged map differs from the exact one only near triangle
edges (on a 910x1137 portrait: 0.05 px on average, under 0.7 px for 99% of the pixels). The frame is
resampled bicubically: a bilinear pass at fractional offsets keeps under half of a sharp photo's
fine detail (the variance of its Laplacian), a bicubic one about three quarters.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from talkface.geometry import FACE_OVAL, face_axes, rotation, sampling_maps, signed_area
from talkface.media.face import Face

RINGS = (1.3, 1.65, 2.0)  # moving with the head, moving half as much, fixed: sizes relative to the oval
PIVOT = (1.5, 1.0)  # the pivot below the face's centre and behind it, in face sizes
INTERIOR_STEP = 5  # every 5th mesh point inside the oval carries the face's depth
COARSE = ((30_000, 2),)  # boxes larger than this many pixels get their maps at half resolution


class HeadWarp:
    """One picture's head, ready to move: made once, reused for every frame.

    `render(frame, pose, shift)` gives `frame` (a picture of this face, (H, W, 3) uint8) with the head
    rotated by `pose` (yaw, pitch, roll degrees, `talkface.geometry`) and shifted by `shift` (across,
    down) in face sizes. A face without depth (`Face.depth` None) turns as if it were flat.
    """

    def __init__(self, face: Face, shape: tuple[int, int]):
        lm = np.asarray(face.landmarks, np.float64)
        depth = np.zeros(len(lm)) if face.depth is None else np.asarray(face.depth, np.float64)
        points = np.concatenate([lm, depth[:, None]], 1)
        self.shape = shape
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
        self.source = self.points[:, :2].copy()
        tris = Delaunay(self.source).simplices.astype(np.int32)
        flip = signed_area(self.source, tris) < 0
        tris[flip] = tris[flip][:, ::-1]
        self.triangles = tris
        # what the warp may change: inside the fixed outer ring (the ring's own bounding box, where the half ring stays)
        outer = self.source[self.groups[2]]
        self.box = _bounds(outer, shape)
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            self.inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(self.inside, [np.round((outer - (x0, y0)) * 16).astype(np.int32)], 1, shift=4)

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

    def render(self, frame: np.ndarray, pose, shift=(0.0, 0.0)) -> np.ndarray:
        """`frame` (H, W, 3) uint8 with the head moved; pixels outside the fixed outer ring stay exactly."""
        tgt = self.target(pose, shift)
        if self.box is None or np.abs(tgt - self.source).max() < 1e-3:
            return frame
        x0, y0, x1, y1 = self.box
        k = next((k for pixels, k in COARSE if (x1 - x0) * (y1 - y0) > pixels), 1)
        map_x, map_y = self._maps(tgt, k)
        warped = cv2.remap(frame, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        out = frame.copy()
        cv2.copyTo(warped, self.inside, out[y0:y1, x0:x1])
        return out

    def _maps(self, tgt: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`sampling_maps` over the box, computed at 1/k of the resolution and enlarged to it."""
        x0, y0, x1, y1 = self.box
        w, h = x1 - x0, y1 - y0
        small = ((h + k - 1) // k, (w + k - 1) // k)
        # pixel i of the small map is pixel k i + (k - 1) / 2 of the box, where cv2.resize puts it
        origin = np.array([x0, y0]) + (k - 1) / 2
        maps = sampling_maps((self.source - origin) / k, (tgt - origin) / k, self.triangles, small)
        small_x = np.arange(small[1], dtype=np.float32)[None].repeat(small[0], 0)
        small_y = np.arange(small[0], dtype=np.float32)[:, None].repeat(small[1], 1)
        if maps is not None:
            hx, hy, (a0, b0, a1, b1) = maps
            small_x[b0:b1, a0:a1], small_y[b0:b1, a0:a1] = hx, hy
        if k == 1:
            return small_x + np.float32(origin[0]), small_y + np.float32(origin[1])
        size = (small[1] * k, small[0] * k)  # k times the small map exactly, then cut to the box
        map_x = cv2.resize(small_x, size, interpolation=cv2.INTER_LINEAR)[:h, :w] * k + np.float32(origin[0])
        map_y = cv2.resize(small_y, size, interpolation=cv2.INTER_LINEAR)[:h, :w] * k + np.float32(origin[1])
        return map_x, map_y


def _bounds(points: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 (exclusive) of points (K, 2), clipped to a picture of `shape`; None when outside it."""
    h, w = shape[:2]
    x0, y0 = np.maximum(np.floor(points.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + 1, (w, h))
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None
