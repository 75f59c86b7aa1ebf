"""Per-pixel loops that no OpenCV call makes in one pass, compiled by numba.

A piecewise-affine warp in numpy and OpenCV took five passes over its box (a gather of each pixel's
triangle coefficients, the sampling coordinates worked out, the pixels on triangle edges clamped, a
remap, a copy); one compiled loop does it all, with the same bilinear sampling as `cv2.remap`
(neighbours weighed in 1/32 pixel steps). It took half the time on the mouth's warp.

The loops are compiled for their one signature when this module is imported, or read from numba's
cache beside it (a fresh install compiles once, in a second or two). Rendering processes are forked
after the import, so they inherit the compiled code.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types

_PIXELS = types.Array(types.uint8, 3, "C")
# src (h, w, 3) uint8 (read only will do), src's top-left picture pixel (x, y), ids (bh, bw) int32,
# coef (M, 12) float32, out (H, W, 3) uint8, the box's top-left picture pixel (x, y)
_SIGNATURE = types.void(types.Array(types.uint8, 3, "C", readonly=True), types.int64, types.int64, types.Array(types.int32, 2, "C"),
                        types.Array(types.float32, 2, "C"), _PIXELS, types.int64, types.int64)


@njit(_SIGNATURE, cache=True, nogil=True, fastmath=True, boundscheck=False)
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
