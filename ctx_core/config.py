"""Typed, frozen settings loaded from ``params.yaml``.

``params.yaml`` has one section per stage. :func:`load_params` reads it (and
the file it ``extends``, if any), applies ``--set section.key=value``
overrides and validates everything into frozen pydantic models. Any problem
raises :class:`ConfigError` whose message is one line naming the key, the value
and what is allowed, so the CLI can print it without a traceback.

Relative paths in the file are resolved against the directory holding the
params file, so a stage behaves the same whatever the working directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ctx_core.errors import UserError


class ConfigError(UserError):
    """A settings problem a user can fix; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitFractions(_Section):
    """Share of synthetic images in each split; they must sum to 1."""

    unlabeled: float = Field(0.7, ge=0, le=1)
    trainval: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitFractions":
        total = self.unlabeled + self.trainval + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (got {total:g})")
        return self


class SynthConfig(_Section):
    """The synthetic VOC benchmark written by ``ctx synth``."""

    out: str = "data/synth"
    reports: str = "reports/synth"
    images: int = Field(2400, ge=1, description="number of images in all splits")
    seed: int = Field(0, ge=0)
    size: int = Field(192, ge=16, le=4096, description="longer image side in pixels")
    sprites: str | None = Field(None, description="folder of RGBA sprites, one sub-folder per class")
    splits: SplitFractions = SplitFractions()
    max_objects: int = Field(6, ge=1, le=20)
    jpeg_quality: int = Field(90, ge=50, le=100)
    workers: int = Field(0, ge=0, description="processes; 0 = all cores")


class IngestConfig(_Section):
    """``ctx ingest``: any image source into one normalised, versioned store.

    Images with more than ``max_pixels`` are downscaled (aspect kept) to a
    target drawn uniformly in [``min_pixels``, ``max_pixels``], seeded by the
    image's sha256 so a rerun gives the same size; smaller images are kept as
    they are. The paper uses 150K-450K pixels for 96-px patches.
    """

    source: str = Field("data/synth", min_length=1, description="folder, VOC root, archive or s3://bucket/prefix")
    out: str = "data/raw_images"
    reports: str = "reports/ingest"
    min_pixels: int = Field(20_000, ge=1, description="lower end of the downscale target, pixels per image")
    max_pixels: int = Field(40_000, ge=1, description="images above this many pixels are downscaled")
    max_decode_pixels: int = Field(
        89_478_485, ge=1, description="larger images are quarantined as decompression bombs (Pillow's default)"
    )
    alpha: Literal["white", "drop"] = Field("white", description="transparent pixels: composite on white or drop alpha")
    jpeg_quality: int = Field(95, ge=50, le=100)
    max_file_bytes: int = Field(256 << 20, ge=1, description="largest input file taken (local, archive member, S3 object), bytes")
    workers: int = Field(0, ge=0, description="processes; 0 = all cores")
    download_threads: int = Field(16, ge=1, le=256, description="parallel S3 downloads")
    s3_max_attempts: int = Field(5, ge=1, le=20, description="tries per S3 request (botocore standard retries)")

    @model_validator(mode="after")
    def _pixel_range(self) -> "IngestConfig":
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})")
        return self


class DataConfig(_Section):
    synth: SynthConfig = SynthConfig()
    ingest: IngestConfig = IngestConfig()


class PretrainConfig(_Section):
    """Context-prediction pretraining (Doersch et al. 2015).

    Defaults are the paper's recipe scaled by 1/3 for CPU: 96-px patches with a
    48-px gap and 7-px jitter become 32, 16 and 2.
    """

    input: str = Field("data/raw_images", description="image store from ctx ingest (or a VOC root / image folder)")
    splits: tuple[str, ...] = Field(("unlabeled",), min_length=1, description="store splits to pretrain on")
    out: str = Field("models/context", description="encoder.pt and checkpoints/")
    reports: str = "reports/pretrain"
    registered_model: str = Field("ctx-encoder", min_length=1, description="MLflow registry name")
    arch: Literal["compact", "paper", "resnet18"] = "compact"
    patch_size: int = Field(32, ge=8, le=512)
    gap: int = Field(16, ge=0, le=512)
    jitter: int = Field(2, ge=0, le=64)
    pairs: Literal["all_neighbours", "random_neighbour"] = "all_neighbours"
    pairs_per_grid: int = Field(40, ge=1, le=40, description="all_neighbours: ordered pairs used per 3x3 grid")
    chroma: Literal["projection", "color_dropping", "grayscale", "none"] = "projection"
    pixelation_prob: float = Field(0.33, ge=0, le=1)
    pixelation_min_side: int = Field(4, ge=1)
    pixelation_max_side: int = Field(31, ge=1)
    patch_rms: float = Field(50.0, gt=0, description="per-patch RMS after mean subtraction")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(256, ge=1)
    held_out_fraction: float = Field(0.1, gt=0, lt=1)
    eval_pairs: int = Field(2048, ge=8, description="held-out pairs for pretext accuracy")
    diagnostic_steps: int = Field(200, ge=0, description="chromatic-aberration diagnostic training steps; 0 = skip")
    log_every: int = Field(20, ge=1)
    workers: int = Field(1, ge=0, description="DataLoader worker processes; 0 = sample in the trainer")
    checkpoint_every: int = Field(500, ge=1)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    compile: bool = False

    @model_validator(mode="after")
    def _pixelation_range(self) -> "PretrainConfig":
        if self.pixelation_min_side > self.pixelation_max_side:
            raise ValueError(
                f"pixelation_min_side ({self.pixelation_min_side}) must be <= "
                f"pixelation_max_side ({self.pixelation_max_side})"
            )
        return self

    @property
    def grid_extent(self) -> int:
        """Smallest image side (px) that holds the 3x3 grid with its gaps and jitter."""
        return 3 * self.patch_size + 2 * self.gap + 2 * self.jitter


class FeaturesConfig(_Section):
    layer: Literal["fc6", "pool5"] = "fc6"
    scales: tuple[float, ...] = (1.0, 0.75, 0.5)
    stride_fraction: float = Field(0.5, gt=0, le=1)
    float16: bool = True


class DiscoveryConfig(_Section):
    constellations: int = Field(2000, ge=1)
    top_k: int = Field(20, ge=1)
    max_residual: float = Field(0.25, gt=0)
    max_scale_ratio: float = Field(1.5, ge=1)


class DetectionConfig(_Section):
    inits: tuple[Literal["context", "scratch", "context_rescaled"], ...] = (
        "context",
        "scratch",
        "context_rescaled",
    )
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.02, gt=0, le=10)
    metric: Literal["voc07", "area"] = "voc07"


class TrackingConfig(_Section):
    """MLflow. ``uri`` null means a SQLite store beside params.yaml;
    the ``MLFLOW_TRACKING_URI`` environment variable wins over both."""

    enabled: bool = True
    uri: str | None = None
    artifacts: str = "mlartifacts"
    experiment: str = Field("ctx-pipeline", min_length=1)


class StorageConfig(_Section):
    """Object storage. Credentials never live here: boto3 reads them from the
    environment or the standard AWS chain."""

    s3_endpoint_url: str | None = None
    dvc_remote: str | None = None


class Params(_Section):
    data: DataConfig = DataConfig()
    pretrain: PretrainConfig = PretrainConfig()
    features: FeaturesConfig = FeaturesConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    detection: DetectionConfig = DetectionConfig()
    tracking: TrackingConfig = TrackingConfig()
    storage: StorageConfig = StorageConfig()


class Settings(BaseModel):
    """Validated params plus where they came from."""

    model_config = ConfigDict(frozen=True)

    params: Params
    root: Path
    source: Path | None = None

    def path(self, value: str | Path) -> Path:
        """Resolve a path from the params file against the params file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.root / p)

    def digest(self) -> str:
        """Short hash of the effective params, for lineage tags."""
        blob = json.dumps(self.params.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"params file {path}{where} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file {path} must hold a mapping of sections, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen:
        raise ConfigError(f"params file {path}: 'extends: {base}' forms a cycle")
    return _deep_merge(_read_yaml(base_path, (*seen, path.resolve())), data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'pretrain.lr=0.1'`` -> ``(['pretrain', 'lr'], 0.1)``; the value is a YAML scalar."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. pretrain.lr=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = _deep_merge({}, data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part} is a value, not a section")
            else:
                child = node[part] = dict(child)
            node = child
        node[parts[-1]] = value
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc[:-1]``, for an 'unknown key' message."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def _format_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(Params, loc)) or "none"
        msg = f"{source}: unknown key {key} (value {value!r}); allowed keys here: {allowed}"
    else:
        reason = err["msg"]
        if reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        msg = f"{source}: {key}{shown}: {reason[0].lower()}{reason[1:]}"
    more = len(exc.errors()) - 1
    return msg + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def validate(data: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_params(path: str | Path | None = None, overrides: list[str] | None = None) -> Settings:
    """Load, merge and validate a params file (default ``./params.yaml``).

    A missing default file means built-in defaults; a missing named file is an error.
    """
    overrides = overrides or []
    if path is None and not Path("params.yaml").is_file():
        data: dict[str, Any] = {}
        root, source = Path.cwd(), None
    else:
        source = Path(path or "params.yaml").resolve()
        data = _read_yaml(source)
        root = source.parent
    data = apply_overrides(data, overrides)
    params = validate(data, str(source.name if source else "params"))
    return Settings(params=params, root=root, source=source)
