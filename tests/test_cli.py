"""The command line end to end on tiny data: train, then generate on a face crop with a minute of speech."""
import json

import av
import numpy as np
import pytest
from PIL import Image

from conftest import speech_like, write_audio, write_face_video
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


def every_option():
    """(command, argparse action) for every flag of every command."""
    import argparse

    from talkface.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                yield name, parser, action


def test_every_flag_has_a_help_text_that_gives_its_default():
    for name, parser, action in every_option():
        assert action.help and len(action.help) > 10, (name, action.option_strings)
        if action.default not in (None, False, []) and action.default is not True:
            text = " ".join(parser.format_help().split())
            described = " ".join(parser._get_formatter()._expand_help(action).split())
            assert "default" in described and described in text, (name, action.option_strings, described)


def test_the_top_level_help_says_what_train_trains(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "train a model: the motion model (--config motion) or the seed's GAN (--config paper)" in out


def test_options_of_the_seeds_generator_are_refused_with_the_motion_model(motion_checkpoint, tmp_path, capsys):
    from talkface.bundled import EXAMPLE_FACE, EXAMPLE_SPEECH, asset

    face, speech = asset(EXAMPLE_FACE), asset(EXAMPLE_SPEECH)
    video = tmp_path / "talk.mp4"
    write_face_video(video, 3)
    for argv, flag in (
        (["generate", "--crop"], "--crop"),  # the bundled model: refused before anything is loaded
        (["generate", "--checkpoint", str(motion_checkpoint), "--crop"], "--crop"),  # a motion model's file: once it is read
        (["dub", "--video", str(video), "--reference", "first"], "--reference"),
        (["dub", "--checkpoint", str(motion_checkpoint), "--video", str(video), "--reference", "frame"], "--reference"),
    ):
        code = main([*argv, "--image" if argv[0] == "generate" else "--audio", face if argv[0] == "generate" else speech,
                     *(["--audio", speech] if argv[0] == "generate" else []), "--out", str(tmp_path / "o.mp4"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"talkface: error: argument {flag}: only for the seed's generator (--checkpoint paper)"), err
        assert not (tmp_path / "o.mp4").exists()


def test_an_existing_output_names_the_flag_on_the_command_line_and_the_argument_in_python(motion_checkpoint, tmp_path, capsys):
    from talkface.bundled import EXAMPLE_FACE, EXAMPLE_SPEECH, asset
    from talkface.errors import TalkfaceError
    from talkface.pipeline import Animator

    out = tmp_path / "talk.mp4"
    out.write_bytes(b"kept")
    assert main(["generate", "--checkpoint", str(motion_checkpoint), "--out", str(out), "--quiet"]) == 2
    assert "already exists (pass --overwrite to replace it)" in capsys.readouterr().err
    with pytest.raises(TalkfaceError, match=r"already exists \(pass overwrite=True to replace it\)"):
        Animator(motion_checkpoint).generate(asset(EXAMPLE_FACE), asset(EXAMPLE_SPEECH), out)
    assert out.read_bytes() == b"kept"


def test_serve_refuses_a_gpu_device_for_a_cpu_backend(capsys):
    assert main(["serve", "--backend", "openvino", "--device", "cuda", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "talkface: error: argument --device: the openvino backend runs on the CPU, not cuda (use --backend torch)\n"


def test_a_flag_that_is_only_the_start_of_another_is_unknown(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["generate", "--face", "photo.jpg"])  # not --face-index
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "unrecognized arguments: --face photo.jpg" in err[0]
