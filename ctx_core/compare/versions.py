"""The registered detector versions, read from the MLflow registry, each with its checks.

Each registered detector version points back to its fine-tuning run; the run
holds the test mAP, the validation mAP and per-class AP (metrics ``mAP``,
``val_mAP``, ``AP_<class>``), the version's tags hold the init, the seed, the
encoder it started from and the data version it was scored on. A version is
eligible when its run finished, its mAP is finite (``ctx_core.checks``), its
encoder (resolved in the encoder registry, by version or by the weights
file's digest) beats chance on the pretext task, and, with
``compare.same_data_only``, it was scored on the data version the store holds now.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from typing import Any

from ctx_core.checks import detector_problem, encoder_problem
from ctx_core.config import Settings
from ctx_core.errors import UserError
from ctx_core.registry import ENCODER_FILE, download, weights_digest


@dataclass(frozen=True)
class VersionRow:
    version: int
    init: str
    encoder: str                 # registry name/version when resolved, else the detector's tag (file:<digest>)
    data_version: str
    mean_ap: float               # test mAP
    ap: dict[str, float]
    metric: str
    run_id: str
    problem: str | None          # None: eligible for the alias
    seed: int | None = None      # None: an old version registered before detection ran over seeds
    val_map: float = float("nan")  # mAP on the validation split; NaN when it was not scored

    @property
    def eligible(self) -> bool:
        return self.problem is None

    def score(self, ranked_by: str) -> float:
        """The version's value of the ranking metric (``"val_mAP"`` or ``"mAP"``)."""
        return self.val_map if ranked_by == "val_mAP" else self.mean_ap


def as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _seed(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def is_scratch(init: str) -> bool:
    """Inits that start from a random trunk (``scratch``, ``scratch_rescaled``): no encoder to check."""
    return init.startswith("scratch")


class EncoderIndex:
    """Encoder versions by ``name/version`` and by the sha256 prefix of their
    weights file (what ``ctx finetune`` records for an encoder given as a path)."""

    def __init__(self, client, uri: str, name: str, limit: int):
        from mlflow.exceptions import MlflowException

        self.client, self.uri, self.name = client, uri, name
        try:
            self.versions = client.search_model_versions(f"name='{name}'", max_results=limit)
        except MlflowException:
            self.versions = []
        self._by_digest: dict[str, Any] | None = None

    def by_digest(self) -> dict[str, Any]:
        if self._by_digest is None:
            # versions registered by ctx pretrain carry the digest; older ones are downloaded and hashed
            self._by_digest = {v.tags["weights_sha256"]: v for v in self.versions if "weights_sha256" in v.tags}
            with tempfile.TemporaryDirectory() as tmp:
                for v in self.versions:
                    if "weights_sha256" in v.tags:
                        continue
                    try:
                        local = download(f"{v.source.rstrip('/')}/{ENCODER_FILE}", f"{tmp}/{v.version}", self.uri)
                    except Exception:  # noqa: BLE001 - a version whose weights are gone cannot match a digest
                        continue
                    self._by_digest.setdefault(weights_digest(local), v)
        return self._by_digest

    def resolve(self, tag: str):
        """The encoder model version behind an ``encoder_version`` tag, or None."""
        if tag.startswith("file:"):
            return self.by_digest().get(tag.removeprefix("file:"))
        name, _, number = tag.rpartition("/")
        if name == self.name and number.isdigit():
            return next((v for v in self.versions if str(v.version) == number), None)
        return None

    def label(self, tag: str) -> str:
        """``name/version`` when the tag resolves in the registry, else the tag itself."""
        enc = self.resolve(tag)
        return f"{enc.name}/{enc.version}" if enc is not None else tag

    def problem(self, version) -> str | None:
        accuracy = as_float(version.tags.get("held_out_accuracy"))
        chance = as_float(version.tags.get("chance_accuracy"))
        pairs = int(version.tags.get("eval_pairs", 0) or 0)
        if not pairs or not math.isfinite(chance):
            try:
                run = self.client.get_run(version.run_id).data
                pairs = pairs or int(float(run.metrics.get("eval_pairs", run.params.get("eval_pairs", 0))))
                chance = chance if math.isfinite(chance) else as_float(run.metrics.get("chance_accuracy"))
            except Exception:  # noqa: BLE001 - a deleted run: judge against the strictest margin
                pairs = pairs or 0
        problem = encoder_problem(accuracy, pairs, chance)
        return f"encoder {self.name}/{version.version}: {problem}" if problem else None


def read_versions(settings: Settings, client, uri: str, current: str | None) -> tuple[list[VersionRow], EncoderIndex]:
    """Every registered detector version (newest ``compare.max_versions``) with its checks,
    sorted by test mAP (NaN last), then newest first."""
    from mlflow.exceptions import MlflowException

    cmp, det = settings.params.compare, settings.params.detection
    try:
        client.get_registered_model(det.registered_model)
    except MlflowException:
        raise UserError(f"no detector is registered as {det.registered_model!r} in {uri}; "
                        "run `ctx finetune --init <init>` with tracking enabled first") from None
    versions = client.search_model_versions(f"name='{det.registered_model}'", max_results=cmp.max_versions,
                                            order_by=["version_number DESC"])
    encoders = EncoderIndex(client, uri, settings.params.pretrain.registered_model, cmp.max_versions)
    rows = []
    for v in versions:
        tags = v.tags
        try:
            run = client.get_run(v.run_id)
            metrics, status = run.data.metrics, run.info.status
        except MlflowException:
            metrics, status = {}, "DELETED"
        mean_ap = as_float(metrics.get("mAP", tags.get("mAP")))
        val_map = as_float(metrics.get("val_mAP", tags.get("val_mAP")))
        ap = {k.removeprefix("AP_"): float(x) for k, x in metrics.items() if k.startswith("AP_")}
        init, encoder = tags.get("init", "?"), tags.get("encoder_version", "none")
        problem = None if status == "FINISHED" else f"run {v.run_id} is {status}"
        problem = problem or detector_problem(mean_ap)
        if problem is None and cmp.same_data_only and current and tags.get("data_version") != current:
            problem = f"scored on data {tags.get('data_version', '?')[:12]}, the store now holds {current[:12]}"
        if not is_scratch(init) and encoder != "none":
            enc = encoders.resolve(encoder)
            if enc is None:
                problem = problem or f"encoder {encoder} is not in the registry {encoders.name!r}; its pretext accuracy is unknown"
            else:
                encoder = f"{enc.name}/{enc.version}"
                problem = problem or encoders.problem(enc)
        rows.append(VersionRow(
            version=int(v.version), init=init, encoder=encoder, data_version=tags.get("data_version", ""),
            mean_ap=mean_ap, ap=ap, metric=tags.get("metric", det.metric), run_id=v.run_id, problem=problem,
            seed=_seed(tags.get("seed")), val_map=val_map,
        ))
    rows.sort(key=lambda r: (-r.mean_ap if math.isfinite(r.mean_ap) else math.inf, -r.version))
    return rows, encoders
