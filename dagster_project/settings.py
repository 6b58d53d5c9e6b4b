"""Which params file the Dagster door reads, and shared helpers for assets.

``CTX_PARAMS`` names the params file (default: ``params.yaml`` at the project
root), so the launchpad's defaults are the same values ``dvc repro`` uses.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from PIL import Image

from ctx_core.config import Settings, load_params

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Kubernetes: one GPU for the run pod when a training asset runs under the K8sRunLauncher.
GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


def params_file() -> Path:
    return Path(os.environ.get("CTX_PARAMS", PROJECT_ROOT / "params.yaml")).resolve()


def default_params() -> Settings:
    """Params as the file says, for run-config defaults shown in the launchpad."""
    return load_params(params_file())


def inline_png(path: Path, max_side: int = 768) -> str:
    """Markdown that shows the PNG at ``path`` inline in the Dagster UI."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return f"![{path.name}](data:image/png;base64,{data})"
