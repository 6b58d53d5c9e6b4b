"""The comparison written out: ``comparison.md`` (decision, group table, version
table, encoder table), ``comparison.csv`` (versions), ``comparison_groups.csv``
(groups) and ``comparison.png`` (group means with 95 % intervals)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ctx_core.compare.groups import Group, Ranking, superseded
from ctx_core.compare.probes import SCORES, EncoderRanking, format_score
from ctx_core.compare.versions import VersionRow
from ctx_core.stats import Interval


def _pct(x: float) -> str:
    return f"{100 * x:.1f}" if math.isfinite(x) else "n/a"


def _pm(x: Interval) -> str:
    """``25.1 ± 5.1`` in % (the t-interval is symmetric); ``25.1`` when n < 2."""
    if not math.isfinite(x.mean):
        return "n/a"
    return f"{100 * x.mean:.1f} ± {100 * (x.high - x.mean):.1f}" if x.defined else _pct(x.mean)


def _seed_name(r: VersionRow) -> str:
    return str(r.seed) if r.seed is not None else f"v{r.version}"


def _per_seed(g: Group, ranked_by: str) -> str:
    if ranked_by == "val_mAP":
        return ", ".join(f"{_seed_name(r)}: {_pct(r.val_map)} / {_pct(r.mean_ap)}" for r in g.runs)
    return ", ".join(f"{_seed_name(r)}: {_pct(r.mean_ap)}" for r in g.runs)


def decision_lines(ranking: Ranking, model: str) -> list[str]:
    """The champion and the lead, in words (the head of ``comparison.md``)."""
    champ, group = ranking.champion, ranking.champion_group
    metric = "validation mAP (`val_mAP`)" if ranking.ranked_by == "val_mAP" else \
        "test mAP (`mAP`; not every compared version was scored on a validation split)"
    if champ is None or group is None:
        return [f"**No champion**: {ranking.sentence}.", ""]
    seed = f"seed {champ.seed}" if champ.seed is not None else "no seed tag"
    lines = [
        f"Groups ranked by mean {metric} over seeds; test mAP is reported. "
        f"**Champion**: `{model}` version {champ.version} ({group.label(ranking.with_data)}, {seed}), "
        f"the best version of the best group.",
        "",
        f"**Lead over the runner-up**: {ranking.sentence}.",
    ]
    if ranking.ranked_by == "val_mAP" and ranking.test_lead is not None and ranking.test_lead.n:
        lines.append(f"On test: {ranking.test_lead.format(scale=100, signed=True, unit='mAP')} (reported, not used to choose).")
    return lines + [""]


def groups_markdown(ranking: Ranking) -> list[str]:
    val_head = "val mAP (ranks)" if ranking.ranked_by == "val_mAP" else "val mAP"
    test_head = "test mAP (ranks)" if ranking.ranked_by == "mAP" else "test mAP"
    per_seed = "per seed: val / test" if ranking.ranked_by == "val_mAP" else "per seed: test"
    champion = ranking.champion_group
    lines = [
        "## Groups: init × encoder × data version, mean ± 95 % t-interval over seeds (AP %); ★ = champion",
        "",
        f"| init | encoder | data | n seeds | {val_head} | {test_head} | {per_seed} | checks |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for g in ranking.groups:
        star = " ★" if g is champion else ""
        name = g.init if g.seeded else f"{g.init} (v{g.versions[0]}, no seed)"
        lines.append("| " + " | ".join([
            f"{name}{star}", g.encoder, g.data_version[:12], str(g.n), _pm(g.interval("val_mAP")),
            _pm(g.interval("mAP")), _per_seed(g, ranking.ranked_by), g.problem or "passed",
        ]) + " |")
    return lines + [""]


def _checks(r: VersionRow, replaced: dict[int, int]) -> str:
    if r.version in replaced:
        return f"passed; seed rerun as v{replaced[r.version]}, which counts"
    return r.problem or "passed"


def versions_markdown(rows: list[VersionRow], classes: list[str], champion: int | None, model: str,
                      replaced: dict[int, int]) -> list[str]:
    metric = rows[0].metric if rows else "voc07"
    head = ["version", "init", "encoder", "data", "seed", "val mAP", "mAP", *classes, "checks"]
    lines = [
        f"## Detector versions in the MLflow registry `{model}` (AP %, metric {metric}); ★ = champion",
        "",
        "| " + " | ".join(head) + " |",
        "| ---: | --- | --- | --- | ---: |" + " ---: |" * (2 + len(classes)) + " --- |",
    ]
    for r in rows:
        star = " ★" if r.version == champion else ""
        cells = [f"{r.version}{star}", r.init, r.encoder, r.data_version[:12],
                 str(r.seed) if r.seed is not None else "–", _pct(r.val_map), _pct(r.mean_ap),
                 *(_pct(r.ap.get(c, float("nan"))) for c in classes), _checks(r, replaced)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def encoders_markdown(encoders: EncoderRanking) -> list[str]:
    lines = ["## Encoders by frozen-feature probe score (%, bootstrap 95 % interval over test images)", "",
             f"{encoders.sentence}. Informational: the encoder alias follows the detector champion.", ""]
    if not encoders.probes:
        return lines
    lines += ["| encoder | task | data | " + " | ".join(h for _, h in SCORES) + " | probe run |",
              "| --- | --- | --- |" + " ---: |" * len(SCORES) + " --- |"]
    for i, p in enumerate(encoders.probes):
        star = " ▲" if i == 0 and encoders.lead_beyond_noise else ""
        lines.append("| " + " | ".join([f"{p.encoder}{star}", p.task, p.data_version[:12],
                                         *(format_score(p.scores[m]) for m, _ in SCORES), p.run_id]) + " |")
    return lines + [""]


def comparison_markdown(rows: list[VersionRow], classes: list[str], ranking: Ranking, encoders: EncoderRanking,
                        model: str) -> str:
    champ = ranking.champion.version if ranking.champion else None
    replaced = superseded(ranking.groups, rows)
    lines = [f"# Detector comparison: `{model}`", "", *decision_lines(ranking, model), *groups_markdown(ranking),
             *versions_markdown(rows, classes, champ, model, replaced), *encoders_markdown(encoders)]
    return "\n".join(lines)


def comparison_csv(rows: list[VersionRow], classes: list[str], ranking: Ranking) -> str:
    champion = ranking.champion.version if ranking.champion else None
    replaced = superseded(ranking.groups, rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["version", "init", "encoder_version", "data_version", "seed", "val_mAP", "mAP",
                *(f"AP_{c}" for c in classes), "eligible", "problem", "superseded_by", "champion", "run_id"])
    for r in rows:
        w.writerow([r.version, r.init, r.encoder, r.data_version, "" if r.seed is None else r.seed,
                    f"{r.val_map:.4f}", f"{r.mean_ap:.4f}", *(f"{r.ap.get(c, float('nan')):.4f}" for c in classes),
                    r.eligible, r.problem or "", replaced.get(r.version, ""), r.version == champion, r.run_id])
    return buf.getvalue()


def groups_csv(ranking: Ranking) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "init", "encoder_version", "data_version", "n_seeds", "seeds", "ranked_by",
                "val_mAP_mean", "val_mAP_low", "val_mAP_high", "mAP_mean", "mAP_low", "mAP_high",
                "per_seed_val_mAP", "per_seed_mAP", "versions_used", "eligible", "problem", "champion"])
    for i, g in enumerate(ranking.groups, 1):
        val, test = g.interval("val_mAP"), g.interval("mAP")
        w.writerow([i if g.eligible else "", g.init, g.encoder, g.data_version, g.n,
                    ";".join(_seed_name(r) for r in g.runs), ranking.ranked_by,
                    *(f"{x:.4f}" for x in (val.mean, val.low, val.high, test.mean, test.low, test.high)),
                    ";".join(f"{_seed_name(r)}:{r.val_map:.4f}" for r in g.runs),
                    ";".join(f"{_seed_name(r)}:{r.mean_ap:.4f}" for r in g.runs),
                    ";".join(str(r.version) for r in g.runs), g.eligible, g.problem or "",
                    g is ranking.champion_group])
    return buf.getvalue()


def comparison_chart(ranking: Ranking, path: Path, title: str) -> Path:
    """Group means of the ranking metric with 95 % t-interval error bars, one colour per
    init; groups that failed their checks hatched, the champion group outlined; the test
    mean as a dot when the ranking metric is val_mAP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(reversed(ranking.groups[:40]))  # best on top
    inits = sorted({g.init for g in groups})
    colours = {init: plt.cm.tab10(i % 10) for i, init in enumerate(inits)}
    champion = ranking.champion_group
    fig, ax = plt.subplots(figsize=(7.0, 0.36 * len(groups) + 1.4), dpi=100)
    for y, g in enumerate(groups):
        x = g.interval(ranking.ranked_by)
        value = 100 * x.mean if math.isfinite(x.mean) else 0.0
        ax.barh(y, value, color=colours[g.init], hatch=None if g.eligible else "//", alpha=1.0 if g.eligible else 0.45,
                edgecolor="black" if g is champion else "none", linewidth=2 if g is champion else 0)
        if x.defined:
            ax.errorbar(value, y, xerr=[[value - 100 * x.low], [100 * x.high - value]], fmt="none",
                        ecolor="black", elinewidth=1, capsize=3)
        if ranking.ranked_by == "val_mAP" and math.isfinite(g.interval("mAP").mean):
            ax.plot(100 * g.interval("mAP").mean, y, "o", color="white", markeredgecolor="black", markersize=4)
        right = 100 * x.high if x.defined else value
        ax.text(right + 0.5, y, f"{value:.1f}" + (" ★" if g is champion else ""), va="center", fontsize=8)
    ax.set_yticks(range(len(groups)), [f"{g.label(ranking.with_data)}  n={g.n}" for g in groups], fontsize=8)
    metric = "val mAP (%)" if ranking.ranked_by == "val_mAP" else "test mAP (%)"
    ax.set_xlabel(f"{metric}, mean over seeds with 95 % interval" + ("; ○ test mean" if ranking.ranked_by == "val_mAP" else ""))
    ax.set_title(title, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in inits]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="grey", hatch="//"))
    ax.legend(handles, [*inits, "failed a check"], fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
