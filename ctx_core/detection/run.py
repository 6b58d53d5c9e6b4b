"""``run_finetune``: one init's detector, trained, scored, logged and registered;
``run_detection_table``: the inits side by side."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ctx_core import distributed
from ctx_core.config import DetectionConfig, Settings
from ctx_core.detection.data import TrainingSet, calibration_images, input_statistics
from ctx_core.detection.evaluate import EvalResult, evaluate_detections
from ctx_core.detection.io import DETECTOR_FILE, save_detector
from ctx_core.detection.model import absorb_input_transform, build_detector, he_init
from ctx_core.detection.report import intervals_chart, paired_lines, pr_curves_plot, seeds_table_markdown
from ctx_core.detection.rescale import rescale_trunk
from ctx_core.detection.results import write_results
from ctx_core.detection.train import predict, train_detector
from ctx_core.store.labelled import DetectionSplit, read_detection_split
from ctx_core.encoder.artifact import EncoderContract, read_contract
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.models.towers import Tower, build_tower
from ctx_core.registry import load_encoder_ref, register_version, weights_digest
from ctx_core.stats import Interval, json_finite, paired_difference, t_interval
from ctx_core.tracking import tracking_uri

INITS = ("context", "scratch", "context_rescaled", "scratch_rescaled")
PRETRAINED = ("context", "context_rescaled")  # the inits that start from the encoder's weights


@dataclass(frozen=True)
class FinetuneResult:
    """One init x seed: a trained detector, scored once on the test split (and on val)."""

    init: str
    seed: int
    detector: Path
    metric: str
    mean_ap: float
    ap: dict[str, float]
    val_map: float               # NaN when detection.val_split is null
    steps: int
    seconds_per_step: float
    final_loss: float
    train_images: int
    test_images: int
    data_version: str
    encoder_version: str
    results_dir: Path
    reports: dict[str, Path]
    notes: tuple[str, ...]
    mlflow_run_id: str | None
    registered_version: str | None


@dataclass(frozen=True)
class FinetuneSummary:
    """Every seed of one init: test mAP and val mAP as means with 95 % t-intervals over seeds."""

    init: str
    metric: str
    runs: tuple[FinetuneResult, ...]
    test: Interval
    val: Interval
    ap: dict[str, float]         # per-class AP, mean over seeds
    metrics: Path | None         # reports/detection/inits/<init>/metrics.json (None on non-main ranks)

    @property
    def per_seed(self) -> dict[int, float]:
        return {r.seed: r.mean_ap for r in self.runs}

    @property
    def mean_ap(self) -> float:
        return self.test.mean

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for r in self.runs for n in r.notes))


def init_reports(settings: Settings, init: str) -> Path:
    """``reports/detection/inits/<init>``: the init's summary over seeds (metrics.json) and
    ``seeds/seed<k>/`` (metrics.json, curves.csv, pr_curves.png) per seed."""
    return settings.path(settings.params.detection.reports) / "inits" / init


def seed_folder(seed: int) -> str:
    return f"seed{seed}"


def _encoder_ref(settings: Settings, encoder_ref: str | None) -> str:
    ref = encoder_ref or settings.params.detection.encoder
    if ref.startswith("models:/"):
        return ref
    path = settings.path(ref)
    if not path.is_file():
        raise UserError(f"encoder {path} does not exist; run `ctx pretrain` or pass --encoder models:/ctx-encoder@<alias>")
    return str(path)


def load_tower(settings: Settings, init: str, encoder_ref: str | None) -> tuple[Tower, EncoderContract, str]:
    """The backbone tower for ``init``, the encoder's contract and a name of the encoder it came from
    (``none`` for scratch). Scratch is the encoder's architecture with fresh weights (drawn by
    ``model.he_init`` once the trunk is folded), so every init has the same network."""
    ref = _encoder_ref(settings, encoder_ref)
    if init not in PRETRAINED:
        contract = read_contract(Path(ref)) if not ref.startswith("models:/") else load_encoder_ref(ref, tracking_uri(settings))[1]
        return build_tower(contract.arch, contract.patch_size), contract, "none"
    tower, contract, meta = load_encoder_ref(ref, tracking_uri(settings))
    if "registry_version" in meta:
        return tower, contract, f"{meta['registry_name']}/{meta['registry_version']}"
    return tower, contract, f"file:{weights_digest(Path(ref))}"


def _network_inputs(model: torch.nn.Module, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Images as the trunk sees them at test time: normalised, resized, unpadded."""
    transform = model.transform
    was_training = transform.training
    transform.eval()
    out = [transform.resize(transform.normalize(img), None)[0] for img in images]
    transform.train(was_training)
    return out


def _split_classes(train: DetectionSplit, test: DetectionSplit) -> list[str]:
    if train.classes and set(train.classes) >= set(test.present_classes):
        return list(train.classes)
    return sorted(set(train.classes) | set(test.present_classes))


def run_finetune(
    settings: Settings,
    init: str,
    encoder_ref: str | None = None,
    resume: bool = False,
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
    seeds: Sequence[int] | None = None,
) -> FinetuneSummary:
    """Fine-tune and score one detector from ``init`` per seed of ``detection.seeds`` (or ``seeds``),
    then write the init's summary over seeds (``inits/<init>/metrics.json``): test and val mAP as
    means with 95 % t-intervals, the per-seed values, the per-class mean AP.

    Every init runs the same seeds, and a seed fixes the detection heads' initial weights, the
    training batches and the augmentation, so two inits can be compared seed by seed."""
    cfg = settings.params.detection
    if init not in INITS:
        raise UserError(f"init {init!r}: expected one of {', '.join(INITS)}")
    seeds = tuple(seeds) if seeds is not None else cfg.seeds
    splits = _read_splits(settings)
    runs = tuple(finetune_seed(settings, init, seed, encoder_ref, resume, extra_tags, progress, stop_after, splits)
                 for seed in seeds)
    test = t_interval([r.mean_ap for r in runs])
    val = t_interval([r.val_map for r in runs])
    classes = list(dict.fromkeys(c for r in runs for c in r.ap))
    ap = {c: float(np.mean([r.ap[c] for r in runs if c in r.ap])) for c in classes}
    if not distributed.from_env().main:
        return FinetuneSummary(init, cfg.metric, runs, test, val, ap, None)
    metrics = init_reports(settings, init) / "metrics.json"
    metrics.write_text(json.dumps(json_finite({
        "init": init, "metric": cfg.metric, "seeds": list(seeds), "n": test.n,
        "mAP": test.mean, "mAP_low": test.low, "mAP_high": test.high,
        "val_mAP": val.mean, "val_mAP_low": val.low, "val_mAP_high": val.high,
        "per_seed": {str(r.seed): r.mean_ap for r in runs}, "val_per_seed": {str(r.seed): r.val_map for r in runs},
        "ap": ap, "test_split": cfg.test_split, "val_split": cfg.val_split, "train_split": cfg.train_split,
        "steps": runs[0].steps, "train_images": runs[0].train_images, "test_images": runs[0].test_images,
        "encoder_version": runs[0].encoder_version, "data_version": runs[0].data_version,
        "registered_versions": {str(r.seed): r.registered_version for r in runs},
    }), indent=2, sort_keys=True) + "\n")
    return FinetuneSummary(init, cfg.metric, runs, test, val, ap, metrics)




@dataclass(frozen=True)
class _Splits:
    root: Path
    train: DetectionSplit
    val: DetectionSplit | None
    test: DetectionSplit
    classes: list[str]


def _read_splits(settings: Settings) -> _Splits:
    cfg = settings.params.detection
    root = settings.path(cfg.input)
    train = read_detection_split(root, cfg.train_split)
    test = read_detection_split(root, cfg.test_split)
    val = read_detection_split(root, cfg.val_split) if cfg.val_split else None
    for name, other in (("test_split", test), ("val_split", val)):
        overlap = {r.image_id for r in train.images} & {r.image_id for r in other.images} if other else set()
        if overlap:
            raise UserError(f"detection.train_split {cfg.train_split!r} and {name} {other.split!r} share "
                            f"{len(overlap)} images (e.g. {sorted(overlap)[0]}); an image scored must never be "
                            "trained on (train on `train` when scoring `val`)")
    return _Splits(root, train, val, test, _split_classes(train, test))


def _score(model: torch.nn.Module, split: DetectionSplit, classes: list[str], cfg: DetectionConfig,
           progress: bool | None) -> tuple[dict, EvalResult, list[str]]:
    detections = predict(model, split.images, classes, cfg, progress=progress)
    present = [c for c in classes if c in split.present_classes]
    evaluation = evaluate_detections(split, detections, present, cfg.metric)
    return detections, evaluation, present


def finetune_seed(
    settings: Settings,
    init: str,
    seed: int,
    encoder_ref: str | None = None,
    resume: bool = False,
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
    splits: _Splits | None = None,
) -> FinetuneResult:
    """Fine-tune a detector from ``init`` with ``seed`` on ``detection.train_split``; score it on
    ``val_split`` (for choices) and once on ``test_split`` (the reported number).

    Under ``torchrun`` every rank trains on its share of each global batch;
    rank 0 alone then scores, writes the detector, the results files and the
    reports and logs to MLflow. The other ranks return a result with
    ``mean_ap`` NaN and no files.
    """
    cfg = settings.params.detection
    env = distributed.from_env()
    if init not in INITS:
        raise UserError(f"init {init!r}: expected one of {', '.join(INITS)}")
    splits = splits or _read_splits(settings)
    root, train_split, test_split, classes = splits.root, splits.train, splits.test, splits.classes
    distributed.shard(cfg.batch_size, env, "detection.batch_size")  # fails before any run is opened
    tower, contract, encoder_version = load_tower(settings, init, encoder_ref)
    data = TrainingSet(train_split.images, classes, cfg.batch_size, seed, cfg.hflip, cfg.train_difficult)

    calib = calibration_images(train_split.images, cfg.calibration_images, seed)
    mean, std = input_statistics(calib)
    torch.manual_seed(seed + 1)  # the same RPN and box head weights for every init of this seed
    model = build_detector(tower, cfg, len(classes), mean, std)
    trunk = model.backbone.trunk
    if init in PRETRAINED:
        absorb_input_transform(trunk, contract.patch_rms, contract.chroma)
    else:
        he_init(trunk, seed)
    rescale = None
    if init.endswith("_rescaled") and not resume:
        rescale = rescale_trunk(trunk, _network_inputs(model, calib), cfg.rescale_iterations, cfg.rescale_damping, seed)

    out = settings.path(cfg.out) / init / seed_folder(seed)
    reports = init_reports(settings, init) / "seeds" / seed_folder(seed)
    data_version = dvc_dir_hash(root)
    ckpt_config = {**cfg.model_dump(mode="json"), "init": init, "seed": seed, "encoder_version": encoder_version,
                   "classes": classes, "data_version": data_version}
    tags = {"data_version": data_version, "init": init, "seed": str(seed), "encoder_version": encoder_version,
            **(extra_tags or {})}
    with distributed.stage_run_on_main(settings, "finetune", tags, env) as run:
        run.set_tags({"mlflow.runName": f"finetune-{init}-seed{seed}"})
        run.log_params({**cfg.model_dump(mode="json"), "init": init, "seed": seed, "encoder": encoder_ref or cfg.encoder,
                        **{f"encoder_{k}": v for k, v in contract.tags().items()},
                        "train_images": len(train_split.images), "test_images": len(test_split.images),
                        "classes": len(classes), "world_size": env.world})
        if rescale is not None:
            run.log_metrics({f"rescale_ratio_spread_{k}": max(r) / min(r) for k, r in
                             (("before", rescale.ratios_before), ("after", rescale.ratios_after))})
        trained = train_detector(model, data, cfg, out / "checkpoints", ckpt_config, resume=resume, progress=progress,
                                 stop_after=stop_after, desc=f"finetune {init} seed {seed}",
                                 on_log=lambda step, m: run.log_metrics(m, step=step), run_id=run.run_id, seed=seed)
        run.link_resumed(trained.resumed_from)
        if not env.main:
            return FinetuneResult(
                init=init, seed=seed, detector=out / DETECTOR_FILE, metric=cfg.metric, mean_ap=float("nan"), ap={},
                val_map=float("nan"), steps=trained.steps, seconds_per_step=trained.seconds_per_step,
                final_loss=trained.history[-1]["loss"] if trained.history else float("nan"),
                train_images=len(train_split.images), test_images=len(test_split.images), data_version=data_version,
                encoder_version=encoder_version, results_dir=out / "results", reports={}, notes=(),
                mlflow_run_id=None, registered_version=None,
            )
        val_map, val_notes = float("nan"), ()
        if splits.val is not None:
            _, val_eval, _ = _score(model, splits.val, classes, cfg, progress)
            val_map, val_notes = val_eval.mean_ap, tuple(f"val: {n}" for n in (*splits.val.notes, *val_eval.notes))
        detections, evaluation, present = _score(model, test_split, classes, cfg, progress)
        results_dir = out / "results"
        write_results(results_dir, cfg.test_split, detections)
        notes = (*train_split.notes, *test_split.notes, *evaluation.notes, *val_notes,
                 *(f"{c}: no object in split {cfg.test_split!r}; not scored" for c in classes if c not in present))
        detector = save_detector(out / DETECTOR_FILE, model, tower, cfg, classes, {
            "init": init, "seed": seed, "encoder_version": encoder_version, "data_version": data_version,
            "mAP": evaluation.mean_ap, "val_mAP": val_map, "metric": cfg.metric, "steps": trained.steps,
        })
        final_loss = trained.history[-1]["loss"] if trained.history else float("nan")
        files = _write_reports(reports, init, evaluation, trained.history, {
            "init": init, "seed": seed, "metric": cfg.metric, "mAP": evaluation.mean_ap, "ap": evaluation.ap,
            "val_mAP": val_map if math.isfinite(val_map) else None, "steps": trained.steps, "seconds_per_step": trained.seconds_per_step, "final_loss": final_loss,
            "train_images": len(train_split.images), "test_images": len(test_split.images),
            "encoder_version": encoder_version, "data_version": data_version, "notes": list(notes),
        })
        run.log_metrics({"mAP": evaluation.mean_ap, **{f"AP_{c}": v for c, v in evaluation.ap.items()},
                         **({"val_mAP": val_map} if math.isfinite(val_map) else {}),
                         "seconds_per_step": trained.seconds_per_step})
        for path in files.values():
            run.log_artifact(path, "detection")
        run.log_artifact(detector, "detector")
        registered_run = run.run_id if run.connected else None  # a lost tracking server: the detector is on disk
        version = _register(settings, cfg, registered_run, init, seed, encoder_version, data_version, evaluation,
                            val_map)
        if version:
            run.set_tags({"registered_version": version})
    return FinetuneResult(
        init=init, seed=seed, detector=detector, metric=cfg.metric, mean_ap=evaluation.mean_ap, ap=evaluation.ap,
        val_map=val_map, steps=trained.steps, seconds_per_step=trained.seconds_per_step, final_loss=final_loss,
        train_images=len(train_split.images), test_images=len(test_split.images), data_version=data_version,
        encoder_version=encoder_version, results_dir=results_dir, reports=files, notes=notes,
        mlflow_run_id=run.run_id, registered_version=version,
    )


def _write_reports(folder: Path, init: str, evaluation: EvalResult, history: list[dict[str, float]],
                   metrics: dict[str, Any]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(json_finite(metrics), indent=2, sort_keys=True) + "\n")
    with open(folder / "curves.csv", "w") as f:
        f.write("step,loss,lr\n")
        for h in history:
            f.write(f"{int(h['step'])},{h['loss']:.5f},{h['lr']:.6g}\n")
    return {
        "metrics": folder / "metrics.json",
        "curves_csv": folder / "curves.csv",
        "pr_curves": pr_curves_plot(evaluation, folder / "pr_curves.png", f"init {init}"),
    }


def _register(settings: Settings, cfg: DetectionConfig, run_id: str | None, init: str, seed: int, encoder_version: str,
              data_version: str, evaluation: EvalResult, val_map: float) -> str | None:
    if not run_id:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri(settings))
    try:
        client.get_registered_model(cfg.registered_model)
    except MlflowException:
        client.create_registered_model(cfg.registered_model, description="Faster R-CNN detectors on context encoders (ctx finetune)")
    return register_version(client, cfg.registered_model, run_id, "detector", {
        "init": init, "seed": seed, "encoder_version": encoder_version, "data_version": data_version,
        "mAP": f"{evaluation.mean_ap:.4f}", "metric": evaluation.metric,
        **({"val_mAP": f"{val_map:.4f}"} if math.isfinite(val_map) else {}),
    }, description=f"init {init}, seed {seed}, test mAP {100 * evaluation.mean_ap:.1f} ({evaluation.metric})").version


@dataclass(frozen=True)
class TableResult:
    markdown: Path
    csv: Path
    chart: Path
    summary: Path
    rows: dict[str, dict[str, float]]          # init -> class -> mean AP over seeds, and "mAP"
    intervals: dict[str, Interval]             # init -> test mAP over seeds
    per_seed: dict[str, dict[str, float]]      # init -> seed -> test mAP
    differences: dict[tuple[str, str], Interval]  # (a, b) -> a - b paired by seed
    lines: list[str]                           # the paired differences, as printed
    classes: list[str]
    missing: list[str]


def run_detection_table(settings: Settings) -> TableResult:
    """From each init's ``metrics.json`` (its seeds): ``ap_table.md``/``.csv`` (mean AP per class, mAP
    with its 95 % interval over seeds and each seed's value), the paired difference of every pair of
    inits over their common seeds, ``ap_chart.png`` and ``summary.json`` (``dvc metrics show``)."""
    cfg = settings.params.detection
    rows: dict[str, dict[str, float]] = {}
    intervals: dict[str, Interval] = {}
    per_seed: dict[str, dict[str, float]] = {}
    classes: list[str] = []
    missing, metric = [], cfg.metric
    for init in cfg.inits:
        path = init_reports(settings, init) / "metrics.json"
        if not path.is_file():
            missing.append(init)
            continue
        m = json.loads(path.read_text())
        if "per_seed" not in m:
            raise UserError(f"{path} has no per-seed results (written before detection.seeds existed); "
                            f"run `ctx finetune --init {init}` again")
        per_seed[init] = {k: float(v) for k, v in m["per_seed"].items() if v is not None}
        intervals[init] = t_interval(list(per_seed[init].values()))
        rows[init] = {**m["ap"], "mAP": intervals[init].mean}
        classes += [c for c in m["ap"] if c not in classes]
        metric = m["metric"]
    if not rows:
        raise UserError(f"no fine-tuned init in {settings.path(cfg.reports) / 'inits'} "
                        f"(looked for {', '.join(cfg.inits)}); run `ctx finetune --init <init>` first")
    names = list(rows)
    differences = {(a, b): paired_difference(per_seed[a], per_seed[b])
                   for i, a in enumerate(names) for b in names[i + 1:]}
    lines = paired_lines(differences)
    folder = settings.path(cfg.reports)
    md = seeds_table_markdown(rows, intervals, per_seed, classes, metric, cfg.test_split)
    md += "\nPaired differences over common seeds (95 % t-interval):\n\n" + "".join(f"- {x}\n" for x in lines)
    (folder / "ap_table.md").write_text(md)
    csv_lines = [",".join(["init", *classes, "mAP", "mAP_low", "mAP_high", "n", *(f"seed{k}" for k in sorted(
        {k for v in per_seed.values() for k in v}, key=int))])]
    all_seeds = sorted({k for v in per_seed.values() for k in v}, key=int)
    for init in names:
        ci = intervals[init]
        csv_lines.append(",".join([init, *(f"{rows[init].get(c, float('nan')):.4f}" for c in classes),
                                   f"{ci.mean:.4f}", f"{ci.low:.4f}", f"{ci.high:.4f}", str(ci.n),
                                   *(f"{per_seed[init][k]:.4f}" if k in per_seed[init] else "" for k in all_seeds)]))
    (folder / "ap_table.csv").write_text("\n".join(csv_lines) + "\n")
    chart = intervals_chart(intervals, per_seed, folder / "ap_chart.png",
                            f"test mAP ({metric}), mean and 95 % interval over seeds")
    summary = {
        **{f"{init}_mAP": ci.mean for init, ci in intervals.items()},
        **{f"{init}_mAP_low": ci.low for init, ci in intervals.items()},
        **{f"{init}_mAP_high": ci.high for init, ci in intervals.items()},
        **{f"{init}_n": ci.n for init, ci in intervals.items()},
        **{f"{a}_minus_{b}": d.mean for (a, b), d in differences.items()},
        **{f"{a}_minus_{b}_low": d.low for (a, b), d in differences.items()},
        **{f"{a}_minus_{b}_high": d.high for (a, b), d in differences.items()},
    }
    (folder / "summary.json").write_text(json.dumps(json_finite(summary), indent=2, sort_keys=True) + "\n")
    return TableResult(folder / "ap_table.md", folder / "ap_table.csv", chart, folder / "summary.json", rows, intervals,
                       per_seed, differences, lines, classes, missing)
