"""Pretraining: the shared loop (:mod:`ctx_core.training`) with the task's step
(:mod:`ctx_core.pretext.tasks`); context prediction's step is here.

A context step embeds a :class:`~ctx_core.pretext.data.PairBatch`'s patches, predicts
each pair's relative position (8 classes) and takes the cross-entropy; the
loop logs its mean ``loss`` and ``train_accuracy`` over the pairs.

Under ``torchrun`` (DDP: gloo on the CPU, NCCL on GPUs) ``batch_size`` is the
global batch: each of the ``W`` ranks trains on its ``B/W`` pairs of the same
global batch, batch norm uses the statistics of the global batch
(``ctx_core.distributed.global_batchnorm``), DDP averages the gradients and
the logged loss and accuracy are those of the global batch, so the loss
curve is that of one process with batch ``B`` up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ctx_core import distributed
from ctx_core.config import PretrainConfig
from ctx_core.distributed import Distributed
from ctx_core.pretext.data import PairBatch
from ctx_core.pretext.tasks import SamplerMethod
from ctx_core.training import LoopResult, LoopSettings, Schedule, StepSums, fit, milestone_steps

# Settings that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = frozenset({"steps", "checkpoint_every", "log_every", "device", "compile", "workers", "eval_pairs",
                               "amp"})


def distributed_from_env() -> Distributed:
    """Rank and world size as ``torchrun`` sets them (see :func:`ctx_core.distributed.from_env`)."""
    return distributed.from_env()


def pick_device(cfg: PretrainConfig, env: Distributed) -> torch.device:
    return distributed.pick_device(cfg.device, env, "pretrain")


def schedule(cfg: PretrainConfig) -> Schedule:
    """``(s + 1) / warmup_steps`` over the warm-up, then cosine to 0 or x0.1 at 2/3 and 8/9 of the rest."""
    return Schedule(cfg.steps, cfg.warmup_steps, decay=cfg.schedule,
                    milestones=milestone_steps((2 / 3, 8 / 9), cfg.warmup_steps, max(1, cfg.steps - cfg.warmup_steps)))


def build_model(cfg: PretrainConfig) -> torch.nn.Module:
    """``cfg.task``'s network (its ``.tower`` and head), seeded by ``cfg.seed``."""
    from ctx_core.pretext.tasks import get_task

    return get_task(cfg.task).model(cfg)


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


class ContextPrediction(SamplerMethod):
    """Cross-entropy of the 8 relative positions on this rank's pairs of each global batch."""

    rate_unit = "pairs"

    def step(self, net: torch.nn.Module, step: int, batch: PairBatch) -> StepSums:
        # channels_last: cuDNN's and oneDNN's fast layout (measured 1.3x per step on this CPU with bf16)
        patches = batch.patches.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        pair_index = batch.pair_index.to(self.device, non_blocking=True)
        labels = batch.labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = net(patches, pair_index)
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        correct = float((logits.argmax(1) == labels).sum())
        return StepSums({"loss": loss.item() * len(labels), "train_accuracy": correct}, len(labels))


@dataclass
class TrainResult(LoopResult):
    """The loop's result, the task's items (pairs for context) and the tower passes per second over all ranks."""

    pairs_per_second: float = 0.0  # the task's items per second (pairs, crops, puzzles, images)
    tower_passes_per_second: float = 0.0


def train(
    cfg: PretrainConfig,
    sampler,
    checkpoints: Path,
    resume: bool = False,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
    run_id: str | None = None,
) -> TrainResult:
    """Train ``cfg.task`` for ``cfg.steps`` steps (from the newest checkpoint with ``resume``); see
    :func:`ctx_core.training.fit`. ``sampler``: the task's; its ``batch_size`` is the global batch under ``torchrun``.
    """
    from ctx_core.pretext.tasks import get_task

    task = get_task(cfg.task)
    env = distributed_from_env()
    device = pick_device(cfg, env)
    distributed.shard(sampler.batch_size, env, "pretrain.batch_size")
    model = build_model(cfg)
    if env.world > 1:
        model = distributed.global_batchnorm(model, device)
    model = model.to(device).to(memory_format=torch.channels_last)
    settings = LoopSettings("pretrain", schedule(cfg), cfg.log_every, cfg.checkpoint_every, RESUMABLE_CHANGES,
                            "lower pretrain.lr or turn off pretrain.amp", compile=cfg.compile)
    method = task.method(sampler, cfg, env, device)
    result = fit(model, build_optimizer(model, cfg), method, settings, checkpoints, cfg.model_dump(mode="json"),
                 env, device, resume=resume, on_log=on_log, progress=progress, stop_after=stop_after, desc="pretrain",
                 run_id=run_id)
    done = max(result.steps - result.start_step, 0)
    per_second = done / max(result.seconds, 1e-9)
    return TrainResult(**vars(result), pairs_per_second=per_second * sampler.batch_size,
                       tower_passes_per_second=per_second * cfg.tower_passes)
