"""The MLflow UI, as a user sees it in a browser: runs logged the way jobs log them
(maetok.tracking.Run) appear in the `maetok` experiment's runs table, not in MLflow 3's GenAI /
traces view, at the address `make mlflow-ui` prints; one table's filter keeps `table1` apart from
`table10`; a run's page shows its tags. Drives a real `mlflow server` with headless Chromium
(.ci/run installs it)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from maetok.tracking import KIND, KIND_TAG
from maetok.utils.mlflow_ui import experiment_id, runs_url

BIN = Path(sys.executable).parent
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

# Runs as jobs tag them: two feed Table 1, one only Table 10 (whose id contains "table1").
RUNS = textwrap.dedent("""
    import json, os, mlflow
    from maetok.tracking import Run
    jobs = [("maetok", "eval_reconstruction", ",table1,table6,", 1.9),
            ("ae", "eval_reconstruction", ",table1,table5,", 2.4),
            ("maetok_main", "eval_generation", ",table10,", 3.1)]
    for variant, stage, tables, value in jobs:
        os.environ["MAETOK_TAGS"] = json.dumps({"scale": "tiny", "tables": tables})
        with Run(f"{variant}/{stage}", {"stage": stage, "variant": variant}, {"seed": 0}) as run:
            run.log_metrics({"rfid": value})
    # A store whose experiment predates the kind tag (or lives on a server): the next run marks it.
    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.abspath("old.db")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.create_experiment("maetok")
    with Run("maetok/eval_reconstruction", {"stage": "eval_reconstruction", "variant": "maetok"}) as run:
        run.log_metrics({"rfid": 1.0})
""")


def _experiment_tags(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT t.key, t.value FROM experiment_tags t JOIN experiments e "
                              "ON e.experiment_id = t.experiment_id WHERE e.name = 'maetok'").fetchall())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_health(base: str, proc: subprocess.Popen, log: Path, limit: float = 90) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited early:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.read().decode().strip() == "OK":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server not healthy after {limit} s:\n{log.read_text()[-3000:]}")


def _page_text(url: str, profile: Path, expect: str, tries: int = 3) -> str:
    """The visible text of `url` after the page's scripts ran (headless Chromium, a fresh profile, so
    no GenAI / Model training choice remembered from an earlier visit); retried while `expect` is absent."""
    text = ""
    for i in range(tries):
        r = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
                            f"--virtual-time-budget={15000 * (i + 1)}", "--dump-dom", url],
                           capture_output=True, text=True, timeout=120)
        html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", r.stdout, flags=re.S)
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
        if expect in text:
            break
    return text


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (`apt-get install chromium`; .ci/run does)")
def test_runs_table_in_the_browser(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MAETOK_NO_MLFLOW", "MLFLOW_TRACKING_URI", "MAETOK_TAGS")}
    r = subprocess.run([sys.executable, "-c", RUNS], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    store = tmp_path / "results" / "mlflow.db"
    # a new experiment is created as a training experiment; one created without the tag gets it
    assert _experiment_tags(store).get(KIND_TAG) == KIND == "custom_model_development"
    assert _experiment_tags(tmp_path / "old.db").get(KIND_TAG) == KIND

    port, log = _free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=tmp_path,
                                env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_health(base, proc, log)
        exp = experiment_id(store)
        assert exp is not None

        # the address `make mlflow-ui` prints, with Table 1's filter (docs/tracking.md)
        text = _page_text(runs_url(base, exp, "table1"), tmp_path / "chrome", "ae/eval_reconstruction")
        assert "maetok/eval_reconstruction" in text and "ae/eval_reconstruction" in text, text[:2000]
        assert "maetok_main/eval_generation" not in text, "the table1 filter matched a table10 run"
        assert "Token Usage" not in text and "Tokens per Trace" not in text, "opened the GenAI overview"
        # the model-training view (its side bar has the model registry; the GenAI one has playground, prompts)
        assert "Model registry" in text and "Playground" not in text, f"not the model-training view:\n{text[:2000]}"

        # one run's page lists the tags jobs set
        with sqlite3.connect(store) as c:
            run_id = c.execute("SELECT run_uuid FROM runs WHERE name = 'maetok/eval_reconstruction'").fetchone()[0]
        page = f"{base}/#/experiments/{exp}/runs/{run_id}?workflowType=machine_learning"
        text = _page_text(page, tmp_path / "chrome", ",table1,table6,")
        for key, value in (("tables", ",table1,table6,"), ("stage", "eval_reconstruction"), ("variant", "maetok"),
                           ("scale", "tiny"), ("rfid", "1.9")):
            assert re.search(rf"\b{key} :? ?{value}", text), f"{key} = {value} not on the run page:\n{text[:2000]}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
