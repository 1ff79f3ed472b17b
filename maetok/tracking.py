"""MLflow tracking that never costs a job its results.

Each job writes its metrics JSON first (the source of truth for tables and figures),
then logs to MLflow. If MLflow is unreachable or misconfigured, a warning is printed
and the job carries on; `maetok import-mlflow` backfills runs from the JSONs later.

Tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db (MLflow 3's file
store is deprecated). Every run carries the tags scale, stage, variant, tokenizer and tables
(empty when unknown). `tables` lists ids between commas (`,table2,table4,`), so one table's runs are
one filter away: `tags.tables LIKE '%,table4,%'` (`table1` does not match `table10`).
Snakemake rules pass the tags only the workflow knows (the tables a job feeds, the
scale) in $MAETOK_TAGS, a JSON object; tags the code sets itself win over it.

A training job is one run from its first attempt to its last, whatever stops it in between
(`Run`'s `record`; maetok/train/loop.py): the run id is kept in the job's checkpoint directory.
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

from maetok.utils.io import write_json

EXPERIMENT = "maetok"
DEFAULT_STORE = Path("results") / "mlflow.db"
DEFAULT_URI = f"sqlite:///{DEFAULT_STORE}"
ARTIFACTS = Path("results") / "mlartifacts"
TAG_KEYS = ("scale", "stage", "variant", "tokenizer", "tables")
TAGS_ENV = "MAETOK_TAGS"
SOURCE_TAG = "maetok.source"  # the metrics JSON of the run (logged live, or imported from it)
SOURCE_SHA_TAG = "maetok.source_sha256"
JOB_TAG = "maetok.job"            # the job a training run belongs to (its output file)
RUN_KEY_TAG = "maetok.run_key"    # the identity of the training run (maetok.train.checkpoint.run_key)
PARAMS_CHANGED_TAG = "maetok.params_changed"  # params edited between the attempts of one run


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the local store as an absolute path (MLflow caches one database
    engine per URI string, so a relative one would stick to the first working directory)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE.resolve()}"


# MLflow 3 UIs read this tag to open an experiment on its runs table ("custom_model_development", the
# UI's "Machine learning" kind) rather than its GenAI traces view; later ones follow a global GenAI /
# Model training switch instead, which the address `make mlflow-ui` prints sets (maetok/utils/mlflow_ui.py).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def _create_local_experiment(mlflow) -> None:
    """With the default local store, keep run artifacts under results/ (not ./mlruns)."""
    Path("results").mkdir(exist_ok=True)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=ARTIFACTS.resolve().as_uri(),
                                     tags={KIND_TAG: KIND})
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
        experiment = mlflow.set_experiment(EXPERIMENT)
        if KIND_TAG not in experiment.tags:  # created by an older version, or on a server: mark it once
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
        return experiment.experiment_id


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

    A training job is one run however often it is stopped and resumed. With `record` (a JSON file
    in the job's checkpoint directory) the run id travels with the checkpoints: a rerun whose
    `run_key` matches continues that run (status RUNNING again) and skips the steps its metric
    history already holds (`logged_step`), so every step is logged once and the curves are whole.
    Otherwise it starts a new run and writes the record. Any run of the same job (tag JOB_TAG)
    still RUNNING, left by a killed process, is then marked KILLED.
    """

    def __init__(self, name: str, tags: dict, params: dict | None = None, enabled: bool = True,
                 record: str | Path | None = None, run_key: str = ""):
        self.ok = False
        self.run_id = None
        self.continued = False
        self.logged_step = -1   # a continued run: steps up to this one are already in its metric history
        self._opening = None
        self._error = None
        if not enabled or os.environ.get("MAETOK_NO_MLFLOW"):
            return
        self._opening = threading.Thread(target=self._open, args=(name, run_tags(tags), params, record, run_key),
                                         name="mlflow-run", daemon=True)
        self._opening.start()

    def _open(self, name: str, tags: dict, params: dict | None, record: str | Path | None, run_key: str) -> None:
        try:
            import mlflow
            from mlflow.tracking.context.registry import resolve_tags

            experiment_id = use_experiment(mlflow)
            client = mlflow.MlflowClient()
            run_id = _recorded_run(client, record, run_key) if record else None
            if run_id is None:
                # resolve_tags adds what mlflow.start_run would: user, source, git commit
                run_id = client.create_run(experiment_id, run_name=name, tags=resolve_tags(tags)).info.run_id
            else:
                self.continued = True
                client.update_run(run_id, status="RUNNING")
                self.logged_step = _last_step(client, run_id)
            self._client, self.run_id = client, run_id
            self.ok = True
            if record and not self.continued:
                _write_record(record, run_id, run_key)
            if tags.get(JOB_TAG):
                _kill_orphans(client, experiment_id, tags[JOB_TAG], run_id)
            self._log_params_and_tags(params, tags if self.continued else {})
        except Exception as e:  # noqa: BLE001 - any tracking failure must not stop the job
            self._error = e

    def _log_params_and_tags(self, params: dict | None, tags: dict) -> None:
        """The params (all of them for a new run; for a continued one those it lacks) and `tags`. A
        continued run keeps its first value of a param (MLflow never changes one); a bookkeeping
        setting edited between attempts (e.g. more steps) is recorded in the tag PARAMS_CHANGED_TAG."""
        from mlflow.entities import Param, RunTag

        flat = {k: str(v)[:500] for k, v in _flatten(params or {}).items()}
        old = self._client.get_run(self.run_id).data.params if self.continued else {}
        changed = {k: [old[k], v] for k, v in flat.items() if k in old and old[k] != v}
        new = [Param(k, v) for k, v in flat.items() if k not in old]
        tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
        if changed:
            tag_list.append(RunTag(PARAMS_CHANGED_TAG, json.dumps(changed, sort_keys=True)[:5000]))
        for i in range(0, max(len(new), len(tag_list)), 100):
            self._client.log_batch(self.run_id, params=new[i:i + 100], tags=tag_list[i:i + 100])

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
        """Log `metrics` at `step` (0 if None); a continued run skips the steps it already holds."""
        if not self._ready() or (step is not None and step <= self.logged_step):
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
        """Terminate the run, also after a logging call failed (a run must never stay RUNNING)."""
        self._ready()
        if self.run_id is None or getattr(self, "_client", None) is None or getattr(self, "_ended", False):
            return
        self._ended = True
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


def _recorded_run(client, record: str | Path, run_key: str) -> str | None:
    """The id of the run `record` names, if it is of this `run_key` and still in the store."""
    try:
        rec = json.loads(Path(record).read_text())
        run_id = rec["run_id"] if rec.get("run_key") == run_key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - another store (tracking URI changed), or a deleted run
        return None
    return run_id if run.info.lifecycle_stage == "active" else None


def _write_record(record: str | Path, run_id: str, run_key: str) -> None:
    try:
        write_json(record, {"run_id": run_id, "run_key": run_key})
    except OSError as e:
        warnings.warn(f"cannot record the MLflow run in {record} ({e}); a resumed job will start a new run",
                      stacklevel=2)


def _last_step(client, run_id: str) -> int:
    """The largest step in the run's metric history (-1 if it has none)."""
    keys = client.get_run(run_id).data.metrics
    return max((m.step for key in keys for m in client.get_metric_history(run_id, key)), default=-1)


def _kill_orphans(client, experiment_id: str, job: str, keep: str) -> None:
    """Mark KILLED every run of `job` other than `keep` that is still RUNNING: a process killed
    outright (SIGKILL, out of memory) cannot end its own run."""
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        if run.info.run_id != keep and run.data.tags.get(JOB_TAG) == job:
            client.set_terminated(run.info.run_id, status="KILLED")
