"""Per-pixel loops that no OpenCV call makes in one pass, compiled by numba.

A piecewise-affine warp in numpy and OpenCV took five passes over its box (a gather of each pixel's
triangle coefficients, the sampling coordinates worked out, the pixels on triangle edges clamped, a
remap, a copy); one compiled loop does it all, with the same bilinear sampling as `cv2.remap`
(neighbours weighed in 1/32 pixel steps). It took half the time on the mouth's warp.

The loops are compiled for their one signature when this module is imported, or read from numba's
cache beside it (a fresh install compiles once, in about two seconds; where no cache can be written,
at every start). Rendering processes are forked after the import, so they inherit the compiled code.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types


def _compiled(signature=None, **options):
    """numba's njit, its compiled code kept in numba's cache (beside this file, or in the user's cache
    folder); where neither can be written (a read-only install, no home folder), compiled at every start."""
    given = () if signature is None else (signature,)

    def decorate(fn):
        try:
            return njit(*given, cache=True, **options)(fn)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return njit(*given, **options)(fn)
    return decorate


_PIXELS = types.Array(types.uint8, 3, "C")
# src (h, w, 3) uint8 (read only will do), src's top-left picture pixel (x, y), ids (bh, bw) int32,
# coef (M, 12) float32, out (H, W, 3) uint8, the box's top-left picture pixel (x, y)
_SIGNATURE = types.void(types.Array(types.uint8, 3, "C", readonly=True), types.int64, types.int64, types.Array(types.int32, 2, "C"),
                        types.Array(types.float32, 2, "C"), _PIXELS, types.int64, types.int64)


@_compiled(_SIGNATURE, nogil=True, fastmath=True, boundscheck=False)
def warp_triangles(src, sx0, sy0, ids, coef, out, x0, y0):  # pragma: no cover - compiled
    """Each pixel (x0 + x, y0 + y) of `out` whose `ids[y, x]` names a triangle k (< M) takes `src`
    bilinearly at the picture point that the triangle's affine gives: with b1, b2 = coef[k, 0:3] and
    coef[k, 3:6] dotted with (x, y, 1), clamped to the triangle, the point is coef[k, 6:8] +
    b1 coef[k, 8:10] + b2 coef[k, 10:12]. Beyond `src`'s edge its edge pixels repeat."""
    h, w = ids.shape
    H, W = src.shape[0], src.shape[1]
    m = coef.shape[0]
    for y in range(h):
        fy = np.float32(y)
        for x in range(w):
            k = ids[y, x]
            if k >= m or k < 0:
                continue
            fx = np.float32(x)
            b1 = coef[k, 0] * fx + coef[k, 1] * fy + coef[k, 2]
            b2 = coef[k, 3] * fx + coef[k, 4] * fy + coef[k, 5]
            if b1 < 0 or b2 < 0 or b1 + b2 > 1:  # rasterised onto a triangle it lies just outside of
                b0 = max(np.float32(1) - b1 - b2, np.float32(0))
                b1 = max(b1, np.float32(0))
                b2 = max(b2, np.float32(0))
                s = b0 + b1 + b2
                b1 /= s
                b2 /= s
            sx = coef[k, 6] + b1 * coef[k, 8] + b2 * coef[k, 10] - sx0
            sy = coef[k, 7] + b1 * coef[k, 9] + b2 * coef[k, 11] - sy0
            qx = int(sx * 32 + np.float32(0.5)) if sx > 0 else 0
            qy = int(sy * 32 + np.float32(0.5)) if sy > 0 else 0
            ix, iy = qx >> 5, qy >> 5
            ax, ay = qx & 31, qy & 31
            if ix >= W - 1:
                ix, ax = max(W - 2, 0), 32 if W > 1 else 0
            if iy >= H - 1:
                iy, ay = max(H - 2, 0), 32 if H > 1 else 0
            jx, jy = min(ix + 1, W - 1), min(iy + 1, H - 1)
            w00 = (32 - ax) * (32 - ay)
            w01 = ax * (32 - ay)
            w10 = (32 - ax) * ay
            w11 = ax * ay
            for c in range(3):
                v = (np.int32(src[iy, ix, c]) * w00 + np.int32(src[iy, jx, c]) * w01
                     + np.int32(src[jy, ix, c]) * w10 + np.int32(src[jy, jx, c]) * w11)
                out[y0 + y, x0 + x, c] = (v + 512) >> 10


@_compiled(nogil=True, inline="always")
def _smoothstep(a, b, x):  # pragma: no cover - compiled
    t = min(max((x - a) / (b - a), 0.0), 1.0)
    return t * t * (3 - 2 * t)


@_compiled(nogil=True, inline="always")
def _interp(x, xp, fp):  # pragma: no cover - compiled
    """np.interp for one x over a short increasing xp."""
    n = xp.shape[0]
    if x <= xp[0]:
        return fp[0]
    if x >= xp[n - 1]:
        return fp[n - 1]
    i = 1
    while xp[i] < x:
        i += 1
    a, b = xp[i - 1], xp[i]
    return fp[i - 1] + (fp[i] - fp[i - 1]) * ((x - a) / (b - a)) if b > a else fp[i]


_F8 = types.Array(types.float64, 1, "C", readonly=True)
_PLANE = types.Array(types.float32, 2, "C")


@_compiled(types.boolean(types.Array(types.uint8, 2, "C"), types.int64, types.int64, _F8, _F8, _F8, _F8, _F8, _F8, _F8, _F8, _F8,
                    types.float64, types.float64, _PLANE, _PLANE, _PLANE, _PLANE),
           nogil=True, boundscheck=False)
def mouth_alpha(mask, x0, y0, centre, u, v, upper_x, upper_y, lower_x, lower_y, pair_x, own_y, soft, width, alpha, s, below, gap):  # pragma: no cover - compiled
    """The painted mouth's coverage in its box (`render.mouth.MouthWarp._paint_mouth`, before its
    edge is softened), and each pixel's place in the mouth: `s` from corner to corner (-1 .. 1),
    `below` the upper lip and the lips' `gap` (pixels). The profiles (x along the mouth, sorted; y
    across it) are the upper and lower inner lip and the photo's own opening. True when any is painted."""
    h, w = mask.shape
    half = pair_x[pair_x.shape[0] - 1]
    any_painted = False
    for y in range(h):
        for x in range(w):
            dx = np.float64(np.float32(x0 + x) - np.float32(centre[0]))
            dy = np.float64(np.float32(y0 + y) - np.float32(centre[1]))
            along = dx * u[0] + dy * u[1]
            across = dx * v[0] + dy * v[1]
            top = _interp(along, upper_x, upper_y)
            g = max(_interp(along, lower_x, lower_y) - top, 1e-3)
            own = _interp(along, pair_x, own_y)
            b = across - top
            fade = 1.5 * soft * min(max((g - own) / soft, 0.0), 1.0)
            deeper = _smoothstep(own - fade, own + 1e-3, b) if g > own else 0.0
            closing = min(max(3 * (1 - g / max(own, 1e-3)), 0.0), 1.0) if own > 1.0 else 0.0
            thin = (1 - _smoothstep(0.02 * width, 0.08 * width, g)) * closing
            a = (mask[y, x] / np.float32(255)) * max(deeper, thin)
            alpha[y, x] = a
            s[y, x] = along / half
            below[y, x] = b
            gap[y, x] = g
            any_painted = any_painted or a > 0
    return any_painted


@_compiled(types.void(_PLANE, _PLANE, _PLANE, _PLANE, types.Array(types.float32, 1, "C", readonly=True), types.Array(types.float32, 1, "C", readonly=True),
                 types.float64, types.float64, types.Array(types.float32, 2, "C", readonly=True), types.int64, types.int64, _PIXELS, types.int64, types.int64),
           nogil=True, boundscheck=False)
def mouth_colour(alpha, s, below, gap, lip, teeth, width, soft, grain, gx, gy, out, x0, y0):  # pragma: no cover - compiled
    """The painted mouth laid over `out` at (x0, y0) with the (softened) `alpha`: dark lip colour,
    deeper toward the back, a tongue, a hint of upper teeth under the upper lip, the lip's shadow, and
    the photo's grain (a tile laid from picture pixel (gx, gy))."""
    h, w = alpha.shape
    n = grain.shape[0]
    for y in range(h):
        for x in range(w):
            a = np.float64(alpha[y, x])
            if a <= 0:
                continue
            sx, b, g = np.float64(s[y, x]), np.float64(below[y, x]), np.float64(gap[y, x])
            t = min(max(b / g, 0.0), 1.0)
            depth = _smoothstep(0.0, 1.0, 1 - min(max(np.sqrt(sx * sx + (2 * t - 1) ** 2), 0.0), 1.0))
            across = min(max(1 - sx * sx, 0.0), 1.0)
            tongue = 0.3 * _smoothstep(0.55, 1.0, t) * across
            band = b / max(min(0.35 * g, 0.12 * width), 1e-3)
            tooth = _smoothstep(0.0, 0.15, band) * (1 - _smoothstep(0.35, 1.0, band)) * across * across
            tooth *= 0.45 * _smoothstep(0.04 * width, 0.12 * width, g)
            shade = 0.7 + 0.3 * _smoothstep(0.0, soft, b)
            grainy = grain[(y0 + y - gy) % n, (x0 + x - gx) % n]
            for c in range(3):
                colour = lip[c] * (0.32 - 0.24 * depth)
                colour += (lip[c] * 0.6 - colour) * tongue
                colour += (teeth[c] - colour) * tooth
                colour = colour * shade + grainy
                roi = np.float64(out[y0 + y, x0 + x, c])
                out[y0 + y, x0 + x, c] = np.uint8(min(max(roi + a * (colour - roi) + 0.5, 0.0), 255.0))
