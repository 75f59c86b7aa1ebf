"""The shard engine (talkface.data.cut): speakers, the by-speaker split, reports, dead workers and a
full disk; the mouth and window shards hold exactly what their makers computed."""
import errno
import json
import os
import shutil
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from talkface.config import RefinerConfig, SyncConfig
from talkface.data.cut import Sample, cut, read_speakers, speaker_for, speaker_of, video_key
from talkface.data.shards import decode_npz, read_sample, shard_index
from talkface.errors import TalkfaceError

from conftest import no_grid

GRID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "grid_s1" / "video"
needs_grid = pytest.mark.skipif(not GRID.is_dir(), reason=no_grid(GRID))


def test_speakers_from_each_layout():
    assert speaker_of("/d/voxceleb2/dev/mp4/id00012/21Uxsk56VDQ/00001.mp4") == "id00012"
    assert speaker_of("/d/lrs2/main/5535415699068794046/00001.mp4") == "5535415699068794046"  # the video stands in
    assert speaker_of("/d/lrs3/trainval/0af00UcTOSc/50001.mp4") == "0af00UcTOSc"
    assert speaker_of("/d/hdtf/WRA_KatieHill_000.mp4") == "WRA_KatieHill"
    assert speaker_of("/d/hdtf/RD_Radio1_000.mp4") == "RD_Radio1"
    assert speaker_of("/d/hdtf/WDA_BarackObama_001.mp4") == "WDA_BarackObama"
    assert speaker_of("/d/grid/s14/video/bbaf2n.mpg") == "s14"
    assert speaker_of("/d/grid_s1/video/bbaf2n.mp4") == "s1"
    assert speaker_of("/d/my videos/anna/talk.mp4") == "anna"


def test_speakers_from_a_mapping_file(tmp_path):
    (tmp_path / "speakers.txt").write_text(
        "# video, speaker\n"
        "clips/a.mp4\tanna\n"
        "b.mp4, bert\n"
        "\n"
        "/elsewhere/c, d.mp4,carl\n"
    )
    speakers = read_speakers(str(tmp_path / "speakers.txt"))
    assert speaker_for(str(tmp_path / "clips" / "a.mp4"), speakers) == "anna"  # a path, relative to the file
    assert speaker_for("/any/folder/b.mp4", speakers) == "bert"  # a bare name matches any folder
    assert speaker_for("/elsewhere/c, d.mp4", speakers) == "carl"  # the last comma separates
    assert speaker_for("/d/voxceleb2/id00012/x/00001.mp4", speakers) == "id00012"  # not listed: the layout
    (tmp_path / "bad.txt").write_text("a.mp4 anna\n")
    with pytest.raises(TalkfaceError, match="line 1 is not"):
        read_speakers(str(tmp_path / "bad.txt"))


def fake_samples(path: str, speaker: str, split, frames: int = 50) -> list[Sample]:
    """A maker that reads nothing: two samples of made-up bytes per video."""
    name = os.path.splitext(os.path.basename(path))[0]
    return [Sample(split(speaker, f"{name}_{i}"), f"{name}_{i}", {"npz": bytes(2000) + name.encode()}, speaker, frames) for i in range(2)]


def test_a_full_disk_stops_the_run_in_one_line_and_a_rerun_completes(tmp_path, monkeypatch):
    for name in "abcdef":
        (tmp_path / "v" / name).mkdir(parents=True)
        (tmp_path / "v" / name / f"{name}.mp4").write_bytes(b"")
    out = tmp_path / "out"
    run = partial(cut, [str(tmp_path / "v")], str(out), fake_samples, "fake", 0.3, 2, workers=0, progress=False)
    real_addfile = tarfile.TarFile.addfile

    def addfile(self, info, fileobj=None):
        if info.name.startswith("c_1"):  # group 1, halfway through its shard
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_addfile(self, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile)
    with pytest.raises(TalkfaceError, match="no space left on the device") as e:
        run()
    assert e.value.path.endswith(f"{os.sep}000001.tar") and "\n" not in str(e.value)
    assert sorted(p.name for p in (out / "groups").iterdir()) == ["000000.json"]  # no report for the group
    assert not list(out.rglob("*.tmp")) and not list(out.glob("*/000001.tar*"))  # nor half a shard
    monkeypatch.undo()
    real_dump = json.dump

    def dump(data, f, **kwargs):
        if f.name.endswith(os.path.join("groups", "000002.json.tmp")):
            f.write('{"group": 2, "vid')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_dump(data, f, **kwargs)

    monkeypatch.setattr(json, "dump", dump)
    with pytest.raises(TalkfaceError, match="no space left on the device") as e:
        run()
    assert e.value.path == str(out / "groups" / "000002.json")
    assert sorted(p.name for p in (out / "groups").iterdir()) == ["000000.json", "000001.json"]
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    report = run()
    assert report["train"]["clips"] + report["val"]["clips"] == 12 and report["failed"] == {}
    assert sorted(p.name for p in (out / "groups").iterdir()) == ["000000.json", "000001.json", "000002.json"]
    keys = [e["key"] for split in ("train", "val") for p in sorted((out / split).glob("*.tar")) for e in shard_index(str(p))]
    assert sorted(keys) == sorted(f"{n}_{i}" for n in "abcdef" for i in range(2))


def speaker_folders(tmp_path: Path) -> Path:
    """Four GRID sentences under three made-up VoxCeleb2 speakers."""
    layout = {"id00001/abc/00001.mp4": "bbaf2n", "id00001/abd/00001.mp4": "bbaf3s",
              "id00004/xyz/00001.mp4": "bbaf4p", "id00006/klm/00001.mp4": "bbaf5a"}
    for path, name in layout.items():
        (tmp_path / "vox" / path).parent.mkdir(parents=True)
        os.symlink(GRID / f"{name}.mp4", tmp_path / "vox" / path)
    return tmp_path / "vox"


def index_entries(out: Path, split: str) -> list[tuple[Path, dict]]:
    return [(p, e) for p in sorted((out / split).glob("*.tar")) for e in shard_index(str(p))]


@needs_grid
def test_mouth_shards_split_by_speaker_and_hold_what_the_maker_computed(tmp_path, monkeypatch):
    from talkface.data import mouths

    made = {}

    def recorded(path, cfg, margin):
        made[path] = mouths_of = real(path, cfg, margin)
        return mouths_of

    real = mouths.video_clip
    monkeypatch.setattr(mouths, "video_clip", recorded)
    out = tmp_path / "out"
    cfg = SyncConfig()
    report = mouths.cut_mouths([str(speaker_folders(tmp_path))], str(out), cfg, workers=0, progress=False, val_fraction=0.5)
    assert report["split"] == "by speaker" and report["failed"] == {}
    assert (report["train"]["clips"], report["train"]["speakers"], report["val"]["clips"], report["val"]["speakers"]) == (3, 2, 1, 1)
    speakers = {s: {e["speaker"] for _, e in index_entries(out, s)} for s in ("train", "val")}
    assert speakers == {"train": {"id00001", "id00006"}, "val": {"id00004"}}
    sources = {video_key(p, speaker_of(p)): p for p in made}
    assert sorted(sources) == ["id00001_abc_00001_000", "id00001_abd_00001_000", "id00004_xyz_00001_000", "id00006_klm_00001_000"]
    frames = 0
    for split in ("train", "val"):
        for shard, entry in index_entries(out, split):
            arrays = decode_npz(read_sample(str(shard), entry)["npz"])
            want_mouths, want_mfcc = made[sources[entry["key"]]]
            np.testing.assert_array_equal(arrays["mouths"], want_mouths)
            np.testing.assert_array_equal(arrays["mfcc"], want_mfcc)
            assert arrays["mouths"].shape[1:] == (cfg.crop_height + 2 * cfg.margin, cfg.crop_width + 2 * cfg.margin)
            assert arrays["mouths"].dtype == np.uint8 and arrays["mfcc"].dtype == np.float16
            assert entry["frames"] == len(want_mouths)
            frames += entry["frames"]
    hours = report["train"]["hours"] + report["val"]["hours"]
    assert hours == pytest.approx(frames / 25 / 3600)
    assert json.loads((out / "report.json").read_text()) == report


@needs_grid
def test_a_worker_that_dies_loses_only_its_video(tmp_path, monkeypatch):
    from talkface.data.mouths import cut_mouths

    videos = tmp_path / "s1"
    videos.mkdir()
    for name in ("bbaf2n", "bbaf3s", "bbaf4p"):
        shutil.copy(GRID / f"{name}.mp4", videos / f"{name}.mp4")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal\n"
        "import talkface.data.cut as cut\n"
        "real = cut._make\n"
        "def make(maker, path, *args):\n"
        "    if os.path.basename(path) == 'bbaf3s.mp4':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(maker, path, *args)\n"
        "cut._make = make\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]))
    report = cut_mouths([str(videos)], str(tmp_path / "out"), SyncConfig(), workers=1, progress=False, val_fraction=0.0)
    assert report["failed"] == {str(videos / "bbaf3s.mp4"): "the preprocessing process died (signal 9)"}
    assert report["train"]["clips"] == 2
    assert [e["key"] for _, e in index_entries(tmp_path / "out", "train")] == ["s1_bbaf2n_000", "s1_bbaf4p_000"]


def test_synthetic_mouth_shards_hold_the_synthetic_clips(tmp_path):
    from talkface.data.mouths import synthetic_clips, synthetic_mouth_shards

    cfg = SyncConfig(val_clips=2)
    report = synthetic_mouth_shards(str(tmp_path), cfg, num_clips=5, frames=12, seed=3)
    clips = synthetic_clips(cfg, 5, 12, seed=3)
    assert (report["train"]["clips"], report["val"]["clips"]) == (3, 2)
    entries = index_entries(tmp_path, "train") + index_entries(tmp_path, "val")
    assert [e["key"] for _, e in entries] == clips.ids
    for (shard, entry), mouths, mfcc in zip(entries, clips.mouths, clips.mfcc):
        arrays = decode_npz(read_sample(str(shard), entry)["npz"])
        np.testing.assert_array_equal(arrays["mouths"], mouths)
        np.testing.assert_array_equal(arrays["mfcc"], mfcc.astype(np.float16))
        assert entry["frames"] == 12 and entry["speaker"] == entry["key"]


@needs_grid
def test_window_shards_hold_what_the_maker_computed(tmp_path, monkeypatch):
    from talkface.data import refine

    made = []

    def recorded(*args):
        made.append(real(*args))
        return made[-1]

    real = refine.video_windows
    monkeypatch.setattr(refine, "video_windows", recorded)
    cfg = RefinerConfig(height=16, width=32)
    report = refine.cut_windows([str(GRID / "bbaf2n.mp4")], str(tmp_path), cfg, workers=0, progress=False, seed=1)
    assert report["split"].startswith("by clip") and report["train"]["clips"] + report["val"]["clips"] == 8
    split = "train" if report["train"]["clips"] else "val"
    entries = index_entries(tmp_path, split)
    assert len(made) == 1 and len(entries) == len(made[0]) == 8
    for n, (shard, entry) in enumerate(entries):
        arrays = decode_npz(read_sample(str(shard), entry)["npz"])
        assert sorted(arrays) == sorted(refine.FIELDS)
        for field in refine.FIELDS:
            np.testing.assert_array_equal(arrays[field], getattr(made[0], field)[n])
        assert entry["speaker"] == "s1" and entry["frames"] == cfg.window
    assert arrays["warped"].shape == (cfg.window, 16, 32, 3) and arrays["still"].shape == (16, 32, 3)
    assert arrays["speech"].dtype == np.float32 and arrays["mfcc"].shape == (13, refine.AUDIO_STEPS)


@needs_grid
def test_a_run_killed_and_run_again_ends_with_the_same_shards(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from talkface.data.mouths import cut_mouths

    videos = tmp_path / "s1"
    videos.mkdir()
    for name in ("bbaf2n", "bbaf3s", "bbaf4p"):
        shutil.copy(GRID / f"{name}.mp4", videos / f"{name}.mp4")
    out = tmp_path / "out"
    script = ("from talkface.config import SyncConfig\nfrom talkface.data.mouths import cut_mouths\n"
              f"cut_mouths([{str(videos)!r}], {str(out)!r}, SyncConfig(), workers=1, progress=False, videos_per_group=1)\n")
    p = subprocess.Popen([sys.executable, "-c", script])
    try:
        while not (out / "groups" / "000000.json").exists() and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    report = cut_mouths([str(videos)], str(out), SyncConfig(), workers=0, progress=False, videos_per_group=1)
    whole = cut_mouths([str(videos)], str(tmp_path / "whole"), SyncConfig(), workers=0, progress=False, videos_per_group=1)
    assert report == whole and report["train"]["clips"] + report["val"]["clips"] == 3
    assert not list(out.rglob("*.tmp"))
    for split in ("train", "val"):
        assert [e for _, e in index_entries(out, split)] == [e for _, e in index_entries(tmp_path / "whole", split)]
        for (a, entry), (b, _) in zip(index_entries(out, split), index_entries(tmp_path / "whole", split)):
            assert read_sample(str(a), entry) == read_sample(str(b), entry)
