import json
import zipfile

import numpy as np
import pytest
import torch

from talkface.checkpoint import load_generator, load_training_state, read_metadata, save_release
from talkface.config import override, tiny
from talkface.data.synthetic import SyntheticDataset
from talkface.errors import TalkfaceError
from talkface.train import Trainer, draw_batch


def small_cfg(**sets):
    cfg = override(tiny(), ["train.batch_size=2", "train.clip_frames=4", "train.checkpoint_every=1000", "train.log_every=1"])
    return override(cfg, [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def data():
    cfg = small_cfg()
    return SyntheticDataset(6, 12, (cfg.model.height, cfg.model.width), cfg.audio, seed=5)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_batches_are_a_pure_function_of_step(data):
    cfg = small_cfg()
    a, b, c = draw_batch(data, cfg, 3), draw_batch(data, cfg, 3), draw_batch(data, cfg, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["frames"], c["frames"])
    assert a["frames"].shape == (2, 4, 3, 48, 32) and a["mfcc"].shape == (2, 4, 13, 35)
    assert torch.equal(a["mfcc_other"][1], a["mfcc"][0])


def test_generator_phase_leaves_discriminators_untouched(data, tmp_path):
    tr = Trainer(small_cfg(), data, tmp_path)
    batch = draw_batch(data, tr.cfg, 0)
    fake = tr.G(batch["still"], batch["mfcc"])
    d_before, g_before = snapshot(tr.D), snapshot(tr.G)
    tr.D.eval().requires_grad_(False)
    losses = tr.generator_phase(batch, fake, 0)
    assert set(losses) == {"g_frame_adv", "g_seq_adv", "g_l1"}
    tr.opt_g.zero_grad()
    sum(losses.values()).backward()
    assert all(p.grad is None for p in tr.D.parameters())
    tr.opt_g.step()
    assert changed(g_before, tr.G) and not changed(d_before, tr.D)


def test_one_step_updates_generator_discriminators_and_ema(data, tmp_path):
    tr = Trainer(small_cfg(), data, tmp_path)
    g, d, e = snapshot(tr.G), snapshot(tr.D), snapshot(tr.ema)
    losses = tr.train_step()
    assert {"d_frame", "d_sequence", "g_l1"} <= set(losses) and all(np.isfinite(list(losses.values())))
    assert changed(g, tr.G) and changed(d, tr.D) and changed(e, tr.ema)
    assert tr.step == 1


def test_l1_goes_down_with_training(data, tmp_path):
    tr = Trainer(small_cfg(**{"train.batch_size": 4}), data, tmp_path)
    first = [tr.train_step()["g_l1"] for _ in range(3)]
    for _ in range(25):
        last = tr.train_step()["g_l1"]
    assert last < 0.7 * np.mean(first)


def test_resume_ends_with_the_same_weights(data, tmp_path):
    full = Trainer(small_cfg(), data, tmp_path / "full")
    full.fit(4, progress=False)
    part = Trainer(small_cfg(), data, tmp_path / "part")
    part.fit(2, progress=False)
    resumed = Trainer(small_cfg(), data, tmp_path / "part")
    resumed.resume(tmp_path / "part" / "checkpoint.pt")
    assert resumed.step == 2
    resumed.fit(4, progress=False)
    for a, b in [(full.G, resumed.G), (full.ema, resumed.ema), (full.D, resumed.D)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    log = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "g_l1" in log[0]


def test_release_round_trip_gives_identical_outputs(data, tmp_path):
    tr = Trainer(small_cfg(), data, tmp_path)
    tr.fit(1, progress=False)
    path = tmp_path / "generator.safetensors"
    meta = read_metadata(path)
    assert json.loads(meta["config"])["name"] == "tiny" and meta["format"] == "1"
    g, cfg = load_generator(path)
    g2, _ = load_generator(tmp_path / "checkpoint.pt")
    still = torch.rand(1, 3, 48, 32) * 2 - 1
    mfcc, z = torch.randn(1, 3, 13, 35), torch.randn(1, 3, 10)
    with torch.no_grad():
        ref = tr.ema(still, mfcc, z)
        assert torch.equal(g(still, mfcc, z), ref) and torch.equal(g2(still, mfcc, z), ref)
    save_release(tmp_path / "half.safetensors", tr.ema, cfg, half=True)
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
