"""The GAN tasks: one generator against a dict of named discriminators, with an EMA of the generator.

- `FramesTask`, the seed's GAN: the generator draws face frames from a still, speech and noise; a
  frame discriminator and a sequence discriminator (conditioned on the audio) judge them.
- `MotionTask`, the default model: speech and the noise generator give mouth and chin motion, judged
  by coordinates, their velocity and a sequence discriminator that sees the motion with its audio.

Both draw every random number from (seed, step, rank), so a resumed run is exact.
"""
from __future__ import annotations

import copy
import io
import json
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkface.checkpoint import save_release, unwrap
from talkface.config import Config
from talkface.data.motion import augment, blink_rate, face_targets, motion_targets, pose_targets, resample_motion
from talkface.data.shards import decode_frames, decode_wav
from talkface.media.audio import mfcc_windows, num_frames
from talkface.models import FrameDiscriminator, Generator, SequenceDiscriminator
from talkface.models.expression import POSE_UNIT, ExpressionDiscriminator, soft_blinks
from talkface.models.motion import MotionDiscriminator, MotionModel
from talkface.pixels import to_tensor
from talkface.training.loop import Schedule, lr_scale, set_lr


def seeded(*key: int) -> torch.Generator:
    """A torch generator seeded from integers, the same in every process (unlike `hash`)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def sequence_loss(logits: torch.Tensor) -> torch.Tensor:
    """Logits of [real, generated, real with another clip's audio] thirds: the critic also learns that
    real motion with the wrong audio is fake, so it judges sync."""
    b = len(logits) // 3
    return bce(logits[:b], True) + 0.5 * bce(logits[b : 2 * b], False) + 0.5 * bce(logits[2 * b :], False)


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


def ddp(module: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


# -- readers: one shard sample -> one example ---------------------------------------------------
class FramesReader:
    """A clip's frames and speech: still (H, W, 3), frames (T, H, W, 3) uint8, mfcc (T, n_mfcc, steps)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def example(self, sample: dict[str, bytes], rng: np.random.Generator) -> dict[str, np.ndarray] | None:
        cfg, t = self.cfg, self.cfg.train.clip_frames
        frames = decode_frames(sample["mp4"])
        if frames.shape[1:3] != (cfg.model.height, cfg.model.width):
            raise ValueError(f"holds {frames.shape[1]}x{frames.shape[2]} crops but the model makes {cfg.model.height}x{cfg.model.width} frames")
        mfcc = mfcc_windows(decode_wav(sample["wav"]), cfg.audio)
        n = min(len(frames), len(mfcc))
        if n < t:
            return None
        start = int(rng.integers(0, n - t + 1))
        return {"still": frames[int(rng.integers(0, n))], "frames": frames[start : start + t], "mfcc": mfcc[start : start + t]}

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        mfcc = torch.from_numpy(np.stack([e["mfcc"] for e in examples]).astype(np.float32))
        return {"still": to_tensor(np.stack([e["still"] for e in examples])), "frames": to_tensor(np.stack([e["frames"] for e in examples])),
                "mfcc": mfcc, "mfcc_other": mfcc.roll(1, 0)}


class MotionReader:
    """A clip's speech in one of its voices, the motion of its mouth and chin, and its lids and brows:
    mfcc (T, n_mfcc, steps) and motion (T, P, 2) of a crop; clip_mfcc, face (closure and brow per
    frame, and the head's pose when the network learns it: `data.motion.pose_targets`) and rate
    (blinks a minute) of the whole clip. The voice is the original or one of
    `augment.variants` variants, each drawn from (seed, clip, variant), so a clip always has the same
    few voices; they are kept in a small cache."""

    CACHE = 1024

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._cache: OrderedDict[tuple[str, int], tuple | None] = OrderedDict()

    def _voice(self, sample: dict[str, bytes], variant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
        cfg = self.cfg
        if "motion.npy" in sample:  # synthetic data carries its motion, lids and brows
            motion = np.load(io.BytesIO(sample["motion.npy"]), allow_pickle=False).astype(np.float32)
            face = np.load(io.BytesIO(sample["face.npy"]), allow_pickle=False).astype(np.float32) if "face.npy" in sample else np.zeros((len(motion), 2), np.float32)
            rate = blink_rate(face[:, 0], cfg.motion.expression.net.shut, cfg.audio.fps)
        else:
            lm = np.load(io.BytesIO(sample["npy"]), allow_pickle=False).astype(np.float32)
            fps = json.loads(sample["json"]).get("fps", cfg.audio.fps)
            if abs(fps - cfg.audio.fps) > 0.01 or np.isnan(lm).any() or len(lm) < 8:
                return None
            motion = motion_targets(lm)
            face, rate = face_targets(lm, cfg.motion.expression.net.shut, fps)
        if cfg.motion.expression.net.head:
            if "pose.npy" not in sample:
                raise ValueError("no head pose (pose.npy): cut the videos again with this talkface's preprocess")
            pose = pose_targets(np.load(io.BytesIO(sample["pose.npy"]), allow_pickle=False))
            n = min(len(face), len(pose))
            face = np.concatenate([face[:n], pose[:n]], -1)
        audio, speed = decode_wav(sample["wav"]), 1.0
        if variant:
            audio, speed = augment(audio, np.random.default_rng([self.cfg.train.seed, zlib.crc32(sample["__key__"].encode()), variant]), cfg.augment, cfg.audio.sample_rate)
        n = min(num_frames(len(audio), cfg.audio), int(len(motion) / speed))
        return mfcc_windows(audio, cfg.audio)[:n].astype(np.float16), resample_motion(motion, speed, n), resample_motion(face, speed, n), rate * speed

    def example(self, sample: dict[str, bytes], rng: np.random.Generator) -> dict[str, np.ndarray] | None:
        """A crop of `clip_frames` for the mouth; the whole clip for the upper face (blinks need time)."""
        variant = int(rng.integers(0, 1 + self.cfg.augment.variants))
        key = (sample["__key__"], variant)
        if key in self._cache:
            self._cache.move_to_end(key)
            voice = self._cache[key]
        else:
            voice = self._voice(sample, variant)
            self._cache[key] = voice
            if len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        if voice is None:
            return None
        mfcc, motion, face, rate = voice
        length = min(self.cfg.train.clip_frames, len(motion))
        start = int(rng.integers(0, len(motion) - length + 1))
        return {"mfcc": mfcc[start : start + length], "motion": motion[start : start + length], "clip_mfcc": mfcc, "face": face, "rate": np.float32(rate)}

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        t = min(len(e["motion"]) for e in examples)
        mfcc = torch.from_numpy(np.stack([e["mfcc"][:t] for e in examples]).astype(np.float32))
        n = min(len(e["face"]) for e in examples)
        return {"mfcc": mfcc, "motion": torch.from_numpy(np.stack([e["motion"][:t] for e in examples])), "mfcc_other": mfcc.roll(1, 0),
                "clip_mfcc": torch.from_numpy(np.stack([e["clip_mfcc"][:n] for e in examples]).astype(np.float32)),
                "face": torch.from_numpy(np.stack([e["face"][:n] for e in examples])),
                "rate": torch.from_numpy(np.stack([e["rate"] for e in examples]))}


# -- the tasks ------------------------------------------------------------------------------------
class GanTask:
    """G against named discriminators, with an EMA of G; subclasses give the networks and losses."""

    name = "train"
    weights = "generator.safetensors"

    def __init__(self, cfg: Config):
        t = cfg.train
        self.cfg = cfg
        self.schedule = Schedule(t.steps, t.batch_size, t.seed, t.log_every, t.checkpoint_every, cfg.data)
        self.world = 1

    def config(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def networks(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        raise NotImplementedError

    def build(self, device: torch.device, rank: int, world: int) -> None:
        self.device, self.rank, self.world = device, rank, world
        G, D = self.networks()
        self.G = G.to(device)
        self.ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.D = nn.ModuleDict(D).to(device)
        o = self.cfg.optim
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.g_lr, betas=o.betas)
        self.opt_d = {k: torch.optim.Adam(d.parameters(), lr=self.d_lr(k), betas=o.betas) for k, d in self.D.items()}
        if world > 1:
            self.G = ddp(self.G, device)
            self.D = nn.ModuleDict({k: ddp(d, device) for k, d in self.D.items()})
        self.amp = self.cfg.train.amp and device.type == "cuda"

    def d_lr(self, name: str) -> float:
        """The learning rate of the discriminator `name`."""
        return self.cfg.optim.d_lr

    def ema_decay(self, step: int) -> float:
        return min(self.cfg.train.ema_decay, (1 + step) / (10 + step))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def noise(self, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        b, t = batch["mfcc"].shape[:2]
        return unwrap(self.G).noise.sample(b, t, generator=seeded(self.cfg.train.seed, step, self.rank, 2)).to(self.device)

    def discriminator_phase(self, batch, fake, step) -> dict[str, torch.Tensor]:
        with self._autocast():
            return self.discriminator_losses(self.D, batch, fake, step)

    def generator_phase(self, batch, fake, step) -> dict[str, torch.Tensor]:
        """The generator losses against the frozen, unwrapped discriminators."""
        with self._autocast():
            return self.generator_losses({k: unwrap(d) for k, d in self.D.items()}, batch, fake, step)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        o = self.cfg.optim
        scale = lr_scale(step, self.cfg.train.steps, o.warmup_steps, cosine=False)
        set_lr(self.opt_g, o.g_lr * scale)
        for name, opt in self.opt_d.items():
            set_lr(opt, self.d_lr(name) * scale)
        with self._autocast():
            fake = self.forward(self.G, batch, step)

        self.D.train().requires_grad_(True)
        detached = {k: v.detach() for k, v in fake.items()} if isinstance(fake, dict) else fake.detach()
        d_losses = self.discriminator_phase(batch, detached, step)
        for opt in self.opt_d.values():
            opt.zero_grad(set_to_none=True)
        sum(d_losses.values()).backward()
        for name, opt in self.opt_d.items():
            nn.utils.clip_grad_norm_(self.D[name].parameters(), o.grad_clip)
            opt.step()

        self.D.eval().requires_grad_(False)  # frozen, BatchNorm statistics included
        g_losses = self.generator_phase(batch, fake, step)
        self.opt_g.zero_grad(set_to_none=True)
        sum(g_losses.values()).backward()
        nn.utils.clip_grad_norm_(self.G.parameters(), o.grad_clip)
        self.opt_g.step()
        if self.world > 1:
            average_buffers([self.G, *self.D.values()], self.world)
        self._update_ema(step)
        return {k: v.detach() for k, v in {**d_losses, **g_losses}.items()}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        d = self.ema_decay(step)
        g = unwrap(self.G)
        for pe, p in zip(self.ema.parameters(), g.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.ema.buffers(), g.buffers()):
            be.copy_(b)

    def state(self) -> dict[str, Any]:
        return {
            "generator": unwrap(self.G).state_dict(),
            "ema": self.ema.state_dict(),
            "discriminators": {k: unwrap(d).state_dict() for k, d in self.D.items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": {k: o.state_dict() for k, o in self.opt_d.items()},
        }

    def load_state(self, s: dict[str, Any]) -> None:
        unwrap(self.G).load_state_dict(s["generator"])
        self.ema.load_state_dict(s["ema"])
        for k, d in self.D.items():
            unwrap(d).load_state_dict(s["discriminators"][k])
        self.opt_g.load_state_dict(s["opt_g"])
        for k, o in self.opt_d.items():
            o.load_state_dict(s["opt_d"][k])

    def evaluate(self) -> dict[str, float]:
        return {}

    def release(self, path: str, meta: dict[str, str]) -> dict[str, Any]:
        save_release(path, self.ema, self.cfg, extra=meta)
        return {}


class FramesTask(GanTask):
    """The seed's GAN: the generator draws face frames; a frame and a sequence discriminator judge them."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.reader = FramesReader(cfg)
        self.l1_weights = lower_face_weights(cfg.model.height, cfg.loss.lower_face_weight)

    def networks(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        cfg = self.cfg
        return Generator(cfg), {"frame": FrameDiscriminator(cfg.model), "sequence": SequenceDiscriminator(cfg.audio, cfg.model)}

    def forward(self, G: nn.Module, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        return G(batch["still"], batch["mfcc"], self.noise(batch, step))

    def _sampled_frames(self, frames: torch.Tensor, step: int) -> torch.Tensor:
        """Frames drawn uniformly from each clip for the frame discriminator: (B * k, 3, H, W)."""
        b, t = frames.shape[:2]
        k = self.cfg.train.frames_per_clip_d
        idx = torch.randint(0, t, (b, k), generator=seeded(self.cfg.train.seed, step, self.rank, 1)).to(frames.device)
        return frames.gather(1, idx[:, :, None, None, None].expand(-1, -1, *frames.shape[2:])).flatten(0, 1)

    def discriminator_losses(self, D, batch, fake, step) -> dict[str, torch.Tensor]:
        """Real vs generated, each discriminator called once (real and fake batched, as DDP wants)."""
        still_k = batch["still"].repeat_interleave(self.cfg.train.frames_per_clip_d, 0)
        real_f, fake_f = self._sampled_frames(batch["frames"], step), self._sampled_frames(fake, step)
        n = len(real_f)
        frame_logits = D["frame"](torch.cat([real_f, fake_f]), torch.cat([still_k, still_k]))
        seq_logits = D["sequence"](
            torch.cat([batch["frames"], fake, batch["frames"]]),
            torch.cat([batch["mfcc"], batch["mfcc"], batch["mfcc_other"]]),
        )
        return {"d_frame": bce(frame_logits[:n], True) + bce(frame_logits[n:], False), "d_sequence": sequence_loss(seq_logits)}

    def generator_losses(self, D, batch, fake, step) -> dict[str, torch.Tensor]:
        """Adversarial terms from both (frozen) discriminators plus the weighted L1."""
        w = self.cfg.loss
        still_k = batch["still"].repeat_interleave(self.cfg.train.frames_per_clip_d, 0)
        adv_frame = bce(D["frame"](self._sampled_frames(fake, step), still_k), True)
        adv_seq = bce(D["sequence"](fake, batch["mfcc"]), True)
        l1 = ((fake.float() - batch["frames"]).abs() * self.l1_weights.to(fake.device)).mean()
        return {"g_frame_adv": w.frame_adv * adv_frame, "g_seq_adv": w.seq_adv * adv_seq, "g_l1": w.l1 * l1}


class MotionTask(GanTask):
    """The default model: speech -> mouth and chin motion, judged by coordinates, their velocity and a
    sequence discriminator that sees the motion with its audio (and real motion with another clip's
    audio); and the upper face (lid closure, brows, and the head's pose when learned) from the noise
    generator and the speech over whole clips, judged by its own sequence discriminator, by the spread
    of its values against the real ones and by the number of blinks against the real clip's."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.reader = MotionReader(cfg)
        self.net = cfg.motion.expression.net

    def networks(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        D = {"sequence": MotionDiscriminator(self.cfg)}
        if self.net.enabled:
            D["expression"] = ExpressionDiscriminator(self.net, self.cfg.audio)
        return MotionModel(self.cfg), D

    def d_lr(self, name: str) -> float:
        return self.net.d_lr if name == "expression" else self.cfg.optim.d_lr

    def forward(self, G: nn.Module, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        if not self.net.enabled:
            return {"motion": G(batch["mfcc"], self.noise(batch, step))}
        b, n = batch["clip_mfcc"].shape[:2]
        z = unwrap(G).expression.noise.sample(b, n, generator=seeded(self.cfg.train.seed, step, self.rank, 3)).to(self.device)
        motion, face = G(batch["mfcc"], self.noise(batch, step), face=(batch["clip_mfcc"], batch["rate"], z))
        return {"motion": motion, "face": face}

    def discriminator_losses(self, D, batch, fake, step) -> dict[str, torch.Tensor]:
        real = batch["motion"]
        logits = D["sequence"](torch.cat([real, fake["motion"], real]), torch.cat([batch["mfcc"], batch["mfcc"], batch["mfcc_other"]]))
        losses = {"d_sequence": sequence_loss(logits)}
        if "face" in fake:
            b = len(batch["face"])
            logits = D["expression"](torch.cat([batch["face"], fake["face"]]), torch.cat([batch["clip_mfcc"]] * 2), torch.cat([batch["rate"]] * 2))
            losses["d_expression"] = bce(logits[:b], True) + bce(logits[b:], False)
        return losses

    def generator_losses(self, D, batch, fake, step) -> dict[str, torch.Tensor]:
        w, real, motion = self.cfg.loss, batch["motion"], fake["motion"].float()
        coord = (motion - real).abs().mean()
        velocity = (motion.diff(dim=1) - real.diff(dim=1)).abs().mean()
        adv = bce(D["sequence"](motion, batch["mfcc"]), True)
        losses = {"g_coord": w.coord * coord, "g_velocity": w.velocity * velocity, "g_seq_adv": w.motion_adv * adv}
        if "face" in fake:
            net, face, real_face = self.net, fake["face"].float(), batch["face"]
            closure, real_closure = face[..., 0], real_face[..., 0]
            spread = (sorted_l1(closure, real_closure) + 3 * sorted_l1(closure.diff(dim=1), real_closure.diff(dim=1))
                      + sorted_l1(face[..., 1], real_face[..., 1]) / net.brow_range)
            for c, unit in enumerate(POSE_UNIT[: face.shape[-1] - 2], 2):  # the learned pose, from its clip's median as the real one
                pose, real_pose = face[..., c] - face[..., c].median(1, keepdim=True)[0], real_face[..., c]
                spread = spread + sorted_l1(pose, real_pose) / unit
                for lag in POSE_LAGS:  # its change over a frame, a fifth of a second and a second: how fast and how far it wanders
                    spread = spread + 3 * sorted_l1(pose[:, lag:] - pose[:, :-lag], real_pose[:, lag:] - real_pose[:, :-lag]) / unit / len(POSE_LAGS)
            losses["g_face_adv"] = net.adv * bce(D["expression"](face, batch["clip_mfcc"], batch["rate"]), True)
            losses["g_face_spread"] = net.spread * spread
            losses["g_blinks"] = net.count * (soft_blinks(closure) - soft_blinks(real_closure)).abs().mean()
        return losses

    def release(self, path: str, meta: dict[str, str]) -> dict[str, Any]:
        """The EMA's weights, the head's drive measured on a copy (the training state is left as it is, alike on every rank)."""
        model = self.ema
        if model.expression is not None:
            model = copy.deepcopy(model)
            model.expression.calibrate()
        save_release(path, model, self.cfg, extra=meta)
        return {}


POSE_LAGS = (1, 5, 25)  # frames


def sorted_l1(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The distance between two sets of values as distributions (1-D Wasserstein): their sorted values' mean difference."""
    return (fake.flatten().sort()[0] - real.flatten().sort()[0]).abs().mean()


def gan_task(cfg: Config) -> GanTask:
    """The task a config trains: the seed's frame GAN or the motion model (cfg.kind)."""
    return MotionTask(cfg) if cfg.kind == "motion" else FramesTask(cfg)
