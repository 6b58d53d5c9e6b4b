"""Encoder weights on disk: a plain dict of tensors and primitives.

Loaded with ``torch.load(..., weights_only=True)``, so a file from elsewhere
cannot run code. The dict carries what is needed to rebuild the tower.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ctx_core.errors import UserError
from ctx_core.models.towers import Tower, build_tower

FORMAT = "ctx-encoder/1"


class EncoderFileError(UserError):
    """An encoder file that is missing, unreadable or of another architecture."""


def save_encoder(path: Path, tower: Tower, meta: dict[str, Any] | None = None) -> Path:
    """Write ``tower``'s weights and shape to ``path`` atomically."""
    blob = {
        "format": FORMAT,
        "arch": tower.arch,
        "patch_size": tower.patch_size,
        "feature_dim": tower.feature_dim,
        "trunk_channels": tower.trunk_channels,
        "state_dict": {k: v.detach().cpu() for k, v in tower.state_dict().items()},
        "meta": dict(meta or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_encoder(path: Path, arch: str | None = None, map_location: str = "cpu") -> tuple[Tower, dict[str, Any]]:
    """Rebuild a tower from ``path``; ``arch`` (if given) must match the file's."""
    path = Path(path)
    if not path.is_file():
        raise EncoderFileError(f"encoder file {path} does not exist")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise EncoderFileError(f"encoder file {path} cannot be read ({type(exc).__name__}); expected a file written by ctx pretrain") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise EncoderFileError(f"encoder file {path} is not a {FORMAT} file written by ctx pretrain")
    if arch is not None and blob["arch"] != arch:
        raise EncoderFileError(
            f"encoder file {path} holds a {blob['arch']!r} tower ({blob['patch_size']}-px patches), "
            f"but the configuration asks for {arch!r}"
        )
    tower = build_tower(blob["arch"], blob["patch_size"])
    tower.load_state_dict(blob["state_dict"])
    return tower, blob["meta"]
