"""The mouth refiner's task: the inside of the mouth that a warp cannot show, drawn over a motion model's warp.

Data: window shards (`data.refine.cut_windows`): a frame warped to the mouth shapes of 5 consecutive
frames of the same clip, next to the real frames. Losses on the redrawn crops:
- L1 to the real frames, weighted up inside the (dilated) mouth opening, and 1 - SSIM (luma);
- the seed's frame discriminator (crop + the still's crop), non-saturating;
- a lip-sync expert as a frozen loss on each 5-frame window with its speech (Wav2Lip's expert
  discriminator): it must not be the expert `evaluate` judges with, so that the judge stays
  independent of training (`talkface train-sync --set seed=1` trains another).
The same colour, gamma, blur and noise change is applied to a window's input, target and still. The
release is the motion model with the refiner in one file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from talkface.checkpoint import (
    build_generator,
    default_sync_expert,
    load_generator,
    load_sync_expert,
    save_release,
    unwrap,
)
from talkface.config import RefinerConfig, SyncConfig
from talkface.data.refine import RefineWindows, read_windows
from talkface.data.shards import decode_npz
from talkface.errors import TalkfaceError
from talkface.models.refiner import MouthRefiner, mouth_discriminator
from talkface.models.sync_expert import SyncExpert
from talkface.pixels import to_tensor
from talkface.render.refine import grey, luma, mouth_region
from talkface.training.gan import ddp
from talkface.training.loop import Schedule, lr_scale, set_lr

VAL_WINDOWS = 400  # held-out windows the error is measured on


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def loss_expert(path: str | os.PathLike) -> tuple[SyncExpert, SyncConfig]:
    """The lip-sync expert used as a loss, frozen; refused if it is the one `evaluate` judges with."""
    path = os.fspath(path)
    if os.path.isfile(path) and _digest(path) == _digest(default_sync_expert()):
        raise TalkfaceError("is the lip-sync expert that evaluate judges with; train another one for the loss (talkface train-sync --set seed=1)", path)
    expert, cfg = load_sync_expert(path)
    for p in expert.parameters():
        p.requires_grad_(False)
    return expert.float().eval(), cfg


def augment(rng: np.random.Generator, images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One random change applied alike to a window's images (..., H, W, 3) uint8 -> float32 0..255:
    colour gain and offset, gamma, blur, noise and a mirror; the masks (..., H, W) are mirrored with them."""
    gain = rng.uniform(0.75, 1.25, 3) * rng.uniform(0.8, 1.2)
    offset = rng.uniform(-20, 20, 3)
    gamma = rng.uniform(0.8, 1.25)
    sigma = rng.uniform(0.3, 1.2) if rng.random() < 0.3 else 0.0
    noise = rng.uniform(0, 6) if rng.random() < 0.3 else 0.0
    flip = rng.random() < 0.5
    out = []
    for g in images:
        x = g.astype(np.float32)
        if flip:
            x = x[..., ::-1, :]
        x = 255 * (np.clip(x * gain + offset, 0, 255) / 255) ** gamma
        if sigma:
            flat = x.reshape(-1, *x.shape[-3:])
            x = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in flat]).reshape(x.shape)
        if noise:
            x = x + rng.normal(0, noise, x.shape).astype(np.float32)
        out.append(np.clip(x, 0, 255))
    return out, [m[..., ::-1] if flip else m for m in masks]


class RefinerReader:
    """One window, augmented: warped, real (F, H, W, 3) and still (H, W, 3) float 0..255; opening and
    region (where the refiner's change is kept: `refine.mouth_region` of what the warp painted)
    (F, H, W) in [0, 1]; speech (F, n_mfcc, audio_steps), each frame's; mfcc (n_mfcc, steps), the
    middle frame's, for the expert."""

    def __init__(self, cfg: RefinerConfig):
        self.cfg = cfg

    def example(self, sample: dict[str, bytes], rng: np.random.Generator) -> dict[str, np.ndarray]:
        w = decode_npz(sample["npz"])
        (warped, real, still), (opening, painted) = augment(rng, [w["warped"], w["real"], w["still"]], [w["opening"], w["painted"]])
        region = np.stack([mouth_region(m.astype(np.float32) / 255, self.cfg) for m in painted])
        return {"warped": warped, "real": real, "still": still, "opening": opening.astype(np.float32) / 255, "region": region,
                "speech": w["speech"].astype(np.float32), "mfcc": w["mfcc"].astype(np.float32)}

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        stack = lambda k: np.stack([e[k] for e in examples])
        as_mask = lambda k: torch.from_numpy(np.ascontiguousarray(stack(k)))[:, :, None]
        return {"warped": to_tensor(stack("warped")), "real": to_tensor(stack("real")), "still": to_tensor(stack("still")),
                "opening": as_mask("opening"), "region": as_mask("region"),
                "speech": torch.from_numpy(stack("speech")), "mfcc": torch.from_numpy(stack("mfcc"))}


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of the luma of crops (N, 3, H, W) in [-1, 1], over `window` x `window` boxes."""
    x, y = (luma(a) + 1) / 2, (luma(b) + 1) / 2
    mean = lambda t: F.avg_pool2d(t, window, 1)
    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean()


def gray_half(crops: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, H, W) in [-1, 1] -> the expert's input (B, F, H/2, W/2): luma, halved by area."""
    return F.avg_pool2d(luma(crops)[:, :, 0], 2)


def refined(net: MouthRefiner, warped: torch.Tensor, opening: torch.Tensor, speech: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The crops as they are shown: the refiner's change, in luma, kept only in the mouth region (as `refine.Refinement` does)."""
    return warped + region * grey(net(warped, opening, speech) - warped)


def losses(net: MouthRefiner, disc, expert, batch: dict[str, torch.Tensor], cfg: RefinerConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The refiner's loss terms on a batch, and its output (B, F, 3, H, W)."""
    b, f = batch["warped"].shape[:2]
    flat = lambda x: x.flatten(0, 1)
    warped, real, opening = flat(batch["warped"]), flat(batch["real"]), flat(batch["opening"])
    out = refined(net, warped, opening, flat(batch["speech"]), flat(batch["region"]))
    weight = 1 + cfg.mouth_weight * F.max_pool2d(opening, 7, 1, 3)  # the opening and a few pixels around it
    parts = {"l1": ((out - real).abs() * weight).mean() / weight.mean(), "ssim": 1 - ssim(out, real)}
    still = batch["still"][:, None].expand(-1, f, -1, -1, -1).flatten(0, 1)
    parts["adv"] = F.softplus(-disc(out, still)).mean()
    video = expert.embed_video(gray_half(out.view(b, f, *out.shape[1:])))
    audio = expert.embed_audio(batch["mfcc"])
    parts["sync"] = F.softplus(-expert.logits(video, audio).diagonal()).mean()
    parts["total"] = cfg.l1 * parts["l1"] + cfg.ssim * parts["ssim"] + cfg.adv * parts["adv"] + cfg.sync * parts["sync"]
    return parts, out.view(b, f, *out.shape[1:])


def disc_loss(disc, real: torch.Tensor, fake: torch.Tensor, still: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss of the frame discriminator: real (N, 3, H, W) against fake, each with its still."""
    return F.softplus(-disc(real, still)).mean() + F.softplus(disc(fake, still)).mean()


def held_out_l1(net: MouthRefiner, data: RefineWindows, pool: np.ndarray, cfg: RefinerConfig) -> dict[str, float]:
    """Mean absolute error (0..255) to the real crops, whole crop and inside the opening, of the warp alone and refined."""
    sums = {"warp": [0.0, 0.0], "refined": [0.0, 0.0]}
    count = [0.0, 0.0]
    with torch.inference_mode():
        for i in range(0, len(pool), 8):
            idx = pool[i : i + 8]
            warped = to_tensor(data.warped[idx]).flatten(0, 1)
            real = to_tensor(data.real[idx]).flatten(0, 1)
            flat = lambda x: x.reshape(-1, *x.shape[2:]).astype(np.float32) / 255
            opening = torch.from_numpy(flat(data.opening[idx]))[:, None]
            region = torch.from_numpy(np.stack([mouth_region(m, cfg) for m in flat(data.painted[idx])]))[:, None]
            speech = torch.from_numpy(data.speech[idx]).float().flatten(0, 1)
            shown = refined(net, warped, opening, speech, region)
            mouth = (F.max_pool2d(opening, 7, 1, 3) > 0.5).float()
            for name, x in (("warp", warped), ("refined", shown)):
                err = (x - real).abs().mean(1, keepdim=True) * 127.5
                sums[name][0] += float(err.sum())
                sums[name][1] += float((err * mouth).sum())
            count[0] += float(real[:, :1].numel())
            count[1] += float(mouth.sum())
    return {f"{name}_{part}": round(v[k] / max(count[k], 1), 3) for name, v in sums.items() for k, part in enumerate(("crop", "mouth"))}


class RefinerTask:
    """Trains a `MouthRefiner` (and its discriminator) for the motion model in `motion`."""

    name = "train-refiner"
    weights = "generator.safetensors"

    def __init__(self, cfg: RefinerConfig, motion: str, expert: SyncExpert, data: str):
        self.cfg, self.motion, self.expert, self.data = cfg, os.fspath(motion), expert, data
        self.schedule = Schedule(cfg.steps, cfg.batch_size, cfg.seed, cfg.log_every, cfg.checkpoint_every, cfg.data,
                                 eval_every=cfg.eval_every, threads=cfg.threads)
        self.reader = RefinerReader(cfg)
        self.generator, self.full = load_generator(self.motion)
        if self.full.kind != "motion":
            raise TalkfaceError("is not a motion model (the refiner draws over its warp)", self.motion)
        self._val: RefineWindows | None | bool = False

    def config(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.cfg), "motion": self.motion}

    def build(self, device: torch.device, rank: int, world: int) -> None:
        cfg = self.cfg
        self.net, self.disc = MouthRefiner(cfg, self.full.audio).to(device), mouth_discriminator(cfg).to(device)
        self.expert = self.expert.to(device)
        self.opt_g = torch.optim.Adam(self.net.parameters(), lr=cfg.g_lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
        if world > 1:
            self.net, self.disc = ddp(self.net, device), ddp(self.disc, device)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if batch["speech"].shape[2:] != unwrap(self.net).speech_shape:
            raise TalkfaceError(f"has MFCC settings the training windows were not cut with ({unwrap(self.net).speech_shape} per frame, "
                                f"windows {tuple(batch['speech'].shape[2:])})", self.motion)
        set_lr(self.opt_g, cfg.g_lr * lr_scale(step, cfg.steps, 100, cosine=True))
        self.net.train()
        parts, made = losses(self.net, self.disc, self.expert, batch, cfg)
        self.opt_g.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
        self.opt_g.step()
        still = batch["still"][:, None].expand_as(batch["real"]).flatten(0, 1)
        d = disc_loss(self.disc, batch["real"].flatten(0, 1), made.detach().flatten(0, 1), still)
        self.opt_d.zero_grad(set_to_none=True)
        d.backward()
        self.opt_d.step()
        return {"d": d.detach(), **{k: v.detach() for k, v in parts.items()}}

    def state(self) -> dict[str, Any]:
        return {"refiner": unwrap(self.net).state_dict(), "discriminator": unwrap(self.disc).state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        unwrap(self.net).load_state_dict(state["refiner"])
        unwrap(self.disc).load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def evaluate(self) -> dict[str, float]:
        """Mean absolute error to the real crops of the held-out windows: the warp alone and refined."""
        if self._val is False:
            self._val = read_windows(self.data, "val", VAL_WINDOWS)
        if self._val is None:
            return {}
        net = unwrap(self.net).eval()
        scores = held_out_l1(net, self._val, np.arange(len(self._val)), self.cfg)
        net.train()
        return scores

    def release(self, path: str, meta: dict[str, str]) -> dict[str, Any]:
        """The motion model with this refiner (one it had is replaced), and the held-out error."""
        net = unwrap(self.net).eval().cpu()
        full = dataclasses.replace(self.full)
        full.motion.refiner = dataclasses.replace(self.cfg, enabled=True)
        model = build_generator(full)
        state = {k: v for k, v in self.generator.state_dict().items() if not k.startswith("refiner.")}
        model.load_state_dict({**state, **{f"refiner.{k}": v for k, v in net.state_dict().items()}})
        save_release(path, model.eval(), full, extra={**meta, "refiner_steps": meta["steps"]})
        return {"windows": int(meta["clips"]), **self.evaluate()}
