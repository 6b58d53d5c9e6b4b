"""``ctx pretrain`` and ``ctx pairs``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from PIL import Image

from ctx_core.cli.common import settings_from_args
from ctx_core.errors import UserError


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ctx_core.pretext.run import run_pretrain
    from ctx_core.distributed import from_env

    extra = [f"pretrain.steps={args.steps}"] if args.steps else []
    settings = settings_from_args(args, extra)
    result = run_pretrain(settings, resume=args.resume)
    if not from_env().main:
        return 0  # under torchrun, rank 0 reports
    summary = {
        "encoder": str(result.encoder),
        "task": result.task,
        "held_out_accuracy": result.held_out_accuracy,
        "val_accuracy": result.val_accuracy,
        "chance": result.chance_accuracy,
        "train_images": result.train_images,
        "held_out_images": result.held_out_images,
        "val_images": result.val_images,
        "test_images": result.test_images,
        **{k: result.position_audit[k] for k in ("position_ratio_learned", "position_ratio_random_init",
                                                  "position_shortcut") if k in result.position_audit},
        "skipped_images": result.skipped_images,
        "steps": result.steps,
        "pairs_per_second": round(result.pairs_per_second, 1),
        "tower_passes_per_second": round(result.tower_passes_per_second, 1),
        "data_version": result.data_version,
        "mlflow_run_id": result.mlflow_run_id,
        "registered_version": result.registered_version,
        "notes": list(result.notes),
    }
    for warning in result.warnings:
        print(f"ctx: warning: {warning}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"pretext test accuracy {result.held_out_accuracy:.3f} on {result.test_images} held-out images "
              f"(chance {result.chance_accuracy:.3f}, the most frequent label's share; validation "
              f"{result.val_accuracy:.3f} on {result.val_images}) after {result.steps} steps "
              f"on {result.train_images} images ({result.skipped_images} skipped); encoder {result.encoder}")
        audit = result.position_audit
        if audit:
            print(f"position audit: RMSE / centre-guess RMSE {audit['position_ratio_learned']:.2f} learned, "
                  f"{audit['position_ratio_random_init']:.2f} random-init (1 = no position in the features)")
        for note in result.notes:
            print(note)
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    """Run the training sampler on one image and print its pairs (or draw them)."""
    from ctx_core.pretext.data import ImageList, PairSampler
    from ctx_core.pretext.evaluate import pairs_montage
    from ctx_core.pretext.grid import LABEL_NAMES

    settings = settings_from_args(args)
    cfg = settings.params.pretrain
    if cfg.task != "context":
        raise UserError(f"ctx pairs draws context prediction's patch pairs, but pretrain.task is {cfg.task!r}, "
                        "which has none; use --set pretrain.task=context")
    path = Path(args.image)
    try:
        with Image.open(path) as im:
            size = im.size
    except (OSError, ValueError) as exc:
        raise UserError(f"--image {path}: cannot read it as an image ({exc.__class__.__name__})") from None
    if args.n < 1:
        raise UserError(f"--n {args.n}: expected a positive number of pairs")
    if min(size) < cfg.grid_extent:
        raise UserError(f"--image {path} is {size[0]}x{size[1]} px, smaller than the patch grid "
                        f"({cfg.grid_extent} px); use a larger image or smaller pretrain.patch_size/gap")
    sampler = PairSampler(ImageList((path,), (size,), 0), cfg.model_copy(update={"seed": args.seed}), batch_size=args.n)
    batch = sampler.batch(0)
    pairs = [
        {"first": b[0], "second": b[1], "label": int(k), "position": LABEL_NAMES[int(k)]}
        for b, k in zip(batch.boxes.tolist(), batch.labels.tolist())
    ]
    if args.png:
        pairs_montage(batch, [path], Path(args.png), count=args.n)
    if args.json or not args.png:
        print(json.dumps({
            "image": str(path), "width": size[0], "height": size[1], "resized": False,
            "coordinates": "pixels of the image as stored, x0 y0 inclusive, x1 y1 exclusive",
            "patch_size": cfg.patch_size, "gap": cfg.gap, "jitter": cfg.jitter, "pairs": pairs,
        }, indent=1))
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("pretrain", help="train the encoder on pretrain.task (context prediction by default)")
    common_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in pretrain.out")
    p.add_argument("--steps", type=int, metavar="N", help="total training steps (pretrain.steps)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("pairs", help="show the patch pairs the sampler draws from one image")
    common_args(p)
    p.add_argument("--image", required=True, metavar="IMG")
    p.add_argument("--n", type=int, default=8, metavar="N", help="number of pairs")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--png", metavar="OUT", help="draw the pairs into this PNG")
    p.set_defaults(func=cmd_pairs)
