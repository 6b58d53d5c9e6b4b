"""``run_probe``: frozen-feature probes of the encoder, a random-init tower of its
architecture and raw pixels, on the same labelled images, with bootstrap intervals.

Scores (``probe.reports``/metrics.json, MLflow, Dagster metadata), each with its
95 % percentile-bootstrap interval over test images and, for the baselines, the
paired difference to the learned encoder on the same resamples:

- ``svm_map``: VOC07 protocol, mean over classes of the test AP;
- ``knn_top1``: weighted kNN top-1 accuracy on object crops;
- ``logreg_top1``: logistic-regression top-1 accuracy on object crops.

It also repeats pretraining's absolute-position audit (``encoder.position_audit``)
on the test images, so an encoder from anywhere (a registry version, another
machine) gets audited where it is evaluated.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctx_core.config import Settings
from ctx_core.distributed import bf16_autocast
from ctx_core.encoder.artifact import EncoderContract
from ctx_core.encoder.embed import Embedder, pick_device, random_init_tower, raw_pixel_embedder, tower_embedder
from ctx_core.encoder.position_audit import AuditResult, audit_position
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.probe.features import image_features, image_labels, object_crops, embed_all
from ctx_core.probe.protocols import knn_predict, logistic_predict, svm_voc07, weighted_average_precision
from ctx_core.probe.report import probe_chart, probe_table_csv, probe_table_markdown
from ctx_core.registry import load_encoder_ref, weights_digest
from ctx_core.stats import Interval, bootstrap_indices, json_finite
from ctx_core.store.images import UnreadableImageError, read_image
from ctx_core.store.labelled import DatasetError, DetectionSplit, read_detection_split
from ctx_core.tracking import stage_run, tracking_uri

LEARNED = "learned"
PROTOCOLS = ("svm_map", "knn_top1", "logreg_top1")


@dataclass(frozen=True)
class ProbeResult:
    """``scores[protocol][featuriser]``: the score with its interval; ``differences[protocol][baseline]``:
    learned - baseline, paired on the same resamples; ``skipped``: why no probe ran (no labels)."""

    scores: dict[str, dict[str, Interval]]
    differences: dict[str, dict[str, Interval]]
    notes: tuple[str, ...]
    encoder_version: str
    data_version: str
    train_images: int
    test_images: int
    test_crops: int
    seconds: float
    reports: dict[str, Path]
    mlflow_run_id: str | None
    skipped: str | None = None
    costs: dict[str, Any] = field(default_factory=dict)
    audit: AuditResult | None = None   # absolute-position audit, learned vs random-init, on the test images

    def verdict(self, protocol: str = "svm_map", baseline: str = "random_init") -> str:
        """Whether the learned encoder beats ``baseline`` on ``protocol`` beyond noise, in words."""
        if self.skipped:
            return f"probes skipped: {self.skipped}"
        d = self.differences.get(protocol, {}).get(baseline)
        if d is None:
            return f"no {baseline} baseline"
        a, b = self.scores[protocol][LEARNED], self.scores[protocol][baseline]
        separate = not a.overlaps(b)
        if d.excludes_zero and d.mean > 0:
            how = "non-overlapping intervals" if separate else "overlapping intervals, paired difference excludes 0"
            return f"learned beats {baseline} on {protocol} ({how}): {d.format(100, signed=True)}"
        if d.excludes_zero:
            return f"learned is worse than {baseline} on {protocol}: {d.format(100, signed=True)}"
        return f"learned does not beat {baseline} on {protocol} beyond noise: {d.format(100, signed=True)}"


def _encoder(settings: Settings) -> tuple[Any, EncoderContract, str]:
    ref = settings.params.probe.encoder
    resolved = ref if ref.startswith("models:/") else str(settings.path(ref))
    if not ref.startswith("models:/") and not Path(resolved).is_file():
        raise UserError(f"probe.encoder {resolved} does not exist; run `ctx pretrain` or set probe.encoder "
                        "to models:/ctx-encoder@<alias>")
    tower, contract, meta = load_encoder_ref(resolved, tracking_uri(settings))
    contract.layer_size(settings.params.probe.layer, "probe.layer")
    version = (f"{meta['registry_name']}/{meta['registry_version']}" if "registry_version" in meta
               else f"file:{weights_digest(Path(resolved))}")
    return tower, contract, version


def _splits(settings: Settings) -> tuple[DetectionSplit, DetectionSplit] | str:
    """The train and test splits, or why the probes cannot run (a store without labels)."""
    cfg = settings.params.probe
    root = settings.path(cfg.input)
    try:
        train = read_detection_split(root, cfg.train_split)
        test = read_detection_split(root, cfg.test_split)
    except DatasetError as exc:
        return f"no labelled images ({exc})"
    if cfg.max_images:
        train = DetectionSplit(train.root, train.split, train.classes, train.images[:cfg.max_images], train.notes)
        test = DetectionSplit(test.root, test.split, test.classes, test.images[:cfg.max_images], test.notes)
    if not train.object_count() or not test.object_count():
        return f"split {cfg.train_split!r} or {cfg.test_split!r} of {root} has no annotated object"
    return train, test


def _readable(split: DetectionSplit, notes: list[str]) -> DetectionSplit:
    """``split`` without the images that cannot be decoded (each named in ``notes``): one bad
    image does not stop the probes."""
    keep = []
    for rec in split.images:
        try:
            read_image(rec.path)
        except UnreadableImageError as exc:
            notes.append(f"skipped: {exc}")
            continue
        keep.append(rec)
    return DetectionSplit(split.root, split.split, split.classes, tuple(keep), split.notes)


def _check_sizes(split: DetectionSplit, contract: EncoderContract) -> None:
    small = [r for r in split.images if min(r.width, r.height) < contract.patch_size]
    if len(small) == len(split.images):
        sizes = sorted({(r.width, r.height) for r in small})[:3]
        raise UserError(f"the encoder takes {contract.patch_size}-px patches but every image of split {split.split!r} "
                        f"is smaller (e.g. {', '.join(f'{w}x{h}' for w, h in sizes)} px); use an encoder with a "
                        "smaller patch size or larger images")


def _skip(settings: Settings, reason: str, t0: float) -> ProbeResult:
    folder = settings.path(settings.params.probe.reports)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
    with stage_run(settings, "probe") as run:
        run.set_tags({"skipped": reason[:5000]})
    return ProbeResult({}, {}, (reason,), "", "", 0, 0, 0, time.perf_counter() - t0,
                       {"metrics": folder / "metrics.json"}, run.run_id, skipped=reason)


def run_probe(settings: Settings, extra_tags: dict[str, str] | None = None, progress: bool | None = None) -> ProbeResult:
    """Fit and score every probe for the encoder and each of ``probe.baselines``; write the reports."""
    cfg = settings.params.probe
    t0 = time.perf_counter()
    tower, contract, encoder_version = _encoder(settings)
    splits = _splits(settings)
    if isinstance(splits, str):
        return _skip(settings, splits, t0)
    train, test = splits
    unreadable: list[str] = []
    train, test = _readable(train, unreadable), _readable(test, unreadable)
    _check_sizes(train, contract)
    _check_sizes(test, contract)
    classes = [c for c in train.classes if c in set(train.present_classes) | set(test.present_classes)]
    device = pick_device(cfg.device, "probe.device")
    amp = bf16_autocast(cfg.amp, device)
    embedders: list[Embedder] = [tower_embedder(LEARNED, tower, cfg.layer, device, amp)]
    for name in cfg.baselines:
        if name == "random_init":
            embedders.append(tower_embedder(name, random_init_tower(contract.arch, contract.patch_size, cfg.seed),
                                            cfg.layer, device, amp))
        else:
            embedders.append(raw_pixel_embedder(cfg.raw_pixels_side))
    names = [e.name for e in embedders]

    from tqdm import tqdm

    with tqdm(total=len(train.images) + len(test.images), desc="probe features", unit="img",
              disable=progress is False) as bar:
        train_img = image_features(train.images, embedders, contract, cfg.grid_stride_fraction, cfg.batch_size, bar)
        test_img = image_features(test.images, embedders, contract, cfg.grid_stride_fraction, cfg.batch_size, bar)
    train_crops = object_crops(train.images, classes, contract.patch_size, cfg.min_crop)
    test_crops = object_crops(test.images, classes, contract.patch_size, cfg.min_crop)
    train_y, test_y = image_labels(train.images, classes), image_labels(test.images, classes)

    n_test = len(test.images)
    idx = bootstrap_indices(n_test, cfg.bootstrap, cfg.seed) if cfg.bootstrap else np.zeros((0, n_test), np.int64)
    counts = np.stack([np.bincount(row, minlength=n_test) for row in idx]) if len(idx) else np.zeros((0, n_test))
    weights = np.vstack([np.ones((1, n_test)), counts])  # row 0: the test set itself

    notes: list[str] = [*train.notes, *test.notes, *unreadable]
    per_resample: dict[str, dict[str, np.ndarray]] = {p: {} for p in PROTOCOLS}
    costs: dict[str, Any] = {}
    for e in embedders:
        svm = svm_voc07(train_img[e.name], train_y, test_img[e.name], test_y, cfg.svm_costs, cfg.cv_folds, cfg.seed)
        if e.name == LEARNED:
            notes += [f"{c}: not in the SVM mean ({why})" for c, why in svm.skipped.items()]
        if svm.unconverged:
            notes.append(f"{e.name}: liblinear reached max_iter for some C during cross-validation of "
                         f"{', '.join(svm.unconverged)} (the chosen C is the best-scoring one regardless)")
        aps = np.stack([weighted_average_precision(svm.scores[c], svm.labels[c], weights) for c in svm.scores]) \
            if svm.scores else np.full((1, len(weights)), np.nan)
        per_resample["svm_map"][e.name] = np.nanmean(aps, axis=0) if svm.scores else aps[0]
        costs[f"svm_C_{e.name}"] = svm.costs
        if len(train_crops.labels) and len(test_crops.labels):
            tr = embed_all(e, train_crops.pixels, contract, cfg.batch_size)
            te = embed_all(e, test_crops.pixels, contract, cfg.batch_size)
            knn = knn_predict(tr, train_crops.labels, te, cfg.knn_k, cfg.knn_temperature, len(classes))
            logreg, c_logreg = logistic_predict(tr, train_crops.labels, te, cfg.cv_folds, cfg.seed)
            costs[f"logreg_C_{e.name}"] = c_logreg
            crops_per_image = np.bincount(test_crops.image, minlength=n_test)
            for protocol, pred in (("knn_top1", knn), ("logreg_top1", logreg)):
                correct = np.bincount(test_crops.image, (pred == test_crops.labels).astype(float), minlength=n_test)
                with np.errstate(invalid="ignore", divide="ignore"):
                    per_resample[protocol][e.name] = (weights @ correct) / (weights @ crops_per_image)
        else:
            for protocol in ("knn_top1", "logreg_top1"):
                per_resample[protocol][e.name] = np.full(len(weights), np.nan)
    if not len(test_crops.labels):
        notes.append("no object crop in the test split: kNN and logistic probes not scored")

    def interval(values: np.ndarray) -> Interval:
        point, rest = float(values[0]), values[1:]
        rest = rest[np.isfinite(rest)]
        if len(rest) < max(10, cfg.bootstrap // 2):
            return Interval(point, float("nan"), float("nan"), n_test)
        low, high = np.percentile(rest, [2.5, 97.5])
        return Interval(point, float(low), float(high), n_test)

    audit = None
    if cfg.audit_patches and "random_init" in names and n_test >= 4:
        by_name = {e.name: e for e in embedders}
        audit = audit_position({LEARNED: by_name[LEARNED], "random_init": by_name["random_init"]}, contract,
                               [r.path for r in test.images], cfg.audit_patches, cfg.seed, cfg.bootstrap)
        if audit.warning():
            notes.append(f"position audit: {audit.warning()}")

    scores = {p: {n: interval(per_resample[p][n]) for n in names} for p in PROTOCOLS}
    differences = {p: {n: interval(per_resample[p][LEARNED] - per_resample[p][n]) for n in names if n != LEARNED}
                   for p in PROTOCOLS}
    data_version = dvc_dir_hash(settings.path(cfg.input)) if settings.path(cfg.input).is_dir() else ""
    seconds = time.perf_counter() - t0

    folder = settings.path(cfg.reports)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {**_metrics(scores, differences), **(audit.metrics() if audit else {})}
    summary = {**metrics, "train_images": len(train.images), "test_images": n_test,
               "train_crops": int(len(train_crops.labels)), "test_crops": int(len(test_crops.labels)),
               "classes": len(classes), "bootstrap": cfg.bootstrap, "seconds": round(seconds, 1),
               "unreadable_images": len(unreadable),
               "encoder_version": encoder_version, "notes": notes, **{k: v for k, v in costs.items()}}
    (folder / "metrics.json").write_text(json.dumps(json_finite(summary), indent=2, sort_keys=True) + "\n")
    files = {
        "metrics": folder / "metrics.json",
        "table_md": folder / "probe_table.md",
        "table_csv": folder / "probe_table.csv",
    }
    # every score's value on the test set (row 0) and on each bootstrap resample: the resamples are a
    # function of (test images, probe.bootstrap, probe.seed), so two encoders probed on the same store
    # can be compared paired, resample by resample (ctx task_table)
    files["per_resample"] = folder / "per_resample.npz"
    with open(files["per_resample"], "wb") as f:
        np.savez_compressed(f, test_images=np.array([r.path.name for r in test.images]),
                            **{f"{p}__{n}": per_resample[p][n] for p in PROTOCOLS for n in names})
    files["table_md"].write_text(probe_table_markdown(scores, differences, n_test, int(len(test_crops.labels)),
                                                      cfg.test_split))
    files["table_csv"].write_text(probe_table_csv(scores))
    files["chart"] = probe_chart(scores, folder / "probe_chart.png",
                                 f"frozen-feature probes, 95 % bootstrap intervals over {n_test} test images")

    tags = {"encoder_version": encoder_version, "encoder_task": contract.task, "data_version": data_version,
            **(extra_tags or {})}
    with stage_run(settings, "probe", tags) as run:
        run.log_params({**cfg.model_dump(mode="json"), **{f"encoder_{k}": v for k, v in contract.tags().items()},
                        "train_images": len(train.images), "test_images": n_test, "classes": len(classes),
                        "unreadable_images": len(unreadable)})
        run.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        for path in files.values():
            run.log_artifact(path, "probe")
    return ProbeResult(scores, differences, tuple(notes), encoder_version, data_version, len(train.images), n_test,
                       int(len(test_crops.labels)), seconds, files, run.run_id, costs=costs, audit=audit)


def _metrics(scores: dict[str, dict[str, Interval]], differences: dict[str, dict[str, Interval]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p, by in scores.items():
        for n, ci in by.items():
            out.update({f"{p}_{n}": ci.mean, f"{p}_{n}_low": ci.low, f"{p}_{n}_high": ci.high})
    for p, by in differences.items():
        for n, ci in by.items():
            out.update({f"{p}_learned_minus_{n}": ci.mean, f"{p}_learned_minus_{n}_low": ci.low,
                        f"{p}_learned_minus_{n}_high": ci.high})
    return out


