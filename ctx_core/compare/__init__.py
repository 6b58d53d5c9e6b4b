"""``ctx compare``: the detector versions in the MLflow registry side by side,
grouped by (init, encoder, data version) over seeds, and the ``champion``
alias moved to the best group's best version that passed its checks.

- ``versions``: every registered version with its scores and checks (run
  finished, finite mAP, encoder above chance, same data version).
- ``groups``: one group per init x encoder x data version; mean over seeds with
  a 95 % t-interval; ranked by validation mAP when every compared version has
  one, else by test mAP; the champion group's lead over the runner-up is the
  paired difference over common seeds, beyond noise only when its interval
  lies above 0.
- ``probes``: encoders ranked by their probe runs' SVM mAP (informational).
- ``report``: comparison.md / .csv / _groups.csv / .png.

The best group's best eligible version gets ``compare.alias``; its encoder
gets ``compare.encoder_alias``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ctx_core.compare.groups import Group, Ranking, group_versions, rank_groups
from ctx_core.compare.probes import EncoderProbe, EncoderRanking, rank_encoders, read_probes
from ctx_core.compare.report import comparison_chart, comparison_csv, comparison_markdown, groups_csv
from ctx_core.compare.versions import VersionRow, is_scratch, read_versions
from ctx_core.config import Settings
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.stats import Interval
from ctx_core.tracking import check_reachable, stage_run, tracking_uri

__all__ = ["CompareResult", "EncoderProbe", "Group", "VersionRow", "run_compare"]


@dataclass(frozen=True)
class CompareResult:
    model: str
    alias: str
    rows: list[VersionRow]       # best test mAP first
    classes: list[str]
    champion: VersionRow | None
    previous_champion: int | None
    encoder_champion: str | None  # "name/version" that got compare.encoder_alias
    current_data_version: str | None
    markdown: Path
    csv: Path
    chart: Path
    groups_csv: Path | None = None
    groups: list[Group] = field(default_factory=list)  # eligible best first, then the rest
    ranked_by: str = "mAP"                             # "val_mAP" or "mAP"
    lead: Interval | None = None                       # champion group - runner-up over common seeds
    lead_beyond_noise: bool = False
    lead_sentence: str = ""
    encoders: list[EncoderProbe] = field(default_factory=list)  # best probe SVM mAP first
    encoder_lead_beyond_noise: bool = False
    encoder_sentence: str = ""
    alias_moved: bool = False
    mlflow_run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def champion_group(self) -> Group | None:
        return self.groups[0] if self.groups and self.groups[0].eligible else None


def _lead_metrics(lead: Interval | None) -> dict[str, float]:
    if lead is None:
        return {}
    values = {"lead_mean": lead.mean, "lead_low": lead.low, "lead_high": lead.high}
    return {"lead_n": lead.n, **{k: v for k, v in values.items() if math.isfinite(v)}}


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
    rows, encoders = read_versions(settings, client, uri, current)
    classes = sorted({c for r in rows for c in r.ap})
    ranking: Ranking = rank_groups(group_versions(rows))
    probes: EncoderRanking = rank_encoders(
        read_probes(client, settings.params.tracking.experiment, current, encoders, cmp.max_versions), current)
    champion = ranking.champion
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
    md, table_csv, group_csv = reports / "comparison.md", reports / "comparison.csv", reports / "comparison_groups.csv"
    md.write_text(comparison_markdown(rows, classes, ranking, probes, det.registered_model))
    table_csv.write_text(comparison_csv(rows, classes, ranking))
    group_csv.write_text(groups_csv(ranking))
    chart = comparison_chart(ranking, reports / "comparison.png",
                             f"{det.registered_model}: groups (init × encoder × data) over seeds")

    encoder_champion, moved = None, False
    tags = {"data_version": current or "", **(extra_tags or {})}
    with stage_run(settings, "compare", tags) as run:
        run.log_params({**cmp.model_dump(mode="json"), "registered_model": det.registered_model})
        run.log_metrics({"versions": len(rows), "eligible_versions": sum(r.eligible for r in rows),
                         "groups": len(ranking.groups), "eligible_groups": sum(g.eligible for g in ranking.groups),
                         **({"champion_mAP": champion.mean_ap} if champion else {}),
                         **({"champion_val_mAP": champion.val_map} if champion and math.isfinite(champion.val_map) else {}),
                         **_lead_metrics(ranking.lead)})
        run.set_tags({"ranked_by": ranking.ranked_by, "lead_beyond_noise": ranking.lead_beyond_noise,
                      "lead": ranking.sentence[:5000], "encoder_lead_beyond_noise": probes.lead_beyond_noise,
                      **({"encoder_best_probe": probes.best.encoder} if probes.best else {})})
        if champion is not None and move_alias:
            client.set_registered_model_alias(det.registered_model, cmp.alias, str(champion.version))
            moved = champion.version != previous
            if cmp.encoder_alias and not is_scratch(champion.init) and "/" in champion.encoder:
                name, number = champion.encoder.rsplit("/", 1)
                if name == encoders.name:
                    client.set_registered_model_alias(name, cmp.encoder_alias, number)
                    encoder_champion = champion.encoder
            run.set_tags({"champion_version": champion.version, "champion_run_id": champion.run_id,
                          "previous_champion": previous or "none"})
        for path in (md, table_csv, group_csv, chart):
            run.log_artifact(path, "compare")
    return CompareResult(
        model=det.registered_model, alias=cmp.alias, rows=rows, classes=classes, champion=champion,
        previous_champion=previous, encoder_champion=encoder_champion, current_data_version=current, markdown=md,
        csv=table_csv, chart=chart, groups_csv=group_csv, groups=ranking.groups, ranked_by=ranking.ranked_by,
        lead=ranking.lead, lead_beyond_noise=ranking.lead_beyond_noise, lead_sentence=ranking.sentence,
        encoders=probes.probes, encoder_lead_beyond_noise=probes.lead_beyond_noise, encoder_sentence=probes.sentence,
        alias_moved=moved, mlflow_run_id=run.run_id, notes=notes,
    )
