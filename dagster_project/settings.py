"""Which params file the Dagster door reads, and shared helpers for assets.

``CTX_PARAMS`` names the params file (default: ``params.yaml`` at the project
root); a run reads it when it starts, so whatever the launchpad leaves empty has
the value ``dvc repro`` uses.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from PIL import Image


PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Kubernetes (infra/helm/values.yaml): a training asset's step pod asks for one GPU and goes to
# a GPU node. Dagster applies op tags to a step's own pod, i.e. under the k8s_job_executor;
# the node label is the one NVIDIA's GPU feature discovery sets, the taint the usual one of
# GPU node pools. tests/infra/test_helm.py checks these against the Helm values.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
GPU_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"node_selector": GPU_NODE_SELECTOR, "tolerations": GPU_TOLERATIONS},
    }
}


def params_file() -> Path:
    return Path(os.environ.get("CTX_PARAMS", PROJECT_ROOT / "params.yaml")).resolve()


def inline_png(path: Path, max_side: int = 768) -> str:
    """Markdown that shows the PNG at ``path`` inline in the Dagster UI."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return f"![{path.name}](data:image/png;base64,{data})"
