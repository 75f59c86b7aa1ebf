"""Two training processes (gloo on CPU, as under `torchrun --nproc_per_node 2`): each reads its own
shards, both hold the same weights after every step, and a run stopped and resumed by both ends with
exactly the weights of an unbroken one."""
import os
import socket

import torch
import torch.multiprocessing as mp

from talkface.checkpoint import load_training_state
from talkface.config import override, preset
from talkface.data.synthetic import write_synthetic_shards
from talkface.training.gan import gan_task
from talkface.training.loop import Trainer, distributed


def small_cfg():
    return override(preset("motion-tiny"), ["train.batch_size=2", "train.checkpoint_every=1000", "train.log_every=1", "data.mix=1"])


def worker(rank: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = os.path.join(root, "data")
    with distributed("cpu") as (r, world, device):
        assert (r, world, device) == (rank, 2, "cpu")
        full = Trainer(gan_task(small_cfg()), data, os.path.join(root, "full"), device=device, rank=r, world=world)
        seen = [path for path, _ in full.stream.plan(0)]
        full.fit(6, progress=False)
        Trainer(gan_task(small_cfg()), data, os.path.join(root, "part"), device=device, rank=r, world=world).fit(4, progress=False)
        resumed = Trainer(gan_task(small_cfg()), data, os.path.join(root, "part"), device=device, rank=r, world=world)
        resumed.resume(os.path.join(root, "part", "checkpoint.pt"))
        resumed.fit(6, progress=False)
        torch.save({"G": full.task.ema.state_dict(), "resumed": resumed.task.ema.state_dict(), "shards": sorted(set(seen))},
                   os.path.join(root, f"rank{rank}.pt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_alike_on_their_own_shards_and_resume_exactly(tmp_path):
    write_synthetic_shards(str(tmp_path / "data"), small_cfg(), 12, 30, per_shard=3)  # 4 shards: 2 each, 3 steps an epoch
    mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])
    assert all(torch.equal(a["G"][k], a["resumed"][k]) for k in a["G"])  # past an epoch, resumed by both processes
    assert len(a["shards"]) == len(b["shards"]) == 2 and not set(a["shards"]) & set(b["shards"])
    state = load_training_state(tmp_path / "part" / "checkpoint.pt")
    assert state["step"] == 6 and len(state["streams"]) == 2
    fresh = gan_task(small_cfg())
    fresh.build(torch.device("cpu"), 0, 1)
    assert any(not torch.equal(fresh.ema.state_dict()[k], a["G"][k]) for k in a["G"])
    assert (tmp_path / "full" / "generator.safetensors").exists()
