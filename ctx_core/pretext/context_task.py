"""Context prediction (Doersch et al. 2015) as a :class:`~ctx_core.pretext.tasks.PretextTask`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ctx_core.config import PretrainConfig
from ctx_core.distributed import Distributed
from ctx_core.models.siamese import ContextPredictionNet
from ctx_core.models.towers import build_tower
from ctx_core.pretext.data import ImageList, PairSampler
from ctx_core.pretext.evaluate import pairs_montage, pretext_accuracy
from ctx_core.pretext.grid import LABEL_NAMES
from ctx_core.pretext.tasks import HeldOutScore, PretextTask
from ctx_core.pretext.train import ContextPrediction
from ctx_core.checks import chance_accuracy


class ContextTask(PretextTask):
    name = "context"
    unit = "pairs"

    def min_side(self, cfg: PretrainConfig) -> int:
        return cfg.grid_extent

    def batch_items(self, cfg: PretrainConfig) -> int:
        return cfg.batch_size

    def sampler(self, images: ImageList, cfg: PretrainConfig, batch_size: int | None = None) -> PairSampler:
        return PairSampler(images, cfg, batch_size)

    def model(self, cfg: PretrainConfig) -> ContextPredictionNet:
        torch.manual_seed(cfg.seed)
        return ContextPredictionNet(build_tower(cfg.arch, cfg.patch_size))

    def method(self, sampler: PairSampler, cfg: PretrainConfig, env: Distributed, device: torch.device) -> ContextPrediction:
        return ContextPrediction(sampler, cfg, env, device)

    def evaluate(self, model, sampler: PairSampler, n_items: int, device: torch.device, amp: bool = False) -> HeldOutScore:
        accuracy, confusion = pretext_accuracy(model, sampler, n_items, device, amp=amp)
        return HeldOutScore(accuracy, chance_accuracy(confusion), int(confusion.sum()), confusion, LABEL_NAMES)

    def montage(self, sampler: PairSampler, image_paths: Sequence[Path], path: Path, seed: int) -> Path:
        return pairs_montage(sampler.batch(0, seed=seed), image_paths, path)


TASK = ContextTask()
