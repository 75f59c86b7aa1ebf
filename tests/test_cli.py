"""The command line end to end on tiny data: train, then generate on a face crop with a minute of speech."""
import json

import av
import numpy as np
import pytest
from PIL import Image

from conftest import speech_like, write_audio
from talkface.cli import main
from talkface.data.synthetic import make_clip
from talkface.config import AudioConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--config", "tiny", "--data", "synthetic", "--out", str(out), "--quiet",
                 "--set", "train.steps=2", "--set", "train.batch_size=2", "--set", "train.clip_frames=4"])
    assert code == 0
    return out


def test_train_writes_a_self_describing_run(trained, capsys):
    assert json.loads((trained / "config.json").read_text())["train"]["steps"] == 2
    assert [json.loads(line)["step"] for line in open(trained / "metrics.jsonl")] == [2]
    assert main(["train", "--config", "tiny", "--data", "synthetic", "--out", str(trained), "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--config", "tiny", "--out", str(trained), "--set", "train.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err


def test_generate_a_minute_of_speech_on_a_face_crop(trained, tmp_path):
    face = tmp_path / "face crop.png"
    Image.fromarray(make_clip(7, 1, (256, 192), AudioConfig()).frames[0]).save(face)
    speech = write_audio(tmp_path / "speech.wav", np.tile(speech_like(6.0), 10))  # 60 s
    out = tmp_path / "out.mp4"
    code = main(["generate", "--checkpoint", str(trained / "generator.safetensors"), "--image", str(face),
                 "--audio", speech, "--out", str(out), "--quiet", "--crop"])
    assert code == 0
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert (v.codec_context.height, v.codec_context.width) == (48, 32)
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 1500
    assert abs(frames / 25 - 60.0) <= 1 / 25


def test_user_mistakes_exit_2_with_one_line(trained, tmp_path, capsys):
    weights = str(trained / "generator.safetensors")
    code = main(["generate", "--checkpoint", weights, "--image", str(tmp_path / "nope.png"),
                 "--audio", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o.mp4"), "--crop"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("talkface: error: ") and err.count("\n") == 1 and "nope" in err
    assert not (tmp_path / "o.mp4").exists()
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


def test_generate_with_no_arguments_uses_the_bundled_model_face_and_speech(tmp_path, monkeypatch, capsys):
    from talkface.bundled import BUNDLED_MODEL, asset

    import os

    assert os.path.getsize(asset(BUNDLED_MODEL)) < 50 * 2**20  # shipped inside the package, under 50 MB
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--quiet"]) == 0
    with av.open("talkface.mp4") as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (360, 288)
        assert sum(1 for _ in c.decode(video=0)) == 76  # 3.008 s of speech at 25 fps
    assert main(["generate", "--quiet"]) == 2  # never overwritten without --overwrite
    assert "already exists" in capsys.readouterr().err
