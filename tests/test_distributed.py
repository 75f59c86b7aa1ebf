import os
import socket

import torch
import torch.multiprocessing as mp

from talkface.config import override, tiny
from talkface.data.synthetic import SyntheticDataset
from talkface.train import Trainer, distributed


def small_cfg():
    return override(tiny(), ["train.batch_size=2", "train.clip_frames=4", "train.checkpoint_every=1000"])


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = small_cfg()
    data = SyntheticDataset(6, 12, (cfg.model.height, cfg.model.width), cfg.audio, seed=3)
    with distributed("cpu") as (r, world, device):
        assert (r, world, device) == (rank, 2, "cpu")
        trainer = Trainer(cfg, data, out, device=device, rank=r, world=world)
        trainer.fit(3, progress=False)
        torch.save({"G": trainer.ema.state_dict(), "D": {k: v.module.state_dict() for k, v in trainer.D.items()}}, os.path.join(out, f"rank{rank}.pt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_hold_identical_weights(tmp_path):
    mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("G",):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    for name in a["D"]:
        assert all(torch.equal(a["D"][name][k], b["D"][name][k]) for k in a["D"][name])
    # the ranks saw different data, and the weights moved from their initial values
    fresh = Trainer(small_cfg(), SyntheticDataset(1, 12, (48, 32), small_cfg().audio), tmp_path / "fresh")
    assert any(not torch.equal(fresh.ema.state_dict()[k], a["G"][k]) for k in a["G"])
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "generator.safetensors").exists()
