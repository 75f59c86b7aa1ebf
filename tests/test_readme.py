"""The README's examples run as written, so that they cannot drift from the product: its Python
blocks, the command lines that finish in seconds, and the curl calls of the HTTP API.

They name the user's own files `photo.jpg`, `speech.mp3`, `speech.wav`, `new_speech.wav` and
`talking.mp4`; here those are the bundled example photo and speech (converted to those formats) and
a short video of the example face, in a fresh folder that is the working directory (README, "Any
photo or video"). The README's command summary is checked against the parser: every command and flag.
"""
import argparse
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import av
import pytest
from PIL import Image

from conftest import ServerThread, write_audio, write_face_video
from talkface.bundled import EXAMPLE_FACE, EXAMPLE_SPEECH, asset
from talkface.cli import build_parser, main
from talkface.media.audio import load_audio

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")

# Command lines of the README that are not run here, by command, and why.
NOT_RUN = {
    "train": "trains for minutes to hours (test_train.py and test_cli.py train tiny models)",
    "preprocess": "needs a folder of talking videos (test_preprocess.py)",
    "train-sync": "trains for minutes (test_sync_expert.py)",
    "train-refiner": "needs GRID and trains for minutes (test_refine.py)",
    "serve": "runs until stopped (its HTTP API is run below with the README's curl calls)",
}
QUICK = {"generate", "dub", "evaluate"}  # finish in seconds on the bundled example


def blocks(*languages: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", README, re.S) if m.group(1) in languages]


def command_lines(*languages: str) -> list[list[str]]:
    """The `talkface ...` commands of the README's shell blocks (continuations joined, comments dropped,
    each part of an `a && b` chain on its own), as argument lists."""
    found = []
    for block in blocks(*languages):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] == ["talkface"]:
                    found.append(words[1:])
    return found


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """The files the README's examples name, in a fresh working directory."""
    Image.open(asset(EXAMPLE_FACE)).convert("RGB").save(tmp_path / "photo.jpg", quality=95)
    speech = load_audio(asset(EXAMPLE_SPEECH))
    write_audio(tmp_path / "speech.mp3", speech)
    shutil.copy(asset(EXAMPLE_SPEECH), tmp_path / "speech.wav")
    write_audio(tmp_path / "new_speech.wav", speech[::-1].copy())  # other "words": the sentence backwards
    write_face_video(tmp_path / "talking.mp4", 50, audio_path=tmp_path / "speech.wav")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def frame_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # --version, --help
        return e.code


def test_every_command_line_is_run_here_or_said_why_not():
    commands = {argv[0] for argv in command_lines("sh", "bash") if argv and not argv[0].startswith("-")}
    assert commands <= QUICK | set(NOT_RUN), commands - QUICK - set(NOT_RUN)
    assert {"generate", "dub", "evaluate", "serve", "train", "preprocess"} <= commands


def test_the_quick_command_lines_run_as_written(user_files, capsys):
    ran = []
    for argv in command_lines("sh", "bash"):
        if argv[0] not in QUICK or "--data" in argv:  # evaluate --data needs a trained run and a folder of videos
            continue
        code = run_cli(argv)
        assert code == 0, (argv, capsys.readouterr().err)
        ran.append(argv)
        if "--out" in argv and argv[0] in ("generate", "dub"):
            assert frame_count(argv[argv.index("--out") + 1]) >= 75, argv  # the example speech: 3 s, 76 frames
    assert [argv[0] for argv in ran] == ["generate", "generate", "dub", "evaluate"], ran
    assert (user_files / "eval" / "metrics.json").exists() and (user_files / "eval" / "report.html").exists()


def test_the_python_blocks_run_as_written(user_files, capsys):
    codes = blocks("python")
    assert len(codes) >= 2
    for code in codes:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert frame_count("out.mp4") == 76 and frame_count("talk.mp4") == 76 and frame_count("dubbed.mp4") >= 50
    assert Path("runs/x/generator.safetensors").exists()
    printed = capsys.readouterr().out.split()
    assert printed[-2:] == [printed[-1], printed[-1]]  # the progress callback's last (done, total)


def test_the_curl_calls_of_the_http_api_work(user_files):
    import json

    from talkface.pipeline import Animator
    from talkface.serve import make_app

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: the README's curl calls cannot be run")
    calls = [line.split("#")[0].strip() for block in blocks("sh", "bash") for line in block.splitlines() if line.startswith("curl ")]
    assert len(calls) == 3 and all("127.0.0.1:8000" in call for call in calls)
    server = ServerThread(make_app(Animator(device="cpu"), workers=2))
    try:
        outputs = []
        for call in calls:  # the README's port 8000 is whatever port was free here
            p = subprocess.run(shlex.split(call.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")), capture_output=True, timeout=120)
            assert p.returncode == 0, (call, p.stderr)
            outputs.append(p.stdout)
    finally:
        server.close()
    info, face = json.loads(outputs[0]), json.loads(outputs[1])
    assert info["model_kind"] == "motion" and info["crop"] is None and info["sample_rate"] == 16000
    assert {"face", "width", "height", "mouth", "face_size"} <= set(face) and (face["width"], face["height"]) == (360, 288)
    assert Path("talk.mp4").read_bytes()[4:8] == b"ftyp" and frame_count("talk.mp4") == 76


def test_the_command_summary_lists_every_command_and_flag():
    summary = next(block for block in blocks("") if block.startswith("talkface --version"))
    lines = {}
    for line in re.sub(r"\n\s+", " ", summary).splitlines():  # a command's continuation lines joined
        words = line.split()
        lines[words[1]] = line
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(lines) - {"--version"}
    for name, parser in sub.choices.items():
        flags = {flag for action in parser._actions for flag in action.option_strings if flag not in ("-h", "--help")}
        missing = {flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", lines[name])}
        assert not missing, (name, missing)
        for action in parser._actions:  # a default shown in the summary is the parser's
            for flag in action.option_strings:
                shown = re.search(re.escape(flag) + r" ([\w.]+)(?=[\] ])", lines[name])
                if shown and not shown.group(1).isupper() and action.default is not None:  # a value, not a placeholder like N
                    assert same(shown.group(1), action.default), (name, flag, shown.group(1), action.default)


def same(text: str, value) -> bool:
    try:
        return float(text) == float(value)
    except (TypeError, ValueError):
        return text == str(value)
