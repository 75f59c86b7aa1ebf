"""Mutated images, audio and videos through the command line: every one ends in success or in exit
code 2 with one line, never a traceback, a hang or a crash.

The mutations are seeded (FUZZ_SEED, and each case's index): a failing case's id reproduces it.
Most cases run in this process; a subset also runs in a child process first, so that a hard crash
(a decoder killing the interpreter) is reported as a failure instead of taking pytest down.
"""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import ASSETS, speech_like, write_audio
from talkface.cli import main

FUZZ_SEED = 1234
PER_KIND = {"image": 130, "audio": 100, "video": 90}
SOFT_LIMIT_S = 30  # a case taking longer counts as a hang
EXTENSIONS = (".png", ".jpg", ".wav", ".mp3", ".mp4", ".txt", "")
SRC = Path(__file__).parents[1] / "src"


def face_crop() -> np.ndarray:
    """The example face cut to 220 x 170 around the face (eyes to mouth about 57 px): small, quick to animate."""
    return np.asarray(Image.open(ASSETS / "example_face.png").convert("RGB"))[40:260, 90:260].copy()


def write_video(path: Path, frames: list[np.ndarray], codec: str, audio: np.ndarray | None = None, audio_codec: str = "aac") -> None:
    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=25)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        a = None
        if audio is not None:
            a = c.add_stream(audio_codec, rate=48000 if audio_codec == "libopus" else 16000)
            a.layout = "mono"
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            rate = a.rate
            samples = np.interp(np.arange(int(len(audio) * rate / 16000)) * 16000 / rate, np.arange(len(audio)), audio).astype(np.float32)
            fmt = a.codec_context.codec.audio_formats[0].name
            step = a.codec_context.frame_size or 1024
            for i in range(0, len(samples), step):
                block = samples[i : i + step]
                if fmt.startswith("s16"):
                    data = (block * 32767).astype(np.int16)[None]
                elif fmt.startswith("s32"):
                    data = (block * 2147483647).astype(np.int32)[None]
                else:
                    data = block[None]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="mono")
                frame.sample_rate = rate
                for p in a.encode(frame):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)


def base_files(folder: Path) -> dict[str, list[Path]]:
    """Small valid files of every kind and several formats: what the mutations start from."""
    folder.mkdir(parents=True, exist_ok=True)
    face = face_crop()
    images = []
    for ext, kw in ((".png", {}), (".jpg", {"quality": 90}), (".bmp", {}), (".gif", {}), (".tiff", {}), (".webp", {"quality": 80})):
        path = folder / f"face{ext}"
        Image.fromarray(face).save(path, **kw)
        images.append(path)
    speech = speech_like(0.24, seed=11)
    audios = [Path(write_audio(folder / f"speech{ext}", speech)) for ext in (".wav", ".mp3", ".m4a", ".flac", ".ogg")]
    frames = [np.roll(face, i, axis=1) for i in range(6)]
    videos = []
    for name, codec, audio_codec in (("talk.mp4", "libx264", "aac"), ("talk.mkv", "libx264", "aac"), ("talk.webm", "libvpx", "libopus"), ("talk.avi", "mjpeg", "libmp3lame")):
        write_video(folder / name, frames, codec, speech, audio_codec)
        videos.append(folder / name)
    return {"image": images, "audio": audios, "video": videos}


def huge_dimensions(data: bytes, rng: np.random.Generator) -> bytes:
    """The same file with a header that declares an enormous picture (where the format has one we know)."""
    b = bytearray(data)
    side = int(rng.choice([65535, 40000, 2**31 - 1, 0]))
    if b[:8] == b"\x89PNG\r\n\x1a\n":
        b[16:24] = struct.pack(">II", side, side)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    elif b[:2] == b"\xff\xd8":
        i = b.find(b"\xff\xc0")
        if i > 0:
            b[i + 5 : i + 9] = struct.pack(">HH", min(side, 65535), min(side, 65535))
    elif b[:2] == b"BM":
        b[18:26] = struct.pack("<ii", side, side)
    elif b[:4] == b"RIFF" and b[8:12] == b"WAVE":
        b[24:28] = struct.pack("<I", int(rng.choice([1, 7, 4000, 2**31 - 1])))  # sample rate
        b[22:24] = struct.pack("<H", int(rng.choice([0, 2, 255, 65535])))  # channels
    for tag, offset in ((b"avc1", 28), (b"tkhd", 80)):
        i = b.find(tag)
        if 0 < i < len(b) - offset - 4:
            b[i + offset : i + offset + 4] = struct.pack(">HH", 65535, 65535)
    return bytes(b)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One seeded mutation of a file's bytes: (what was done, the new bytes)."""
    n = len(data)
    kind = str(rng.choice(["truncate", "bitflip", "bytes", "header", "zeros", "duplicate", "splice", "huge", "empty"], p=[0.18, 0.2, 0.12, 0.14, 0.08, 0.08, 0.06, 0.1, 0.04]))
    b = bytearray(data)
    if kind == "truncate":
        return kind, data[: int(rng.integers(0, n))]
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 33))):
            i = int(rng.integers(0, n))
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == "bytes":
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 65))
        b[i : i + k] = rng.integers(0, 256, k, np.uint8).tobytes()
    elif kind == "header":
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(0, min(n, 64)))] = int(rng.integers(0, 256))
    elif kind == "zeros":
        i, k = int(rng.integers(0, n)), int(rng.integers(256, 4097))
        b[i : i + k] = bytes(len(b[i : i + k]))
    elif kind == "duplicate":
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 2049))
        b[i:i] = b[i : i + k]
    elif kind == "splice":
        other = rng.integers(0, 256, int(rng.integers(1, 4096)), np.uint8).tobytes()
        b = bytearray(other + data if rng.random() < 0.5 else data[: n // 2] + other)
    elif kind == "huge":
        return kind, huge_dimensions(data, rng)
    elif kind == "empty":
        return kind, b""
    return kind, bytes(b)


@dataclass
class Case:
    id: str
    argv: list[str]
    target: str  # the mutated file


def make_cases(folder: Path, weights: str) -> list[Case]:
    bases = base_files(folder / "bases")
    good_image, good_audio = str(bases["image"][0]), str(bases["audio"][0])
    cases = []
    for kind, count in PER_KIND.items():
        for index in range(count):
            rng = np.random.default_rng([FUZZ_SEED, list(PER_KIND).index(kind), index])
            base = bases[kind][index % len(bases[kind])]
            what, data = mutate(base.read_bytes(), rng)
            ext = base.suffix if rng.random() < 0.85 else str(rng.choice(EXTENSIONS))
            target = folder / f"{kind}-{index:03d}-{what}{ext}"
            target.write_bytes(data)
            out = str(folder / "out" / f"{kind}-{index:03d}.mp4")
            common = ["--checkpoint", weights, "--out", out, "--overwrite", "--quiet"]
            if kind == "image":
                argv = ["generate", *common, "--image", str(target), "--audio", good_audio]
            elif kind == "audio":
                argv = ["generate", *common, "--image", good_image, "--audio", str(target)]
            else:
                argv = ["dub", *common, "--video", str(target), "--audio", good_audio]
            cases.append(Case(f"{kind}-{index:03d}-{what}-{base.name}->{target.name}", argv, str(target)))
    speech = speech_like(0.24, seed=11)
    for index, gain in enumerate((1e20, 1e12, 1e5, 1e2, -1e20)):  # float samples that are finite but beyond any encoder
        samples = speech * abs(gain) if gain > 0 else np.where(np.arange(len(speech)) == 1000, 1e20, speech)
        for command, given in (("generate", ["--image", good_image]), ("dub", ["--video", str(bases["video"][0])])):
            target = Path(write_audio(folder / f"loud-{index:03d}-{command}.wav", samples.astype(np.float32), codec="pcm_f32le"))
            out = str(folder / "out" / f"loud-{index:03d}-{command}.mp4")
            argv = [command, "--checkpoint", weights, "--out", out, "--overwrite", "--quiet", *given, "--audio", str(target)]
            cases.append(Case(f"audio-loud-{index:03d}-{command}->{target.name}", argv, str(target)))
    (folder / "out").mkdir()
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory, tiny_checkpoint) -> list[Case]:
    return make_cases(tmp_path_factory.mktemp("fuzz"), str(tiny_checkpoint))


def check(case: Case, code, err: str) -> str | None:
    """What is wrong with a case's outcome, or None."""
    lines = err.splitlines()
    if code == 0:
        return None if not lines else f"succeeded but wrote to stderr: {lines[:3]}"
    if code != 2:
        return f"exit code {code}: {lines[-3:]}"
    if len(lines) != 1 or not lines[0].startswith("talkface: error: "):
        return f"expected one error line, got {lines[:5]}"
    if case.target not in lines[0]:
        return f"the message does not name the file: {lines[0]}"
    return None


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def test_fuzz_cases_are_many_and_distinct(cases):
    assert len(cases) >= 300
    assert len({c.target for c in cases}) == len(cases)
    kinds = {c.id.split("-")[2] for c in cases if "-loud-" not in c.id}
    assert {"truncate", "bitflip", "header", "huge", "empty"} <= kinds


def test_a_subset_in_a_child_process_never_crashes_the_interpreter(cases, tmp_path):
    """Every 8th case, in one child process: a decoder that kills the interpreter shows up here."""
    subset = cases[::8] + [c for c in cases if "-loud-" in c.id]
    (tmp_path / "cases.json").write_text(json.dumps([c.argv for c in subset]))
    driver = f"""
import json, os, sys, tempfile
from talkface.cli import main
for i, argv in enumerate(json.load(open({str(tmp_path / "cases.json")!r}))):
    print("start", i, flush=True)
    with tempfile.TemporaryFile() as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException as e:
            code = repr(e)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        print(json.dumps({{"code": code, "err": err.read().decode(errors="replace")}}), flush=True)
"""
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=SOFT_LIMIT_S * len(subset))
    lines = p.stdout.splitlines()
    results = [json.loads(line) for line in lines if line.startswith("{")]
    if p.returncode != 0:
        started = [line for line in lines if line.startswith("start")]
        last = subset[int(started[-1].split()[1])] if started else None
        pytest.fail(f"the child process died with code {p.returncode} in case {last.id if last else '?'}: {p.stderr[-2000:]}")
    problems = [f"{c.id}: {problem}" for c, r in zip(subset, results) if (problem := check(c, r["code"], r["err"]))]
    assert len(results) == len(subset) and not problems, problems


def test_every_mutated_input_ends_in_success_or_one_line(cases, capfd, one_thread):
    previous = signal.signal(signal.SIGALRM, _alarm)
    problems = []
    try:
        for case in cases:
            faulthandler.dump_traceback_later(SOFT_LIMIT_S * 4, exit=True)  # a hang in C code that the alarm cannot stop
            signal.alarm(SOFT_LIMIT_S)
            try:
                with warnings.catch_warnings(record=True) as caught:  # printed on stderr outside pytest
                    warnings.simplefilter("always")
                    code = main(case.argv)
                if caught:
                    code = f"warned: {[str(w.message) for w in caught][:3]}"
            except SystemExit as e:
                code = e.code
            except Hang:
                code = f"no result within {SOFT_LIMIT_S} s"
            except Exception as e:
                code = f"{type(e).__name__}: {e}"
            finally:
                signal.alarm(0)
                faulthandler.cancel_dump_traceback_later()
            _, err = capfd.readouterr()
            problem = check(case, code, err)
            if problem:
                problems.append(f"{case.id}: {problem}")
            out = case.argv[case.argv.index("--out") + 1]
            if os.path.exists(out):
                os.remove(out)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not problems, "\n".join(problems)
