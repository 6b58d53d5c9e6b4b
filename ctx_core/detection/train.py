"""The detector's training loop and inference, in the shape of torchvision's
``references/detection`` (``train_one_epoch`` / ``evaluate``), step-based.

SGD with momentum, linear warm-up then x0.1 steps; bf16 autocast on CUDA;
checkpoints ``{model, optimizer, scheduler, step, config}`` written
atomically every ``checkpoint_every`` steps.

A step's loss is the mean over its ``batch_size`` images of each image's
Faster R-CNN loss, with one forward and backward pass per image (gradients
accumulate). Before each image the torch RNG (scale jitter, RPN and RoI
sampling) is seeded from ``(seed, step, position in the batch)``. So what an
image contributes depends on nothing but the weights and that seed: a resumed
run continues exactly as an uninterrupted one, and under ``torchrun`` (DDP:
gloo on the CPU, NCCL on GPUs) ``W`` ranks, each taking ``batch_size / W``
images of the same global batch, compute the one-process step up to float
rounding. (torchvision's batched forward would pad images to a common size
and draw every image's samples from one stream, both of which depend on how
the batch is split; on the CPU one image per pass is also faster, having no padding.)
Only rank 0 writes checkpoints and calls ``on_log``; losses are reduced over ranks.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ctx_core import distributed
from ctx_core.checkpoints import read_checkpoint, write_checkpoint
from ctx_core.config import DetectionConfig
from ctx_core.detection.data import TrainingSet, load_image, torchvision_to_voc
from ctx_core.detection.evaluate import ClassDetections
from ctx_core.detection.voc import ImageRecord
from ctx_core.errors import UserError

# Settings that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "device", "amp", "inits", "reports", "registered_model"}


class NonFiniteLoss(UserError):
    """Training diverged; the message names the step and the learning rate."""


def pick_device(cfg: DetectionConfig) -> torch.device:
    """``detection.device``; on CUDA under ``torchrun``, this rank's local GPU."""
    return distributed.pick_device(cfg.device, distributed.from_env(), "detection")


def image_seed(seed: int, step: int, position: int) -> int:
    """Torch RNG seed for image ``position`` of step ``step``'s global batch."""
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1, np.uint64)[0] >> 1)


def lr_factor(step: int, cfg: DetectionConfig) -> float:
    """Linear warm-up from 1/1000 over ``warmup_steps``, then x0.1 at each ``lr_decay_at`` fraction of ``steps``."""
    if step < cfg.warmup_steps:
        return 1e-3 + (1 - 1e-3) * step / cfg.warmup_steps
    return 0.1 ** sum(step >= f * cfg.steps for f in cfg.lr_decay_at)


def save_checkpoint(folder: Path, step: int, model: nn.Module, optimizer, scheduler, config: dict[str, Any]) -> Path:
    return write_checkpoint(folder, step, {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                           "scheduler": scheduler.state_dict(), "config": config})


def load_checkpoint(folder: Path, config: dict[str, Any], steps: int) -> dict[str, Any]:
    """The newest checkpoint in ``folder``, checked against ``config`` (settings, init, encoder, classes)."""
    return read_checkpoint(folder, config, RESUMABLE_CHANGES, steps, "detection")


@dataclass
class TrainResult:
    start_step: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps - self.start_step, 1)


def train_detector(
    model: nn.Module,
    data: TrainingSet,
    cfg: DetectionConfig,
    checkpoints: Path,
    config: dict[str, Any],
    resume: bool = False,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
    desc: str = "finetune",
) -> TrainResult:
    """Train ``model`` (a torchvision detector, already initialised) for ``cfg.steps`` steps.

    ``config``: what a checkpoint must match to be resumed. ``stop_after``:
    return after this many steps of this call (a planned interruption).
    ``on_log(step, metrics)`` every ``cfg.log_every`` steps with the mean losses (rank 0 only).
    Under ``torchrun``, ``data.batch_size`` is the global batch.
    """
    env = distributed.from_env()
    device = pick_device(cfg)
    distributed.shard(data.batch_size, env, "detection.batch_size")
    with distributed.process_group(env, device):
        return _train(model, data, cfg, checkpoints, config, env, device, resume, on_log, progress, stop_after, desc)


def _train(model: nn.Module, data: TrainingSet, cfg: DetectionConfig, checkpoints: Path, config: dict[str, Any],
           env: distributed.Distributed, device: torch.device, resume: bool,
           on_log: Callable[[int, dict[str, float]], None] | None, progress: bool | None, stop_after: int | None,
           desc: str) -> TrainResult:
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    start = 0
    if resume:
        state = distributed.from_main(lambda: load_checkpoint(checkpoints, config, cfg.steps), env)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
    net = distributed.wrap_ddp(model, device)
    amp = cfg.amp and device.type == "cuda"
    stop = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    mine = distributed.shard(data.batch_size, env, "detection.batch_size")
    result = TrainResult(start_step=start, steps=stop)
    model.train()
    bar = tqdm(total=stop - start, desc=desc, unit="step",
               disable=(not env.main) or (True if progress is False else None))
    window: dict[str, float] = {}
    count = 0
    t0 = time.perf_counter()
    for step in range(start, stop):
        images, targets = data.batch(step, env.rank, env.world)
        optimizer.zero_grad(set_to_none=True)
        names: list[str] = []
        sums: list[float] = []
        for k, (position, image, target) in enumerate(zip(mine, images, targets)):
            torch.manual_seed(image_seed(cfg.seed, step, position))
            # DDP all-reduces the accumulated gradients in the last image's backward
            sync = contextlib.nullcontext() if net is model or k == len(mine) - 1 else net.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    losses = net([image.to(device, non_blocking=True)], [{n: v.to(device) for n, v in target.items()}])
                loss = sum(v.float() for v in losses.values())
                (loss / len(mine)).backward()
            values = torch.stack([loss.detach(), *(v.detach().float() for v in losses.values())]).tolist()
            names = ["loss", *losses]
            sums = [a + b for a, b in zip(sums, values)] if sums else values
        # the global batch's mean losses, on every rank: a divergence stops all ranks at the same step
        step_losses = {n: v / data.batch_size for n, v in zip(names, distributed.all_sum(sums, device))}
        if not math.isfinite(step_losses["loss"]):
            raise NonFiniteLoss(f"fine-tuning loss became {step_losses['loss']} at step {step} "
                                f"(lr {scheduler.get_last_lr()[0]:.3g}); lower detection.lr or raise detection.warmup_steps")
        optimizer.step()
        scheduler.step()
        done = step + 1
        for n, v in step_losses.items():
            window[n] = window.get(n, 0.0) + v
        count += 1
        bar.update(1)
        if done % cfg.log_every == 0 or done == stop:
            metrics = {n: v / count for n, v in window.items()}
            metrics["lr"] = scheduler.get_last_lr()[0]
            metrics["seconds_per_step"] = (time.perf_counter() - t0) / (done - start)
            result.history.append({"step": float(done), **metrics})
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            if on_log and env.main:
                on_log(done, metrics)
            window, count = {}, 0
        if env.main and (done % cfg.checkpoint_every == 0 or done == stop):
            save_checkpoint(checkpoints, done, model, optimizer, scheduler, config)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result


@torch.inference_mode()
def predict(model: nn.Module, records: Sequence[ImageRecord], classes: Sequence[str], cfg: DetectionConfig,
            batch_size: int = 8, progress: bool | None = None) -> dict[str, ClassDetections]:
    """Detections of ``model`` on ``records`` per class, boxes in VOC pixels of the stored images."""
    device = pick_device(cfg)
    model.to(device).eval()
    amp = cfg.amp and device.type == "cuda"
    per_class: dict[str, tuple[list, list, list]] = {c: ([], [], []) for c in classes}
    for start in tqdm(range(0, len(records), batch_size), desc="detect", unit="batch",
                      disable=True if progress is False else None):
        chunk = records[start:start + batch_size]
        images = [load_image(r).to(device) for r in chunk]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(images)
        for rec, out in zip(chunk, outputs):
            boxes = torchvision_to_voc(out["boxes"].float())
            for label, score, box in zip(out["labels"].tolist(), out["scores"].float().tolist(), boxes):
                ids, scores, bxs = per_class[classes[label - 1]]
                ids.append(rec.image_id)
                scores.append(score)
                bxs.append(box)
    return {c: ClassDetections(np.array(ids, dtype=object), np.array(scores, dtype=np.float64),
                               np.array(bxs, dtype=np.float64).reshape(-1, 4))
            for c, (ids, scores, bxs) in per_class.items()}
