"""MLflow tracking for stage runs: one run per stage execution, with lineage tags.

Every run is tagged with ``stage``, ``git_commit``, ``params_hash``,
``data_version`` (the DVC hash of the data it read or wrote) and, when Dagster
ran it, ``dagster_run_id``. The default store is a SQLite database plus an
artifact folder beside params.yaml; ``MLFLOW_TRACKING_URI`` overrides it.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ctx_core.config import Settings
from ctx_core.errors import UserError


def tracking_uri(settings: Settings) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if settings.params.tracking.uri:
        return settings.params.tracking.uri
    return f"sqlite:///{settings.path('mlruns.db')}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any work, when ``uri`` is an MLflow server that does not answer.

    MLflow's client retries a dead server for minutes; a stage should instead
    say at once which server it could not reach and how to proceed.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (an auth proxy may refuse /health): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it (mlflow server ...), "
            "point MLFLOW_TRACKING_URI / tracking.uri at a running one, or set tracking.enabled: false"
        ) from None


def git_commit(root: Path) -> str:
    """HEAD of the git repository holding ``root`` (``-dirty`` appended when the tree has changes)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


class StageRun:
    """Thin handle on the active MLflow run; every method is a no-op when tracking is off."""

    def __init__(self, run: Any | None):
        self.run = run
        self.run_id: str | None = run.info.run_id if run else None

    def log_params(self, params: dict[str, Any]) -> None:
        if self.run:
            import mlflow

            mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.run:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run:
            import mlflow

            mlflow.log_artifact(str(path), artifact_path=artifact_path)


@contextmanager
def stage_run(settings: Settings, stage: str, extra_tags: dict[str, str] | None = None) -> Iterator[StageRun]:
    """Open one MLflow run for ``stage``; yields a :class:`StageRun`."""
    cfg = settings.params.tracking
    if not cfg.enabled:
        yield StageRun(None)
        return
    import mlflow

    uri = tracking_uri(settings)
    check_reachable(uri)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; restore the
    # user's value afterwards so the next stage (in this process) resolves its
    # own store instead of inheriting ours.
    user_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        if mlflow.get_experiment_by_name(cfg.experiment) is None:
            local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
            location = settings.path(cfg.artifacts).resolve().as_uri() if local else None
            mlflow.create_experiment(cfg.experiment, artifact_location=location)
        mlflow.set_experiment(cfg.experiment)
        tags = {
            "stage": stage,
            "git_commit": git_commit(settings.root),
            "params_hash": settings.digest(),
            **(extra_tags or {}),
        }
        with mlflow.start_run(run_name=stage, tags=tags) as run:
            yield StageRun(run)
    finally:
        if user_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = user_env
