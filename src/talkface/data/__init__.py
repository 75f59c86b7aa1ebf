"""Data: shards of talking-face clips (preprocess, shards, stream), synthetic faces for tests, and what
the trainers read from them."""
from __future__ import annotations

import os

from talkface.config import Config
from talkface.errors import TalkfaceError

SYNTHETIC_CLIPS = 256


def training_data(spec: str, cfg: Config, out: str) -> str:
    """The shard folder a `train` run reads: a folder made by `talkface preprocess`, or for
    'synthetic' procedural faces written once into `out`/synthetic."""
    if spec == "synthetic":
        from talkface.data.synthetic import write_synthetic_shards

        return write_synthetic_shards(os.path.join(out, "synthetic"), cfg, SYNTHETIC_CLIPS, max(48, cfg.train.clip_frames), seed=cfg.train.seed, val=16)
    if not os.path.isdir(os.path.join(spec, "train")):
        raise TalkfaceError("is not a dataset: use 'synthetic' or a folder made by `talkface preprocess`", spec)
    return spec
