"""MLflow of the micro Table 4 run: an `mlflow server` on its store answers the REST API with the
jobs' runs (tags, params, metrics), and is stopped by its process group; `maetok import-mlflow`
finds every metrics JSON of the run already logged (no duplicates)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

from conftest import BIN  # tests/workflow/conftest.py

TABLE4_STAGES = {"train_standin", "tokenizer_stage1", "tokenizer_stage2", "eval_reconstruction"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None, timeout: float = 10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def _wait_health(base: str, proc: subprocess.Popen, log, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited early:\n{log.read_text()[-3000:]}"
        try:
            if _get(f"{base}/health", timeout=2).strip() == "OK":
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server not healthy after {limit} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, limit: float = 30) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_mlflow_server_serves_the_micro_runs(micro_table4, tmp_path):
    port, log = _free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri",
                                 f"sqlite:///{micro_table4}/results/mlflow.db", "--artifacts-destination",
                                 str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_health(base, proc, log)
        exp = json.loads(_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=maetok"))
        exp_id = exp["experiment"]["experiment_id"]
        found = json.loads(_get(f"{base}/api/2.0/mlflow/runs/search", {
            "experiment_ids": [exp_id], "filter": "tags.tables LIKE '%,table4,%'", "max_results": 100}))
    finally:
        _stop(proc)
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.returncode is not None and not _group_alive(proc.pid)

    runs = [{"tags": {t["key"]: t["value"] for t in r["data"].get("tags", [])},
             "params": {p["key"]: p["value"] for p in r["data"].get("params", [])},
             "metrics": {m["key"]: m["value"] for m in r["data"].get("metrics", [])},
             "status": r["info"]["status"]} for r in found["runs"]]
    assert {r["tags"]["stage"] for r in runs} == TABLE4_STAGES
    assert all(r["tags"]["scale"] == "tiny" and r["status"] == "FINISHED" for r in runs)
    recon = {r["tags"]["variant"]: r for r in runs if r["tags"]["stage"] == "eval_reconstruction"}
    # at tiny maetok_main is maetok: Table 4's row reads maetok's run, which is tagged with every table
    # either variant feeds
    assert sorted(recon) == ["maetok", "maetok_512"]
    assert {",table1,", ",table2,", ",table4,", ",table12,"} <= {f",{t}," for t in
                                                               recon["maetok"]["tags"]["tables"].split(",")}
    assert recon["maetok_512"]["tags"]["tables"] == ",table3,table4,table11,"
    for r in recon.values():
        assert r["metrics"]["val_rfid"] >= 0 and r["tags"]["maetok.source"].endswith("recon.json")
    train = [r for r in runs if r["tags"]["stage"] == "tokenizer_stage1"]
    assert sorted(r["tags"]["variant"] for r in train) == ["maetok", "maetok_512"] and all(r["params"] for r in train)


def test_import_mlflow_finds_the_live_runs_of_the_micro_run(micro_table4, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(micro_table4 / "results", work / "results", ignore=shutil.ignore_patterns("mlartifacts"))
    env = {k: v for k, v in os.environ.items() if k not in ("MAETOK_NO_MLFLOW", "MLFLOW_TRACKING_URI")}
    r = subprocess.run([str(BIN / "maetok"), "import-mlflow", "--results", "results/tiny"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 imported" in r.stdout and "0 unreadable" in r.stdout, r.stdout
