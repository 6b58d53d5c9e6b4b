"""The code location: everything under ``defs/`` (``dagster dev -m dagster_project.definitions``).

``CTX_DAGSTER_EXECUTOR=k8s`` (set by infra/helm/values.yaml) runs each step as
its own Kubernetes Job (``dagster_k8s.k8s_job_executor``), so the training
assets' ``dagster-k8s/config`` tags (a GPU, a GPU node) apply to their pods;
otherwise Dagster's default executor runs steps as local processes.
"""

import os
from pathlib import Path

import dagster as dg


def _executor():
    if os.environ.get("CTX_DAGSTER_EXECUTOR", "").lower() == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return None


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent.parent)
    executor = _executor()
    return dg.Definitions.merge(loaded, dg.Definitions(executor=executor)) if executor else loaded
