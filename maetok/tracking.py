"""MLflow tracking that never costs a job its results.

Each job writes its metrics JSON first (the source of truth for tables and figures),
then logs to MLflow. If MLflow is unreachable or misconfigured, a warning is printed
and the job carries on; `maetok import-mlflow` backfills runs from the JSONs later.

Tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db (MLflow 3's file
store is deprecated). Every run carries the tags scale, stage, variant and tables (empty
when unknown). `tables` lists ids between commas (`,table2,table4,`), so one table's runs are
one filter away: `tags.tables LIKE '%,table4,%'` (`table1` does not match `table10`).
Snakemake rules pass the tags only the workflow knows (the tables a job feeds, the
scale) in $MAETOK_TAGS, a JSON object; tags the code sets itself win over it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
import warnings
from pathlib import Path

EXPERIMENT = "maetok"
DEFAULT_STORE = Path("results") / "mlflow.db"
DEFAULT_URI = f"sqlite:///{DEFAULT_STORE}"
ARTIFACTS = Path("results") / "mlartifacts"
TAG_KEYS = ("scale", "stage", "variant", "tables")
TAGS_ENV = "MAETOK_TAGS"
SOURCE_TAG = "maetok.source"  # the metrics JSON of the run (logged live, or imported from it)
SOURCE_SHA_TAG = "maetok.source_sha256"


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the local store as an absolute path (MLflow caches one database
    engine per URI string, so a relative one would stick to the first working directory)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE.resolve()}"


def _create_local_experiment(mlflow) -> None:
    """With the default local store, keep run artifacts under results/ (not ./mlruns)."""
    Path("results").mkdir(exist_ok=True)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=ARTIFACTS.resolve().as_uri())
        except mlflow.exceptions.MlflowException:
            pass  # another job created it first


@contextlib.contextmanager
def _store_lock(uri: str):
    """Serialise first use of a sqlite store: MLflow migrates a fresh database on first
    connect, and concurrent migrations by parallel jobs lose runs and can leave the schema
    half-migrated (seen with 4 jobs starting at once)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri[len("sqlite:///"):] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def use_experiment(mlflow) -> str:
    """Point `mlflow` at the tracking store and the maetok experiment; returns the experiment id."""
    local = not os.environ.get("MLFLOW_TRACKING_URI")  # read first: set_tracking_uri exports it
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        # MLflow's defaults retry with back-off for minutes (250 s on a closed port) before a
        # job could warn and go on; fail fast unless the user chose otherwise.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):
        if local:
            _create_local_experiment(mlflow)
        return mlflow.set_experiment(EXPERIMENT).experiment_id


def run_tags(tags: dict) -> dict:
    """`tags` with $MAETOK_TAGS filling what the caller left empty, and every TAG_KEYS key present."""
    try:
        env = json.loads(os.environ.get(TAGS_ENV) or "{}")
    except json.JSONDecodeError:
        warnings.warn(f"${TAGS_ENV} is not a JSON object; ignored", stacklevel=2)
        env = {}
    merged = {k: "" for k in TAG_KEYS} | {str(k): str(v) for k, v in env.items()}
    merged.update({k: str(v) for k, v in tags.items() if v not in (None, "")})
    return merged


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_tags(path: str | Path) -> dict:
    """Tags naming the metrics JSON a run belongs to (path as given, content hash)."""
    return {SOURCE_TAG: str(path), SOURCE_SHA_TAG: sha256(path)}


class Run:
    """A best-effort MLflow run: every call is a no-op (with one warning) once MLflow fails.

    The run opens in a background thread: importing MLflow and opening the store take ~2.5 s of
    every job's start-up on a laptop CPU, now spent while the job loads its data and builds its
    networks. Every later call waits for the opening first, and MLflow is used only through a
    client and the run's id (MLflow's fluent "active run" is per thread).
    """

    def __init__(self, name: str, tags: dict, params: dict | None = None, enabled: bool = True):
        self.ok = False
        self.run_id = None
        self._opening = None
        self._error = None
        if not enabled or os.environ.get("MAETOK_NO_MLFLOW"):
            return
        self._opening = threading.Thread(target=self._open, args=(name, run_tags(tags), params),
                                         name="mlflow-run", daemon=True)
        self._opening.start()

    def _open(self, name: str, tags: dict, params: dict | None) -> None:
        try:
            import mlflow
            from mlflow.entities import Param
            from mlflow.tracking.context.registry import resolve_tags

            experiment_id = use_experiment(mlflow)
            client = mlflow.MlflowClient()
            # resolve_tags adds what mlflow.start_run would: user, source, git commit
            run = client.create_run(experiment_id, run_name=name, tags=resolve_tags(tags))
            self._client, self.run_id = client, run.info.run_id
            self.ok = True
            if params:
                flat = [Param(k, str(v)[:500]) for k, v in _flatten(params).items()]
                for i in range(0, len(flat), 100):
                    client.log_batch(self.run_id, params=flat[i:i + 100])
        except Exception as e:  # noqa: BLE001 - any tracking failure must not stop the job
            self._error = e

    def _ready(self) -> bool:
        """Wait for the run to open (warning once if it failed); whether it can be logged to."""
        if self._opening is not None:
            self._opening.join()
            self._opening = None
            if self._error is not None:
                self._fail(self._error)
        return self.ok

    def _fail(self, e: Exception) -> None:
        if self.ok or self.run_id is None:
            warnings.warn(f"MLflow unavailable ({type(e).__name__}: {e}); continuing without tracking. "
                          "Metrics JSON is still written; backfill later with `maetok import-mlflow`.", stacklevel=4)
        self.ok = False

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if not self._ready():
            return
        try:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step or 0)
                                                         for k, v in metrics.items()])
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file; a JSON file is the job's metrics, so the run is also tagged with its path and
        sha256 (`maetok import-mlflow` then knows this JSON already has its run)."""
        if not self._ready():
            return
        try:
            if Path(path).suffix == ".json":
                from mlflow.entities import RunTag

                self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in source_tags(path).items()])
            self._client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def end(self, status: str = "FINISHED") -> None:
        if not self._ready():
            return
        try:
            self._client.set_terminated(self.run_id, status=status)
        except Exception as e:  # noqa: BLE001
            self._fail(e)
        self.ok = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.end("FAILED" if exc_type else "FINISHED")
        return False
