"""Corrupt intermediates: a cut feature shard, index or meta file, a cut store table, a cut
stored JPEG. Each stage that reads one stops with one ``ctx: error:`` line naming the file and
the command that rebuilds it, and that command makes the next run work; inside a training run
(pretraining, the detection batches) a cut image is skipped and logged instead.

Everything works on copies of the tiny shared store (40 synthetic images)."""

import json
import re
import shutil

import numpy as np
import pytest

from ctx_core.cli.main import main
from ctx_core.config import load_params
from ctx_core.detection.data import TrainingSet, calibration_images
from ctx_core.pretext.chroma_diagnostic import position_batch
from ctx_core.pretext.data import usable_images
from ctx_core.store.labelled import read_detection_split
from ctx_core.store.layout import StoreError, image_path, read_manifest
from tests.conftest import write_params
from tests.features.conftest import encoder_file, store  # noqa: F401 (fixtures)

FEATURES = {"splits": ["trainval", "test"], "max_images": 10, "baselines": []}
PRETRAIN = {"steps": 4, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2, "eval_pairs": 16,
            "pairs_per_grid": 8, "held_out_fraction": 0.4, "diagnostic_steps": 0,
            "splits": ["unlabeled", "trainval"]}


def cut(path, keep: float = 0.5):
    """Truncate ``path`` to ``keep`` of its bytes, as a full disk or a killed copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def project(tmp_path, store, encoder_file):  # noqa: F811
    """Params in ``tmp_path`` for ingest (from the store's VOC source into a copy of the store),
    extract, discover and pretrain on that copy."""
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    voc = store.parent / "voc"
    params = write_params(
        tmp_path,
        data={"ingest": {"source": str(voc), "out": str(copy), "reports": str(tmp_path / "r-ingest"), "workers": 1}},
        features={"input": str(copy), "encoder": str(encoder_file), "out": str(tmp_path / "features"),
                  "reports": str(tmp_path / "r-features"), "scales": [0.5], "batch_size": 64, **FEATURES},
        discovery={"out": str(tmp_path / "discovery"), "reports": str(tmp_path / "r-discovery"), "min_members": 1},
        pretrain={"input": str(copy), "out": str(tmp_path / "models"), "reports": str(tmp_path / "r-pretrain"),
                  "workers": 1, **PRETRAIN},
    )
    return load_params(params)


def ctx(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    """Exit 2 and one ``ctx: error:`` line holding ``fragments`` (a progress bar may share stderr)."""
    errors = [line[line.index("ctx: error: "):] for line in re.split(r"[\r\n]", err) if "ctx: error: " in line]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"


@pytest.mark.parametrize("name", ["shard-00000.npy", "index.parquet", "meta.json"])
def test_cut_feature_file_names_it_and_extract_repairs(project, capsys, name):
    p = str(project.source)
    assert ctx(capsys, "extract", "--params", p)[0] == 0
    damaged = project.path(project.params.features.out) / "learned" / name
    cut(damaged)

    code, err = ctx(capsys, "discover", "--params", p)
    assert_one_line(code, err, str(damaged), "re-run `ctx extract`")
    first = read_manifest(project.path(project.params.features.input))["image_id"].min()
    code, err = ctx(capsys, "nn", "--params", p, "--image", first, "--box", "0,0,32,32")
    assert_one_line(code, err, str(damaged), "re-run `ctx extract`")

    assert ctx(capsys, "extract", "--params", p)[0] == 0
    code, err = ctx(capsys, "discover", "--params", p)
    assert code == 0, err


@pytest.mark.parametrize("name", ["manifest.parquet", "annotations.parquet"])
def test_cut_store_table_names_it_in_every_reader_and_ingest_force_repairs(project, capsys, name):
    p = str(project.source)
    store_copy = project.path(project.params.data.ingest.out)
    damaged = store_copy / name
    cut(damaged)
    readers = [("extract", "--params", p), ("pretrain", "--params", p)] if name == "manifest.parquet" else []
    for args in readers:
        code, err = ctx(capsys, *args)
        assert_one_line(code, err, str(damaged), "re-run `ctx ingest --force`")
    with pytest.raises(StoreError, match=f"{damaged}.*re-run `ctx ingest --force`"):
        read_detection_split(store_copy, "trainval")  # what fine-tuning reads

    assert ctx(capsys, "ingest", "--params", p, "--force")[0] == 0
    assert len(read_detection_split(store_copy, "trainval").images) > 0
    code, err = ctx(capsys, "extract", "--params", p)
    assert code == 0, err


def test_cut_stored_jpeg_stops_extraction_naming_it_and_ingest_force_repairs(project, capsys):
    p = str(project.source)
    store_copy = project.path(project.params.data.ingest.out)
    manifest = read_manifest(store_copy)
    first = sorted(manifest.loc[manifest["split"].isin(FEATURES["splits"]), "image_id"])[0]
    damaged = image_path(store_copy, first)
    cut(damaged)

    code, err = ctx(capsys, "extract", "--params", p)
    assert_one_line(code, err, str(damaged), "re-run `ctx ingest --force`")
    assert ctx(capsys, "ingest", "--params", p, "--force")[0] == 0
    code, err = ctx(capsys, "extract", "--params", p)
    assert code == 0, err


def test_cut_jpegs_in_pretraining_are_skipped_and_logged_not_a_worker_crash(project, capfd, caplog):
    store_copy = project.path(project.params.data.ingest.out)
    ids = sorted(read_manifest(store_copy)["image_id"])
    damaged = [image_path(store_copy, i) for i in ids[::3]]  # a third of the images: some are drawn for sure
    for path in damaged:
        cut(path)
    capfd.readouterr()
    code = main(["pretrain", "--params", str(project.source)])  # pretrain.workers = 1: a DataLoader worker
    err = capfd.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err and "ctx: error" not in err
    logged = err + caplog.text  # the DataLoader worker logs to stderr, the trainer's process through caplog
    assert [path for path in damaged if f"pretraining skips image {path} cannot be read" in logged], logged
    assert (project.path(project.params.pretrain.out) / "encoder.pt").is_file()
    metrics = json.loads((project.path(project.params.pretrain.reports) / "metrics.json").read_text())
    assert metrics["steps"] == PRETRAIN["steps"] and np.isfinite(metrics["final_loss"])

    # the chromatic-aberration diagnostic of the same run (off above: it takes long on CPU) skips them too
    images = usable_images([image_path(store_copy, i) for i in ids], project.params.pretrain)
    x, y = position_batch(images, project.params.pretrain, "projection", 64, seed=0)
    assert 0 < len(x) == len(y) <= 64
    assert [path for path in damaged if f"diagnostic skips image {path} cannot be read" in caplog.text], caplog.text


def test_cut_jpeg_in_detection_batches_is_skipped_and_counted(project):
    store_copy = project.path(project.params.data.ingest.out)
    split = read_detection_split(store_copy, "trainval")
    records = split.images
    for rec in records[: len(records) // 2]:
        cut(rec.path)
    data = TrainingSet(records, split.classes, batch_size=4, seed=0)
    for step in range(6):
        images, targets = data.batch(step)
        assert len(images) == len(targets) == 4 and all(img.shape[0] == 3 for img in images)
    assert data.unreadable and set(data.unreadable) <= set(range(len(records) // 2))
    assert all("re-run `ctx ingest --force`" in why for why in data.unreadable.values())
    # the substitutes depend on the files only: a fresh set draws the same batch
    again = TrainingSet(records, split.classes, batch_size=4, seed=0).batch(3)[1]
    assert [t["labels"].tolist() for t in data.batch(3)[1]] == [t["labels"].tolist() for t in again]
    assert len(calibration_images(records, 3, seed=0)) == 3
