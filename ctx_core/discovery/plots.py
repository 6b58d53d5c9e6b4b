"""Pictures of discovery: the top clusters' members, purity-coverage curves, the thresholds tried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ctx_core.montage import Tile, patch_rows
from ctx_core.store.layout import image_path


def clusters_montage(clusters: pd.DataFrame, store: Path, n_clusters: int, n_members: int, path: Path) -> Path:
    """One row per top cluster: its query constellation (red frame), then its
    best-matching verified members, each captioned with its correlation."""
    rows = []
    for (rank, cid), group in clusters[clusters["rank"] <= n_clusters].groupby(["rank", "cluster_id"], sort=True):
        group = group.sort_values(["role", "similarity"], ascending=[False, False]).head(n_members + 1)
        tiles = [Tile(image_path(store, r.image_id), (r.x0, r.y0, r.x1, r.y1),
                      r.image_id if r.role == "query" else f"{r.similarity:.2f}",
                      (220, 30, 30) if r.role == "query" else None) for r in group.itertuples()]
        members = int((clusters["cluster_id"] == cid).sum()) - 1
        rows.append((f"rank {rank}\nscore {group['score'].iloc[0]:.2f}\n{members} verified", tiles))
    if not rows:
        rows = [("no cluster had enough\nverified matches", [])]
    return patch_rows(rows, path)


def curves_plot(
    curves: dict[str, pd.DataFrame], metrics: dict[str, Any], coverage_at: float, path: Path, note: str = "no clusters"
) -> Path:
    """Purity over coverage on the test images, one line per feature set, area in the legend; ``note`` when there is no line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for name, c in curves.items():
        if c.empty:
            continue
        area = metrics[name].get("purity_coverage_area_test", 0.0)
        ax.step([0.0, *c["coverage"]], [c["purity"].iloc[0], *c["purity"]], where="pre", label=f"{name} (area {area:.3f})")
    ax.axvline(coverage_at, color="grey", lw=0.8, ls=":")
    ax.set_title("test images", fontsize=9)
    ax.set_xlabel("coverage (share of non-difficult objects touched)")
    ax.set_ylabel("purity (share of members on the majority class)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, note, ha="center", wrap=True, transform=ax.transAxes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def tuning_plot(table: pd.DataFrame, varied: list[str], coverage_at: float, path: Path, note: str) -> Path:
    """Val purity at ``coverage_at`` and val area of every setting tried, one line per
    feature set, the chosen setting ringed; ``note`` when nothing was tuned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100, sharex=True)
    for name, group in table.groupby("features", sort=False):
        group = group.reset_index(drop=True)
        for ax, column in zip(axes, ("val_purity_at_coverage", "val_area")):
            line = ax.plot(group.index, group[column], marker="o", ms=3, label=name)[0]
            chosen = group[group["chosen"]]
            ax.plot(chosen.index, chosen[column], "o", ms=9, mfc="none", color=line.get_color())
    labels = table.drop_duplicates(varied)[varied] if varied else table.iloc[:0]
    titles = (f"val purity at {coverage_at:.0%} coverage (gap: not reached)", "val area under purity-coverage")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xticks(range(len(labels)), ["\n".join(f"{v:g}" for v in row) for row in labels.itertuples(index=False)],
                      fontsize=7)
    if varied and not table.empty:
        for ax in axes:
            ax.set_xlabel(" / ".join(varied), fontsize=8)
        axes[0].legend(fontsize=7, loc="lower right")
        fig.suptitle("settings tried on the val images (ringed: chosen)", fontsize=9)
    else:
        axes[0].text(0.5, 0.5, note, ha="center", wrap=True, transform=axes[0].transAxes, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
