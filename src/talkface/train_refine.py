"""Training the mouth refiner on top of a motion model: the inside of the mouth that a warp cannot show.

Data: `data.refine` windows (a frame warped to the mouth shapes of 5 consecutive frames of the same
clip, next to the real frames). Losses on the redrawn crops:
- L1 to the real frames, weighted up inside the (dilated) mouth opening, and 1 - SSIM (luma);
- the seed's frame discriminator (crop + the still's crop), non-saturating;
- a lip-sync expert as a frozen loss on each 5-frame window with its speech (Wav2Lip's expert
  discriminator): it must not be the expert `evaluate` judges with, so that the judge stays
  independent of training (`talkface train-sync --set seed=1` trains another).
The same colour, gamma, blur and noise change is applied to a window's input, target and still.
Batches are a pure function of (seed, step). The result is the motion model with the refiner in one
release file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from talkface.checkpoint import build_generator, default_sync_expert, load_generator, load_sync_expert, save_release
from talkface.config import RefinerConfig, SyncConfig
from talkface.data.refine import RefineWindows
from talkface.errors import TalkfaceError
from talkface.models.refiner import MouthRefiner, mouth_discriminator
from talkface.models.sync_expert import SyncExpert
from talkface.pixels import to_tensor
from talkface.render.refine import grey, luma, mouth_region


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


def draw_batch(data: RefineWindows, cfg: RefinerConfig, step: int, pool: np.ndarray) -> dict[str, torch.Tensor]:
    """warped, real (B, F, 3, H, W) and still (B, 3, H, W) in [-1, 1]; opening and region (where the refiner's
    change is kept: `refine.mouth_region` of what the warp painted) (B, F, 1, H, W) in [0, 1]; speech
    (B, F, n_mfcc, audio_steps), each frame's; mfcc (B, n_mfcc, steps), the middle frame's for the expert."""
    rng = np.random.default_rng([cfg.seed, step])
    picks = rng.choice(pool, cfg.batch_size, replace=len(pool) < cfg.batch_size)
    warped, real, still, opening, region = [], [], [], [], []
    for i in picks:
        (w, r, s), (o, p) = augment(rng, [data.warped[i], data.real[i], data.still[i]], [data.opening[i], data.painted[i]])
        region.append(np.stack([mouth_region(m.astype(np.float32) / 255, cfg) for m in p]))
        warped.append(w), real.append(r), still.append(s), opening.append(o.astype(np.float32) / 255)
    as_image = lambda x: to_tensor(np.stack(x))  # noqa: E731
    as_mask = lambda x: torch.from_numpy(np.ascontiguousarray(np.stack(x)))[:, :, None]  # noqa: E731
    return {
        "warped": as_image(warped),
        "real": as_image(real),
        "still": as_image(still),
        "opening": as_mask(opening),
        "region": as_mask(region),
        "speech": torch.from_numpy(data.speech[picks]).float(),
        "mfcc": torch.from_numpy(data.mfcc[picks]).float(),
    }


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of the luma of crops (N, 3, H, W) in [-1, 1], over `window` x `window` boxes."""
    x, y = (luma(a) + 1) / 2, (luma(b) + 1) / 2
    mean = lambda t: F.avg_pool2d(t, window, 1)  # noqa: E731
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
    flat = lambda x: x.flatten(0, 1)  # noqa: E731
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
            flat = lambda x: x.reshape(-1, *x.shape[2:]).astype(np.float32) / 255  # noqa: E731
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


def train_refiner(motion: str | os.PathLike, data: RefineWindows, expert: SyncExpert, cfg: RefinerConfig,
                  out: str | os.PathLike, progress: bool = True, val_fraction: float = 0.05) -> dict:
    """Train a refiner for the motion model in `motion`, with `expert` (from `loss_expert`) as the sync
    loss; writes `out`/generator.safetensors (the motion model with its refiner), config.json,
    metrics.jsonl and report.json. Returns the report."""
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    generator, full = load_generator(motion)
    if full.kind != "motion":
        raise TalkfaceError("is not a motion model (the refiner draws over its warp)", motion)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    net, disc = MouthRefiner(cfg, full.audio), mouth_discriminator(cfg)
    if data.speech.shape[2:] != net.speech_shape:
        raise TalkfaceError(f"has MFCC settings the training windows were not cut with ({net.speech_shape} per frame, windows {data.speech.shape[2:]})", motion)
    opt_g = torch.optim.Adam(net.parameters(), lr=cfg.g_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=(0.5, 0.999))
    warm = lambda s: min(1.0, (s + 1) / 100)  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: warm(s) * 0.5 * (1 + np.cos(np.pi * min(s, cfg.steps) / cfg.steps)))
    n_val = max(1, int(len(data) * val_fraction))
    train_pool, val_pool = np.arange(len(data) - n_val), np.arange(len(data) - n_val, len(data))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
    log = open(os.path.join(out, "metrics.jsonl"), "w")
    bar = tqdm(total=cfg.steps, desc="train-refiner", disable=not progress, dynamic_ncols=True)
    start = time.time()
    try:
        for step in range(1, cfg.steps + 1):
            batch = draw_batch(data, cfg, step, train_pool)
            net.train()
            parts, made = losses(net, disc, expert, batch, cfg)
            opt_g.zero_grad(set_to_none=True)
            parts["total"].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt_g.step()
            sched.step()
            still = batch["still"][:, None].expand_as(batch["real"]).flatten(0, 1)
            d = disc_loss(disc, batch["real"].flatten(0, 1), made.detach().flatten(0, 1), still)
            opt_d.zero_grad(set_to_none=True)
            d.backward()
            opt_d.step()
            if not torch.isfinite(parts["total"]):
                raise FloatingPointError(f"non-finite loss at step {step}")
            if step % 50 == 0 or step == cfg.steps:
                row = {"step": step, "seconds": round(time.time() - start, 1), "d": round(float(d.detach()), 4),
                       **{k: round(float(v.detach()), 4) for k, v in parts.items()}}
                if step % 250 == 0 or step == cfg.steps:
                    net.eval()
                    row.update(held_out_l1(net, data, val_pool, cfg))
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(l1=f"{row['l1']:.3f}", sync=f"{row['sync']:.2f}")
            bar.update(1)
    finally:
        bar.close()
        log.close()
    net.eval()
    full.motion.refiner = dataclasses.replace(cfg, enabled=True)
    model = build_generator(full)
    state = {k: v for k, v in generator.state_dict().items() if not k.startswith("refiner.")}  # a refiner it had is replaced
    model.load_state_dict({**state, **{f"refiner.{k}": v for k, v in net.state_dict().items()}})
    seconds = time.time() - start
    save_release(os.path.join(out, "generator.safetensors"), model.eval(), full, extra={"refiner_steps": str(cfg.steps), "refiner_seconds": f"{seconds:.0f}"})
    report = {"steps": cfg.steps, "train_seconds": round(seconds, 1), "windows": len(data), **held_out_l1(net, data, val_pool, cfg)}
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
