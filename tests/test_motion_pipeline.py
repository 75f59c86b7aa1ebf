"""The motion model through every path: a photo, a dubbed video, a live stream, the server, the CLI."""
import numpy as np
import pytest
from conftest import speech_like, write_audio, write_face_video

from talkface.cli import main
from talkface.errors import TalkfaceError
from talkface.media.face import detect_faces
from talkface.media.video import iter_frames, video_info
from talkface.pipeline import Animator


@pytest.fixture(scope="module")
def animator(motion_checkpoint):
    return Animator(motion_checkpoint, device="cpu")


@pytest.fixture
def speech(tmp_path):
    return write_audio(tmp_path / "speech.wav", speech_like(1.2, seed=4))  # 30 frames


def lower_face(picture: np.ndarray) -> np.ndarray:
    """Pixels the mouth's motion may touch: from the nose tip down, within 1.7 face sizes of the mouth
    (the eyes sit a whole face size above the mouth)."""
    face = detect_faces(picture)[0]
    mouth = face.landmarks[[61, 291]].mean(0)
    ys, xs = np.mgrid[: picture.shape[0], : picture.shape[1]]
    return (ys >= face.landmarks[1, 1] - 0.1 * face.size) & (np.abs(xs - mouth[0]) <= 1.7 * face.size)


def test_still_photo_pixels_move_only_in_the_lower_face(motion_checkpoint, face_image, speech):
    frames = np.stack(list(Animator(motion_checkpoint, device="cpu", still=True).generate(face_image, speech)))
    assert frames.shape == (30, *face_image.shape)
    changed = (frames != face_image).any(-1).any(0)
    assert changed.sum() > 100, "the mouth never moved"
    assert not (changed & ~lower_face(face_image)).any(), "pixels outside the lower face changed"


def test_mouth_scale_moves_the_mouth_further_and_checks_its_value(motion_checkpoint, face_image, speech, tmp_path):
    moved = {}
    for scale in (0.5, 1.0, 1.6):
        frames = np.stack(list(Animator(motion_checkpoint, device="cpu", mouth_scale=scale, still=True).generate(face_image, speech)))
        moved[scale] = np.abs(frames.astype(int) - face_image).mean()
    assert moved[0.5] < moved[1.0] < moved[1.6]
    with pytest.raises(TalkfaceError, match="at most 2"):
        Animator(motion_checkpoint, mouth_scale=2.5)
    with pytest.raises(TalkfaceError, match="above 0"):
        Animator(motion_checkpoint, mouth_scale=0)


def test_live_stream_equals_offline_generate(animator, face_image, speech):
    from talkface.media.audio import load_audio

    offline = list(animator.generate(face_image, speech))
    live = animator.live(animator.prepare(face_image))
    audio, streamed = load_audio(speech), []
    for i in range(0, len(audio), 700):
        streamed += live.push(audio[i : i + 700])
    streamed += live.flush()
    assert len(streamed) == len(offline)
    # the network runs in other batches (float rounding moves a mouth pixel by a level or two), and
    # the head's warp resamples that frame once more (one more rounding)
    for a, b in zip(streamed, offline):
        assert np.abs(a.astype(int) - b).max() <= 3 and np.abs(a.astype(int) - b).mean() < 0.01


def test_dub_moves_each_frames_own_mouth(animator, tmp_path, speech):
    original = write_face_video(tmp_path / "clip.mp4", 20)
    out = animator.dub(tmp_path / "clip.mp4", speech, tmp_path / "dubbed.mp4", fit="cut")
    frames = list(iter_frames(out))
    assert len(frames) == 20 and video_info(out)["fps"] == pytest.approx(25.0)
    moved = [np.abs(a.astype(int) - b).max() for a, b in zip(frames, original)]
    assert max(moved) > 20  # the mouth moved somewhere
    top = slice(16, 60)  # the forehead band of the example face (below the frame-index square)
    for a, b in zip(frames, original):
        assert np.abs(a[top].astype(int) - b[top]).mean() < 2  # only re-encoding noise up there


def test_cli_generate_and_graph_backends_without_a_refiner_are_refused(motion_checkpoint, speech, tmp_path, capsys):
    out = tmp_path / "out put.mp4"
    assert main(["generate", "--checkpoint", str(motion_checkpoint), "--audio", speech, "--out", str(out), "--quiet"]) == 0
    assert video_info(out)["frames"] == 30
    code = main(["generate", "--checkpoint", str(motion_checkpoint), "--audio", speech, "--out", str(tmp_path / "x.mp4"), "--backend", "openvino"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "runs the mouth refiner, and this motion model has none" in err[0]
    assert not (tmp_path / "x.mp4").exists()


def test_server_streams_the_motion_model(animator):
    from test_serve import run, stream, upload_face

    audio = speech_like(0.8, seed=3)

    async def scenario(client, service):
        face = (await upload_face(client))["face"]
        return await stream(client, face, audio)

    frames, last = run(animator, scenario)
    assert last["type"] == "done" and len(frames) == 20
