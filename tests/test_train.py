"""The training loop and the GAN tasks: steps, exact resume from any position, releases, and the
shards streamed underneath (positions, speakers, corrupt data)."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
import torch

from talkface.checkpoint import load_generator, load_training_state, read_metadata, save_release
from talkface.config import StreamConfig, override, preset, tiny
from talkface.data.shards import INDEX_SUFFIX, shard_index
from talkface.data.stream import ShardStream
from talkface.data.synthetic import write_synthetic_shards
from talkface.errors import TalkfaceError
from talkface.training import loop
from talkface.training.gan import gan_task
from talkface.training.loop import Trainer, read_batch


def small_cfg(*sets):
    cfg = override(tiny(), ["train.batch_size=2", "train.clip_frames=4", "train.checkpoint_every=1000", "train.log_every=1"])
    return override(cfg, list(sets))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 synthetic clips of 12 frames in shards of 3."""
    return write_synthetic_shards(str(tmp_path_factory.mktemp("frames")), small_cfg(), 12, 12, seed=5, per_shard=3)


@pytest.fixture(scope="module")
def motion_data(tmp_path_factory):
    cfg = override(preset("motion-tiny"), ["train.batch_size=4"])
    return write_synthetic_shards(str(tmp_path_factory.mktemp("motion")), cfg, 24, 30, seed=1, per_shard=4)


def trainer(cfg, data, out, **kw):
    return Trainer(gan_task(cfg), data, out, **kw)


def batch_of(tr: Trainer, step: int = 0):
    return read_batch(tr.task.reader, tr.stream.take(tr.task.schedule.batch_size), tr.task.schedule.seed, step)[0]


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def same_weights(a: Trainer, b: Trainer) -> bool:
    pairs = [(a.task.G, b.task.G), (a.task.ema, b.task.ema), (a.task.D, b.task.D)]
    return all(torch.equal(x.state_dict()[k], y.state_dict()[k]) for x, y in pairs for k in x.state_dict())


def test_batches_follow_the_stream_and_are_reproducible(data, tmp_path):
    tr = trainer(small_cfg(), data, tmp_path / "a")
    a = batch_of(tr)
    b = batch_of(trainer(small_cfg(), data, tmp_path / "b"))
    c = batch_of(tr, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["frames"], c["frames"])
    assert a["frames"].shape == (2, 4, 3, 48, 32) and a["mfcc"].shape == (2, 4, 13, 35)
    assert torch.equal(a["mfcc_other"][1], a["mfcc"][0])


def test_generator_phase_leaves_discriminators_untouched(data, tmp_path):
    task = trainer(small_cfg(), data, tmp_path).task
    batch = batch_of(trainer(small_cfg(), data, tmp_path / "x"))
    fake = task.G(batch["still"], batch["mfcc"])
    d_before, g_before = snapshot(task.D), snapshot(task.G)
    task.D.eval().requires_grad_(False)
    losses = task.generator_phase(batch, fake, 0)
    assert set(losses) == {"g_frame_adv", "g_seq_adv", "g_l1"}
    task.opt_g.zero_grad()
    sum(losses.values()).backward()
    assert all(p.grad is None for p in task.D.parameters())
    task.opt_g.step()
    assert changed(g_before, task.G) and not changed(d_before, task.D)


def test_one_step_updates_generator_discriminators_and_ema(data, tmp_path):
    tr = trainer(small_cfg(), data, tmp_path)
    g, d, e = snapshot(tr.task.G), snapshot(tr.task.D), snapshot(tr.task.ema)
    tr.fit(1, progress=False)
    assert changed(g, tr.task.G) and changed(d, tr.task.D) and changed(e, tr.task.ema)
    assert tr.step == 1 and (tmp_path / "checkpoint.pt").exists() and (tmp_path / "generator.safetensors").exists()


def test_l1_goes_down_with_training(data, tmp_path):
    tr = trainer(small_cfg("train.batch_size=4"), data, tmp_path)
    l1 = []
    for step in range(28):
        l1.append(float(tr.task.train_step({k: v for k, v in batch_of(tr, step).items()}, step)["g_l1"]))
    assert l1[-1] < 0.7 * np.mean(l1[:3])


def test_resume_ends_with_the_same_weights(data, tmp_path):
    """Stopped at step 3 (past an epoch: 12 clips in 6 steps) and resumed: the same weights as an
    unbroken run of 8 steps."""
    full = trainer(small_cfg(), data, tmp_path / "full")
    full.fit(8, progress=False)
    part = trainer(small_cfg(), data, tmp_path / "part")
    part.fit(7, progress=False)
    resumed = trainer(small_cfg(), data, tmp_path / "part")
    resumed.resume(tmp_path / "part" / "checkpoint.pt")
    assert resumed.step == 7 and resumed.stream.epoch == 1
    resumed.fit(8, progress=False)
    assert same_weights(full, resumed)
    log = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    assert [r["step"] for r in log] == list(range(1, 9)) and "g_l1" in log[0]


def test_loader_processes_give_the_same_run(motion_data, tmp_path, one_thread):
    """Every run steps in one torch thread (a trainer with loader processes takes the cores they leave,
    and a different thread count may round differently), so only the loader differs."""
    def run(sets, out, resume=False, steps=5):
        tr = trainer(override(preset("motion-tiny"), ["train.batch_size=4", "train.log_every=1", *sets]), motion_data, out)
        torch.set_num_threads(1)
        if resume:
            tr.resume(out / "checkpoint.pt")
        tr.fit(steps, progress=False)
        return tr

    alone = run([], tmp_path / "alone")
    run(["data.workers=2"], tmp_path / "helped", steps=3)  # read ahead by two processes; the checkpoint holds the position of step 3
    again = run(["data.workers=2"], tmp_path / "helped", resume=True)
    assert same_weights(alone, again)


def test_resume_reads_nothing_before_its_position(motion_data, tmp_path, monkeypatch):
    """Time to the first step does not grow with the position: a resumed run reads only its own batch."""
    cfg = override(preset("motion-tiny"), ["train.batch_size=4"])
    tr = trainer(cfg, motion_data, tmp_path)
    tr.fit(14, progress=False)  # 24 clips in batches of 4: epoch 2
    reads = []
    real = loop.read_sample
    monkeypatch.setattr(loop, "read_sample", lambda path, entry: reads.append(entry["key"]) or real(path, entry))
    resumed = trainer(cfg, motion_data, tmp_path)
    resumed.resume(tmp_path / "checkpoint.pt")
    resumed.fit(15, progress=False)
    assert len(reads) == 4 and resumed.stream.state()["epoch"] == 2


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    """`talkface train` killed mid-run (after a checkpoint), then `--resume`: the weights of an unbroken run.

    On one thread: with two, torch's CPU kernels sometimes summed in another order (1 to 3 runs in 4
    on one machine, any run, killed or not), and the GAN grew that rounding into other weights."""
    args = [sys.executable, "-m", "talkface", "train", "--config", "motion-tiny", "--data", "synthetic", "--quiet",
            "--set", "train.steps=30", "--set", "train.checkpoint_every=3", "--set", "train.batch_size=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(args + ["--out", str(tmp_path / "full")], check=True, capture_output=True, env=env)
    run = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "checkpoint.pt").exists() and load_training_state(run / "checkpoint.pt")["step"] >= 6:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "generator.safetensors").exists(), "the run ended before it was killed"
    subprocess.run(args + ["--out", str(run), "--resume"], check=True, capture_output=True, env=env)
    a = load_training_state(tmp_path / "full" / "checkpoint.pt")
    b = load_training_state(run / "checkpoint.pt")
    assert a["step"] == b["step"] == 30
    for part in ("generator", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


def test_release_round_trip_gives_identical_outputs(data, tmp_path):
    tr = trainer(small_cfg(), data, tmp_path)
    tr.fit(1, progress=False)
    path = tmp_path / "generator.safetensors"
    meta = read_metadata(path)
    assert json.loads(meta["config"])["name"] == "tiny" and meta["format"] == "1"
    assert (meta["clips"], meta["speakers"], meta["steps"]) == ("12", "1", "1") and float(meta["hours"]) > 0
    g, cfg = load_generator(path)
    g2, _ = load_generator(tmp_path / "checkpoint.pt")
    still = torch.rand(1, 3, 48, 32) * 2 - 1
    mfcc, z = torch.randn(1, 3, 13, 35), torch.randn(1, 3, 10)
    with torch.no_grad():
        ref = tr.task.ema(still, mfcc, z)
        assert torch.equal(g(still, mfcc, z), ref) and torch.equal(g2(still, mfcc, z), ref)
    save_release(tmp_path / "half.safetensors", tr.task.ema, cfg, half=True)
    g3, _ = load_generator(tmp_path / "half.safetensors")
    with torch.no_grad():
        assert (g3(still, mfcc, z) - ref).abs().max() < 0.05
    assert not zipfile.is_zipfile(path)  # safetensors, never a pickle archive


def test_checkpoint_loading_refuses_pickled_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"format": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(TalkfaceError, match="not a talkface training checkpoint"):
        load_training_state(tmp_path / "evil.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    with pytest.raises(TalkfaceError):
        load_generator(tmp_path / "junk.safetensors")
    with pytest.raises(TalkfaceError, match="no such checkpoint"):
        load_generator(tmp_path / "missing.safetensors")


# -- the stream -----------------------------------------------------------------------------------
def test_ranks_read_disjoint_shards_and_every_clip_once_an_epoch(data):
    cfg = StreamConfig(mix=2, balance_speakers=False)
    keys = []
    for rank in range(2):
        stream = ShardStream(data, "train", cfg, seed=3, rank=rank, world=2)
        keys.append([(item.path, item.entry["key"]) for item in stream.take(len(stream.plan(0)))])
    assert not {p for p, _ in keys[0]} & {p for p, _ in keys[1]}
    assert sorted(k for part in keys for _, k in part) == sorted(f"synthetic{i:06d}" for i in range(12))
    again = ShardStream(data, "train", cfg, seed=3, rank=0, world=2)
    assert [(i.path, i.entry["key"]) for i in again.take(len(keys[0]))] == keys[0]
    with pytest.raises(TalkfaceError, match="fewer than"):
        ShardStream(data, "train", cfg, world=5)


def test_speakers_are_balanced_in_an_epoch(tmp_path):
    """Speaker 0 has 4 times the clips of each other speaker (clips 0-19 are all its, then 5 each)."""
    root = str(tmp_path)
    cfg = override(preset("motion-tiny"), [])
    write_synthetic_shards(root, cfg, 20, 10, per_shard=5, speakers=1)
    more = str(tmp_path / "more")
    write_synthetic_shards(more, cfg, 20, 10, seed=9, per_shard=5, speakers=4)
    for path in sorted(os.listdir(os.path.join(more, "train"))):
        os.replace(os.path.join(more, "train", path), os.path.join(root, "train", "b" + path))
    plain = ShardStream(root, "train", StreamConfig(balance_speakers=False))
    balanced = ShardStream(root, "train", StreamConfig())
    assert plain.speakers["synthetic0"] == 25 and plain.speakers["synthetic1"] == 5
    counts = [{s: 0 for s in plain.speakers} for _ in range(2)]
    for epoch in range(20):
        for i, stream in enumerate((plain, balanced)):
            for _, entry in stream.plan(epoch):
                counts[i][entry["speaker"]] += 1
    share = lambda c: c["synthetic0"] / sum(c.values())  # noqa: E731
    assert share(counts[0]) == pytest.approx(25 / 40)
    assert share(counts[1]) < 0.35  # about 5 of the 20 an epoch holds


def corrupt_sample(path: str, entry: dict, ext: str) -> None:
    offset, size = entry["members"][ext]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(size))


def test_a_corrupt_sample_is_skipped_with_one_warning_and_training_goes_on(motion_data, tmp_path, capfd):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(motion_data, root)
    shard = sorted((root / "train").glob("*.tar"))[0]
    for entry in shard_index(str(shard))[:2]:
        corrupt_sample(str(shard), entry, "wav")
    cfg = override(preset("motion-tiny"), ["train.batch_size=4", "data.max_bad_shards=0.5"])
    tr = trainer(cfg, str(root), tmp_path / "run")
    tr.fit(12, progress=False)  # two epochs
    err = capfd.readouterr().err
    assert err.count("warning:") == 1 and str(shard) in err and "1 of 6 shards" in err
    assert tr.step == 12 and list(tr.stream.bad) == [str(shard)]
    assert load_training_state(tmp_path / "run" / "checkpoint.pt")["streams"][0]["bad"] == {str(shard): tr.stream.bad[str(shard)]}


def test_too_many_corrupt_shards_stop_training_with_a_clear_error(motion_data, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(motion_data, root)
    shards = sorted((root / "train").glob("*.tar"))
    with open(shards[0], "r+b") as f:  # cut short: not even its headers can be read
        f.truncate(700)
    os.remove(str(shards[0]) + INDEX_SUFFIX)
    for shard in shards[1:3]:
        for entry in shard_index(str(shard)):
            corrupt_sample(str(shard), entry, "wav")
    cfg = override(preset("motion-tiny"), ["train.batch_size=4", "data.max_bad_shards=0.4"])
    tr = trainer(cfg, str(root), tmp_path / "run")  # one of six shards unreadable: under 40%
    assert list(tr.stream.bad) == [str(shards[0])]
    with pytest.raises(TalkfaceError, match=r"3 of 6 'train' shards are unreadable, more than the 40% allowed"):
        tr.fit(12, progress=False)


def test_the_shard_index_is_rebuilt_when_missing_or_stale(data, tmp_path):
    import shutil

    shutil.copytree(data, tmp_path / "d")
    shard = sorted((tmp_path / "d" / "train").glob("*.tar"))[0]
    written = shard_index(str(shard))
    os.remove(str(shard) + INDEX_SUFFIX)
    assert shard_index(str(shard)) == written and os.path.exists(str(shard) + INDEX_SUFFIX)
    with tarfile.open(shard) as tar:
        assert [m.name.split(".")[0] for m in tar][::3] == [e["key"] for e in written]


def test_a_multi_speaker_folder_splits_by_speaker_balances_them_and_the_model_says_what_it_saw(tmp_path):
    """GRID s1 (6 sentences) and four made-up speakers of one clip each, in VoxCeleb2's layout."""
    from conftest import SHARED, no_grid, speech_like, write_audio, write_face_video

    from talkface.data.preprocess import PreprocessOptions, preprocess

    grid = SHARED / "data" / "grid_s1" / "video"
    if not grid.is_dir():
        pytest.skip(no_grid(grid))
    (tmp_path / "videos" / "s1").mkdir(parents=True)
    for name in ("bbaf2n", "bbaf3s", "bbaf4p", "bbaf5a", "bbal6n", "bbal7s"):
        os.symlink(grid / f"{name}.mp4", tmp_path / "videos" / "s1" / f"{name}.mp4")
    for k in range(4):
        speech = write_audio(tmp_path / f"speech{k}.wav", speech_like(2.0, seed=k))
        (tmp_path / "videos" / f"id0000{k}" / "yt").mkdir(parents=True)
        write_face_video(tmp_path / "videos" / f"id0000{k}" / "yt" / "00001.mp4", 50, audio_path=speech, step=0.2)
    out = tmp_path / "shards"
    report = preprocess([str(tmp_path / "videos")], str(out), PreprocessOptions(size=(48, 32), val_fraction=0.35, videos_per_group=2), progress=False)
    assert report["split"] == "by speaker" and report["failed"] == {}
    speakers = {s: {e["speaker"] for p in (out / s).glob("*.tar") for e in shard_index(str(p))} for s in ("train", "val")}
    assert speakers == {"train": {"s1", "id00001", "id00002", "id00003"}, "val": {"id00000"}}  # by a hash of the speaker

    stream = ShardStream(str(out), "train", StreamConfig(), seed=0)
    assert stream.speakers["s1"] == 6 and stream.speakers["id00001"] == 1
    taken = sum(e["speaker"] == "s1" for epoch in range(40) for _, e in stream.plan(epoch)) / 40
    assert 0.5 < taken < 1.6  # six clips against one each: balanced, s1 gives about one clip an epoch, not six

    cfg = override(preset("motion-tiny"), ["train.batch_size=2", "train.clip_frames=16"])
    tr = trainer(cfg, str(out), tmp_path / "run")
    tr.fit(2, progress=False)
    meta = read_metadata(tmp_path / "run" / "generator.safetensors")
    assert int(meta["speakers"]) == len(speakers["train"]) and int(meta["clips"]) == report["train"]["clips"]
    assert float(meta["hours"]) == pytest.approx(report["train"]["hours"], abs=1e-3)
