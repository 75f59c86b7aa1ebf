"""Data: synthetic talking faces for tests, clip datasets and the batches the trainer draws."""
from __future__ import annotations

from talkface.config import Config
from talkface.errors import TalkfaceError


def load_dataset(spec: str, cfg: Config):
    """'synthetic' (procedural faces), or a folder of preprocessed clips."""
    size = (cfg.model.height, cfg.model.width)
    if spec == "synthetic":
        from talkface.data.synthetic import SyntheticDataset

        return SyntheticDataset(256, max(48, cfg.train.clip_frames), size, cfg.audio, seed=cfg.train.seed)
    raise TalkfaceError("is not a dataset: use 'synthetic' or a folder made by `talkface preprocess`", spec)
