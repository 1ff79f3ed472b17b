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
    """A best-effort MLflow run: every call is a no-op (with one warning) once MLflow fails."""

    def __init__(self, name: str, tags: dict, params: dict | None = None, enabled: bool = True):
        self.ok = False
        self.run_id = None
        if not enabled or os.environ.get("MAETOK_NO_MLFLOW"):
            return
        try:
            import mlflow

            use_experiment(mlflow)
            self._mlflow = mlflow
            self._client = mlflow.MlflowClient()
            run = mlflow.start_run(run_name=name, tags=run_tags(tags))
            self.run_id = run.info.run_id
            self.ok = True
            if params:
                flat = {k: str(v)[:500] for k, v in _flatten(params).items()}
                for i in range(0, len(flat), 100):
                    mlflow.log_params(dict(list(flat.items())[i:i + 100]))
        except Exception as e:  # noqa: BLE001 - any tracking failure must not stop training
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        if self.ok or self.run_id is None:
            warnings.warn(f"MLflow unavailable ({type(e).__name__}: {e}); continuing without tracking. "
                          "Metrics JSON is still written; backfill later with `maetok import-mlflow`.", stacklevel=3)
        self.ok = False

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if not self.ok:
            return
        try:
            self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file; a JSON file is the job's metrics, so the run is also tagged with its path and
        sha256 (`maetok import-mlflow` then knows this JSON already has its run)."""
        if not self.ok:
            return
        try:
            if Path(path).suffix == ".json":
                self._mlflow.set_tags(source_tags(path))
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def end(self, status: str = "FINISHED") -> None:
        if not self.ok:
            return
        try:
            self._mlflow.end_run(status=status)
        except Exception as e:  # noqa: BLE001
            self._fail(e)
        self.ok = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.end("FAILED" if exc_type else "FINISHED")
        return False
