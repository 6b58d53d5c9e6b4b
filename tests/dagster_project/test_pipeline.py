"""`make pipeline`'s plan: stale DVC stages become a Dagster selection of their assets and everything downstream."""

import dagster as dg

from dagster_project.pipeline import selection
from tests.dagster_project.test_definitions import load_defs


def test_stale_stages_select_their_assets_and_downstream():
    assert selection(["pretrain"]) == "pretrain*"
    assert selection(["finetune@scratch", "compare", "unknown"]) == "compare*,finetune/scratch*"
    graph = load_defs().resolve_asset_graph()
    picked = dg.AssetSelection.from_coercible(selection(["pretrain"]).split(",")).resolve(graph)
    names = {k.to_user_string() for k in picked}
    assert names == {"pretrain", "extract", "discover", "probe", "finetune/context", "finetune/scratch",
                     "finetune/context_rescaled", "finetune/scratch_rescaled", "detection_table", "compare"}
