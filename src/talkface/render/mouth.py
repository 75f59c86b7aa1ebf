"""The mouth warp: the photo's own pixels, moved so that its lips and chin reach new positions.

A motion model says where the 53 `MOTION_POINTS` go in each frame; `MouthWarp` moves the picture's
pixels there with a piecewise-affine warp at full resolution, and paints a plausible inside of the
mouth where the lips part wider than the photo shows. `close_mouth` tells a photo's mouth at rest.

The mesh
--------
Control points: the 53 moving points; fixed mesh points across the nose and upper cheeks
(`FIXED_POINTS`, which speech does not move); a frame of fixed points around the lower face, well
outside the jaw, where the deformation has faded to zero; copies of the inner lips for the inside of
the mouth. The other lower-face mesh points are left out: pinned next to lips that move, their
triangles would fold.

Triangles, painted in this order (a later one covers an earlier one where they overlap): a Delaunay
triangulation of everything outside the lips, made on the face with its mouth open wide so that the
same list suits a closed and a wide-open mouth; the inside of the mouth (a strip between the upper
and lower inner lip); the two lips (strips between the inner and the outer loop), last, so that a
closed mouth's collapsed inside stays hidden under them.

Rendering
---------
Backward: each output pixel inside a triangle that moved takes the source pixel that the triangle's
affine (target -> source) gives, sampled bilinearly in one compiled pass (`talkface.geometry.warp_triangles`).
Every other pixel is the input's, exactly.

The inside of the mouth shows the photo's own at its own scale, in a window below the upper lip as
tall as the target opening: lips that close crop it (teeth are covered, never squeezed into a line),
lips that part wider than the photo's show a painted mouth below it, shaded from the person's lip
colour, with a hint of upper teeth and the photo's grain. Lips that close over what the photo shows
apart sample a little inside themselves and meet on a soft dark seam.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talkface import kernels
from talkface.geometry import axes_between, delaunay, eye_axes, pixel_box, signed_area, strip_triangles, warp_triangles
from talkface.media.face import CHIN, INNER_LIP_PAIRS, LIPS_INNER, LIPS_OUTER, MOTION_POINTS, NUM_LANDMARKS, Face

UPPER_SHARE = 0.3  # share of a change in lip gap taken by the upper lip; the lower lip and jaw take the rest
# Across the nose's base and the upper cheeks, ear to ear: points speech does not move.
FIXED_POINTS = [93, 137, 123, 50, 205, 98, 2, 327, 425, 280, 352, 366, 323]
NOSE_TIP = 1
FRAME_MARGIN = 0.6  # the fixed frame's distance outside the face, in face sizes (d, eyes to mouth)
FRAME_STEP = 0.4  # spacing of the frame's points, in d
MESH_OPENING = 0.35  # mouth opening (of the mouth's width) of the face the triangles are made on
GRAIN = 64  # side of the tile of noise that gives the painted mouth the photo's grain
CLOSE_PULL = 0.03  # how far (of the mouth's width) a closing lip samples inside itself, away from the teeth

_AT = {index: i for i, index in enumerate(MOTION_POINTS)}  # mesh index -> row in MOTION_POINTS


def _halves(loop: list[int]) -> tuple[list[int], list[int]]:
    """A lip loop (left corner, over the top, back along the bottom) as its upper half, left to right,
    and its lower half, left to right; both include the corners."""
    right = len(loop) // 2
    return loop[: right + 1], [loop[0]] + loop[:right - 1:-1]


UPPER_INNER, LOWER_INNER = _halves(LIPS_INNER)  # 11 points each, corners 78 and 308 shared
UPPER_OUTER, LOWER_OUTER = _halves(LIPS_OUTER)  # 11 points each, corners 61 and 291 shared
assert [(u, l) for u, l in zip(UPPER_INNER[1:-1], LOWER_INNER[1:-1])] == list(INNER_LIP_PAIRS)


def _follow(x: np.ndarray, xp: np.ndarray, dp: np.ndarray) -> np.ndarray:
    """Displacements (K, 2) at positions x (K,) interpolated from displacements dp (P, 2) at xp (P,)."""
    order = np.argsort(xp)
    return np.stack([np.interp(x, xp[order], dp[order, k]) for k in range(2)], 1)


def open_mouth(landmarks: np.ndarray, opening: float) -> np.ndarray:
    """(478, 2) -> (478, 2): the same face with its lips `opening` apart (a fraction of the mouth's width).

    The gap between each facing pair of inner-lip points becomes `opening` x width x an elliptic
    profile along the mouth, down the face; the upper lip takes `UPPER_SHARE` of the change, the
    lower lip and jaw the rest. Outer lips follow the inner-lip displacement nearest along the mouth;
    chin points follow the mean lower-lip displacement, less the farther they are from the mouth's
    centre. Other points stay where they are.
    """
    lm = np.asarray(landmarks, np.float64)
    assert lm.shape == (NUM_LANDMARKS, 2), f"landmarks must be ({NUM_LANDMARKS}, 2), got {lm.shape}"
    out = lm.copy()
    u, v = eye_axes(lm)
    left, right = lm[LIPS_INNER[0]], lm[UPPER_INNER[-1]]
    centre = (left + right) / 2
    width = float(np.linalg.norm(lm[LIPS_OUTER[0]] - lm[UPPER_OUTER[-1]]))
    half = max(abs(float((right - left) @ u)) / 2, 1e-9)

    up, lo = [p for p, _ in INNER_LIP_PAIRS], [q for _, q in INNER_LIP_PAIRS]
    s = (((lm[up] + lm[lo]) / 2 - centre) @ u) / half
    profile = np.sqrt(np.clip(1 - s**2, 0, 1))
    change = opening * width * profile[:, None] * v - (lm[lo] - lm[up])
    d_up, d_lo = -UPPER_SHARE * change, (1 - UPPER_SHARE) * change
    out[up] += d_up
    out[lo] += d_lo

    # outer lips: as the inner lip at the same place along the mouth, from corner (-1) to corner (1)
    zero = np.zeros((1, 2))
    o_left, o_right = lm[LIPS_OUTER[0]], lm[UPPER_OUTER[-1]]
    o_half = max(abs(float((o_right - o_left) @ u)) / 2, 1e-9)
    inner_at = lambda idx: ((lm[idx] - centre) @ u) / half  # noqa: E731
    outer_at = lambda idx: ((lm[idx] - (o_left + o_right) / 2) @ u) / o_half  # noqa: E731
    corners = [LIPS_INNER[0]] + up + [UPPER_INNER[-1]]
    out[UPPER_OUTER] += _follow(outer_at(UPPER_OUTER), inner_at(corners), np.concatenate([zero, d_up, zero]))
    corners = [LIPS_INNER[0]] + lo + [UPPER_INNER[-1]]
    out[LOWER_OUTER] += _follow(outer_at(LOWER_OUTER), inner_at(corners), np.concatenate([zero, d_lo, zero]))

    x = (lm[CHIN] - centre) @ u
    weight = np.clip(1 - (x / (1.25 * np.abs(x).max())) ** 2, 0, 1)
    out[CHIN] += weight[:, None] * d_lo.mean(0)
    return out.astype(np.float32)


def close_mouth(landmarks: np.ndarray) -> np.ndarray:
    """(478, 2) -> (478, 2): the same face with its lips closed at rest (facing inner-lip points meet).

    This is how a single photo, whose mouth may be open (a smile with teeth), tells the mouth at rest.
    An already closed mouth comes back nearly unchanged.
    """
    return open_mouth(landmarks, 0.0)


def _frame(lm: np.ndarray, size: float) -> np.ndarray:
    """(F, 2) fixed points around the lower face: a rectangle in the face's axes, from the nose tip's
    height down to below the chin, `FRAME_MARGIN` outside the face.

    It is not clipped to the picture: a face at the picture's edge keeps room to move (what comes
    in from beyond the edge repeats the edge's pixels) and its triangles do not fold.
    """
    u, v = eye_axes(lm)
    centre = lm[[LIPS_OUTER[0], UPPER_OUTER[-1]]].mean(0)
    uv = (lm - centre) @ np.stack([u, v], 1)
    m = FRAME_MARGIN * size
    u0, u1 = uv[:, 0].min() - m, uv[:, 0].max() + m
    v0, v1 = uv[NOSE_TIP, 1], uv[:, 1].max() + m
    corners = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1], [u0, v0]])
    pts = []
    for a, b in zip(corners[:-1], corners[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / (FRAME_STEP * size))))
        pts.append(a + (b - a) * np.arange(n)[:, None] / n)
    return centre + np.concatenate(pts) @ np.stack([u, v])


def _triangles(canonical: np.ndarray, outside: list[int], inside: tuple[list[int], list[int]]) -> tuple[np.ndarray, slice]:
    """(T, 3) triangles over control points (N, 2) in their open-mouth positions, in painting order,
    all with positive area there, and the rows of those inside the mouth.

    outside: the control points of the Delaunay part (outer lip loop, chin, fixed points, frame);
    inside: the rows of control points, left to right, that close the inside of the mouth from above and below.
    """
    pos = lambda idx: [_AT[i] for i in idx]  # noqa: E731
    pts = canonical[outside]
    tri = np.asarray(outside)[delaunay(pts)]
    loop = canonical[pos(LIPS_OUTER)].astype(np.float32)
    centres = canonical[tri].mean(1)
    within = np.array([cv2.pointPolygonTest(loop, (float(x), float(y)), False) > 0 for x, y in centres])
    tri = tri[~within]
    edges = {frozenset(e) for t in tri for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    ring = pos(LIPS_OUTER)
    missing = [(a, b) for a, b in zip(ring, ring[1:] + ring[:1]) if frozenset((a, b)) not in edges]
    assert not missing, f"the mesh around the lips has a gap at {missing}"

    mouth = strip_triangles(*inside)
    lips = strip_triangles(pos(UPPER_OUTER), pos(UPPER_INNER)) + strip_triangles(pos(LOWER_INNER), pos(LOWER_OUTER))
    tris = np.concatenate([tri, np.array(mouth + lips)]).astype(np.int32)
    flip = signed_area(canonical, tris) < 0
    tris[flip] = tris[flip][:, ::-1]
    return tris, slice(len(tri), len(tri) + len(mouth))


def _aperture(points: np.ndarray) -> np.ndarray:
    """(9,) gaps in pixels between the facing inner-lip points of MOTION_POINTS positions (53, 2),
    down across the mouth (negative where the lips cross)."""
    _, v = axes_between(points[_AT[LIPS_OUTER[0]]], points[_AT[UPPER_OUTER[-1]]])
    return (points[_PAIR_LOWER] - points[_PAIR_UPPER]) @ v


_PAIR_UPPER = [_AT[p] for p, _ in INNER_LIP_PAIRS]
_PAIR_LOWER = [_AT[q] for _, q in INNER_LIP_PAIRS]
_CORNERS = [_AT[LIPS_INNER[0]], _AT[UPPER_INNER[-1]]]


def _sorted(xp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A profile (xp, fp) with xp increasing, as np.interp takes it (float64)."""
    order = np.argsort(xp)
    return np.ascontiguousarray(xp[order], np.float64), np.ascontiguousarray(fp[order], np.float64)


def _median_colour(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    pixels = picture[mask > 0]
    return np.median(pixels, 0).astype(np.float32) if len(pixels) else np.full(3, 128, np.float32)


class MouthWarp:
    """One picture, ready to have its lips and chin moved: made once, reused for every frame.

    picture: (H, W, 3) uint8; landmarks: (478, 2) its face mesh in pixels (x, y).
    `render(target)` gives the picture with the 53 MOTION_POINTS moved to target (53, 2).

    Control points (N, 2), in this order: MOTION_POINTS, FIXED_POINTS, the frame, and second copies
    of the upper and the lower inner lip (without their corners) that only the inside of the mouth
    uses: there the photo's own mouth is shown at its own scale below the upper lip (cropped by lips
    that close, not squeezed; continued by a painted mouth where lips part wider than the photo's).
    """

    def __init__(self, picture: np.ndarray, landmarks: np.ndarray, like: "MouthWarp | None" = None):
        """`like`: the warp of a picture of the same face a moment before (the previous video frame):
        its triangles are kept where none of them turns over on this face, and its colours are taken."""
        if not (picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8):
            raise ValueError(f"picture must be (H, W, 3) uint8, got {picture.shape} {picture.dtype}")
        lm = np.asarray(landmarks, np.float64)
        if lm.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must be ({NUM_LANDMARKS}, 2), got {lm.shape}")
        self.picture = np.ascontiguousarray(picture)
        self.rest = lm[MOTION_POINTS]  # (53, 2)
        n = len(MOTION_POINTS)
        frame = _frame(lm, Face.from_landmarks(lm).size)
        fixed = np.concatenate([lm[FIXED_POINTS], frame])
        self.source = np.concatenate([self.rest, fixed, self.rest[_PAIR_UPPER], self.rest[_PAIR_LOWER]])
        k = n + len(fixed)
        self._inside_upper = np.arange(k, k + len(_PAIR_UPPER))  # the copies' rows
        self._inside_lower = np.arange(k + len(_PAIR_UPPER), len(self.source))

        canonical = self.source.copy()
        opened = open_mouth(lm, MESH_OPENING)[MOTION_POINTS]
        canonical[:n], canonical[k:] = opened, opened[_PAIR_UPPER + _PAIR_LOWER]
        outside = [_AT[i] for i in LIPS_OUTER + CHIN] + list(range(n, k))
        inside = [[_CORNERS[0], *rows, _CORNERS[1]] for rows in (self._inside_upper, self._inside_lower)]
        if like is not None and len(like.source) == len(self.source) and (signed_area(canonical, like.triangles) > 0).all():
            self.triangles, self._mouth = like.triangles, like._mouth
        else:
            self.triangles, self._mouth = _triangles(canonical, outside, tuple(inside))

        self.width = float(np.linalg.norm(self.rest[_AT[LIPS_OUTER[0]]] - self.rest[_AT[UPPER_OUTER[-1]]]))
        self.gaps = _aperture(self.rest)  # (9,) the photo's own lip gaps
        _, self._down = axes_between(self.rest[_AT[LIPS_OUTER[0]]], self.rest[_AT[UPPER_OUTER[-1]]])
        # a closing lip samples a little inside itself, from its inner loop towards its outer one
        self._lip_rows = _PAIR_UPPER + _PAIR_LOWER
        outer = [_AT[i] for i in UPPER_OUTER[1:-1] + LOWER_OUTER[1:-1]]
        towards = self.rest[outer] - self.rest[self._lip_rows]
        self._into_lip = towards / np.maximum(np.linalg.norm(towards, axis=1, keepdims=True), 1e-9)
        self._grain_at = np.floor(lm[LIPS_OUTER[0]]).astype(int)  # the grain's tile is laid from the mouth's corner: the same in any crop of the picture
        if like is None:
            self._colours(lm)
        else:
            self.lip, self.skin, self.teeth, self.grain = like.lip, like.skin, like.teeth, like.grain

    def _colours(self, lm: np.ndarray) -> None:
        """The painted mouth's colours: the lips' own, a light tone for teeth from the skin's, and the
        photo's grain around the mouth (so that the painted mouth is not smoother than what surrounds it)."""
        h, w = self.picture.shape[:2]
        x0, y0 = np.maximum(np.floor(lm[LIPS_OUTER].min(0) - 0.5 * self.width).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(lm[LIPS_OUTER].max(0) + 0.5 * self.width).astype(int), (w, h))
        region = self.picture[y0:y1, x0:x1]
        lips, inner = np.zeros(region.shape[:2], np.uint8), np.zeros(region.shape[:2], np.uint8)
        cv2.fillPoly(lips, [np.round(lm[LIPS_OUTER] - (x0, y0)).astype(np.int32)], 1)
        cv2.fillPoly(inner, [np.round(lm[LIPS_INNER] - (x0, y0)).astype(np.int32)], 1)
        self.lip = _median_colour(region, lips & (1 - inner))
        r = max(2, int(0.06 * self.width))
        cheeks = np.round(lm[[50, 280, 205, 425]]).astype(int)
        c0, c1 = np.maximum(cheeks.min(0) - r, 0), np.minimum(cheeks.max(0) + r + 1, (w, h))
        skin = np.zeros((c1[1] - c0[1], c1[0] - c0[0]), np.uint8)
        for c in cheeks - c0:
            cv2.circle(skin, (int(c[0]), int(c[1])), r, 1, -1)
        skin = _median_colour(self.picture[c0[1] : c1[1], c0[0] : c1[0]], skin)
        light = float(np.clip(skin.mean() / 160.0, 0.45, 1.1))
        self.skin = skin  # the cheeks' colour: the hue of the light the face is lit by (refine.Refinement)
        self.teeth = 0.25 * skin + 0.75 * np.array([232.0, 228.0, 218.0], np.float32) * light
        grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).astype(np.float32)
        fine = grey - cv2.GaussianBlur(grey, (0, 0), 1.5)
        sigma = 1.48 * float(np.median(np.abs(fine - np.median(fine)))) if fine.size else 0.0
        noise = cv2.GaussianBlur(np.random.default_rng(0).standard_normal((GRAIN, GRAIN)).astype(np.float32), (0, 0), 0.6)
        self.grain = noise * (sigma / max(float(noise.std()), 1e-6))

    def controls(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source and target control points (N, 2) for MOTION_POINTS target positions (53, 2)."""
        target = np.asarray(target, np.float64)
        if target.shape != self.rest.shape:
            raise ValueError(f"target must be {self.rest.shape}, got {target.shape}")
        gaps = _aperture(target)
        tgt = self.source.copy()
        tgt[: len(target)] = target
        tgt[self._inside_upper], tgt[self._inside_lower] = target[_PAIR_UPPER], target[_PAIR_LOWER]
        src = self.source.copy()
        # inside the mouth, the photo at its own scale: a window as tall as the target opens, from the
        # photo's upper lip, or lower where that lip comes down over the teeth
        drop = self._upper_drop(target)
        src[self._inside_upper] += drop[:, None] * self._down
        src[self._inside_lower] += (gaps - self.gaps + drop)[:, None] * self._down
        # where lips close over what the photo shows apart, they sample a little inside themselves,
        # so that their seam never picks up the teeth that were behind it
        pull = np.minimum(CLOSE_PULL * self.width, 0.5 * self.gaps) * self._closure(gaps)
        src[self._lip_rows] += np.concatenate([pull, pull])[:, None] * self._into_lip
        return src, tgt

    def _upper_drop(self, target: np.ndarray) -> np.ndarray:
        """(9,) how far in pixels the target's upper inner lip (53, 2) comes down the face from the photo's (0 where it rises)."""
        return np.maximum((target[_PAIR_UPPER] - self.rest[_PAIR_UPPER]) @ self._down, 0)

    def _closure(self, gaps: np.ndarray) -> np.ndarray:
        """(9,) how far, 0 .. 1, the target's lip gaps (9,) close what the photo shows apart."""
        apart = self.gaps > 1.0
        return np.clip(1 - gaps / np.where(apart, self.gaps, 1.0), 0, 1) * apart

    def folded(self, target: np.ndarray) -> np.ndarray:
        """(T,) bool: the triangles that MOTION_POINTS target positions (53, 2) turn over.

        Slivers that collapse count only when they turn over by more than a thousandth of the mouth's
        width squared: the inside of a closed mouth (the lips cover it), and the lips' corners, where
        the inner loop's corner may lie on or just beyond the outer loop's, already in the photo.
        """
        _, tgt = self.controls(target)
        return signed_area(tgt, self.triangles) < -1e-3 * self.width**2

    def render(self, target: np.ndarray) -> np.ndarray:
        """MOTION_POINTS target positions (53, 2) in pixels -> the picture (H, W, 3) uint8 with them moved there."""
        return self.render_painted(target)[0]

    def render_painted(self, target: np.ndarray) -> tuple[np.ndarray, Painted | None]:
        """As `render`, and where the inside of the mouth was painted (the photo had nothing to show
        there): None when nothing was."""
        src, tgt = self.controls(target)
        out = self.picture.copy()
        if warp_triangles(self.picture, src, tgt, self.triangles, out) is None:
            return out, None
        self._paint_seam(out, tgt[: len(MOTION_POINTS)])
        return out, self._paint_mouth(out, tgt[: len(MOTION_POINTS)])

    def _paint_seam(self, out: np.ndarray, target: np.ndarray) -> None:
        """Paints, in place, the soft dark line where lips that the photo shows apart close on each other."""
        closure = float(self._closure(_aperture(target))[3:6].mean())
        if closure <= 0:
            return
        rows = [_CORNERS[0]] + [-1] * len(_PAIR_UPPER) + [_CORNERS[1]]
        line = target[rows]
        line[1:-1] = (target[_PAIR_UPPER] + target[_PAIR_LOWER]) / 2
        sigma = max(0.5, 0.008 * self.width)
        box = pixel_box(line, int(np.ceil(3 * sigma)) + 2, out.shape)
        if box is None:
            return
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.polylines(mask, [np.round((line - (x0, y0)) * 16).astype(np.int32)], False, 1.0, 1, cv2.LINE_AA, shift=4)
        alpha = cv2.GaussianBlur(mask, (0, 0), sigma)
        alpha *= 0.7 * closure / max(float(alpha.max()), 1e-6)
        roi = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(roi + alpha[..., None] * (self.lip * 0.3 - roi) + 0.5, 0, 255).astype(np.uint8)

    def _paint_mouth(self, out: np.ndarray, target: np.ndarray) -> Painted | None:
        """Paints, in place, a dark mouth inside the target's inner lips wherever the photo's own does
        not reach: deeper below the upper lip than the photo's opening, or in a thin gap of lips that
        close over teeth. Returns where it painted (None: nowhere)."""
        gaps = _aperture(target)
        if gaps.max() <= 0.5:
            return None
        loop = target[[_AT[i] for i in LIPS_INNER]]
        edge = max(0.5, 0.012 * self.width)  # a soft edge, just under the lips
        box = pixel_box(loop, int(np.ceil(3 * edge)) + 1, out.shape)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((loop - (x0, y0)) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)

        # mouth coordinates: `s` from corner to corner (-1 .. 1), `below` the upper lip in pixels; the
        # lips' profiles along the mouth (sorted), from which each pixel's top, gap and own opening follow
        left, right = target[_CORNERS[0]], target[_CORNERS[1]]
        u, v = axes_between(left, right)
        centre, half = (left + right) / 2, max(float(np.linalg.norm(right - left)) / 2, 1e-6)
        rows = lambda idx: target[[_AT[i] for i in idx]] - centre  # noqa: E731
        profiles = [_sorted(rows(UPPER_INNER) @ u, rows(UPPER_INNER) @ v), _sorted(rows(LOWER_INNER) @ u, rows(LOWER_INNER) @ v)]
        own_gaps = np.maximum(self.gaps - self._upper_drop(target), 0)  # how deep the photo's own mouth reaches
        profiles.append(_sorted(np.concatenate([[-half], rows([p for p, _ in INNER_LIP_PAIRS]) @ u, [half]]), np.concatenate([[0], own_gaps, [0]])))
        soft = max(1.0, 0.03 * self.width)  # the photo's own mouth fades out over its last pixels, as far as the target opens beyond it
        alpha, s, below, gap = (np.empty(mask.shape, np.float32) for _ in range(4))
        if not kernels.mouth_alpha(mask, x0, y0, centre.astype(np.float64), u.astype(np.float64), v.astype(np.float64), *[a for p in profiles for a in p],
                                   soft, self.width, alpha, s, below, gap):
            return None
        alpha = cv2.GaussianBlur(alpha, (0, 0), edge, borderType=cv2.BORDER_CONSTANT)
        gx, gy = self._grain_at
        kernels.mouth_colour(alpha, s, below, gap, self.lip, self.teeth.astype(np.float32), self.width, soft, self.grain, int(gx), int(gy), out, x0, y0)
        return Painted(x0, y0, alpha)


@dataclass(frozen=True)
class Painted:
    """Where `MouthWarp` painted the inside of a mouth: `alpha` (h, w) float32 in [0, 1], its top-left
    corner at picture pixel (x0, y0)."""

    x0: int
    y0: int
    alpha: np.ndarray
