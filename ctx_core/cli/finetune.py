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
    summary = run_finetune(settings, args.init, encoder_ref=args.encoder, resume=args.resume, seeds=args.seeds)
    if not from_env().main:
        return 0  # under torchrun, rank 0 reports
    for note in summary.notes:
        print(f"ctx: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "init": summary.init, "metric": summary.metric, "mAP": summary.test.as_dict(), "val_mAP": summary.val.as_dict(),
            "ap": {c: round(v, 4) for c, v in summary.ap.items()}, "summary": str(summary.metrics),
            "runs": [{"seed": r.seed, "mAP": round(r.mean_ap, 4), "val_mAP": round(r.val_map, 4), "steps": r.steps,
                      "seconds_per_step": round(r.seconds_per_step, 3), "final_loss": round(r.final_loss, 4),
                      "detector": str(r.detector), "results": str(r.results_dir), "encoder_version": r.encoder_version,
                      "data_version": r.data_version, "mlflow_run_id": r.mlflow_run_id,
                      "registered_version": r.registered_version} for r in summary.runs],
        }, indent=2))
        return 0
    for r in summary.runs:
        val = f", val mAP {100 * r.val_map:.1f}" if r.val_map == r.val_map else ""
        print(f"{r.init} seed {r.seed}: test mAP {100 * r.mean_ap:.1f} ({r.metric}) on {r.test_images} images{val} "
              f"after {r.steps} steps ({r.seconds_per_step:.2f} s/step); detector {r.detector}")
    print(f"{summary.init}: test mAP {summary.test.format(100)} over seeds; summary {summary.metrics}")
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
    p.add_argument("--init", required=True, choices=["context", "scratch", "context_rescaled", "scratch_rescaled"],
                   help="backbone init: the context encoder, random, or either with data-dependent rescaling")
    p.add_argument("--encoder", metavar="REF", help="encoder.pt path, models:/name@alias or models:/name/version (detection.encoder)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this init")
    p.add_argument("--steps", type=int, metavar="N", help="total training steps (detection.steps)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="seeds to run, one detector each (detection.seeds)")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("voc-eval", help="score VOC results files (comp4_det_<split>_<class>.txt) against a VOC root")
    common_args(p)
    p.add_argument("--root", required=True, metavar="VOCROOT", help="VOC root (Annotations/, ImageSets/Main/) or ingest store")
    p.add_argument("--split", default="test", metavar="SPLIT", help="image set to score (default: test)")
    p.add_argument("--detections", required=True, metavar="DIR", help="folder of comp4_det_<split>_<class>.txt files")
    p.add_argument("--metric", choices=["voc07", "area"], default="voc07",
                   help="voc07: 11-point AP (default); area: area under the PR curve (VOC2010+)")
    p.set_defaults(func=cmd_voc_eval)
