"""bench/gpu_check.py, the check to run first on a lent GPU, runs end to end on the CPU at tiny sizes."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_reports_every_measurement(repo, tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--steps", "1", "--out", str(out)],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["peak_source"].startswith("measured") and report["peak_tflops"] > 0
    for key, model in (("tokenizer", "MAETok-XS"), ("generator", "SiT-T/1")):
        r = report[key]
        assert r["model"] == model
        assert r["forward_gflops_per_image"] > 0 and r["img_per_s"] > 0 and r["peak_memory_gib"] > 0
        # MFU is the measured training rate (3 x forward FLOPs per image) over the peak.
        train_tflops = 3 * r["forward_gflops_per_image"] * r["img_per_s"] / 1e3
        assert r["mfu"] == pytest.approx(train_tflops / report["peak_tflops"])
    assert report["ddp"] == {**report["ddp"], "backend": "gloo", "ok": True}
    assert set(report["sdpa_kernels"]) == {"64", "72"}  # MAETok-B/16's and SiT-XL/1's head sizes
    assert "MFU" in proc.stdout and "DDP (gloo, 1 process): ok" in proc.stdout

