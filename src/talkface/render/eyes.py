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

Glasses stay where they are (`Rims`): once per photo, the thin, long, high-contrast lines inside the
frame but outside the eye openings and lash bands, running above an eye and longer than it, and all
of them together above and below both eyes (rims,
bridge, temple arms; not brows, which are thick, nor creases and wrinkles, which are short) are
found, and painted out of the picture the warp samples; each frame, their own pixels are laid back
unmoved over the warped picture. A photo without glasses warps exactly as without this layer.
"""
from __future__ import annotations

import cv2
import numpy as np

from talkface.geometry import EYES, delaunay, eye_axes, pixel_box, signed_area, strip_triangles, warp_triangles

LASH = 0.15  # the lash row: this share of the way from the upper margin to the crease
MEET = 0.05  # closed lids meet this share of the eye's opening above the lower margin
CREASE = 0.75  # the crease follows this share of the margin's movement: the lid that covers the eye is the skin under the brow
FRAME_MARGIN = 0.35  # the fixed frame's distance from the brows and eye rings, in face sizes
SIDES = ("left", "right")
RIM_WIDTH = 0.08  # a glasses rim is a line thinner than this, in face sizes (brows are thicker) ...
RIM_CONTRAST = 40  # ... this many levels darker or lighter than its surroundings in some colour channel ...
RIM_SPAN = 1.5  # ... spanning this many eye widths (creases and wrinkles are shorter) ...
RIM_COVER = 0.8  # ... and running above an eye for this share of its width (hair at the temples does not); all found: above and below both eyes
EYE_GUARD = 0.04  # no rim within this distance of an eye opening or lash band, in face sizes
RIM_HOLD = 0.025  # the rim's pixels grown by this (face sizes) are held in place, faded out over as much again


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


def _disc(diameter: float) -> np.ndarray:
    d = max(3, round(diameter) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))


class Rims:
    """A photo's glasses, held still while the eye warp moves what lies behind them: found once per photo.

    box: x0, y0, x1, y1 (exclusive) in picture pixels; hold: (h, w) bool, the rims' pixels (grown a
    little) in the box; clean: (h, w, 3) uint8, the photo's box with them painted out; alpha: (h, w)
    float32, 1 on `hold`, fading to 0 a little outside it.
    """

    def __init__(self, box: tuple[int, int, int, int], hold: np.ndarray, clean: np.ndarray, alpha: np.ndarray):
        self.box, self.hold, self.clean, self.alpha = box, hold, clean, alpha
        self.beta = (1 - alpha).astype(np.float32)

    @classmethod
    def find(cls, picture: np.ndarray, eyes: list[tuple[np.ndarray, np.ndarray]], frame: np.ndarray, width: float, size: float, axes: np.ndarray) -> Rims | None:
        """The glasses in `picture` (H, W, 3) uint8 inside the fixed `frame` (F, 2), away from the eyes:
        per eye, its lash row and lower margin (K, 2) each, the opening between them; `width`: an eye's
        width, `size`: the face's, in pixels; `axes` (2, 2): the face's u and v as rows. None: no glasses."""
        box = pixel_box(frame, 1, picture.shape)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        corner = np.array([x0, y0], np.float64)
        crop = picture[y0:y1, x0:x1]
        disc = _disc(RIM_WIDTH * size)
        line = np.zeros(crop.shape[:2], np.uint8)
        for c in range(3):  # dark rims and light ones, in whichever channel shows them
            channel = np.ascontiguousarray(crop[..., c])
            line = np.maximum(line, cv2.morphologyEx(channel, cv2.MORPH_BLACKHAT, disc))
            line = np.maximum(line, cv2.morphologyEx(channel, cv2.MORPH_TOPHAT, disc))
        region = np.zeros_like(line)
        cv2.fillConvexPoly(region, np.round(cv2.convexHull((frame - corner).astype(np.float32))[:, 0]).astype(np.int32), 1)
        opening = np.zeros_like(line)
        cv2.fillPoly(opening, [np.round(np.concatenate([top, bottom[::-1]]) - corner).astype(np.int32) for top, bottom in eyes], 1)
        whole = ((line > RIM_CONTRAST) & (region > 0) & (opening == 0)).astype(np.uint8)
        line = whole & (cv2.dilate(opening, _disc(2 * EYE_GUARD * size)) == 0)  # rims are told by what lies clear of the eyes

        _, labels, stats, _ = cv2.connectedComponentsWithStats(line, connectivity=8)
        rims = np.zeros(line.shape, bool)
        for i in np.flatnonzero(np.hypot(stats[:, 2], stats[:, 3]) >= RIM_SPAN * width):
            if i == 0:
                continue
            ys, xs = np.nonzero(labels == i)
            pts = np.stack([xs, ys], 1) + corner
            hull = cv2.convexHull(pts.astype(np.float32))[:, 0]
            span = np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1)).max()
            if span >= RIM_SPAN * width and max(_cover(pts @ axes.T, top @ axes.T) for top, _ in eyes) >= RIM_COVER:
                rims[ys, xs] = True
        if not rims.any():
            return None
        _, labels = cv2.connectedComponents(whole, connectivity=8)  # and then followed up to the eyes' openings
        rims = np.isin(labels, np.unique(labels[rims]))
        ys, xs = np.nonzero(rims)
        found = (np.stack([xs, ys], 1) + corner) @ axes.T
        if min(min(_cover(found, top @ axes.T), _cover(found, bottom @ axes.T, below=True)) for top, bottom in eyes) < RIM_COVER:
            return None  # rims run above and below both eyes; eyeliner, a brow or hair over the eyes does not

        grow = max(1, round(RIM_HOLD * size))
        hold = cv2.dilate(rims.astype(np.uint8), _disc(2 * grow + 1))
        alpha = np.clip(1 - cv2.distanceTransform(1 - hold, cv2.DIST_L2, 3) / (grow + 1), 0, 1).astype(np.float32)
        clean = cv2.inpaint(np.ascontiguousarray(crop), hold, 2 * grow + 1, cv2.INPAINT_TELEA)
        ys, xs = np.nonzero(alpha > 0)
        a0, b0, a1, b1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        return cls((x0 + a0, y0 + b0, x0 + a1, y0 + b1), hold[b0:b1, a0:a1] > 0, clean[b0:b1, a0:a1], alpha[b0:b1, a0:a1])

    def warp(self, source: np.ndarray, start: tuple[int, int], points: np.ndarray, target: np.ndarray, triangles: np.ndarray, out: np.ndarray) -> None:
        """The eye warp (`talkface.geometry.warp_triangles` of `points` to `target`) of `source`, the part
        of the frame from pixel `start` that holds every sampled point, with the rims painted out of it
        (here, in place), written into `out` (the frame itself, or a copy of it), where the rims are then
        laid back unmoved."""
        rx0, ry0, rx1, ry1 = self.box
        sx0, sy0 = start
        kept = out[ry0:ry1, rx0:rx1].copy()  # the frame's own pixels, rims and all
        cut = source[ry0 - sy0 : ry1 - sy0, rx0 - sx0 : rx1 - sx0]  # the rim box lies inside the eyes' frame, so inside `source`
        np.copyto(cut, self.clean, where=self.hold[..., None])
        box = warp_triangles(source, points, target, triangles, out, start)
        if box is None:
            return
        x0, y0, x1, y1 = box
        ix0, iy0, ix1, iy1 = max(rx0, x0), max(ry0, y0), min(rx1, x1), min(ry1, y1)
        if ix1 > ix0 and iy1 > iy0:
            at = (slice(iy0 - ry0, iy1 - ry0), slice(ix0 - rx0, ix1 - rx0))
            out[iy0:iy1, ix0:ix1] = cv2.blendLinear(np.ascontiguousarray(kept[at]), np.ascontiguousarray(out[iy0:iy1, ix0:ix1]), self.alpha[at], self.beta[at])


def _cover(points: np.ndarray, margin: np.ndarray, below: bool = False) -> float:
    """The share of an eye's width (a lid row (K, 2), in face axes u, v) over which `points` (P, 2) lie
    above it (`below`: under it)."""
    order = np.argsort(margin[:, 0])
    u, v = margin[order, 0], margin[order, 1]
    inside = (points[:, 0] >= u[0]) & (points[:, 0] <= u[-1])
    line = np.interp(points[:, 0], u, v)
    side = points[inside & ((points[:, 1] > line) if below else (points[:, 1] < line))]
    return len(np.unique(np.floor(side[:, 0]))) / max(u[-1] - u[0], 1.0)


class EyeWarp:
    """One picture's eyes, ready to blink and raise their brows: made once, reused for every frame.

    landmarks: (478, 2) the face mesh in pixels; size: the face's size in pixels (eyes to mouth);
    picture: (H, W, 3) uint8, the photo, whose glasses (`Rims`) stay still (None: nothing stays).
    `render(frame, closure, brow)` gives `frame` (H, W, 3) uint8, a picture with these landmarks,
    with lids closed by `closure` (2,) (0 as in the photo, 1 shut) and brows raised by `brow` face sizes.
    """

    def __init__(self, landmarks: np.ndarray, size: float, picture: np.ndarray | None = None):
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
        frame = _frame(outer, self.u, self.v, FRAME_MARGIN * self.size)
        add(frame)  # fixed: the warp fades to nothing there
        self.source = np.concatenate(points)
        self.rows = rows
        self.rims = None
        if picture is not None:
            eyes = [(self.source[rows[side]["lash"]], self.source[rows[side]["lower"]]) for side in SIDES]
            width = float(np.mean([np.linalg.norm(lm[EYES[side]["upper"][0]] - lm[EYES[side]["upper"][-1]]) for side in SIDES]))
            self.rims = Rims.find(picture, eyes, frame, width, self.size, np.stack([self.u, self.v]))

        # outside the eyes' outer rings: Delaunay, less what lies inside either ring
        inner = set()
        loops = []
        for side in SIDES:
            r = rows[side]
            inner |= set(np.concatenate([r[k] for k in ("upper", "lower", "crease", "ring2_lower", "lash")]).tolist())
            loops.append(np.concatenate([r["ring3_upper"], r["ring3_lower"][::-1]]))
        outside = np.array([i for i in range(len(self.source)) if i not in inner])
        tri = outside[delaunay(self.source[outside])]
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
        moves = max(closure) > 1e-4 or abs(brow) > 1e-6
        if out is None:
            if not moves:
                return frame
            out = frame.copy()
        elif out is not frame:
            out[...] = frame
        if moves:
            sx0, sy0, sx1, sy1 = pixel_box(self.source, 2, frame.shape)  # every point the warp samples lies in it
            source = frame[sy0:sy1, sx0:sx1].copy()  # `out` may be `frame` itself
            if self.rims is None:
                warp_triangles(source, self.source, self.target(closure, brow), self.triangles, out, (sx0, sy0))
            else:
                self.rims.warp(source, (sx0, sy0), self.source, self.target(closure, brow), self.triangles, out)
        return out
