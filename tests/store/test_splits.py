"""train / val carved from trainval by content hash: written by ctx synth, derived by the store and
by VOC roots without their own lists, identical image for image; trainval unchanged."""

import hashlib
import math
import shutil

import pytest

from ctx_core.store.labelled import DatasetError, read_detection_split
from ctx_core.store.layout import (
    MANIFEST, VAL_FRACTION, StoreError, image_files, in_val, read_manifest, split_image_ids,
)


def listed(voc, split):
    return sorted((voc / "ImageSets/Main" / f"{split}.txt").read_text().split())


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_in_val_is_the_first_fraction_of_the_hash_range():
    assert in_val("00000000" + "f" * 56)
    first_train = math.ceil(VAL_FRACTION * 16**8)  # int(sha[:8], 16) / 16**8 >= VAL_FRACTION from here on
    assert in_val(format(first_train - 1, "08x") + "f" * 56)
    assert not in_val(format(first_train, "08x") + "0" * 56)
    assert not in_val("ffffffff" + "0" * 56)


def test_synth_writes_train_and_val_partitioning_trainval_by_jpeg_sha(split_voc_and_store):
    voc, _ = split_voc_and_store
    trainval, train, val = listed(voc, "trainval"), listed(voc, "train"), listed(voc, "val")
    assert len(trainval) == 20 and val and train
    assert sorted(train + val) == trainval
    # the rule from the JPEG bytes, computed here with hashlib and the threshold alone
    assert val == [i for i in trainval if int(sha(voc / "JPEGImages" / f"{i}.jpg")[:8], 16) < VAL_FRACTION * 16**8]
    for split in ("train", "val"):
        per_class = sorted((voc / "ImageSets/Main").glob(f"*_{split}.txt"))
        assert per_class and all(sorted(line.split()[0] for line in p.read_text().splitlines()) == listed(voc, split)
                                 for p in per_class)


def test_store_derives_the_split_the_writer_wrote(split_voc_and_store):
    voc, store = split_voc_and_store
    manifest = read_manifest(store)
    assert set(manifest["split"]) == {"unlabeled", "trainval", "test"}  # the schema is unchanged
    # ingestion copies the synthetic JPEGs byte for byte, so the manifest's hash is the file's
    for image_id, digest in zip(manifest["image_id"], manifest["sha256"]):
        assert digest == sha(store / "images" / f"{image_id}.jpg") == sha(voc / "JPEGImages" / f"{image_id}.jpg")
    for split in ("train", "val", "trainval", "test"):
        assert split_image_ids(store, [split], "x.splits") == listed(voc, split)
        assert [r.image_id for r in read_detection_split(store, split).images] == listed(voc, split)
        assert [r.image_id for r in read_detection_split(voc, split).images] == listed(voc, split)
    assert split_image_ids(store, ["train", "val"], "x") == listed(voc, "trainval")
    val = read_detection_split(store, "val")
    assert val.object_count() == read_detection_split(voc, "val").object_count() > 0


def test_voc_root_without_lists_derives_them_and_own_lists_win(split_voc_and_store, tmp_path):
    voc, _ = split_voc_and_store
    bare = tmp_path / "bare"
    shutil.copytree(voc, bare)
    for p in (bare / "ImageSets/Main").glob("*"):
        if p.stem in ("train", "val") or p.stem.endswith(("_train", "_val")):
            p.unlink()
    assert [r.image_id for r in read_detection_split(bare, "val").images] == listed(voc, "val")
    assert [r.image_id for r in read_detection_split(bare, "train").images] == listed(voc, "train")
    assert [p.stem for p in image_files(bare, ["val"], "pretrain.input")] == listed(voc, "val")

    own = listed(voc, "trainval")[:3]
    (bare / "ImageSets/Main/val.txt").write_text("".join(f"{i}\n" for i in own))
    assert [r.image_id for r in read_detection_split(bare, "val").images] == own
    # train is still derived (no train.txt): a VOC root's own lists are taken one by one
    assert [r.image_id for r in read_detection_split(bare, "train").images] == listed(voc, "train")


def test_missing_split_errors_name_the_derived_splits(split_voc_and_store, tmp_path):
    voc, store = split_voc_and_store
    with pytest.raises(DatasetError, match=r"no split 'minival'.*test, train, trainval, unlabeled, val"):
        read_detection_split(voc, "minival")
    with pytest.raises(DatasetError, match=r"no image in split 'minival'.*'test', 'train', 'trainval', 'unlabeled', 'val'"):
        read_detection_split(store, "minival")
    # a store without trainval has no train/val to derive
    only = tmp_path / "only"
    only.mkdir()
    manifest = read_manifest(store)
    manifest[manifest["split"] != "trainval"].to_parquet(only / MANIFEST, index=False)
    with pytest.raises(StoreError, match=r"no image in splits \['val'\]; it has \['test', 'unlabeled'\]"):
        split_image_ids(only, ["val"], "features.splits")
