"""The face around the mouth: blinks, brows and head motion (expressions, eye and head warps, controls)."""
import dataclasses

import cv2
import numpy as np
import pytest
from conftest import speech_like, write_audio

from talkface.cli import main
from talkface.config import AudioConfig, ExpressionConfig
from talkface.errors import TalkfaceError
from talkface.expression import Expressions
from talkface.render.eyes import EyeWarp
from talkface.geometry import FACE_OVAL, angles, eye_openness, face_axes, head_pose, rotation
from talkface.render.head import HeadWarp
from talkface.media.audio import mfcc_windows
from talkface.media.face import detect_faces
from talkface.pipeline import Animator


@pytest.fixture(scope="module")
def windows():
    """MFCC windows of 60 s of speech-like sound with pauses (1500 frames)."""
    return mfcc_windows(speech_like(60.0, seed=2), AudioConfig())


def run(windows, seed=0, **changes):
    stream = Expressions(dataclasses.replace(ExpressionConfig(), **changes), AudioConfig(), seed)
    return [stream.step(w) for w in windows]


def test_rotation_and_angles_agree():
    for pose in [(10, 0, 0), (0, -7, 0), (0, 0, 5), (6, -4, 3)]:
        assert np.allclose(angles(rotation(*pose).T), pose, atol=1e-9)


def test_a_frontal_face_reads_near_zero_pose(face_image):
    pose = angles(face_axes(detect_faces(face_image)[0].points))
    assert np.abs(pose).max() < 8  # the example face looks at the camera


def test_expressions_are_seeded_and_in_the_stated_ranges(windows):
    a, b, c = run(windows, 0), run(windows, 0), run(windows, 1)
    assert a == b and a != c
    closure = np.array([e.closure[0] for e in a])
    starts = np.flatnonzero((closure[1:] > 0) & (closure[:-1] == 0))
    assert 10 <= len(starts) <= 35  # blinks in 60 s
    assert closure.max() == pytest.approx(1.0)
    pose = np.array([e.pose for e in a])
    assert np.all(pose[0] == pytest.approx(0.0, abs=0.5))  # the first frame is the photo's pose
    std = pose.std(0)
    assert 1.5 <= std[0] <= 8 and 1 <= std[1] <= 6 and 0.7 <= std[2] <= 5
    assert np.abs(np.diff(pose, axis=0)).max() < 2.5 and np.abs(pose.mean(0)).max() < 3
    assert max(e.brow for e in a) > 0  # some phrase raised the brows


def test_expression_controls(windows):
    assert all(e.closure == (0.0, 0.0) for e in run(windows, blinks=False))
    assert all(not e.moves_head for e in run(windows, head=0.0, nod=0.0))
    still_head = run(windows, head=0.0)
    assert [e.closure for e in still_head] == [e.closure for e in run(windows)]  # settings do not shift the seed's stream


def test_a_blink_closes_the_eyes_and_touches_nothing_else(face_image):
    face = detect_faces(face_image)[0]
    warp = EyeWarp(face.landmarks, face.size)
    shut = warp.render(face_image, (1.0, 1.0), 0.0)
    opened = eye_openness(face.landmarks)
    closed = eye_openness(detect_faces(shut)[0].landmarks)
    assert np.all(closed <= 0.5 * opened)
    changed = (shut != face_image).any(-1)
    ys, xs = np.nonzero(changed)
    eyes = face.landmarks[[33, 133, 362, 263]]
    assert ys.max() < face.landmarks[1, 1]  # nothing below the nose tip
    assert xs.min() > eyes[:, 0].min() - face.size and xs.max() < eyes[:, 0].max() + face.size
    assert warp.render(face_image, (0.0, 0.0), 0.0) is face_image


def test_head_warp_turns_the_head_in_3d_and_keeps_the_background(face_image):
    face = detect_faces(face_image)[0]
    warp = HeadWarp(face, face_image.shape[:2])
    assert warp.folded((7.0, 4.4, 3.2)) == 0 and warp.folded((-7.0, -4.4, -3.2)) == 0  # twice the default spread
    turned = warp.render(face_image, (6.0, 0.0, 0.0))
    before, after = head_pose(np.stack([face.points, detect_faces(turned)[0].points]))
    assert after[0] - before[0] == pytest.approx(6.0, abs=1.5)
    assert abs(after[1] - before[1]) < 2.0 and abs(after[2] - before[2]) < 1.0
    # beyond the fixed ring, about a face width from the face, the picture is the photo's, exactly
    ys, xs = np.nonzero((turned != face_image).any(-1))
    oval = face.landmarks[[10, 152, 234, 454]]
    width = oval[3, 0] - oval[2, 0]
    assert xs.min() >= oval[2, 0] - width and xs.max() <= oval[3, 0] + width


def test_eye_and_head_warps_write_into_a_given_picture_as_into_a_new_one(face_image):
    face = detect_faces(face_image)[0]
    eyes, head = EyeWarp(face.landmarks, face.size), HeadWarp(face, face_image.shape[:2])
    shut = eyes.render(face_image, (0.8, 0.6), 0.02)
    frame = face_image.copy()
    assert eyes.render(frame, (0.8, 0.6), 0.02, out=frame) is frame and np.array_equal(frame, shut)
    turned = head.render(shut, (4.0, -2.0, 1.5), (0.02, 0.01))
    assert head.render(frame, (4.0, -2.0, 1.5), (0.02, 0.01), out=frame) is frame and np.array_equal(frame, turned)
    # the ring's box, remapped a band at a time: the face bicubically, as one remap of the whole box would,
    # and the rest either so or bilinearly
    map_x, map_y = head.maps((4.0, -2.0, 1.5), (0.02, 0.01))
    x0, y0, x1, y1 = head.box
    sampled = {k: cv2.remap(shut, map_x, map_y, k, borderMode=cv2.BORDER_REPLICATE) for k in (cv2.INTER_CUBIC, cv2.INTER_LINEAR)}
    box = turned[y0:y1, x0:x1]
    assert ((box == sampled[cv2.INTER_CUBIC]).all(-1) | (box == sampled[cv2.INTER_LINEAR]).all(-1))[head.inside > 0].all()
    oval = np.zeros_like(head.inside)
    cv2.fillPoly(oval, [np.round(face.landmarks[FACE_OVAL] - (x0, y0)).astype(np.int32)], 1)
    assert (box == sampled[cv2.INTER_CUBIC])[oval > 0].all()
    assert not (box == sampled[cv2.INTER_CUBIC])[head.inside > 0].all()  # the hair and background around it bilinearly


@pytest.fixture
def speech(tmp_path):
    return write_audio(tmp_path / "speech.wav", speech_like(1.6, seed=4))  # 40 frames


def test_photo_blinks_and_moves_its_head_by_seed(motion_checkpoint, face_image, speech):
    animator = Animator(motion_checkpoint, device="cpu")
    a = np.stack(list(animator.generate(face_image, speech, seed=3)))
    assert np.array_equal(a, np.stack(list(animator.generate(face_image, speech, seed=3))))
    assert not np.array_equal(a, np.stack(list(animator.generate(face_image, speech, seed=4))))
    face = detect_faces(face_image)[0]
    top = slice(0, int(face.landmarks[1, 1] - 0.1 * face.size))  # above the nose tip: only eyes, brows and head move it
    assert np.abs(a[:, top].astype(int) - face_image[top]).max() > 40
    still = np.stack(list(Animator(motion_checkpoint, device="cpu", still=True).generate(face_image, speech, seed=3)))
    assert np.array_equal(still[:, top], np.broadcast_to(face_image[top], still[:, top].shape))


def test_expression_settings_are_checked(motion_checkpoint, speech, tmp_path):
    with pytest.raises(TalkfaceError, match="from 0 to 2"):
        Animator(motion_checkpoint, head_motion=2.5)
    out = tmp_path / "x.mp4"
    assert main(["generate", "--checkpoint", str(motion_checkpoint), "--audio", speech, "--out", str(out), "--still", "--quiet"]) == 0
    assert out.exists()
