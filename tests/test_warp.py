import cv2
import numpy as np
import pytest
import torch

from talkface.media.face import INNER_LIP_PAIRS, LIPS_INNER, LIPS_OUTER, MOTION_POINTS, NUM_LANDMARKS, Face, detect_faces
from talkface.geometry import warp_triangles
from talkface.render.mouth import UPPER_SHARE, MouthWarp, close_mouth, open_mouth

NOSE_TIP = 1
EYES = [33, 133, 145, 159, 263, 362, 374, 386]  # corners and lids


def luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def polygon_mask(shape, points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


@pytest.fixture(scope="module", params=["example", "enlarged"])
def still(request, face_image):
    """(picture, landmarks): the example GRID face as it is (360x288) and enlarged to 720x576."""
    picture = face_image if request.param == "example" else cv2.resize(face_image, (720, 576), interpolation=cv2.INTER_CUBIC)
    faces = detect_faces(picture)
    assert len(faces) == 1
    return picture, faces[0].landmarks


@pytest.fixture(scope="module")
def warp(still):
    return MouthWarp(*still)


def mouth_width(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[LIPS_OUTER[0]] - landmarks[LIPS_OUTER[10]]))


def pair_gaps(landmarks: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(landmarks[q] - landmarks[p]) for p, q in INNER_LIP_PAIRS])


def test_close_mouth_meets_the_lips_of_an_open_mouth(still):
    _, lm = still
    opened = open_mouth(lm, 0.4)
    assert opened.shape == (NUM_LANDMARKS, 2) and opened.dtype == np.float32
    assert pair_gaps(opened)[4] > 0.35 * mouth_width(lm)  # the middle pair is 0.4 of the mouth's width apart
    closed = close_mouth(opened)
    assert pair_gaps(closed).max() < 1e-3 * mouth_width(lm)
    # the upper lip takes the smaller share of closing, the lower lip and jaw the rest
    up, lo = INNER_LIP_PAIRS[4]
    moved_up = np.linalg.norm(closed[up] - opened[up])
    moved_lo = np.linalg.norm(closed[lo] - opened[lo])
    assert moved_up / (moved_up + moved_lo) == pytest.approx(UPPER_SHARE, abs=0.02)
    # the outer lips and the chin come along; no other point moves
    assert np.linalg.norm(closed[LIPS_OUTER[15]] - opened[LIPS_OUTER[15]]) > 0.5 * moved_lo  # 17, middle of the lower lip
    assert np.linalg.norm(closed[152] - opened[152]) > 0.5 * moved_lo  # the tip of the chin
    others = np.setdiff1d(np.arange(NUM_LANDMARKS), MOTION_POINTS)
    assert np.array_equal(closed[others], opened[others])


def test_close_mouth_leaves_a_closed_mouth_nearly_unchanged(still):
    _, lm = still
    closed = close_mouth(lm)
    assert np.abs(closed - lm).max() < 0.03 * mouth_width(lm)


def test_identity_target_gives_the_input_exactly(still, warp):
    picture, lm = still
    out = warp.render(lm[MOTION_POINTS])
    assert out.shape == picture.shape and out.dtype == np.uint8
    assert np.array_equal(out, picture)


def test_render_painted_says_where_the_mouth_was_painted(still, warp):
    picture, lm = still
    assert warp.render_painted(lm[MOTION_POINTS])[1] is None  # nothing moved, nothing painted
    target = open_mouth(close_mouth(lm), 0.35)[MOTION_POINTS]
    out, painted = warp.render_painted(target)
    assert np.array_equal(out, warp.render(target))
    h, w = painted.alpha.shape
    assert painted.alpha.dtype == np.float32 and 0 <= painted.alpha.min() and painted.alpha.max() <= 1
    inside = polygon_mask(picture.shape, target[[MOTION_POINTS.index(i) for i in LIPS_INNER]])
    ys, xs = np.nonzero(inside)
    centre = int(ys.mean()) - painted.y0, int(xs.mean()) - painted.x0
    assert 0 <= centre[0] < h and 0 <= centre[1] < w and painted.alpha[centre] > 0.9


def test_opening_moves_only_the_lower_face_and_darkens_the_mouth(still, warp):
    picture, lm = still
    target = open_mouth(close_mouth(lm), 0.35)[MOTION_POINTS]
    out = warp.render(target)
    changed = np.any(out != picture, axis=2)
    assert changed.sum() > 0
    ys, xs = np.nonzero(changed)
    face = Face.from_landmarks(lm)
    x0, _, x1, y1 = face.box
    # nothing changes above about the nose tip's height: eyes, forehead, hair, background stay exactly
    assert ys.min() >= lm[NOSE_TIP, 1] - 0.15 * face.size
    eyes = int(np.ceil(lm[EYES, 1].max() + 0.1 * face.size))
    assert np.array_equal(out[:eyes], picture[:eyes])
    # nor anything far to the sides or below (the fixed frame lies within a face size of the face)
    assert xs.min() >= x0 - face.size and xs.max() <= x1 + face.size
    assert ys.max() <= y1 + face.size
    far = np.ones(changed.shape, bool)
    far[:, max(0, int(x0 - face.size)) : int(x1 + face.size) + 1] = False
    assert np.array_equal(out[far], picture[far])
    # the inside of the target mouth is dark, darker than the lips that were there
    inside = polygon_mask(picture.shape, target[[MOTION_POINTS.index(i) for i in LIPS_INNER]])
    inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert inside.sum() > 20
    assert luma(out)[inside].mean() < 0.6 * luma(picture)[inside].mean()
    assert luma(out)[inside].mean() < 70


@pytest.mark.parametrize("opening", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
def test_no_triangle_turns_over_as_the_mouth_opens(warp, still, opening):
    _, lm = still
    rest = close_mouth(lm)
    width = mouth_width(lm)
    target = open_mouth(rest, opening)
    assert not warp.folded(target[MOTION_POINTS]).any()
    # the jaw dropping further than the lips part
    dropped = target.copy()
    dropped[MOTION_POINTS[40:]] += (0.0, 0.3 * width)  # CHIN
    assert not warp.folded(dropped[MOTION_POINTS]).any()
    # lips rounding: the corners come in by a fifth of the mouth's width
    rounded = target[MOTION_POINTS].copy()
    centre = rounded[:40].mean(0)
    rounded[:40, 0] = centre[0] + 0.8 * (rounded[:40, 0] - centre[0])
    assert not warp.folded(rounded).any()
    out = warp.render(rounded)
    assert out.shape == still[0].shape


def test_a_turned_over_triangle_is_told(warp, still):
    _, lm = still
    target = lm[MOTION_POINTS].copy()
    target[MOTION_POINTS.index(17)] += (0.0, -0.6 * mouth_width(lm))  # the lower lip's middle pulled above the upper lip
    assert warp.folded(target).any()


@pytest.mark.parametrize("gap", [0.0, 0.03])
def test_closing_an_open_mouth_leaves_no_bright_line(still, gap):
    """Open the mouth with the warp, give the opened frame white teeth, then close it from there again,
    fully or to a slit: the lips cover the inside; no thin bright line is left where the teeth were."""
    picture, lm = still
    target = open_mouth(close_mouth(lm), 0.3)[MOTION_POINTS]
    opened = MouthWarp(picture, lm).render(target)
    opened_lm = lm.copy()
    opened_lm[MOTION_POINTS] = target
    inner = target[[MOTION_POINTS.index(i) for i in LIPS_INNER]]
    teeth = polygon_mask(picture.shape, inner)
    teeth[int(inner[:, 1].mean()) :] = False  # the upper half of the opening
    opened[teeth] = (245, 245, 240)

    closed = MouthWarp(opened, opened_lm).render(open_mouth(lm, gap)[MOTION_POINTS])
    lips = polygon_mask(picture.shape, lm[LIPS_OUTER])
    assert luma(closed)[lips].max() <= luma(picture)[lips].max() + 10
    if gap == 0:  # closed again: close to the original mouth
        assert np.abs(luma(closed)[lips] - luma(picture)[lips]).mean() < 12


def test_bad_shapes_are_refused(warp, still):
    picture, lm = still
    with pytest.raises(ValueError, match="target must be"):
        warp.render(lm[MOTION_POINTS][:40])
    with pytest.raises(ValueError, match="picture must be"):
        MouthWarp(picture[..., 0], lm)
    with pytest.raises(ValueError, match="landmarks must be"):
        MouthWarp(picture, lm[:100])


def gradient(h: int, w: int) -> np.ndarray:
    """A smooth picture (h, w, 3) uint8 whose every pixel differs from its neighbours: where it was sampled shows."""
    ys, xs = np.mgrid[:h, :w]
    return np.stack([3 * xs + 40, 3 * ys + 20, 2 * (xs + ys)], -1).clip(0, 255).astype(np.uint8)


def test_warp_triangles_moves_pixels_inside_moved_triangles_only():
    source = np.array([[10, 10], [50, 10], [10, 50], [50, 50], [30, 30]], np.float64)
    triangles = np.array([[0, 1, 4], [1, 3, 4], [3, 2, 4], [2, 0, 4]])
    picture = gradient(64, 64)
    out = picture.copy()
    assert warp_triangles(picture, source, source, triangles, out) is None and np.array_equal(out, picture)
    target = source.copy()
    target[4] += (4, 0)  # the centre moves right: every triangle moved
    box = warp_triangles(picture, source, target, triangles, out)
    assert box == (10, 10, 51, 51)
    # the moved centre samples the source's centre; the corners and the fixed edges stay; nothing outside the box is written
    assert np.array_equal(out[30, 34], picture[30, 30])
    assert np.array_equal(out[10, 10:51], picture[10, 10:51]) and np.array_equal(out[50, 50], picture[50, 50])
    outside = np.ones((64, 64), bool)
    outside[10:51, 10:51] = False
    assert np.array_equal(out[outside], picture[outside])
    # a part of the picture holding every source point, placed by its corner, samples the same
    part = picture[5:60, 8:58].copy()
    again = picture.copy()
    assert warp_triangles(part, source, target, triangles, again, start=(8, 5)) == box and np.array_equal(again, out)


def _reference_maps(source, target, triangles, shape):
    """Where `warp_triangles` samples, the plain way: every moved triangle's pixels drawn in order,
    each pixel's barycentric coordinates clamped to its triangle."""
    h, w = shape
    moved = (np.abs(target - source) > 1e-6).any(1)[triangles].any(1)
    tris = [t for t in triangles[moved] if abs(np.cross(target[t[1]] - target[t[0]], target[t[2]] - target[t[0]])) > 2e-6]
    if not tris:
        return None
    corners = target[np.array(tris)].reshape(-1, 2)
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
    ids = np.full((y1 - y0, x1 - x0), -1)
    ids32 = ids.astype(np.int32)
    for k, t in enumerate(tris):
        cv2.fillConvexPoly(ids32, np.round((target[t] - (x0, y0)) * 16).astype(np.int32), k, lineType=cv2.LINE_8, shift=4)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    map_x, map_y = xs.copy(), ys.copy()
    for (i, j), k in np.ndenumerate(ids32):
        if k < 0:
            continue
        a, b, c = target[tris[k]]
        m = np.array([b - a, c - a]).T
        w1, w2 = np.linalg.solve(m, np.array([xs[i, j], ys[i, j]]) - a)
        w = np.maximum([1 - w1 - w2, w1, w2], 0)
        w /= w.sum()
        map_x[i, j], map_y[i, j] = w @ source[tris[k]]
    return map_x, map_y, (int(x0), int(y0), int(x1), int(y1))


def test_warp_triangles_samples_a_plain_reference_on_random_overlapping_meshes():
    """Against the plain way (every moved triangle's pixels drawn in order, each pixel's barycentric
    coordinates clamped to its triangle, the picture sampled there by cv2.remap): within a level."""
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(1)
    picture = gradient(40, 44)
    for _ in range(25):
        n = int(rng.integers(5, 25))
        source = rng.uniform(-5, 45, (n, 2))
        tris = Delaunay(source).simplices.astype(np.int32)
        extra = rng.integers(0, n, (6, 3)).astype(np.int32)  # painted last, over the others
        tris = np.concatenate([tris, extra[[len(set(t)) == 3 for t in extra]]])
        target = source + rng.normal(0, 3, source.shape) * (rng.random(n) < 0.6)[:, None]
        out = picture.copy()
        box, want = warp_triangles(picture, source, target, tris, out), _reference_maps(source, target, tris, (40, 44))
        assert (box is None) == (want is None)
        if box is None:
            continue
        map_x, map_y, want_box = want
        assert box == want_box
        x0, y0, x1, y1 = box
        expected = cv2.remap(picture, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        assert np.abs(out[y0:y1, x0:x1].astype(int) - expected).max() <= 1