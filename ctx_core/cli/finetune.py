"""``ctx finetune`` and ``ctx voc-eval``: a detector per encoder init, and VOC AP of any results files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from ctx_core.cli.common import settings_from_args


def cmd_finetune(args: argparse.Namespace) -> int:
    from ctx_core.detection.run import run_finetune
    from ctx_core.distributed import from_env

    extra = [f"detection.steps={args.steps}"] if args.steps else []
    settings = settings_from_args(args, extra)
    result = run_finetune(settings, args.init, encoder_ref=args.encoder, resume=args.resume)
    if not from_env().main:
        return 0  # under torchrun, rank 0 reports
    for note in result.notes:
        print(f"ctx: note: {note}", file=sys.stderr)
    summary = {
        "init": result.init, "metric": result.metric, "mAP": round(result.mean_ap, 4),
        "ap": {c: round(v, 4) for c, v in result.ap.items()}, "steps": result.steps,
        "seconds_per_step": round(result.seconds_per_step, 3), "final_loss": round(result.final_loss, 4),
        "detector": str(result.detector), "results": str(result.results_dir),
        "encoder_version": result.encoder_version, "data_version": result.data_version,
        "mlflow_run_id": result.mlflow_run_id, "registered_version": result.registered_version,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{result.init}: mAP {100 * result.mean_ap:.1f} ({result.metric}) on {result.test_images} test images "
              f"after {result.steps} steps ({result.seconds_per_step:.2f} s/step); detector {result.detector}")
    return 0


def cmd_voc_eval(args: argparse.Namespace) -> int:
    from ctx_core.detection.evaluate import evaluate_detections
    from ctx_core.detection.results import read_results
    from ctx_core.store.labelled import read_detection_split

    split = read_detection_split(Path(args.root), args.split)
    classes = list(split.present_classes)
    known = [c for c in split.classes if c not in classes]
    detections, notes = read_results(Path(args.detections), args.split, classes, known)
    result = evaluate_detections(split, detections, classes, args.metric)
    notes = [*split.notes, *notes, *result.notes]
    for note in notes:
        print(f"ctx: note: {note}", file=sys.stderr)
    out = {"mAP": result.mean_ap, "ap": result.ap, "metric": args.metric, "images": len(split.images), "notes": notes}
    print(json.dumps(out, indent=2))
    return 0


def register(sub: argparse._SubParsersAction, common_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("finetune", help="fine-tune and score a Faster R-CNN from one encoder init (detection)")
    common_args(p)
    p.add_argument("--init", required=True, choices=["context", "scratch", "context_rescaled"],
                   help="backbone init: the context encoder, random, or the encoder with data-dependent rescaling")
    p.add_argument("--encoder", metavar="REF", help="encoder.pt path, models:/name@alias or models:/name/version (detection.encoder)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this init")
    p.add_argument("--steps", type=int, metavar="N", help="total training steps (detection.steps)")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("voc-eval", help="score VOC results files (comp4_det_<split>_<class>.txt) against a VOC root")
    common_args(p)
    p.add_argument("--root", required=True, metavar="VOCROOT", help="VOC root (Annotations/, ImageSets/Main/) or ingest store")
    p.add_argument("--split", default="test", metavar="SPLIT", help="image set to score (default: test)")
    p.add_argument("--detections", required=True, metavar="DIR", help="folder of comp4_det_<split>_<class>.txt files")
    p.add_argument("--metric", choices=["voc07", "area"], default="voc07",
                   help="voc07: 11-point AP (default); area: area under the PR curve (VOC2010+)")
    p.set_defaults(func=cmd_voc_eval)
