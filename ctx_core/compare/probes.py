"""Encoders side by side by their frozen-feature probe scores (``ctx probe`` runs in MLflow).

A probe run is tagged ``stage=probe``, ``encoder_version`` (``ctx-encoder/<n>``
or ``file:<digest>``) and ``data_version``; its metrics are each score's point
estimate ``<score>`` and bootstrap 95 % bounds ``<score>_low`` / ``<score>_high``
over test images, for the learned encoder and the random-init and raw-pixel
baselines. Per encoder the newest finished probe run on the data version the
store holds now counts; encoders are ranked by the VOC07 SVM mAP of the learned
features. The best's lead is beyond noise when its interval and the runner-up's
do not overlap: conservative, since both were scored on the same test images
but the intervals are not paired here. Informational: the encoder alias
follows the detector champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ctx_core.compare.versions import EncoderIndex, as_float
from ctx_core.stats import Interval

RANK_SCORE = "svm_map_learned"
# (metric, column header) shown in the encoder table
SCORES = (
    ("svm_map_learned", "SVM mAP"),
    ("svm_map_random_init", "SVM mAP random init"),
    ("svm_map_raw_pixels", "SVM mAP raw pixels"),
    ("knn_top1_learned", "kNN top-1"),
    ("logreg_top1_learned", "logistic top-1"),
)


@dataclass(frozen=True)
class EncoderProbe:
    encoder: str                     # name/version when it resolves in the registry, else the run's tag
    run_id: str
    data_version: str
    scores: dict[str, Interval]      # metric -> point estimate with its bootstrap interval
    task: str = "context"            # the pretext task that trained the encoder (its contract, as the probe logged it)

    @property
    def rank_score(self) -> Interval:
        return self.scores[RANK_SCORE]


@dataclass(frozen=True)
class EncoderRanking:
    probes: list[EncoderProbe]       # best SVM mAP first
    lead_beyond_noise: bool
    sentence: str

    @property
    def best(self) -> EncoderProbe | None:
        return self.probes[0] if self.probes else None


def _score(metrics: dict[str, float], name: str) -> Interval:
    n = int(as_float(metrics.get(f"{name}_n", 0)) or 0)
    return Interval(as_float(metrics.get(name)), as_float(metrics.get(f"{name}_low")),
                    as_float(metrics.get(f"{name}_high")), n)


def format_score(x: Interval) -> str:
    """``45.1 [41.0, 49.2]`` in %; ``n/a`` when there is no point estimate."""
    if not math.isfinite(x.mean):
        return "n/a"
    body = f"{100 * x.mean:.1f}"
    return f"{body} [{100 * x.low:.1f}, {100 * x.high:.1f}]" if x.defined else f"{body} [no interval]"


def read_probes(client, experiment: str, current: str | None, encoders: EncoderIndex,
                limit: int = 1000) -> list[EncoderProbe]:
    """Per encoder, the newest finished probe run with an SVM score on data ``current``
    (any data version when the store's is unknown); best SVM mAP first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string="tags.stage = 'probe'", max_results=limit,
                              order_by=["attributes.start_time DESC"])
    newest: dict[str, EncoderProbe] = {}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if run.info.status != "FINISHED" or not math.isfinite(as_float(metrics.get(RANK_SCORE))):
            continue  # failed, or probes skipped (a store without labels)
        if current and tags.get("data_version") != current:
            continue
        label = encoders.label(tags.get("encoder_version", "?"))
        if label not in newest:
            newest[label] = EncoderProbe(label, run.info.run_id, tags.get("data_version", ""),
                                         {name: _score(metrics, name) for name, _ in SCORES},
                                         run.data.params.get("encoder_task", "context"))
    return sorted(newest.values(), key=lambda p: -p.rank_score.mean)


def rank_encoders(probes: list[EncoderProbe], current: str | None) -> EncoderRanking:
    """Whether the best encoder's SVM mAP lead over the runner-up is beyond noise."""
    if not probes:
        where = f" on data {current[:12]}" if current else ""
        return EncoderRanking([], False, f"no probe runs (`ctx probe`){where}: encoders not compared by probe scores")
    best = probes[0]
    if len(probes) == 1:
        return EncoderRanking(probes, False, f"{best.encoder} is the only encoder with a probe run: no encoder ranking")
    runner = probes[1]
    a, b = best.rank_score, runner.rank_score
    head = f"{best.encoder} vs {runner.encoder}: SVM mAP {format_score(a)} vs {format_score(b)}"
    if not (a.defined and b.defined):
        return EncoderRanking(probes, False, f"{head}: no interval, no ranking claimed")
    if a.overlaps(b):
        return EncoderRanking(probes, False, f"{head}: within noise (the intervals overlap), no ranking claimed")
    return EncoderRanking(probes, True, f"{head}: beyond noise (the intervals do not overlap)")
