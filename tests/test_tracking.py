"""MLflow tracking: runs land in results/ by default; a broken tracking URI never stops a job."""

from __future__ import annotations

import pytest

from maetok.tracking import Run


def test_run_logs_to_the_local_store_under_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAETOK_NO_MLFLOW")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "metrics.json").write_text("{}")
    with Run("ae/stage1", {"scale": "tiny", "stage": "test", "variant": "ae"}, {"optim": {"lr": 1e-3}}) as run:
        run.log_metrics({"loss": 0.5}, step=1)
        run.log_artifact(tmp_path / "metrics.json")
    import mlflow

    mlflow.set_tracking_uri("sqlite:///results/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["maetok"], filter_string="tags.variant = 'ae'")
    assert len(runs) == 1 and runs["params.optim.lr"][0] == "0.001" and runs["metrics.loss"][0] == 0.5
    assert list((tmp_path / "results" / "mlartifacts").rglob("metrics.json"))
    assert not (tmp_path / "mlruns").exists()


def test_unusable_tracking_uri_warns_and_carries_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAETOK_NO_MLFLOW")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    with pytest.warns(UserWarning, match="MLflow unavailable"):
        run = Run("x", {"stage": "test"})
    run.log_metrics({"loss": 1.0})
    run.end()
    assert not run.ok
