"""Training benchmarks: the loader, the step, memory against data size, and resume.

    python benchmarks/training.py loader [--tasks motion sync tiny refiner] [--workers 0 1 2] [--batches 12]
    python benchmarks/training.py steps [--tasks motion tiny paper sync refiner] [--steps 5] [--device cuda]
    python benchmarks/training.py memory [--tasks motion sync refiner] [--clips 1000] [--windows 300] [--scale 10] [--workers 1]
    python benchmarks/training.py resume [--resume-clips 64]
    python benchmarks/training.py all [--threads 1]

Each part prints a table and one JSON line per figure. The synthetic data sets they read
(`talkface.data.synthetic`, `talkface.data.mouths`) are written once under --work and reused.
- loader: clips/s that `Trainer.batches` delivers, no training, with data.workers = 0, 1, 2, for the
  motion task (75-frame motion clips), the sync expert (mouth clips), the frames task (`tiny`) and
  the mouth refiner (5-frame windows), timed after one warm-up batch (which starts the loader processes).
- steps: seconds per training step on one batch read once, so that only the step is timed (the
  median of --steps steps after --warmup ones).
- memory: peak RSS of a fresh process (and of its loader processes) training while it streams a small
  and a scale x larger set, each read through once: the `motion` preset on N = --clips motion clips of
  75 frames (GRID's 3 s sentences), the sync expert (default SyncConfig) on N mouth clips of 75 frames,
  and the mouth refiner on N = --windows 5-frame windows (default 300) at a reduced size (MEMORY_REFINER:
  32x64 crops, half the channels). GRID's 3,528 windows at the default 64x128 hold 1.2 GB; ten times
  that at full size would take about two hours of steps to read through on two cores.
- resume: seconds from `Trainer(...)` and `.resume()` to the end of the first step, in a fresh
  process, for checkpoints after 1 step, 1 epoch and 10 epochs of the `motion` preset (trained for
  real on a small set), and how many samples were read before that step.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from talkface.checkpoint import save_release
from talkface.config import RefinerConfig, SyncConfig, override, preset
from talkface.data.cut import Sample, write_group, write_report
from talkface.data.mouths import synthetic_clips
from talkface.data.refine import AUDIO_STEPS
from talkface.data.shards import ShardWriter, encode_npz
from talkface.data.stream import ShardStream
from talkface.data.synthetic import write_synthetic_shards
from talkface.models.motion import MotionModel
from talkface.models.sync_expert import SyncExpert
from talkface.training import loop
from talkface.training.gan import gan_task
from talkface.training.loop import Trainer, read_batch
from talkface.training.refiner import RefinerTask
from talkface.training.sync import SyncTask

CLIP_FRAMES = 75  # GRID's 3 s sentences at 25 fps
SPEAKERS = 33  # GRID's speakers
PER_SHARD = 50
VAL_MOUTHS = 16  # held-out mouth clips: the sync expert's release assesses itself on them
DISTINCT_MOUTHS = 1000  # mouth clips drawn for a set; larger sets reuse them, shifted in time
WINDOWS_PER_SHARD = 400  # `data.refine.cut_windows`: 50 videos a group, 8 windows each
# the refiner in the memory part: crops of 32x64 (the default's 64x128 halved) and half its channels,
# so that 10 x 300 windows are read through in minutes on two CPU cores
MEMORY_REFINER = ["height=32", "width=64", "channels=(8,16,32,48,64)", "dim=32", "disc_channels=(8,16,32,64)"]


# -- data sets, written once under --work -------------------------------------------------------
def motion_set(work: str, clips: int, speakers: int = SPEAKERS) -> str:
    out = os.path.join(work, f"motion-{clips}x{CLIP_FRAMES}-{speakers}")
    return write_synthetic_shards(out, preset("motion"), clips, CLIP_FRAMES, speakers=speakers, per_shard=PER_SHARD)


def frames_set(work: str, name: str) -> str:
    """Face clips at the preset's size: 64 GRID-length clips for `tiny`, one batch of short ones for `paper`."""
    clips, frames = (64, CLIP_FRAMES) if name == "tiny" else (8, 24)
    return write_synthetic_shards(os.path.join(work, f"frames-{name}-{clips}x{frames}"), preset(name), clips, frames, speakers=8)


def mouth_set(work: str, clips: int = 128) -> str:
    """Mouth clips for the sync expert, laid out as `data.mouths.cut_mouths` writes them (PER_SHARD clips a
    group, each clip its own speaker): `clips` to train on (one default batch is 128) and VAL_MOUTHS held out.
    At most DISTINCT_MOUTHS clips are drawn (0.1 s each); clip i is clip i % DISTINCT_MOUTHS of those,
    mouths and speech rolled together by i // DISTINCT_MOUTHS frames, so that a large set is written in
    minutes and still reads as a set of different samples."""
    out = os.path.join(work, f"mouths-{clips}x{CLIP_FRAMES}")
    if os.path.isfile(os.path.join(out, "report.json")):
        return out
    total = clips + VAL_MOUTHS
    drawn = synthetic_clips(SyncConfig(), min(total, DISTINCT_MOUTHS), CLIP_FRAMES)
    part = out + ".part"
    shutil.rmtree(part, ignore_errors=True)
    for sub in ("train", "val", "groups"):
        os.makedirs(os.path.join(part, sub))
    for group, first in enumerate(range(0, total, PER_SHARD)):
        keys, samples = [], []
        for i in range(first, min(first + PER_SHARD, total)):
            j, shift = i % len(drawn), i // len(drawn)
            key = f"synthetic{i:05d}"
            npz = encode_npz({"mouths": np.roll(drawn.mouths[j], shift, 0), "mfcc": np.roll(drawn.mfcc[j], shift, 0).astype(np.float16)})
            keys.append(key)
            samples.append([Sample("val" if i >= clips else "train", key, {"npz": npz}, key, CLIP_FRAMES)])
        write_group(part, group, keys, samples)
    write_report(part, "mouths", single_speaker=False)
    os.rename(part, out)
    return out


def window_set(work: str, windows: int = 64, cfg: RefinerConfig | None = None) -> str:
    """Refiner windows at `cfg`'s crop size (default: the default RefinerConfig's), laid out as
    `data.refine.cut_windows` writes them: flat skin, a dark opening of random height, the real frame
    showing teeth in its upper half; `windows` to train on, in shards of WINDOWS_PER_SHARD, and 8 held out."""
    cfg, n_mfcc = cfg or RefinerConfig(), preset("motion").audio.n_mfcc
    f, h, w = cfg.window, cfg.height, cfg.width
    default = (h, w) == (RefinerConfig().height, RefinerConfig().width)
    out = os.path.join(work, f"windows-{windows}" if default else f"windows-{windows}-{h}x{w}")
    if os.path.isdir(out):
        return out
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:h, 0:w]
    part = out + ".part"
    shutil.rmtree(part, ignore_errors=True)
    for split, count in (("train", windows), ("val", 8)):
        os.makedirs(os.path.join(part, split))
        writer = None
        for i in range(count):
            if i % WINDOWS_PER_SHARD == 0:
                if writer is not None:
                    writer.close()
                writer = ShardWriter(os.path.join(part, split, f"{i // WINDOWS_PER_SHARD:06d}.tar"))
            gap = rng.uniform(0.08, 0.3, (f, 1, 1)) * h
            opening = ((((xs - w / 2) / (0.3 * w)) ** 2 + ((ys - h / 2) / gap) ** 2) < 1).astype(np.uint8) * 255
            skin = rng.uniform(120, 200, 3) - (opening[..., None] > 0) * 100.0
            warped = np.clip(skin + rng.normal(0, 3, (f, h, w, 3)), 0, 255).astype(np.uint8)
            real = warped.copy()
            real[(opening > 0) & (ys < h / 2)] = 230
            window = {"warped": warped, "real": real, "opening": opening, "painted": opening.copy(), "still": warped[0].copy(),
                      "speech": rng.normal(0, 1, (f, n_mfcc, cfg.audio_steps)).astype(np.float32),
                      "mfcc": rng.normal(0, 1, (n_mfcc, AUDIO_STEPS)).astype(np.float32)}
            writer.add(f"w{i:05d}", {"npz": encode_npz(window)}, speaker="s", frames=f)
        writer.close()
    os.rename(part, out)
    return out


def motion_release(work: str) -> str:
    """An untrained `motion` preset's release file: the model a refiner draws over."""
    path = os.path.join(work, "motion-untrained.safetensors")
    if not os.path.isfile(path):
        cfg = preset("motion")
        torch.manual_seed(0)
        save_release(path, MotionModel(cfg).eval(), cfg)
    return path


def frozen_expert(cfg: RefinerConfig | None = None) -> SyncExpert:
    """A lip-sync expert as the refiner's loss: untrained (the step costs the same), frozen; it sees
    the refiner's crops halved, so its crop is half `cfg`'s (the default RefinerConfig's: the default SyncConfig's)."""
    cfg = cfg or RefinerConfig()
    torch.manual_seed(1)
    return SyncExpert(SyncConfig(seed=1, crop_height=cfg.height // 2, crop_width=cfg.width // 2)).requires_grad_(False).eval()


def make_task(name: str, work: str, sets: list[str] = (), threads: int | None = None):
    """(task, data folder) for a task name: a config preset, 'sync' (the default SyncConfig) or 'refiner'
    (the default RefinerConfig); `threads` overrides the torch threads the sync and refiner configs set."""
    sets = list(sets)
    if name in ("sync", "refiner") and threads:
        sets.append(f"threads={threads}")
    if name == "sync":
        data = mouth_set(work)
        return SyncTask(override(SyncConfig(), sets), data), data
    if name == "refiner":
        data = window_set(work)
        return RefinerTask(override(RefinerConfig(), sets), motion_release(work), frozen_expert(), data), data
    cfg = override(preset(name), sets)
    return gan_task(cfg), motion_set(work, 1000) if cfg.kind == "motion" else frames_set(work, name)


# -- output -------------------------------------------------------------------------------------
def report(part: str, rows: list[dict], columns: list[str]) -> None:
    """A table of `columns`, then each row as a JSON line."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(f"\n{part}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    for r in rows:
        print(json.dumps({"part": part, **r}))
    sys.stdout.flush()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # kilobytes on Linux


class ChildPeaks:
    """The largest VmHWM (peak RSS of its own program) of this process's child processes, read every
    `every` seconds while they run. `ru_maxrss` of children cannot tell this: a child started by fork
    and exec keeps the parent's resident size at the fork as its peak."""

    def __init__(self, every: float = 0.2):
        import threading

        self.mb, self.every, self.done = 0.0, every, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(self.every):
            for pid in self._children():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        hwm = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
                except (OSError, ValueError):
                    continue
                self.mb = max(self.mb, round(hwm / 1024, 1))

    @staticmethod
    def _children() -> list[str]:
        pids = []
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids += f.read().split()
            except OSError:
                pass
        return pids

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return self.mb


def child(args: argparse.Namespace, *extra: str) -> dict:
    """Runs this script's hidden subcommand `extra` in a fresh process; its last line, as JSON."""
    threads = ["--threads", str(args.threads_set)] if args.threads_set else []  # else torch's, or the sync and refiner configs' own
    cmd = [sys.executable, os.path.abspath(__file__), *extra, "--work", args.work, "--device", args.device, *threads]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- 1. the loader ------------------------------------------------------------------------------
def loader(args: argparse.Namespace) -> None:
    rows = []
    for name in args.tasks:
        for workers in args.workers:
            task, data = make_task(name, args.work, [f"data.workers={workers}"], args.threads_set)
            with tempfile.TemporaryDirectory() as out:
                trainer = Trainer(task, data, out)
                batches = iter(trainer.batches(args.batches + 1))
                next(batches)
                start = time.perf_counter()
                count = sum(1 for _ in batches)
                seconds = time.perf_counter() - start
            b = task.schedule.batch_size
            rows.append({"task": name, "workers": workers, "batch": b, "batches": count, "seconds": round(seconds, 2),
                         "clips_per_sec": round(count * b / seconds, 1)})
            torch.set_num_threads(args.threads)  # the sync task sets its own
    report("loader", rows, ["task", "workers", "batch", "batches", "seconds", "clips_per_sec"])


# -- 2. the step --------------------------------------------------------------------------------
def steps(args: argparse.Namespace) -> None:
    rows = []
    for name in args.tasks:
        task, data = make_task(name, args.work, threads=args.threads_set)
        s = task.schedule
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(task, data, out, device=args.device)
            batch, _ = read_batch(task.reader, trainer.stream.take(s.batch_size), s.seed, 0)
            batch = {k: v.to(trainer.device) for k, v in batch.items()}
            for step in range(args.warmup):
                task.train_step(batch, step)
            times = []
            for step in range(args.warmup, args.warmup + args.steps):
                synchronize(args.device)
                start = time.perf_counter()
                task.train_step(batch, step)
                synchronize(args.device)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)  # a shared machine's bursts move the mean, not the median
        frames = {"sync": "mouths", "refiner": "warped"}.get(name, "mfcc")
        frames = batch[frames].shape[1]
        rows.append({"task": name, "device": args.device, "threads": torch.get_num_threads(), "batch": s.batch_size,
                     "frames": frames, "sec_per_step": round(seconds, 3), "fastest": round(min(times), 3), "steps_per_sec": round(1 / seconds, 2),
                     "clips_per_sec": round(s.batch_size / seconds, 1)})
        torch.set_num_threads(args.threads)
    report("steps", rows, ["task", "device", "threads", "batch", "frames", "sec_per_step", "fastest", "steps_per_sec", "clips_per_sec"])


# -- 3. memory against data size ----------------------------------------------------------------
def memory_sets(args: argparse.Namespace, name: str) -> list[tuple[int, str]]:
    """(training samples, data folder) of the small and the large set a task is measured on."""
    if name == "refiner":
        return [(n, window_set(args.work, n, override(RefinerConfig(), MEMORY_REFINER))) for n in (args.windows, args.windows * args.scale)]
    make = motion_set if name == "motion" else mouth_set
    return [(n, make(args.work, n)) for n in (args.clips, args.clips * args.scale)]


def memory_data(name: str) -> str:
    """What the memory part's sets of a task hold, and what was trained on them."""
    if name == "motion":
        return f"{CLIP_FRAMES}-frame motion clips, {SPEAKERS} speakers; the `motion` preset"
    if name == "sync":
        return f"{CLIP_FRAMES}-frame mouth clips, {VAL_MOUTHS} more held out; the default SyncConfig"
    cfg = override(RefinerConfig(), MEMORY_REFINER)
    return (f"{cfg.window}-frame windows at {cfg.height}x{cfg.width}, 8 more held out; RefinerConfig with {' '.join(MEMORY_REFINER)}, "
            f"its lip-sync expert (untrained, frozen) on {cfg.height // 2}x{cfg.width // 2} crops")


def memory(args: argparse.Namespace) -> None:
    rows = []
    for name in args.tasks:
        for samples, data in memory_sets(args, name):
            more = ["--train-steps", str(args.train_steps)] if args.train_steps else []
            r = child(args, "_train", "--task", name, "--data", data, "--workers", str(args.workers[0]), *more)
            rows.append({"task": name, "samples": samples, **r})
    for name in args.tasks:
        print(f"memory: {name}: {memory_data(name)}")
    report("memory", rows, ["task", "samples", "batch", "workers", "steps", "read", "epochs_read", "seconds", "built_mb", "peak_mb", "loader_peak_mb",
                            "loader_own_mb"])


def memory_config(args: argparse.Namespace):
    """The config `--task` is trained with in the memory part: its defaults with `--workers` loader processes."""
    if args.task == "motion":
        return override(preset("motion"), [f"data.workers={args.data_workers}"])
    sets = [f"data.workers={args.data_workers}"] + ([f"threads={args.threads_set}"] if args.threads_set else [])
    return override(SyncConfig(), sets) if args.task == "sync" else override(RefinerConfig(), MEMORY_REFINER + sets)


def train_child(args: argparse.Namespace) -> None:
    """`--task` (the `motion` preset, the sync expert or the refiner) on `--data` until every training sample
    was read once (or `--train-steps`); peak RSS of this process and of its loader processes."""
    cfg = memory_config(args)
    train = cfg.train if args.task == "motion" else cfg
    b = train.batch_size
    per_epoch = len(ShardStream(args.data, "train", cfg.data, seed=train.seed).plan(0))
    n = args.steps or math.ceil(per_epoch / b)
    train.steps = n  # the learning-rate schedule's length
    if args.task == "motion":
        task = gan_task(cfg)
    elif args.task == "sync":
        task = SyncTask(cfg, args.data)
    else:
        task = RefinerTask(cfg, motion_release(args.work), frozen_expert(cfg), args.data)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(task, args.data, out, device=args.device)
        built = peak_mb(resource.RUSAGE_SELF)
        loaders = ChildPeaks()
        start = time.perf_counter()
        trainer.fit(n, progress=False)
        seconds = time.perf_counter() - start
        loader_own = loaders.stop()
    print(json.dumps({"batch": b, "workers": args.data_workers, "steps": n, "read": n * b, "epochs_read": round(n * b / per_epoch, 2),
                      "seconds": round(seconds, 1), "built_mb": built, "peak_mb": peak_mb(resource.RUSAGE_SELF),
                      "loader_peak_mb": peak_mb(resource.RUSAGE_CHILDREN), "loader_own_mb": loader_own}))


# -- 4. resume ----------------------------------------------------------------------------------
def checkpoints(args: argparse.Namespace, data: str) -> dict[str, str]:
    """Checkpoints of the `motion` preset on `data` after 1 step, 1 epoch and 10 epochs, trained once."""
    folder = os.path.join(args.work, f"checkpoints-{os.path.basename(data)}")
    cfg = preset("motion")
    with tempfile.TemporaryDirectory() as run:
        trainer = None
        per_epoch = None
        marks = {}
        for label, epochs in (("1 step", 0), ("1 epoch", 1), ("10 epochs", 10)):
            path = os.path.join(folder, label.replace(" ", "-") + ".pt")
            marks[label] = path
            if os.path.isfile(path):
                continue
            if trainer is None:
                trainer = Trainer(gan_task(cfg), data, run)
                per_epoch = math.ceil(len(trainer.stream.plan(0)) / cfg.train.batch_size)
            trainer.fit(max(1, epochs * per_epoch), progress=False)
            os.makedirs(folder, exist_ok=True)
            shutil.copy(os.path.join(run, "checkpoint.pt"), path)
    torch.set_num_threads(args.threads)
    return marks


def resume(args: argparse.Namespace) -> None:
    data = motion_set(args.work, args.resume_clips, speakers=8)
    rows = []
    for label, path in checkpoints(args, data).items():
        r = child(args, "_resume", "--data", data, "--checkpoint", path)
        rows.append({"checkpoint": label, "mb": round(os.path.getsize(path) / 2**20, 1), **r})
    report("resume", rows, ["checkpoint", "mb", "step", "epoch", "offset", "seconds", "samples_read", "batch"])


def resume_child(args: argparse.Namespace) -> None:
    """Resumes `--checkpoint` and trains one step, counting the samples read (the loader in this process)."""
    reads = [0]
    read_sample = loop.read_sample

    def counted(path, entry):
        reads[0] += 1
        return read_sample(path, entry)

    loop.read_sample = counted
    task = gan_task(preset("motion"))
    first: dict = {}
    train_step = task.train_step

    def timed(batch, step):
        if not first:
            first["samples_read"] = reads[0]
        losses = train_step(batch, step)
        if "seconds" not in first:
            synchronize(args.device)
            first["seconds"] = round(time.perf_counter() - start, 2)
        return losses

    task.train_step = timed
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        trainer = Trainer(task, args.data, out, device=args.device)
        trainer.resume(args.checkpoint)
        step, epoch, offset = trainer.step, trainer.stream.epoch, trainer.stream.offset
        trainer.fit(step + 1, progress=False)
    print(json.dumps({"step": step, "epoch": epoch, "offset": offset, **first, "batch": task.schedule.batch_size}))


# -- the command line ---------------------------------------------------------------------------
PARTS = {"loader": loader, "steps": steps, "memory": memory, "resume": resume}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=[*PARTS, "all", "_train", "_resume"])
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "talkface-bench-training"),
                   help="folder for the synthetic data sets and checkpoints (kept, so reruns skip writing them)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads of the training process, every task (default: torch's; the sync and refiner configs set their own)")
    p.add_argument("--tasks", nargs="+", help="loader: motion sync tiny refiner; steps: motion tiny paper sync refiner; memory: motion sync refiner")
    p.add_argument("--workers", type=int, nargs="+", help="data.workers (loader: 0 1 2; memory: 1)")
    p.add_argument("--batches", type=int, default=12, help="loader: batches timed after the warm-up one")
    p.add_argument("--steps", type=int, default=5, help="steps: steps timed after --warmup")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--clips", type=int, default=1000, help="memory: the smaller set of clips, motion and sync (GRID's size)")
    p.add_argument("--windows", type=int, default=300, help="memory: the smaller set of refiner windows")
    p.add_argument("--scale", type=int, default=10, help="memory: the larger is this many times larger")
    p.add_argument("--train-steps", type=int, default=0, help="memory: steps (default: read each set once)")
    p.add_argument("--resume-clips", type=int, default=64)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--task", default="motion", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.threads_set = args.threads
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    os.makedirs(args.work, exist_ok=True)
    if args.part == "_train":
        args.data_workers, args.steps = (args.workers or [1])[0], args.train_steps or None
        return train_child(args)
    if args.part == "_resume":
        return resume_child(args)
    print(f"cpus={os.cpu_count()} torch_threads={args.threads} torch={torch.__version__} device={args.device}")
    for name in PARTS if args.part == "all" else [args.part]:
        part = argparse.Namespace(**vars(args))
        part.tasks = args.tasks or {"loader": ["motion", "sync", "tiny", "refiner"], "memory": ["motion", "sync", "refiner"]}.get(
            name, ["motion", "tiny", "paper", "sync", "refiner"])
        part.workers = args.workers or ([0, 1, 2] if name == "loader" else [1])
        PARTS[name](part)


if __name__ == "__main__":
    main()
