"""The stage table: every pipeline stage, once, with the one name a user sees.

A stage's ``name`` is its ``ctx`` subcommand, its ``dvc.yaml`` stage and its
Dagster asset key (a foreach stage such as ``finetune`` has one asset per
item, keyed ``finetune/<item>``, and DVC stages ``finetune@<item>``).
The CLI registers its subcommands from this table, the Dagster assets take
their keys and groups from it, and ``dvc.yaml``'s code deps are generated
from the imports of ``cli`` (``python -m ctx_core.stage_deps --write``;
``tests/test_stage_deps.py`` fails when the file is not current).

This module is plain data: it imports nothing from the stages, so reading the
table never pulls in torch or a stage's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Callable


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    name: CLI subcommand = DVC stage = Dagster asset key (see module doc).
    run: ``module:function`` of the ``run_<stage>(settings, ...)`` that does the work.
    cli: module of the ``ctx`` subcommand(s); the closure of its imports within
        ``ctx_core`` is the stage's code, listed as ``dvc.yaml`` deps.
    params: the params.yaml sections (dotted keys) the stage reads; ``dvc.yaml``'s
        ``params`` list for the stage is exactly these.
    group: Dagster asset group.
    foreach: a params key whose list fans the stage out (DVC ``foreach``,
        one Dagster asset per item), or None.
    commands: every subcommand the ``cli`` module registers (the first is ``name``).
    """

    name: str
    run: str
    cli: str
    params: tuple[str, ...]
    group: str
    description: str
    foreach: str | None = None
    commands: tuple[str, ...] = ()

    @property
    def subcommands(self) -> tuple[str, ...]:
        return self.commands or (self.name,)

    def run_function(self) -> Callable:
        module, _, attr = self.run.partition(":")
        return getattr(import_module(module), attr)

    def dvc_stage(self, item: str | None = None) -> str:
        return f"{self.name}@{item}" if item is not None else self.name

    def asset_path(self, item: str | None = None) -> list[str]:
        """The Dagster asset key's path: ``[name]``, or ``[name, item]`` for a foreach stage."""
        return [self.name, item] if item is not None else [self.name]


STAGES: tuple[Stage, ...] = (
    Stage("synth", "ctx_core.synth.run:run_synth", "ctx_core.cli.synth",
          ("data.synth", "pretrain.patch_size", "pretrain.gap", "pretrain.jitter"), "data",
          "The embedded synthetic VOC benchmark"),
    Stage("ingest", "ctx_core.ingest.run:run_ingest", "ctx_core.cli.ingest",
          ("data.ingest", "pretrain.patch_size", "pretrain.gap", "pretrain.jitter"), "data",
          "Any image source (folder, VOC root, archive, S3) into the normalised image store"),
    Stage("pretrain", "ctx_core.pretext.run:run_pretrain", "ctx_core.cli.pretrain",
          ("pretrain",), "pretrain",
          "The encoder, trained to predict the relative position of two patches",
          commands=("pretrain", "pairs")),
    Stage("extract", "ctx_core.features.run:run_extract", "ctx_core.cli.extract",
          ("features",), "discovery",
          "Patch features of the encoder and of the baselines (random-init tower, raw pixels)",
          commands=("extract", "nn")),
    Stage("discover", "ctx_core.discovery.run:run_discover", "ctx_core.cli.discover",
          ("discovery", "features.out"), "discovery",
          "Objects discovered without labels: verified constellations, purity-coverage"),
    Stage("probe", "ctx_core.probe.run:run_probe", "ctx_core.cli.probe",
          ("probe",), "discovery",
          "Frozen-feature probes (VOC07 SVM, kNN, logistic) of the encoder and its baselines, with intervals"),
    Stage("finetune", "ctx_core.detection.run:run_finetune", "ctx_core.cli.finetune",
          ("detection",), "detection",
          "A Faster R-CNN on the encoder's trunk, one per init, scored with VOC AP",
          foreach="detection.inits", commands=("finetune", "voc-eval")),
    Stage("detection_table", "ctx_core.detection.run:run_detection_table", "ctx_core.cli.detection_table",
          ("detection.inits",), "detection",
          "The AP table: rows = inits, columns = classes + mAP",
          commands=("detection_table", "detection-table")),
    Stage("compare", "ctx_core.compare:run_compare", "ctx_core.cli.compare",
          ("compare", "detection.registered_model", "pretrain.registered_model"), "detection",
          "Every registered detector side by side; moves the champion alias",
          commands=("compare", "task_table", "task-table")),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The stage called ``name`` (a DVC name such as ``finetune@context`` gives ``finetune``)."""
    base = name.split("@", 1)[0]
    if base not in BY_NAME:
        raise KeyError(f"no stage {name!r}; the stages are {', '.join(BY_NAME)}")
    return BY_NAME[base]


def stage_for_command(command: str) -> Stage | None:
    """The stage whose ``cli`` module registers ``command`` (``ctx <command>``)."""
    for s in STAGES:
        if command in s.subcommands:
            return s
    return None
