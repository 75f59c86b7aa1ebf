import json
import os

import pytest
import torch

from talkface.checkpoint import default_sync_expert, load_sync_expert, read_metadata, save_release, save_sync_expert
from talkface.cli import main
from talkface.config import SyncConfig, override, tiny
from talkface.data.mouths import synthetic_mouth_shards
from talkface.data.stream import ShardStream
from talkface.errors import TalkfaceError
from talkface.models import Generator
from talkface.models.sync_expert import SyncExpert
from talkface.training.loop import read_batch
from talkface.training.sync import SyncReader, contrastive_loss


def small_cfg(**sets) -> SyncConfig:
    base = ["batch_size=4", "video_channels=(8, 8, 16, 16)", "audio_channels=(8, 8, 16)", "dim=16", "val_clips=2", "log_every=1"]
    return override(SyncConfig(), base + [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Mouth shards of 6 synthetic clips (4 to train on)."""
    out = str(tmp_path_factory.mktemp("mouths"))
    synthetic_mouth_shards(out, small_cfg(), num_clips=6, frames=30)
    return out


def draw_batch(root: str, cfg: SyncConfig, step: int) -> dict[str, torch.Tensor]:
    stream = ShardStream(root, "train", cfg.data, seed=cfg.seed)
    return read_batch(SyncReader(cfg), stream.take(cfg.batch_size), cfg.seed, step)[0]


def test_embeddings_are_unit_vectors_and_distances_in_range():
    cfg = small_cfg()
    expert = SyncExpert(cfg)
    v = expert.embed_video(torch.rand(3, 5, 32, 64) * 2 - 1)
    a = expert.embed_audio(torch.randn(3, 13, 20))
    assert v.shape == a.shape == (3, 16)
    assert torch.allclose(v.norm(dim=-1), torch.ones(3)) and torch.allclose(a.norm(dim=-1), torch.ones(3))
    d = expert(torch.rand(3, 5, 32, 64), torch.randn(3, 13, 20))
    assert d.shape == (3,) and ((d >= 0) & (d <= 2)).all()
    with pytest.raises(AssertionError):
        expert.embed_video(torch.rand(3, 4, 32, 64))


def test_batches_are_a_pure_function_of_step(clips):
    cfg = small_cfg()
    a, b, c = draw_batch(clips, cfg, 7), draw_batch(clips, cfg, 7), draw_batch(clips, cfg, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mouths"], c["mouths"])
    assert a["mouths"].shape == (4, 5, 32, 64) and a["audio"].shape == a["shifted"].shape == (4, 13, 20)
    assert a["mouths"].min() >= -1 and a["mouths"].max() <= 1
    assert not torch.equal(a["audio"], a["shifted"])


def test_a_training_step_lowers_the_contrastive_loss(clips):
    cfg = small_cfg()
    torch.manual_seed(0)
    expert = SyncExpert(cfg)
    batch = draw_batch(clips, cfg, 0)
    opt = torch.optim.Adam(expert.parameters(), lr=1e-4)
    before = contrastive_loss(expert, batch)["loss"].item()
    for _ in range(5):
        opt.zero_grad()
        contrastive_loss(expert, batch)["loss"].backward()
        opt.step()
    assert contrastive_loss(expert, batch)["loss"].item() < before


def test_weights_round_trip_through_safetensors(tmp_path):
    cfg = small_cfg()
    expert = SyncExpert(cfg).eval()
    path = tmp_path / "expert.safetensors"
    save_sync_expert(path, expert, cfg, half=False)
    loaded, cfg2 = load_sync_expert(path)
    assert cfg2 == cfg
    x, y = torch.rand(2, 5, 32, 64), torch.randn(2, 13, 20)
    assert torch.equal(expert(x, y), loaded(x, y))
    assert read_metadata(path)["kind"] == "sync_expert"


def test_loading_rejects_what_is_not_an_expert(tmp_path):
    gen = tmp_path / "generator.safetensors"
    save_release(gen, Generator(tiny()), tiny())
    with pytest.raises(TalkfaceError, match="not a talkface sync expert"):
        load_sync_expert(gen)
    pickled = tmp_path / "expert.pt"
    torch.save({"weights": torch.zeros(1)}, pickled)
    with pytest.raises(TalkfaceError, match="not a readable safetensors"):
        load_sync_expert(pickled)
    with pytest.raises(TalkfaceError, match="no such"):
        load_sync_expert(tmp_path / "missing.safetensors")


def test_shipped_expert_is_small_and_describes_itself():
    path = default_sync_expert()
    assert os.path.getsize(path) < 5 * 2**20
    expert, cfg = load_sync_expert(path)
    meta = read_metadata(path)
    assert cfg.frames == 5 and cfg.max_offset == 15 and int(meta["steps"]) > 0
    assert not expert.training


def test_train_sync_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    sets = ["steps=2", "batch_size=4", "video_channels=(8, 8, 16, 16)", "audio_channels=(8, 8, 16)", "dim=16", "val_clips=2", "synthetic_clips=6", "synthetic_frames=24"]
    args = ["train-sync", "--data", "synthetic", "--out", str(out), "--quiet"] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 0
    report = json.loads((out / "assessment.json").read_text())
    assert report["steps"] == 2 and 0 <= report["all_pair_accuracy"] <= 1 and report["clips"] == 2
    assert load_sync_expert(out / "sync_expert.safetensors")[1].dim == 16
    assert main(args) == 2  # refuses to overwrite without --overwrite
    assert "already holds a sync expert" in capsys.readouterr().err


def test_train_sync_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["train-sync", "--out", str(tmp_path / "a"), "--set", "nonsense=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["train-sync", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 2
    assert "is not a folder of videos" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train-sync", "--data", str(empty), "--out", str(tmp_path / "c")]) == 2
    assert "contains no videos" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
