import json
import os
from pathlib import Path

import numpy as np
import pytest

from talkface.checkpoint import save_release
from talkface.cli import main
from talkface.config import tiny
from talkface.data.synthetic import make_clip
from talkface.evaluate import EVAL_SIZE, score_clip, still_source
from talkface.media.video import VideoWriter
from talkface.models import Generator
from talkface.bundled import BUNDLED_MODEL, asset

from conftest import no_grid, speech_like, write_audio

GRID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grid_s1"
CLIP = GRID / "video" / "swwv9a.mp4"
need_grid = pytest.mark.skipif(not CLIP.exists(), reason=no_grid(CLIP))


@pytest.fixture
def synthetic_video(tmp_path):
    """A cartoon face (no face detector finds it) that talks, with its audio in a separate wav."""
    cfg = tiny()
    clip = make_clip(3, 30, (64, 48), cfg.audio)
    audio = write_audio(tmp_path / "speech.wav", clip.audio)
    video = tmp_path / "talk.mp4"
    with VideoWriter(video, 25, (64, 48), audio_path=audio) as w:
        for f in clip.frames:
            w.write(f)
    return str(video), audio


def run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_report(out: Path) -> dict:
    doc = json.loads((out / "metrics.json").read_text())
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # aperture plot, strips, and the offset curve or more
    assert "src=\"http" not in page and "<link" not in page and "<script" not in page  # self-contained
    return doc


def test_evaluate_any_video_against_an_audio_file(synthetic_video, tmp_path, capsys):
    video, audio = synthetic_video
    out = tmp_path / "scores"
    code, stdout, err = run(["evaluate", "--video", video, "--audio", audio, "--out", str(out)], capsys)
    assert code == 0, err
    doc = check_report(out)
    scores = doc["clips"][0]["video"]
    assert set(scores) >= {"lse_d", "lse_c", "sync_offset", "aperture_corr", "upper_face_ssim", "mouth_sharpness", "landmark_jitter"}
    assert scores["aperture_corr"] > 0.5  # the cartoon's mouth opens with its loudness
    assert doc["mode"] == "video" and doc["frames"] == 30
    assert str(out / "metrics.json") in stdout


def test_evaluate_a_video_without_a_face(tmp_path, capsys):
    audio = write_audio(tmp_path / "speech.wav", speech_like(1.2))
    video = tmp_path / "blank.mp4"
    with VideoWriter(video, 25, (64, 48), audio_path=audio) as w:
        for _ in range(30):
            w.write(np.full((64, 48, 3), 128, np.uint8))
    out = tmp_path / "scores"
    code, _, err = run(["evaluate", "--video", str(video), "--audio", audio, "--out", str(out)], capsys)
    assert code == 0, err
    scores = check_report(out)["clips"][0]["video"]
    assert scores["aperture_corr"] == 0.0 and scores["landmark_jitter"] is None  # no landmarks: null, not a number
    assert scores["lse_d"] is not None  # the expert still reads the lower middle of the frame


@need_grid
def test_evaluate_a_real_video_against_its_audio(tmp_path, capsys):
    out = tmp_path / "scores"
    code, _, err = run(["evaluate", "--video", str(CLIP), "--audio", str(CLIP), "--out", str(out)], capsys)
    assert code == 0, err
    scores = check_report(out)["clips"][0]["video"]
    assert abs(scores["sync_offset"]) <= 1 and scores["aperture_corr"] > 0.3


def grid_excerpt(path: Path, first: int = 12, last: int = 52) -> Path:
    """Frames first..last of the GRID clip (the spoken part) with the matching audio, as an mp4."""
    from talkface.evaluate import read_video
    from talkface.media.audio import load_audio

    frames, _ = read_video(CLIP)
    audio = write_audio(path.with_suffix(".wav"), load_audio(CLIP)[first * 640 : last * 640])
    with VideoWriter(path, 25, frames.shape[1:3], audio_path=audio) as w:
        for f in frames[first:last]:
            w.write(f)
    return path


@need_grid
def test_evaluate_a_checkpoint_against_real_videos(tmp_path, capsys):
    weights = tmp_path / "g.safetensors"
    save_release(weights, Generator(tiny()), tiny())
    data = tmp_path / "videos"
    data.mkdir()
    grid_excerpt(data / "a.mp4")
    os.symlink(CLIP, data / "b.mp4")
    out = tmp_path / "scores"
    code, _, err = run(["evaluate", "--checkpoint", str(weights), "--data", str(data), "--limit", "1", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    doc = check_report(out)
    assert len(doc["clips"]) == 1 and doc["videos"] == 1
    assert doc["eval_size"] == list(EVAL_SIZE) and doc["model_size"] == [tiny().model.height, tiny().model.width] and doc["model_kind"] == "frames"
    clip = doc["clips"][0]
    assert clip["name"] == "a"
    assert {"psnr", "ssim", "psnr_mouth", "ssim_mouth", "lse_d", "aperture_corr"} <= set(clip["generated"])
    # an untrained generator's lower face, pasted into the photo: the mouth is far from the real one
    assert clip["generated"]["psnr_mouth"] < 25
    assert "psnr" not in clip["real"] and abs(clip["real"]["sync_offset"]) <= 1
    assert set(doc["mean"]) == {"generated", "real"}


@need_grid
def test_evaluate_without_a_checkpoint_scores_the_bundled_model(tmp_path, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    grid_excerpt(data / "a.mp4")
    out = tmp_path / "scores"
    code, _, err = run(["evaluate", "--data", str(data), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    doc = check_report(out)
    assert doc["checkpoint"] == asset(BUNDLED_MODEL) and doc["eval_size"] == list(EVAL_SIZE)
    assert doc["model_kind"] == "motion" and doc["model_size"] is None  # it has no face crop of its own
    assert {"lse_d", "aperture_corr", "psnr_mouth", "lmd_mouth", "mouth_sharpness_ratio"} <= set(doc["clips"][0]["generated"])
    for row in ("generated", "real"):  # blinks and head motion, measured alike for the model and the real video
        assert {"blinks_per_min", "blink_ms", "yaw_std", "pitch_std", "roll_std", "head_jump"} <= set(doc["clips"][0][row])
    assert "eye openness and head pose over time" in (out / "report.html").read_text()


@need_grid
def test_score_clip_tracks_made_frames_like_real_ones(tmp_path):
    video = str(grid_excerpt(tmp_path / "a.mp4"))
    clip = score_clip(video, {"still": still_source}, size=(128, 96), samples=4)
    assert list(clip.scores) == ["still", "real"] and list(clip.strips) == ["real", "still"]
    real, still = clip.strips["real"], clip.strips["still"]
    assert real.shape == still.shape == (4, 128, 96, 3)
    assert np.abs(still[0].astype(int) - real[0]).mean() < 1  # frame 0 is the still, tracked alike
    assert np.abs(still.astype(int) - still[0]).mean() < 2 and np.abs(real.astype(int) - real[0]).mean() > 2
    assert clip.previews["still"].shape == clip.previews["real"].shape == (4, 288, 360, 3)
    assert np.isfinite(clip.scores["still"]["psnr"])  # the identical first frame is left out of the mean
    assert clip.scores["still"]["landmark_jitter"] < clip.scores["real"]["landmark_jitter"]


def test_evaluate_resamples_other_frame_rates_to_25_fps(tmp_path, capsys):
    audio = write_audio(tmp_path / "speech.wav", speech_like(1.2))
    video = tmp_path / "thirty.mp4"
    with VideoWriter(video, 30, (64, 48), audio_path=audio) as w:
        for i in range(36):  # 1.2 s
            w.write(np.full((64, 48, 3), 4 * i, np.uint8))
    out = tmp_path / "scores"
    assert run(["evaluate", "--video", str(video), "--audio", audio, "--out", str(out)], capsys)[0] == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["frames"] == 30 and doc["source_fps"] == pytest.approx(30)


def test_evaluate_rejects_bad_input_without_writing(synthetic_video, tmp_path, capsys):
    video, audio = synthetic_video
    out = tmp_path / "scores"
    code, _, err = run(["evaluate", "--video", str(tmp_path / "missing.mp4"), "--audio", audio, "--out", str(out)], capsys)
    assert code == 2 and "missing.mp4: no such file" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code, _, err = run(["evaluate", "--video", video, "--out", str(out)], capsys)
    assert code == 2 and "--video needs --audio" in err
    code, _, err = run(["evaluate", "--checkpoint", "w.safetensors", "--video", video, "--audio", audio, "--out", str(out)], capsys)
    assert code == 2 and "not both" in err
    code, _, err = run(["evaluate", "--checkpoint", "w.safetensors", "--out", str(out)], capsys)
    assert code == 2 and "--checkpoint needs --data" in err
    assert run(["evaluate", "--video", video, "--audio", audio, "--out", str(out)], capsys)[0] == 0
    code, _, err = run(["evaluate", "--video", video, "--audio", audio, "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err
    assert run(["evaluate", "--video", video, "--audio", audio, "--out", str(out), "--overwrite"], capsys)[0] == 0


@pytest.mark.parametrize("given", [["--video", "{video}", "--audio", "{audio}"], ["--data", "{folder}", "--checkpoint", "{weights}"]])
def test_evaluate_refuses_a_used_output_folder_before_any_work(given, synthetic_video, tmp_path, capsys, monkeypatch):
    import talkface.evaluate

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output folder was checked")

    monkeypatch.setattr(talkface.evaluate, "evaluate_video", no_work)
    monkeypatch.setattr(talkface.evaluate, "evaluate_checkpoint", no_work)
    video, audio = synthetic_video
    out = tmp_path / "scores"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    table = {"{video}": video, "{audio}": audio, "{folder}": str(tmp_path), "{weights}": "motion"}
    code, stdout, err = run(["evaluate", *[table.get(w, w) for w in given], "--out", str(out)], capsys)
    assert (code, stdout, err.splitlines()) == (2, "", [f"talkface: error: {out / 'metrics.json'}: already exists (pass --overwrite to replace it)"])
    assert (out / "metrics.json").read_text() == "{}"
