"""An S3 endpoint that dies mid-ingestion: the run stops with one line and a non-zero exit,
quarantines nothing for the outage, leaves the previous store as it was, and the next run works.

A loopback proxy stands between boto3 and a local moto server; after a set number of
object downloads it "dies": it drops every connection unanswered, or holds it open without
a word (a hung endpoint). Retries and timeouts are set small so each case takes seconds.
"""

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from ctx_core.cli.main import main
from ctx_core.fsutil import dvc_dir_hash
from ctx_core.ingest.s3 import make_client
from tests.ingest.conftest import ingest_settings, jpeg_bytes, noise
from tests.ingest.test_s3 import aws_env, s3_endpoint  # noqa: F401 (fixtures)

OBJECTS = 30
HEALTHY_DOWNLOADS = 8


class DyingProxy:
    """Forwards S3 requests to ``upstream`` until ``budget`` object GETs have been answered;
    then, by ``mode``, closes each connection unanswered (``"close"``) or never answers (``"hang"``)."""

    def __init__(self, upstream: str, mode: str = "close"):
        self.upstream = urlsplit(upstream)
        self.mode = mode
        self.budget: float = float("inf")
        self.served = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                if not proxy.admit(self.command, self.path):
                    if proxy.mode == "hang":
                        proxy.release.wait(30)
                    self.close_connection = True
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def admit(self, method: str, path: str) -> bool:
        """True while the endpoint is alive; counts object GETs (not listings) against the budget."""
        url = urlsplit(path)
        is_object = method == "GET" and "list-type" not in url.query and url.path.strip("/").count("/") >= 1
        with self.lock:
            if self.served >= self.budget:
                return False
            self.served += is_object
            return True

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bucket(s3_endpoint, aws_env):  # noqa: F811
    client = make_client(s3_endpoint, 3, 4)
    name = f"outage-{time.monotonic_ns()}"
    client.create_bucket(Bucket=name)
    for k in range(OBJECTS):
        client.put_object(Bucket=name, Key=f"raw/im{k:02d}.jpg", Body=jpeg_bytes(noise(90, 80, k)))
    return name


def ingest(tmp_path, bucket, endpoint, capsys, **ingest_cfg) -> tuple[int, str, float]:
    settings = ingest_settings(tmp_path, f"s3://{bucket}/raw", download_threads=4, s3_max_attempts=2,
                               s3_timeout_s=1, **ingest_cfg)
    capsys.readouterr()
    t0 = time.monotonic()
    code = main(["ingest", "--params", str(settings.source), "--force",
                 "--set", f"storage.s3_endpoint_url={endpoint}"])
    return code, capsys.readouterr().err, time.monotonic() - t0


@pytest.mark.parametrize("mode", ["close", "hang"])
def test_endpoint_dying_mid_download_stops_ingestion_and_keeps_the_store(tmp_path, bucket, s3_endpoint, capsys, mode):  # noqa: F811
    proxy = DyingProxy(s3_endpoint, mode)
    try:
        code, err, _ = ingest(tmp_path, bucket, proxy.url, capsys)
        assert code == 0, err
        store = tmp_path / "store-p"
        before = dvc_dir_hash(store)

        proxy.budget, proxy.served = HEALTHY_DOWNLOADS, 0
        code, err, seconds = ingest(tmp_path, bucket, proxy.url, capsys)
        assert code == 2 and err.startswith("ctx: error: ") and err.count("\n") == 1, err
        assert "could not be downloaded" in err and f"s3://{bucket}/raw" in err and f"of {OBJECTS} objects" in err
        assert "Traceback" not in err
        assert seconds < 30, f"outage took {seconds:.0f} s to report"
        assert dvc_dir_hash(store) == before  # the previous store, all 30 images
        assert len(list((store / "images").iterdir())) == OBJECTS
        assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]

        proxy.budget = float("inf")  # the endpoint is back: the next run succeeds
        code, err, _ = ingest(tmp_path, bucket, proxy.url, capsys)
        assert code == 0, err
        assert dvc_dir_hash(store) == before
    finally:
        proxy.close()


def test_listing_on_a_dead_endpoint_is_an_error_not_an_empty_source(tmp_path, bucket, s3_endpoint, capsys):  # noqa: F811
    proxy = DyingProxy(s3_endpoint, "close")
    proxy.budget = 0  # nothing answered, not even the listing
    try:
        code, err, seconds = ingest(tmp_path, bucket, proxy.url, capsys)
        assert code == 2 and err.startswith("ctx: error: cannot list ") and err.count("\n") == 1, err
        assert seconds < 30
        assert not (tmp_path / "store-p").exists()
    finally:
        proxy.close()
