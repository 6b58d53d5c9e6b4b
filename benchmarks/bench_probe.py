"""Probe stage speed, by phase, and the bootstrap against a plain reference, in one run.

1. Seconds per phase of ``ctx probe`` on the default benchmark's labelled splits
   (trainval to fit, test to score; encoder ``models/context/encoder.pt``):
   image features and crop features for the three featurisers, the VOC07 SVMs
   (C by cross-validation), kNN, logistic regression, the bootstrap.
2. Two references in the same run: image features one image per batch in the
   default (contiguous) layout, as before 2026-12-02, on the first ``--reference-images``
   training images against today's cross-image channels-last batches on the same images;
   the SVMs with liblinear's dual solver (the previous default) against the primal one.
3. The bootstrap's AP: ``weighted_average_precision`` over all resamples at once
   against ``sklearn.metrics.average_precision_score`` called once per resample
   (the same numbers; goal: the bootstrap costs less than the probes it scores).

    .venv/bin/python benchmarks/bench_probe.py [--params params.yaml] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ctx_core.config import load_params
from ctx_core.encoder.embed import Embedder, random_init_tower, raw_pixel_embedder, tower_embedder
from ctx_core.probe.features import embed_all, image_features, image_labels, object_crops
from ctx_core.probe.protocols import knn_predict, logistic_predict, svm_voc07, weighted_average_precision
from ctx_core.registry import load_encoder_ref
from ctx_core.stats import bootstrap_indices
from ctx_core.store.labelled import read_detection_split
from cpu import cpu_model  # benchmarks/cpu.py (scripts run from benchmarks/)

ROOT = Path(__file__).resolve().parent.parent



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--reference-images", type=int, default=120)
    args = parser.parse_args()
    settings = load_params(Path(args.params))
    cfg = settings.params.probe
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    tower, contract, _ = load_encoder_ref(str(settings.path(cfg.encoder)), "")
    train = read_detection_split(settings.path(cfg.input), cfg.train_split)
    test = read_detection_split(settings.path(cfg.input), cfg.test_split)
    classes = list(train.classes)
    dev = torch.device("cpu")
    embedders = [tower_embedder("learned", tower, cfg.layer, dev, False),
                 tower_embedder("random_init", random_init_tower(contract.arch, contract.patch_size, 0), cfg.layer, dev, False),
                 raw_pixel_embedder(cfg.raw_pixels_side)]
    times: dict[str, float] = {}

    def contiguous(e: Embedder, module) -> Embedder:
        """The embedder as before: batches in the default NCHW layout."""
        @torch.inference_mode()
        def embed(x):
            return module(x).float()
        return Embedder(e.name, e.dim, embed)

    sub = train.images[:args.reference_images]
    old = [contiguous(embedders[0], tower.eval()), contiguous(embedders[1], random_init_tower(contract.arch, contract.patch_size, 0).eval())]
    t = time.perf_counter()
    image_features(sub, old, contract, cfg.grid_stride_fraction, 1)
    ref_feat_s = time.perf_counter() - t
    t = time.perf_counter()
    image_features(sub, embedders[:2], contract, cfg.grid_stride_fraction, cfg.batch_size)
    new_feat_s = time.perf_counter() - t

    t = time.perf_counter()
    tr_img = image_features(train.images, embedders, contract, cfg.grid_stride_fraction, cfg.batch_size)
    te_img = image_features(test.images, embedders, contract, cfg.grid_stride_fraction, cfg.batch_size)
    times["image features (3 featurisers)"] = time.perf_counter() - t
    t = time.perf_counter()
    tr_crops = object_crops(train.images, classes, contract.patch_size, cfg.min_crop)
    te_crops = object_crops(test.images, classes, contract.patch_size, cfg.min_crop)
    crop_feats = {e.name: (embed_all(e, tr_crops.pixels, contract, cfg.batch_size),
                           embed_all(e, te_crops.pixels, contract, cfg.batch_size)) for e in embedders}
    times["crop features (3 featurisers)"] = time.perf_counter() - t
    ytr, yte = image_labels(train.images, classes), image_labels(test.images, classes)
    t = time.perf_counter()
    svms = {e.name: svm_voc07(tr_img[e.name], ytr, te_img[e.name], yte, cfg.svm_costs, cfg.cv_folds, 0) for e in embedders}
    times["VOC07 SVMs with CV (3 featurisers)"] = time.perf_counter() - t
    t = time.perf_counter()
    dual = {e.name: svm_voc07(tr_img[e.name], ytr, te_img[e.name], yte, cfg.svm_costs, cfg.cv_folds, 0, dual=True)
            for e in embedders}
    times["the same SVMs with liblinear's dual solver (reference)"] = time.perf_counter() - t
    t = time.perf_counter()
    for name, (a, b) in crop_feats.items():
        knn_predict(a, tr_crops.labels, b, cfg.knn_k, cfg.knn_temperature, len(classes))
    times["kNN (3 featurisers)"] = time.perf_counter() - t
    t = time.perf_counter()
    for name, (a, b) in crop_feats.items():
        logistic_predict(a, tr_crops.labels, b, cfg.cv_folds, 0)
    times["logistic with CV (3 featurisers)"] = time.perf_counter() - t

    svm = svms["learned"]
    n = len(test.images)
    idx = bootstrap_indices(n, args.resamples, 0)
    counts = np.stack([np.bincount(row, minlength=n) for row in idx])
    t = time.perf_counter()
    ours = {c: weighted_average_precision(svm.scores[c], svm.labels[c], counts) for c in svm.scores}
    ours_s = time.perf_counter() - t
    times[f"bootstrap AP, {args.resamples} resamples, vectorised (1 featuriser)"] = ours_s
    from sklearn.metrics import average_precision_score

    t = time.perf_counter()
    worst = 0.0
    for c in svm.scores:
        keep = svm.labels[c] >= 0
        for k, w in enumerate(counts):
            ref = average_precision_score(svm.labels[c][keep], svm.scores[c][keep], sample_weight=w[keep])
            if np.isfinite(ref):
                worst = max(worst, abs(ref - ours[c][k]))
    ref_s = time.perf_counter() - t
    times[f"bootstrap AP, {args.resamples} resamples, sklearn per resample (reference)"] = ref_s

    total = sum(v for k, v in times.items() if "reference" not in k)
    print(f"{len(train.images)} train / {n} test images, {len(te_crops.labels)} test crops, {len(svm.scores)} classes")
    print("| phase | seconds | share |\n| --- | ---: | ---: |")
    for k, v in times.items():
        share = "" if "reference" in k else f"{100 * v / total:.0f} %"
        print(f"| {k} | {v:.2f} | {share} |")
    print(f"| all phases (the bootstrap x3 featurisers not repeated here) | {total:.1f} | |")
    def svm_map(r) -> float:
        one = np.ones((1, n))
        return 100 * float(np.nanmean([weighted_average_precision(r.scores[c], r.labels[c], one)[0] for c in r.scores]))

    print(f"image features, {len(sub)} images, 2 towers: one image per batch, NCHW {ref_feat_s:.1f} s; "
          f"cross-image channels-last batches {new_feat_s:.1f} s = {ref_feat_s / new_feat_s:.2f}x")
    for name in svms:
        print(f"SVM {name}: primal mAP {svm_map(svms[name]):.2f}, dual {svm_map(dual[name]):.2f}; "
              f"same C for {sum(svms[name].costs[c] == dual[name].costs.get(c) for c in svms[name].costs)} "
              f"of {len(svms[name].costs)} classes")
    svm_s = times["VOC07 SVMs with CV (3 featurisers)"]
    print(f"SVMs: dual / primal = {times[next(k for k in times if 'dual' in k)] / svm_s:.1f}x")
    print(f"bootstrap: vectorised / sklearn loop = {ref_s / ours_s:.0f}x faster; max |difference| {worst:.2e}")


if __name__ == "__main__":
    main()
