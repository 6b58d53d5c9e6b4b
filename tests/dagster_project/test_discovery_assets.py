"""``extract`` and ``discover`` materialise in process on a tiny store."""

import dagster as dg
import mlflow

from dagster_project.defs.discovery import discover, extract
from dagster_project.defs.resources import MlflowTracking
from tests.conftest import dagster_resources
from tests.features.conftest import encoder_file, feature_settings, store  # noqa: F401  (session fixtures)


def test_extract_and_discover_materialise_with_montages_and_numbers(tmp_path, store, encoder_file, monkeypatch):
    settings = feature_settings(tmp_path, store, encoder_file, {"max_images": 12}, discovery={"min_members": 1},
                                tracking={"enabled": True})
    monkeypatch.setenv("CTX_PARAMS", str(settings.source))
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    result = dg.materialize(
        [extract, discover],
        run_config={"ops": {"extract": {"config": {"encoder": str(encoder_file), "max_images": 12}}}},
        resources=dagster_resources(mlflow=MlflowTracking(tracking_uri=uri)),
    )
    assert result.success
    feats = result.asset_materializations_for_node("extract")[0].metadata
    assert feats["images"].value == 12 and feats["patches"].value > 0
    assert "data:image/png;base64," in feats["neighbours"].value
    clusters = result.asset_materializations_for_node("discover")[0].metadata
    assert "learned_clusters" in clusters and "learned_purity_coverage_area_test" in clusters
    assert "data:image/png;base64," in clusters["clusters_montage"].value
    assert "data:image/png;base64," in clusters["tuning_on_val"].value and "tuning" in clusters
    run = mlflow.MlflowClient(uri).get_run(clusters["mlflow_run_id"].value)
    assert run.data.tags["stage"] == "discover" and run.data.tags["dagster_run_id"] == result.run_id
    assert "learned_purity_coverage_area_test" in run.data.metrics and "learned_chosen_max_residual" in run.data.metrics


def test_launchpad_fields_are_empty_and_name_their_params_key():
    fields = extract.op.config_schema.config_type.fields
    assert fields["encoder"].default_value is None and "`features.encoder`" in fields["encoder"].description
    fields = discover.op.config_schema.config_type.fields
    assert fields["constellations"].default_value is None
    assert "`discovery.constellations`" in fields["constellations"].description
