"""Outputs follow the umask like every other file: the atomic writers create their temporaries
with mkstemp / mkdtemp (0600 / 0700), which would hide weights, checkpoints and latents from the
rest of a cluster group; they must end up as a plain `open` / `mkdir` would make them."""

from __future__ import annotations

import os
import stat

import matplotlib.pyplot as plt
import pytest
import torch

from maetok.analysis.figures import atomic_savefig
from maetok.models import standins
from maetok.models.io import save_weights
from maetok.train import checkpoint
from maetok.utils.io import atomic_dir, atomic_path, write_json


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_dirs_follow_the_umask(tmp_path, umask):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    if umask == 0o022:
        assert (file_mode, dir_mode) == (0o644, 0o755)  # group- and world-readable

    with atomic_path(tmp_path / "plain.bin") as tmp:
        tmp.write_bytes(b"x")
    write_json(tmp_path / "metrics.json", {"rfid": 1.0})
    save_weights(torch.nn.Linear(2, 2), tmp_path / "final.safetensors")
    standins.save_weights(torch.nn.Linear(2, 2), tmp_path / "teacher.safetensors")
    fig = plt.figure(figsize=(1, 1))
    atomic_savefig(fig, tmp_path / "fig.png")
    plt.close(fig)
    with atomic_dir(tmp_path / "latents") as d:
        (d / "train.npy").write_bytes(b"x")
    for name in ("plain.bin", "metrics.json", "final.safetensors", "teacher.safetensors", "fig.png",
                 "latents/train.npy"):
        assert mode(tmp_path / name) == file_mode, f"{name}: {mode(tmp_path / name):o} != {file_mode:o}"
    assert mode(tmp_path / "latents") == dir_mode

    step = checkpoint.save(tmp_path / "ckpt", 3, {"model": torch.nn.Linear(2, 2)}, {"curve": "[]"})
    assert mode(step) == dir_mode, f"{step}: {mode(step):o} != {dir_mode:o}"
    for f in sorted(step.iterdir()):
        assert mode(f) == file_mode, f"{f.name}: {mode(f):o} != {file_mode:o}"
    assert {f.name for f in step.iterdir()} >= {"model.safetensors", "state.pt", "meta.json"}
