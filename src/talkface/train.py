"""The GAN trainer: named phases, one generator against a dict of discriminators, EMA, exact resume.

Everything random in a step (which clips, which frames, the noise) is drawn from generators seeded
by (seed, step, rank), and the learning rate is a pure function of the step, so a run that is
stopped and resumed ends with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from talkface.checkpoint import load_training_state, save_release, save_training_state, unwrap
from talkface.config import Config
from talkface.models import FrameDiscriminator, Generator, SequenceDiscriminator
from talkface.pixels import to_tensor


class ClipDataset(Protocol):
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
    for i in rng.integers(0, len(dataset), t.batch_size):
        clip = dataset.clip(int(i))
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


def seeded(*key: int) -> torch.Generator:
    """A torch generator seeded from integers, the same in every process (unlike `hash`)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def lower_face_weights(height: int, lower: float) -> torch.Tensor:
    """Per-row L1 weights (1, 1, 1, H, 1): 1 on the upper half, `lower` below, mean 1."""
    w = torch.ones(height)
    w[height // 2 :] = lower
    return (w / w.mean()).view(1, 1, 1, height, 1)


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


class Trainer:
    """Trains G against D = {'frame', 'sequence'}; writes metrics.jsonl, checkpoints and releases to `out`."""

    def __init__(self, cfg: Config, dataset: ClipDataset, out: str | os.PathLike, device: str = "cpu", rank: int = 0, world: int = 1):
        self.cfg, self.dataset, self.out = cfg, dataset, os.fspath(out)
        self.device, self.rank, self.world = torch.device(device), rank, world
        torch.manual_seed(cfg.train.seed)
        self.G = Generator(cfg).to(self.device)
        self.ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.D = nn.ModuleDict(
            {"frame": FrameDiscriminator(cfg.model), "sequence": SequenceDiscriminator(cfg.audio, cfg.model)}
        ).to(self.device)
        o = cfg.optim
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.g_lr, betas=o.betas)
        self.opt_d = {k: torch.optim.Adam(d.parameters(), lr=o.d_lr, betas=o.betas) for k, d in self.D.items()}
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G = DDP(self.G, device_ids=ids)
            self.D = nn.ModuleDict({k: DDP(d, device_ids=ids) for k, d in self.D.items()})
        self.l1_weights = lower_face_weights(cfg.model.height, cfg.loss.lower_face_weight).to(self.device)
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

    def _sampled_frames(self, frames: torch.Tensor, step: int) -> torch.Tensor:
        """Frames drawn uniformly from each clip for the frame discriminator: (B * k, 3, H, W)."""
        b, t = frames.shape[:2]
        k = self.cfg.train.frames_per_clip_d
        g = seeded(self.cfg.train.seed, step, self.rank, 1)
        idx = torch.randint(0, t, (b, k), generator=g).to(frames.device)
        return frames.gather(1, idx[:, :, None, None, None].expand(-1, -1, *frames.shape[2:])).flatten(0, 1)

    def discriminator_phase(self, batch: dict[str, torch.Tensor], fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        still_k = batch["still"].repeat_interleave(self.cfg.train.frames_per_clip_d, 0)
        real_f, fake_f = self._sampled_frames(batch["frames"], step), self._sampled_frames(fake, step)
        with self._autocast():
            d_frame = bce(self.D["frame"](real_f, still_k), True) + bce(self.D["frame"](fake_f, still_k), False)
            d_seq = (
                bce(self.D["sequence"](batch["frames"], batch["mfcc"]), True)
                + 0.5 * bce(self.D["sequence"](fake, batch["mfcc"]), False)
                + 0.5 * bce(self.D["sequence"](batch["frames"], batch["mfcc_other"]), False)
            )
        return {"d_frame": d_frame, "d_sequence": d_seq}

    def generator_phase(self, batch: dict[str, torch.Tensor], fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        w = self.cfg.loss
        still_k = batch["still"].repeat_interleave(self.cfg.train.frames_per_clip_d, 0)
        with self._autocast():
            adv_frame = bce(self.D["frame"](self._sampled_frames(fake, step), still_k), True)
            adv_seq = bce(self.D["sequence"](fake, batch["mfcc"]), True)
        l1 = ((fake.float() - batch["frames"]).abs() * self.l1_weights).mean()
        return {"g_frame_adv": w.frame_adv * adv_frame, "g_seq_adv": w.seq_adv * adv_seq, "g_l1": w.l1 * l1}

    def train_step(self) -> dict[str, float]:
        step = self.step
        batch = {k: v.to(self.device, non_blocking=True) for k, v in draw_batch(self.dataset, self.cfg, step, self.rank).items()}
        g = seeded(self.cfg.train.seed, step, self.rank, 2)
        b, t = batch["mfcc"].shape[:2]
        z = unwrap(self.G).noise.sample(b, t, generator=g).to(self.device)
        scale = self.lr_scale(step)
        for opt, base in [(self.opt_g, self.cfg.optim.g_lr)] + [(o, self.cfg.optim.d_lr) for o in self.opt_d.values()]:
            for group in opt.param_groups:
                group["lr"] = base * scale

        with self._autocast():
            fake = self.G(batch["still"], batch["mfcc"], z)

        self.D.requires_grad_(True)
        d_losses = self.discriminator_phase(batch, fake.detach(), step)
        for opt in self.opt_d.values():
            opt.zero_grad(set_to_none=True)
        sum(d_losses.values()).backward()
        for name, opt in self.opt_d.items():
            nn.utils.clip_grad_norm_(self.D[name].parameters(), self.cfg.optim.grad_clip)
            opt.step()

        self.D.requires_grad_(False)
        g_losses = self.generator_phase(batch, fake, step)
        self.opt_g.zero_grad(set_to_none=True)
        sum(g_losses.values()).backward()
        nn.utils.clip_grad_norm_(self.G.parameters(), self.cfg.optim.grad_clip)
        self.opt_g.step()
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
