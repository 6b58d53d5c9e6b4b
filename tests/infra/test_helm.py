"""infra/helm/values.yaml: the Dagster chart's K8sRunLauncher, this code as the
user deployment, and GPU steps whose Kubernetes Jobs match the training assets'
`dagster-k8s/config` tags.

`helm` is not installed here (Debian has no package for it), so the chart is not
rendered: the values are checked against the chart's value keys and rendered
the way its run-launcher template does, and dagster-k8s itself builds the
Kubernetes Jobs that the run launcher and the k8s_job_executor would submit.
"""

import importlib
import json

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config,
)

from dagster_project import settings
from tests.conftest import ROOT
from tests.infra.conftest import SECRET_NAME, secret_like_values

VALUES = ROOT / "infra" / "helm" / "values.yaml"
K8S_TAG = "dagster-k8s/config"
# Top-level keys of the Dagster chart's values (helm/dagster/schema: DagsterHelmValues, 1.13).
CHART_KEYS = {
    "global", "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
    "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
    "telemetry", "serviceAccount", "retention", "additionalInstanceConfig", "concurrency", "nameOverride",
    "fullnameOverride", "rbacEnabled",
}
RUN_K8S_KEYS = {  # chart camelCase -> instance snake_case (templates/helpers/instance/_run-launcher.tpl)
    "containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def deployment(values) -> dict:
    (dep,) = values["dagster-user-deployments"]["deployments"]
    return dep


@pytest.fixture(scope="module")
def training_tags() -> dict[str, dict]:
    """asset key -> parsed dagster-k8s/config op tag, for every asset of the code location that has one."""
    defs = dg.load_from_defs_folder(path_within_project=ROOT)
    out, pools = {}, {}
    for asset in defs.assets or []:
        if isinstance(asset, dg.AssetsDefinition):
            for key in asset.keys:
                pools[key.to_user_string()] = asset.op.pool
                if K8S_TAG in asset.op.tags:
                    out[key.to_user_string()] = json.loads(asset.op.tags[K8S_TAG])
    # every asset in the `gpu` pool asks Kubernetes for a GPU, and only those
    assert set(out) == {k for k, pool in pools.items() if pool == "gpu"}
    assert {"pretrain"} <= set(out) and any(k.startswith("finetune/") for k in out)
    return out


def test_values_use_only_chart_keys_and_the_k8s_run_launcher(values):
    assert set(values) <= CHART_KEYS, set(values) - CHART_KEYS
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert set(launcher["config"]) == {"k8sRunLauncher"}
    assert set(launcher["config"]["k8sRunLauncher"]["runK8sConfig"]) <= set(RUN_K8S_KEYS)
    assert values["dagsterDaemon"]["enabled"] and values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    # the chart refuses maxConcurrentRuns in both places; it lives in `concurrency`
    assert "maxConcurrentRuns" not in values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert not values["rabbitmq"]["enabled"] and not values["redis"]["enabled"]


def test_user_deployment_serves_this_code_location(values, deployment):
    assert values["dagster-user-deployments"]["enabled"]
    image = deployment["image"]
    assert image["repository"] and str(image["tag"]) not in ("", "latest")
    assert deployment["codeServerArgs"] == ["-m", "dagster_project.definitions"]
    assert hasattr(importlib.import_module("dagster_project.definitions"), "defs")
    assert isinstance(deployment["port"], int)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]  # runs and steps get env, secrets and volumes
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["CTX_PARAMS"] == "/opt/ctx/params.yaml"  # where infra/docker puts the project
    assert env["MLFLOW_TRACKING_URI"].startswith("http")
    mounts = {m["mountPath"] for m in deployment["volumeMounts"]}
    assert {"/opt/ctx/data", "/opt/ctx/models", "/opt/ctx/reports"} <= mounts


def test_no_secret_in_the_values(values, deployment):
    assert secret_like_values(values) == []
    pg = values["postgresql"]
    assert not pg["enabled"] and pg["postgresqlPassword"] == "" and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert {s["name"] for s in deployment["envSecrets"]} == {"ctx-s3-credentials", "ctx-mlflow-credentials"}
    assert not any(SECRET_NAME.search(e["name"]) for e in deployment["env"])


def test_concurrency_matches_the_compose_instance(values):
    compose_instance = yaml.safe_load((ROOT / "infra" / "dagster.yaml").read_text())["concurrency"]
    chart = values["concurrency"]
    assert chart["enabled"]
    assert chart["pools"]["defaultLimit"] == compose_instance["pools"]["default_limit"]
    assert chart["runs"]["maxConcurrentRuns"] == compose_instance["runs"]["max_concurrent_runs"]


def launcher_config(values) -> dict:
    """The run_launcher config the chart writes into dagster.yaml, validated by dagster-k8s's schema."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": "ctx",
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": "ctx-dagster",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": "ctx-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "run_k8s_config": {RUN_K8S_KEYS[k]: v for k, v in k8s["runK8sConfig"].items()},
    }
    result = validate_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    return config


def step_job(values, deployment, step_tags: dict) -> dict:
    """The Kubernetes Job the k8s_job_executor submits for a step with ``step_tags``, as a dict.

    Mirrors dagster_k8s.executor: the run launcher's run_k8s_config and the code
    location's container context (includeConfigInLaunchedRuns), then the step's
    op tags deep-merged on top; dagster-k8s checks every field against the
    Kubernetes models on the way.
    """
    config = launcher_config(values)
    base = K8sContainerContext(
        env_secrets=[s["name"] for s in deployment["envSecrets"]],
        env=deployment["env"],
        volumes=deployment["volumes"],
        volume_mounts=deployment["volumeMounts"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["run_k8s_config"]),
    )
    tags = {K8S_TAG: json.dumps(step_tags)} if step_tags else {}
    merged = base.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    image = f'{deployment["image"]["repository"]}:{deployment["image"]["tag"]}'
    job_config = DagsterK8sJobConfig(
        job_image=image, dagster_home=config["dagster_home"], image_pull_policy=config["image_pull_policy"],
        instance_config_map=config["instance_config_map"], postgres_password_secret=config["postgres_password_secret"],
        env_secrets=[s["name"] for s in deployment["envSecrets"]],
    )
    job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], "dagster-step-test",
                                    user_defined_k8s_config=merged.run_k8s_config)
    return job.to_dict()


def test_training_steps_get_a_gpu_on_a_gpu_node(values, deployment, training_tags):
    assert training_tags["pretrain"] == settings.GPU_TAGS[K8S_TAG]
    for key, tags in training_tags.items():
        pod = step_job(values, deployment, tags)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits["nvidia.com/gpu"] == "1", key
        assert limits["memory"] == "16Gi" and requests["cpu"] == "2", key  # runK8sConfig kept under the tags
        # only the GPU label: a CPU-pool selector from runK8sConfig would be merged in and exclude GPU nodes
        assert pod["node_selector"] == settings.GPU_NODE_SELECTOR, key
        assert [{k: v for k, v in t.items() if v is not None} for t in pod["tolerations"]] == settings.GPU_TOLERATIONS
        assert {m["mount_path"] for m in container["volume_mounts"]} >= {"/opt/ctx/data", "/opt/ctx/models"}
        assert container["image"] == f'{deployment["image"]["repository"]}:{deployment["image"]["tag"]}'


def test_other_steps_and_runs_stay_off_gpu_nodes(values, deployment):
    pod = step_job(values, deployment, {})["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "nvidia.com/gpu" not in (container["resources"]["limits"] or {})
    assert not pod.get("tolerations")  # GPU nodes are tainted: no toleration, no GPU node
    assert not pod.get("node_selector")


def test_gpu_tags_taint_and_label_are_the_documented_ones():
    """The label NVIDIA's GPU feature discovery sets and the taint GPU node pools carry, named in the values' header."""
    header = VALUES.read_text()
    (selector_key,) = settings.GPU_NODE_SELECTOR
    (toleration,) = settings.GPU_TOLERATIONS
    assert "GPU_TAGS" in header and "k8s_job_executor" in header
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert selector_key in deploy and toleration["key"] in deploy
