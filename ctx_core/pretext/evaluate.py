"""Pretext evaluation: held-out accuracy, the 8x8 confusion matrix and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ctx_core.models.siamese import ContextPredictionNet
from ctx_core.pretext.data import PairBatch, PairSampler
from ctx_core.pretext.grid import LABEL_NAMES

EVAL_SEED_OFFSET = 1_000_003  # held-out pairs never share a stream with training batches


@torch.inference_mode()
def pretext_accuracy(
    model: ContextPredictionNet, sampler: PairSampler, n_pairs: int, device: torch.device, amp: bool = False
) -> tuple[float, np.ndarray]:
    """Accuracy on ``n_pairs`` pairs from ``sampler``'s (held-out) images and the
    confusion matrix, int64 (8, 8), rows = true label, columns = prediction."""
    model.eval()
    confusion = np.zeros((8, 8), np.int64)
    seed = sampler.cfg.seed + EVAL_SEED_OFFSET
    step = 0
    while confusion.sum() < n_pairs:
        batch = sampler.batch(step, seed=seed)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch.patches.to(device), batch.pair_index.to(device))
        pred = logits.argmax(1).cpu().numpy()
        np.add.at(confusion, (batch.labels.numpy(), pred), 1)
        step += 1
    model.train()
    return float(np.trace(confusion) / confusion.sum()), confusion


def confusion_plot(confusion: np.ndarray, path: Path, title: str, labels: Sequence[str] = LABEL_NAMES) -> Path:
    """Row-normalised confusion (rows = true label) as a heat map; ``labels``: the K class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    k = len(rows)
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=100)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    context = tuple(labels) == LABEL_NAMES
    ax.set_xlabel("predicted position of the second patch" if context else "predicted")
    ax.set_ylabel("true position" if context else "true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def curves_plot(history: Sequence[dict[str, float]], held_out: float | None, path: Path,
                chance: float = 0.125) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3), dpi=100)
    ax1.plot(steps, [h["loss"] for h in history])
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy")
    ax1.set_title("training loss")
    ax2.plot(steps, [h["train_accuracy"] for h in history], label="train (running)")
    if held_out is not None:
        ax2.axhline(held_out, color="C1", ls="--", label=f"held-out {held_out:.3f}")
    ax2.axhline(chance, color="grey", ls=":", label=f"chance {chance:.3f}")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("step")
    ax2.set_title("pretext accuracy")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def pairs_montage(batch: PairBatch, image_paths: Sequence[Path], path: Path, count: int = 16, tile: int = 192) -> Path:
    """Images with the first patch (green) and second patch (red) of ``count`` pairs, labelled."""
    cols = 4
    rows = -(-min(count, len(batch.labels)) // cols)
    sheet = Image.new("RGB", (cols * tile, rows * tile), "white")
    for k in range(min(count, len(batch.labels))):
        with Image.open(image_paths[int(batch.image_index[k])]) as im:
            img = im.convert("RGB")
        scale = tile / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)))
        d = ImageDraw.Draw(img)
        for box, colour in zip(batch.boxes[k].tolist(), ("#00d000", "#ff2020")):
            d.rectangle([c * scale for c in box], outline=colour, width=2)
        d.text((3, 3), f"label {int(batch.labels[k])} {LABEL_NAMES[int(batch.labels[k])]}", fill="yellow")
        sheet.paste(img, ((k % cols) * tile, (k // cols) * tile))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
