"""ctx compare: the registry table, the checks, and where the champion aliases land."""

import csv
import json
import math

import mlflow
import pytest

from ctx_core.compare import run_compare
from ctx_core.config import load_params
from ctx_core.errors import UserError
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.registry import register_version
from tests.conftest import write_params

CLASSES = ["car", "dog"]


class Registry:
    """A SQLite MLflow store beside a one-file image store, with helpers that register
    encoder and detector versions and log probe runs the way the stages do."""

    def __init__(self, tmp_path):
        import hashlib

        self.tmp, self._hash = tmp_path, hashlib
        store = tmp_path / "store"
        store.mkdir()
        (store / "manifest.txt").write_text("one image\n")
        self.current = dvc_dir_hash(store)
        uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
        params = write_params(tmp_path, detection={"input": str(store)}, tracking={"enabled": True, "uri": uri})
        self.settings = load_params(params)
        self.client = mlflow.MlflowClient(uri)
        self.exp = self.client.create_experiment(self.settings.params.tracking.experiment,
                                                 artifact_location=(tmp_path / "art").as_uri())

    def encoder(self, accuracy, weights, tagged=True):
        client = self.client
        run = client.create_run(self.exp)
        client.log_param(run.info.run_id, "eval_pairs", 2048)
        path = self.tmp / f"w{weights}" / "encoder.pt"
        path.parent.mkdir()
        path.write_bytes(bytes([weights]) * 64)
        client.log_artifact(run.info.run_id, str(path), "encoder")
        client.set_terminated(run.info.run_id)
        digest = self._hash.sha256(path.read_bytes()).hexdigest()[:12]
        tags = {"held_out_accuracy": accuracy, **({"weights_sha256": digest} if tagged else {})}
        return register_version(client, "ctx-encoder", run.info.run_id, "encoder", tags), f"file:{digest}"

    def detector(self, init, enc, aps, data=None, status="FINISHED", seed=None, val=None):
        """One fine-tuning run and its registry version; returns the version number (int)."""
        client = self.client
        rid = client.create_run(self.exp).info.run_id
        mean = sum(aps) / len(aps) if aps else float("nan")
        client.log_metric(rid, "mAP", mean)
        if val is not None:
            client.log_metric(rid, "val_mAP", val)
        for c, ap in zip(CLASSES, aps):
            client.log_metric(rid, f"AP_{c}", ap)
        client.set_terminated(rid, status=status)
        tags = {"init": init, "encoder_version": enc, "data_version": data or self.current, "mAP": mean,
                **({"seed": seed} if seed is not None else {}), **({"val_mAP": val} if val is not None else {})}
        return int(register_version(client, "ctx-detector", rid, "detector", tags).version)

    def seeds(self, init, enc, test, val=None):
        """One version per seed 0, 1, ...: test mAP ``test[i]`` (both classes), val mAP ``val[i]``."""
        return [self.detector(init, enc, [t, t], seed=i, val=None if val is None else val[i])
                for i, t in enumerate(test)]

    def probe(self, enc, svm, low, high, data=None, start=1000, status="FINISHED"):
        client = self.client
        rid = client.create_run(self.exp, start_time=start, tags={
            "stage": "probe", "encoder_version": enc, "data_version": data or self.current}).info.run_id
        for name, value in {"svm_map_learned": svm, "svm_map_learned_low": low, "svm_map_learned_high": high,
                            "svm_map_random_init": 0.2, "svm_map_random_init_low": 0.15,
                            "svm_map_random_init_high": 0.25, "knn_top1_learned": 0.5}.items():
            client.log_metric(rid, name, value)
        client.set_terminated(rid, status=status)
        return rid


@pytest.fixture
def registry(tmp_path):
    """A SQLite registry with two encoders and six detector versions of known quality,
    registered before detection ran over seeds (no seed tag, no val_mAP)."""
    reg = Registry(tmp_path)
    # found by its weights_sha256 tag (as ctx pretrain registers), or by downloading and hashing (older versions)
    good, good_file = reg.encoder(0.39, 1, tagged=True)    # well above chance
    bad, bad_file = reg.encoder(0.13, 2, tagged=False)     # chance level
    d = reg.detector
    versions = {
        "scratch": d("scratch", "none", [0.10, 0.20]),                   # 0.15, eligible
        "context": d("context", good_file, [0.30, 0.40]),                # 0.35, eligible: the champion
        "bad_encoder": d("context", bad_file, [0.50, 0.50]),             # 0.50, encoder at chance
        "old_data": d("context", "ctx-encoder/1", [0.60, 0.60], data="0" * 32 + ".dir"),
        "failed": d("context_rescaled", good_file, [0.70, 0.70], status="FAILED"),
        "diverged": d("context_rescaled", good_file, [float("nan"), 0.2]),
    }
    return reg.settings, reg.client, versions, good


@pytest.fixture
def seeded(tmp_path):
    reg = Registry(tmp_path)
    reg.good, reg.good_file = reg.encoder(0.39, 1)
    return reg


def test_champion_is_the_best_version_that_passed_its_checks(registry):
    settings, client, v, good = registry
    result = run_compare(settings)
    assert result.champion.version == int(v["context"]) and result.alias_moved
    assert int(client.get_model_version_by_alias("ctx-detector", "champion").version) == v["context"]
    # its encoder, found by the weights file's digest, becomes the encoder champion
    assert result.encoder_champion == f"ctx-encoder/{good.version}"
    assert client.get_model_version_by_alias("ctx-encoder", "champion").version == good.version
    problems = {r.version: r.problem for r in result.rows}
    assert problems[int(v["scratch"])] is None and problems[int(v["context"])] is None
    assert "not above chance" in problems[int(v["bad_encoder"])]
    assert "scored on data 000000000000" in problems[int(v["old_data"])]
    assert "FAILED" in problems[int(v["failed"])]
    assert "not a finite number" in problems[int(v["diverged"])]
    # rows sorted by mAP, NaN last, with the run's per-class AP
    maps = [r.mean_ap for r in result.rows]
    finite = [m for m in maps if math.isfinite(m)]
    assert finite == sorted(finite, reverse=True) and math.isnan(maps[-1])
    champ = next(r for r in result.rows if r.version == int(v["context"]))
    assert champ.ap == pytest.approx({"car": 0.30, "dog": 0.40}) and champ.mean_ap == pytest.approx(0.35)
    # versions without a seed tag: each its own group of one, ranked by test mAP (none has val_mAP)
    assert result.ranked_by == "mAP" and all(g.n == 1 and not g.seeded for g in result.groups)
    assert [g.versions[0] for g in result.groups if g.eligible] == [int(v["context"]), int(v["scratch"])]
    assert result.champion_group.runs[0].version == int(v["context"])
    # nothing pairs them, so no ranking is claimed
    assert result.lead.n == 0 and not result.lead_beyond_noise
    assert result.lead_sentence == f"context (ctx-encoder/{good.version}) v{v['context']} − scratch v{v['scratch']}: no seed in common, no ranking claimed"
    assert result.encoders == [] and result.encoder_sentence.startswith("no probe runs (`ctx probe`) on data ")


def test_table_files_and_second_run_keeps_the_alias(registry):
    settings, client, v, _ = registry
    first = run_compare(settings)
    rows = list(csv.DictReader(first.csv.open()))
    assert [int(r["version"]) for r in rows] == [r.version for r in first.rows]
    champ_rows = [r for r in rows if r["champion"] == "True"]
    assert len(champ_rows) == 1 and champ_rows[0]["AP_car"] == "0.3000" and champ_rows[0]["init"] == "context"
    md = first.markdown.read_text()
    assert f"| {v['context']} ★ | context |" in md and "| 35.0 | 30.0 | 40.0 | passed |" in md
    assert first.chart.stat().st_size > 1000
    again = run_compare(settings)
    assert again.champion.version == first.champion.version and not again.alias_moved
    assert again.previous_champion == first.champion.version
    # the comparison is logged as a run of its own
    run = client.get_run(again.mlflow_run_id)
    assert run.data.tags["stage"] == "compare" and run.data.tags["champion_version"] == str(v["context"])
    assert run.data.metrics["eligible_versions"] == 2


def test_no_alias_leaves_the_registry_alone(registry):
    settings, client, _, _ = registry
    result = run_compare(settings, move_alias=False)
    assert result.champion is not None and not result.alias_moved
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("ctx-detector", "champion")


def test_cli_prints_the_table_and_json(registry, capsys):
    from ctx_core.cli import main

    settings, _, v, _ = registry
    assert main(["compare", "--params", str(settings.source)]) == 0
    out = capsys.readouterr().out
    assert "ctx-detector@champion moved to version" in out and "| version | init |" in out
    assert main(["compare", "--params", str(settings.source), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["champion"] == int(v["context"]) and not data["alias_moved"]


def test_without_registered_detectors_the_error_says_what_to_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    settings = load_params(write_params(tmp_path, tracking={"enabled": True, "uri": uri}))
    with pytest.raises(UserError, match="no detector is registered as 'ctx-detector'.*ctx finetune"):
        run_compare(settings)
    with pytest.raises(UserError, match="tracking.enabled: true"):
        run_compare(load_params(write_params(tmp_path / "off")))


def t_bounds(diffs):
    """Paired 95 % t-interval computed here, independently of ctx_core.stats."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_three_seeds_with_a_clear_lead_move_the_alias_beyond_noise(seeded):
    reg = seeded
    ctx_val, ctx_test = [0.40, 0.43, 0.45], [0.30, 0.34, 0.33]
    scr_val, scr_test = [0.20, 0.22, 0.26], [0.18, 0.20, 0.25]
    context = reg.seeds("context", reg.good_file, ctx_test, ctx_val)
    scratch = reg.seeds("scratch", "none", scr_test, scr_val)
    # seed 2 of scratch run again: the newest version of a seed counts, the older one does not
    rerun = reg.detector("scratch", "none", [0.24, 0.24], seed=2, val=0.25)
    scr_val[2], scr_test[2] = 0.25, 0.24
    result = run_compare(reg.settings)

    # every version has val_mAP: the choice is made on val; the champion is the best val seed of context
    assert result.ranked_by == "val_mAP"
    assert result.champion.version == context[2] and result.alias_moved
    assert int(reg.client.get_model_version_by_alias("ctx-detector", "champion").version) == context[2]
    assert result.encoder_champion == f"ctx-encoder/{reg.good.version}"
    best, runner = result.groups[:2]
    assert (best.init, best.n, [r.seed for r in best.runs]) == ("context", 3, [0, 1, 2])
    assert [r.version for r in runner.runs] == [scratch[0], scratch[1], rerun]
    assert best.interval("mAP").mean == pytest.approx(sum(ctx_test) / 3)

    mean, low, high = t_bounds([a - b for a, b in zip(ctx_val, scr_val)])
    assert low > 0 and result.lead_beyond_noise
    assert (result.lead.mean, result.lead.low, result.lead.high, result.lead.n) == pytest.approx((mean, low, high, 3))
    sentence = (f"context (ctx-encoder/{reg.good.version}) − scratch = "
                f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] val mAP, n=3: beyond noise")
    assert result.lead_sentence == sentence

    md = result.markdown.read_text()
    assert sentence in md and "ranked by mean validation mAP" in md
    test_mean, test_low, test_high = t_bounds([a - b for a, b in zip(ctx_test, scr_test)])
    assert f"On test: {100 * test_mean:+.1f} [{100 * test_low:+.1f}, {100 * test_high:+.1f}] mAP, n=3" in md
    _, g_low, g_high = t_bounds(ctx_val)
    assert f"| context ★ | ctx-encoder/{reg.good.version} |" in md
    assert f"| 3 | {100 * sum(ctx_val) / 3:.1f} ± {100 * (g_high - sum(ctx_val) / 3):.1f} |" in md

    versions = {int(r["version"]): r for r in csv.DictReader(result.csv.open())}
    assert versions[scratch[2]]["superseded_by"] == str(rerun) and versions[rerun]["superseded_by"] == ""
    assert f"| passed; seed rerun as v{rerun}, which counts |" in md
    groups = list(csv.DictReader(result.groups_csv.open()))
    assert [(g["init"], g["n_seeds"], g["champion"]) for g in groups] == [("context", "3", "True"), ("scratch", "3", "False")]
    assert groups[1]["versions_used"] == f"{scratch[0]};{scratch[1]};{rerun}"
    assert float(groups[0]["val_mAP_low"]) == pytest.approx(g_low, abs=1e-4)
    assert result.chart.stat().st_size > 1000

    run = reg.client.get_run(result.mlflow_run_id).data
    assert run.tags["lead_beyond_noise"] == "True" and run.tags["ranked_by"] == "val_mAP"
    assert run.metrics["lead_mean"] == pytest.approx(mean) and run.metrics["lead_low"] == pytest.approx(low)
    assert run.metrics["lead_high"] == pytest.approx(high) and run.metrics["lead_n"] == 3


def test_a_noisy_lead_is_within_noise_and_claims_no_ranking(seeded):
    reg = seeded
    context = reg.seeds("context", reg.good_file, [0.35, 0.10, 0.40])
    reg.seeds("scratch", "none", [0.20, 0.30, 0.15])
    result = run_compare(reg.settings)
    # no val_mAP anywhere: ranked by test mAP; the best group's best version still gets the alias
    assert result.ranked_by == "mAP" and result.champion.version == context[2] and result.alias_moved
    mean, low, high = t_bounds([0.15, -0.20, 0.25])
    assert low < 0 < high and not result.lead_beyond_noise
    assert result.lead_sentence == (f"context (ctx-encoder/{reg.good.version}) − scratch = "
                                    f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] mAP, n=3: "
                                    "within noise, no ranking claimed")
    assert result.lead_sentence in result.markdown.read_text()
    assert reg.client.get_run(result.mlflow_run_id).data.tags["lead_beyond_noise"] == "False"


def test_the_champion_follows_validation_not_test(seeded, capsys):
    from ctx_core.cli import main

    reg = seeded
    # context wins on val, scratch_rescaled on test; within context, seed 1 is best on val, seed 0 on test
    context = reg.seeds("context", reg.good_file, [0.30, 0.20, 0.22], val=[0.40, 0.45, 0.41])
    rescaled = reg.seeds("scratch_rescaled", "none", [0.40, 0.42, 0.41], val=[0.30, 0.31, 0.29])
    result = run_compare(reg.settings)
    assert result.ranked_by == "val_mAP"
    assert [g.init for g in result.groups] == ["context", "scratch_rescaled"]
    assert result.champion.version == context[1]
    assert result.lead_beyond_noise and result.lead.mean == pytest.approx((0.10 + 0.14 + 0.12) / 3)

    # a seed without val_mAP (e.g. registered before detection.val_split): its group is listed, not
    # ranked, since the choice is made on val; the champion stays
    late = reg.detector("scratch_rescaled", "none", [0.43, 0.43], seed=3)
    assert main(["compare", "--params", str(reg.settings.source), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ranked_by"] == "val_mAP" and data["champion"] == context[1]
    listed = data["groups"][1]
    assert listed["init"] == "scratch_rescaled" and late in listed["versions"]
    assert "not ranked on val" in listed["problem"] and data["lead"] is None
    assert "not ranked on val" in open(data["markdown"]).read()


def test_one_common_seed_gives_no_interval(seeded, capsys):
    from ctx_core.cli import main

    reg = seeded
    reg.detector("context", reg.good_file, [0.30, 0.30], seed=0, val=0.33)
    reg.detector("scratch", "none", [0.10, 0.10], seed=0, val=0.12)
    assert main(["compare", "--params", str(reg.settings.source)]) == 0
    out = capsys.readouterr().out
    result = run_compare(reg.settings)
    assert result.lead.n == 1 and not result.lead.defined and not result.lead_beyond_noise
    assert result.lead.mean == pytest.approx(0.21)
    sentence = (f"context (ctx-encoder/{reg.good.version}) − scratch = +21.0 [no interval] val mAP, n=1: "
                "fewer than 2 common seeds, no ranking claimed")
    assert result.lead_sentence == sentence and f"lead over the runner-up: {sentence}" in out
    assert all(not g.interval("val_mAP").defined for g in result.groups)
    # n = 1: the group table shows the value without a ±, the MLflow run no bounds
    assert f"| context ★ | ctx-encoder/{reg.good.version} | {reg.current[:12]} | 1 | 33.0 | 30.0 | 0: 33.0 / 30.0 | passed |" in out
    metrics = reg.client.get_run(result.mlflow_run_id).data.metrics
    assert metrics["lead_mean"] == pytest.approx(0.21) and "lead_low" not in metrics


def test_encoders_ranked_by_probe_scores(seeded):
    reg = seeded
    other, other_file = reg.encoder(0.40, 3)
    reg.seeds("context", reg.good_file, [0.30, 0.31])
    # the newest finished probe run per encoder on the current data counts
    reg.probe(f"ctx-encoder/{reg.good.version}", 0.10, 0.05, 0.15, start=1000)       # older: ignored
    best = reg.probe(f"ctx-encoder/{reg.good.version}", 0.45, 0.41, 0.49, start=2000)
    reg.probe(f"ctx-encoder/{reg.good.version}", 0.90, 0.85, 0.95, start=3000, status="FAILED")
    reg.probe(other_file, 0.95, 0.90, 0.99, start=3000, data="0" * 32 + ".dir")      # other data: ignored
    second = reg.probe(other_file, 0.30, 0.26, 0.34, start=2000)                      # found by digest
    result = run_compare(reg.settings)
    assert [(p.encoder, p.run_id) for p in result.encoders] == [
        (f"ctx-encoder/{reg.good.version}", best), (f"ctx-encoder/{other.version}", second)]
    assert result.encoder_lead_beyond_noise
    assert result.encoder_sentence == (f"ctx-encoder/{reg.good.version} vs ctx-encoder/{other.version}: "
                                       "SVM mAP 45.0 [41.0, 49.0] vs 30.0 [26.0, 34.0]: beyond noise "
                                       "(the intervals do not overlap)")
    md = result.markdown.read_text()
    assert result.encoder_sentence in md and f"| 45.0 [41.0, 49.0] | 20.0 [15.0, 25.0] | n/a | 50.0 [no interval] | n/a | {best} |" in md
    # a closer runner-up: the intervals overlap
    third = reg.probe(other_file, 0.40, 0.36, 0.44, start=4000)
    again = run_compare(reg.settings)
    assert [p.run_id for p in again.encoders] == [best, third] and not again.encoder_lead_beyond_noise
    assert again.encoder_sentence.endswith("within noise (the intervals overlap), no ranking claimed")
    # informational only: the encoder alias follows the detector champion
    assert again.encoder_champion == f"ctx-encoder/{reg.good.version}"
