"""Faces: landmarks (mediapipe face mesh), alignment to the model's crop, and pasting a generated
crop back into the full-resolution picture.

The face template
-----------------
Every crop the model sees, in training and at inference, is the same similarity transform of the
face onto a fixed template. The template is measured in units of `d`, the distance from the centre
of the eyes (mean of the four eye corners) to the centre of the mouth (mean of its corners); the
point shape was measured on frontal GRID frames with mediapipe and made left/right symmetric.
In a crop of height H (128 for the paper preset, 48 for tiny) and width W:

- d = 0.33 H (42 px at 128x96), the eyes' centre at (W/2, 0.35 H), the mouth's centre at
  (W/2, 0.68 H): the mouth lies in the lower third;
- so the brows sit near 0.24 H, the top of the forehead near 0.11 H, the chin near 0.87 H (an open
  jaw reaches about 0.97 H), and the cheeks span about 0.78 W: the whole face from the brows to
  below the chin, roughly centred.

Only points that speech barely moves drive the fit (eye corners, the nose's bridge and base, the
mouth corners), and the fit is plain least squares over all of them: a face that moves smoothly
gives a crop that moves smoothly, with no random sampling to flicker between frames.

Faces are ordered largest first by `size` (= d in pixels). One smaller than `MIN_FACE_SIZE` is
refused: below it mediapipe's landmarks get unreliable and the paper model's crop would be
upsampled from too few pixels.
"""
from __future__ import annotations

import contextlib
import os
import weakref
from dataclasses import dataclass

import cv2
import numpy as np

from talkface import native_logs
from talkface.errors import TalkfaceError

NUM_LANDMARKS = 478  # face mesh with refined eyes and lips (468 + 2 irises x 5)
MIN_FACE_SIZE = 32.0  # pixels between the centre of the eyes and the centre of the mouth

EYE_CORNERS = [33, 133, 362, 263]
MOUTH_CORNERS = [61, 291]

# Alignment points: mediapipe index -> (x, y) in units of d, origin at the centre of the eyes, y down.
TEMPLATE_POINTS = {
    33: (-0.565, -0.016),  # outer eye corners
    263: (0.565, -0.016),
    133: (-0.217, 0.016),  # inner eye corners
    362: (0.217, 0.016),
    168: (0.0, -0.042),  # nose bridge between the eyes
    197: (0.0, 0.169),
    4: (0.0, 0.495),  # just above the nose tip
    2: (0.0, 0.673),  # base of the nose
    61: (-0.325, 1.0),  # mouth corners
    291: (0.325, 1.0),
}
TEMPLATE_SCALE = 0.33  # d as a fraction of the crop height
TEMPLATE_EYES_Y = 0.35  # the eyes' centre as a fraction of the crop height

# Lips, as closed loops starting at the left mouth corner (image left), over the top, back along the bottom.
LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
LIPS_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
LIPS = sorted(set(LIPS_OUTER + LIPS_INNER))  # the 40 lip points
# (upper, lower) inner-lip points facing each other, left to right (the corners 78 and 308 are shared)
INNER_LIP_PAIRS = ((191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318), (415, 324))
APERTURE_PAIRS = ((82, 87), (13, 14), (312, 317))  # the middle three: the mouth's opening
IRIS_CENTRES = (468, 473)

# The blend mask: the jaw line from cheek to cheek and, across the top, the cheeks and nostrils.
JAW = [93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323]
UPPER_EDGE = [50, 205, 98, 2, 327, 425, 280]
CHIN = [172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397]
# The points speech moves, in this order: the motion model predicts their displacement, the warp moves them.
MOTION_POINTS = LIPS_OUTER + LIPS_INNER + CHIN
JAW_DROP = 0.3  # the mask reaches this far (in d) below the chin, for a generated jaw that opens wider
FEATHER = 0.12  # width of the mask's soft edge (Gaussian sigma), in d
RING = (0.1, 0.9)  # mask values whose pixels give the colour statistics (the soft edge)


@dataclass
class Face:
    landmarks: np.ndarray  # (478, 2) float32, pixels (x, y)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the landmarks (x1, y1 exclusive)
    size: float  # pixels from the centre of the eyes to the centre of the mouth
    depth: np.ndarray | None = None  # (478,) float32: each landmark's depth in pixels (larger: farther), when the mesh gave it

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray, depth: np.ndarray | None = None) -> "Face":
        lm = np.asarray(landmarks, np.float32)
        if lm.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must be ({NUM_LANDMARKS}, 2), got {lm.shape}")
        x0, y0 = np.floor(lm.min(0)).astype(int)
        x1, y1 = np.ceil(lm.max(0)).astype(int) + 1
        eyes, mouth = lm[EYE_CORNERS].mean(0), lm[MOUTH_CORNERS].mean(0)
        depth = None if depth is None else np.asarray(depth, np.float32)
        return cls(lm, (int(x0), int(y0), int(x1), int(y1)), float(np.linalg.norm(mouth - eyes)), depth)

    def moved(self, x: int, y: int) -> "Face":
        """The same face in a part of its picture that starts at pixel (x, y) (a crop of it); its size as it was, to the bit."""
        x0, y0, x1, y1 = self.box
        return Face(self.landmarks - np.array([x, y], np.float32), (x0 - x, y0 - y, x1 - x, y1 - y), self.size, self.depth)

    @property
    def points(self) -> np.ndarray | None:
        """(478, 3) landmarks with their depth (x, y, depth in pixels), or None without depth."""
        return None if self.depth is None else np.concatenate([self.landmarks, self.depth[:, None]], 1)

    @property
    def centre(self) -> np.ndarray:
        return self.landmarks[EYE_CORNERS + MOUTH_CORNERS].mean(0)


class FaceMesh:
    """mediapipe's face mesh (478 landmarks, refined eyes and lips), with its native log lines kept
    off stderr. static=True looks at every image afresh (photos); False tracks from frame to frame."""

    def __init__(self, static: bool, max_faces: int = 1):
        # The graph's calculators open on its own threads, logging as they do, some time before the
        # first result: stderr is watched from here to the end of the first `process`.
        self._starting = contextlib.ExitStack()
        self._starting.enter_context(native_logs.hidden())
        weakref.finalize(self, self._starting.close)
        try:
            import mediapipe as mp  # heavy import, only when faces are needed

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5, min_tracking_confidence=0.5
            )
        except BaseException:
            self._starting.close()
            raise

    def process(self, image_rgb: np.ndarray):
        """mediapipe's result (`multi_face_landmarks`) for one (H, W, 3) uint8 RGB image."""
        try:
            with native_logs.hidden():  # every call: the first face found logs again
                return self._mesh.process(image_rgb)
        finally:
            self._starting.close()

    def close(self) -> None:
        with native_logs.hidden():
            self._mesh.close()
        self._starting.close()

    def __enter__(self) -> "FaceMesh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _faces(result, shape: tuple[int, ...]) -> list[Face]:
    h, w = shape[:2]
    faces = []
    for f in result.multi_face_landmarks or []:
        lm = np.array([(p.x * w, p.y * h, p.z * w) for p in f.landmark], np.float32)  # mediapipe's depth has x's scale
        faces.append(Face.from_landmarks(lm[:, :2], lm[:, 2]))
    return sorted(faces, key=lambda f: -f.size)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not (image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


class FaceDetector:
    """mediapipe's full-range face detector: boxes of faces down to a few percent of the picture's
    side, which the face mesh's own short-range detector misses."""

    def __init__(self, min_score: float = 0.5):
        with native_logs.hidden():
            import mediapipe as mp

            self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)

    def __call__(self, image_rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """(x0, y0, x1, y1) in pixels and the score of every face in an (H, W, 3) uint8 RGB image."""
        h, w = image_rgb.shape[:2]
        with native_logs.hidden():
            result = self._detector.process(image_rgb)
        found = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            found.append((np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]), float(d.score[0])))
        return found

    def close(self) -> None:
        with native_logs.hidden():
            self._detector.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


CROP_MARGIN = 0.7  # a detected face's square for the mesh reaches this many box sides beyond the box
TURN_MARGIN = 0.1  # a turned picture's face replaces the upright one only when found this much more surely


def _turned_back(points: np.ndarray, turned_shape: tuple[int, ...], turns: int) -> np.ndarray:
    """(N, 2) points (x, y) in np.rot90(image, turns) -> the same points in `image`."""
    points = np.asarray(points, np.float64).copy()
    h, w = turned_shape[:2]
    for _ in range(turns % 4):  # one counterclockwise quarter turn undone: (x, y) <- (h - y, x)
        points = np.stack([h - points[:, 1], points[:, 0]], 1)
        h, w = w, h
    return points


def _box_back(box: np.ndarray, turned_shape: tuple[int, ...], turns: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    corners = _turned_back(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]), turned_shape, turns)
    return np.concatenate([corners.min(0), corners.max(0)])


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inside(point: np.ndarray, box: np.ndarray) -> bool:
    return bool(box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3])


def _upright_detections(detector: FaceDetector, image: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Each face's box in `image` and the quarter turns (0-3, counterclockwise) that show it most
    upright: the detector is asked about all four turns of the picture and believes the surest,
    with a bias to the picture as it is. A face upside down is found that way, where the mesh
    would lay an upright face over it (eyes on its mouth)."""
    found = []  # (box in image, score, turns)
    for turns in range(4):
        turned = np.ascontiguousarray(np.rot90(image, turns))
        found += [(_box_back(box, turned.shape, turns), score, turns) for box, score in detector(turned)]
    faces: list[list[tuple[np.ndarray, float, int]]] = []  # detections of one face, surest first
    for detection in sorted(found, key=lambda d: -d[1]):
        same = next((f for f in faces if _overlap(f[0][0], detection[0]) > 0.3), None)
        if same is None:
            faces.append([detection])
        else:
            same.append(detection)
    chosen = []
    for detections in faces:
        box, score, turns = detections[0]
        upright = next((d for d in detections if d[2] == 0), None)
        if upright is not None and upright[1] + TURN_MARGIN > score:
            box, turns = upright[0], 0
        chosen.append((box, turns))
    return chosen


def _mesh_in_box(mesh: FaceMesh, image: np.ndarray, box: np.ndarray, turns: int) -> Face | None:
    """The face mesh of the face in `box`, run on a square around it turned upright; landmarks in `image`."""
    centre = (box[:2] + box[2:]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * (0.5 + CROP_MARGIN)
    h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(centre - half).astype(int), 0)
    x1, y1 = np.ceil(centre + half).astype(int)
    x1, y1 = min(x1, w), min(y1, h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    crop = np.ascontiguousarray(np.rot90(image[y0:y1, x0:x1], turns))
    faces = _faces(mesh.process(crop), crop.shape)
    if not faces:
        return None
    # the crop is the picture's own pixels, cut and turned: depth keeps its scale
    faces = [Face.from_landmarks(_turned_back(f.landmarks, crop.shape, turns) + (x0, y0), f.depth) for f in faces]
    return min(faces, key=lambda f: np.linalg.norm(f.centre - centre))


def detect_faces(image_rgb: np.ndarray, max_faces: int = 4) -> list[Face]:
    """Faces in one picture (H, W, 3) uint8 RGB, largest first; empty when there is none.

    The face mesh looks at the whole picture; a full-range detector then finds the faces it missed
    (small ones) or laid wrongly (upside down), and the mesh looks again at each of those alone,
    turned upright, its landmarks brought back to the picture.
    """
    image = _check_image(image_rgb)
    with native_logs.hidden(), FaceMesh(True, max_faces) as mesh, FaceDetector() as detector:
        faces = _faces(mesh.process(image), image.shape)
        for box, turns in _upright_detections(detector, image):
            meshed = [f for f in faces if _inside(f.centre, box)]
            if turns == 0 and meshed:
                continue  # the whole picture's mesh has it already
            face = _mesh_in_box(mesh, image, box, turns)
            if face is not None:
                faces = [f for f in faces if f not in meshed] + [face]
    return sorted(faces, key=lambda f: -f.size)[:max_faces]


def pick_face(faces: list[Face], index: int | None, path: str | os.PathLike | None = None) -> Face:
    """The face to animate: the only one, or `faces[index]` (largest first); TalkfaceError otherwise."""
    if not faces:
        raise TalkfaceError("no face found", path)
    if index is None:
        if len(faces) > 1:
            raise TalkfaceError(f"shows {len(faces)} faces; choose one with --face-index (0 = the largest, up to {len(faces) - 1})", path)
        index = 0
    if not 0 <= index < len(faces):
        raise TalkfaceError(f"--face-index {index} is out of range: {len(faces)} face(s) found (0 = the largest)", path)
    face = faces[index]
    if face.size < MIN_FACE_SIZE:
        raise TalkfaceError(
            f"the face is too small ({face.size:.0f} px between eyes and mouth; at least {MIN_FACE_SIZE:.0f} needed)", path
        )
    return face


class OneEuro:
    """The One-Euro filter (Casiez et al. 2012) over an array: strong smoothing while still, little lag when moving.

    Values are in face sizes and time in seconds, so the same settings suit any resolution. The
    defaults cut the landmarks' jitter on a still face about 4x (benchmarks/face.py) while a head
    moving at 2 face sizes per second is trailed by under a fifth of a frame.
    """

    def __init__(self, min_cutoff: float = 0.3, beta: float = 10.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self.x = self.dx = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(self.d_cutoff, dt) * (dx - self.dx)
        speed = np.linalg.norm(self.dx[..., :2], axis=-1, keepdims=True)  # a point's speed in the picture (not its depth)
        a = self._alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = self.x + a * (x - self.x)
        return self.x


class FaceTracker:
    """Follows one face through a video: face mesh in tracking mode, landmarks smoothed over time.

    The face is chosen at the first frame that shows any: `faces[index]`, largest first. Afterwards
    the face nearest to where it was last seen is followed; a frame without it gives None and the
    smoothing restarts when it comes back. After a second without it, it is chosen by rank again. Use as a context manager (or call `close`).

    A mesh that may find several faces looks for new ones in every frame where it holds fewer, which
    costs more than following them (5.3 against 3.4 ms a 512x512 frame). So while the chosen face
    was the only one, a mesh for one face follows it; it hands back to the other when the face has been
    gone a second, or when `index` asks for another than the largest.
    """

    def __init__(self, fps: float = 25.0, index: int = 0, max_faces: int = 4, min_cutoff: float = 0.3, beta: float = 10.0):
        self.dt = 1.0 / fps
        self.index = index
        self.mesh = FaceMesh(False, max(max_faces, index + 1))
        self.single: FaceMesh | None = None  # made when the chosen face is seen alone
        self.alone = False  # whether the single mesh follows it now
        self.filter = OneEuro(min_cutoff, beta)
        self.last: Face | None = None  # where the followed face was last seen (smoothed)
        self.started = False  # whether the face has been chosen
        self.missing = 0  # frames since the face was last seen
        self.patience = max(1, int(round(fps)))  # after a second away, choose again by index

    def __call__(self, frame: np.ndarray) -> Face | None:
        mesh = self.single if self.alone else self.mesh
        faces = _faces(mesh.process(_check_image(frame)), frame.shape)
        face = self._follow(faces)
        if not self.alone and face is not None and len(faces) == 1 and self.index == 0:
            if self.single is None:
                self.single = FaceMesh(False, 1)
            self.single.process(frame)  # it finds the face here, and follows it from the next frame as the other would
            self.alone = True
        elif self.alone and self.missing >= self.patience:
            self.alone = False
        if face is None:
            self.filter.reset()
            return None
        scale = face.size
        points = face.points if face.depth is not None else face.landmarks
        smooth = self.filter(points / scale, self.dt) * scale
        self.last = Face.from_landmarks(smooth[:, :2], smooth[:, 2] if face.depth is not None else None)
        return self.last

    def _follow(self, faces: list[Face]) -> Face | None:
        face = self._choose(faces)
        self.missing = 0 if face is not None else self.missing + 1
        return face

    def _choose(self, faces: list[Face]) -> Face | None:
        if not faces:
            return None
        if not self.started:
            self.started = True
            if self.index >= len(faces):
                raise TalkfaceError(f"--face-index {self.index} is out of range: {len(faces)} face(s) found (0 = the largest)")
            return faces[self.index]
        if self.missing >= self.patience:  # gone too long to know where it went: the same rank again
            return faces[min(self.index, len(faces) - 1)]
        dist = [np.linalg.norm(f.centre - self.last.centre) / self.last.size for f in faces]
        best = int(np.argmin(dist))
        return faces[best] if dist[best] < 1.5 else None

    def close(self) -> None:
        self.mesh.close()
        if self.single is not None:
            self.single.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def template(size: tuple[int, int] = (128, 96)) -> tuple[np.ndarray, np.ndarray]:
    """Landmark indices (K,) and their positions (K, 2) in a crop of `size` = (H, W)."""
    h, w = size
    idx = np.array(list(TEMPLATE_POINTS), int)
    pts = np.array(list(TEMPLATE_POINTS.values()), np.float64) * (TEMPLATE_SCALE * h)
    pts += (w / 2, TEMPLATE_EYES_Y * h)
    return idx, pts


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking src (K, 2) to dst (K, 2): M (2, 3)."""
    # Closed form (Umeyama) rather than cv2.estimateAffinePartial2D: its robust estimators choose
    # inliers from random subsets, which can change from one video frame to the next and jitter.
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    denom = (s**2).sum()
    a = (s * d).sum() / denom
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / denom
    R = np.array([[a, -b], [b, a]])
    return np.hstack([R, (md - R @ ms)[:, None]])


def align_matrix(face: Face, size: tuple[int, int] = (128, 96)) -> np.ndarray:
    """M (2, 3) taking picture pixels to crop pixels."""
    idx, pts = template(size)
    return similarity(face.landmarks[idx].astype(np.float64), pts)


def align(image: np.ndarray, face: Face, size: tuple[int, int] = (128, 96)) -> tuple[np.ndarray, np.ndarray]:
    """The face warped onto the template: crop (H, W, 3) uint8 and M (2, 3), picture -> crop pixels.

    A face much larger than the crop is first shrunk with area averaging (no aliasing), and only the
    region the crop needs is touched, so a 4K photo costs about as much as a small one.
    """
    from talkface.geometry import affine_crop  # geometry names its landmarks from here

    M = align_matrix(face, size)
    crop = affine_crop(image, M, size, shrink_below=0.5, factor=2.0)  # the final warp still enlarges a little: sharp, not aliased
    return crop, M


def blend_mask(face: Face, M: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Soft mask (H, W) float32 in [0, 1] over the lower face and jaw, in crop coordinates."""
    h, w = size
    d = TEMPLATE_SCALE * h
    lm = face.landmarks.astype(np.float64) @ M[:, :2].T + M[:, 2]
    pts = np.concatenate([lm[JAW], lm[UPPER_EDGE], lm[CHIN] + (0.0, JAW_DROP * d)])
    sigma = FEATHER * d
    radius = int(np.ceil(3 * sigma))  # how far the blur spreads: the mask must fade out inside the crop
    # pull the outline in by one sigma, so the soft edge is centred just inside the face's outline
    centre = pts.mean(0)
    inward = (pts - centre) * (1 - sigma / np.maximum(np.linalg.norm(pts - centre, axis=1, keepdims=True), 1e-6))
    pts = centre + inward
    pts[:, 0] = np.clip(pts[:, 0], radius + 1, w - 2 - radius)
    pts[:, 1] = np.clip(pts[:, 1], radius + 1, h - 2 - radius)
    hard = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(hard, cv2.convexHull(np.round(pts * 16).astype(np.int32)), 1.0, lineType=cv2.LINE_AA, shift=4)
    return cv2.GaussianBlur(hard, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_CONSTANT)


def match_colour(generated: np.ndarray, original: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`generated` with its colours (mean and spread in Lab) moved to match `original`'s over pixels `where` is True."""
    if where.sum() < 16:
        return generated
    g = cv2.cvtColor(generated.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    o = cv2.cvtColor(original.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    gs, os_ = g[where], o[where]
    ratio = np.clip((os_.std(0) + 1e-3) / (gs.std(0) + 1e-3), 0.5, 2.0)  # bounded: a ring is a small sample
    out = cv2.cvtColor((g - gs.mean(0)) * ratio + os_.mean(0), cv2.COLOR_LAB2RGB)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def paste_region(mask: np.ndarray, M: np.ndarray, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 of the picture pixels a crop mask can touch (None when it touches none)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    corners = np.array([[xs.min() - 1, ys.min() - 1, 1], [xs.max() + 1, ys.min() - 1, 1], [xs.min() - 1, ys.max() + 1, 1], [xs.max() + 1, ys.max() + 1, 1]], np.float64)
    pts = corners @ cv2.invertAffineTransform(M).T
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    fh, fw = frame_shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, fw), min(y1, fh)
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def paste_back(frame: np.ndarray, crop: np.ndarray, M: np.ndarray, face: Face) -> np.ndarray:
    """A copy of `frame` with the generated `crop`'s lower face blended in where `face` is.

    crop: (h, w, 3) uint8 from the model, aligned by M (picture -> crop pixels, from `align`). The
    blend mask is built from the face's landmarks; the crop's colours are matched to the picture
    over the mask's soft edge. Pixels outside `paste_region` are left exactly as they were.
    """
    h, w = crop.shape[:2]
    mask = blend_mask(face, M, (h, w))
    out = frame.copy()
    region = paste_region(mask, M, frame.shape)
    if region is None:
        return out
    original = cv2.warpAffine(frame, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ring = (mask > RING[0]) & (mask < RING[1])
    crop = match_colour(crop, original, ring)
    x0, y0, x1, y1 = region
    A = M @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)  # region pixels -> crop pixels
    rgba = np.dstack([crop, np.round(mask * 255).astype(np.uint8)])
    warped = cv2.warpAffine(rgba, A, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    alpha = warped[..., 3].astype(np.float32)
    roi = out[y0:y1, x0:x1]
    # where alpha is 0 the weighted mean is the original pixel, exactly
    out[y0:y1, x0:x1] = cv2.blendLinear(np.ascontiguousarray(warped[..., :3]), roi, alpha, 255.0 - alpha)
    return out
