"""The Dagster code location loads, asset selection strings parse, and the
synthetic dataset asset materialises in process."""

import subprocess

import dagster as dg
import mlflow
import yaml

from ctx_core.fsutil import dvc_dir_hash
from dagster_project.defs.resources import MlflowTracking
from dagster_project.defs.synth import synth
from tests.conftest import dagster_resources, BIN, ROOT, write_params


def load_defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=ROOT)


def test_definitions_load_with_the_dataset_asset():
    defs = load_defs()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"synth", "ingest"} <= keys


def _foreach_items(settings, key: str) -> list[str]:
    node = settings.params
    for part in key.split("."):
        node = getattr(node, part)
    return list(node)


def test_every_stage_has_its_assets_and_every_asset_is_a_stage():
    from ctx_core.config import load_params
    from ctx_core.stages import STAGES, stage
    from dagster_project.stage import asset_for_stage

    graph = load_defs().resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    params = load_params(ROOT / "params.yaml")
    for s in STAGES:
        mine = {k for k in keys if k.path[0] == s.name}
        items = _foreach_items(params, s.foreach) if s.foreach else [None]
        assert mine == {dg.AssetKey(s.asset_path(item)) for item in items}, s.name
        assert {graph.get(k).group_name for k in mine} == {s.group}
        assert all(graph.get(k).description.startswith(s.description) for k in mine)
    for key in keys:  # named by the table, and found again from its DVC stage
        s = stage(key.path[0])
        assert asset_for_stage(s.dvc_stage(key.path[1] if s.foreach else None)) == key


def test_asset_selection_strings_parse():
    # antlr4 4.9 (pulled by hydra-core 1.3 via dvc) breaks this with
    # "TypeError: ord() expected string of length 1"; the lock pins 4.13.
    graph = load_defs().resolve_asset_graph()
    selected = dg.AssetSelection.from_string('key:"synth" or group:data').resolve(graph)
    assert {k.to_user_string() for k in selected} == {"synth", "ingest"}


def test_dg_check_defs_passes():
    proc = subprocess.run([str(BIN / "dg"), "check", "defs"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


def test_synth_materialises_and_logs_to_mlflow(tmp_path, monkeypatch):
    params = write_params(tmp_path, data={"synth": {"out": "data/synth", "reports": "reports/synth"}},
                          tracking={"enabled": True})
    monkeypatch.setenv("CTX_PARAMS", str(params))
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    result = dg.materialize(
        [synth],
        run_config={"ops": {"synth": {"config": {"images": 10, "seed": 3, "size": 192}}}},
        resources=dagster_resources(mlflow=MlflowTracking(tracking_uri=uri)),
    )
    assert result.success
    mat = result.asset_materializations_for_node("synth")[0]
    meta = mat.metadata
    out = tmp_path / "data" / "synth"
    assert meta["images"].value == 10 and meta["data_version"].value == dvc_dir_hash(out)
    assert "data:image/png;base64," in meta["montage"].value
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 10
    run = mlflow.MlflowClient(uri).get_run(meta["mlflow_run_id"].value)
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.tags["data_version"] == meta["data_version"].value


def test_launchpad_fields_are_empty_and_name_their_params_key():
    fields = synth.op.config_schema.config_type.fields
    for name in ("images", "seed", "size"):
        assert fields[name].default_value is None
        assert f"`data.synth.{name}`" in fields[name].description


def test_kubernetes_executor_is_chosen_by_the_environment(monkeypatch):
    from dagster_project.definitions import _executor

    assert _executor() is None
    monkeypatch.setenv("CTX_DAGSTER_EXECUTOR", "k8s")
    assert _executor().name == "k8s"
    values = yaml.safe_load((ROOT / "infra/helm/values.yaml").read_text())
    env = values["dagster-user-deployments"]["deployments"][0]["env"]
    assert {"name": "CTX_DAGSTER_EXECUTOR", "value": "k8s"} in env


def test_two_materialisations_of_one_asset_at_once_leave_one_whole_output(tmp_path, monkeypatch):
    import threading

    from ctx_core.config import load_params
    from ctx_core.synth.run import run_synth

    params = write_params(tmp_path, data={"synth": {"out": "data/synth", "reports": "reports/synth"}})
    monkeypatch.setenv("CTX_PARAMS", str(params))
    results, seen = [], []
    real = run_synth

    def watched(*args, **kwargs):  # records overlapping stage bodies, if the lock ever let two in
        seen.append("start")
        try:
            return real(*args, **kwargs)
        finally:
            seen.append("end")

    monkeypatch.setattr("dagster_project.defs.synth.run_synth", watched)

    def go():
        results.append(dg.materialize(
            [synth], run_config={"ops": {"synth": {"config": {"images": 12}}}},
            resources=dagster_resources(), instance=dg.DagsterInstance.ephemeral(),
        ))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.success for r in results] == [True, True]
    assert seen == ["start", "end", "start", "end"]  # one after the other, never interleaved
    out = tmp_path / "data" / "synth"
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 12
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".synth.")]  # no partial or old copies left
    versions = {r.asset_materializations_for_node("synth")[0].metadata["data_version"].value for r in results}
    assert versions == {dvc_dir_hash(out)}
    assert load_params(params).params.data.synth.out == "data/synth"
