"""A stand-in job runs in the shared training loop without checkpoints: a stop signal ends it (its MLflow run
KILLED, nothing written), and a complete run logs its config, loss, metrics and metrics JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_generator import StopAfter  # tests/train is on sys.path (rootdir-relative imports)

from maetok import config as C
from maetok.train import standins
from maetok.train.loop import PREEMPTED_EXIT, Preempted


def test_standin_job_stops_without_checkpoint_then_logs_a_complete_run(tmp_path, tiny_data, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("MAETOK_NO_MLFLOW")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)   # restored after the test (MLflow exports it)
    cfg = dataclasses.replace(C.load_params().active.standins, teacher_steps=4, batch_size=32)
    out = tmp_path / "aux" / "teacher_clip.safetensors"

    def job(**kw):
        return standins.StandinJob(role="teacher-clip", data_dir=str(tiny_data), out=str(out), seed=0, scale="tiny",
                                   progress=False, **kw)

    with pytest.raises(Preempted, match="stopped by a signal at step 2; this job keeps no checkpoints") as stopped:
        standins.run(cfg, job(stop=StopAfter(2)))
    assert stopped.value.code == PREEMPTED_EXIT and not out.exists()
    metrics = standins.run(cfg, job())
    assert json.loads(out.with_suffix(".json").read_text()) == metrics and 0 <= metrics["test_acc"] <= 1

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], order_by=["start_time"])
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"]
    run = runs[-1]
    assert run.data.tags["stage"] == "train_standin" and run.data.tags["variant"] == "teacher-clip"
    assert run.data.tags["scale"] == "tiny"
    assert run.data.params["teacher_steps"] == "4" and run.data.params["seed"] == "0"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    assert run.data.metrics["test_acc"] == metrics["test_acc"]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["teacher_clip.json"]
