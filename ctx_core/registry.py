"""The MLflow model registry, without pickle.

A registered version's source is a run's artifact folder holding a plain
weights file (``encoder.pt``); loading downloads it and reads it with
``torch.load(weights_only=True)``. References accepted wherever an encoder
is asked for:

- a path to an ``encoder.pt`` file;
- ``models:/<name>@<alias>`` (e.g. ``models:/ctx-encoder@champion``);
- ``models:/<name>/<version>``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ctx_core.errors import UserError
from ctx_core.encoder.artifact import EncoderContract, load_encoder
from ctx_core.models.towers import Tower

ENCODER_FILE = "encoder.pt"


class RegistryError(UserError):
    """A registry reference that does not resolve."""


def weights_digest(path: Path) -> str:
    """The short sha256 of a weights file: how a detector names an encoder given as a path
    (``file:<digest>``) and the ``weights_sha256`` tag of a registered encoder version."""
    from ctx_core.fsutil import file_digest

    return file_digest(path, "sha256")[:12]


def register_version(client, name: str, run_id: str, artifact_dir: str, tags: dict[str, Any], description: str = ""):
    """Register ``runs:/<run_id>/<artifact_dir>`` as a new version of ``name``; returns the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Context-prediction encoders (ctx pretrain)")
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_dir}"
    return client.create_model_version(
        name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, description=description
    )


def download(artifact_uri: str, dst: str, tracking_uri: str) -> Path:
    """Download one artifact without MLflow's progress bar (noise in logs and CLI output)."""
    import os

    import mlflow

    key, old = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ[key] = "false"
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst, tracking_uri=tracking_uri))
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _model_version(client, ref: str):
    from mlflow.exceptions import MlflowException

    body = ref.removeprefix("models:/")
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, version = body.partition("/")
        if not version.isdigit():
            raise RegistryError(f"encoder {ref!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        return client.get_model_version(name, version)
    except MlflowException as exc:
        known = ", ".join(sorted(m.name for m in client.search_registered_models())) or "none"
        raise RegistryError(f"encoder {ref!r} is not in the registry ({exc.error_code}); registered models: {known}") from None


def load_encoder_ref(ref: str, tracking_uri: str) -> tuple[Tower, EncoderContract, dict[str, Any]]:
    """Load an encoder from a path or a ``models:/`` reference: (tower, contract, meta).
    A registry reference adds ``registry_name`` and ``registry_version`` to ``meta``."""
    if not ref.startswith("models:/"):
        return load_encoder(Path(ref))
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    version = _model_version(client, ref)
    with tempfile.TemporaryDirectory() as tmp:
        local = download(f"{version.source.rstrip('/')}/{ENCODER_FILE}", tmp, tracking_uri)
        tower, contract, meta = load_encoder(local)
    return tower, contract, {**meta, "registry_version": str(version.version), "registry_name": version.name}
