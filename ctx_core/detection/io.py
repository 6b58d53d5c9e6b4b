"""Detector weights on disk: a plain dict of tensors and primitives, read with
``torch.load(weights_only=True)``; it holds what is needed to rebuild the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctx_core.config import DetectionConfig
from ctx_core.detection.model import build_detector
from ctx_core.errors import UserError
from ctx_core.models.towers import Tower, build_tower

FORMAT = "ctx-detector/1"
DETECTOR_FILE = "detector.pt"


class DetectorFileError(UserError):
    """A detector file that is missing, unreadable or of another format."""


def save_detector(path: Path, model: nn.Module, tower: Tower, cfg: DetectionConfig, classes: list[str],
                  meta: dict[str, Any]) -> Path:
    """Write ``model``'s weights with the tower shape, settings, classes and input statistics, atomically."""
    blob = {
        "format": FORMAT,
        "arch": tower.arch,
        "patch_size": tower.patch_size,
        "trunk_channels": tower.trunk_channels,
        "classes": list(classes),
        "image_mean": [float(v) for v in model.transform.image_mean],
        "image_std": [float(v) for v in model.transform.image_std],
        "detection": cfg.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_detector(path: Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the detector saved at ``path`` (in eval mode); returns (model, the file's dict without weights)."""
    path = Path(path)
    if not path.is_file():
        raise DetectorFileError(f"detector file {path} does not exist")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise DetectorFileError(f"detector file {path} cannot be read ({type(exc).__name__}); expected a file written by ctx finetune") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DetectorFileError(f"detector file {path} is not a {FORMAT} file written by ctx finetune")
    cfg = DetectionConfig.model_validate(blob["detection"])
    model = build_detector(build_tower(blob["arch"], blob["patch_size"]), cfg, len(blob["classes"]),
                           blob["image_mean"], blob["image_std"])
    model.load_state_dict(blob["state_dict"])
    return model.eval(), {k: v for k, v in blob.items() if k != "state_dict"}
