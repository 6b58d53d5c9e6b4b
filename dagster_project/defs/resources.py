"""Resources shared by the assets: MLflow, object storage, compute device and the DVC lock.

Every field is optional: empty means "as params.yaml says", so the launchpad's
defaults and ``dvc repro`` agree. Secrets never go in these fields: MLflow
server credentials come from MLFLOW_TRACKING_USERNAME / _PASSWORD, S3
credentials from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, an
instance role, ...), which boto3 reads itself.
"""

import enum
import os
from typing import Optional

import dagster as dg

from ctx_core.config import Settings
from ctx_core.dvc_sync import LOCK_WAIT_S, DvcRecord, commit_stage
from ctx_core.errors import UserError
from ctx_core.tracking import check_reachable

Device = enum.Enum("Device", {v: v for v in ("auto", "cpu", "cuda")})


class MlflowTracking(dg.ConfigurableResource):
    """Where stage runs are logged. Empty fields fall back to params.yaml's
    ``tracking`` section; the URI can come from the environment with
    ``dg.EnvVar("MLFLOW_TRACKING_URI")``. A server that does not answer fails
    the step when the resource starts, before any training."""

    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            try:
                check_reachable(uri)
            except UserError as exc:
                raise dg.Failure(description=str(exc)) from None

    def overrides(self) -> list[str]:
        out = []
        if self.tracking_uri:
            out.append(f"tracking.uri={self.tracking_uri}")
        if self.experiment:
            out.append(f"tracking.experiment={self.experiment}")
        return out

    def run_url(self, run_id: Optional[str], uri: str) -> Optional[str]:
        """A link to the run in the MLflow UI when the store is a server."""
        if not run_id or not uri.startswith(("http://", "https://")):
            return None
        return f"{uri.rstrip('/')}/#/runs/{run_id}"


class ObjectStorage(dg.ConfigurableResource):
    """S3-compatible storage for ``s3://`` ingest sources (MinIO, Ceph, AWS).
    ``s3_endpoint_url`` empty: params.yaml's ``storage.s3_endpoint_url``, then
    AWS_ENDPOINT_URL, then AWS itself. Credentials: the AWS chain only."""

    s3_endpoint_url: Optional[str] = None

    def overrides(self) -> list[str]:
        return [f"storage.s3_endpoint_url={self.s3_endpoint_url}"] if self.s3_endpoint_url else []


class ComputeDevice(dg.ConfigurableResource):
    """Where training and feature extraction run: ``auto`` (CUDA when present),
    ``cpu`` or ``cuda``; empty: each section's ``device`` in params.yaml."""

    device: Optional[Device] = None

    def overrides(self) -> list[str]:
        if self.device is None:
            return []
        return [f"{section}.device={self.device.value}" for section in ("pretrain", "features", "detection")]


class DvcLock(dg.ConfigurableResource):
    """Records each materialisation in ``dvc.lock`` (``dvc commit`` of the
    asset's stage) when the run used params.yaml's settings, so ``dvc status``
    agrees with Dagster. While ``dvc repro`` or another DVC command holds the
    repository, the commit waits up to ``lock_wait_s``; if it still cannot
    commit, the step fails (its outputs are written, dvc.lock does not say so),
    never a success with a stale dvc.lock. Off: leave dvc.lock alone."""

    enabled: bool = True
    lock_wait_s: float = LOCK_WAIT_S

    def record(self, settings: Settings, stage: str) -> DvcRecord:
        if not self.enabled:
            return DvcRecord(stage, False, "DvcLock resource disabled", None)
        try:
            return commit_stage(settings, stage, lock_wait=self.lock_wait_s)
        except UserError as exc:
            raise dg.Failure(description=str(exc), metadata={"dvc_stage": stage}) from None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={
        "mlflow": MlflowTracking(),
        "storage": ObjectStorage(),
        "compute": ComputeDevice(),
        "dvc": DvcLock(),
    })
