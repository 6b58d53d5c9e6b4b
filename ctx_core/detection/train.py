"""Detector fine-tuning: the shared loop (:mod:`ctx_core.training`) with torchvision's
detection losses as its step; and inference.

SGD with momentum, linear warm-up from 1/1000 then x0.1 steps at
``lr_decay_at`` (torchvision's ``references/detection`` recipe); bf16
autocast on CUDA.

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
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ctx_core import distributed
from ctx_core.config import DetectionConfig
from ctx_core.detection.data import TrainingSet, load_image, torchvision_to_voc
from ctx_core.detection.evaluate import ClassDetections
from ctx_core.store.labelled import ImageRecord
from ctx_core.training import LoopResult, LoopSettings, Method, Schedule, StepSums, fit, milestone_steps

# Settings that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = frozenset({"steps", "checkpoint_every", "log_every", "device", "amp", "inits", "reports",
                               "registered_model"})

Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]


def pick_device(cfg: DetectionConfig) -> torch.device:
    """``detection.device``; on CUDA under ``torchrun``, this rank's local GPU."""
    return distributed.pick_device(cfg.device, distributed.from_env(), "detection")


def image_seed(seed: int, step: int, position: int) -> int:
    """Torch RNG seed for image ``position`` of step ``step``'s global batch."""
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1, np.uint64)[0] >> 1)


def schedule(cfg: DetectionConfig) -> Schedule:
    """Linear warm-up from 1/1000 over ``warmup_steps``, then x0.1 at each ``lr_decay_at`` fraction of ``steps``."""
    return Schedule(cfg.steps, cfg.warmup_steps, warmup_from=1e-3, decay="step",
                    milestones=milestone_steps(cfg.lr_decay_at, 0, cfg.steps))


class DetectorLosses(Method):
    """The sum of a torchvision detector's losses, one forward and backward pass per image."""

    def __init__(self, data: TrainingSet, cfg: DetectionConfig, env: distributed.Distributed, device: torch.device,
                 seed: int = 0):
        self.data, self.seed, self.env, self.device = data, seed, env, device
        self.mine = distributed.shard(data.batch_size, env, "detection.batch_size")
        self.amp = cfg.amp and device.type == "cuda"

    def batches(self, start: int, stop: int) -> Iterable[tuple[int, Batch]]:
        for step in range(start, stop):
            yield step, self.data.batch(step, self.env.rank, self.env.world)

    def step(self, net: nn.Module, step: int, batch: Batch) -> StepSums:
        sums: dict[str, float] = {}
        ddp = isinstance(net, nn.parallel.DistributedDataParallel)
        for k, (position, image, target) in enumerate(zip(self.mine, *batch)):
            torch.manual_seed(image_seed(self.seed, step, position))
            # DDP all-reduces the accumulated gradients in the last image's backward only
            sync = net.no_sync() if ddp and k < len(self.mine) - 1 else contextlib.nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    losses = net([image.to(self.device, non_blocking=True)],
                                 [{n: v.to(self.device) for n, v in target.items()}])
                loss = sum(v.float() for v in losses.values())
                (loss / len(self.mine)).backward()
            values = torch.stack([loss.detach(), *(v.detach().float() for v in losses.values())]).tolist()
            for name, value in zip(["loss", *losses], values):
                sums[name] = sums.get(name, 0.0) + value
        return StepSums(sums, len(self.mine))

    def rates(self, steps: int, seconds: float) -> dict[str, float]:
        return {"seconds_per_step": seconds / steps}


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
    run_id: str | None = None,
    seed: int = 0,
) -> LoopResult:
    """Train ``model`` (a torchvision detector, already initialised) for ``cfg.steps`` steps.

    ``config``: what a checkpoint must match to be resumed (settings, init,
    encoder, classes, seed); ``seed`` draws each image's augmentation and
    sampling; the rest as :func:`ctx_core.training.fit`. Under
    ``torchrun``, ``data.batch_size`` is the global batch.
    """
    env = distributed.from_env()
    device = pick_device(cfg)
    method = DetectorLosses(data, cfg, env, device, seed)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    settings = LoopSettings("detection", schedule(cfg), cfg.log_every, cfg.checkpoint_every, RESUMABLE_CHANGES,
                            "lower detection.lr or raise detection.warmup_steps")
    return fit(model, optimizer, method, settings, checkpoints, config, env, device, resume=resume, on_log=on_log,
               progress=progress, stop_after=stop_after, desc=desc, run_id=run_id)


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
