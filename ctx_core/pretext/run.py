"""``run_pretrain``: train the context-prediction encoder, evaluate it, log and register it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ctx_core import distributed
from ctx_core.checks import chance_accuracy
from ctx_core.config import PretrainConfig, Settings
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.encoder.artifact import EncoderContract, save_encoder
from ctx_core.pretext.chroma_diagnostic import chroma_diagnostic
from ctx_core.pretext.data import ImageList, PairSampler, split_held_out, usable_images
from ctx_core.pretext.evaluate import confusion_plot, curves_plot, pairs_montage, pretext_accuracy
from ctx_core.pretext.train import distributed_from_env, pick_device, train
from ctx_core.registry import ENCODER_FILE, register_version, weights_digest
from ctx_core.store.layout import image_files
from ctx_core.tracking import tracking_uri

@dataclass(frozen=True)
class PretrainResult:
    encoder: Path
    held_out_accuracy: float
    train_images: int
    held_out_images: int
    skipped_images: int
    steps: int
    pairs_per_second: float
    data_version: str
    reports: dict[str, Path]
    mlflow_run_id: str | None
    registered_version: str | None
    chance_accuracy: float = float("nan")  # the most frequent held-out label's share (metrics.json)



def params_hash(cfg: PretrainConfig) -> str:
    """sha256 prefix of the ``pretrain`` section, recorded in the encoder's contract."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_pretrain(
    settings: Settings,
    resume: bool = False,
    extra_tags: dict[str, str] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> PretrainResult:
    cfg = settings.params.pretrain
    env = distributed_from_env()
    root = settings.path(cfg.input)
    paths = image_files(root, cfg.splits, "pretrain.input")
    usable = usable_images(paths, cfg)
    size_of = dict(zip(usable.paths, usable.sizes))
    train_paths, held_paths = split_held_out(usable.paths, cfg.held_out_fraction)
    train_images = ImageList(tuple(train_paths), tuple(size_of[p] for p in train_paths), usable.skipped)
    held_images = ImageList(tuple(held_paths), tuple(size_of[p] for p in held_paths), 0)
    distributed.shard(cfg.batch_size, env, "pretrain.batch_size")  # fails before any run is opened
    sampler = PairSampler(train_images, cfg)  # the global batch; each rank trains on its share
    held_sampler = PairSampler(held_images, cfg, batch_size=min(256, cfg.batch_size))

    out = settings.path(cfg.out)
    reports = settings.path(cfg.reports)
    data_version = dvc_dir_hash(root) if root.is_dir() else "unknown"
    tags = {"data_version": data_version, **(extra_tags or {})}
    with distributed.stage_run_on_main(settings, "pretrain", tags, env) as run:
        run.log_params({**cfg.model_dump(mode="json"), "train_images": len(train_images.paths),
                        "held_out_images": len(held_images.paths), "skipped_images": usable.skipped,
                        "world_size": env.world})
        result = train(cfg, sampler, out / "checkpoints", resume=resume, progress=progress, stop_after=stop_after,
                       on_log=lambda step, m: run.log_metrics(m, step=step))
        if not env.main:
            return PretrainResult(out / ENCODER_FILE, float("nan"), len(train_images.paths), len(held_images.paths),
                                  train_images.skipped, result.steps, result.pairs_per_second, data_version, {}, None, None)
        device = pick_device(cfg, env)
        amp = cfg.amp and device.type == "cuda"
        accuracy, confusion = pretext_accuracy(result.model, held_sampler, cfg.eval_pairs, device, amp=amp)
        chance = chance_accuracy(confusion)  # the most frequent label's share: 0.15 with all 40 pairs of a grid
        contract = EncoderContract.of(result.model.tower, cfg.chroma, cfg.patch_rms, task="context",
                                      data_version=data_version, params_hash=params_hash(cfg))
        encoder = save_encoder(out / ENCODER_FILE, result.model.tower, contract,
                               meta={"held_out_accuracy": accuracy, "steps": result.steps})
        metrics = {
            "held_out_accuracy": accuracy,
            "chance_accuracy": chance,
            "final_loss": result.history[-1]["loss"] if result.history else float("nan"),
            "pairs_per_second": result.pairs_per_second,
            "train_images": len(train_images.paths),
            "held_out_images": len(held_images.paths),
            "skipped_images": usable.skipped,
            "steps": result.steps,
            "eval_pairs": int(confusion.sum()),
        }
        if cfg.diagnostic_steps:
            for diag in chroma_diagnostic(train_images, held_images, cfg, cfg.diagnostic_steps):
                metrics[f"position_rmse_ratio_{diag.chroma}"] = diag.ratio
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        with open(reports / "curves.csv", "w") as f:
            f.write("step,loss,train_accuracy,lr\n")
            for h in result.history:
                f.write(f"{int(h['step'])},{h['loss']:.5f},{h['train_accuracy']:.5f},{h['lr']:.6g}\n")
        files = {
            "metrics": reports / "metrics.json",
            "curves_csv": reports / "curves.csv",
            "confusion": confusion_plot(confusion, reports / "confusion.png",
                                        f"held-out pretext accuracy {accuracy:.3f} ({confusion.sum()} pairs)"),
            "curves": curves_plot(result.history, accuracy, reports / "curves.png", chance),
            "pairs": pairs_montage(held_sampler.batch(0, seed=cfg.seed + 7), held_images.paths, reports / "pairs.png"),
        }
        run.log_metrics({k: v for k, v in metrics.items() if k != "pairs_per_second"})
        if result.last_checkpoint is not None:
            run.log_artifact(result.last_checkpoint, "checkpoints")
        for path in files.values():
            run.log_artifact(path, "pretrain")
        run.log_artifact(encoder, "encoder")
        version = None
        if run.run_id:
            import mlflow

            client = mlflow.MlflowClient(tracking_uri(settings))
            version = str(register_version(client, cfg.registered_model, run.run_id, "encoder", {
                **contract.tags(), "held_out_accuracy": f"{accuracy:.4f}", "steps": result.steps,
                "chance_accuracy": f"{chance:.4f}", "eval_pairs": int(confusion.sum()),
                "weights_sha256": weights_digest(encoder),
            }, description=f"{cfg.arch} tower, {cfg.chroma}, held-out pretext accuracy {accuracy:.3f}").version)
            run.set_tags({"registered_version": version})
    return PretrainResult(
        encoder=encoder, held_out_accuracy=accuracy, train_images=len(train_images.paths),
        held_out_images=len(held_images.paths), skipped_images=usable.skipped,
        steps=result.steps, pairs_per_second=result.pairs_per_second, data_version=data_version,
        reports=files, mlflow_run_id=run.run_id, registered_version=version, chance_accuracy=chance,
    )
