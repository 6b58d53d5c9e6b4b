"""Instance discrimination (SimCLR: Chen, Kornblith, Norouzi & Hinton, ICML 2020) as a
:class:`~ctx_core.pretext.tasks.PretextTask`.

Each image of a step is shown twice, as two independently augmented
``patch_size`` views; the tower and a projection head embed all ``2N`` views
and NT-Xent asks every view to pick its partner out of the other ``2N - 1``.
Each step embeds ``2 x batch_size`` views, ``cfg.tower_passes`` with
:meth:`InstanceTask.batch_items` (the budget every task gets). The encoder is
the tower (fc6); the projection head is dropped after pretraining, as in SimCLR.

Augmentations are SimCLR's CIFAR-10 recipe (appendix B.9), since our views
are 32-px patches like CIFAR's: random resized crop (area 8-100 % of the
image, aspect 3/4-4/3; the least area is raised to ``patch_size**2`` px on
small images so a view is rarely upsampled), horizontal flip, colour jitter
of strength 0.5 with probability 0.8, grayscale with probability 0.2, no
blur. Then the encoder's input transform: the test-time colour map of
``chroma`` and per-patch mean / RMS normalisation
(:func:`ctx_core.encoder.preprocess.test_time`), so pretraining sees what
every consumer of the encoder feeds it. Normalisation removes a view's
per-channel offset and overall gain, so brightness and contrast jitter act
only through clipping at 0 and 255; saturation, hue and grayscale remain.
Hue is a rotation of the YIQ chroma plane (linear, unlike torchvision's HSV
shift, so it vectorises as one 3x3 matrix per view).

Everything about image ``i`` of step ``t`` (which image, both views' crops,
flips and colour draws) comes from ``np.random.default_rng([seed, t, i])``;
rank ``r`` of ``W`` takes images ``[r B/W, (r+1) B/W)``, so the ranks' views
are exactly the 1-process batch's. Crops are cut and resized vectorised, by
one ``roi_align`` per level of a 2x2-mean pyramid of 16 images at a time
(:func:`resized_crops`), not per sample: a 144-image batch of 500 x 375 images
takes 0.3 s on one core of a 2-core AVX2 EPYC, the step's 288 tower passes
1.5 s (2026-12-02).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torchvision.ops import roi_align

from ctx_core.config import PretrainConfig
from ctx_core.distributed import Distributed
from ctx_core.encoder.preprocess import grayscale, test_time
from ctx_core.models.towers import Tower, build_tower
from ctx_core.pretext.data import ImageList
from ctx_core.pretext.evaluate import EVAL_SEED_OFFSET
from ctx_core.pretext.images import ImageSource
from ctx_core.pretext.tasks import HeldOutScore, PretextTask, SamplerMethod
from ctx_core.training import StepSums

CROP_SCALE = (0.08, 1.0)  # share of the image's area a view covers (SimCLR, from Inception's crops)
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect ratio, width / height
CROP_ATTEMPTS = 10  # draws before falling back to a centred crop, as torchvision's RandomResizedCrop
FLIP_PROB = 0.5
JITTER_PROB = 0.8
JITTER_STRENGTH = 0.5  # SimCLR's CIFAR-10 setting; brightness, contrast, saturation +-0.8 s, hue +-0.2 s turns
GRAY_PROB = 0.2
IMAGES_PER_RESAMPLE = 16  # images padded into one roi_align call: 48 MB of float32 at VOC's 500 x 500

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass(frozen=True)
class InstanceBatch:
    """Two views of each of ``N`` images; rows ``2 i`` and ``2 i + 1`` are the views of image ``i``.

    ``patches``: float32 (2N, 3, P, P) network inputs; ``image_index``: int64 (2N,) the image each view
    is cut from; ``boxes``: int64 (2N, 4) x0, y0, x1, y1 of the view's crop in that image (before the
    flip); ``flipped``: bool (2N,) mirrored left-right.
    """

    step: int
    patches: torch.Tensor
    image_index: torch.Tensor
    boxes: torch.Tensor
    flipped: torch.Tensor

    @property
    def images(self) -> int:
        return len(self.image_index) // 2


@dataclass(frozen=True)
class ViewDraws:
    """The random choices of ``V`` views: ``boxes`` int64 (V, 4) x0, y0, x1, y1; ``flip`` bool (V,);
    ``jitter`` float (V, 4) brightness, contrast and saturation factors and hue shift in turns (1, 1, 1, 0
    where no jitter is applied); ``gray`` bool (V,)."""

    boxes: np.ndarray
    flip: np.ndarray
    jitter: np.ndarray
    gray: np.ndarray

    @staticmethod
    def cat(draws: Sequence["ViewDraws"]) -> "ViewDraws":
        return ViewDraws(*(np.concatenate([getattr(d, f) for d in draws]) for f in ("boxes", "flip", "jitter", "gray")))


def crop_box(rng: np.random.Generator, width: int, height: int, patch: int) -> np.ndarray:
    """A random resized crop of a ``width x height`` image: int64 (4,) x0, y0, x1, y1.

    torchvision's ``RandomResizedCrop.get_params`` with a fixed number of draws (10 attempts, then a
    centred crop clamped to the aspect range); the least area is ``max(0.08, patch**2 / area)``.
    Plain floats: numpy on 10-element arrays cost 0.2 ms a crop.
    """
    area = width * height
    low = min(1.0, max(CROP_SCALE[0], patch * patch / area))
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    u = rng.random(2 * CROP_ATTEMPTS + 2).tolist()
    for k in range(CROP_ATTEMPTS):
        scale = low + (CROP_SCALE[1] - low) * u[2 * k]
        ratio = math.exp(log_lo + (log_hi - log_lo) * u[2 * k + 1])
        cw, ch = round(math.sqrt(area * scale * ratio)), round(math.sqrt(area * scale / ratio))
        if 1 <= cw <= width and 1 <= ch <= height:
            x0, y0 = int(u[-2] * (width - cw + 1)), int(u[-1] * (height - ch + 1))
            break
    else:
        aspect = width / height
        if aspect < CROP_RATIO[0]:
            cw, ch = width, min(height, round(width / CROP_RATIO[0]))
        elif aspect > CROP_RATIO[1]:
            cw, ch = min(width, round(height * CROP_RATIO[1])), height
        else:
            cw, ch = width, height
        x0, y0 = (width - cw) // 2, (height - ch) // 2
    return np.array([x0, y0, x0 + cw, y0 + ch], np.int64)


def draw_views(rng: np.random.Generator, width: int, height: int, patch: int, views: int = 2) -> ViewDraws:
    """``views`` views of one ``width x height`` image; the same number of draws from ``rng`` every time."""
    boxes, flip, jitter, gray = [], [], [], []
    s = JITTER_STRENGTH
    for _ in range(views):
        boxes.append(crop_box(rng, width, height, patch))
        u = rng.random(7)
        flip.append(u[0] < FLIP_PROB)
        factors = np.array([1 + 0.8 * s * (2 * u[3] - 1), 1 + 0.8 * s * (2 * u[4] - 1),
                            1 + 0.8 * s * (2 * u[5] - 1), 0.2 * s * (2 * u[6] - 1)])
        jitter.append(factors if u[1] < JITTER_PROB else np.array([1.0, 1.0, 1.0, 0.0]))
        gray.append(u[2] < GRAY_PROB)
    return ViewDraws(np.stack(boxes), np.array(flip), np.stack(jitter), np.array(gray))


def _buffer(workspace: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of ``shape`` on memory kept in ``workspace`` between calls: the CPU allocator
    returns large blocks to the OS, and touching fresh pages made filling a new 16-image stack 7x slower."""
    numel = math.prod(shape)
    held = workspace.get(name)
    # a buffer made under torch.inference_mode (the held-out score) cannot be written outside it (the picture)
    if held is None or held.numel() < numel or held.is_inference() != torch.is_inference_mode_enabled():
        held = workspace[name] = torch.empty(numel)
    return held[:numel].view(shape)


def resized_crops(images: Sequence[torch.Tensor], boxes: np.ndarray, owner: np.ndarray, patch: int,
                  workspace: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Crops ``boxes`` (V, 4) x0, y0, x1, y1 of ``images[owner[v]]`` (uint8 3 x H x W each), resized to
    float32 (V, 3, P, P) pixels 0-255 with an area filter.

    Per :data:`IMAGES_PER_RESAMPLE` images: stack them padded to a common size by repeating their
    last row and column (a crop at the border samples what it would on the bare image), halve the
    stack with 2x2 means ``k`` times, and cut every crop whose shorter side is ``2**k`` to ``2**(k+1)``
    patches from level ``k`` with one ``roi_align``; each output pixel there averages at most 3 x 3
    bilinear samples over its bin. ``workspace``: buffers reused between calls (a sampler keeps one).
    """
    workspace = {} if workspace is None else workspace
    out = torch.empty(len(boxes), 3, patch, patch)
    owner = np.asarray(owner)
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    level = np.floor(np.log2(np.maximum(side / patch, 1.0))).astype(np.int64)
    for first in range(0, len(images), IMAGES_PER_RESAMPLE):
        chunk = images[first:first + IMAGES_PER_RESAMPLE]
        rows = np.flatnonzero((owner >= first) & (owner < first + len(chunk)))
        top = int(level[rows].max(initial=0))
        unit = 2**top
        hmax = -(-max(im.shape[1] for im in chunk) // unit) * unit
        wmax = -(-max(im.shape[2] for im in chunk) // unit) * unit
        pyramid = _buffer(workspace, "level0", (len(chunk), 3, hmax, wmax))
        for i, im in enumerate(chunk):
            h, w = im.shape[1:]
            pyramid[i, :, :h, :w].copy_(im)
            pyramid[i, :, :h, w:] = pyramid[i, :, :h, w - 1:w]
            pyramid[i, :, h:, :] = pyramid[i, :, h - 1:h, :]
        for k in range(top + 1):
            at = rows[level[rows] == k]
            if len(at):
                rois = torch.from_numpy(np.concatenate([owner[at, None] - first, boxes[at]], axis=1)).float()
                out[torch.from_numpy(at)] = roi_align(pyramid, rois, patch, spatial_scale=2.0**-k, sampling_ratio=-1,
                                                      aligned=True)
            if k < top:
                pyramid = _halve(pyramid, workspace, f"level{k + 1}")
    return out


def _halve(x: torch.Tensor, workspace: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """2x2 means of (N, C, 2H, 2W) ``x``: (N, C, H, W) in ``workspace[name]``. Row pairs, then column
    pairs of the half-height result: 2x faster than one strided sum of four, 4x ``avg_pool2d``'s speed."""
    n, c, h, w = x.shape
    rows = torch.add(x[..., 0::2, :], x[..., 1::2, :], out=_buffer(workspace, "rows", (n, c, h // 2, w)))
    out = torch.add(rows[..., 0::2], rows[..., 1::2], out=_buffer(workspace, name, (n, c, h // 2, w // 2)))
    return out.mul_(0.25)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(V, 3, H, W) -> (V, 1, H, W), ITU-R 601 as :func:`~ctx_core.encoder.preprocess.grayscale`."""
    return torch.einsum("c,nchw->nhw", _YIQ[0].to(x), x)[:, None]


def hue_matrices(turns: torch.Tensor) -> torch.Tensor:
    """(V,) hue shifts in turns -> (V, 3, 3) RGB maps rotating the YIQ chroma plane (luma kept)."""
    cos, sin = torch.cos(2 * math.pi * turns), torch.sin(2 * math.pi * turns)
    rot = torch.zeros(len(turns), 3, 3, dtype=turns.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    yiq = _YIQ.to(turns.dtype)
    return torch.linalg.inv(yiq) @ rot @ yiq


def colour_jitter(x: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue (``jitter`` (V, 4), see :class:`ViewDraws`) on float
    (V, 3, H, W) pixels 0-255, each clipped to 0-255 as torchvision's ``ColorJitter`` (fixed order)."""
    b, c, s = (jitter[:, k, None, None, None].to(x) for k in range(3))
    x = (x * b).clamp(0, 255)
    x = (c * x + (1 - c) * _luma(x).mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 255)
    x = (s * x + (1 - s) * _luma(x)).clamp(0, 255)
    v, ch, h, w = x.shape
    return (hue_matrices(jitter[:, 3].double()).to(x) @ x.reshape(v, ch, h * w)).reshape(v, ch, h, w).clamp(0, 255)


def render_views(images: Sequence[torch.Tensor], owner: np.ndarray, draws: ViewDraws, cfg: PretrainConfig,
                 augment: bool = True, workspace: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The network inputs, float32 (V, 3, P, P): crops resized, then (``augment``) flipped, jittered and
    grayed, then the encoder's input transform (``chroma``'s test-time colour map, patch mean and RMS)."""
    x = resized_crops(images, draws.boxes, owner, cfg.patch_size, workspace)
    if augment:
        flip = torch.from_numpy(draws.flip)[:, None, None, None]
        x = torch.where(flip, x.flip(-1), x)
        x = colour_jitter(x, torch.from_numpy(draws.jitter))
        x = torch.where(torch.from_numpy(draws.gray)[:, None, None, None], grayscale(x), x)
    return test_time(x, cfg.chroma, cfg.patch_rms)


class InstanceSampler(ImageSource):
    """Makes :class:`InstanceBatch` es from an :class:`~ctx_core.pretext.data.ImageList`.

    ``batch_size`` (default :meth:`InstanceTask.batch_items`) counts images of the global batch, over
    all ranks. ``augment=False`` keeps the random crops but skips flips, colour jitter and grayscale
    (the draws are made all the same, so the crops are those of ``augment=True``).
    """

    def __init__(self, images: ImageList, cfg: PretrainConfig, batch_size: int | None = None, augment: bool = True):
        super().__init__(images, cfg.image_cache_mb)
        self.cfg = cfg
        self.batch_size = batch_size or cfg.tower_passes // 2
        self.augment = augment
        self._workspace: dict[str, torch.Tensor] = {}

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_workspace"] = {}
        return state

    def batch(self, step: int, seed: int | None = None, rank: int = 0, world: int = 1) -> InstanceBatch:
        """Images ``[rank B/world, (rank+1) B/world)`` of step ``step``'s global batch of ``B = batch_size``."""
        base = self.cfg.seed if seed is None else seed
        if self.batch_size % world or not 0 <= rank < world:
            raise ValueError(f"batch of {self.batch_size} images cannot be split into {world} equal parts "
                             f"(rank {rank})")
        lo, hi = rank * self.batch_size // world, (rank + 1) * self.batch_size // world
        images, index, draws = [], [], []
        for item in range(lo, hi):
            rng = np.random.default_rng([base, step, item])
            idx, img = self.draw(rng)
            images.append(img)
            index.append(idx)
            draws.append(draw_views(rng, img.shape[2], img.shape[1], self.cfg.patch_size))
        views = ViewDraws.cat(draws)
        owner = np.repeat(np.arange(len(images)), 2)
        return InstanceBatch(
            step=step,
            patches=render_views(images, owner, views, self.cfg, self.augment, self._workspace),
            image_index=torch.from_numpy(np.repeat(np.asarray(index, np.int64), 2)),
            boxes=torch.from_numpy(views.boxes),
            flipped=torch.from_numpy(views.flip) if self.augment else torch.zeros(len(owner), dtype=torch.bool),
        )


class InstanceNet(nn.Module):
    """``tower`` (fc6 features, the encoder) and SimCLR's projection head: Linear(d, d) - BN - ReLU -
    Linear(d, ``projection``). ``forward``: (N, 3, P, P) -> (N, projection), the vectors NT-Xent compares."""

    def __init__(self, tower: Tower, projection: int):
        super().__init__()
        self.tower = tower
        d = tower.feature_dim
        self.projection = nn.Sequential(nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(inplace=True),
                                        nn.Linear(d, projection))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.projection(self.tower(views))


def partners(n_views: int, device: torch.device | None = None) -> torch.Tensor:
    """(2N,) the row of each view's partner: ``2 i <-> 2 i + 1``."""
    return torch.arange(n_views, device=device) ^ 1


def _nt_xent_rows(anchors: torch.Tensor, views: torch.Tensor, temperature: float,
                  offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of ``anchors`` (A, d), which are rows ``offset .. offset + A - 1`` of ``views`` (2N, d):
    the mean loss over the anchors and how many find their partner most similar."""
    a, v = F.normalize(anchors, dim=1), F.normalize(views, dim=1)
    logits = a @ v.T / temperature  # (A, 2N) cosine similarities / T
    rows = torch.arange(len(a), device=a.device)
    own = F.one_hot(rows + offset, len(v)).bool()
    logits = logits.masked_fill(own, float("-inf"))  # a view is not its own candidate
    target = partners(len(v), a.device)[offset:offset + len(a)]
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).sum()


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR eq. 1), averaged over all ``2N`` views.

    ``z``: (2N, d) projections, rows ``2 i`` and ``2 i + 1`` the views of image ``i``. For view ``k``
    with partner ``p``: ``-log(exp(sim(k, p) / T) / sum_{j != k} exp(sim(k, j) / T))``, ``sim`` the
    cosine similarity; the other ``2N - 2`` views are the negatives.
    """
    return _nt_xent_rows(z, z, temperature, 0)[0]


def global_nt_xent(z: torch.Tensor, temperature: float, env: Distributed) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of this rank's views ``z`` (2N/W, d) against the views of all ranks: the mean loss over
    its views and how many find their partner.

    Under ``torchrun`` the projections are all-gathered with gradients (the backward pass sums every
    rank's gradient into the rank that made the view), so with DDP's gradient average the update is
    that of :func:`nt_xent` over the global batch. One process touches no ``torch.distributed``.
    """
    if env.world == 1:
        return _nt_xent_rows(z, z, temperature, 0)
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated for _functional_collectives, whose autograd is still private
        warnings.simplefilter("ignore", FutureWarning)
        views = torch.cat(all_gather(z))
    return _nt_xent_rows(z, views, temperature, env.rank * len(z))


class InstanceDiscrimination(SamplerMethod):
    """NT-Xent over the global batch's views; ``train_accuracy``: share of views whose most similar
    other view is their partner."""

    rate_unit = "images"

    def __init__(self, sampler: InstanceSampler, cfg: PretrainConfig, env: Distributed, device: torch.device):
        super().__init__(sampler, cfg, env, device)
        self.temperature = cfg.instance_temperature

    def step(self, net: nn.Module, step: int, batch: InstanceBatch) -> StepSums:
        views = batch.patches.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            z = net(views)
        loss, correct = global_nt_xent(z.float(), self.temperature, self.env)
        loss.backward()
        return StepSums({"loss": loss.item() * len(views), "train_accuracy": float(correct)}, len(views))


@torch.inference_mode()
def retrieval_accuracy(model: InstanceNet, sampler: InstanceSampler, n_views: int, device: torch.device,
                       amp: bool = False) -> tuple[float, float, int]:
    """Top-1 retrieval of each view's partner among its batch's other views, by cosine similarity of
    the projections, on about ``n_views`` views of ``sampler``'s images drawn with a seed training
    never uses: ``(accuracy, chance, views)``.

    Views of the *same* image drawn twice into a batch (sampling is with replacement) are not
    candidates: they would be right answers scored as wrong. ``chance`` is the mean of
    ``1 / candidates``, ``1 / (2N - 1)`` when no image repeats.
    """
    was_training = model.training
    model.eval()
    seed = sampler.cfg.seed + EVAL_SEED_OFFSET
    correct = chance = 0.0
    total, step = 0, 0
    while total < n_views:
        batch = sampler.batch(step, seed=seed)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            z = model(batch.patches.to(device))
        z = F.normalize(z.float(), dim=1)
        n = len(z)
        target = partners(n, device)
        index = batch.image_index.to(device)
        excluded = index[:, None] == index[None, :]
        excluded[torch.arange(n, device=device), target] = False
        sim = (z @ z.T).masked_fill(excluded, float("-inf"))
        correct += float((sim.argmax(1) == target).sum())
        chance += float((1.0 / (~excluded).sum(1)).sum())
        total += n
        step += 1
    model.train(was_training)
    return correct / total, chance / total, total


def _display(view: torch.Tensor, side: int) -> Image.Image:
    """A normalised (3, P, P) view stretched to 0-255 for display, ``side`` px."""
    lo, hi = view.min(), view.max()
    arr = ((view - lo) / (hi - lo).clamp_min(1e-6) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr).resize((side, side), Image.NEAREST)


def views_montage(batch: InstanceBatch, image_paths: Sequence[Path], path: Path, count: int = 8,
                  tile: int = 160) -> Path:
    """One row per image: the image with its two crops (green, red), then the two views as the tower
    sees them (contrast-stretched)."""
    count = min(count, batch.images)
    sheet = Image.new("RGB", (3 * tile, count * tile), "white")
    for k in range(count):
        with Image.open(image_paths[int(batch.image_index[2 * k])]) as im:
            img = im.convert("RGB")
        scale = tile / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)))
        d = ImageDraw.Draw(img)
        for box, colour in zip(batch.boxes[2 * k:2 * k + 2].tolist(), ("#00d000", "#ff2020")):
            d.rectangle([c * scale for c in box], outline=colour, width=2)
        sheet.paste(img, (0, k * tile))
        for v in range(2):
            sheet.paste(_display(batch.patches[2 * k + v], tile - 8), ((1 + v) * tile + 4, k * tile + 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


class InstanceTask(PretextTask):
    name = "instance"
    unit = "images"

    def min_side(self, cfg: PretrainConfig) -> int:
        return cfg.patch_size

    def batch_items(self, cfg: PretrainConfig) -> int:
        return cfg.tower_passes // 2

    def sampler(self, images: ImageList, cfg: PretrainConfig, batch_size: int | None = None) -> InstanceSampler:
        return InstanceSampler(images, cfg, batch_size)

    def model(self, cfg: PretrainConfig) -> InstanceNet:
        torch.manual_seed(cfg.seed)
        return InstanceNet(build_tower(cfg.arch, cfg.patch_size), cfg.instance_projection)

    def method(self, sampler: InstanceSampler, cfg: PretrainConfig, env: Distributed,
               device: torch.device) -> InstanceDiscrimination:
        return InstanceDiscrimination(sampler, cfg, env, device)

    def evaluate(self, model: InstanceNet, sampler: InstanceSampler, n_items: int, device: torch.device,
                 amp: bool = False) -> HeldOutScore:
        """Partner retrieval on about ``n_items`` held-out views (projections; see :func:`retrieval_accuracy`)."""
        accuracy, chance, views = retrieval_accuracy(model, sampler, n_items, device, amp=amp)
        return HeldOutScore(accuracy, chance, views)

    def montage(self, sampler: InstanceSampler, image_paths: Sequence[Path], path: Path, seed: int) -> Path:
        return views_montage(sampler.batch(0, seed=seed), image_paths, path)


TASK = InstanceTask()
