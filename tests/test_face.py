import numpy as np
import pytest

from talkface.errors import TalkfaceError
from talkface.media.face import (
    MIN_FACE_SIZE,
    NUM_LANDMARKS,
    TEMPLATE_EYES_Y,
    TEMPLATE_SCALE,
    Face,
    FaceTracker,
    OneEuro,
    align,
    blend_mask,
    detect_faces,
    paste_back,
    paste_region,
    pick_face,
)


@pytest.fixture(scope="module")
def face(face_image):
    faces = detect_faces(face_image)
    assert len(faces) == 1
    return faces[0]


def to_crop(M, pts):
    return pts @ M[:, :2].T + M[:, 2]


def test_detects_one_face_with_all_landmarks(face, face_image):
    assert face.landmarks.shape == (NUM_LANDMARKS, 2)
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= face_image.shape[1] and 0 <= y0 < y1 <= face_image.shape[0]
    assert 40 < face.size < 80  # GRID: about 58 px from the eyes to the mouth


def test_blank_picture_has_no_face():
    assert detect_faces(np.full((200, 200, 3), 128, np.uint8)) == []


@pytest.mark.parametrize("size", [(128, 96), (64, 48), (48, 32)])
def test_align_puts_eyes_and_mouth_on_the_template(face, face_image, size):
    h, w = size
    crop, M = align(face_image, face, size)
    assert crop.shape == (h, w, 3) and crop.dtype == np.uint8 and M.shape == (2, 3)
    eyes = to_crop(M, face.landmarks[[33, 133, 362, 263]]).mean(0)
    mouth = to_crop(M, face.landmarks[[61, 291]]).mean(0)
    assert np.allclose(eyes, (w / 2, TEMPLATE_EYES_Y * h), atol=0.03 * h)
    assert np.linalg.norm(mouth - eyes) == pytest.approx(TEMPLATE_SCALE * h, rel=0.05)
    assert mouth[1] > 2 * h / 3  # the mouth in the lower third
    chin = to_crop(M, face.landmarks[152])
    brows = to_crop(M, face.landmarks[[105, 334]]).mean(0)
    assert 0 < brows[1] and chin[1] < h  # eyebrows to chin inside the crop


def test_align_of_a_large_picture_matches_a_small_one(face, face_image):
    import cv2

    big = cv2.resize(face_image, None, fx=5, fy=5, interpolation=cv2.INTER_CUBIC)
    crop_small, _ = align(face_image, face)
    crop_big, M = align(big, Face.from_landmarks(face.landmarks * 5))
    assert np.abs(crop_big.astype(int) - crop_small).mean() < 6


def test_paste_back_leaves_everything_outside_the_region_untouched(face, face_image):
    crop, M = align(face_image, face)
    generated = np.full_like(crop, 200)
    out = paste_back(face_image, generated, M, face)
    assert out.shape == face_image.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = paste_region(blend_mask(face, M, crop.shape[:2]), M, face_image.shape)
    changed = np.argwhere((out != face_image).any(-1))
    assert len(changed) > 500
    assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1 and changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
    # the region is the lower face: below the eyes, near the face
    eyes_y = face.landmarks[[33, 263], 1].mean()
    assert y0 > eyes_y and x0 >= face.box[0] - face.size / 2 and x1 <= face.box[2] + face.size / 2
    outside = np.ones(face_image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], face_image[outside])


def test_paste_back_of_the_same_face_leaves_no_seam(face, face_image):
    crop, M = align(face_image, face)
    out = paste_back(face_image, crop, M, face)
    diff = np.abs(out.astype(int) - face_image)
    assert diff.max() < 40 and diff.mean() < 1.0  # only resampling blur, no edge or colour shift


def test_paste_back_matches_colour_to_the_surroundings(face, face_image):
    crop, M = align(face_image, face)
    tinted = np.clip(crop.astype(int) + (40, -20, 10), 0, 255).astype(np.uint8)
    out = paste_back(face_image, tinted, M, face)
    mask = blend_mask(face, M, crop.shape[:2])
    inside = mask > 0.9
    before = np.abs(tinted.astype(int) - crop)[inside].mean()
    import cv2

    after_crop = cv2.warpAffine(out, M, crop.shape[1::-1])
    after = np.abs(after_crop.astype(int) - crop)[inside].mean()
    assert after < before / 3


def test_pick_face_errors(face):
    small = Face.from_landmarks(face.landmarks * (MIN_FACE_SIZE * 0.8 / face.size))
    with pytest.raises(TalkfaceError, match="no face found"):
        pick_face([], None, "photo.png")
    with pytest.raises(TalkfaceError, match="2 faces.*--face-index"):
        pick_face([face, small], None, "photo.png")
    with pytest.raises(TalkfaceError, match="out of range"):
        pick_face([face, small], 2, "photo.png")
    with pytest.raises(TalkfaceError, match="too small"):
        pick_face([face, small], 1, "photo.png")
    assert pick_face([face, small], 0) is face
    assert pick_face([face], None) is face


def test_two_faces_are_found_largest_first(face_image):
    import cv2

    half = cv2.resize(face_image, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    pair = np.zeros((face_image.shape[0], face_image.shape[1] + half.shape[1], 3), np.uint8)
    pair[:, : face_image.shape[1]] = face_image
    pair[: half.shape[0], face_image.shape[1] :] = half
    faces = detect_faces(pair)
    assert len(faces) == 2 and faces[0].size > faces[1].size
    assert faces[0].centre[0] < face_image.shape[1] < faces[1].centre[0]


def test_one_euro_calms_a_still_signal_and_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuro()
    still = [f(np.array([[0.0, 0.0]]) + rng.normal(0, 0.01, (1, 2)), 0.04) for _ in range(100)]
    assert np.std(np.array(still)[50:]) < 0.4 * 0.01
    f = OneEuro()
    moving = [f(np.array([[0.1 * t, 0.0]]), 0.04) for t in range(50)]  # 2.5 face sizes per second
    assert abs(moving[-1][0, 0] - 4.9) < 0.1


def test_tracker_follows_a_video_face(grid_video):
    from talkface.media.video import iter_frames

    blank = np.zeros((288, 360, 3), np.uint8)
    with FaceTracker(fps=25) as tracker:
        faces = [tracker(frame) for _, frame in zip(range(8), iter_frames(grid_video))]
        assert all(f is not None for f in faces)
        assert tracker(blank) is None
    centres = np.array([f.centre for f in faces])
    assert np.abs(np.diff(centres, axis=0)).max() < 3  # a seated speaker: no jumps


def test_tracker_follows_a_face_seen_alone_with_the_one_face_mesh_and_the_same_landmarks(grid_video):
    from talkface.media.video import iter_frames

    frames = [frame for _, frame in zip(range(12), iter_frames(grid_video))]
    with FaceTracker(fps=25) as tracker, FaceTracker(fps=25) as everywhere:
        faces = [tracker(frame) for frame in frames]
        assert tracker.alone and tracker.single is not None
        everywhere.index = -1  # the last face by size: with one face the same, but never followed alone
        reference = [everywhere(frame) for frame in frames]
        assert not everywhere.alone
    assert max(float(np.abs(a.landmarks - b.landmarks).max()) for a, b in zip(faces, reference)) < 0.01


def test_tracker_picks_the_face_again_after_losing_it(face_image):
    import cv2

    blank = np.zeros_like(face_image)
    moved = cv2.warpAffine(face_image, np.float32([[1, 0, 120], [0, 1, 0]]), face_image.shape[1::-1])  # far to the right
    with FaceTracker(fps=5) as tracker:
        first = tracker(face_image)
        assert tracker(moved) is None  # too far from where it was: not the same face
        for _ in range(5):
            assert tracker(blank) is None
        assert not tracker.alone  # gone a second: every face is looked for again
        again = tracker(moved)
    assert again is not None and again.centre[0] > first.centre[0] + 100
