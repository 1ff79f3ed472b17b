"""MLflow tracking that never costs a job its results.

Each job writes its metrics JSON first (the source of truth for tables and figures),
then logs to MLflow. If MLflow is unreachable or misconfigured, a warning is printed
and the job carries on; `maetok import-mlflow` backfills runs from the JSONs later.

Tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db (MLflow 3's file
store is deprecated). Runs are tagged with scale, stage, variant and tables.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

EXPERIMENT = "maetok"
DEFAULT_URI = "sqlite:///results/mlflow.db"
ARTIFACTS = Path("results") / "mlartifacts"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def _create_local_experiment(mlflow) -> None:
    """With the default local store, keep run artifacts under results/ (not ./mlruns)."""
    Path("results").mkdir(exist_ok=True)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=ARTIFACTS.resolve().as_uri())
        except mlflow.exceptions.MlflowException:
            pass  # another job created it first


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Run:
    """A best-effort MLflow run: every call is a no-op (with one warning) once MLflow fails."""

    def __init__(self, name: str, tags: dict, params: dict | None = None, enabled: bool = True):
        self.ok = False
        self.run_id = None
        if not enabled or os.environ.get("MAETOK_NO_MLFLOW"):
            return
        try:
            import mlflow

            uri = tracking_uri()
            mlflow.set_tracking_uri(uri)
            if uri == DEFAULT_URI:
                _create_local_experiment(mlflow)
            mlflow.set_experiment(EXPERIMENT)
            self._mlflow = mlflow
            self._client = mlflow.MlflowClient()
            run = mlflow.start_run(run_name=name, tags={k: str(v) for k, v in tags.items()})
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
        if not self.ok:
            return
        try:
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
