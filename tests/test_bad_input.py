"""Every kind of bad input through the command line: exit code 2, one line naming the file (or option)
and the problem, no output left behind, nothing the user gave changed. Odd but valid inputs succeed."""
from __future__ import annotations

import hashlib
import io
import struct
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ASSETS, speech_like, write_audio, write_face_video
from talkface.cli import main

EXAMPLE_PNG = (ASSETS / "example_face.png").read_bytes()


def run_cli(argv: list[str], capfd) -> tuple[int, str, list[str]]:
    """Exit code, stdout and stderr lines of `talkface ARGV`, run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capfd.readouterr()
    return code, out, err.splitlines()


def snapshot(*folders: Path) -> dict[str, str]:
    """Path -> content hash of every file under the folders."""
    files = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                files[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return files


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A PNG header declaring width x height pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(bytes(1000))) + png_chunk(b"IEND", b"")


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    """The good and bad files every case draws on, made once."""
    d = tmp_path_factory.mktemp("inputs")
    face = np.asarray(Image.open(io.BytesIO(EXAMPLE_PNG)).convert("RGB"))
    f: dict[str, Path] = {"dir": d, "weights": Path(tiny_checkpoint)}

    def put(name: str, data: bytes) -> None:
        f[name] = d / name
        f[name].write_bytes(data)

    put("face.png", EXAMPLE_PNG)
    f["speech.wav"] = Path(write_audio(d / "speech.wav", speech_like(0.4, seed=1)))
    Image.fromarray(np.full((288, 360, 3), 120, np.uint8)).save(d / "blank.png")
    Image.fromarray(np.concatenate([face, face[:, ::-1]], 1)).save(d / "two faces.png")
    Image.fromarray(cv2.resize(face, (180, 144), interpolation=cv2.INTER_AREA)).save(d / "small face.png")
    pair = np.full((512, 1024, 3), 200, np.uint8)  # two people, each face under a tenth of the picture's width
    pair[140:370, 224:800] = cv2.resize(np.concatenate([face, face[:, ::-1]], 1), (576, 230), interpolation=cv2.INTER_AREA)
    Image.fromarray(pair).save(d / "small pair.png")
    put("truncated.png", EXAMPLE_PNG[: len(EXAMPLE_PNG) // 2])
    put("corrupt.png", EXAMPLE_PNG[:200] + bytes(5000) + EXAMPLE_PNG[5200:])
    put("empty.png", b"")
    put("notes.png", b"these are my notes, not a picture\n" * 20)
    put("huge.png", huge_png(100_000, 100_000))
    (d / "photos.png").mkdir()
    f.update({k: d / k for k in ("blank.png", "two faces.png", "small face.png", "small pair.png", "photos.png")})
    # audio
    put("noise.wav", np.random.default_rng(0).integers(0, 256, 20_000, np.uint8).tobytes())
    put("header only.wav", wav_bytes(np.zeros(0), 16000))
    put("truncated.wav", f["speech.wav"].read_bytes()[:30])
    put("empty.wav", b"")
    put("one hertz.wav", wav_bytes(speech_like(0.2), 1))
    f["silent.wav"] = Path(write_audio(d / "silent.wav", np.zeros(8000, np.float32)))
    nan = speech_like(0.4)
    nan[1000:1100] = np.nan
    f["nan.wav"] = Path(write_audio(d / "nan.wav", nan, codec="pcm_f32le"))
    f["loud.wav"] = Path(write_audio(d / "loud.wav", speech_like(0.4) * 1e20, codec="pcm_f32le"))  # finite, but no encoder takes it
    spike = speech_like(0.4)
    spike[3000] = 1e20
    f["spike.wav"] = Path(write_audio(d / "spike.wav", spike, codec="pcm_f32le"))
    claims = bytearray(wav_bytes(speech_like(0.4), 16000))
    claims[40:44] = struct.pack("<I", 64)  # the data chunk says 32 samples: 2 ms
    put("two milliseconds.wav", bytes(claims))
    (d / "loop.wav").symlink_to("loop.wav")
    (d / "gone.png").symlink_to("nowhere.png")
    f.update({k: d / k for k in ("loop.wav", "gone.png")})
    (d / "speech folder.wav").mkdir()
    f["speech folder.wav"] = d / "speech folder.wav"
    f["speech.m4a"] = Path(write_audio(d / "speech.m4a", speech_like(0.4, seed=2)))
    # video
    write_face_video(d / "face.mp4", 6)
    write_face_video(d / "talking.mp4", 6, audio_path=f["speech.wav"])
    write_face_video(d / "no face.mp4", 4, blank=range(4))
    f.update({k: d / k for k in ("face.mp4", "talking.mp4", "no face.mp4")})
    put("truncated.mp4", f["talking.mp4"].read_bytes()[:2000])
    put("garbage.mp4", np.random.default_rng(1).integers(0, 256, 30_000, np.uint8).tobytes())
    put("empty.mp4", b"")
    put("weights.safetensors", b"not weights" * 100)
    # odd but valid images
    Image.fromarray(face).convert("L").save(d / "grey.png")
    Image.fromarray(face).convert("RGBA").save(d / "rgba.png")
    Image.fromarray((face[..., 1].astype(np.uint16) * 257)).save(d / "sixteen bit.png")
    Image.fromarray(face).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(face).save(d / "fàce ünï 顔.png")
    f["speech ü 声.wav"] = Path(write_audio(d / "speech ü 声.wav", speech_like(0.4, seed=3)))
    f.update({k: d / k for k in ("grey.png", "rgba.png", "sixteen bit.png", "cmyk.jpg", "fàce ünï 顔.png")})
    return f


@dataclass
class Case:
    name: str
    argv: list[str]  # words in {braces} are input files; {out} the output; {ckpt} the tiny weights
    names: str  # what the message must name: an input (in braces) or an option
    problem: str  # a piece of the message


GEN = ["generate", "--checkpoint", "{ckpt}", "--quiet"]
DUB = ["dub", "--checkpoint", "{ckpt}", "--quiet"]
PHOTO = ["--image", "{face.png}", "--audio", "{speech.wav}", "--out", "{out}"]

BAD = [
    # the photo
    Case("no face", [*GEN, "--image", "{blank.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{blank.png}", "no face found"),
    Case("two faces, no --face-index", [*GEN, "--image", "{two faces.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{two faces.png}", "shows 2 faces; choose one with --face-index"),
    Case("two small faces, no --face-index", [*GEN, "--image", "{small pair.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{small pair.png}", "shows 2 faces; choose one with --face-index"),
    Case("--face-index out of range", [*GEN, *PHOTO, "--face-index", "3"], "{face.png}", "--face-index 3 is out of range: 1 face(s) found"),
    Case("negative --face-index", [*GEN, *PHOTO, "--face-index", "-1"], "--face-index", "must be 0 or more"),
    Case("tiny face", [*GEN, "--image", "{small face.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{small face.png}", "the face is too small (29 px between eyes and mouth; at least 32 needed)"),
    Case("truncated image", [*GEN, "--image", "{truncated.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{truncated.png}", "cannot be read as an image (the file is truncated)"),
    Case("corrupt image", [*GEN, "--image", "{corrupt.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{corrupt.png}", "cannot be read as an image"),
    Case("zero-length image", [*GEN, "--image", "{empty.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{empty.png}", "the file is empty"),
    Case("text file named .png", [*GEN, "--image", "{notes.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{notes.png}", "cannot be read as an image (not an image, or a format that cannot be read)"),
    Case("huge declared image", [*GEN, "--image", "{huge.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{huge.png}", "is too large: 10000000000 pixels"),
    Case("image is a folder", [*GEN, "--image", "{photos.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{photos.png}", "is a directory, not an image"),
    Case("missing image", [*GEN, "--image", "{dir}/nobody.png", "--audio", "{speech.wav}", "--out", "{out}"], "{dir}/nobody.png", "no such file"),
    Case("a video as the image", [*GEN, "--image", "{face.mp4}", "--audio", "{speech.wav}", "--out", "{out}"], "{face.mp4}", "cannot be read as an image"),
    # the speech
    Case("corrupt audio", [*GEN, "--image", "{face.png}", "--audio", "{noise.wav}", "--out", "{out}"], "{noise.wav}", "cannot be read as audio"),
    Case("truncated audio", [*GEN, "--image", "{face.png}", "--audio", "{truncated.wav}", "--out", "{out}"], "{truncated.wav}", "cannot be read as audio"),
    Case("audio with no samples", [*GEN, "--image", "{face.png}", "--audio", "{header only.wav}", "--out", "{out}"], "{header only.wav}", "contains no audio samples"),
    Case("zero-length audio", [*GEN, "--image", "{face.png}", "--audio", "{empty.wav}", "--out", "{out}"], "{empty.wav}", "the file is empty"),
    Case("silent audio", [*GEN, "--image", "{face.png}", "--audio", "{silent.wav}", "--out", "{out}"], "{silent.wav}", "is silent"),
    Case("NaN samples", [*GEN, "--image", "{face.png}", "--audio", "{nan.wav}", "--out", "{out}"], "{nan.wav}", "contains invalid samples (NaN or infinity)"),
    Case("speech scaled by 1e20", [*GEN, "--image", "{face.png}", "--audio", "{loud.wav}", "--out", "{out}"], "{loud.wav}", "contains invalid samples (a peak of"),
    Case("one sample of 1e20", [*DUB, "--video", "{face.mp4}", "--audio", "{spike.wav}", "--out", "{out}"], "{spike.wav}", "far beyond full scale"),
    Case("absurd sample rate", [*GEN, "--image", "{face.png}", "--audio", "{one hertz.wav}", "--out", "{out}"], "{one hertz.wav}", "sample rate of 1 Hz"),
    Case("audio is a folder", [*GEN, "--image", "{face.png}", "--audio", "{speech folder.wav}", "--out", "{out}"], "{speech folder.wav}", "is a directory, not an audio file"),
    Case("missing audio", [*GEN, "--image", "{face.png}", "--audio", "{dir}/nothing.wav", "--out", "{out}"], "{dir}/nothing.wav", "no such file"),
    Case("a picture as --audio", [*GEN, "--image", "{face.png}", "--audio", "{face.png}", "--out", "{out}"], "{face.png}", "is not an audio file (it holds a picture)"),
    Case("audio of 2 ms", [*GEN, "--image", "{face.png}", "--audio", "{two milliseconds.wav}", "--out", "{out}"], "{two milliseconds.wav}", "is too short (2 ms of sound; at least 100 ms needed)"),
    Case("audio is a symlink loop", [*DUB, "--video", "{face.mp4}", "--audio", "{loop.wav}", "--out", "{out}"], "{loop.wav}", "is a symbolic link that loops"),
    Case("image is a dangling symlink", [*GEN, "--image", "{gone.png}", "--audio", "{speech.wav}", "--out", "{out}"], "{gone.png}", "is a symbolic link to a missing file (nowhere.png)"),
    Case("video with no audio as --audio", [*GEN, "--image", "{face.png}", "--audio", "{face.mp4}", "--out", "{out}"], "{face.mp4}", "has no audio track"),
    # the video
    Case("video with no video track", [*DUB, "--video", "{speech.m4a}", "--audio", "{speech.wav}", "--out", "{out}"], "{speech.m4a}", "has no video track"),
    Case("no face in any frame", [*DUB, "--video", "{no face.mp4}", "--audio", "{speech.wav}", "--out", "{out}"], "{no face.mp4}", "no face found in any frame"),
    Case("truncated video", [*DUB, "--video", "{truncated.mp4}", "--audio", "{speech.wav}", "--out", "{out}"], "{truncated.mp4}", "cannot be read as video"),
    Case("garbage video", [*DUB, "--video", "{garbage.mp4}", "--audio", "{speech.wav}", "--out", "{out}"], "{garbage.mp4}", "cannot be read as video"),
    Case("zero-length video", [*DUB, "--video", "{empty.mp4}", "--audio", "{speech.wav}", "--out", "{out}"], "{empty.mp4}", "the file is empty"),
    Case("missing video", [*DUB, "--video", "{dir}/gone.mp4", "--audio", "{speech.wav}", "--out", "{out}"], "{dir}/gone.mp4", "no such file"),
    Case("dub --face-index out of range", [*DUB, "--video", "{face.mp4}", "--audio", "{speech.wav}", "--out", "{out}", "--face-index", "2"], "{face.mp4}", "--face-index 2 is out of range"),
    # paths and options
    Case("output folder missing", [*GEN, "--image", "{face.png}", "--audio", "{speech.wav}", "--out", "{dir}/no such folder/out.mp4"], "{dir}/no such folder", "the output folder does not exist"),
    Case("output exists", [*GEN, "--image", "{face.png}", "--audio", "{speech.wav}", "--out", "{talking.mp4}"], "{talking.mp4}", "already exists (pass --overwrite to replace it)"),
    Case("output is the speech", [*GEN, "--image", "{face.png}", "--audio", "{talking.mp4}", "--out", "{talking.mp4}", "--overwrite"], "{talking.mp4}", "is also an input"),
    Case("output is the video", [*DUB, "--video", "{talking.mp4}", "--audio", "{speech.wav}", "--out", "{talking.mp4}", "--overwrite"], "{talking.mp4}", "is also an input"),
    Case("output is a folder", [*GEN, *PHOTO[:4], "--out", "{photos.png}"], "{photos.png}", "is a directory"),
    Case("output not an mp4", [*GEN, *PHOTO[:4], "--out", "{dir}/talk.avi"], "{dir}/talk.avi", "the output must be a .mp4 file"),
    Case("bad --fit", [*DUB, "--video", "{face.mp4}", "--audio", "{speech.wav}", "--out", "{out}", "--fit", "stretch"], "--fit", "invalid choice: 'stretch'"),
    Case("bad --reference", [*DUB, "--video", "{face.mp4}", "--audio", "{speech.wav}", "--out", "{out}", "--reference", "last"], "--reference", "invalid choice: 'last'"),
    Case("unknown --backend", [*GEN, *PHOTO, "--backend", "tensorrt"], "--backend", "invalid choice: 'tensorrt'"),
    Case("seed out of range", [*GEN, *PHOTO, "--seed", str(2**70)], "--seed", "must be from"),
    Case("--mouth-scale 0", [*GEN, *PHOTO, "--mouth-scale", "0"], "--mouth-scale", "must be above 0 and at most 2"),
    Case("--mouth-scale past 2", [*DUB, "--video", "{face.mp4}", "--audio", "{speech.wav}", "--out", "{out}", "--mouth-scale", "3"], "--mouth-scale", "must be above 0 and at most 2"),
    Case("--mouth-scale with the seed's generator", ["generate", "--checkpoint", "paper", "--quiet", *PHOTO, "--mouth-scale", "1.3"], "--mouth-scale", "is the seed's generator, which draws the mouth itself"),
    Case("--head-motion past 2", [*GEN, *PHOTO, "--head-motion", "3"], "--head-motion", "must be from 0 to 2"),
    Case("--no-blink with the seed's generator", ["generate", "--checkpoint", "paper", "--quiet", *PHOTO, "--no-blink"], "--no-blink", "need the motion model"),
    Case("--device gpu", [*GEN, *PHOTO, "--device", "gpu"], "--device 'gpu'", "is not a device (choose auto, cpu, cuda"),
    Case("--device of another kind", [*DUB, "--video", "{face.mp4}", "--audio", "{speech.wav}", "--out", "{out}", "--device", "meta"], "--device meta", "talkface runs on auto, cpu, cuda"),
    *([] if torch.cuda.is_available() else [Case("--device cuda without a GPU", [*GEN, *PHOTO, "--device", "cuda"], "--device cuda", "torch sees no CUDA GPU")]),
    Case("missing checkpoint", ["generate", "--checkpoint", "{dir}/none.safetensors", *PHOTO], "{dir}/none.safetensors", "no such checkpoint file"),
    Case("corrupt checkpoint", ["generate", "--checkpoint", "{weights.safetensors}", *PHOTO], "{weights.safetensors}", "is not a readable safetensors file"),
    Case("--workers 0", ["preprocess", "{face.mp4}", "--out", "{dir}/shards", "--workers", "0"], "--workers", "must be 1 or more"),
    Case("missing --speakers file", ["preprocess", "{face.mp4}", "--out", "{dir}/shards", "--speakers", "{dir}/none.txt"], "{dir}/none.txt", "cannot be read as a speaker list"),
    Case("bad --clip-seconds", ["preprocess", "{face.mp4}", "--out", "{dir}/shards", "--clip-seconds", "-3"], "--clip-seconds", "must be above 0"),
    Case("port out of range", ["serve", "--port", "70000"], "--port", "must be from 0 to 65535"),
]

GOOD = [
    ("grayscale photo", [*GEN, "--image", "{grey.png}", "--audio", "{speech.wav}", "--out", "{out}"]),
    ("RGBA photo", [*GEN, "--image", "{rgba.png}", "--audio", "{speech.wav}", "--out", "{out}"]),
    ("16-bit photo", [*GEN, "--image", "{sixteen bit.png}", "--audio", "{speech.wav}", "--out", "{out}"]),
    ("CMYK photo", [*GEN, "--image", "{cmyk.jpg}", "--audio", "{speech.wav}", "--out", "{out}"]),
    ("spaces and unicode in paths", [*GEN, "--image", "{fàce ünï 顔.png}", "--audio", "{speech ü 声.wav}", "--out", "{dir}/out ü 出力.mp4"]),
    ("two faces, --face-index 1", [*GEN, "--image", "{two faces.png}", "--audio", "{speech.wav}", "--out", "{out}", "--face-index", "1"]),
    ("two small faces, --face-index 0", [*GEN, "--image", "{small pair.png}", "--audio", "{speech.wav}", "--out", "{out}", "--face-index", "0"]),
    ("two small faces, --face-index 1", [*GEN, "--image", "{small pair.png}", "--audio", "{speech.wav}", "--out", "{out}", "--face-index", "1"]),
    ("a video's audio as the speech", [*GEN, "--image", "{face.png}", "--audio", "{talking.mp4}", "--out", "{out}"]),
    ("dub a video with no audio", [*DUB, "--video", "{face.mp4}", "--audio", "{speech.m4a}", "--out", "{out}", "--fit", "cut"]),
]


def fill(words: list[str], inputs: dict[str, Path], out: Path) -> list[str]:
    table = {"{out}": str(out), "{ckpt}": str(inputs["weights"])}
    table.update({"{" + k + "}": str(v) for k, v in inputs.items()})
    filled = []
    for w in words:
        for key, value in table.items():
            w = w.replace(key, value)
        filled.append(w)
    return filled


def test_the_table_is_big_and_distinct():
    assert len(BAD) >= 25 and len({c.name for c in BAD}) == len(BAD)
    assert len({tuple(c.argv) for c in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_bad_input_gets_exit_2_and_one_line(case, inputs, tmp_path, capfd, one_thread):
    out = tmp_path / "out.mp4"
    argv = fill(case.argv, inputs, out)
    before = snapshot(inputs["dir"], tmp_path)
    code, stdout, err = run_cli(argv, capfd)
    assert code == 2, (code, err)
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("talkface: error: "), line
    assert fill([case.names], inputs, out)[0] in line, line
    assert case.problem in line, line
    assert stdout == ""
    assert snapshot(inputs["dir"], tmp_path) == before  # nothing written, nothing changed
    assert not list(tmp_path.glob(".talkface-*")) and not list(inputs["dir"].glob(".talkface-*"))


@pytest.mark.parametrize("argv", [a for _, a in GOOD], ids=[n for n, _ in GOOD])
def test_odd_but_valid_input_succeeds(argv, inputs, tmp_path, capfd, one_thread):
    out = tmp_path / "out.mp4"
    argv = fill(argv, inputs, out)
    before = snapshot(inputs["dir"])
    code, stdout, err = run_cli(argv, capfd)
    assert code == 0 and err == [], err
    written = Path(stdout.strip())
    assert written.exists() and written.stat().st_size > 1000
    if written.parent == inputs["dir"]:
        written.unlink()
    assert snapshot(inputs["dir"]) == before
