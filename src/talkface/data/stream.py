"""Training samples streamed from shards, at any scale, from any position.

Each training process (rank) reads its own shards: in epoch e the shards are put in an order drawn
from (seed, e) and rank r takes every world-th of them, so no two ranks read the same shard. They are
read `mix` at a time, and the samples of those shards are shuffled among each other (by seed, epoch,
rank and block), so memory is bounded by a few shards, not the data set. With `balance_speakers`, a
speaker with n clips gives each of them to an epoch with probability min(1, m / n), m the median
speaker's clip count: one talkative speaker does not dominate.

Where a rank is in its stream is (epoch, offset), a plan computed from the shards' indexes only, so
a resumed run starts reading at once, however far it had got. Samples are read by one seek each
(`shards.read_sample`). A shard that cannot be indexed is skipped with one warning line; so is each
unreadable sample met later (the trainer reports it through `mark_bad`). Past `max_bad_shards` of
the shards, training stops with an error naming the first.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np

from talkface.config import StreamConfig
from talkface.data.shards import CorruptShard, shard_index, shard_paths
from talkface.errors import TalkfaceError


@dataclass(frozen=True)
class Item:
    """One sample to read: its shard, its index entry, and where it sits in the rank's stream."""

    path: str
    entry: dict
    epoch: int
    offset: int


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


class ShardStream:
    """The samples of one split of a shard folder, for one rank of `world`, as an endless stream."""

    def __init__(self, root: str, split: str, cfg: StreamConfig, seed: int = 0, rank: int = 0, world: int = 1):
        self.root, self.split, self.cfg, self.seed, self.rank, self.world = root, split, cfg, seed, rank, world
        self.paths = shard_paths(root, split)
        self.number = {p: i for i, p in enumerate(self.paths)}
        self.index: dict[str, list[dict]] = {}
        self.bad: dict[str, str] = {}
        for path in self.paths:
            try:
                self.index[path] = shard_index(path)
            except CorruptShard as e:
                self.mark_bad(path, e.problem)
        self.good = [p for p in self.paths if self.index.get(p)]
        if len(self.good) < world:
            raise TalkfaceError(f"has {len(self.good)} readable '{split}' shards, fewer than the {world} processes training", root)
        counts = Counter(e["speaker"] for p in self.good for e in self.index[p])
        self.speakers = counts
        self.cap = float(np.median(list(counts.values()))) if cfg.balance_speakers else float("inf")
        self.epoch, self.offset = 0, 0
        self._plans: dict[int, list[tuple[str, dict]]] = {}

    # -- what the data set holds ---------------------------------------------------------------
    def summary(self) -> dict:
        """Clips, speakers and frames of the readable shards (all ranks')."""
        entries = [e for p in self.good for e in self.index[p]]
        return {"clips": len(entries), "speakers": len(self.speakers), "frames": int(sum(e.get("frames", 0) for e in entries))}

    # -- the plan of an epoch ------------------------------------------------------------------
    def plan(self, epoch: int) -> list[tuple[str, dict]]:
        """This rank's samples of `epoch`, in reading order: a pure function of (seed, epoch, rank)."""
        if epoch in self._plans:
            return self._plans[epoch]
        order = [self.good[i] for i in np.random.default_rng([self.seed, epoch]).permutation(len(self.good))]
        mine = order[self.rank :: self.world]
        out: list[tuple[str, dict]] = []
        for b in range(0, len(mine), self.cfg.mix):
            block = []
            for path in mine[b : b + self.cfg.mix]:
                entries = self.index[path]
                keep = np.random.default_rng([self.seed, epoch, self.number[path]]).random(len(entries))
                block += [(path, e) for e, u in zip(entries, keep) if u * self.speakers[e["speaker"]] < self.cap]
            out += [block[i] for i in np.random.default_rng([self.seed, epoch, self.rank, b]).permutation(len(block))]
        if not out:
            raise TalkfaceError(f"gives process {self.rank} no '{self.split}' samples in epoch {epoch}", self.root)
        self._plans = {e: p for e, p in self._plans.items() if e == epoch - 1}  # the loader may read one epoch ahead
        self._plans[epoch] = out
        return out

    def advance(self, epoch: int, offset: int, count: int) -> tuple[list[Item], int, int]:
        """The `count` samples from (epoch, offset) on (into the next epoch when one ends), and the
        position after them."""
        items = []
        while len(items) < count:
            plan = self.plan(epoch)
            if offset >= len(plan):
                epoch, offset = epoch + 1, 0
                continue
            path, entry = plan[offset]
            items.append(Item(path, entry, epoch, offset))
            offset += 1
        return items, epoch, offset

    def take(self, count: int) -> list[Item]:
        """The next `count` samples of this rank's stream."""
        items, self.epoch, self.offset = self.advance(self.epoch, self.offset, count)
        return items

    # -- position, for checkpoints -------------------------------------------------------------
    def state(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "bad": dict(self.bad)}

    def seek(self, state: dict) -> None:
        """Continue from `state()`: only the plan of that epoch is computed, nothing is read."""
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        for path, reason in state.get("bad", {}).items():
            self.bad.setdefault(path, reason)

    # -- faults --------------------------------------------------------------------------------
    def mark_bad(self, path: str, reason: str) -> None:
        """A shard with an unreadable part: one warning line the first time; an error past the share allowed."""
        if path in self.bad:
            return
        self.bad[path] = reason
        warn(f"{path}: skipped unreadable data ({reason}); {len(self.bad)} of {len(self.paths)} shards so far")
        if len(self.bad) > self.cfg.max_bad_shards * len(self.paths):
            first = next(iter(self.bad.items()))
            raise TalkfaceError(
                f"{len(self.bad)} of {len(self.paths)} '{self.split}' shards are unreadable, more than the "
                f"{self.cfg.max_bad_shards:.0%} allowed (data.max_bad_shards); the first: {first[0]}: {first[1]}", self.root)
