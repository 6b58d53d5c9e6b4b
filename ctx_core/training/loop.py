"""The one training loop of every trainer, after torchvision's ``references/detection``
``train_one_epoch`` (step-based) and solo-learn (a method = this loop + its step).

The loop owns what the trainers share: the lr schedule, resumption from the
newest checkpoint, checkpoint cadence (every ``checkpoint_every`` steps and the
last), windowed metric logging, the progress bar, DDP wrapping and the
non-finite-loss stop. A :class:`Method` supplies the rest: its batches and
one step's forward and backward passes.

Determinism: every batch is a pure function of ``(seed, step, rank, world)``
(the method's job) and a checkpoint holds the model, optimizer, scheduler and
RNG states, so on one machine a resumed run reproduces an uninterrupted one
bit for bit. Under ``torchrun`` the method's metric sums are summed over ranks
(:func:`ctx_core.distributed.all_sum`) every step, so every rank sees the
global batch's loss and a divergence stops all ranks at the same step; only
rank 0 writes checkpoints and calls ``on_log``.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from ctx_core import distributed
from ctx_core.checkpoints import read_checkpoint
from ctx_core.distributed import Distributed
from ctx_core.errors import UserError
from ctx_core.training import state
from ctx_core.training.metrics import MetricLogger
from ctx_core.training.schedule import Schedule, lr_factor


class NonFiniteLoss(UserError):
    """Training diverged; the message names the step, the learning rate and what to change."""


class StepSums(NamedTuple):
    """This rank's part of one step: each metric summed over its ``items`` (pairs, images).

    ``sums`` must hold ``"loss"``. The loop sums both over ranks and logs
    ``sums / items``: the global batch's means.
    """

    sums: dict[str, float]
    items: int


class Method(ABC):
    """What a trainer adds to the loop: its batches and one step's forward and backward passes."""

    #: progress-bar postfix: (label, metric name) pairs
    postfix: tuple[tuple[str, str], ...] = (("loss", "loss"),)

    @abstractmethod
    def batches(self, start: int, stop: int) -> Iterable[tuple[int, Any]]:
        """``(step, batch)`` for steps ``start .. stop - 1`` in order; ``batch`` is this rank's share."""

    @abstractmethod
    def step(self, net: nn.Module, step: int, batch: Any) -> StepSums:
        """Forward and backward ``batch`` through ``net`` (the model, DDP-wrapped under ``torchrun``).

        Gradients accumulate: the loop zeroes them before and steps the optimizer after.
        """

    def rates(self, steps: int, seconds: float) -> dict[str, float]:
        """Throughput of this call's first ``steps`` steps, done in ``seconds``, logged with each row."""
        return {}


@dataclass(frozen=True)
class LoopSettings:
    """A trainer's settings, as plain values (the loop reads no stage's config).

    ``section``: the params section named in messages (``pretrain``);
    ``resumable``: settings that may change between a checkpoint and its
    resumption; ``divergence_advice``: what the user can change when the loss
    is not finite (``lower pretrain.lr``); ``compile``: ``torch.compile`` the network.
    """

    section: str
    schedule: Schedule
    log_every: int
    checkpoint_every: int
    resumable: frozenset[str]
    divergence_advice: str
    compile: bool = False

    def __post_init__(self) -> None:
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ValueError(f"{self.section}.log_every = {self.log_every} and checkpoint_every = "
                             f"{self.checkpoint_every} must be >= 1 step")


@dataclass
class LoopResult:
    """``model`` trained from ``start_step`` to ``steps``.

    ``history``: one row per log, ``{"step", metric: mean}``, from the first
    step of the run: a resumed call starts with the rows its checkpoint kept.
    ``resumed_from``: the tracking run id recorded in the checkpoint a resumed
    call continued (``None`` for a fresh call or an older checkpoint).
    """

    model: nn.Module
    start_step: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    last_checkpoint: Path | None = None
    resumed_from: str | None = None

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps - self.start_step, 1)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    method: Method,
    settings: LoopSettings,
    checkpoints: Path,
    config: dict[str, Any],
    env: Distributed,
    device: torch.device,
    *,
    resume: bool = False,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool | None = None,
    stop_after: int | None = None,
    desc: str = "train",
    run_id: str | None = None,
) -> LoopResult:
    """Train ``model`` (on ``device``, not wrapped) to ``settings.schedule.steps`` steps.

    ``config``: JSON-able settings a checkpoint records and a resumption must
    match. ``resume``: continue from the newest checkpoint in ``checkpoints``;
    without it, that folder's checkpoints are deleted first. ``stop_after``:
    return after this many steps of this call (a planned interruption).
    ``on_log(step, metrics)``: every ``log_every`` steps and at the last, with
    each metric's mean over the steps since the previous row, ``lr`` and the
    method's rates (rank 0 only). ``run_id``: the tracking run this call logs
    to, recorded in its checkpoints (see :attr:`LoopResult.resumed_from`).
    Joins the ``torchrun`` process group for the call.
    """
    with distributed.process_group(env, device):
        return _fit(model, optimizer, method, settings, checkpoints, config, env, device,
                    resume, on_log, progress, stop_after, desc, run_id)


def _fit(model: nn.Module, optimizer: torch.optim.Optimizer, method: Method, settings: LoopSettings,
         checkpoints: Path, config: dict[str, Any], env: Distributed, device: torch.device, resume: bool,
         on_log: Callable[[int, dict[str, float]], None] | None, progress: bool | None, stop_after: int | None,
         desc: str, run_id: str | None) -> LoopResult:
    steps = settings.schedule.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, settings.schedule))
    start = 0
    history: list[dict[str, float]] = []
    resumed_from = None
    if resume:
        # rank 0 reads and broadcasts: other nodes need not see its disk, and a refusal stops every rank
        saved = distributed.from_main(
            lambda: read_checkpoint(checkpoints, config, set(settings.resumable), steps, settings.section), env)
        start = state.restore(saved, model, optimizer, scheduler)
        history, resumed_from = state.saved_history(saved), state.saved_run_id(saved)
    elif env.main:
        state.clear(checkpoints)
    net = distributed.wrap_ddp(model, device)
    if settings.compile:
        net = torch.compile(net)
    stop = steps if stop_after is None else min(steps, start + stop_after)
    result = LoopResult(model=model, start_step=start, steps=stop, history=history, resumed_from=resumed_from)
    logger = MetricLogger(window=settings.log_every)
    model.train()
    bar = tqdm(total=stop - start, desc=desc, unit="step",
               disable=(not env.main) or (True if progress is False else None))
    t0 = time.perf_counter()
    last_row = start
    for step, batch in method.batches(start, stop):
        optimizer.zero_grad(set_to_none=True)
        out = method.step(net, step, batch)
        *totals, items = distributed.all_sum([*out.sums.values(), float(out.items)], device)
        means = {name: total / items for name, total in zip(out.sums, totals)}
        if not math.isfinite(means["loss"]):
            raise NonFiniteLoss(f"training stopped at step {step}: the loss is {means['loss']} "
                                f"(lr {scheduler.get_last_lr()[0]:.3g}); {settings.divergence_advice}")
        optimizer.step()
        scheduler.step()
        logger.update(means, items)
        done = step + 1
        bar.update(1)
        if done % settings.log_every == 0 or done == stop:
            # each row covers the steps since the previous one: log_every, or fewer at the start and the end
            metrics = {**logger.avgs(last=done - last_row), "lr": scheduler.get_last_lr()[0],
                       **method.rates(done - start, time.perf_counter() - t0)}
            last_row = done
            result.history.append({"step": float(done), **metrics})
            bar.set_postfix({label: f"{metrics[name]:.3f}" for label, name in method.postfix})
            if on_log and env.main:
                on_log(done, metrics)
        if env.main and (done % settings.checkpoint_every == 0 or done == stop):
            result.last_checkpoint = state.save(checkpoints, done, model, optimizer, scheduler, config,
                                                result.history, run_id)
    bar.close()
    result.seconds = time.perf_counter() - t0
    return result
