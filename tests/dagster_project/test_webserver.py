"""A real `dagster dev` on 127.0.0.1, driven through its GraphQL API as the UI does:
every asset is listed, a bad launchpad value is refused naming the field, and a
launched materialisation succeeds."""

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import BIN, ROOT, free_port, wait_http, write_params

pytestmark = pytest.mark.slow

ASSETS = {"synth", "ingest", "pretrain", "extract", "discover", "probe", "finetune/context", "finetune/scratch",
          "finetune/context_rescaled", "finetune/scratch_rescaled", "detection_table", "compare"}

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}"""


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster-home")
    params = write_params(home / "project", data={"synth": {"images": 8, "out": "data/synth", "reports": "reports/synth"}},
                          tracking={"enabled": True})
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CTX_PARAMS": str(params), "PATH": f"{BIN}:{os.environ['PATH']}"}
    log = open(home / "dagster.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-m", "dagster_project.definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/server_info", proc, "dagster dev", timeout=180)
        yield url, params.parent
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def gql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        data = json.loads(resp.read())
    assert "errors" not in data, data["errors"]
    return data["data"]


def _location(url: str) -> str:
    deadline = time.monotonic() + 120
    while True:  # the code server loads the location in the background
        data = gql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name "
                        "locationOrLoadError { __typename } } } } }")
        entries = data["workspaceOrError"]["locationEntries"]
        if entries and entries[0]["locationOrLoadError"] and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
            return entries[0]["name"]
        assert time.monotonic() < deadline, entries
        time.sleep(1)


def _params(location: str, config: dict) -> dict:
    return {"params": {
        "selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                     "pipelineName": "__ASSET_JOB", "assetSelection": [{"path": ["synth"]}]},
        "runConfigData": config, "mode": "default",
    }}


def test_graphql_lists_every_asset_and_the_sensors(webserver):
    url, _ = webserver
    _location(url)
    nodes = gql(url, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    assert {"/".join(n["assetKey"]["path"]) for n in nodes} == ASSETS
    groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
    assert groups["pretrain"] == "pretrain" and groups["compare"] == "detection" and groups["finetune/scratch"] == "detection"


def test_a_bad_launchpad_value_is_refused_naming_the_field(webserver):
    url, _ = webserver
    location = _location(url)
    result = gql(url, LAUNCH, _params(location, {"ops": {"synth": {"config": {"images": "many"}}}}))
    launch = result["launchPipelineExecution"]
    assert launch["__typename"] == "RunConfigValidationInvalid"
    assert any("images" in e["message"] for e in launch["errors"])


def test_a_launched_materialisation_succeeds(webserver):
    url, project = webserver
    location = _location(url)
    result = gql(url, LAUNCH, _params(location, {"ops": {"synth": {"config": {"images": 6}}}}))
    launch = result["launchPipelineExecution"]
    assert launch["__typename"] == "LaunchRunSuccess", launch
    run_id = launch["run"]["runId"]
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        status = gql(url, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                     {"id": run_id})["runOrError"]["status"]
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        time.sleep(1)
    assert status == "SUCCESS"
    assert len(list((project / "data/synth/JPEGImages").glob("*.jpg"))) == 6
    meta = gql(url, '{ assetOrError(assetKey: {path: ["synth"]}) { ... on Asset { assetMaterializations(limit: 1) '
                    "{ runId metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }")
    (mat,) = meta["assetOrError"]["assetMaterializations"]
    assert mat["runId"] == run_id
    assert {e["label"]: e.get("intValue") for e in mat["metadataEntries"]}["images"] == 6
