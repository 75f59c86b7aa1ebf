"""The face around the mouth: blinks, brows and head motion (expressions, eye and head warps, controls)."""
import dataclasses

import cv2
import numpy as np
import pytest
from conftest import speech_like, write_audio

from talkface.bundled import checkpoint_path
from talkface.checkpoint import load_generator
from talkface.cli import main
from talkface.config import AudioConfig, ExpressionConfig
from talkface.errors import TalkfaceError
from talkface.expression import Expressions
from talkface.render.eyes import EyeWarp
from talkface.geometry import EYES, FACE_OVAL, RIGID, SkullTracker, angles, eye_openness, face_axes, head_pose, rotation
from talkface.render.head import HeadWarp
from talkface.media.audio import mfcc_windows
from talkface.media.face import detect_faces
from talkface.media.video import iter_frames
from talkface.metrics.expression import blink_events
from talkface.pipeline import Animator


@pytest.fixture(scope="module")
def windows():
    """MFCC windows of 60 s of speech-like sound with pauses (1500 frames)."""
    return mfcc_windows(speech_like(60.0, seed=2), AudioConfig())


@pytest.fixture(scope="module")
def net():
    """The bundled motion model's upper-face network (learned from GRID s1)."""
    return load_generator(checkpoint_path(None))[0].expression


def run(net, windows, seed=0, **changes):
    stream = Expressions(dataclasses.replace(ExpressionConfig(), **changes), AudioConfig(), net, seed)
    return stream.steps(windows[:700]) + [stream.step(w) for w in windows[700:]]


def test_rotation_and_angles_agree():
    for pose in [(10, 0, 0), (0, -7, 0), (0, 0, 5), (6, -4, 3)]:
        assert np.allclose(angles(rotation(*pose).T), pose, atol=1e-9)


def test_a_frontal_face_reads_near_zero_pose(face_image):
    pose = angles(face_axes(detect_faces(face_image)[0].points))
    assert np.abs(pose).max() < 8  # the example face looks at the camera


def test_the_head_is_read_from_the_skulls_pixels_not_the_meshs_sway(face_image):
    """The face mesh moves the skull's points with the jaw although their pixels stay: a pose read
    from them would nod. Followed to their pixels, they read the still head as still; a warped turn
    as the turn."""
    face = detect_faces(face_image)[0]
    swayed = face.points.copy()
    swayed[RIGID, 1] += np.where(swayed[RIGID, 1] < face.landmarks[6, 1], -1.5, 1.5)  # the forehead up, the rest down: a nod to the mesh
    assert abs(head_pose(np.stack([face.points, swayed]))[1, 1]) > 0.5
    follow = SkullTracker()
    followed = np.stack([follow(face_image, face.points), follow(face_image, swayed)])
    assert np.abs(followed[1, RIGID] - face.points[RIGID]).max() < 0.05
    assert np.abs(head_pose(followed)[1]).max() < 0.05
    turned = HeadWarp(face, face_image.shape[:2]).render(face_image, (5.0, 0.0, 0.0))
    seen = SkullTracker((face_image, face.points))(turned, detect_faces(turned)[0].points)
    assert 3.5 < head_pose(np.stack([face.points, seen]))[1, 0] < 6


def test_expressions_are_seeded_and_in_the_stated_ranges(net, windows):
    a, b, c = run(net, windows, 0), run(net, windows, 0), run(net, windows, 1)
    assert a == b and a != c
    closure = np.array([e.closure[0] for e in a])
    blinks = blink_events(1 - closure * (1 - ExpressionConfig().net.shut))  # read as the face mesh would read the eyes
    assert 10 <= len(blinks) <= 35  # in 60 s
    assert 100 <= np.median([length for _, length, _ in blinks]) * 40 <= 400  # ms
    assert closure.max() > 0.9
    pose = np.array([e.pose for e in a])
    assert np.all(pose[0] == pytest.approx(0.0, abs=0.5))  # the first frame is the photo's pose
    std = pose.std(0)
    assert 1.5 <= std[0] <= 8 and 1 <= std[1] <= 6 and 0.7 <= std[2] <= 5
    assert np.abs(np.diff(pose, axis=0)).max() < 2.5 and np.abs(pose.mean(0)).max() < 3
    brow = np.array([e.brow for e in a])
    assert brow.max() > 0.01 and brow.min() < 0  # the brows rise and fall
    assert np.abs(np.diff(brow)).max() < 0.008  # smoothly: unfiltered, the network's brows jitter by 0.005 face sizes a frame (std)


def test_the_asked_blink_rate_is_what_the_network_makes(net, windows):
    def blinks(rate):
        closure = np.array([e.closure[0] for e in run(net, windows, blink_rate=rate)])
        return len(blink_events(1 - closure * (1 - ExpressionConfig().net.shut)))

    assert blinks(10) < blinks(20) < blinks(40)


def test_expression_controls(net, windows):
    assert all(e.closure == (0.0, 0.0) for e in run(net, windows, blinks=False))
    assert all(not e.moves_head for e in run(net, windows, head=0.0, nod=0.0))
    still_head = run(net, windows, head=0.0)
    assert [e.closure for e in still_head] == [e.closure for e in run(net, windows)]  # settings do not shift the seed's stream


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


def wear_glasses(picture: np.ndarray, landmarks: np.ndarray, colour: tuple[int, int, int], thickness: int):
    """`picture` with rectangular glasses drawn on (rims whose top runs along the lids' creases, a bridge,
    temple arms), what they cover (H, W) bool, and each top rim's straight part: (row, first column, last column)."""
    worn, mask = picture.copy(), np.zeros(picture.shape[:2], np.uint8)
    lenses = []
    for side in ("left", "right"):
        e = EYES[side]
        corners = landmarks[[e["upper"][0], e["upper"][-1]]]
        width = abs(corners[1, 0] - corners[0, 0])
        top = landmarks[e["crease"][2:7], 1].mean()  # in the band that a blink moves
        lenses.append((corners[:, 0].mean() - 0.95 * width, top, corners[:, 0].mean() + 0.95 * width, top + 1.1 * width, 0.25 * width))
    for layer, ink in ((worn, colour), (mask, 255)):
        for x0, y0, x1, y1, r in lenses:
            for a, b in [((x0 + r, y0), (x1 - r, y0)), ((x0 + r, y1), (x1 - r, y1)), ((x0, y0 + r), (x0, y1 - r)), ((x1, y0 + r), (x1, y1 - r))]:
                cv2.line(layer, np.round(np.multiply(a, 16)).astype(int), np.round(np.multiply(b, 16)).astype(int), ink, thickness, cv2.LINE_AA, 4)
            for cx, cy, turn in [(x0 + r, y0 + r, 180), (x1 - r, y0 + r, 270), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90)]:
                cv2.ellipse(layer, (round(cx * 16), round(cy * 16)), (round(r * 16), round(r * 16)), turn, 0, 90, ink, thickness, cv2.LINE_AA, 4)
        (ax0, ay0, ax1, _, _), (bx0, by0, bx1, _, _) = lenses
        for a, b in [((ax1, ay0 + 6), (bx0, by0 + 6)), ((ax0, ay0 + 8), (ax0 - 60, ay0)), ((bx1, by0 + 8), (bx1 + 60, by0))]:
            cv2.line(layer, np.round(np.multiply(a, 16)).astype(int), np.round(np.multiply(b, 16)).astype(int), ink, thickness, cv2.LINE_AA, 4)
    return worn, mask > 127, [(y0, round(x0 + 2 * r), round(x1 - 2 * r)) for x0, y0, x1, _, r in lenses]


def rim_rows(picture: np.ndarray, colour: tuple[int, int, int], row: float, x0: int, x1: int, reach: int) -> np.ndarray:
    """(x1 - x0,) the row of a rim of `colour` running near `row` over columns x0..x1: the centre of its colour in each column."""
    rows = np.arange(round(row) - reach, round(row) + reach + 1)
    near = np.abs(picture[rows[0] : rows[-1] + 1, x0:x1].astype(np.float64) - colour).max(-1)
    weight = np.maximum(30 - near, 0) + 1e-9
    return (weight * rows[:, None]).sum(0) / weight.sum(0)


@pytest.mark.parametrize("colour, thickness", [((25, 25, 30), 4), ((225, 225, 232), 3)])  # dark plastic, light metal
def test_glasses_stay_still_while_the_lids_close_under_them(face_image, colour, thickness):
    bare = cv2.resize(face_image, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC)  # 576x460
    face = detect_faces(bare)[0]
    worn, rim, tops = wear_glasses(bare, face.landmarks, colour, thickness)
    warp = EyeWarp(face.landmarks, face.size, worn)  # where the face is: the mesh of the face without them
    plain = EyeWarp(face.landmarks, face.size, bare)
    assert warp.rims is not None and plain.rims is None
    opening = np.zeros(rim.shape, np.uint8)
    for side in ("left", "right"):
        cv2.fillPoly(opening, [np.round(face.landmarks[EYES[side]["upper"] + EYES[side]["lower"][::-1]]).astype(np.int32)], 1)
    for brow in (0.0, 0.03):
        shut = warp.render(worn, (1.0, 1.0), brow)
        assert np.abs(shut.astype(int) - worn)[rim].mean() < 1.0  # the glasses stay where they are
        for row, x0, x1 in tops:
            before, after = (rim_rows(p, colour, row, x0, x1, 2 * thickness) for p in (worn, shut))
            assert np.abs(after - before).max() < 1.0
            bend = [np.abs(r - np.polyval(np.polyfit(np.arange(x0, x1), r, 1), np.arange(x0, x1))).max() for r in (before, after)]
            assert bend[1] < bend[0] + 0.5  # as straight as in the photo
        # behind them the lids close about as they do on the face without glasses (the skin that covers
        # the eye comes from under the rims, painted); the face mesh cannot tell: it reads eyes behind
        # drawn glasses as half open even when they are pasted on a closed eye
        closed = plain.render(bare, (1.0, 1.0), brow)
        assert np.abs(shut.astype(int) - closed)[opening > 0].mean() < 20
    assert np.all(eye_openness(detect_faces(closed)[0].landmarks) <= 0.6 * eye_openness(face.landmarks))


def test_a_face_without_glasses_warps_as_it_would_without_looking_for_them(face_image, grid_video):
    frames = [face_image, cv2.resize(face_image, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC)]
    for _, frame in zip(range(60), iter_frames(grid_video)):
        video = frame
    frames += [video, cv2.resize(video, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)]
    for picture in frames:
        face = detect_faces(picture)[0]
        warp = EyeWarp(face.landmarks, face.size, picture)
        assert warp.rims is None
        assert np.array_equal(warp.render(picture, (1.0, 0.7), 0.03), EyeWarp(face.landmarks, face.size).render(picture, (1.0, 0.7), 0.03))


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
