"""Detector versions grouped by (init, encoder, data version): means over seeds,
the ranking of groups, and whether the best group's lead is beyond noise.

One group is one init fine-tuned from one encoder on one data version, over
the seeds it was trained with (one registry version per seed). Its statistics
use its eligible versions only, one per seed (the newest when a seed was run
twice). A version registered before detection ran over seeds has no ``seed``
tag; it is a group of its own (n = 1) that pairs with nothing.

The choice is made on validation and test is reported: groups whose every
seed was scored on the validation split are ranked by their mean ``val_mAP``
over seeds, and groups without it are listed but not ranked; only when no
group has it do groups rank by the test ``mAP`` (``ranked_by`` says which). The lead of the best group over the runner-up is the paired
difference of the ranking metric over their common seeds with its 95 %
t-interval (``ctx_core.stats``); it is *beyond noise* only when that interval
lies above 0, which needs at least two common seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ctx_core.compare.versions import VersionRow
from ctx_core.stats import Interval, paired_difference, t_interval



def _seed_key(row: VersionRow) -> int | str:
    """The key that pairs a version with other groups' versions: its seed, or a key
    of its own (``v<version>``) when it has none, so it pairs with nothing."""
    return row.seed if row.seed is not None else f"v{row.version}"


@dataclass(frozen=True)
class Group:
    init: str
    encoder: str
    data_version: str
    runs: tuple[VersionRow, ...]     # the versions the statistics use: one per seed, by seed
    versions: tuple[int, ...]        # every version of the group, newest first (ineligible and superseded too)
    problem: str | None              # None: at least one version passed its checks
    seeded: bool = True              # False: one old version without a seed tag

    @property
    def eligible(self) -> bool:
        return self.problem is None

    @property
    def n(self) -> int:
        return len(self.runs)

    def label(self, with_data: bool = False) -> str:
        """``context (ctx-encoder/3)``; ``scratch``; ``context v5`` for a version without a seed."""
        name = self.init if self.encoder == "none" else f"{self.init} ({self.encoder})"
        if not self.seeded:
            name += f" v{self.versions[0]}"
        return f"{name} @{self.data_version[:8]}" if with_data else name

    def values(self, metric: str) -> dict[int | str, float]:
        """Seed key -> the ranking metric (``"val_mAP"`` or ``"mAP"``) of that seed's version."""
        return {_seed_key(r): r.score(metric) for r in self.runs}

    def interval(self, metric: str) -> Interval:
        """Mean over seeds with its 95 % t-interval (no interval when n < 2)."""
        return t_interval(list(self.values(metric).values()))

    def best_run(self, metric: str) -> VersionRow | None:
        """The run with the best ``metric`` (the newest on a tie)."""
        finite = [r for r in self.runs if math.isfinite(r.score(metric))]
        return max(finite, key=lambda r: (r.score(metric), r.version), default=None)


def group_versions(rows: list[VersionRow]) -> list[Group]:
    """Versions grouped by (init, encoder, data version); seedless versions alone.
    A group's runs are its eligible versions, newest per seed; a group without an
    eligible version keeps all of its versions (newest per seed) for display."""
    members: dict[tuple, list[VersionRow]] = {}
    for r in rows:
        key = (r.init, r.encoder, r.data_version, None if r.seed is not None else r.version)
        members.setdefault(key, []).append(r)
    groups = []
    for (init, encoder, data, seedless), versions in members.items():
        versions.sort(key=lambda r: -r.version)
        eligible = [r for r in versions if r.eligible]
        per_seed: dict[int | str, VersionRow] = {}
        for r in eligible or versions:
            per_seed.setdefault(_seed_key(r), r)  # newest first: the first seen is kept
        runs = tuple(sorted(per_seed.values(), key=lambda r: r.seed or 0))
        groups.append(Group(init=init, encoder=encoder, data_version=data, runs=runs,
                            versions=tuple(r.version for r in versions),
                            problem=None if eligible else versions[0].problem, seeded=seedless is None))
    return groups


def superseded(groups: list[Group], rows: list[VersionRow]) -> dict[int, int]:
    """Eligible version -> the newer version of its group and seed whose value counts instead."""
    by_version = {r.version: r for r in rows}
    out = {}
    for g in groups:
        used = {_seed_key(r): r.version for r in g.runs}
        for v in g.versions:
            r = by_version[v]
            if r.eligible and used.get(_seed_key(r), v) != v:
                out[v] = used[_seed_key(r)]
    return out


@dataclass(frozen=True)
class Ranking:
    groups: list[Group]              # eligible groups best first, then the others by test mAP
    ranked_by: str                   # "val_mAP" or "mAP"
    champion: VersionRow | None      # the best eligible version of the best group
    lead: Interval | None            # best group - runner-up, paired over common seeds; None without a runner-up
    lead_beyond_noise: bool
    sentence: str                    # the lead, in words
    test_lead: Interval | None = None  # the same difference in test mAP (reported; the choice used ranked_by)

    @property
    def champion_group(self) -> Group | None:
        return self.groups[0] if self.groups and self.groups[0].eligible else None

    @property
    def runner_up(self) -> Group | None:
        eligible = [g for g in self.groups if g.eligible]
        return eligible[1] if len(eligible) > 1 else None

    @property
    def with_data(self) -> bool:
        """Whether labels need the data version (eligible groups span several)."""
        return len({g.data_version for g in self.groups if g.eligible}) > 1


def _mean_or(interval: Interval, default: float) -> float:
    return interval.mean if math.isfinite(interval.mean) else default


NO_VAL = "not every seed was scored on the validation split (val_mAP): not ranked on val, where the choice is made"


def rank_groups(groups: list[Group]) -> Ranking:
    """Rank the groups, pick the champion version and judge its group's lead.

    When any eligible group has ``val_mAP`` for every seed, the choice is made on
    validation: those groups are ranked by it, and groups without it (versions
    registered before ``detection.val_split``, trained on what is now the
    validation split) are listed but not ranked. Only when no group has it do
    the groups rank by test ``mAP``."""
    def on_val(g: Group) -> bool:
        return bool(g.runs) and all(math.isfinite(r.val_map) for r in g.runs)

    scored_on_val = any(g.eligible and on_val(g) for g in groups)
    if scored_on_val:
        groups = [g if not g.eligible or on_val(g) else replace(g, problem=NO_VAL) for g in groups]
    eligible = [g for g in groups if g.eligible]
    ranked_by = "val_mAP" if scored_on_val else "mAP"
    eligible.sort(key=lambda g: (-_mean_or(g.interval(ranked_by), -math.inf), -g.n, -g.versions[0]))
    others = sorted((g for g in groups if not g.eligible),
                    key=lambda g: (-_mean_or(g.interval("mAP"), -math.inf), -g.versions[0]))
    ordered = eligible + others
    if not eligible:
        return Ranking(ordered, ranked_by, None, None, False, "no version passed its checks: no champion")
    best = eligible[0]
    champion = best.best_run(ranked_by)
    with_data = len({g.data_version for g in eligible}) > 1
    if len(eligible) < 2:
        return Ranking(ordered, ranked_by, champion, None, False,
                       f"{best.label(with_data)} is the only group that passed its checks: no comparison")
    runner = eligible[1]
    lead = paired_difference(best.values(ranked_by), runner.values(ranked_by))
    test_lead = paired_difference(best.values("mAP"), runner.values("mAP"))
    beyond = lead.defined and lead.low > 0
    return Ranking(ordered, ranked_by, champion, lead, beyond,
                   lead_sentence(best.label(with_data), runner.label(with_data), lead, ranked_by), test_lead)


def lead_sentence(best: str, runner: str, lead: Interval, ranked_by: str) -> str:
    """``context (ctx-encoder/3) − scratch = +8.0 [+3.1, +12.9] mAP, n=3: beyond noise``."""
    if lead.n == 0:
        return f"{best} − {runner}: no seed in common, no ranking claimed"
    unit = "val mAP" if ranked_by == "val_mAP" else "mAP"
    head = f"{best} − {runner} = {lead.format(scale=100, signed=True, unit=unit)}"
    if not lead.defined:
        return f"{head}: fewer than 2 common seeds, no ranking claimed"
    if lead.low > 0:
        return f"{head}: beyond noise"
    if lead.high < 0:
        return f"{head}: reversed on the common seeds, no ranking claimed"
    return f"{head}: within noise, no ranking claimed"
