"""``run_pretrain``: train the encoder on ``pretrain.task`` (context prediction by default; rotation,
jigsaw, instance: :mod:`ctx_core.pretext.tasks`), evaluate it, log and register it.

Before training, images whose content is in the test split are refused
(``pretrain.allow_test_images``). The held-out images are halved into a pretext
validation set (``val_accuracy``, the absolute-position audit, the chromatic
diagnostic: what choices are made on) and a pretext test set
(``held_out_accuracy``, scored once, the reported number and the encoder's gate).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


from ctx_core import distributed
from ctx_core.config import PretrainConfig, Settings
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.encoder.artifact import EncoderContract, save_encoder
from ctx_core.encoder.embed import random_init_tower, tower_embedder
from ctx_core.encoder.position_audit import AuditResult, audit_position
from ctx_core.models.towers import Tower
from ctx_core.pretext.chroma_diagnostic import chroma_diagnostic
from ctx_core.pretext.data import ImageList, split_held_out, split_val_test, usable_images
from ctx_core.pretext.evaluate import confusion_plot, curves_plot
from ctx_core.pretext.tasks import get_task
from ctx_core.pretext.train import distributed_from_env, pick_device, train
from ctx_core.registry import ENCODER_FILE, register_version, weights_digest
from ctx_core.store.layout import image_files, images_in_split
from ctx_core.tracking import tracking_uri

# the audit regresses on half of its images and scores on the other half
AUDIT_MIN_IMAGES = 4


class LeakedTestImages(UserError):
    """Images to pretrain on whose content is in the test split."""


@dataclass(frozen=True)
class PretrainResult:
    encoder: Path
    held_out_accuracy: float  # the pretext test images: the reported number
    train_images: int
    held_out_images: int
    skipped_images: int
    steps: int
    pairs_per_second: float  # the task's items per second: pairs (context), crops, puzzles, images
    data_version: str
    reports: dict[str, Path]
    mlflow_run_id: str | None
    registered_version: str | None
    chance_accuracy: float = float("nan")  # the most frequent held-out label's share (metrics.json)
    val_accuracy: float = float("nan")  # the pretext validation images: for choices
    val_images: int = 0
    test_images: int = 0
    position_audit: dict[str, float] = field(default_factory=dict)  # AuditResult.metrics(); empty when skipped
    position_warning: str | None = None
    test_images_pretrained: int = 0  # only with pretrain.allow_test_images
    notes: tuple[str, ...] = ()  # what was skipped, and why
    warnings: tuple[str, ...] = ()  # one line each, for the CLI and Dagster to show
    task: str = "context"
    tower_passes_per_second: float = 0.0



def params_hash(cfg: PretrainConfig) -> str:
    """sha256 prefix of the ``pretrain`` section, recorded in the encoder's contract."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def guard_test_images(root: Path, paths: Sequence[Path], cfg: PretrainConfig) -> list[str]:
    """Names of ``paths`` whose content is in ``cfg.test_split``; raises :class:`LeakedTestImages`
    (one line: how many, which splits, the first ids, how to allow it) unless ``cfg.allow_test_images``."""
    leaked = images_in_split(root, paths, cfg.test_split)
    if leaked and not cfg.allow_test_images:
        shown = ", ".join(leaked[:5]) + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
        raise LeakedTestImages(
            f"pretrain.input {root}: {len(leaked)} of the {len(paths)} images of pretrain.splits {list(cfg.splits)} "
            f"have the content (sha256) of images in the test split {cfg.test_split!r} ({shown}); pretraining on "
            f"them leaks test images into the encoder; drop {cfg.test_split!r} from pretrain.splits, or set "
            "pretrain.allow_test_images: true to pretrain on them anyway")
    return leaked


def audit_encoder(tower: Tower, contract: EncoderContract, cfg: PretrainConfig, val_paths: Sequence[Path],
                  device, amp: bool) -> tuple[AuditResult | None, str | None]:
    """The absolute-position audit of ``tower`` against a random-init tower of the same arch on the first
    ``cfg.audit_images`` validation images (sorted); (None, why) when it cannot run."""
    if cfg.audit_images == 0:
        return None, "position audit off (pretrain.audit_images: 0)"
    images = sorted(val_paths)[: cfg.audit_images]
    if len(images) < AUDIT_MIN_IMAGES:
        return None, (f"position audit skipped: {len(images)} pretext validation images, it needs "
                      f"{AUDIT_MIN_IMAGES} (raise pretrain.held_out_fraction)")
    embedders = {
        "learned": tower_embedder("learned", tower, "fc6", device, amp),
        "random_init": tower_embedder("random_init", random_init_tower(cfg.arch, cfg.patch_size, cfg.seed), "fc6",
                                      device, amp),
    }
    return audit_position(embedders, contract, images, cfg.audit_patches, cfg.seed), None


def run_pretrain(
    settings: Settings,
    resume: bool = False,
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> PretrainResult:
    cfg = settings.params.pretrain
    task = get_task(cfg.task)
    env = distributed_from_env()
    root = settings.path(cfg.input)
    paths = image_files(root, cfg.splits, "pretrain.input")
    leaked = guard_test_images(root, paths, cfg)
    warnings = [f"pretraining on {len(leaked)} images of the test split {cfg.test_split!r} "
                "(pretrain.allow_test_images: true): scores on that split are not independent of this encoder"
                ] if leaked else []
    notes: list[str] = []
    usable = usable_images(paths, cfg, task.min_side(cfg))
    size_of = dict(zip(usable.paths, usable.sizes))
    train_paths, held_paths = split_held_out(usable.paths, cfg.held_out_fraction)
    val_paths, test_paths = split_val_test(held_paths)
    train_images = ImageList(tuple(train_paths), tuple(size_of[p] for p in train_paths), usable.skipped)
    held_images = ImageList(tuple(test_paths), tuple(size_of[p] for p in test_paths), 0)  # the pretext test set
    val_images = ImageList(tuple(val_paths), tuple(size_of[p] for p in val_paths), 0)
    items = task.batch_items(cfg)
    distributed.shard(items, env, "pretrain.batch_size")  # fails before any run is opened
    sampler = task.sampler(train_images, cfg)  # the global batch; each rank trains on its share
    held_sampler = task.sampler(held_images, cfg, batch_size=min(256, items))
    val_sampler = task.sampler(val_images, cfg, batch_size=min(256, items)) if val_paths else None
    val_pairs = cfg.eval_pairs // 2 if val_sampler else 0

    out = settings.path(cfg.out)
    reports = settings.path(cfg.reports)
    data_version = dvc_dir_hash(root) if root.is_dir() else "unknown"
    tags = {"data_version": data_version, "task": cfg.task, **(extra_tags or {})}
    with distributed.stage_run_on_main(settings, "pretrain", tags, env) as run:
        run.log_params({**cfg.model_dump(mode="json"), "train_images": len(train_images.paths),
                        "held_out_images": len(held_paths), "val_images": len(val_paths),
                        "test_images": len(test_paths), "skipped_images": usable.skipped,
                        "world_size": env.world, "tower_passes_per_step": cfg.tower_passes,
                        "batch_items": items})
        result = train(cfg, sampler, out / "checkpoints", resume=resume, progress=progress, stop_after=stop_after,
                       on_log=lambda step, m: run.log_metrics(m, step=step), run_id=run.run_id)
        run.link_resumed(result.resumed_from)
        if not env.main:
            return PretrainResult(out / ENCODER_FILE, float("nan"), len(train_images.paths), len(held_paths),
                                  train_images.skipped, result.steps, result.pairs_per_second, data_version, {}, None, None)
        device = pick_device(cfg, env)
        amp = cfg.amp and device.type == "cuda"
        val_score = task.evaluate(result.model, val_sampler, val_pairs, device, amp=amp) if val_sampler else None
        val_accuracy = val_score.accuracy if val_score else float("nan")
        if not val_sampler:
            notes.append(f"no pretext validation images ({len(held_paths)} held out; raise pretrain.held_out_fraction)")
        score = task.evaluate(result.model, held_sampler, cfg.eval_pairs - val_pairs, device, amp=amp)
        accuracy, confusion = score.accuracy, score.confusion
        chance = score.chance  # context: the most frequent label's share, 0.15 with all 40 pairs of a grid
        contract = EncoderContract.of(result.model.tower, cfg.chroma, cfg.patch_rms, task=cfg.task,
                                      data_version=data_version, params_hash=params_hash(cfg))
        encoder = save_encoder(out / ENCODER_FILE, result.model.tower, contract,
                               meta={"held_out_accuracy": accuracy, "steps": result.steps})
        started = time.perf_counter()
        audit, skipped = audit_encoder(result.model.tower, contract, cfg, val_paths, device, amp)
        if skipped:
            notes.append(skipped)
        elif audit.warning():
            warnings.append(audit.warning())
        metrics = {
            "held_out_accuracy": accuracy,
            "chance_accuracy": chance,
            "val_accuracy": val_accuracy,
            "val_eval_pairs": val_score.items if val_score else 0,
            "val_images": len(val_paths),
            "test_images": len(test_paths),
            "test_images_pretrained": len(leaked),
            "final_loss": result.history[-1]["loss"] if result.history else float("nan"),
            "pairs_per_second": result.pairs_per_second,
            "tower_passes_per_second": result.tower_passes_per_second,
            "train_images": len(train_images.paths),
            "held_out_images": len(held_paths),
            "skipped_images": usable.skipped,
            "steps": result.steps,
            "eval_pairs": score.items,
        }
        if audit is not None:
            metrics.update({**audit.metrics(), "position_audit_seconds": time.perf_counter() - started})
        if cfg.diagnostic_steps and val_sampler:
            for diag in chroma_diagnostic(train_images, val_images, cfg, cfg.diagnostic_steps):
                metrics[f"position_rmse_ratio_{diag.chroma}"] = diag.ratio
        metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        with open(reports / "curves.csv", "w") as f:
            f.write("step,loss,train_accuracy,lr\n")
            for h in result.history:
                f.write(f"{int(h['step'])},{h['loss']:.5f},{h['train_accuracy']:.5f},{h['lr']:.6g}\n")
        files = {
            "metrics": reports / "metrics.json",
            "curves_csv": reports / "curves.csv",
            "curves": curves_plot(result.history, accuracy, reports / "curves.png", chance),
        }
        if confusion is not None:
            files["confusion"] = confusion_plot(confusion, reports / "confusion.png",
                                                f"{cfg.task}: pretext test accuracy {accuracy:.3f} ({score.items} "
                                                f"{task.unit})", score.labels)
        # context: the pairs it asks about; other tasks: their rotated crops, puzzles, view pairs
        name = "pairs" if cfg.task == "context" else "examples"
        montage = task.montage(held_sampler, held_images.paths, reports / f"{name}.png", cfg.seed + 7)
        if montage is not None:
            files[name] = montage
        run.log_metrics({k: v for k, v in metrics.items() if k != "pairs_per_second"})
        if result.last_checkpoint is not None:
            run.log_artifact(result.last_checkpoint, "checkpoints")
        for path in files.values():
            run.log_artifact(path, "pretrain")
        run.log_artifact(encoder, "encoder")
        version = None
        if run.run_id and run.connected:  # a lost tracking server: the encoder is on disk, not registered
            import mlflow

            client = mlflow.MlflowClient(tracking_uri(settings))
            version = str(register_version(client, cfg.registered_model, run.run_id, "encoder", {
                **contract.tags(), "held_out_accuracy": f"{accuracy:.4f}", "steps": result.steps,
                "chance_accuracy": f"{chance:.4f}", "eval_pairs": score.items,
                "weights_sha256": weights_digest(encoder),
                **({"val_accuracy": f"{val_accuracy:.4f}"} if val_sampler else {}),
                **({f"position_ratio_{k}": f"{v.mean:.4f}" for k, v in audit.ratios.items()} if audit else {}),
            }, description=f"{cfg.arch} tower, {cfg.task} task, {cfg.chroma}, pretext test accuracy {accuracy:.3f}").version)
            run.set_tags({"registered_version": version})
    return PretrainResult(
        encoder=encoder, held_out_accuracy=accuracy, train_images=len(train_images.paths),
        held_out_images=len(held_paths), skipped_images=usable.skipped,
        steps=result.steps, pairs_per_second=result.pairs_per_second, data_version=data_version,
        reports=files, mlflow_run_id=run.run_id, registered_version=version, chance_accuracy=chance,
        val_accuracy=val_accuracy, val_images=len(val_paths), test_images=len(test_paths),
        position_audit=audit.metrics() if audit else {}, position_warning=audit.warning() if audit else None,
        test_images_pretrained=len(leaked), notes=tuple(notes), warnings=tuple(warnings), task=cfg.task,
        tower_passes_per_second=result.tower_passes_per_second,
    )
