"""The training loop, written once for everything talkface trains.

A task (`talkface.training.tasks`) says what is trained: its networks and optimizers, how one shard
sample becomes one training example (its `reader`, run in loader processes), one training step, the
held-out figures and the release file. The loop does the rest, the same for every task:
- the run folder: `config.json`, `metrics.jsonl` (a row every `log_every` steps), a progress bar;
- the data: the task's shards streamed (`talkface.data.stream`), each rank its own, decoded in
  `data.workers` processes; unreadable samples are skipped and counted;
- a stop at the first non-finite loss;
- `checkpoint.pt` every `checkpoint_every` steps and at the end: the task's state (networks,
  optimizers) and every rank's position in its stream, so `--resume` continues at once, from any
  position, with exactly the weights an unbroken run would have (every random draw is seeded by
  (seed, step, rank), learning rates are functions of the step);
- several processes under `torchrun` (one per GPU with NCCL, or CPUs with gloo);
- the release: the task's weights file, with what the model saw (clips, speakers, hours).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from talkface.checkpoint import load_training_state, save_training_state
from talkface.config import StreamConfig
from talkface.data.shards import read_sample
from talkface.data.stream import Item, ShardStream
from talkface.devices import pick_device
from talkface.errors import TalkfaceError


@contextlib.contextmanager
def distributed(device: str | None = "auto") -> Iterator[tuple[int, int, str]]:
    """(rank, world, device) for this process: torchrun's environment when present (NCCL on GPUs,
    gloo on CPUs), a single process otherwise; the process group is torn down on exit."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available() and device in (None, "auto", "cuda")
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
        dev = f"cuda:{local}" if cuda else "cpu"
    else:
        dev = "cuda" if cuda else str(pick_device(device))
    try:
        yield rank, world, dev
    finally:
        if world > 1:
            dist.destroy_process_group()


@dataclass
class Schedule:
    """How long and how often: the loop's part of a task's config."""

    steps: int
    batch_size: int
    seed: int
    log_every: int
    checkpoint_every: int
    data: StreamConfig
    eval_every: int = 0  # 0: held-out figures only at the end
    threads: int | None = None  # torch threads of the training process (None: the cores the loader processes leave)


class Reader(Protocol):
    """Turns shard samples into training examples; runs in loader processes, so it holds no networks."""

    def example(self, sample: dict[str, bytes], rng: np.random.Generator) -> dict[str, np.ndarray] | None:
        """One example from one sample (None: a sample this task cannot use, such as too short a clip)."""
        ...

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]: ...


class Task(Protocol):
    name: str  # progress bar and release metadata
    weights: str  # the release file's name in the run folder
    schedule: Schedule
    reader: Reader

    def config(self) -> dict[str, Any]: ...

    def build(self, device: torch.device, rank: int, world: int) -> None:
        """Networks and optimizers, on `device`; wrapped for DistributedDataParallel when world > 1."""

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One update; returns the loss terms."""

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def evaluate(self) -> dict[str, float]:
        """Held-out figures (may be empty)."""

    def release(self, path: str, meta: dict[str, str]) -> dict[str, Any]:
        """Write the weights to `path`; returns a report (also written as report.json)."""


def lr_scale(step: int, steps: int, warmup: int, cosine: bool) -> float:
    """Linear warm-up over `warmup` steps, then constant or a cosine decay to 0 at `steps`."""
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return warm * (0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)) if cosine else 1.0)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class _Samples(torch.utils.data.Dataset):
    """Reads and decodes one job (step, index in the batch, item); never raises for bad data."""

    def __init__(self, reader: Reader, seed: int, rank: int):
        self.reader, self.seed, self.rank = reader, seed, rank

    def __getitem__(self, job: tuple[int, int, Item]):
        step, i, item = job
        try:
            example = self.reader.example(read_sample(item.path, item.entry), np.random.default_rng([self.seed, step, self.rank, i]))
            return step, example, None
        except Exception as e:  # a corrupt sample: reported to the stream, replaced in its batch
            return step, None, (item.path, f"{item.entry['key']}: {type(e).__name__}: {str(e)[:80]}")


class _Collate:
    def __init__(self, reader: Reader):
        self.reader = reader

    def __call__(self, results):
        step = results[0][0]
        bad = [r[2] for r in results if r[2] is not None]
        usable = [r[1] for r in results if r[1] is not None]
        if not usable:
            return step, None, bad
        filled = [r[1] if r[1] is not None else usable[i % len(usable)] for i, r in enumerate(results)]
        return step, self.reader.collate(filled), bad


def read_batch(reader: Reader, items: list[Item], seed: int, step: int, rank: int = 0):
    """(batch, unreadable [(shard, reason)]) of `items`, made in this process as the loader makes it."""
    samples = _Samples(reader, seed, rank)
    _, batch, bad = _Collate(reader)([samples[(step, i, item)] for i, item in enumerate(items)])
    return batch, bad


class Trainer:
    """Runs a task on the shards in `data` (a folder with train/ and val/), writing to `out`."""

    def __init__(self, task: Task, data: str | os.PathLike, out: str | os.PathLike, device: str = "cpu", rank: int = 0, world: int = 1):
        self.task, self.data, self.out = task, os.fspath(data), os.fspath(out)
        self.device, self.rank, self.world = torch.device(device), rank, world
        s = task.schedule
        if s.threads:
            torch.set_num_threads(s.threads)
        elif s.data.workers and self.device.type == "cpu":  # the loader's processes take cores from the step
            from talkface.render.parallel import cores

            torch.set_num_threads(max(1, cores() - s.data.workers))
        torch.manual_seed(s.seed)
        self.stream = ShardStream(self.data, "train", s.data, seed=s.seed, rank=rank, world=world)
        task.build(self.device, rank, world)
        self.step = 0

    # -- checkpoints --------------------------------------------------------------------------
    def _positions(self) -> list[dict]:
        state = self.stream.state()
        if self.world == 1:
            return [state]
        import torch.distributed as dist

        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def save(self, path: str | None = None) -> str:
        """The checkpoint (every rank calls this; rank 0 writes it)."""
        positions = self._positions()
        path = path or os.path.join(self.out, "checkpoint.pt")
        if self.rank == 0:
            save_training_state(path, {"step": self.step, "streams": positions, **self.task.state()}, self.task.config())
        return path

    def resume(self, path: str | os.PathLike) -> None:
        s = load_training_state(path)
        streams = s.get("streams") or []
        if len(streams) != self.world:
            raise TalkfaceError(f"was written by {len(streams)} training processes, not {self.world}; resume it with as many", path)
        self.task.load_state(s)
        self.stream.seek(streams[self.rank])
        self.step = int(s["step"])

    # -- data ---------------------------------------------------------------------------------
    def batches(self, steps: int, positions: dict[int, dict] | None = None):
        """The loader of steps `self.step`..`steps`: (step, batch, unreadable [(shard, reason)]) in order, read
        ahead by `data.workers` processes; `positions[step]` is the stream's position after each step's samples."""
        s = self.task.schedule
        positions = {} if positions is None else positions

        def jobs():  # read ahead of training: its own cursor; the stream's position moves as steps are done
            epoch, offset = self.stream.epoch, self.stream.offset
            for step in range(self.step, steps):
                items, epoch, offset = self.stream.advance(epoch, offset, s.batch_size)
                positions[step] = {"epoch": epoch, "offset": offset}
                yield [(step, i, item) for i, item in enumerate(items)]

        workers = s.data.workers
        return torch.utils.data.DataLoader(
            _Samples(self.task.reader, s.seed, self.rank), batch_sampler=jobs(), collate_fn=_Collate(self.task.reader),
            num_workers=workers, multiprocessing_context="spawn" if workers else None, persistent_workers=False,
            prefetch_factor=2 if workers else None,
        )

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, steps: int | None = None, progress: bool = True, time_limit: float | None = None) -> None:
        """Train until step `steps` (default: the schedule's) or `time_limit` seconds, whichever first;
        then checkpoint and release."""
        s = self.task.schedule
        steps = s.steps if steps is None else steps
        main = self.rank == 0
        if main:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, "config.json"), "w") as f:
                json.dump(self.task.config(), f, indent=2)
        log = open(os.path.join(self.out, "metrics.jsonl"), "a") if main else None
        bar = tqdm(total=steps, initial=self.step, desc=self.task.name, disable=not (progress and main), dynamic_ncols=True)
        start = time.time()
        positions: dict[int, dict] = {}
        try:
            for step, batch, bad in self.batches(steps, positions):
                for path, reason in bad:
                    self.stream.mark_bad(path, reason)
                if batch is None:
                    raise TalkfaceError(f"no sample of the batch of step {step} could be read", self.data)
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                tick = time.time()
                losses = {k: float(v) for k, v in self.task.train_step(batch, step).items()}
                if not all(math.isfinite(v) for v in losses.values()):
                    raise FloatingPointError(f"non-finite loss at step {step}: {losses}")
                self.step = step + 1
                self.stream.seek(positions.pop(step))
                if main and (self.step % s.log_every == 0 or self.step == steps):
                    row = {"step": self.step, "seconds": round(time.time() - start, 1), "sec_per_step": round(time.time() - tick, 3),
                           **{k: round(v, 5) for k, v in losses.items()}}
                    if s.eval_every and self.step % s.eval_every == 0:
                        row.update(self.task.evaluate())
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix({k: f"{v:.3f}" for k, v in list(losses.items())[:3]})
                bar.update(1)
                if self.step % s.checkpoint_every == 0 and self.step < steps:
                    self.save()
                if time_limit is not None and self._stop(time.time() - start > time_limit):
                    break
        finally:
            bar.close()
            if log:
                log.close()
        self.save()
        if main:
            self.release()

    def _stop(self, mine: bool) -> bool:
        """Whether any rank wants to stop (ranks must stop at the same step)."""
        if self.world == 1:
            return mine
        import torch.distributed as dist

        flag = torch.tensor([float(mine)])
        dist.all_reduce(flag)
        return bool(flag.item())

    def seen(self) -> dict[str, str]:
        """What the model was trained on, for the release file's metadata and the model card: the
        training split's clips and speakers, and its hours (from the folder's report.json when it has
        them, else its frames at 25 fps)."""
        summary = self.stream.summary()
        hours = summary["frames"] / 25 / 3600
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError), open(os.path.join(self.data, "report.json")) as f:
            hours = float(json.load(f)["train"]["hours"])
        return {"steps": str(self.step), "clips": str(summary["clips"]), "speakers": str(summary["speakers"]), "hours": f"{hours:.3f}"}

    def release(self) -> dict[str, Any]:
        seen = self.seen()
        report = self.task.release(os.path.join(self.out, self.task.weights), seen)
        with open(os.path.join(self.out, "report.json"), "w") as f:
            json.dump({**seen, **report}, f, indent=2)
        return report
