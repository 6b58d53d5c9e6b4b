"""MLflow tracking for stage runs: one run per stage execution, with lineage tags.

Every run is tagged with ``stage``, ``git_commit``, ``params_hash``,
``data_version`` (the DVC hash of the data it read or wrote) and, when Dagster
ran it, ``dagster_run_id``. The default store is a SQLite database plus an
artifact folder beside params.yaml; ``MLFLOW_TRACKING_URI`` overrides it.

A tracking server that goes away mid-stage does not cost the stage. Its HTTP
requests are bounded (:data:`HTTP_LIMITS`); metrics go through a background
:class:`MetricSender`, so a training step never waits on the server; when the
server stops answering, the stage prints one warning line and carries on
without it. The metric rows the server did not get are kept in
``.ctx-tracking/pending/<run id>.json`` beside params.yaml, and the next stage
that reaches the server sends them and marks that run ``FAILED`` (tag
``tracking_lost``): no run stays ``RUNNING``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from ctx_core.config import Settings
from ctx_core.errors import UserError

#: MLflow's defaults retry a dead server for ~8 minutes (7 retries, backoff factor 2, 120 s timeout); a stage's
#: requests give up after ~3 s on a refused connection and 3 x 30 s on a silent one. A value already in the
#: environment wins.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
PENDING = ".ctx-tracking/pending"  # beside params.yaml: runs whose server went away, with their unsent metrics
CLOSE_TIMEOUT = 20.0  # seconds a finishing stage waits for its queued metrics to reach the server
RETRY_EVERY = 15.0  # seconds between tries to reach a lost server during the stage
SLOW_SEND = 5.0  # seconds a metrics send may take before another call first checks that the server answers


def tracking_uri(settings: Settings) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if settings.params.tracking.uri:
        return settings.params.tracking.uri
    return f"sqlite:///{settings.path('mlruns.db')}"


def unreachable_reason(uri: str, timeout: float = 5.0) -> str | None:
    """Why the MLflow server at ``uri`` does not answer ``/health``; ``None`` when it answers or is a local store."""
    if not uri.startswith(("http://", "https://")):
        return None
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered (an auth proxy may refuse /health): reachable
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any work, when ``uri`` is an MLflow server that does not answer.

    MLflow's client retries a dead server for minutes; a stage should instead
    say at once which server it could not reach and how to proceed.
    """
    reason = unreachable_reason(uri, timeout)
    if reason is not None:
        raise UserError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it (mlflow server ...), "
            "point MLFLOW_TRACKING_URI / tracking.uri at a running one, or set tracking.enabled: false"
        )


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


def warn(message: str) -> None:
    """One ``ctx: warning: ...`` line on stderr."""
    print(f"ctx: warning: {message}", file=sys.stderr, flush=True)


def is_outage(exc: BaseException) -> bool:
    """Whether a failed MLflow call means the server is gone or failing, not that it refused the request.

    A server that answers with a 4xx refused this request (a bad value, a
    deleted run): that is an error to raise, not an outage to wait out.
    """
    from mlflow.exceptions import MlflowException

    return not (isinstance(exc, MlflowException) and 400 <= exc.get_http_status_code() < 500)


class Row(NamedTuple):
    """One metric value: ``timestamp`` in ms since the epoch, ``step`` as MLflow records it."""

    key: str
    value: float
    timestamp: int
    step: int


class MetricSender:
    """Sends metric rows from a background thread, so a step never waits on the tracking server.

    :meth:`add` queues rows and returns at once. The thread sends the queue in
    batches of up to ``batch_size`` with ``send``. When a send fails and
    ``outage(exc)`` says the server is gone, it calls ``on_lost(exc, step)``
    once (``step``: the first unsent row's), keeps the rows and tries again
    every ``retry_every`` seconds, sending the backlog in order once the
    server answers (then ``on_back()``). Any other failure drops that batch and
    is raised by the next :meth:`add` (or left in :attr:`error` after
    :meth:`close`). :meth:`close` sends what it can within its timeout and
    returns the rows never sent.
    """

    def __init__(self, send: Callable[[list[Row]], None], on_lost: Callable[[BaseException, int], None],
                 outage: Callable[[BaseException], bool] = is_outage, on_back: Callable[[], None] = lambda: None,
                 retry_every: float = RETRY_EVERY, batch_size: int = 1000):
        self._send, self._on_lost, self._outage, self._on_back = send, on_lost, outage, on_back
        self.retry_every, self.batch_size = retry_every, batch_size
        self._queue: list[Row] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.lost: BaseException | None = None  # the failure that lost the server, while it is lost
        self._retry_at = 0.0  # monotonic time of the next try while lost
        self.sending_since: float | None = None  # monotonic start of the send in flight
        self.error: BaseException | None = None
        self.sent = 0

    def add(self, rows: list[Row]) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        with self._cond:
            if self._closing:
                raise RuntimeError("MetricSender.add after close")
            self._queue.extend(rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ctx-metric-sender", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> list[Row]:
        """Send what is queued (one more try if the server is lost), waiting at most ``timeout`` s; the rows left."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            return list(self._queue)

    def mark_lost(self, exc: BaseException) -> None:
        """Another call found the server gone: hold the queue until the next retry."""
        with self._cond:
            if self.lost is None:
                self.lost, self._retry_at = exc, time.monotonic() + self.retry_every

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    wait = 0.0 if self.lost is None else self._retry_at - time.monotonic()
                    if self._closing or (self._queue and wait <= 0):
                        break
                    self._cond.wait(None if self.lost is None else wait)
                batch, closing = self._queue[:self.batch_size], self._closing
            if not batch:
                if closing:
                    return
                continue
            if not self._try(batch) and closing:
                return

    def _try(self, batch: list[Row]) -> bool:
        self.sending_since = time.monotonic()
        try:
            self._send(batch)
        except Exception as exc:  # noqa: BLE001 - MLflow and requests raise many types; outage() sorts them
            if not self._outage(exc):
                with self._cond:
                    del self._queue[:len(batch)]
                    self.error = self.error or exc
                return True
            with self._cond:
                first, self.lost = self.lost is None, exc
                self._retry_at = time.monotonic() + self.retry_every
            if first:
                self._on_lost(exc, batch[0].step)
            return False
        finally:
            self.sending_since = None
        with self._cond:
            del self._queue[:len(batch)]
            self.sent += len(batch)
            back, self.lost = self.lost is not None, None
        if back:
            self._on_back()
        return True


class StageRun:
    """Thin handle on the active MLflow run; every method is a no-op when tracking is off.

    Metrics are queued for a :class:`MetricSender`. While the server is lost,
    :attr:`connected` is false and params, tags and artifacts are skipped (the
    run will be marked ``FAILED``); the stage itself goes on. ``pending``: the
    folder :meth:`finish` keeps a lost run's record in (see :func:`settle_pending`).
    """

    def __init__(self, run: Any | None, uri: str | None = None, stage: str = "", pending: Path | None = None):
        self.run = run
        self.run_id: str | None = run.info.run_id if run else None
        self.stage = stage
        self.pending = pending or Path(PENDING)
        self.lost_reason: str | None = None  # why the server was lost, while it is (one warning each time)
        self.incomplete = False  # something could not be logged: the run ends FAILED
        self._uri = uri
        self._sender: MetricSender | None = None
        self._warn_lock = threading.Lock()
        if run:
            import mlflow

            self._uri = uri or mlflow.get_tracking_uri()
            self._client = mlflow.MlflowClient(self._uri)
            self._sender = MetricSender(self._send, self._lost, on_back=self._back)

    @property
    def connected(self) -> bool:
        """A run is open and its server answers (as far as the last call knows)."""
        return self._sender is not None and self._sender.lost is None

    def log_params(self, params: dict[str, Any]) -> None:
        self._call_mlflow(lambda m: m.log_params({k: ("" if v is None else v) for k, v in params.items()}))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._sender is not None:
            now = int(time.time() * 1000)
            self._sender.add([Row(k, float(v), now, step or 0) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._call_mlflow(lambda m: m.set_tags({k: str(v) for k, v in tags.items()}))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._call_mlflow(lambda m: m.log_artifact(str(path), artifact_path=artifact_path))

    def link_resumed(self, interrupted_run_id: str | None) -> None:
        """Tag this run ``resumed_from_run_id``; mark the interrupted run ``KILLED`` if it was left ``RUNNING``."""
        if not interrupted_run_id or interrupted_run_id == self.run_id:
            return
        self.set_tags({"resumed_from_run_id": interrupted_run_id})

        def end_interrupted(_: Any) -> None:
            from mlflow.exceptions import MlflowException

            try:
                old = self._client.get_run(interrupted_run_id)
            except MlflowException as exc:
                if exc.get_http_status_code() == 404:
                    return  # deleted, or logged to another server
                raise
            if old.info.status == "RUNNING":  # its process died without ending it
                self._client.set_tag(interrupted_run_id, "resumed_by_run_id", self.run_id)
                self._client.set_terminated(interrupted_run_id, "KILLED")

        self._call_mlflow(end_interrupted)

    def _call_mlflow(self, call: Callable[[Any], None]) -> None:
        """``call(mlflow)`` unless the server is lost; an outage during it loses the server instead of raising."""
        if self._sender is None:
            return
        since = self._sender.sending_since
        if since is not None and time.monotonic() - since > SLOW_SEND:
            reason = unreachable_reason(self._uri or "", timeout=2.0)  # a hung server: don't queue behind it
            if reason is not None:
                self._sender.mark_lost(ConnectionError(reason))
        if self._sender.lost is not None:
            self._skip()
            return
        import mlflow

        try:
            call(mlflow)
        except Exception as exc:  # noqa: BLE001 - sorted by is_outage
            if not is_outage(exc):
                raise
            self._sender.mark_lost(exc)
            self._skip()

    def _send(self, rows: list[Row]) -> None:
        from mlflow.entities import Metric

        self._client.log_batch(self.run_id, metrics=[Metric(r.key, r.value, r.timestamp, r.step) for r in rows])

    def _lost(self, exc: BaseException, step: int | None) -> None:
        with self._warn_lock:
            if self.lost_reason is not None:
                return  # one warning per outage
            reason = unreachable_reason(self._uri or "", timeout=2.0) or type(exc).__name__
            where = f" at step {step}" if step else ""
            self.lost_reason = f"stopped answering{where}: {reason}"
        warn(f"MLflow tracking server {self._uri} stopped answering{where} ({reason}); the stage goes on without it. "
             f"Its metrics are kept in {self.pending}; the next stage that reaches the server sends them to run "
             f"{self.run_id} and marks it FAILED")

    def _back(self) -> None:
        with self._warn_lock:
            self.lost_reason = None
        print(f"ctx: MLflow tracking server {self._uri} answers again; the metrics it missed were sent",
              file=sys.stderr, flush=True)

    def _skip(self) -> None:
        self.incomplete = True
        if self._sender is not None and self._sender.lost is not None:
            self._lost(self._sender.lost, None)

    def finish(self, status: str) -> None:
        """End the run with ``status``; a run that could not log everything ends ``FAILED``.

        When the server does not answer, the rows it did not get, the reason
        and the status go to ``<pending>/<run id>.json`` for
        :func:`settle_pending` to send later.
        """
        if self._sender is None:
            return
        import mlflow

        unsent = self._sender.close()
        if not (self.incomplete or unsent or self._sender.lost is not None):
            try:
                mlflow.end_run(status)  # drops the run from this thread's active runs, then tells the server
            except Exception as exc:  # noqa: BLE001 - sorted by is_outage
                if not is_outage(exc):
                    raise
                self._lost(exc, None)  # only the status did not get through
            else:
                if self._sender.error is not None:
                    raise self._sender.error
                return
        else:
            status = "FAILED"
        record = {"uri": self._uri, "run_id": self.run_id, "stage": self.stage, "status": status,
                  "reason": self.lost_reason or "stopped answering", "rows": [list(r) for r in unsent]}
        self.pending.mkdir(parents=True, exist_ok=True)
        path = self.pending / f"{self.run_id}.json"
        path.write_text(json.dumps(record))
        if unreachable_reason(self._uri or "", timeout=2.0) is None:
            _settle(path, quiet=True)  # the server is back
        with _environ({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}):
            try:
                mlflow.end_run("FAILED")  # if still active: drop it here; the record ends it on the server
            except Exception:  # noqa: BLE001, S110 - the server is gone: the pending record ends the run later
                pass


def _settle(path: Path, quiet: bool = False) -> bool:
    """Send a pending record's rows to its run, tag it ``tracking_lost`` and end it (``FAILED`` when it missed
    anything); delete the record. ``False`` when the server still does not answer."""
    import mlflow
    from mlflow.entities import Metric

    record = json.loads(path.read_text())
    client = mlflow.MlflowClient(record["uri"])
    run_id = record["run_id"]
    try:
        client.log_batch(run_id, metrics=[Metric(*row) for row in record["rows"]])
        client.set_tag(run_id, "tracking_lost", record["reason"])
        client.set_terminated(run_id, record.get("status", "FAILED"))
    except Exception as exc:  # noqa: BLE001 - a record that cannot be settled now is kept for the next stage
        if is_outage(exc):
            if not quiet:
                warn(f"MLflow run {run_id} ({record['stage']}) could not be ended yet ({type(exc).__name__}); "
                     f"kept in {path}")
            return False
        warn(f"MLflow run {run_id} ({record['stage']}): {exc}; dropping {path}")
    path.unlink()
    if not quiet:
        print(f"ctx: MLflow run {run_id} ({record['stage']}) had lost its server ({record['reason']}); sent its "
              f"{len(record['rows'])} kept metric values and ended it {record.get('status', 'FAILED')}",
              file=sys.stderr)
    return True


def settle_pending(pending: Path, uri: str) -> None:
    """End the runs in ``pending`` that were logged to ``uri`` (see :meth:`StageRun.finish`)."""
    if not pending.is_dir():
        return
    for path in sorted(pending.glob("*.json")):
        try:
            same_server = json.loads(path.read_text()).get("uri") == uri
        except (OSError, ValueError):
            warn(f"unreadable pending tracking record {path}: delete it")
            continue
        if same_server:
            _settle(path)


@contextmanager
def _environ(values: dict[str, str], defaults: dict[str, str] | None = None, keep: tuple[str, ...] = ()) -> Iterator[None]:
    """Set ``values`` and, where unset, ``defaults`` in the environment for the block; restore those and ``keep`` after."""
    defaults = defaults or {}
    saved = {k: os.environ.get(k) for k in (*values, *defaults, *keep)}
    os.environ.update(values)
    os.environ.update({k: v for k, v in defaults.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
    pending = settings.path(PENDING)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; restore the
    # user's value afterwards so the next stage (in this process) resolves its
    # own store instead of inheriting ours.
    with _environ({}, defaults=HTTP_LIMITS, keep=("MLFLOW_TRACKING_URI",)):
        mlflow.set_tracking_uri(uri)
        settle_pending(pending, uri)
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
        run = StageRun(mlflow.start_run(run_name=stage, tags=tags), uri, stage, pending)
        try:
            yield run
        except BaseException:
            run.finish("FAILED")
            raise
        run.finish("FINISHED")
