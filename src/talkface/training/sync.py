"""The lip-sync expert's task: contrastive, in-sync pairs against shifted and other-clip audio.

Each sample of its shards (`data.mouths.cut_mouths`) is one video's mouth crops and MFCC windows.
An example is one 5-frame window of a clip, randomly shifted, flipped and lit, with its in-sync
audio and the same clip's audio shifted by `min_shift`..`max_offset` frames. Every video window of a
batch is scored against all 2 x batch audio windows with a sigmoid loss (only its own in-sync audio
is a positive), so it learns both "which clip" and "which moment". At the end the weights, as
shipped (float16), are assessed on the held-out split.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from talkface.checkpoint import load_sync_expert, save_sync_expert
from talkface.config import SyncConfig
from talkface.data.mouths import MouthClips
from talkface.data.shards import decode_npz, read_sample, shard_index, shard_paths
from talkface.media.audio import MFCC_SCALE
from talkface.metrics.sync import (
    SILENCE_DB,
    audio_slice,
    curve_scores,
    embed,
    offset_distances,
)
from talkface.models.sync_expert import SyncExpert
from talkface.training.gan import ddp
from talkface.training.loop import Schedule, lr_scale, set_lr

EVAL_SHIFT = 5  # shifted pairs in the held-out test are at least this many frames off
CALIBRATION_CLIPS = 200  # training clips the assessment's distance threshold is fitted on


class SyncReader:
    """mouths (frames, h, w) in [-1, 1], audio and shifted (n_mfcc, audio_steps) from one clip."""

    def __init__(self, cfg: SyncConfig):
        self.cfg = cfg

    def example(self, sample: dict[str, bytes], rng: np.random.Generator) -> dict[str, np.ndarray] | None:
        cfg = self.cfg
        arrays = decode_npz(sample["npz"])
        clip_mouths, clip_mfcc = arrays["mouths"], arrays["mfcc"].astype(np.float32)
        f, m, h, w = cfg.frames, cfg.margin, cfg.crop_height, cfg.crop_width
        n = min(len(clip_mouths), len(clip_mfcc))
        if n < f + cfg.min_shift:
            return None
        t = int(rng.integers(0, n - f + 1))
        centre = t + f // 2
        shifts = [s * k for k in range(cfg.min_shift, cfg.max_offset + 1) for s in (1, -1) if 0 <= centre + s * k < n]
        if not shifts:
            return None
        k = int(rng.choice(shifts))
        dy, dx = rng.integers(0, 2 * m + 1, 2)
        crop = clip_mouths[t : t + f, dy : dy + h, dx : dx + w].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        crop = crop * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
        return {"mouths": np.clip(crop, 0, 255) / 127.5 - 1, "audio": audio_slice(clip_mfcc[centre], cfg.audio_steps),
                "shifted": audio_slice(clip_mfcc[centre + k], cfg.audio_steps)}

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(np.stack([e[k] for e in examples]), np.float32)) for k in examples[0]}


class SyncTask:
    """Trains a `SyncExpert`; its release is the expert's weights and `assessment.json`."""

    name = "train-sync"
    weights = "sync_expert.safetensors"

    def __init__(self, cfg: SyncConfig, data: str):
        self.cfg, self.data = cfg, data
        self.schedule = Schedule(cfg.steps, cfg.batch_size, cfg.seed, cfg.log_every, cfg.checkpoint_every, cfg.data, threads=cfg.threads)
        self.reader = SyncReader(cfg)

    def config(self) -> dict[str, Any]:
        return self.cfg.to_dict()

    def build(self, device: torch.device, rank: int, world: int) -> None:
        self.expert = SyncExpert(self.cfg).to(device).train()
        self.opt = torch.optim.AdamW(self.expert.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.net = ddp(self.expert, device) if world > 1 else self.expert

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        set_lr(self.opt, self.cfg.lr * lr_scale(step, self.cfg.steps, 100, cosine=True))
        parts = contrastive_loss(self.net, batch)
        self.opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.opt.step()
        return {k: v.detach() for k, v in parts.items()}

    def state(self) -> dict[str, Any]:
        return {"expert": self.expert.state_dict(), "opt": self.opt.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.expert.load_state_dict(state["expert"])
        self.opt.load_state_dict(state["opt"])

    def evaluate(self) -> dict[str, float]:
        return {}

    def release(self, path: str, meta: dict[str, str]) -> dict[str, Any]:
        """The weights (float16), then the assessment of exactly those weights on the held-out split."""
        self.expert.eval()
        save_sync_expert(path, self.expert, self.cfg, extra=meta)
        shipped, _ = load_sync_expert(path)
        train, val = read_mouth_split(self.data, "train", CALIBRATION_CLIPS), read_mouth_split(self.data, "val")
        report = {"steps": int(meta["steps"]), "train_clips": int(meta["clips"])}
        report.update(assess(shipped, train, val) if len(val) else {"clips": 0, "assessment": "none: the data set holds no held-out clips"})
        with open(os.path.join(os.path.dirname(path), "assessment.json"), "w") as f:
            json.dump(report, f, indent=2)
        return report


def read_mouth_split(root: str, split: str, limit: int | None = None) -> MouthClips:
    """Up to `limit` clips of one split of mouth shards, in memory (for the assessment)."""
    ids, mouths, mfcc = [], [], []
    for path in shard_paths(root, split):
        for entry in shard_index(path):
            if limit is not None and len(ids) >= limit:
                return MouthClips(ids, mouths, mfcc)
            arrays = decode_npz(read_sample(path, entry)["npz"])
            ids.append(entry["key"])
            mouths.append(arrays["mouths"])
            mfcc.append(arrays["mfcc"].astype(np.float32))
    return MouthClips(ids, mouths, mfcc)


def usable_length(clips: MouthClips, i: int) -> int:
    return min(len(clips.mouths[i]), len(clips.mfcc[i]))


def contrastive_loss(expert, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sigmoid loss over all (video, audio) pairs; also how often in-sync beats shifted."""
    logits = expert(batch["mouths"], torch.cat([batch["audio"], batch["shifted"]]), pairs=True)
    b = len(logits)
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


