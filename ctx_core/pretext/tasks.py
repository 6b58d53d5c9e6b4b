"""Pretext tasks: what a pretraining run predicts, behind one interface.

Every task trains the **same tower** (``pretrain.arch``, ``patch_size``), so
the encoder file, its contract (which records the task), feature extraction,
the probes, discovery and detection consume any of them unchanged; and every
task gets the same compute per step: ``cfg.tower_passes`` patches through the
tower (288 with the default 1,280 context pairs = 32 grids of 9 patches).

- ``context``: relative position of two patches of a 3x3 grid (Doersch et al. 2015), 8 classes;
- ``rotation``: which of 0/90/180/270 degrees a square crop was turned by (Gidaris et al. 2018);
  each crop is shown in all four, ``tower_passes / 4`` crops a step;
- ``jigsaw``: which of ``jigsaw_permutations`` tile orders shuffled a 3x3 grid of tiles with gaps
  (Noroozi & Favaro 2016); ``tower_passes / 9`` puzzles a step;
- ``instance``: two augmented views of each image, NT-Xent over the batch (SimCLR, Chen et al.
  2020); ``tower_passes / 2`` images a step.

A task supplies: its sampler (``batch(step, seed=None, rank=0, world=1)``, a
pure function of ``(seed, step, rank, world)``, with ``batch_size`` items in
the global batch and the decoded-image cache of
:class:`~ctx_core.pretext.images.ImageSource`), its network (``.tower`` plus a
head), its :class:`~ctx_core.training.Method` (the loss of one step) and its
held-out score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ctx_core import distributed
from ctx_core.config import PretrainConfig
from ctx_core.distributed import Distributed
from ctx_core.errors import UserError
from ctx_core.pretext.data import pair_loader
from ctx_core.training import Method, StepSums

TASKS = ("context", "rotation", "jigsaw", "instance")  # as PretrainConfig.task


class UnknownTask(UserError):
    """A pretext task name that is not one of :data:`TASKS`."""


@dataclass(frozen=True)
class HeldOutScore:
    """A task's accuracy on held-out images.

    ``accuracy``: share of correct predictions over ``items`` (pairs, rotated crops, puzzles, views);
    ``chance``: what guessing scores (the most frequent label's share, or 1 / candidates);
    ``confusion``: (K, K) int64, rows = true label, columns = prediction, for K <= 8 classes, else None;
    ``labels``: the K class names for the confusion plot.
    """

    accuracy: float
    chance: float
    items: int
    confusion: np.ndarray | None = None
    labels: tuple[str, ...] = ()


class SamplerMethod(Method):
    """What every task's training step shares: this rank's share of the sampler's batches, in step
    order (DataLoader workers: ``cfg.workers``), bf16 autocast only where it is native, and the
    task's items per second (``<rate_unit>_per_second``)."""

    postfix = (("loss", "loss"), ("acc", "train_accuracy"))
    rate_unit = "items"

    def __init__(self, sampler: Any, cfg: PretrainConfig, env: Distributed, device: torch.device):
        self.sampler, self.workers, self.env, self.device = sampler, cfg.workers, env, device
        self.amp = distributed.bf16_autocast(cfg.amp, device)

    def batches(self, start: int, stop: int) -> Iterable[tuple[int, Any]]:
        for batch in pair_loader(self.sampler, start, stop, self.workers, rank=self.env.rank, world=self.env.world):
            yield batch.step, batch

    def rates(self, steps: int, seconds: float) -> dict[str, float]:
        return {f"{self.rate_unit}_per_second": steps * self.sampler.batch_size / max(seconds, 1e-9)}


class PatchClassification(SamplerMethod):
    """Cross-entropy of ``net(batch.patches)`` against ``batch.labels`` (rotation, jigsaw)."""

    def step(self, net: nn.Module, step: int, batch: Any) -> StepSums:
        # channels_last: cuDNN's and oneDNN's fast layout, as the context step
        patches = batch.patches.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = batch.labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = net(patches)
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        correct = float((logits.argmax(1) == labels).sum())
        return StepSums({"loss": loss.item() * len(labels), "train_accuracy": correct}, len(labels))


class PretextTask(ABC):
    """One pretext task. Subclasses are stateless; everything comes from ``cfg``."""

    name: str = ""
    unit: str = "items"  # what the sampler's batch_size counts, for rates: "pairs", "crops", "puzzles", "images"

    @abstractmethod
    def min_side(self, cfg: PretrainConfig) -> int:
        """The smallest image side (px) the task's crops fit in."""

    @abstractmethod
    def batch_items(self, cfg: PretrainConfig) -> int:
        """Items of the global training batch, from ``cfg.tower_passes`` (the equal budget)."""

    @abstractmethod
    def sampler(self, images: Any, cfg: PretrainConfig, batch_size: int | None = None) -> Any:
        """The sampler over ``images`` (an ImageList); ``batch_size`` items (default :meth:`batch_items`)."""

    @abstractmethod
    def model(self, cfg: PretrainConfig) -> nn.Module:
        """The network: ``.tower`` (``build_tower(cfg.arch, cfg.patch_size)``, seeded by ``cfg.seed``) and a head."""

    @abstractmethod
    def method(self, sampler: Any, cfg: PretrainConfig, env: Distributed, device: torch.device) -> Method:
        """The training step."""

    @abstractmethod
    def evaluate(self, model: nn.Module, sampler: Any, n_items: int, device: torch.device,
                 amp: bool = False) -> HeldOutScore:
        """Score about ``n_items`` held-out items drawn from ``sampler`` with a seed training never uses."""

    def montage(self, sampler: Any, image_paths: Sequence[Path], path: Path, seed: int) -> Path | None:
        """A picture of what the task asks (optional)."""
        return None


def get_task(name: str) -> PretextTask:
    """The task called ``name``; :class:`UnknownTask` (one line listing the tasks) otherwise."""
    # one import statement per task: only the task asked for is imported, and the stage's code
    # deps (ctx_core.stage_deps reads import statements) list every task's module
    if name == "context":
        from ctx_core.pretext import context_task as module
    elif name == "rotation":
        from ctx_core.pretext import rotation as module
    elif name == "jigsaw":
        from ctx_core.pretext import jigsaw as module
    elif name == "instance":
        from ctx_core.pretext import instance as module
    else:
        raise UnknownTask(f"unknown pretrain.task {name!r}; the tasks are {', '.join(TASKS)}")
    return module.TASK
