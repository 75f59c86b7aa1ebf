"""Checkpoints that describe themselves, and release weights that load without unpickling."""
from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from talkface import __version__
from talkface.config import Config, SyncConfig, from_dict
from talkface.errors import TalkfaceError
from talkface.models import Generator
from talkface.models.sync_expert import SyncExpert

FORMAT_VERSION = 1


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers (so saved keys never carry prefixes)."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


def save_training_state(path: str | os.PathLike, state: dict[str, Any], config: dict[str, Any]) -> None:
    """Everything needed for an exact resume, plus the config and versions, in one torch file."""
    payload = {"format": FORMAT_VERSION, "talkface_version": __version__, "config": config, **state}
    _atomic_write(os.fspath(path), lambda p: torch.save(payload, p))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint with `weights_only=True`: tensors and plain data, never code."""
    try:
        payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise TalkfaceError(f"is not a talkface training checkpoint ({type(e).__name__})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise TalkfaceError("is not a talkface training checkpoint of a known format", path)
    return payload


def _save_safetensors(path: str | os.PathLike, module: torch.nn.Module, cfg, half: bool, meta: dict[str, str]) -> None:
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous() for k, v in unwrap(module).state_dict().items()}
    meta = {"format": str(FORMAT_VERSION), "talkface_version": __version__, "config": json.dumps(cfg.to_dict()), **meta}
    _atomic_write(os.fspath(path), lambda p: save_file(tensors, p, metadata=meta))


def _read_safetensors(path: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file, or a TalkfaceError; nothing is unpickled."""
    try:
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        detail = str(e).splitlines()[0].split(": ")[-1][:80] if str(e) else type(e).__name__  # e.g. "HeaderTooLarge"
        raise TalkfaceError(f"is not a readable safetensors file ({detail})", path) from None


def _load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    try:
        module.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as e:
        raise TalkfaceError(f"weights do not match its config ({str(e).splitlines()[0]})", path) from None


def save_release(path: str | os.PathLike, generator: torch.nn.Module, cfg: Config, half: bool = False, extra: dict | None = None) -> None:
    """Generator weights as safetensors; config, format and version in the metadata."""
    _save_safetensors(path, generator, cfg, half, extra or {})


def build_generator(cfg: Config) -> torch.nn.Module:
    """The generator a config describes: the seed's frame generator, or the motion model (cfg.kind)."""
    from talkface.models.motion import MotionModel

    return MotionModel(cfg) if cfg.kind == "motion" else Generator(cfg)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Config]:
    """A generator (Generator or MotionModel, by its config's kind) in eval mode from release
    weights (.safetensors) or a training checkpoint (.pt)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TalkfaceError("no such checkpoint file", path)
    if path.endswith(".safetensors"):
        meta, state = _read_safetensors(path)
        if meta.get("format") != str(FORMAT_VERSION) or "config" not in meta:
            raise TalkfaceError("has no talkface config in its metadata", path)
        cfg = from_dict(json.loads(meta["config"]))
    else:
        payload = load_training_state(path)
        cfg = from_dict(payload["config"])
        state = payload["ema"]
    if cfg.kind == "motion" and not any(k.startswith("expression.") for k in state):
        cfg.motion.expression.net.enabled = False  # made before the upper face's network: the mouth and chin move alone
    generator = build_generator(cfg)
    _load_weights(generator, state, path)
    return generator.to(device).eval(), cfg


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    with safe_open(os.fspath(path), framework="pt") as f:
        return dict(f.metadata() or {})


SYNC_EXPERT_KIND = "sync_expert"


def default_sync_expert() -> str:
    """Path of the lip-sync expert shipped inside the package (trained on GRID, one speaker)."""
    from importlib.resources import files

    return str(files("talkface") / "assets" / "sync_expert.safetensors")


def save_sync_expert(path: str | os.PathLike, expert: torch.nn.Module, cfg: SyncConfig, half: bool = True, extra: dict | None = None) -> None:
    """Lip-sync expert weights as safetensors (float16 by default: it is shipped in the package)."""
    _save_safetensors(path, expert, cfg, half, {"kind": SYNC_EXPERT_KIND, **(extra or {})})


def load_sync_expert(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> tuple[SyncExpert, SyncConfig]:
    """The lip-sync expert in eval mode from its safetensors file (default: the shipped one); never unpickles."""
    path = os.fspath(path) if path is not None else default_sync_expert()
    if not os.path.isfile(path):
        raise TalkfaceError("no such sync expert file", path)
    meta, state = _read_safetensors(path)
    if meta.get("format") != str(FORMAT_VERSION) or meta.get("kind") != SYNC_EXPERT_KIND or "config" not in meta:
        raise TalkfaceError("is not a talkface sync expert (no sync-expert config in its metadata)", path)
    cfg = from_dict(json.loads(meta["config"]), SyncConfig)
    expert = SyncExpert(cfg)
    _load_weights(expert, state, path)
    return expert.to(device).eval(), cfg
