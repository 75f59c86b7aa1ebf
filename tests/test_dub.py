"""`talkface dub`: a talking video re-dubbed with new speech, and the ping-pong frame reader."""
import itertools
import os

import av
import numpy as np
import pytest
from conftest import speech_like, write_audio, write_face_video

from talkface.cli import main
from talkface.config import AudioConfig
from talkface.media.audio import num_frames
from talkface.media.video import iter_frames, iter_frames_pingpong, video_info


@pytest.fixture(scope="module")
def animator(tiny_checkpoint):
    from talkface import Animator

    return Animator(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """6 frames of a drifting face at 25 fps, no audio track; frame 2 shows no face."""
    path = tmp_path_factory.mktemp("dub") / "clip.mp4"
    return path, write_face_video(path, 6, blank=(2,))


def corner_index(frame: np.ndarray) -> int:
    """The frame index written into the top-left square by `write_face_video`."""
    return int(round((frame[4:12, 4:12].mean() - 10) / 12))


def test_pingpong_plays_back_and_forth(clip):
    path, frames = clip
    got = list(itertools.islice(iter_frames_pingpong(path, memory=2 * frames[0].nbytes), 20))
    order = [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 4, 3, 2, 1]
    assert len(got) == 20
    assert all(np.array_equal(g, frames[i]) for g, i in zip(got, order))


def test_dub_follows_the_new_audio_and_keeps_everything_else(animator, clip, tmp_path):
    path, frames = clip
    audio = write_audio(tmp_path / "new.wav", speech_like(0.2))  # shorter than the video: cut
    out = list(animator.dub(path, audio))
    assert len(out) == num_frames(int(0.2 * 16000), AudioConfig()) == 5
    for i, (o, f) in enumerate(zip(out, frames)):
        assert o.shape == f.shape
        assert np.array_equal(o[:40], f[:40])  # above the face: the video's own pixels
        if i == 2:
            assert np.array_equal(o, f)  # no face: passed through untouched
        else:
            assert np.abs(o.astype(int) - f).sum() > 1000  # the face was regenerated


def test_dub_loops_a_short_video_for_longer_audio(animator, clip, tmp_path):
    path, frames = clip
    audio = write_audio(tmp_path / "long.wav", speech_like(0.52))
    out = list(animator.dub(path, audio, fit="loop"))
    assert [corner_index(o) for o in out] == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1, 2]


def test_dub_cut_stops_at_the_end_of_the_video(animator, clip, tmp_path):
    path, _ = clip
    audio = write_audio(tmp_path / "long.wav", speech_like(0.52))
    out = list(animator.dub(path, audio, fit="cut", reference="first"))
    assert len(out) == 6


@pytest.mark.parametrize("fps", [30.0, 12.5])
def test_dub_keeps_the_frame_rate_and_the_audio_length(tiny_checkpoint, tmp_path, capsys, fps):
    video = tmp_path / "other rate.mp4"
    write_face_video(video, 4, fps=fps)
    audio = write_audio(tmp_path / "new.mp3", speech_like(0.5))
    out = tmp_path / "dubbed.mp4"
    code = main(["dub", "--checkpoint", str(tiny_checkpoint), "--video", str(video), "--audio", str(audio), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    info = video_info(out)
    assert info["fps"] == pytest.approx(fps)
    assert (info["width"], info["height"]) == (360, 288)
    assert abs(info["frames"] - 0.5 * fps) <= 1.5  # the mp3's encoder delay may add a frame
    assert info["has_audio"] and abs(info["duration"] - info["frames"] / fps) < 1.5 / fps


def test_dub_with_audio_from_another_video(animator, clip, tmp_path):
    path, _ = clip
    speech = write_audio(tmp_path / "s.m4a", speech_like(0.3))
    donor = tmp_path / "donor.mp4"
    write_face_video(donor, 6, audio_path=speech)
    out = animator.dub(path, donor, tmp_path / "out.mp4", fit="cut")
    assert video_info(out)["has_audio"] and video_info(out)["frames"] == 6


def run(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def dub_args(ckpt, video, audio, out, *extra):
    return ("dub", "--checkpoint", ckpt, "--video", video, "--audio", audio, "--out", out, "--quiet", *extra)


def test_video_without_a_face(tiny_checkpoint, tmp_path, capsys, speech_wav):
    video = tmp_path / "empty room.mp4"
    write_face_video(video, 3, blank=(0, 1, 2))
    out = tmp_path / "out.mp4"
    code, err = run(capsys, *dub_args(tiny_checkpoint, video, speech_wav, out, "--fit", "cut"))
    assert code == 2 and "no face found in any frame" in err and str(video) in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".talkface-")]


def test_video_without_frames(tiny_checkpoint, tmp_path, capsys, speech_wav):
    out = tmp_path / "out.mp4"
    audio_only = tmp_path / "only sound.mp4"
    with av.open(str(audio_only), "w") as c:  # an mp4 with an audio track and no video track
        s = c.add_stream("aac", rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate = 16000
        for p in [*s.encode(f), *s.encode()]:
            c.mux(p)
    code, err = run(capsys, *dub_args(tiny_checkpoint, audio_only, speech_wav, out))
    assert code == 2 and "has no video track" in err and str(audio_only) in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(4000))
    code, err = run(capsys, *dub_args(tiny_checkpoint, broken, speech_wav, out))
    assert code == 2 and "cannot be read as video" in err and str(broken) in err
    assert not out.exists()


def test_face_index_out_of_range(tiny_checkpoint, clip, tmp_path, capsys, speech_wav):
    path, _ = clip
    out = tmp_path / "out.mp4"
    code, err = run(capsys, *dub_args(tiny_checkpoint, path, speech_wav, out, "--face-index", "3"))
    assert code == 2 and "--face-index 3 is out of range" in err and str(path) in err
    assert not out.exists()


def test_bad_fit_is_refused(tiny_checkpoint, clip, tmp_path, capsys, speech_wav):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in dub_args(tiny_checkpoint, clip[0], speech_wav, tmp_path / "o.mp4", "--fit", "stretch")])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


VFR_TIMES = [0.04 * k for k in range(10)] + [0.4 + 0.2 * k for k in range(10)]  # 25 fps, then 5 fps


def write_vfr_video(path, times: list[float]) -> list[np.ndarray]:
    """The example face (index squares in the corner, as `write_face_video`) with frame k shown from times[k]."""
    from fractions import Fraction

    from conftest import ASSETS
    from talkface.media.image import load_image

    face = load_image(ASSETS / "example_face.png")
    frames = []
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = face.shape[1], face.shape[0], "yuv420p"
        v.time_base = Fraction(1, 1000)
        for k, t in enumerate(times):
            frame = face.copy()
            frame[:16, :16] = 10 + 12 * k
            frames.append(frame)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for p in v.encode(vf):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    return frames


def shown_at(times: list[float], t: float) -> int:
    """The index of the frame on screen at time t."""
    return max(k for k, start in enumerate(times) if start <= t + 1e-9)


def test_frames_at_a_constant_rate_keep_each_frames_own_time(tmp_path):
    path = tmp_path / "vfr.mp4"
    write_vfr_video(path, VFR_TIMES)
    fps = video_info(path)["fps"]
    got = [corner_index(f) for f in iter_frames(path, fps=fps)]
    assert got == [shown_at(VFR_TIMES, (j + 0.5) / fps) for j in range(len(got))]
    assert abs(len(got) / fps - 2.4) < 1.5 / fps  # the last frame is shown for its 0.2 s too
    pingpong = [corner_index(f) for f in itertools.islice(iter_frames_pingpong(path, memory=1, fps=fps), 3 * len(got))]
    assert pingpong == (got + got[-2::-1] + got[1:] + got[-2::-1])[: 3 * len(got)]


def test_a_constant_rate_video_is_read_unchanged_at_its_rate(clip):
    path, frames = clip
    fps = video_info(path)["fps"]
    assert [corner_index(f) for f in iter_frames(path, fps=fps)] == list(range(6))


def test_dub_keeps_the_timing_of_a_variable_frame_rate_video(tiny_checkpoint, tmp_path, capsys):
    video = tmp_path / "vfr.mp4"
    write_vfr_video(video, VFR_TIMES)
    audio = write_audio(tmp_path / "new.wav", speech_like(2.4, seed=3))
    out = tmp_path / "dubbed.mp4"
    code = main(["dub", "--checkpoint", str(tiny_checkpoint), "--video", str(video), "--audio", str(audio), "--out", str(out), "--quiet", "--fit", "cut"])
    assert code == 0, capsys.readouterr().err
    fps = video_info(out)["fps"]
    with av.open(str(out)) as c:
        shown = [(f.time, corner_index(f.to_ndarray(format="rgb24"))) for f in c.decode(c.streams.video[0])]
    assert len(shown) > 10
    for t, index in shown:  # each frame where the source showed it (within one frame of the output's rate)
        assert index in {shown_at(VFR_TIMES, t + d / fps) for d in (0.0, 0.5, 1.0)}, (t, index)
    assert shown[-1][1] == 19 and shown_at(VFR_TIMES, shown[-1][0] + 0.5 / fps) == 19


def test_the_count_of_frames_on_the_grid_is_known_before_decoding(tmp_path, clip):
    from talkface.media.video import frames_on_grid

    path = tmp_path / "vfr.mp4"
    write_vfr_video(path, VFR_TIMES)
    for video in (path, clip[0]):
        fps = video_info(video)["fps"]
        assert frames_on_grid(video, fps) == len(list(iter_frames(video, fps=fps)))
