"""The encoder artifact: weights plus the contract needed to use them.

An ``encoder.pt`` is a plain dict of tensors and primitives, loaded with
``torch.load(..., weights_only=True)`` so a file from elsewhere cannot run
code. Besides the weights it carries an :class:`EncoderContract`: the tower's
architecture and patch size, the preprocessing it was trained with (chroma
handling, patch RMS), its feature layers and their sizes, the pretext task,
the data version and a hash of the params that made it. Like nanoGPT's
``model_args``, whoever loads the weights rebuilds exactly the model and input
transform that made them; consumers never take these from today's params.
The same fields are tags on the encoder's MLflow registry version
(:meth:`EncoderContract.tags`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ctx_core.encoder.preprocess import CHROMA, test_time
from ctx_core.errors import UserError
from ctx_core.models.towers import Tower, build_tower

FORMAT = "ctx-encoder/2"


class EncoderFileError(UserError):
    """An encoder file that is missing, unreadable or of another format."""


class EncoderContractError(UserError):
    """A setting that contradicts the encoder's contract; the message names both values."""


@dataclass(frozen=True)
class EncoderContract:
    """What a consumer needs besides the weights.

    arch, patch_size: the tower (``models.towers.build_tower``); input patches (N, 3, P, P).
    chroma: colour handling in pretraining (``encoder.preprocess.CHROMA``).
    patch_rms: RMS each mean-subtracted patch was scaled to (pixel units).
    feature_layers: layer name -> feature size, e.g. ``{"fc6": 512, "pool5": 1152}``.
    task: the pretext task that trained it (``context``).
    data_version: DVC hash of the images it was trained on.
    params_hash: sha256 prefix of the params section that made it.
    """

    arch: str
    patch_size: int
    chroma: str
    patch_rms: float
    feature_layers: dict[str, int] = field(default_factory=dict)
    task: str = "context"
    data_version: str = "unknown"
    params_hash: str = ""

    def __post_init__(self) -> None:
        if self.chroma not in CHROMA:
            raise EncoderFileError(f"encoder chroma {self.chroma!r}: expected one of {', '.join(CHROMA)}")
        if not self.patch_rms > 0:
            raise EncoderFileError(f"encoder patch_rms {self.patch_rms!r}: expected a positive number")

    @classmethod
    def of(cls, tower: Tower, chroma: str, patch_rms: float, task: str = "context",
           data_version: str = "unknown", params_hash: str = "") -> "EncoderContract":
        return cls(tower.arch, tower.patch_size, chroma, float(patch_rms),
                   {"fc6": tower.feature_dim, "pool5": tower.pool5_dim}, task, data_version, params_hash)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """float (N, 3, P, P) pixels 0-255 -> the tower's input, as this encoder was trained."""
        return test_time(x, self.chroma, self.patch_rms)

    def layer_size(self, layer: str, setting: str) -> int:
        """The feature size of ``layer``; ``setting`` (e.g. ``features.layer``) names the asking params key."""
        if layer not in self.feature_layers:
            raise EncoderContractError(
                f"{setting} is {layer!r} but the encoder has feature layers {', '.join(self.feature_layers)}")
        return self.feature_layers[layer]

    def tags(self) -> dict[str, str]:
        """The contract as registry-version tags (strings)."""
        out = {k: str(v) for k, v in asdict(self).items() if k != "feature_layers"}
        out["feature_layers"] = json.dumps(self.feature_layers, sort_keys=True)
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def save_encoder(path: Path, tower: Tower, contract: EncoderContract, meta: dict[str, Any] | None = None) -> Path:
    """Write ``tower``'s weights and ``contract`` to ``path`` atomically; ``meta``: extra facts (steps, accuracy)."""
    if (contract.arch, contract.patch_size) != (tower.arch, tower.patch_size):
        raise ValueError(f"contract {contract.arch}/{contract.patch_size} does not describe the "
                         f"{tower.arch}/{tower.patch_size} tower")
    blob = {
        "format": FORMAT,
        "contract": contract.as_dict(),
        "trunk_channels": tower.trunk_channels,
        "state_dict": {k: v.detach().cpu() for k, v in tower.state_dict().items()},
        "meta": dict(meta or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def _read(path: Path, map_location: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EncoderFileError(f"encoder file {path} does not exist")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise EncoderFileError(f"encoder file {path} cannot be read ({type(exc).__name__}); expected a file written by ctx pretrain") from None
    if isinstance(blob, dict) and blob.get("format") == "ctx-encoder/1":
        raise EncoderFileError(f"encoder file {path} is a ctx-encoder/1 file, written before encoders carried their "
                               f"preprocessing; run `ctx pretrain` again to write a {FORMAT} file")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise EncoderFileError(f"encoder file {path} is not a {FORMAT} file written by ctx pretrain")
    return blob


def read_contract(path: Path) -> EncoderContract:
    """The contract of the encoder at ``path``, without building the tower."""
    return EncoderContract(**_read(path, "cpu")["contract"])


def load_encoder(path: Path, map_location: str = "cpu") -> tuple[Tower, EncoderContract, dict[str, Any]]:
    """Rebuild the tower at ``path``; returns (tower, contract, meta)."""
    blob = _read(path, map_location)
    contract = EncoderContract(**blob["contract"])
    tower = build_tower(contract.arch, contract.patch_size)
    try:
        tower.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:  # keys or shapes that do not fit the tower the contract names
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc)[:120])
        raise EncoderFileError(f"encoder file {path}: weights do not fit its {contract.arch!r} tower "
                               f"({contract.patch_size}-px patches): {first}") from None
    return tower, contract, blob["meta"]
