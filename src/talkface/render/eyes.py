"""The eye warp: lids that close and brows that rise, made of the photo's own pixels.

Control points per eye (`talkface.geometry.EYES`), rings from the eye outward: the lid margins, a
lash row just above the upper margin, the crease, the fold under the brow and the brow; the rings
under the eye; and a fixed frame around both eyes, where the warp has faded to nothing.

Triangles, painted in order: a Delaunay triangulation outside the eyes' outer rings (brows, frame),
then per eye, ring to ring: the eyeball between the margins, the lower lid, the lid between crease
and lash row, and last the lash band between lash row and margin, so that a closing lid covers
the eyeball. A blink moves the upper margin down onto a line just above the lower one (which rises
a little to meet it); the lash band moves with the margin as it is, so the lashes stay sharp; the
crease follows most of the way, so that the skin under the brow (not the shadow of the lid fold) covers the eye. Brows rise with the
fold under them; the forehead's frame stays. A photo whose eyes are half closed blinks from there.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from talkface.geometry import EYES, eye_axes, sampling_maps, signed_area, strip_triangles

LASH = 0.15  # the lash row: this share of the way from the upper margin to the crease
MEET = 0.05  # closed lids meet this share of the eye's opening above the lower margin
CREASE = 0.75  # the crease follows this share of the margin's movement: the lid that covers the eye is the skin under the brow
FRAME_MARGIN = 0.35  # the fixed frame's distance from the brows and eye rings, in face sizes
SIDES = ("left", "right")


def _frame(points: np.ndarray, u: np.ndarray, v: np.ndarray, margin: float) -> np.ndarray:
    """(F, 2) fixed points on a rectangle in the face's axes (u across, v down) around `points`, `margin` pixels outside."""
    uv = points @ np.stack([u, v], 1)
    (u0, v0), (u1, v1) = uv.min(0) - margin, uv.max(0) + margin
    corners = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1], [u0, v0]])
    step = margin
    pts = []
    for a, b in zip(corners[:-1], corners[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        pts.append(a + (b - a) * np.arange(n)[:, None] / n)
    return np.concatenate(pts) @ np.stack([u, v])


class EyeWarp:
    """One picture's eyes, ready to blink and raise their brows: made once, reused for every frame.

    landmarks: (478, 2) the face mesh in pixels; size: the face's size in pixels (eyes to mouth).
    `render(frame, closure, brow)` gives `frame` (H, W, 3) uint8, a picture with these landmarks,
    with lids closed by `closure` (2,) (0 as in the photo, 1 shut) and brows raised by `brow` face sizes.
    """

    def __init__(self, landmarks: np.ndarray, size: float):
        lm = np.asarray(landmarks, np.float64)
        self.u, self.v = eye_axes(lm)  # across and down the face
        self.size = float(size)
        rows: dict[str, dict[str, np.ndarray]] = {}
        points: list[np.ndarray] = []

        def add(p: np.ndarray) -> np.ndarray:
            start = sum(len(q) for q in points)
            points.append(np.asarray(p, np.float64))
            return np.arange(start, start + len(p))

        for side in SIDES:
            e = EYES[side]
            upper, crease = lm[e["upper"]], lm[e["crease"]]
            r = {name: add(lm[e[name]]) for name in ("upper", "lower", "crease", "ring3_upper", "ring2_lower", "ring3_lower", "brow_lower", "brow_upper")}
            r["lash"] = add(upper + LASH * (crease - upper))
            rows[side] = r
        outer = np.concatenate(points)
        add(_frame(outer, self.u, self.v, FRAME_MARGIN * self.size))  # fixed: the warp fades to nothing there
        self.source = np.concatenate(points)
        self.rows = rows

        # outside the eyes' outer rings: Delaunay, less what lies inside either ring
        inner = set()
        loops = []
        for side in SIDES:
            r = rows[side]
            inner |= set(np.concatenate([r[k] for k in ("upper", "lower", "crease", "ring2_lower", "lash")]).tolist())
            loops.append(np.concatenate([r["ring3_upper"], r["ring3_lower"][::-1]]))
        outside = np.array([i for i in range(len(self.source)) if i not in inner])
        tri = outside[Delaunay(self.source[outside]).simplices]
        centres = self.source[tri].mean(1)
        keep = np.ones(len(tri), bool)
        for loop in loops:
            poly = self.source[loop].astype(np.float32)
            keep &= np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) <= 0 for x, y in centres])
        tris = [tri[keep]]
        for side in SIDES:
            r = rows[side]
            strips = strip_triangles(list(r["ring3_upper"]), list(r["crease"])) + strip_triangles(list(r["ring2_lower"]), list(r["ring3_lower"]))
            strips += strip_triangles(list(r["upper"]), list(r["lower"]))  # the eyeball, under everything that follows
            strips += strip_triangles(list(r["lower"]), list(r["ring2_lower"]))
            strips += strip_triangles(list(r["crease"]), list(r["lash"])) + strip_triangles(list(r["lash"]), list(r["upper"]))
            tris.append(np.array(strips))
        tris = np.concatenate(tris).astype(np.int32)
        flip = signed_area(self.source, tris) < 0
        tris[flip] = tris[flip][:, ::-1]
        self.triangles = tris

    def target(self, closure: tuple[float, float] | np.ndarray, brow: float) -> np.ndarray:
        """(N, 2) control points moved: lids closed by `closure` (2,), brows raised by `brow` face sizes."""
        tgt = self.source.copy()
        up = -self.v * brow * self.size
        for side, c in zip(SIDES, closure):
            r = self.rows[side]
            upper, lower = self.source[r["upper"]], self.source[r["lower"]]
            meet = lower + MEET * (upper - lower)
            inner = np.r_[0, np.ones(len(upper) - 2), 0][:, None]  # the eye's corners stay
            drop = float(np.clip(c, 0, 1)) * inner * (meet - upper)
            tgt[r["upper"]] += drop
            tgt[r["lash"]] += drop
            tgt[r["lower"]] += float(np.clip(c, 0, 1)) * inner * (meet - lower)
            tgt[r["crease"]] += CREASE * drop + 0.3 * inner * up
            tgt[r["ring3_upper"]] += 0.6 * inner * up
            tgt[r["brow_lower"]] += up
            tgt[r["brow_upper"]] += up
        return tgt

    def render(self, frame: np.ndarray, closure: tuple[float, float] | np.ndarray, brow: float, out: np.ndarray | None = None) -> np.ndarray:
        """`frame` (H, W, 3) uint8 with the lids and brows moved; pixels outside the moved triangles stay exactly.
        `out`: where to write it (it may be `frame` itself: only the moved box is written); None: a new
        picture (`frame` itself when nothing moves)."""
        maps = None
        if max(closure) > 1e-4 or abs(brow) > 1e-6:
            maps = sampling_maps(self.source, self.target(closure, brow), self.triangles, frame.shape[:2])
        if out is None:
            if maps is None:
                return frame
            out = frame.copy()
        elif out is not frame:
            out[...] = frame
        if maps is not None:
            map_x, map_y, (x0, y0, x1, y1) = maps
            out[y0:y1, x0:x1] = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out
