"""Resources shared by the assets."""


import dagster as dg


class MlflowTracking(dg.ConfigurableResource):
    """Where stage runs are logged. Empty fields fall back to params.yaml's
    ``tracking`` section; the URI can come from the environment with
    ``dg.EnvVar("MLFLOW_TRACKING_URI")`` (credentials for a server stay in the
    environment too: MLFLOW_TRACKING_USERNAME / _PASSWORD)."""

    tracking_uri: str | None = None
    experiment: str | None = None

    def overrides(self) -> list[str]:
        out = []
        if self.tracking_uri:
            out.append(f"tracking.uri={self.tracking_uri}")
        if self.experiment:
            out.append(f"tracking.experiment={self.experiment}")
        return out

    def run_url(self, run_id: str | None, uri: str) -> str | None:
        """A link to the run in the MLflow UI when the store is a server."""
        if not run_id or not uri.startswith(("http://", "https://")):
            return None
        return f"{uri.rstrip('/')}/#/runs/{run_id}"


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"mlflow": MlflowTracking()})
