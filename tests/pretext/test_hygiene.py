"""Pretraining hygiene: test images refused by content hash, held-out images halved into pretext
validation and test, and the absolute-position audit of the trained encoder reported."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from ctx_core.cli.main import main as ctx_main
from ctx_core.config import load_params
from ctx_core.pretext.data import split_held_out, split_val_test
from ctx_core.pretext.run import PretrainResult, LeakedTestImages, run_pretrain
from dagster_project.defs.pretrain import position_metadata
from tests.conftest import write_params
from tests.pretext.test_run import SMALL
from tests.store.conftest import split_voc_and_store  # noqa: F401  (session fixture)

# 11 of synth_root's 28 unlabeled images held out: 4 validation (the audit's minimum), 7 test
HYGIENE = {**SMALL, "held_out_fraction": 0.35, "audit_patches": 8}


def listed(voc: Path, split: str) -> list[str]:
    return (voc / "ImageSets/Main" / f"{split}.txt").read_text().split()


def test_val_test_halves_leave_training_images_alone():
    paths = [Path(f"img{k:04d}.jpg") for k in range(400)]
    train, held = split_held_out(paths, 0.2)
    val, test = split_val_test(held)
    assert sorted(val + test) == sorted(held) and not set(val) & set(test)
    assert 0.35 < len(val) / len(held) < 0.65
    # the train / held-out split is the one it always was; adding images moves no image between halves
    assert split_held_out(paths, 0.2)[0] == train
    val2, test2 = split_val_test(held + [Path("new.jpg")])
    assert set(val) <= set(val2) and set(test) <= set(test2)
    assert split_val_test(held[:1]) == ([], held[:1])
    assert split_val_test(held[:2]) in (([held[0]], [held[1]]), ([held[1]], [held[0]]))


def test_pretrain_reports_val_and_test_accuracy_and_the_position_audit(synth_root, tmp_path):
    params = write_params(tmp_path, pretrain={**HYGIENE, "input": str(synth_root)}, tracking={"enabled": True})
    result = run_pretrain(load_params(params), progress=False)
    assert (result.val_images, result.test_images, result.held_out_images) == (4, 7, 11)
    assert result.train_images == 28 - 11
    assert 0 <= result.val_accuracy <= 1 and 0 <= result.held_out_accuracy <= 1
    metrics = json.loads(result.reports["metrics"].read_text())
    assert metrics["val_accuracy"] == result.val_accuracy and metrics["held_out_accuracy"] == result.held_out_accuracy
    # eval_pairs 32 split in half; the test count stays under eval_pairs, which the gate reads
    assert metrics["val_eval_pairs"] >= 16 and metrics["eval_pairs"] >= 16
    audit = result.position_audit
    for key in ("position_ratio_learned", "position_ratio_random_init", "position_difference", "position_shortcut"):
        assert metrics[key] == audit[key]
    assert 0 < audit["position_ratio_learned"] < 2 and 0 < audit["position_ratio_random_init"] < 2
    assert audit["position_ratio_learned"] - audit["position_ratio_random_init"] == pytest.approx(
        audit["position_difference"], abs=0.05)
    assert audit["position_images_scored"] == 2  # 4 validation images: 2 fitted, 2 scored
    assert metrics["position_audit_seconds"] < 30
    assert (result.position_warning is not None) == bool(audit["position_shortcut"])

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["position_ratio_learned"] == pytest.approx(audit["position_ratio_learned"])
    assert run.data.metrics["val_accuracy"] == pytest.approx(result.val_accuracy)
    version = client.get_model_version("ctx-encoder", result.registered_version)
    assert float(version.tags["val_accuracy"]) == pytest.approx(result.val_accuracy, abs=1e-4)
    assert float(version.tags["held_out_accuracy"]) == pytest.approx(result.held_out_accuracy, abs=1e-4)

    meta = position_metadata(result)
    assert meta["position_ratio_learned"] == audit["position_ratio_learned"]
    assert meta["position_shortcut"] is bool(audit["position_shortcut"])


def test_too_few_validation_images_skip_the_audit_saying_why(synth_root, tmp_path):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root), "steps": 2})
    result = run_pretrain(load_params(params), progress=False)
    assert result.val_images < 4 and result.position_audit == {}
    assert any("position audit skipped" in n and "pretrain.held_out_fraction" in n for n in result.notes)
    assert "position_ratio_learned" not in json.loads(result.reports["metrics"].read_text())
    assert position_metadata(result)["position_audit"].startswith("position audit skipped")


def test_test_split_in_pretrain_splits_is_refused_for_a_voc_root(synth_root, tmp_path):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root), "splits": ["unlabeled", "test"]})
    with pytest.raises(LeakedTestImages) as err:
        run_pretrain(load_params(params), progress=False)
    message = str(err.value)
    test_ids = sorted(listed(synth_root, "test"))
    assert "\n" not in message
    assert f"{len(test_ids)} of the {28 + len(test_ids)} images" in message
    assert "['unlabeled', 'test']" in message and "test split 'test'" in message
    assert ", ".join(test_ids[:5]) in message and f"and {len(test_ids) - 5} more" in message
    assert "pretrain.allow_test_images: true" in message


def test_a_copy_of_a_test_image_under_another_id_is_caught(synth_root, tmp_path):
    voc = tmp_path / "voc"
    shutil.copytree(synth_root, voc)
    victim = sorted(listed(voc, "unlabeled"))[3]
    shutil.copyfile(voc / "JPEGImages" / f"{listed(voc, 'test')[0]}.jpg", voc / "JPEGImages" / f"{victim}.jpg")
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(voc)})
    with pytest.raises(LeakedTestImages, match=rf"1 of the 28 images .*\({victim}\)"):
        run_pretrain(load_params(params), progress=False)
    # a plain folder has no test split: nothing to compare with
    folder = tmp_path / "folder"
    shutil.copytree(voc / "JPEGImages", folder)
    from ctx_core.pretext.run import guard_test_images

    assert guard_test_images(folder, sorted(folder.glob("*.jpg")), load_params(params).params.pretrain) == []


def test_store_with_test_in_splits_is_refused(split_voc_and_store, tmp_path):
    voc, store = split_voc_and_store
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(store), "splits": ["trainval", "test"]})
    with pytest.raises(LeakedTestImages, match=rf"{len(listed(voc, 'test'))} of the 28 images .*'trainval', 'test'"):
        run_pretrain(load_params(params), progress=False)


def test_allow_test_images_lets_them_through_with_a_warning(synth_root, tmp_path, capsys):
    params = write_params(tmp_path, pretrain={**SMALL, "input": str(synth_root), "splits": ["unlabeled", "test"],
                                              "allow_test_images": True, "steps": 2})
    assert ctx_main(["pretrain", "--params", str(params), "--json"]) == 0
    out = capsys.readouterr()
    n_test = len(listed(synth_root, "test"))
    summary = json.loads(out.out)
    assert summary["train_images"] + summary["held_out_images"] == 28 + n_test
    warnings = [line for line in out.err.splitlines() if line.startswith("ctx: warning: ")]
    assert any(f"pretraining on {n_test} images of the test split 'test'" in w for w in warnings)
    metrics = json.loads((tmp_path / "reports/pretrain/metrics.json").read_text())
    assert metrics["test_images_pretrained"] == n_test


def test_cli_prints_the_audit_warning_on_one_line(monkeypatch, tmp_path, capsys):
    import ctx_core.pretext.run as run_module

    warning = "the trained encoder carries more absolute position than a random-init one: 0.41 vs 0.83"
    fake = PretrainResult(tmp_path / "encoder.pt", 0.4, 10, 4, 0, 5, 1.0, "v", {}, None, None, 0.15,
                          val_accuracy=0.38, val_images=2, test_images=2,
                          position_audit={"position_ratio_learned": 0.41, "position_ratio_random_init": 0.83,
                                          "position_shortcut": 1.0},
                          position_warning=warning, warnings=(warning,))
    monkeypatch.setattr(run_module, "run_pretrain", lambda *a, **k: fake)
    assert ctx_main(["pretrain", "--params", str(write_params(tmp_path))]) == 0
    out = capsys.readouterr()
    assert out.err.splitlines() == [f"ctx: warning: {warning}"]
    assert "0.41 learned, 0.83 random-init" in out.out and "validation 0.380" in out.out
