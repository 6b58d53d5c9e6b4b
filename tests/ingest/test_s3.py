"""S3 end to end against a local S3-compatible server (moto), and the store
pushed to / pulled from an S3 DVC remote."""

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ctx_core.config import load_params
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.ingest.run import run_ingest
from ctx_core.ingest.s3 import S3SourceError, list_objects, make_client
from tests.conftest import BIN, ROOT, free_port
from tests.ingest.conftest import ingest_settings, jpeg_bytes, noise
from tests.ingest.test_voc import make_synth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_endpoint(request):
    port = free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    request.addfinalizer(lambda: (proc.terminate(), proc.wait(timeout=10)))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=1)
            return url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Dummy credentials from the environment only; no profile or config file of the machine."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def test_s3_prefix_ingests_in_parallel_with_uris_as_sources(tmp_path, s3_endpoint, aws_env, monkeypatch):
    client = make_client(s3_endpoint, 3, 4)
    client.create_bucket(Bucket="photos")
    for k in range(5):
        client.put_object(Bucket="photos", Key=f"raw/day{k % 2}/im{k}.jpg", Body=jpeg_bytes(noise(90, 80, k)))
    client.put_object(Bucket="photos", Key="raw/broken.jpg", Body=b"not a jpeg")
    client.put_object(Bucket="photos", Key="raw/huge.png", Body=b"\0" * 70_000)
    client.put_object(Bucket="photos", Key="raw/notes.md", Body=b"ignored")
    client.put_object(Bucket="photos", Key="rawer/other.jpg", Body=jpeg_bytes(noise(90, 80, 9)))  # not under raw/
    synth = make_synth(tmp_path, images=6)
    for path in synth.rglob("*"):
        if path.is_file():
            client.put_object(Bucket="photos", Key=f"voc/{path.relative_to(synth).as_posix()}", Body=path.read_bytes())

    objects = list_objects(client, "photos", "raw/", page_size=2)  # four pages
    assert [o["Key"] for o in objects] == sorted(o["Key"] for o in objects) and len(objects) == 8

    settings = ingest_settings(tmp_path, "s3://photos/raw", max_file_bytes=60_000, download_threads=4)
    settings = load_params(settings.source, [f"storage.s3_endpoint_url={s3_endpoint}"])
    result = run_ingest(settings, progress=False)
    assert sorted(result.ingested) == sorted(f"s3://photos/raw/day{k % 2}/im{k}.jpg" for k in range(5))
    assert {r.source: r.kind for r in result.quarantined} == {
        "s3://photos/raw/broken.jpg": "not an image", "s3://photos/raw/huge.png": "file over the size limit"}
    assert result.ignored_files == 1

    # the endpoint may come from the environment instead of params
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    voc = run_ingest(ingest_settings(tmp_path, "s3://photos/voc/", "voc"), progress=False)
    folder = run_ingest(ingest_settings(tmp_path, synth, "folder"), progress=False)
    assert voc.objects == folder.objects > 0 and voc.split_sizes == folder.split_sizes

    with pytest.raises(S3SourceError, match="NoSuchBucket"):
        run_ingest(ingest_settings(tmp_path, "s3://no-such-bucket/x", "missing"), progress=False)


def test_client_retries_transient_errors(aws_env):
    client = make_client("http://127.0.0.1:9", max_attempts=7, threads=32)
    retries = client.meta.config.retries
    assert retries["mode"] == "standard" and retries["total_max_attempts"] == 7
    assert client.meta.config.max_pool_connections == 32


def sh(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_dvc_repro_ingest_then_push_and_pull_through_an_s3_remote(project_copy, s3_endpoint, aws_env):
    repo = project_copy
    photos = repo / "data" / "photos"
    photos.mkdir(parents=True)
    for k in range(4):
        (photos / f"p{k}.jpg").write_bytes(jpeg_bytes(noise(200, 150, k)))
    (photos / "bad.jpg").write_text("x")
    # DVC reads params.yaml itself, so write the smoke profile flat
    params = load_params(ROOT / "params.smoke.yaml").params.model_dump(mode="json")
    params["data"]["ingest"]["source"] = "data/photos"
    params["tracking"]["enabled"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    make_client(s3_endpoint, 3, 4).create_bucket(Bucket="dvc-store")
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "repro", "ingest")

    store = repo / params["data"]["ingest"]["out"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {o["path"]: o for o in lock["stages"]["ingest"]["outs"]}
    version = outs[params["data"]["ingest"]["out"]]["md5"]
    assert version == dvc_dir_hash(store) and len(list((store / "images").iterdir())) == 4

    sh(repo, "dvc", "remote", "add", "-d", "store", "s3://dvc-store/cache")
    sh(repo, "dvc", "remote", "modify", "store", "endpointurl", s3_endpoint)
    sh(repo, "dvc", "push", "ingest")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(store)
    sh(repo, "dvc", "pull", "ingest")
    assert dvc_dir_hash(store) == version
    assert "up to date" in sh(repo, "dvc", "status", "ingest")


def test_dvc_tracks_an_s3_source_as_an_external_dependency(project_copy, s3_endpoint, aws_env, monkeypatch):
    repo = project_copy
    client = make_client(s3_endpoint, 3, 4)
    client.create_bucket(Bucket="camera")
    for k in range(3):
        client.put_object(Bucket="camera", Key=f"roll/p{k}.jpg", Body=jpeg_bytes(noise(200, 150, k)))
    params = load_params(ROOT / "params.smoke.yaml").params.model_dump(mode="json")
    params["data"]["ingest"]["source"] = "s3://camera/roll"
    params["tracking"]["enabled"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # DVC's S3 client reads the endpoint from here, not params
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "repro", "ingest")
    deps = {d["path"]: d for d in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["ingest"]["deps"]}
    assert deps["s3://camera/roll"]["nfiles"] == 3
    client.put_object(Bucket="camera", Key="roll/p9.jpg", Body=jpeg_bytes(noise(200, 150, 9)))
    assert "s3://camera/roll" in sh(repo, "dvc", "status", "ingest")  # a new photo makes the stage stale


def test_source_fingerprint_of_a_bucket_follows_its_objects(s3_endpoint, aws_env, tmp_path):
    from ctx_core.ingest.fingerprint import source_fingerprint

    client = make_client(s3_endpoint, 3, 1)
    client.create_bucket(Bucket="watched")
    client.put_object(Bucket="watched", Key="imgs/a.jpg", Body=b"a")
    from tests.conftest import write_params

    settings = load_params(write_params(tmp_path, data={"ingest": {"source": "s3://watched/imgs"}},
                                        storage={"s3_endpoint_url": s3_endpoint}))
    first, files = source_fingerprint(settings)
    assert files == 1 and source_fingerprint(settings)[0] == first
    client.put_object(Bucket="watched", Key="imgs/b.jpg", Body=b"b")
    assert source_fingerprint(settings) != (first, 1)
    client.put_object(Bucket="watched", Key="elsewhere/c.jpg", Body=b"c")  # outside the prefix: ignored
    assert source_fingerprint(settings)[1] == 2
