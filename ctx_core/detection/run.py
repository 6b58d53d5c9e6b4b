"""``run_finetune``: one init's detector, trained, scored, logged and registered;
``run_detection_table``: the inits side by side."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctx_core import distributed
from ctx_core.config import DetectionConfig, Settings
from ctx_core.detection.data import TrainingSet, calibration_images, input_statistics
from ctx_core.detection.evaluate import EvalResult, evaluate_detections
from ctx_core.detection.io import DETECTOR_FILE, save_detector
from ctx_core.detection.model import absorb_input_transform, build_detector, he_init
from ctx_core.detection.report import ap_table_csv, ap_table_markdown, pr_curves_plot
from ctx_core.detection.rescale import rescale_trunk
from ctx_core.detection.results import write_results
from ctx_core.detection.train import predict, train_detector
from ctx_core.store.labelled import DetectionSplit, read_detection_split
from ctx_core.encoder.artifact import EncoderContract, read_contract
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.models.towers import Tower, build_tower
from ctx_core.registry import load_encoder_ref, register_version, weights_digest
from ctx_core.tracking import tracking_uri

INITS = ("context", "scratch", "context_rescaled")


@dataclass(frozen=True)
class FinetuneResult:
    init: str
    detector: Path
    metric: str
    mean_ap: float
    ap: dict[str, float]
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


def init_reports(settings: Settings, init: str) -> Path:
    return settings.path(settings.params.detection.reports) / "inits" / init


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
    if init == "scratch":
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
) -> FinetuneResult:
    """Fine-tune a detector from ``init`` on ``detection.train_split``, score it on ``test_split``.

    Under ``torchrun`` every rank trains on its share of each global batch;
    rank 0 alone then scores the test split, writes the detector, the results
    files and the reports and logs to MLflow. The other ranks return a result
    with ``mean_ap`` NaN and no files.
    """
    cfg = settings.params.detection
    env = distributed.from_env()
    if init not in INITS:
        raise UserError(f"init {init!r}: expected one of {', '.join(INITS)}")
    root = settings.path(cfg.input)
    train_split = read_detection_split(root, cfg.train_split)
    test_split = read_detection_split(root, cfg.test_split)
    classes = _split_classes(train_split, test_split)
    distributed.shard(cfg.batch_size, env, "detection.batch_size")  # fails before any run is opened
    tower, contract, encoder_version = load_tower(settings, init, encoder_ref)
    data = TrainingSet(train_split.images, classes, cfg.batch_size, cfg.seed, cfg.hflip, cfg.train_difficult)

    calib = calibration_images(train_split.images, cfg.calibration_images, cfg.seed)
    mean, std = input_statistics(calib)
    torch.manual_seed(cfg.seed + 1)  # the same RPN and box head weights for every init
    model = build_detector(tower, cfg, len(classes), mean, std)
    trunk = model.backbone.trunk
    if init == "scratch":
        he_init(trunk, cfg.seed)
    else:
        absorb_input_transform(trunk, contract.patch_rms, contract.chroma)
    rescale = None
    if init == "context_rescaled" and not resume:
        rescale = rescale_trunk(trunk, _network_inputs(model, calib), cfg.rescale_iterations, cfg.rescale_damping, cfg.seed)

    out = settings.path(cfg.out) / init
    reports = init_reports(settings, init)
    data_version = dvc_dir_hash(root)
    ckpt_config = {**cfg.model_dump(mode="json"), "init": init, "encoder_version": encoder_version,
                   "classes": classes, "data_version": data_version}
    tags = {"data_version": data_version, "init": init, "encoder_version": encoder_version, **(extra_tags or {})}
    with distributed.stage_run_on_main(settings, "finetune", tags, env) as run:
        run.set_tags({"mlflow.runName": f"finetune-{init}"})
        run.log_params({**cfg.model_dump(mode="json"), "init": init, "encoder": encoder_ref or cfg.encoder,
                        **{f"encoder_{k}": v for k, v in contract.tags().items()},
                        "train_images": len(train_split.images), "test_images": len(test_split.images),
                        "classes": len(classes), "world_size": env.world})
        if rescale is not None:
            run.log_metrics({f"rescale_ratio_spread_{k}": max(r) / min(r) for k, r in
                             (("before", rescale.ratios_before), ("after", rescale.ratios_after))})
        trained = train_detector(model, data, cfg, out / "checkpoints", ckpt_config, resume=resume, progress=progress,
                                 stop_after=stop_after, desc=f"finetune {init}",
                                 on_log=lambda step, m: run.log_metrics(m, step=step))
        if not env.main:
            return FinetuneResult(
                init=init, detector=out / DETECTOR_FILE, metric=cfg.metric, mean_ap=float("nan"), ap={},
                steps=trained.steps, seconds_per_step=trained.seconds_per_step,
                final_loss=trained.history[-1]["loss"] if trained.history else float("nan"),
                train_images=len(train_split.images), test_images=len(test_split.images), data_version=data_version,
                encoder_version=encoder_version, results_dir=out / "results", reports={}, notes=(),
                mlflow_run_id=None, registered_version=None,
            )
        detections = predict(model, test_split.images, classes, cfg, progress=progress)
        results_dir = out / "results"
        write_results(results_dir, cfg.test_split, detections)
        present = [c for c in classes if c in test_split.present_classes]
        evaluation = evaluate_detections(test_split, detections, present, cfg.metric)
        notes = (*train_split.notes, *test_split.notes, *evaluation.notes,
                 *(f"{c}: no object in split {cfg.test_split!r}; not scored" for c in classes if c not in present))
        detector = save_detector(out / DETECTOR_FILE, model, tower, cfg, classes, {
            "init": init, "encoder_version": encoder_version, "data_version": data_version,
            "mAP": evaluation.mean_ap, "metric": cfg.metric, "steps": trained.steps,
        })
        final_loss = trained.history[-1]["loss"] if trained.history else float("nan")
        files = _write_reports(reports, init, evaluation, trained.history, {
            "init": init, "metric": cfg.metric, "mAP": evaluation.mean_ap, "ap": evaluation.ap,
            "steps": trained.steps, "seconds_per_step": trained.seconds_per_step, "final_loss": final_loss,
            "train_images": len(train_split.images), "test_images": len(test_split.images),
            "encoder_version": encoder_version, "data_version": data_version, "notes": list(notes),
        })
        run.log_metrics({"mAP": evaluation.mean_ap, **{f"AP_{c}": v for c, v in evaluation.ap.items()},
                         "seconds_per_step": trained.seconds_per_step})
        for path in files.values():
            run.log_artifact(path, "detection")
        run.log_artifact(detector, "detector")
        version = _register(settings, cfg, run.run_id, init, encoder_version, data_version, evaluation)
        if version:
            run.set_tags({"registered_version": version})
    return FinetuneResult(
        init=init, detector=detector, metric=cfg.metric, mean_ap=evaluation.mean_ap, ap=evaluation.ap,
        steps=trained.steps, seconds_per_step=trained.seconds_per_step, final_loss=final_loss,
        train_images=len(train_split.images), test_images=len(test_split.images), data_version=data_version,
        encoder_version=encoder_version, results_dir=results_dir, reports=files, notes=notes,
        mlflow_run_id=run.run_id, registered_version=version,
    )


def _write_reports(folder: Path, init: str, evaluation: EvalResult, history: list[dict[str, float]],
                   metrics: dict[str, Any]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    with open(folder / "curves.csv", "w") as f:
        f.write("step,loss,lr\n")
        for h in history:
            f.write(f"{int(h['step'])},{h['loss']:.5f},{h['lr']:.6g}\n")
    return {
        "metrics": folder / "metrics.json",
        "curves_csv": folder / "curves.csv",
        "pr_curves": pr_curves_plot(evaluation, folder / "pr_curves.png", f"init {init}"),
    }


def _register(settings: Settings, cfg: DetectionConfig, run_id: str | None, init: str, encoder_version: str,
              data_version: str, evaluation: EvalResult) -> str | None:
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
        "init": init, "encoder_version": encoder_version, "data_version": data_version,
        "mAP": f"{evaluation.mean_ap:.4f}", "metric": evaluation.metric,
    }, description=f"init {init}, mAP {100 * evaluation.mean_ap:.1f} ({evaluation.metric})").version


@dataclass(frozen=True)
class TableResult:
    markdown: Path
    csv: Path
    rows: dict[str, dict[str, float]]
    classes: list[str]
    missing: list[str]


def run_detection_table(settings: Settings) -> TableResult:
    """``ap_table.md`` and ``ap_table.csv`` in ``detection.reports`` from each init's metrics.json."""
    cfg = settings.params.detection
    rows: dict[str, dict[str, float]] = {}
    classes: list[str] = []
    missing, metric = [], cfg.metric
    for init in cfg.inits:
        path = init_reports(settings, init) / "metrics.json"
        if not path.is_file():
            missing.append(init)
            continue
        m = json.loads(path.read_text())
        rows[init] = {**m["ap"], "mAP": m["mAP"]}
        classes += [c for c in m["ap"] if c not in classes]
        metric = m["metric"]
    if not rows:
        raise UserError(f"no fine-tuned init in {settings.path(cfg.reports) / 'inits'} "
                        f"(looked for {', '.join(cfg.inits)}); run `ctx finetune --init <init>` first")
    folder = settings.path(cfg.reports)
    (folder / "ap_table.md").write_text(ap_table_markdown(rows, classes, metric))
    (folder / "ap_table.csv").write_text(ap_table_csv(rows, classes))
    return TableResult(folder / "ap_table.md", folder / "ap_table.csv", rows, classes, missing)
