"""`talkface generate` on photos: full resolution in and out, and every kind of bad input."""
import os

import cv2
import numpy as np
import pytest
from conftest import speech_like, write_audio
from PIL import Image

from talkface.cli import main
from talkface.media.audio import load_audio, num_frames
from talkface.config import AudioConfig
from talkface.media.face import blend_mask, detect_faces, align, paste_region
from talkface.media.video import iter_frames, video_info


@pytest.fixture(scope="module")
def animator(tiny_checkpoint):
    from talkface import Animator

    return Animator(tiny_checkpoint, device="cpu")


@pytest.fixture
def speech(tmp_path):
    return write_audio(tmp_path / "speech.wav", speech_like(0.4))  # 10 frames


@pytest.fixture
def photo(tmp_path, face_image):
    """The example face on a larger canvas of odd size (401x321), off centre."""
    canvas = np.full((321, 401, 3), (40, 120, 200), np.uint8)
    canvas[20:308, 30:390] = face_image
    path = tmp_path / "photo.png"
    Image.fromarray(canvas).save(path)
    return path, canvas


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_photo_keeps_its_resolution_and_only_the_face_changes(animator, photo, speech):
    path, canvas = photo
    frames = list(animator.generate(path, speech))
    assert len(frames) == num_frames(int(0.4 * 16000), AudioConfig()) == 10
    assert all(f.shape == (320, 400, 3) for f in frames)  # odd sizes lose their last row / column
    picture = canvas[:320, :400]
    face = detect_faces(picture)[0]
    crop, M = align(picture, face, animator.size)
    x0, y0, x1, y1 = paste_region(blend_mask(face, M, animator.size), M, picture.shape)
    outside = np.ones(picture.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    mouth = face.landmarks[[13, 14]].mean(0).astype(int)
    for f in frames:
        assert np.array_equal(f[outside], picture[outside])
    patch = np.array([f[mouth[1] - 5 : mouth[1] + 5, mouth[0] - 10 : mouth[0] + 10] for f in frames], np.float32)
    assert np.abs(patch - picture[mouth[1] - 5 : mouth[1] + 5, mouth[0] - 10 : mouth[0] + 10]).mean() > 2
    assert patch.std(0).mean() > 0.5  # the mouth moves from frame to frame


def test_cli_writes_a_full_resolution_video_with_the_audio(photo, speech, tiny_checkpoint, tmp_path, capsys):
    path, canvas = photo
    out = tmp_path / "talk.mp4"
    code, stdout, err = run(capsys, "generate", "--checkpoint", tiny_checkpoint, "--image", path, "--audio", speech, "--out", out, "--quiet")
    assert code == 0, err
    assert stdout.strip() == str(out)
    info = video_info(out)
    assert (info["width"], info["height"], info["fps"]) == (400, 320, 25.0)
    assert info["has_audio"] and abs(info["duration"] - 0.4) <= 0.04 + 0.03
    frames = list(iter_frames(out))
    assert len(frames) == 10
    assert np.abs(frames[0][:15, :15].astype(int) - canvas[:15, :15]).max() < 8  # far from the face: as it was


def test_a_face_crop_of_the_model_size_is_animated_as_it_is(animator, speech, tmp_path):
    crop = np.full((48, 32, 3), 128, np.uint8)  # no face mediapipe can find, but the model's size
    frames = list(animator.generate(crop, speech))
    assert len(frames) == 10 and frames[0].shape == (48, 32, 3)


def test_crop_flag_takes_any_image_as_a_crop(animator, face_image, speech):
    frames = animator.generate(face_image, speech, crop=True)
    assert next(frames).shape == (48, 32, 3)


def test_progress_callback_counts_frames(animator, face_image, speech):
    seen = []
    list(animator.generate(face_image, speech, progress=lambda done, total: seen.append((done, total))))
    assert seen[0] == (1, 10) and seen[-1] == (10, 10)


def _save(image: np.ndarray, path, kind: str) -> tuple[int, int]:
    """Save the face as grayscale / RGBA / 16-bit / CMYK / EXIF-rotated; returns its upright (H, W)."""
    im = Image.fromarray(image)
    if kind == "gray":
        im.convert("L").save(path)
    elif kind == "rgba":
        rgba = im.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(path)
    elif kind == "16bit":
        g = np.asarray(im.convert("L")).astype(np.uint16) * 257
        Image.fromarray(g).save(path)  # uint16 -> mode I;16
    elif kind == "cmyk":
        im.convert("CMYK").save(path, quality=95)
    elif kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
        im.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    return image.shape[:2]


@pytest.mark.parametrize("kind,ext", [("gray", "png"), ("rgba", "png"), ("16bit", "png"), ("cmyk", "jpg"), ("exif", "jpg")])
def test_any_image_mode_works(animator, face_image, speech, tmp_path, kind, ext):
    path = tmp_path / f"face.{ext}"
    h, w = _save(face_image, path, kind)
    frame = next(animator.generate(path, speech))
    assert frame.shape == (h, w, 3)


@pytest.mark.parametrize("ext", ["mp3", "m4a", "flac", "ogg"])
def test_any_audio_format_works(animator, face_image, tmp_path, ext):
    audio = write_audio(tmp_path / f"speech.{ext}", speech_like(0.4))
    frames = list(animator.generate(face_image, audio))
    assert 10 <= len(frames) <= 14  # lossy encoders add delay and padding (AAC: up to 2 x 1024 samples)


def test_audio_from_a_video_and_unusual_paths(tiny_checkpoint, face_image, tmp_path, capsys):
    folder = tmp_path / "dossier é ü"
    folder.mkdir()
    image = folder / "ma photo ø.png"
    Image.fromarray(face_image).save(image)
    audio = write_audio(folder / "voix ß.m4a", speech_like(0.4))
    clip = folder / "clip with audio.mp4"
    from conftest import write_face_video

    write_face_video(clip, 10, audio_path=audio)
    out = folder / "sortie à.mp4"
    code, _, err = run(capsys, "generate", "--checkpoint", tiny_checkpoint, "--image", image, "--audio", clip, "--out", out, "--quiet")
    assert code == 0, err
    assert video_info(out)["frames"] == num_frames(len(load_audio(clip)), AudioConfig()) and video_info(out)["has_audio"]


def test_long_audio_streams_through_face_stream(animator, face_image, tmp_path, monkeypatch):
    import talkface.pipeline as pipeline
    from talkface.streaming import FaceStream

    long_audio = write_audio(tmp_path / "long.flac", np.tile(speech_like(2.0), 15))  # 30 s
    chunks, batches = [], []
    real_iter, real_decode = pipeline.iter_audio, FaceStream._decode

    def counting_iter(path, sample_rate=16000, chunk=16000):
        for c in real_iter(path, sample_rate, chunk):
            chunks.append(chunk)
            yield c

    def counting_decode(self, windows):
        batches.append(len(windows))
        yield from real_decode(self, windows)

    monkeypatch.setattr(pipeline, "iter_audio", counting_iter)
    monkeypatch.setattr(FaceStream, "_decode", counting_decode)
    frames = animator.generate(face_image, long_audio)
    scanned = len(chunks)  # the length / silence check has read the file once, in 10 s chunks
    assert scanned == 3
    first = [next(frames) for _ in range(30)]
    assert len(first) == 30
    assert len(chunks) - scanned <= 3  # 30 frames came from the first seconds, not the whole file
    assert max(batches) <= 32 and sum(batches) < 100
    frames.close()


# -- bad input: exit code 2, one line naming the file, no output left behind ----------------------


def assert_refused(capsys, args, out, name, problem):
    code, stdout, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("talkface: error: ")
    assert str(name) in lines[0] and problem in lines[0]
    assert not os.path.exists(out)
    assert not [p for p in os.listdir(os.path.dirname(out)) if p.startswith(".talkface-")]


def generate_args(ckpt, image, audio, out, *extra):
    return ("generate", "--checkpoint", ckpt, "--image", image, "--audio", audio, "--out", out, "--quiet", *extra)


def test_no_face(tiny_checkpoint, speech, tmp_path, capsys):
    image = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 300, 3), 200, np.uint8)).save(image)
    out = tmp_path / "out.mp4"
    assert_refused(capsys, generate_args(tiny_checkpoint, image, speech, out), out, image, "no face found")


@pytest.fixture
def two_faces(tmp_path, face_image):
    small = cv2.resize(face_image, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    pair = np.zeros((288, 360 + small.shape[1], 3), np.uint8)
    pair[:, :360], pair[: small.shape[0], 360:] = face_image, small
    path = tmp_path / "two.png"
    Image.fromarray(pair).save(path)
    return path


def test_several_faces_need_an_index(tiny_checkpoint, speech, two_faces, tmp_path, capsys, animator):
    out = tmp_path / "out.mp4"
    assert_refused(capsys, generate_args(tiny_checkpoint, two_faces, speech, out), out, two_faces, "2 faces; choose one with --face-index")
    assert_refused(capsys, generate_args(tiny_checkpoint, two_faces, speech, out, "--face-index", "2"), out, two_faces, "out of range")
    full = np.asarray(Image.open(two_faces))
    for index, changed_side in ((0, slice(0, 360)), (1, slice(360, None))):
        frame = next(animator.generate(two_faces, speech, face_index=index))
        diff = np.abs(frame.astype(int) - full[:, :-1] if full.shape[1] % 2 else frame.astype(int) - full).sum(-1)
        assert diff[:, changed_side].sum() > 0 and diff.sum() == diff[:, changed_side].sum()


def test_face_too_small(tiny_checkpoint, speech, face_image, tmp_path, capsys):
    image = tmp_path / "far away.png"
    small = cv2.resize(face_image, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)  # ~26 px eyes to mouth
    canvas = np.full((300, 300, 3), 100, np.uint8)
    canvas[100 : 100 + small.shape[0], 100 : 100 + small.shape[1]] = small
    Image.fromarray(canvas).save(image)
    out = tmp_path / "out.mp4"
    assert_refused(capsys, generate_args(tiny_checkpoint, image, speech, out), out, image, "too small")


def test_corrupt_image(tiny_checkpoint, speech, tmp_path, capsys):
    image = tmp_path / "broken.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    out = tmp_path / "out.mp4"
    assert_refused(capsys, generate_args(tiny_checkpoint, image, speech, out), out, image, "cannot be read as an image")


@pytest.mark.parametrize(
    "kind,problem",
    [("corrupt", "cannot be read as audio"), ("empty", "empty"), ("silent", "silent"), ("missing", "no such file")],
)
def test_bad_audio(tiny_checkpoint, face_image, tmp_path, capsys, kind, problem):
    image = tmp_path / "face.png"
    Image.fromarray(face_image).save(image)
    audio = tmp_path / "speech.wav"
    if kind == "corrupt":
        audio.write_bytes(os.urandom(2000))
    elif kind == "empty":
        audio.write_bytes(b"")
    elif kind == "silent":
        write_audio(audio, np.zeros(8000, np.float32))
    out = tmp_path / "out.mp4"
    assert_refused(capsys, generate_args(tiny_checkpoint, image, audio, out), out, audio, problem)


def test_existing_output_is_kept_without_overwrite(tiny_checkpoint, speech, face_image, tmp_path, capsys):
    image = tmp_path / "face.png"
    Image.fromarray(face_image).save(image)
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"precious")
    code, _, err = run(capsys, *generate_args(tiny_checkpoint, image, speech, out))
    assert code == 2 and "already exists" in err and str(out) in err
    assert out.read_bytes() == b"precious"
    code, _, err = run(capsys, *generate_args(tiny_checkpoint, image, speech, out, "--overwrite"))
    assert code == 0, err
    assert video_info(out)["frames"] == 10


def test_missing_output_folder(tiny_checkpoint, speech, face_image, tmp_path, capsys):
    image = tmp_path / "face.png"
    Image.fromarray(face_image).save(image)
    out = tmp_path / "no such folder" / "out.mp4"
    code, _, err = run(capsys, *generate_args(tiny_checkpoint, image, speech, out))
    assert code == 2 and "output folder does not exist" in err and len(err.strip().splitlines()) == 1
    assert not out.parent.exists()
