"""MLflow tracking: runs land in results/ by default; a broken tracking URI never stops a job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maetok.cli import main
from maetok.commands.mlflow_import import import_results
from maetok.tracking import JOB_TAG, PARAMS_CHANGED_TAG, Run, run_tags


def test_run_logs_to_the_local_store_under_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAETOK_NO_MLFLOW")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # = unset; restored after the test (MLflow exports it)
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
    with pytest.warns(UserWarning, match="MLflow unavailable") as caught:
        run = Run("x", {"stage": "test"})  # opens in the background; the first call reports the failure
        run.log_metrics({"loss": 1.0})
        run.end()
    assert not run.ok and len(caught) == 1


def test_run_tags_fill_blanks_from_the_workflow_and_keep_the_callers(monkeypatch):
    monkeypatch.setenv("MAETOK_TAGS", json.dumps({"scale": "tiny", "tables": ",table4,", "variant": "from-env"}))
    tags = run_tags({"stage": "eval_reconstruction", "variant": "maetok", "tables": ""})
    assert tags == {"scale": "tiny", "stage": "eval_reconstruction", "variant": "maetok", "tokenizer": "",
                    "tables": ",table4,"}
    monkeypatch.delenv("MAETOK_TAGS")
    assert run_tags({"stage": "x"}) == {"scale": "", "stage": "x", "variant": "", "tokenizer": "", "tables": ""}


def _store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAETOK_NO_MLFLOW")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # = unset; restored after the test (MLflow exports it)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/results/mlflow.db")
    return mlflow


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def test_import_mlflow_backfills_missing_runs_once(tmp_path, monkeypatch):
    mlflow = _store(tmp_path, monkeypatch)
    res = tmp_path / "results" / "tiny"
    recon = _write(res / "tokenizer/maetok_main/recon.json", {"rfid": 12.5, "psnr": 20.0, "ood": {"rfid": 30.0},
                                                                "variant": "maetok_main"})
    _write(res / "tokenizer/ae/stage1.json", {"steps": 4, "seconds": 1.5, "final": {"loss": 0.25}})
    _write(res / "generator/ae/sit_l/nocfg.json", {"gfid": 80.0, "is": 2.0, "tokenizer": "ae", "variant": "sit_l"})
    # Table 12's sweep: maetok_main + sit_xl rows read maetok + sit_l's runs at tiny (the same run there)
    _write(res / "generator/maetok/sit_l/cfg1.8_0-0.7.json", {"gfid": 9.0, "is": 3.0})
    _write(res / "aux_models/evaluator.json", {"test_acc": 0.5})
    (res / "analysis/ae").mkdir(parents=True)
    (res / "analysis/ae/gmm.json").write_text("")  # a job killed while writing: reported, not imported
    # Live runs: one logged its JSON (tagged with the JSON's sha256), one only its metrics.
    monkeypatch.setenv("MAETOK_TAGS", json.dumps({"scale": "tiny", "tables": ",table4,"}))
    with Run("r", {"stage": "eval_reconstruction", "variant": "maetok_main"}) as run:
        run.log_metrics({"rfid": 12.5})
        run.log_artifact(recon)
    monkeypatch.delenv("MAETOK_TAGS")
    with Run("s", {"scale": "tiny", "stage": "train_standin", "variant": "evaluator"}) as live:
        live.log_metrics({"test_acc": 0.5})

    with pytest.warns(UserWarning, match="gmm.json: not a JSON object"):
        counts = import_results(res, "tiny")
    assert counts == {"imported": 3, "already imported": 1, "live run adopted": 1, "unreadable": 1}
    runs = mlflow.search_runs(experiment_names=["maetok"])
    assert len(runs) == 5, runs[["tags.stage", "tags.variant", "tags.maetok.source", "status"]].to_string()
    gen = mlflow.search_runs(experiment_names=["maetok"], filter_string="tags.stage = 'eval_generation'")
    assert set(gen["tags.variant"]) == {"sit_l"}
    gen = gen.set_index("tags.tokenizer")
    assert gen.loc["ae", "metrics.gfid"] == 80.0
    assert gen.loc["ae", "tags.tables"] == ",table1,table6,"  # the tables with (ae, sit_l) rows
    assert {",table1,", ",table2,", ",table12,"} <= {f",{t}," for t in gen.loc["maetok", "tags.tables"].split(",")}
    assert gen.loc["maetok", "metrics.gfid"] == 9.0
    tok = mlflow.search_runs(experiment_names=["maetok"], filter_string="tags.stage = 'tokenizer_stage1'")
    assert tok["metrics.final.loss"][0] == 0.25 and tok["tags.scale"][0] == "tiny"
    table4 = mlflow.search_runs(experiment_names=["maetok"], filter_string="tags.tables LIKE '%,table4,%'")
    assert list(table4["tags.variant"]) == ["maetok_main"]
    adopted = mlflow.get_run(live.run_id).data.tags
    assert adopted["maetok.source"].endswith("aux_models/evaluator.json")

    with pytest.warns(UserWarning):
        again = import_results(res, "tiny")
    assert again == {"imported": 0, "already imported": 5, "live run adopted": 0, "unreadable": 1}
    assert len(mlflow.search_runs(experiment_names=["maetok"])) == 5

    recon.write_text(json.dumps({"rfid": 11.0}))  # a rerun wrote new metrics: a new run
    with pytest.warns(UserWarning):
        assert import_results(res, "tiny")["imported"] == 1


def test_import_mlflow_cli_reports_a_missing_results_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["import-mlflow", "--results", "results/nope"]) == 2
    assert "results/nope: no such results directory" in capsys.readouterr().err


def test_a_recorded_run_is_continued_and_an_orphan_of_another_key_killed(tmp_path, monkeypatch):
    """What a resumed training job does (maetok/train/loop.py): the run its checkpoint directory records
    is continued (RUNNING again, steps already logged skipped, only new params added); a rerun with
    another run key starts a new run, and the old one, left RUNNING by a killed process, ends KILLED."""
    mlflow = _store(tmp_path, monkeypatch)
    record, tags = tmp_path / "ckpt" / "mlflow_run.json", {"stage": "test", JOB_TAG: "job-a"}
    first = Run("a", tags, {"optim": {"steps": 3}}, record=record, run_key="k1")
    for step in (1, 2, 3):
        first.log_metrics({"loss": float(step)}, step)
    first.end("KILLED")
    again = Run("a", tags, {"optim": {"steps": 5}, "seed": 0}, record=record, run_key="k1")
    again.log_metrics({"loss": 0.0}, 3)   # already in the history: skipped
    again.log_metrics({"loss": 4.0}, 4)
    assert again.run_id == first.run_id and again.continued and again.logged_step == 3
    assert mlflow.get_run(again.run_id).info.status == "RUNNING"
    run = mlflow.get_run(again.run_id)
    assert run.data.params == {"optim.steps": "3", "seed": "0"}   # MLflow never changes a param: recorded apart
    assert json.loads(run.data.tags[PARAMS_CHANGED_TAG]) == {"optim.steps": ["3", "5"]}
    history = mlflow.MlflowClient().get_metric_history(again.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]

    other = Run("a", tags, {"optim": {"steps": 5}}, record=record, run_key="k2")   # another config
    other.log_metrics({"loss": 1.0}, 1)
    assert other.run_id != again.run_id and not other.continued
    assert mlflow.get_run(again.run_id).info.status == "KILLED"   # the orphan of the old key
    assert json.loads(record.read_text()) == {"run_id": other.run_id, "run_key": "k2"}
    other.end()
    assert {r.info.status for r in mlflow.search_runs(experiment_names=["maetok"], output_format="list")} == \
        {"KILLED", "FINISHED"}



def test_eval_generation_run_has_params_its_json_and_the_sample_grid(tmp_path, monkeypatch):
    """A user opening an eval_generation run finds the evaluation settings, the metrics JSON and the
    grid of the samples it scored (written beside the .npz by sample_generator)."""
    import dataclasses

    import numpy as np

    from maetok import config as C
    from maetok.eval import generation

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAETOK_NO_MLFLOW")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    samples = tmp_path / "samples" / "cfg.npz"
    samples.parent.mkdir()
    np.savez(samples, images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.arange(4))
    samples.with_suffix(".png").write_bytes(b"\x89PNG\r\n")
    monkeypatch.setattr(generation, "fidelity_metrics", lambda *a, **k: {
        "fid": 3.0, "isc_mean": 2.0, "isc_std": 0.1, "precision": 0.5, "recall": 0.4})
    monkeypatch.setattr(generation, "load_samples", lambda p: (np.zeros((4, 32, 32, 3), np.uint8), np.arange(4)))
    cfg = dataclasses.replace(C.load_params().scales["tiny"].evaluation, feature_network="inception")
    generation.eval_generation(samples, tmp_path, cfg, None, tmp_path / "cfg.json", tmp_path / "fid",
                               {"scale": "tiny", "variant": "sit_l", "tokenizer": "ae"}, seed=3)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/results/mlflow.db")  # absolute: MLflow caches engines per URI
    run = mlflow.search_runs(experiment_names=["maetok"], filter_string="tags.stage = 'eval_generation'")
    assert len(run) == 1 and run["params.seed"][0] == "3" and run["params.feature_network"][0] == "inception"
    assert run["metrics.gfid"][0] == 3.0 and run["tags.tokenizer"][0] == "ae"
    artifacts = {p.name for p in (tmp_path / "results" / "mlartifacts").rglob("*") if p.is_file()}
    assert {"cfg.json", "cfg.png"} <= artifacts


def test_a_run_whose_logging_failed_still_ends(tmp_path, monkeypatch):
    """A transient store error (e.g. a locked sqlite database) stops the logging, not the run's end:
    a run must never stay RUNNING."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAETOK_NO_MLFLOW")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    run = Run("ae/stage1", {"scale": "tiny", "stage": "test", "variant": "ae"})
    assert run._ready()

    def locked(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(run._client, "log_batch", locked)
    with pytest.warns(UserWarning, match="database is locked"):
        run.log_metrics({"loss": 0.5}, step=1)
    run.end("FINISHED")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/results/mlflow.db")  # absolute: MLflow caches engines per URI
    assert mlflow.get_run(run.run_id).info.status == "FINISHED"


def test_loss_window_mean_after_a_resume_mid_window():
    """A preemption checkpoint can fall inside a logging window: the resumed window's mean is over
    the steps it holds, not over log_every."""
    import torch

    from maetok.train.loop import _Meter

    meter = _Meter(4, True)
    assert meter.add({"loss": torch.tensor(1.0)}, 3) is None   # resumed at step 2
    assert meter.add({"loss": torch.tensor(3.0)}, 4) == {"loss": 2.0}
    for done in range(5, 8):
        assert meter.add({"loss": torch.tensor(float(done))}, done) is None
    assert meter.add({"loss": torch.tensor(8.0)}, 8) == {"loss": 6.5}
