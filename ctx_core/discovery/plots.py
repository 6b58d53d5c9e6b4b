"""Pictures of discovery: the top clusters' members, and purity-coverage curves."""

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
    """Purity over coverage, one line per feature set, area in the legend; ``note`` when there is no line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    for name, c in curves.items():
        if c.empty:
            continue
        area = metrics[name].get("purity_coverage_area", 0.0)
        ax.step([0.0, *c["coverage"]], [c["purity"].iloc[0], *c["purity"]], where="pre", label=f"{name} (area {area:.3f})")
    ax.axvline(coverage_at, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("coverage (share of non-difficult objects touched)")
    ax.set_ylabel("purity (share of members on the majority class)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, note, ha="center", wrap=True, transform=ax.transAxes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
