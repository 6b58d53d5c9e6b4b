"""The context-prediction training loop: seeded, resumable, data-parallel under ``torchrun``.

Checkpoints hold ``{model, optimizer, scheduler, step, rng, config}`` and are
written atomically; because every batch is a pure function of
``(seed, step, rank, world)``, a resumed run sees exactly the batches an
uninterrupted run would have and, on the CPU, reproduces its losses.

Under ``torchrun`` (DDP: gloo on the CPU, NCCL on GPUs) ``batch_size`` is the
global batch: each of the ``W`` ranks trains on its ``B/W`` pairs of the same
global batch, batch norm uses the statistics of the global batch
(``ctx_core.distributed.global_batchnorm``), DDP averages the gradients and
the logged loss and accuracy are those of the global batch, so the loss
curve is that of one process with batch ``B`` up to float rounding.
Only rank 0 writes checkpoints and calls ``on_log``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ctx_core import distributed
from ctx_core.checkpoints import list_checkpoints, read_checkpoint, write_checkpoint
from ctx_core.config import PretrainConfig
from ctx_core.distributed import Distributed
from ctx_core.models.siamese import ContextPredictionNet
from ctx_core.models.towers import build_tower
from ctx_core.pretext.data import PairSampler, pair_loader

# Settings that may change between a checkpoint and its resumption.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "device", "compile", "workers", "eval_pairs", "amp"}


class NonFiniteLoss(RuntimeError):
    """Training diverged; the message names the step and the learning rate."""


def distributed_from_env() -> Distributed:
    """Rank and world size as ``torchrun`` sets them (see :func:`ctx_core.distributed.from_env`)."""
    return distributed.from_env()


def pick_device(cfg: PretrainConfig, env: Distributed) -> torch.device:
    return distributed.pick_device(cfg.device, env, "pretrain")


def lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine to 0 or x0.1 steps at 2/3 and 8/9 of training."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 0.1 ** sum(progress >= m for m in (2 / 3, 8 / 9))


def build_model(cfg: PretrainConfig) -> ContextPredictionNet:
    torch.manual_seed(cfg.seed)
    return ContextPredictionNet(build_tower(cfg.arch, cfg.patch_size))


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, cfg: PretrainConfig) -> Path:
    return write_checkpoint(folder, step, {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        # tensors and ints only, so torch.load(weights_only=True) can read it back
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "numpy_pos": int(np.random.get_state()[2]),
        },
        "config": cfg.model_dump(mode="json"),
    })


def load_checkpoint(folder: Path, cfg: PretrainConfig) -> dict[str, Any]:
    """The newest checkpoint in ``folder``, validated against ``cfg``."""
    return read_checkpoint(folder, cfg.model_dump(mode="json"), RESUMABLE_CHANGES, cfg.steps, "pretrain")


# ---------------------------------------------------------------- training

@dataclass
class TrainResult:
    model: ContextPredictionNet
    start_step: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    pairs_per_second: float = 0.0
    last_checkpoint: Path | None = None


def train(
    cfg: PretrainConfig,
    sampler: PairSampler,
    checkpoints: Path,
    resume: bool = False,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train for ``cfg.steps`` steps (from the newest checkpoint with ``resume``).

    ``stop_after``: return after this many steps of this call (a planned
    interruption, used to test resumption). ``on_log(step, metrics)`` is called
    every ``cfg.log_every`` steps on rank 0.
    """
    env = distributed_from_env()
    device = pick_device(cfg, env)
    distributed.shard(sampler.batch_size, env, "pretrain.batch_size")
    with distributed.process_group(env, device):
        return _train(cfg, sampler, checkpoints, env, device, resume, on_log, progress, stop_after)


def _train(cfg: PretrainConfig, sampler: PairSampler, checkpoints: Path, env: Distributed, device: torch.device,
           resume: bool, on_log: Callable[[int, dict[str, float]], None] | None, progress: bool | None,
           stop_after: int | None) -> TrainResult:
    model = build_model(cfg)
    if env.world > 1:
        model = distributed.global_batchnorm(model, device)
    # channels_last: cuDNN's and oneDNN's fast layout (measured 1.3x per step on this CPU with bf16)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    start = 0
    if not resume and env.main:
        # a fresh run must not leave an older run's checkpoints to be resumed later
        for old in list_checkpoints(checkpoints):
            old.unlink()
    if resume:
        state = distributed.from_main(lambda: load_checkpoint(checkpoints, cfg), env)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(("MT19937", state["rng"]["numpy_keys"].numpy().astype(np.uint32), state["rng"]["numpy_pos"]))
        start = int(state["step"])
    net: torch.nn.Module = distributed.wrap_ddp(model, device)
    if cfg.compile:
        net = torch.compile(net)
    amp = cfg.amp and (device.type == "cuda" or torch.backends.mkldnn.is_available())

    stop = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    loader = pair_loader(sampler, start, stop, cfg.workers, rank=env.rank, world=env.world)
    result = TrainResult(model=model, start_step=start, steps=stop)
    model.train()
    bar = tqdm(total=stop - start, initial=0, desc="pretrain", unit="step",
               disable=(not env.main) or (True if progress is False else None))
    t0 = time.perf_counter()
    window_loss, window_correct, window_n = 0.0, 0.0, 0.0
    for batch in loader:
        step = batch.step
        patches = batch.patches.to(device, non_blocking=True)
        pair_index = batch.pair_index.to(device, non_blocking=True)
        labels = batch.labels.to(device, non_blocking=True)
        patches = patches.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(patches, pair_index)
            loss = F.cross_entropy(logits.float(), labels)
        # the global batch's loss and accuracy, on every rank (one small all-reduce),
        # so that a divergence stops all ranks at the same step
        loss_sum, correct, n = distributed.all_sum(
            [loss.item() * len(labels), float((logits.argmax(1) == labels).sum()), float(len(labels))], device)
        if not math.isfinite(loss_sum):
            raise NonFiniteLoss(
                f"pretraining loss became {loss_sum / n} at step {step} (lr {scheduler.get_last_lr()[0]:.3g}); "
                f"lower pretrain.lr or turn off pretrain.amp"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        done = step + 1
        window_loss += loss_sum
        window_correct += correct
        window_n += n
        bar.update(1)
        if done % cfg.log_every == 0 or done == stop:
            elapsed = time.perf_counter() - t0
            metrics = {
                "loss": window_loss / window_n,
                "train_accuracy": window_correct / window_n,
                "lr": scheduler.get_last_lr()[0],
                "pairs_per_second": (done - start) * sampler.batch_size / max(elapsed, 1e-9),
            }
            result.history.append({"step": float(done), **metrics})
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['train_accuracy']:.3f}")
            if on_log and env.main:
                on_log(done, metrics)
            window_loss, window_correct, window_n = 0.0, 0.0, 0.0
        if env.main and (done % cfg.checkpoint_every == 0 or done == stop):
            result.last_checkpoint = save_checkpoint(checkpoints, done, model, optimizer, scheduler, cfg)
    bar.close()
    result.seconds = time.perf_counter() - t0
    result.pairs_per_second = (stop - start) * sampler.batch_size / max(result.seconds, 1e-9)
    return result
