"""The GAN trainer: named phases, one generator against a dict of discriminators, EMA, exact resume.

Everything random in a step (which clips, which frames, the noise) is drawn from generators seeded
by (seed, step, rank), and the learning rate is a pure function of the step, so a run that is
stopped and resumed ends with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from talkface.checkpoint import load_training_state, save_release, save_training_state, unwrap
from talkface.config import Config
from talkface.devices import pick_device
from talkface.models import FrameDiscriminator, Generator, SequenceDiscriminator
from talkface.models.motion import MotionDiscriminator, MotionModel
from talkface.pixels import to_tensor


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


class ClipDataset(Protocol):
    """Random access to clips (a stream instead offers `clips_for_step(step, count)`)."""

    def __len__(self) -> int: ...

    def clip(self, i: int) -> dict[str, np.ndarray]:
        """frames (T, H, W, 3) uint8 and mfcc (T, n_mfcc, steps) float32."""
        ...


def draw_batch(dataset: ClipDataset, cfg: Config, step: int, rank: int = 0) -> dict[str, torch.Tensor]:
    """The batch of `step` for `rank`: a pure function of (seed, step, rank).

    Returns still (B, 3, H, W), frames (B, T, 3, H, W), mfcc (B, T, n_mfcc, steps) and
    `mfcc_other`, each clip's audio swapped for another clip's (the sync negatives).
    """
    t = cfg.train
    rng = np.random.default_rng([t.seed, step, rank])
    stills, frames, mfccs = [], [], []
    if hasattr(dataset, "clips_for_step"):  # a stream: clips in reading order
        clips = dataset.clips_for_step(step, t.batch_size)
    else:
        clips = [dataset.clip(int(i)) for i in rng.integers(0, len(dataset), t.batch_size)]
    for clip in clips:
        n = len(clip["frames"])
        start = int(rng.integers(0, n - t.clip_frames + 1))
        frames.append(clip["frames"][start : start + t.clip_frames])
        mfccs.append(clip["mfcc"][start : start + t.clip_frames])
        stills.append(clip["frames"][int(rng.integers(0, n))])
    mfcc = torch.from_numpy(np.stack(mfccs))
    return {
        "still": to_tensor(np.stack(stills)),
        "frames": to_tensor(np.stack(frames)),
        "mfcc": mfcc,
        "mfcc_other": mfcc.roll(1, 0),
    }


def draw_motion_batch(dataset, cfg: Config, step: int, rank: int = 0) -> dict[str, torch.Tensor]:
    """The motion batch of `step` for `rank`, a pure function of (seed, step, rank): mfcc
    (B, T, n_mfcc, steps), motion (B, T, P, 2) and `mfcc_other` (another clip's audio: sync negatives).
    Each clip is drawn in one of its voice variants; T is `clip_frames` or the shortest clip drawn."""
    t = cfg.train
    rng = np.random.default_rng([t.seed, step, rank])
    picks = [dataset.clip(int(i), int(rng.integers(0, dataset.variants))) for i in rng.integers(0, len(dataset), t.batch_size)]
    length = min([t.clip_frames] + [len(p["motion"]) for p in picks])
    mfccs, motions = [], []
    for p in picks:
        start = int(rng.integers(0, len(p["motion"]) - length + 1))
        mfccs.append(p["mfcc"][start : start + length])
        motions.append(p["motion"][start : start + length])
    mfcc = torch.from_numpy(np.stack(mfccs).astype(np.float32))
    return {"mfcc": mfcc, "motion": torch.from_numpy(np.stack(motions).astype(np.float32)), "mfcc_other": mfcc.roll(1, 0)}


def seeded(*key: int) -> torch.Generator:
    """A torch generator seeded from integers, the same in every process (unlike `hash`)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def lower_face_weights(height: int, lower: float) -> torch.Tensor:
    """Per-row L1 weights (1, 1, 1, H, 1): 1 on the upper half, `lower` below, mean 1."""
    w = torch.ones(height)
    w[height // 2 :] = lower
    return (w / w.mean()).view(1, 1, 1, height, 1)


@torch.no_grad()
def average_buffers(modules: list[nn.Module], world: int) -> None:
    """Each rank's BatchNorm saw its own batch: average the running statistics across ranks."""
    import torch.distributed as dist

    for m in modules:
        for b in unwrap(m).buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b.div_(world)


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


class FrameTask:
    """The seed's GAN: the generator draws face frames; a frame and a sequence discriminator judge them."""

    def __init__(self, cfg: Config, device: torch.device, rank: int):
        self.cfg, self.device, self.rank = cfg, device, rank
        self.l1_weights = lower_face_weights(cfg.model.height, cfg.loss.lower_face_weight).to(device)

    def networks(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        cfg = self.cfg
        return Generator(cfg), {"frame": FrameDiscriminator(cfg.model), "sequence": SequenceDiscriminator(cfg.audio, cfg.model)}

    def draw(self, dataset, step: int) -> dict[str, torch.Tensor]:
        return draw_batch(dataset, self.cfg, step, self.rank)

    def forward(self, G: nn.Module, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        b, t = batch["mfcc"].shape[:2]
        z = unwrap(G).noise.sample(b, t, generator=seeded(self.cfg.train.seed, step, self.rank, 2)).to(self.device)
        return G(batch["still"], batch["mfcc"], z)

    def _sampled_frames(self, frames: torch.Tensor, step: int) -> torch.Tensor:
        """Frames drawn uniformly from each clip for the frame discriminator: (B * k, 3, H, W)."""
        b, t = frames.shape[:2]
        k = self.cfg.train.frames_per_clip_d
        g = seeded(self.cfg.train.seed, step, self.rank, 1)
        idx = torch.randint(0, t, (b, k), generator=g).to(frames.device)
        return frames.gather(1, idx[:, :, None, None, None].expand(-1, -1, *frames.shape[2:])).flatten(0, 1)

    def discriminator_losses(self, D, batch: dict[str, torch.Tensor], fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Real vs generated, each discriminator called once (real and fake batched, as DDP wants)."""
        still_k = batch["still"].repeat_interleave(self.cfg.train.frames_per_clip_d, 0)
        real_f, fake_f = self._sampled_frames(batch["frames"], step), self._sampled_frames(fake, step)
        n = len(real_f)
        frame_logits = D["frame"](torch.cat([real_f, fake_f]), torch.cat([still_k, still_k]))
        seq_logits = D["sequence"](
            torch.cat([batch["frames"], fake, batch["frames"]]),
            torch.cat([batch["mfcc"], batch["mfcc"], batch["mfcc_other"]]),
        )
        d_frame = bce(frame_logits[:n], True) + bce(frame_logits[n:], False)
        return {"d_frame": d_frame, "d_sequence": sequence_loss(seq_logits)}

    def generator_losses(self, D, batch: dict[str, torch.Tensor], fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Adversarial terms from both (frozen) discriminators plus the weighted L1."""
        w = self.cfg.loss
        still_k = batch["still"].repeat_interleave(self.cfg.train.frames_per_clip_d, 0)
        adv_frame = bce(D["frame"](self._sampled_frames(fake, step), still_k), True)
        adv_seq = bce(D["sequence"](fake, batch["mfcc"]), True)
        l1 = ((fake.float() - batch["frames"]).abs() * self.l1_weights).mean()
        return {"g_frame_adv": w.frame_adv * adv_frame, "g_seq_adv": w.seq_adv * adv_seq, "g_l1": w.l1 * l1}


class MotionTask:
    """The default model: speech -> mouth and chin motion, judged by coordinates, their velocity and a
    sequence discriminator that sees the motion with its audio (and real motion with another clip's audio)."""

    def __init__(self, cfg: Config, device: torch.device, rank: int):
        self.cfg, self.device, self.rank = cfg, device, rank

    def networks(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        return MotionModel(self.cfg), {"sequence": MotionDiscriminator(self.cfg)}

    def draw(self, dataset, step: int) -> dict[str, torch.Tensor]:
        return draw_motion_batch(dataset, self.cfg, step, self.rank)

    def forward(self, G: nn.Module, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        b, t = batch["mfcc"].shape[:2]
        z = unwrap(G).noise.sample(b, t, generator=seeded(self.cfg.train.seed, step, self.rank, 2)).to(self.device)
        return G(batch["mfcc"], z)

    def discriminator_losses(self, D, batch: dict[str, torch.Tensor], fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        real = batch["motion"]
        logits = D["sequence"](torch.cat([real, fake, real]), torch.cat([batch["mfcc"], batch["mfcc"], batch["mfcc_other"]]))
        return {"d_sequence": sequence_loss(logits)}

    def generator_losses(self, D, batch: dict[str, torch.Tensor], fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        w, real, fake = self.cfg.loss, batch["motion"], fake.float()
        coord = (fake - real).abs().mean()
        velocity = (fake.diff(dim=1) - real.diff(dim=1)).abs().mean()
        adv = bce(D["sequence"](fake, batch["mfcc"]), True)
        return {"g_coord": w.coord * coord, "g_velocity": w.velocity * velocity, "g_seq_adv": w.motion_adv * adv}


def sequence_loss(logits: torch.Tensor) -> torch.Tensor:
    """Logits of [real, generated, real with another clip's audio] thirds: the critic also learns that
    real motion with the wrong audio is fake, so it judges sync."""
    b = len(logits) // 3
    return bce(logits[:b], True) + 0.5 * bce(logits[b : 2 * b], False) + 0.5 * bce(logits[2 * b :], False)


TASKS = {"frames": FrameTask, "motion": MotionTask}


class Trainer:
    """Trains G against a dict of named discriminators (the task's: cfg.kind picks the seed's frame GAN
    or the motion model); writes metrics.jsonl, checkpoints and releases to `out`."""

    def __init__(self, cfg: Config, dataset: ClipDataset, out: str | os.PathLike, device: str = "cpu", rank: int = 0, world: int = 1):
        self.cfg, self.dataset, self.out = cfg, dataset, os.fspath(out)
        self.device, self.rank, self.world = torch.device(device), rank, world
        torch.manual_seed(cfg.train.seed)
        self.task = TASKS[cfg.kind](cfg, self.device, rank)
        G, D = self.task.networks()
        self.G = G.to(self.device)
        self.ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.D = nn.ModuleDict(D).to(self.device)
        o = cfg.optim
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.g_lr, betas=o.betas)
        self.opt_d = {k: torch.optim.Adam(d.parameters(), lr=o.d_lr, betas=o.betas) for k, d in self.D.items()}
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G = DDP(self.G, device_ids=ids)
            self.D = nn.ModuleDict({k: DDP(d, device_ids=ids) for k, d in self.D.items()})
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.step = 0

    # -- schedules: pure functions of the step ------------------------------------------------
    def lr_scale(self, step: int) -> float:
        w = self.cfg.optim.warmup_steps
        return min(1.0, (step + 1) / w) if w > 0 else 1.0

    def ema_decay(self, step: int) -> float:
        return min(self.cfg.train.ema_decay, (1 + step) / (10 + step))

    # -- phases -------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def discriminator_phase(self, batch: dict[str, torch.Tensor], fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        with self._autocast():
            return self.task.discriminator_losses(self.D, batch, fake, step)

    def generator_phase(self, batch: dict[str, torch.Tensor], fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """The task's generator losses against the frozen, unwrapped discriminators."""
        with self._autocast():
            return self.task.generator_losses({k: unwrap(d) for k, d in self.D.items()}, batch, fake, step)

    def train_step(self) -> dict[str, float]:
        step = self.step
        batch = {k: v.to(self.device, non_blocking=True) for k, v in self.task.draw(self.dataset, step).items()}
        scale = self.lr_scale(step)
        for opt, base in [(self.opt_g, self.cfg.optim.g_lr)] + [(o, self.cfg.optim.d_lr) for o in self.opt_d.values()]:
            for group in opt.param_groups:
                group["lr"] = base * scale

        with self._autocast():
            fake = self.task.forward(self.G, batch, step)

        self.D.train().requires_grad_(True)
        d_losses = self.discriminator_phase(batch, fake.detach(), step)
        for opt in self.opt_d.values():
            opt.zero_grad(set_to_none=True)
        sum(d_losses.values()).backward()
        for name, opt in self.opt_d.items():
            nn.utils.clip_grad_norm_(self.D[name].parameters(), self.cfg.optim.grad_clip)
            opt.step()

        self.D.eval().requires_grad_(False)  # frozen, BatchNorm statistics included
        g_losses = self.generator_phase(batch, fake, step)
        self.opt_g.zero_grad(set_to_none=True)
        sum(g_losses.values()).backward()
        nn.utils.clip_grad_norm_(self.G.parameters(), self.cfg.optim.grad_clip)
        self.opt_g.step()
        if self.world > 1:
            average_buffers([self.G, *self.D.values()], self.world)
        self._update_ema(step)
        self.step += 1
        return {k: float(v.detach()) for k, v in {**d_losses, **g_losses}.items()}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        d = self.ema_decay(step)
        g = unwrap(self.G)
        for pe, p in zip(self.ema.parameters(), g.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.ema.buffers(), g.buffers()):
            be.copy_(b)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, steps: int | None = None, progress: bool = True, time_limit: float | None = None) -> None:
        """Train until step `steps` (default: cfg.train.steps) or `time_limit` seconds, whichever first."""
        t = self.cfg.train
        steps = t.steps if steps is None else steps
        main = self.rank == 0
        if main:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, "config.json"), "w") as f:
                json.dump(self.cfg.to_dict(), f, indent=2)
        log = open(os.path.join(self.out, "metrics.jsonl"), "a") if main else None
        bar = tqdm(total=steps, initial=self.step, desc="train", disable=not (progress and main), dynamic_ncols=True)
        start = time.time()
        try:
            while self.step < steps:
                tick = time.time()
                losses = self.train_step()
                if not all(math.isfinite(v) for v in losses.values()):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {losses}")
                if main and (self.step % t.log_every == 0 or self.step == steps):
                    log.write(json.dumps({"step": self.step, "lr_g": self.opt_g.param_groups[0]["lr"], "sec_per_step": time.time() - tick, **losses}) + "\n")
                    log.flush()
                    bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k in ("d_frame", "d_sequence", "g_l1")})
                bar.update(1)
                if main and self.step % t.checkpoint_every == 0:
                    self.save()
                if time_limit is not None and time.time() - start > time_limit:
                    break
        finally:
            bar.close()
            if log:
                log.close()
        if main:
            self.save()
            save_release(os.path.join(self.out, "generator.safetensors"), self.ema, self.cfg, extra={"steps": str(self.step)})

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "generator": unwrap(self.G).state_dict(),
            "ema": self.ema.state_dict(),
            "discriminators": {k: unwrap(d).state_dict() for k, d in self.D.items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": {k: o.state_dict() for k, o in self.opt_d.items()},
        }

    def save(self, path: str | os.PathLike | None = None) -> str:
        path = os.fspath(path or os.path.join(self.out, "checkpoint.pt"))
        save_training_state(path, self.state(), self.cfg)
        return path

    def resume(self, path: str | os.PathLike) -> None:
        s = load_training_state(path)
        unwrap(self.G).load_state_dict(s["generator"])
        self.ema.load_state_dict(s["ema"])
        for k, d in self.D.items():
            unwrap(d).load_state_dict(s["discriminators"][k])
        self.opt_g.load_state_dict(s["opt_g"])
        for k, o in self.opt_d.items():
            o.load_state_dict(s["opt_d"][k])
        self.step = int(s["step"])
