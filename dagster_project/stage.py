"""What every asset does around its ``ctx_core`` call, in one place.

Names: an asset's key, group and description come from the stage table
(``ctx_core.stages``), so a stage is called the same in ``ctx``, ``dvc.yaml``
and the asset graph. Settings = params file (``CTX_PARAMS``, default
params.yaml) + the launchpad fields that are set + the resources' overrides; a
user error (bad value, missing file) becomes a ``dg.Failure`` with the
one-line message; a missing upstream output names the asset to materialise
first; the run is recorded in ``dvc.lock`` and linked to its MLflow run.
"""

import enum
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, get_args

import dagster as dg
import yaml
from pydantic import Field

from ctx_core.config import Settings, load_params
from ctx_core.errors import UserError
from ctx_core.stage_lock import stage_lock, wait_from_env
from ctx_core.stages import stage
from ctx_core.tracking import tracking_uri
from dagster_project.defs.resources import DvcLock, MlflowTracking
from dagster_project.settings import params_file

# Where a launchpad field keeps the params key it sets (pydantic's json_schema_extra,
# which Dagster also uses for its own field flags).
PARAMS_KEY = "ctx__params_key"
# A materialisation waits this long for another writer of its stage (a run launched from the UI
# while `make pipeline` trains, say) before it fails; `ctx` refuses at once.
STAGE_LOCK_WAIT_S = 3600.0


def asset_key(name: str, item: Optional[str] = None) -> dg.AssetKey:
    """The asset of stage ``name`` (of its foreach ``item``), as the stage table names it."""
    return dg.AssetKey(stage(name).asset_path(item))


def asset_for_stage(dvc_stage: str) -> Optional[dg.AssetKey]:
    """The asset of a ``dvc.yaml`` stage (``pretrain``, ``finetune@context``); None for a
    name outside the stage table, or a foreach stage named without its item."""
    name, _, item = dvc_stage.partition("@")
    try:
        found = stage(name)
    except KeyError:
        return None
    if (found.foreach is None) != (item == ""):
        return None
    return dg.AssetKey(found.asset_path(item or None))


def stage_asset(name: str, item: Optional[str] = None) -> dict[str, Any]:
    """``key``, ``group_name`` and ``description`` of a stage's asset, from the stage table
    (for ``@dg.asset(**stage_asset(...), ...)``)."""
    found = stage(name)
    return {
        "key": asset_key(name, item),
        "group_name": found.group,
        "description": f"{found.description} (`ctx {found.name}`, DVC stage `{found.dvc_stage(item)}`).",
    }


def param(key: str, description: str) -> Any:
    """A launchpad field that sets the params key ``key``; empty (None) leaves the params file's value."""
    return Field(default=None, description=f"{description}. Sets `{key}`; empty: as the params file (CTX_PARAMS) says.",
                 json_schema_extra={PARAMS_KEY: key})


class LaunchpadConfig(dg.Config):
    """Base of the assets' run config: :func:`param` fields, and free-form overrides."""

    overrides: list[str] = Field(default=[], description="extra section.key=value settings")


def _yaml_scalar(value: Any) -> str:
    """``value`` as the YAML scalar ``--set`` reads back to it (a path such as ``2024`` stays a string)."""
    return yaml.safe_dump(value, width=math.inf).removesuffix("...\n").strip()


def launchpad(config: LaunchpadConfig) -> list[str]:
    """``key=value`` for every :func:`param` field that is set, then the free-form ``overrides``.
    A field set to the value the params file already has is passed too (the user chose it);
    an empty field adds nothing, so the params file decides, as it does for ``dvc repro``."""
    out = []
    for name, field in type(config).model_fields.items():
        key = (field.json_schema_extra or {}).get(PARAMS_KEY)
        value = getattr(config, name)
        if key is None or value is None:
            continue
        out.append(f"{key}={_yaml_scalar(value.value if isinstance(value, enum.Enum) else value)}")
    return [*out, *config.overrides]


def choices(name: str, model, field: str) -> type:
    """An Enum of a ``Literal`` field's values in ``ctx_core.config``, for a launchpad dropdown
    (Dagster config does not take ``Literal``; an unknown value is refused naming the field)."""
    return enum.Enum(name, {v: v for v in get_args(model.model_fields[field].annotation)})


@contextmanager
def running(context: dg.AssetExecutionContext, settings: Settings, stage_name: str) -> Iterator[None]:
    """Run one stage exclusively, under the stage lock ``ctx`` takes too (``ctx_core.stage_lock``):
    a second writer of the same outputs (another run, ``ctx``/``dvc repro``) is waited for, up to
    ``CTX_STAGE_LOCK_WAIT`` seconds (default an hour), then the step fails naming its pid.
    User errors become failures."""
    with user_errors(), stage_lock(settings.root, stage_name, wait_from_env(STAGE_LOCK_WAIT_S),
                                   on_wait=context.log.info):
        yield


@contextmanager
def user_errors() -> Iterator[None]:
    """A ``UserError`` from ctx_core ends the step as a Dagster failure with its message."""
    try:
        yield
    except UserError as exc:
        raise dg.Failure(description=str(exc)) from None


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


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    """The metadata values of ``key``'s latest materialisation; {} when there is none.
    One reported from dvc.lock (``dvc_lock_sensor``) carries only the lock's fingerprint."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: entry.value for name, entry in event.asset_materialization.metadata.items()}


def finish(
    context: dg.AssetExecutionContext,
    settings: Settings,
    dvc_stage: str,
    run_id: Optional[str],
    mlflow: MlflowTracking,
    dvc: DvcLock,
    metadata: dict,
    data_version: Optional[str] = None,
) -> dg.MaterializeResult:
    """Add the MLflow link and the dvc.lock record of ``dvc_stage`` to ``metadata``; the asset's result."""
    metadata["mlflow_run_id"] = run_id or "tracking off"
    url = mlflow.run_url(run_id, tracking_uri(settings))
    if url:
        metadata["mlflow_run"] = dg.MetadataValue.url(url)
    record = dvc.record(settings, dvc_stage)
    metadata["dvc_stage"] = dvc_stage
    metadata["dvc_lock"] = record.reason
    if record.fingerprint:
        metadata["dvc_lock_fingerprint"] = record.fingerprint
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(data_version) if data_version else None
    )
