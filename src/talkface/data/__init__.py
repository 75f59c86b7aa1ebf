"""Data: synthetic talking faces for tests, clip datasets and the batches the trainer draws."""
from __future__ import annotations

from talkface.config import Config
from talkface.errors import TalkfaceError


def load_dataset(spec: str, cfg: Config, split: str = "train", stream: bool = False, rank: int = 0, world: int = 1):
    """'synthetic' (procedural faces), or a folder of shards made by `talkface preprocess`:
    held in memory compressed (random access), or with `stream` read shard by shard."""
    import os

    if cfg.kind == "motion":
        return _motion_dataset(spec, cfg, split, stream)
    size = (cfg.model.height, cfg.model.width)
    if spec == "synthetic":
        from talkface.data.synthetic import SyntheticDataset

        return SyntheticDataset(256, max(48, cfg.train.clip_frames), size, cfg.audio, seed=cfg.train.seed + (split == "val"))
    if not os.path.isdir(os.path.join(spec, split)):
        raise TalkfaceError("is not a dataset: use 'synthetic' or a folder made by `talkface preprocess`", spec)
    from talkface.data.shards import ShardDataset, ShardStream

    if stream:
        return ShardStream(spec, split, cfg.audio, seed=cfg.train.seed, rank=rank, world=world)
    data = ShardDataset(spec, split, cfg.audio)
    first = data.clip(0)["frames"]
    if first.shape[1:3] != size:
        raise TalkfaceError(f"holds {first.shape[1]}x{first.shape[2]} crops but the model makes {size[0]}x{size[1]} frames", spec)
    return data


def _motion_dataset(spec: str, cfg: Config, split: str, stream: bool):
    """The motion model's clips: synthetic speech with its mouth motion, or the audio and landmarks of shards."""
    import os

    if stream:
        raise TalkfaceError("--stream reads face frames; the motion model holds its clips (audio and landmarks) in memory")
    if spec == "synthetic":
        from talkface.data.synthetic import synthetic_motion_clips

        return synthetic_motion_clips(256, max(48, cfg.train.clip_frames), cfg, seed=cfg.train.seed + (split == "val"))
    if not os.path.isdir(os.path.join(spec, split)):
        raise TalkfaceError("is not a dataset: use 'synthetic' or a folder made by `talkface preprocess`", spec)
    from talkface.data.motion import shard_motion_clips

    return shard_motion_clips(spec, split, cfg, seed=cfg.train.seed, progress=True)
