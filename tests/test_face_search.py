"""Faces the face mesh alone misses or lays wrongly: small faces in a large picture, and faces turned
a quarter or half turn. Their landmarks must land where the face really is."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import speech_like, write_audio
from talkface.cli import main
from talkface.media.face import EYE_CORNERS, MOUTH_CORNERS, detect_faces
from talkface.media.video import iter_frames


def turned(points: np.ndarray, shape: tuple[int, ...], turns: int) -> np.ndarray:
    """Points (x, y) of a picture of `shape` -> the same points in np.rot90(picture, turns)."""
    h, w = shape[:2]
    for _ in range(turns):
        points = np.stack([points[:, 1], w - points[:, 0]], 1)
        h, w = w, h
    return points


def centres(face) -> np.ndarray:
    """The centre of the eyes and of the mouth, (2, 2)."""
    return np.stack([face.landmarks[EYE_CORNERS].mean(0), face.landmarks[MOUTH_CORNERS].mean(0)])


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_turned_face_is_found_where_it_is(face_image, turns):
    upright = detect_faces(face_image)[0]
    picture = np.ascontiguousarray(np.rot90(face_image, turns))
    faces = detect_faces(picture)
    assert len(faces) == 1
    expected = turned(centres(upright), face_image.shape, turns)
    assert np.abs(centres(faces[0]) - expected).max() < 4, (centres(faces[0]), expected)


def test_an_upright_portrait_keeps_the_whole_pictures_mesh(face_image):
    from talkface.media.face import FaceMesh, _faces

    with FaceMesh(True, 4) as mesh:
        whole = _faces(mesh.process(face_image), face_image.shape)
    faces = detect_faces(face_image)
    assert len(faces) == len(whole) == 1
    assert np.array_equal(faces[0].landmarks, whole[0].landmarks)


def pair_on_canvas(face: np.ndarray, size: tuple[int, int], scale: float, empty_half: bool = False) -> np.ndarray:
    """Two copies of the face side by side (the second mirrored), scaled, centred on a grey canvas (H, W)."""
    h, w = size
    pair = np.concatenate([face, face[:, ::-1]], 1)
    pair = cv2.resize(pair, (int(pair.shape[1] * scale), int(pair.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full((h, w, 3), 200, np.uint8)
    y, x = (h - pair.shape[0]) // 2, (w - pair.shape[1]) // 2
    canvas[y : y + pair.shape[0], x : x + pair.shape[1]] = pair
    if empty_half:
        canvas[:, w // 2 :] = 200
    return canvas


@pytest.mark.parametrize("size, scale, count", [((512, 1024), 0.8, 2), ((1024, 2048), 1.0, 2), ((512, 1024), 0.8, 1), ((1024, 2048), 1.0, 1)])
def test_small_faces_in_a_large_picture_are_found(face_image, size, scale, count):
    upright = detect_faces(face_image)[0]
    picture = pair_on_canvas(face_image, size, scale, empty_half=count == 1)
    faces = detect_faces(picture)
    assert len(faces) == count
    h, w = size
    left = (w - 2 * face_image.shape[1] * scale) // 2, (h - face_image.shape[0] * scale) // 2
    expected = centres(upright) * scale + left  # the unmirrored copy, on the left
    found = min(faces, key=lambda f: f.centre[0])
    assert np.abs(centres(found) - expected).max() < 3, (centres(found), expected)
    assert all(abs(f.size - upright.size * scale) < 3 for f in faces)


def test_an_upside_down_photo_moves_its_mouth_not_its_eyes(face_image, motion_checkpoint, tmp_path, capsys):
    upright = detect_faces(face_image)[0]
    picture = np.ascontiguousarray(np.rot90(face_image, 2))
    Image.fromarray(picture).save(tmp_path / "upside down.png")
    speech = write_audio(tmp_path / "speech.wav", speech_like(0.8, seed=5))
    out = tmp_path / "out.mp4"
    code = main(["generate", "--checkpoint", str(motion_checkpoint), "--image", str(tmp_path / "upside down.png"), "--audio", speech, "--out", str(out), "--quiet",
                 "--still"])  # the mouth alone: no blinks or head motion to blur where it lands
    assert code == 0, capsys.readouterr().err
    frames = np.stack(list(iter_frames(out))).astype(np.float32)
    change = frames.std(0).mean(2)  # how much each pixel varies over the video
    eyes, mouth = np.round(turned(centres(upright), face_image.shape, 2)).astype(int)

    def around(point: np.ndarray) -> float:
        x, y = point
        return float(change[y - 6 : y + 6, x - 12 : x + 12].mean())

    assert around(mouth) > 2.0
    assert around(eyes) < 0.5 and around(mouth) > 10 * around(eyes)


def test_wrong_arrays_are_refused_with_a_value_error(face_image):
    """Checks of what a caller gives hold under `python -O` too (no asserts)."""
    from talkface.media.face import Face

    with pytest.raises(ValueError, match="image must be"):
        detect_faces(face_image.astype(np.float32))
    with pytest.raises(ValueError, match="image must be"):
        detect_faces(face_image[..., 0])
    with pytest.raises(ValueError, match="landmarks must be"):
        Face.from_landmarks(np.zeros((68, 2)))
