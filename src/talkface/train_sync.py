"""Training the lip-sync expert: contrastive, in-sync pairs against shifted and other-clip audio.

Each step draws one 5-frame window from each of `batch_size` distinct clips, with its in-sync
audio and the same clip's audio shifted by `min_shift`..`max_offset` frames. Every video window is
scored against all 2 x batch audio windows with a sigmoid loss (only its own in-sync audio is a
positive), so it learns both "which clip" and "which moment". Batches are a pure function of
(seed, step).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from talkface.checkpoint import save_sync_expert
from talkface.config import SyncConfig
from talkface.data.mouths import MouthClips
from talkface.media.audio import MFCC_SCALE
from talkface.metrics.sync import SILENCE_DB, audio_slice, curve_scores, embed, offset_distances
from talkface.models.sync_expert import SyncExpert

EVAL_SHIFT = 5  # shifted pairs in the held-out test are at least this many frames off


def usable_length(clips: MouthClips, i: int) -> int:
    return min(len(clips.mouths[i]), len(clips.mfcc[i]))


def draw_batch(clips: MouthClips, cfg: SyncConfig, step: int) -> dict[str, torch.Tensor]:
    """mouths (B, frames, h, w) in [-1, 1] (randomly shifted, flipped, lit), audio (B, n_mfcc, steps)
    in sync, and shifted (B, n_mfcc, steps) from the same clip `min_shift`..`max_offset` frames away."""
    rng = np.random.default_rng([cfg.seed, step])
    b, f, m = cfg.batch_size, cfg.frames, cfg.margin
    h, w = cfg.crop_height, cfg.crop_width
    chosen = rng.choice(len(clips), b, replace=len(clips) < b)
    mouths, audio, shifted = [], [], []
    for i in chosen:
        n = usable_length(clips, int(i))
        t = int(rng.integers(0, n - f + 1))
        centre = t + f // 2
        shifts = [s * k for k in range(cfg.min_shift, cfg.max_offset + 1) for s in (1, -1) if 0 <= centre + s * k < n]
        k = int(rng.choice(shifts))
        dy, dx = rng.integers(0, 2 * m + 1, 2)
        crop = clips.mouths[i][t : t + f, dy : dy + h, dx : dx + w].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        crop = crop * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
        mouths.append(np.clip(crop, 0, 255) / 127.5 - 1)
        audio.append(audio_slice(clips.mfcc[i][centre], cfg.audio_steps))
        shifted.append(audio_slice(clips.mfcc[i][centre + k], cfg.audio_steps))
    as_tensor = lambda x: torch.from_numpy(np.ascontiguousarray(np.stack(x), np.float32))
    return {"mouths": as_tensor(mouths), "audio": as_tensor(audio), "shifted": as_tensor(shifted)}


def contrastive_loss(expert: SyncExpert, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sigmoid loss over all (video, audio) pairs; also how often in-sync beats shifted."""
    v = expert.embed_video(batch["mouths"])
    a = expert.embed_audio(torch.cat([batch["audio"], batch["shifted"]]))
    logits = expert.logits(v, a)
    b = len(v)
    labels = torch.zeros_like(logits)
    labels[:, :b] = torch.eye(b)
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / b
    ranked = (logits[:, :b].diagonal() > logits[:, b:].diagonal()).float().mean()
    return {"loss": loss, "ranked": ranked}


def speech_frames(windows: np.ndarray, n_mels: int, db: float = SILENCE_DB) -> np.ndarray:
    """Frames with speech (T,) bool, read from MFCC windows: c0 of the columns at each frame's centre
    is the mean log-mel energy (x sqrt(n_mels)); speech is within |db| of the clip's loud frames."""
    cols = windows.shape[-1] // 2 + np.arange(-2, 2)
    energy = windows[:, 0, cols].mean(-1) / MFCC_SCALE / np.sqrt(n_mels)  # dB
    return energy > np.percentile(energy, 95) + db


def pair_distances(expert: SyncExpert, clips: MouthClips, seed: int = 0, every: int = 3) -> dict[str, np.ndarray]:
    """Distances of in-sync and shifted (by EVAL_SHIFT..max_offset frames) pairs: windows every
    `every` frames of every clip, unaugmented (centre crop), one shifted pair per window; and
    whether both of a pair's audio windows are centred on speech (silence cannot tell a shift)."""
    cfg = expert.cfg
    rng = np.random.default_rng(seed)
    m, f = cfg.margin, cfg.frames
    pos, neg, speech = [], [], []
    for i in range(len(clips)):
        n = usable_length(clips, i)
        mouths = clips.mouths[i][:n, m : m + cfg.crop_height, m : m + cfg.crop_width]
        video, audio = embed(expert, mouths, clips.mfcc[i][:n])
        voiced = speech_frames(clips.mfcc[i][:n], cfg.audio.n_mels)
        for t in range(0, n - f + 1, every):
            c = t + f // 2
            shifts = [s * k for k in range(EVAL_SHIFT, cfg.max_offset + 1) for s in (1, -1) if 0 <= c + s * k < n]
            k = int(rng.choice(shifts))
            pos.append(float(SyncExpert.distance(video[t], audio[c])))
            neg.append(float(SyncExpert.distance(video[t], audio[c + k])))
            speech.append(bool(voiced[c] and voiced[c + k]))
    return {"pos": np.array(pos), "neg": np.array(neg), "speech": np.array(speech)}


def best_threshold(pos: np.ndarray, neg: np.ndarray) -> float:
    """The distance threshold that best separates in-sync (below) from shifted (above) pairs."""
    candidates = np.unique(np.concatenate([pos, neg]))
    acc = [(np.mean(pos < c) + np.mean(neg >= c)) / 2 for c in candidates]
    return float(candidates[int(np.argmax(acc))])


def clip_offsets(expert: SyncExpert, clips: MouthClips, shift: int) -> np.ndarray:
    """The offset the sync metric finds in every clip when its audio is delayed by `shift` frames."""
    cfg = expert.cfg
    m, found = cfg.margin, []
    for i in range(len(clips)):
        n = usable_length(clips, i)
        mouths = clips.mouths[i][:n, m : m + cfg.crop_height, m : m + cfg.crop_width]
        video, audio = embed(expert, mouths, clips.mfcc[i][:n])
        found.append(curve_scores(offset_distances(video, audio, cfg.frames // 2, cfg.max_offset, shift), cfg.max_offset).offset)
    return np.array(found)


def assess(expert: SyncExpert, train: MouthClips, val: MouthClips, calibration_clips: int = 200) -> dict[str, float]:
    """Held-out accuracy: pairs in sync vs shifted by >= 5 frames, classified by a distance
    threshold fitted on training clips (all pairs, and pairs where both audio windows are speech);
    and how often the clip-level offset is right (+-1 frame)."""
    calib = pair_distances(expert, train.subset(range(min(calibration_clips, len(train)))), seed=1)
    held = pair_distances(expert, val, seed=2)
    report: dict[str, float] = {"clips": len(val)}
    for name, pick in (("all", lambda d: np.ones(len(d["pos"]), bool)), ("speech", lambda d: d["speech"])):
        cp, hp = pick(calib), pick(held)
        threshold = best_threshold(calib["pos"][cp], calib["neg"][cp])
        pos, neg = held["pos"][hp], held["neg"][hp]
        report.update({
            f"{name}_pairs": int(2 * hp.sum()),
            f"{name}_threshold": threshold,
            f"{name}_pair_accuracy": float((np.mean(pos < threshold) + np.mean(neg >= threshold)) / 2),
            f"{name}_in_sync_accuracy": float(np.mean(pos < threshold)),
            f"{name}_shifted_accuracy": float(np.mean(neg >= threshold)),
            f"{name}_ranking_accuracy": float(np.mean(pos < neg)),
            f"{name}_mean_distance_in_sync": float(pos.mean()),
            f"{name}_mean_distance_shifted": float(neg.mean()),
        })
    in_sync, late = clip_offsets(expert, val, 0), clip_offsets(expert, val, EVAL_SHIFT)
    report["offset_accuracy_in_sync"] = float(np.mean(np.abs(in_sync) <= 1))
    report[f"offset_accuracy_shifted_{EVAL_SHIFT}"] = float(np.mean(np.abs(late - EVAL_SHIFT) <= 1))
    return report


def train_sync_expert(cfg: SyncConfig, clips: MouthClips, out: str | os.PathLike, progress: bool = True) -> dict[str, float]:
    """Train on all but the last `val_clips` clips, assess on those, write the weights and a report to `out`."""
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    train, val = clips.split(cfg.val_clips)
    expert = SyncExpert(cfg)
    opt = torch.optim.AdamW(expert.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + np.cos(np.pi * min(s, cfg.steps) / cfg.steps)))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2)
    log = open(os.path.join(out, "metrics.jsonl"), "w")
    bar = tqdm(total=cfg.steps, desc="train-sync", disable=not progress, dynamic_ncols=True)
    start, step = time.time(), 0
    try:
        expert.train()
        while step < cfg.steps:
            parts = contrastive_loss(expert, draw_batch(train, cfg, step))
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            sched.step()
            step += 1
            if not torch.isfinite(parts["loss"]):
                raise FloatingPointError(f"non-finite loss at step {step}")
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "seconds": round(time.time() - start, 1), **{k: round(float(v.detach()), 4) for k, v in parts.items()}}
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{row['loss']:.3f}", ranked=f"{row['ranked']:.2f}")
            bar.update(1)
            if cfg.time_limit_s and time.time() - start > cfg.time_limit_s:
                break
    finally:
        bar.close()
        log.close()
    seconds = time.time() - start
    expert.eval()
    save_sync_expert(os.path.join(out, "sync_expert.safetensors"), expert, cfg, extra={"steps": str(step), "train_seconds": f"{seconds:.0f}"})
    # assess the weights exactly as shipped (float16 round trip)
    from talkface.checkpoint import load_sync_expert

    shipped, _ = load_sync_expert(os.path.join(out, "sync_expert.safetensors"))
    report = {"steps": step, "train_seconds": round(seconds, 1), "train_clips": len(train), **assess(shipped, train, val)}
    with open(os.path.join(out, "assessment.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
