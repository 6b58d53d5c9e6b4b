"""What every asset does around its ``ctx_core`` call, in one place.

Settings = params file (``CTX_PARAMS``, default params.yaml) + the launchpad's
values + the resources' overrides; a user error (bad value, missing file)
becomes a ``dg.Failure`` with the one-line message; a missing upstream output
names the asset to materialise first; the run is recorded in ``dvc.lock`` and
linked to its MLflow run.
"""

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg

from ctx_core.config import Settings, load_params
from ctx_core.errors import UserError
from ctx_core.tracking import tracking_uri
from dagster_project.defs.resources import DvcLock, MlflowTracking
from dagster_project.settings import params_file


@contextmanager
def running(context: dg.AssetExecutionContext, settings: Settings, stage: str) -> Iterator[None]:
    """Run one stage exclusively: a second materialisation of the same asset
    (another run, another process) waits for the first to finish instead of
    writing the same outputs at the same time. User errors become failures."""
    import fcntl

    locks = settings.root / ".ctx-locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{stage}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            context.log.info(f"another run is writing the outputs of stage {stage!r}; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with user_errors():
                yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def user_errors() -> Iterator[None]:
    """A ``UserError`` from ctx_core ends the step as a Dagster failure with its message."""
    try:
        yield
    except UserError as exc:
        raise dg.Failure(description=str(exc)) from None


def launchpad(config: dg.Config, keys: dict[str, str]) -> list[str]:
    """``section.key=value`` for each launchpad field the user changed from its
    default, plus the free-form ``overrides``. Untouched fields add nothing, so
    the params file (``CTX_PARAMS``) decides, as it does for ``dvc repro``."""
    import enum

    out = []
    for name, key in keys.items():
        value = getattr(config, name)
        if value == type(config).model_fields[name].default:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        out.append(f"{key}={'null' if value is None else value}")
    return [*out, *config.overrides]


def stage_settings(overrides: list[str], *resources) -> Settings:
    """The params file with the launchpad's ``overrides`` and each resource's, validated."""
    extra = [o for r in resources for o in r.overrides()]
    with user_errors():
        return load_params(params_file(), [*overrides, *extra])


def require_upstream(path: Path, upstream: str, what: str) -> None:
    """Fail with the upstream asset's name when its output is not on disk."""
    if not path.exists():
        raise dg.Failure(
            description=f"{what} {path} does not exist: materialise `{upstream}` first "
                        f"(select it with its downstream assets, or run `dvc repro`)",
            metadata={"missing_upstream": upstream, "expected_path": dg.MetadataValue.path(str(path))},
        )


def finish(
    context: dg.AssetExecutionContext,
    settings: Settings,
    stage: str,
    run_id: Optional[str],
    mlflow: MlflowTracking,
    dvc: DvcLock,
    metadata: dict,
    data_version: Optional[str] = None,
) -> dg.MaterializeResult:
    """Add the MLflow link and the dvc.lock record to ``metadata``; the asset's result."""
    metadata["mlflow_run_id"] = run_id or "tracking off"
    url = mlflow.run_url(run_id, tracking_uri(settings))
    if url:
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    record = dvc.record(settings, stage, context.log)
    metadata["dvc_stage"] = stage
    metadata["dvc_lock"] = record.reason
    if record.fingerprint:
        metadata["dvc_lock_fingerprint"] = record.fingerprint
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(data_version) if data_version else None
    )


def choices(name: str, model, field: str) -> type:
    """An Enum of a ``Literal`` field's values in ``ctx_core.config``, for a launchpad dropdown
    (Dagster config does not take ``Literal``; an unknown value is refused naming the field)."""
    import enum
    from typing import get_args

    return enum.Enum(name, {v: v for v in get_args(model.model_fields[field].annotation)})
