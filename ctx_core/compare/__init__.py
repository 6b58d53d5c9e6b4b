"""``ctx compare``: the detector versions in the MLflow registry side by side,
and the ``champion`` alias moved to the best one that passed its checks.

Each registered detector version points back to its fine-tuning run; the run
holds the mAP and per-class AP (metrics ``mAP`` and ``AP_<class>``), the
version's tags hold the init, the encoder it started from and the data
version it was scored on. A version is eligible when its run finished, its
mAP is finite (``ctx_core.checks``), its encoder (resolved in the encoder
registry, by version or by the weights file's digest) beats chance on the
pretext task, and, with ``compare.same_data_only``, it was scored on the data
version the store holds now. The best eligible version gets ``compare.alias``;
its encoder gets ``compare.encoder_alias``.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctx_core.checks import detector_problem, encoder_problem
from ctx_core.config import Settings
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.registry import ENCODER_FILE, download, weights_digest
from ctx_core.tracking import check_reachable, stage_run, tracking_uri


@dataclass(frozen=True)
class VersionRow:
    version: int
    init: str
    encoder: str                 # registry name/version when resolved, else the detector's tag (file:<digest>)
    data_version: str
    mean_ap: float
    ap: dict[str, float]
    metric: str
    run_id: str
    problem: str | None          # None: eligible for the alias

    @property
    def eligible(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class CompareResult:
    model: str
    alias: str
    rows: list[VersionRow]       # best mAP first
    classes: list[str]
    champion: VersionRow | None
    previous_champion: int | None
    encoder_champion: str | None  # "name/version" that got compare.encoder_alias
    current_data_version: str | None
    markdown: Path
    csv: Path
    chart: Path
    alias_moved: bool = False
    mlflow_run_id: str | None = None
    notes: list[str] = field(default_factory=list)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class _EncoderIndex:
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
        """The encoder model version behind a detector's ``encoder_version`` tag, or None."""
        if tag.startswith("file:"):
            return self.by_digest().get(tag.removeprefix("file:"))
        name, _, number = tag.rpartition("/")
        if name == self.name and number.isdigit():
            return next((v for v in self.versions if str(v.version) == number), None)
        return None

    def problem(self, version) -> str | None:
        accuracy = _float(version.tags.get("held_out_accuracy"))
        chance = _float(version.tags.get("chance_accuracy"))
        pairs = int(version.tags.get("eval_pairs", 0) or 0)
        if not pairs or not math.isfinite(chance):
            try:
                run = self.client.get_run(version.run_id).data
                pairs = pairs or int(float(run.metrics.get("eval_pairs", run.params.get("eval_pairs", 0))))
                chance = chance if math.isfinite(chance) else _float(run.metrics.get("chance_accuracy"))
            except Exception:  # noqa: BLE001 - a deleted run: judge against the strictest margin
                pairs = pairs or 0
        problem = encoder_problem(accuracy, pairs, chance)
        return f"encoder {self.name}/{version.version}: {problem}" if problem else None


def _rows(settings: Settings, client, uri: str, current: str | None) -> tuple[list[VersionRow], _EncoderIndex]:
    from mlflow.exceptions import MlflowException

    cmp, det = settings.params.compare, settings.params.detection
    try:
        client.get_registered_model(det.registered_model)
    except MlflowException:
        raise UserError(f"no detector is registered as {det.registered_model!r} in {uri}; "
                        "run `ctx finetune --init <init>` with tracking enabled first") from None
    versions = client.search_model_versions(f"name='{det.registered_model}'", max_results=cmp.max_versions,
                                            order_by=["version_number DESC"])
    encoders = _EncoderIndex(client, uri, settings.params.pretrain.registered_model, cmp.max_versions)
    rows = []
    for v in versions:
        tags = v.tags
        try:
            run = client.get_run(v.run_id)
            metrics, status = run.data.metrics, run.info.status
        except MlflowException:
            metrics, status = {}, "DELETED"
        mean_ap = _float(metrics.get("mAP", tags.get("mAP")))
        ap = {k.removeprefix("AP_"): float(x) for k, x in metrics.items() if k.startswith("AP_")}
        init, encoder = tags.get("init", "?"), tags.get("encoder_version", "none")
        problem = None if status == "FINISHED" else f"run {v.run_id} is {status}"
        problem = problem or detector_problem(mean_ap)
        if problem is None and cmp.same_data_only and current and tags.get("data_version") != current:
            problem = f"scored on data {tags.get('data_version', '?')[:12]}, the store now holds {current[:12]}"
        if init != "scratch" and encoder != "none":
            enc = encoders.resolve(encoder)
            if enc is None:
                problem = problem or f"encoder {encoder} is not in the registry {encoders.name!r}; its pretext accuracy is unknown"
            else:
                encoder = f"{enc.name}/{enc.version}"
                problem = problem or encoders.problem(enc)
        rows.append(VersionRow(
            version=int(v.version), init=init, encoder=encoder, data_version=tags.get("data_version", ""),
            mean_ap=mean_ap, ap=ap, metric=tags.get("metric", det.metric), run_id=v.run_id, problem=problem,
        ))
    rows.sort(key=lambda r: (-r.mean_ap if math.isfinite(r.mean_ap) else math.inf, -r.version))
    return rows, encoders


def _pct(x: float) -> str:
    return f"{100 * x:.1f}" if math.isfinite(x) else "n/a"


def comparison_markdown(result_rows: list[VersionRow], classes: list[str], champion: int | None, model: str) -> str:
    metric = result_rows[0].metric if result_rows else "voc07"
    head = ["version", "init", "encoder", "data", "mAP", *classes, "checks"]
    lines = [
        f"Detector versions in the MLflow registry `{model}` (AP %, metric {metric}); ★ = champion",
        "",
        "| " + " | ".join(head) + " |",
        "| ---: | --- | --- | --- |" + " ---: |" * (1 + len(classes)) + " --- |",
    ]
    for r in result_rows:
        star = " ★" if r.version == champion else ""
        cells = [f"{r.version}{star}", r.init, r.encoder, r.data_version[:12], _pct(r.mean_ap),
                 *(_pct(r.ap.get(c, float("nan"))) for c in classes), r.problem or "passed"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_csv(result_rows: list[VersionRow], classes: list[str], champion: int | None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["version", "init", "encoder_version", "data_version", "mAP", *(f"AP_{c}" for c in classes),
                "eligible", "problem", "champion", "run_id"])
    for r in result_rows:
        w.writerow([r.version, r.init, r.encoder, r.data_version, f"{r.mean_ap:.4f}",
                    *(f"{r.ap.get(c, float('nan')):.4f}" for c in classes), r.eligible, r.problem or "",
                    r.version == champion, r.run_id])
    return buf.getvalue()


def comparison_chart(result_rows: list[VersionRow], champion: int | None, path: Path, title: str) -> Path:
    """mAP per version, one colour per init; ineligible versions hatched, the champion outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(reversed(result_rows[:40]))  # best on top
    inits = sorted({r.init for r in rows})
    colours = {init: plt.cm.tab10(i % 10) for i, init in enumerate(inits)}
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(rows) + 1.2), dpi=100)
    for y, r in enumerate(rows):
        value = 100 * r.mean_ap if math.isfinite(r.mean_ap) else 0.0
        ax.barh(y, value, color=colours[r.init], hatch=None if r.eligible else "//", alpha=1.0 if r.eligible else 0.45,
                edgecolor="black" if r.version == champion else "none", linewidth=2 if r.version == champion else 0)
        ax.text(value + 0.3, y, f"{value:.1f}" + (" ★" if r.version == champion else ""), va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"v{r.version} {r.init}" for r in rows], fontsize=8)
    ax.set_xlabel("mAP (%)")
    ax.set_title(title, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in inits]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="grey", hatch="//"))
    ax.legend(handles, [*inits, "failed a check"], fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_compare(settings: Settings, extra_tags: dict[str, str] | None = None, move_alias: bool = True) -> CompareResult:
    """Compare the registered detector versions; move the aliases (unless ``move_alias`` is False)."""
    if not settings.params.tracking.enabled:
        raise UserError("compare reads the MLflow model registry: set tracking.enabled: true")
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(settings)
    check_reachable(uri)
    cmp, det = settings.params.compare, settings.params.detection
    store = settings.path(det.input)
    current = dvc_dir_hash(store) if store.is_dir() else None
    client = mlflow.MlflowClient(uri)
    rows, encoders = _rows(settings, client, uri, current)
    classes = sorted({c for r in rows for c in r.ap})
    champion = next((r for r in rows if r.eligible), None)
    try:
        previous = int(client.get_model_version_by_alias(det.registered_model, cmp.alias).version)
    except MlflowException:
        previous = None
    notes = []
    if champion is None:
        notes.append(f"no version of {det.registered_model!r} passed its checks; alias {cmp.alias!r} left "
                     + (f"at version {previous}" if previous else "unset"))

    reports = settings.path(cmp.reports)
    reports.mkdir(parents=True, exist_ok=True)
    champ_v = champion.version if champion else None
    md, table_csv = reports / "comparison.md", reports / "comparison.csv"
    md.write_text(comparison_markdown(rows, classes, champ_v, det.registered_model))
    table_csv.write_text(comparison_csv(rows, classes, champ_v))
    chart = comparison_chart(rows, champ_v, reports / "comparison.png",
                             f"{det.registered_model}: mAP per registered version")

    encoder_champion, moved = None, False
    tags = {"data_version": current or "", **(extra_tags or {})}
    with stage_run(settings, "compare", tags) as run:
        run.log_params({**cmp.model_dump(mode="json"), "registered_model": det.registered_model})
        run.log_metrics({"versions": len(rows), "eligible_versions": sum(r.eligible for r in rows),
                         **({"champion_mAP": champion.mean_ap} if champion else {})})
        if champion is not None and move_alias:
            client.set_registered_model_alias(det.registered_model, cmp.alias, str(champion.version))
            moved = champion.version != previous
            if cmp.encoder_alias and champion.init != "scratch" and "/" in champion.encoder:
                name, number = champion.encoder.rsplit("/", 1)
                if name == encoders.name:
                    client.set_registered_model_alias(name, cmp.encoder_alias, number)
                    encoder_champion = champion.encoder
            run.set_tags({"champion_version": champion.version, "champion_run_id": champion.run_id,
                          "previous_champion": previous or "none"})
        for path in (md, table_csv, chart):
            run.log_artifact(path, "compare")
    return CompareResult(
        model=det.registered_model, alias=cmp.alias, rows=rows, classes=classes, champion=champion, previous_champion=previous,
        encoder_champion=encoder_champion, current_data_version=current, markdown=md, csv=table_csv, chart=chart,
        alias_moved=moved, mlflow_run_id=run.run_id, notes=notes,
    )
