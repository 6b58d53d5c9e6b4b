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
from typing import Annotated, Any, Literal

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
    s3_timeout_s: float = Field(
        30.0, gt=0, le=600, description="seconds an S3 connect or read may wait before the try counts as failed"
    )
    max_archive_bytes: int = Field(
        3 << 30, ge=1, description="total bytes extracted from one archive source; past it ingestion stops (disk guard)"
    )

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
    test_split: str = Field("test", min_length=1,
                            description="split whose images (by content hash) pretraining refuses: detection and probes score on it")
    allow_test_images: bool = Field(False, description="pretrain on images whose content is in test_split anyway")
    out: str = Field("models/context", description="encoder.pt and checkpoints/")
    reports: str = "reports/pretrain"
    registered_model: str = Field("ctx-encoder", min_length=1, description="MLflow registry name")
    task: Literal["context", "rotation", "jigsaw", "instance"] = Field(
        "context", description="the pretext task: context prediction (Doersch et al. 2015), rotation (Gidaris et al. "
                               "2018), jigsaw (Noroozi & Favaro 2016) or instance discrimination (SimCLR); every task "
                               "trains the same tower with the same tower passes per step (tower_passes)")
    jigsaw_permutations: int = Field(100, ge=2, le=1000,
                                     description="jigsaw: tile orders to predict, chosen greedily for maximal Hamming distance")
    instance_temperature: float = Field(0.2, gt=0, le=10, description="instance: NT-Xent temperature")
    instance_projection: int = Field(128, ge=8, description="instance: projection head output size")
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
    held_out_fraction: float = Field(
        0.1, gt=0, lt=1, description="images never trained on, halved by file-name hash into pretext validation and test")
    eval_pairs: int = Field(2048, ge=8, description="held-out pairs for pretext accuracy: half validation, half test")
    audit_images: int = Field(64, ge=0, description="validation images for the absolute-position audit; 0 = skip")
    audit_patches: int = Field(16, ge=1, description="random patches per audited image")
    diagnostic_steps: int = Field(200, ge=0, description="chromatic-aberration diagnostic training steps; 0 = skip")
    log_every: int = Field(20, ge=1)
    workers: int = Field(1, ge=0, description="DataLoader worker processes; 0 = sample in the trainer")
    image_cache_mb: int = Field(1024, ge=0, description="decoded images kept in memory by each sampler process; 0 = decode every time")
    checkpoint_every: int = Field(500, ge=1)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA, and on a CPU with native bf16 (AMX, AVX512-BF16); ignored elsewhere")
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

    @property
    def tower_passes(self) -> int:
        """Patches the tower embeds per step: the budget every task gets. ``batch_size`` counts context
        pairs; all 40 ordered pairs of a grid share its 9 patches (1,280 pairs: 32 grids, 288 passes)."""
        if self.pairs == "random_neighbour":
            return 2 * self.batch_size
        per_grid = min(self.pairs_per_grid, 40)
        return 9 * -(-self.batch_size // per_grid)


class FeaturesConfig(_Section):
    """``ctx extract``: encoder features of patches, streamed to disk in shards.

    A patch at scale ``s`` is a ``patch_size`` square cut from the image resized
    by ``s``, so it covers ``patch_size / s`` original pixels; ``stride_fraction``
    is the grid step as a share of the patch side. Besides the encoder's
    features, each baseline gets its own feature set over the same patches.
    """

    encoder: str = Field(
        "models/context/encoder.pt", min_length=1,
        description="encoder.pt path, models:/<name>@<alias> or models:/<name>/<version>",
    )
    input: str = Field("data/raw_images", description="image store from ctx ingest")
    splits: tuple[str, ...] = Field(("trainval", "test"), min_length=1, description="store splits to extract")
    max_images: int | None = Field(None, ge=1, description="first N images of those splits (sorted by id); null = all")
    out: str = Field("data/features", description="one folder per feature set: shards + index.parquet")
    reports: str = "reports/features"
    layer: Literal["fc6", "pool5"] = "fc6"
    sampling: Literal["dense", "random"] = Field("dense", description="discovery needs the dense grid")
    scales: tuple[float, ...] = Field((1.0, 0.75), min_length=1)
    stride_fraction: float = Field(0.5, gt=0, le=1)
    patches_per_image: int = Field(64, ge=1, description="random sampling: patches per image")
    baselines: tuple[Literal["random_init", "raw_pixels"], ...] = ("random_init", "raw_pixels")
    raw_pixels_side: int = Field(8, ge=1, le=64, description="raw-pixel features: patch downsampled to side x side x 3")
    float16: bool = True
    batch_size: int = Field(512, ge=1)
    images_per_chunk: int = Field(32, ge=1, description="images decoded and held in memory at once")
    shard_rows: int = Field(32768, ge=1, description="feature rows per shard file")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA, and on a CPU with native bf16 (AMX, AVX512-BF16); ignored elsewhere")
    seed: int = Field(0, ge=0, description="random sampling and the random-init encoder")
    nn_queries: int = Field(6, ge=1, description="query patches in the neighbours montage")
    nn_k: int = Field(6, ge=1, description="neighbours shown per query")

    @model_validator(mode="after")
    def _positive_scales(self) -> "FeaturesConfig":
        bad = [s for s in self.scales if not 0 < s <= 4]
        if bad:
            raise ValueError(f"scales must lie in (0, 4] (got {bad[0]:g})")
        return self


class DiscoveryTune(_Section):
    """Values of discovery's thresholds tried on the ``val`` images; the grid is
    every combination, and the discovery section's own value of each is always in it.
    An empty list keeps that threshold fixed."""

    max_residual: tuple[Annotated[float, Field(gt=0)], ...] = ()
    max_scale_ratio: tuple[Annotated[float, Field(ge=1)], ...] = ()
    min_members: tuple[Annotated[int, Field(ge=1)], ...] = ()
    merge_distance: tuple[Annotated[float, Field(ge=0, le=1)], ...] = ()


class DiscoveryConfig(_Section):
    """``ctx discover``: objects found by matching constellations of 2x2 patches.

    ``max_residual`` is the RMS misfit of the matched centres after the
    least-squares scale+translation fit, as a share of the fitted square's side;
    ``max_scale_ratio`` bounds matched patch size over fitted query size (either way).
    With ``tune``, these four are chosen on the ``val`` images by purity at
    ``coverage_at`` (their values here break ties) and ``test`` is scored once.
    """

    out: str = Field("data/discovery", description="clusters tables; features are read from features.out")
    reports: str = "reports/discovery"
    constellations: int = Field(600, ge=1)
    top_k: int = Field(20, ge=1, description="candidate images per constellation (paper: 100)")
    max_residual: float = Field(0.2, gt=0, description="a 2:1 rectangle fits a square with residual 0.24")
    max_scale_ratio: float = Field(1.5, ge=1)
    min_members: int = Field(3, ge=1, description="verified matches a constellation needs to become a cluster")
    merge_distance: float = Field(0.7, ge=0, le=1, description="Jaccard distance of member images below which clusters merge")
    coverage_at: float = Field(0.25, gt=0, le=1, description="coverage at which purity is reported")
    montage_clusters: int = Field(8, ge=1)
    montage_members: int = Field(8, ge=1)
    query_block: int = Field(128, ge=1, description="constellations matched per pass over the shards")
    seed: int = Field(0, ge=0)
    tune: DiscoveryTune | None = Field(None, description="thresholds tried on val; null or empty lists: fixed thresholds")


class DetectionConfig(_Section):
    """Faster R-CNN fine-tuning on VOC-style data, one run per encoder init.

    Every init gets the same budget (steps, batch, lr, schedule) and the same
    seeds, so the comparison is fair and paired by seed. Sizes are in pixels of the stored images.
    """

    inits: tuple[Literal["context", "scratch", "context_rescaled", "scratch_rescaled"], ...] = (
        "context",
        "scratch",
        "context_rescaled",
        "scratch_rescaled",
    )
    input: str = Field("data/raw_images", description="ingest store or VOC root with trainval/test splits")
    train_split: str = Field("train", min_length=1, description="the split trained on")
    val_split: str | None = Field("val", description="scored after training, for choices (the champion); null: none")
    test_split: str = Field("test", min_length=1, description="scored once per run; the reported numbers")
    encoder: str = Field("models/context/encoder.pt", min_length=1,
                         description="encoder.pt path, models:/name@alias or models:/name/version")
    out: str = Field("models/detection", description="<init>/detector.pt, checkpoints/ and results/")
    reports: str = Field("reports/detection", description="inits/<init>/ metrics and PR curves; the AP table")
    registered_model: str = Field("ctx-detector", min_length=1, description="MLflow registry name")
    min_size: int = Field(144, ge=16, le=4096, description="test-time shorter side, px")
    max_size: int = Field(256, ge=16, le=8192, description="cap on the longer side, px")
    scale_jitter: tuple[float, float] = Field((0.75, 1.25), description="training shorter side range, x min_size")
    hflip: bool = True
    train_difficult: bool = Field(False, description="train on difficult objects too (they never count in AP)")
    anchor_sizes: tuple[int, ...] = Field((16, 32, 64, 128), min_length=1, description="anchor sides, px")
    aspect_ratios: tuple[float, ...] = Field((0.5, 1.0, 2.0), min_length=1)
    fpn: bool = False
    roi_size: int = Field(7, ge=1, le=32, description="RoIAlign output side")
    head_dim: int = Field(256, ge=8, description="width of the two fc layers of the box head")
    rpn_proposals: int = Field(300, ge=2, description="proposals kept per image after NMS in training")
    rois_per_image: int = Field(128, ge=1, description="sampled RoIs per image for the box head loss")
    score_threshold: float = Field(0.01, ge=0, lt=1, description="detections below are not kept")
    detections_per_image: int = Field(100, ge=1)
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.02, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    lr_decay_at: tuple[float, ...] = Field((0.67, 0.89), description="fractions of steps where lr drops x0.1")
    calibration_images: int = Field(16, ge=1, description="trainval images for input statistics and rescaling")
    rescale_iterations: int = Field(10, ge=0)
    rescale_damping: float = Field(0.5, gt=0, le=1)
    metric: Literal["voc07", "area"] = "voc07"
    log_every: int = Field(20, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    seeds: tuple[int, ...] = Field((0,), min_length=1, description="one run (and registry version) per init x seed")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA")

    @model_validator(mode="after")
    def _ranges(self) -> "DetectionConfig":
        lo, hi = self.scale_jitter
        if not 0 < lo <= hi:
            raise ValueError(f"scale_jitter ({lo}, {hi}) must satisfy 0 < low <= high")
        if any(not 0 < f < 1 for f in self.lr_decay_at):
            raise ValueError(f"lr_decay_at {list(self.lr_decay_at)}: every fraction must be in (0, 1)")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must be <= max_size ({self.max_size})")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds {list(self.seeds)}: expected distinct integers >= 0")
        if self.val_split in (self.train_split, self.test_split):
            raise ValueError(f"val_split {self.val_split!r} must differ from train_split and test_split")
        return self


class ProbeConfig(_Section):
    """``ctx probe``: frozen-feature probes of the encoder and its baselines on the
    store's labelled images (VOC07 linear SVMs on image features; kNN and logistic
    regression on object crops), each score with a bootstrap 95 % interval over
    test images. Probes are fitted on ``train_split`` (C by cross-validation inside
    it) and scored once on ``test_split``.
    """

    encoder: str = Field("models/context/encoder.pt", min_length=1,
                         description="encoder.pt path, models:/<name>@<alias> or models:/<name>/<version>")
    input: str = Field("data/raw_images", description="ingest store or VOC root with labelled splits")
    train_split: str = Field("trainval", min_length=1)
    test_split: str = Field("test", min_length=1)
    reports: str = Field("reports/probe", description="metrics.json, probe_table.md/.csv, probe_chart.png")
    layer: Literal["fc6", "pool5"] = "fc6"
    baselines: tuple[Literal["random_init", "raw_pixels"], ...] = ("random_init", "raw_pixels")
    raw_pixels_side: int = Field(8, ge=1, le=64)
    grid_stride_fraction: float = Field(1.0, gt=0, le=1, description="image features: grid step / patch side")
    max_images: int = Field(0, ge=0, description="per split, 0 = all")
    svm_costs: tuple[float, ...] = Field((0.01, 0.1, 1.0, 10.0, 100.0, 1000.0), min_length=1)
    cv_folds: int = Field(3, ge=2, le=10)
    knn_k: int = Field(20, ge=1)
    knn_temperature: float = Field(0.07, gt=0)
    min_crop: int = Field(8, ge=1, description="objects smaller than this (px, longer side) give no crop")
    bootstrap: int = Field(1000, ge=0, description="resamples of the test images for the 95 % intervals")
    audit_patches: int = Field(16, ge=0, description="absolute-position audit: patches per test image; 0 skips it")
    batch_size: int = Field(512, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast where native (CUDA, AVX512-BF16/AMX CPUs)")
    seed: int = Field(0, ge=0)


class CompareConfig(_Section):
    """The registry comparison of detector versions (``ctx compare``).

    A version is eligible for ``alias`` when its run finished, its mAP is
    finite, its encoder (when it has one in the registry) beats chance on the
    pretext task, and, with ``same_data_only``, it was scored on the data
    version the store holds now (mAPs on other test sets do not compare).
    """

    reports: str = Field("reports/compare", description="comparison.md, comparison.csv, comparison.png")
    alias: str = Field("champion", min_length=1, description="detector alias moved to the best eligible version")
    encoder_alias: str | None = Field("champion", description="encoder alias moved to the champion's encoder; null: leave it")
    same_data_only: bool = True
    max_versions: int = Field(200, ge=1, description="newest versions compared")


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
    probe: ProbeConfig = ProbeConfig()
    compare: CompareConfig = CompareConfig()
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
