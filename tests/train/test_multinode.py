"""Training jobs on several nodes: the launch the workflow builds (common.smk: train_resources,
launcher; workflow/scripts/torchrun_nodes.sh) and a 2-node run that trains what one node does.

No multi-node Slurm here: the local test cluster (tests/workflow/local_slurm.sh) is one node,
and several nodes on one host need a Slurm built with --enable-multiple-slurmd. So the 2-node
run puts a stand-in `srun` and `scontrol` on PATH that start the step's tasks as local
processes, one per "node", with the variables Slurm gives a task; everything after them is
real: the script, one torchrun per node, one c10d rendezvous on localhost, gloo,
setup_distributed and the trainer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from test_distributed import DATA, PROBE, TORCHRUN, assert_close, assert_only_rank0_writes, tok_cfg

from maetok import config as C
from maetok.train import utils as train_utils

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "workflow" / "scripts" / "torchrun_nodes.sh"
BIN = Path(sys.executable).parent

# Slurm as the script meets it inside a job: srun starts one task per node of the step (here all
# on this host) with the step's node count and list; `scontrol show hostnames` expands the list.
FAKE_SRUN = r"""#!/usr/bin/env bash
echo "$*" >> "$SRUN_LOG"
while [[ $1 == -* ]]; do case $1 in --nodes=*) nodes=${1#--nodes=} ;; esac; shift; done
pids=()
for ((i = 0; i < nodes; i++)); do
  SLURM_STEP_NUM_NODES=$nodes SLURM_STEP_NODELIST=localhost SLURM_NODEID=$i "$@" & pids+=($!)
done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done; exit $rc
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[ "$1 $2" = "show hostnames" ] && tr , '\\n' <<<"$3"
"""


# --------------------------------------------------------------------------- the workflow's launch
def dry_run(tmp_path: Path, nodes: dict, *extra: str) -> subprocess.CompletedProcess:
    """`snakemake -n -p` of one paper-scale generator (its tokenizer's two stages included) with
    scales.paper.nodes = `nodes`, in a copy of the workflow."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "params.yaml", "environment.yml", "workflow"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    (work / "nodes.yaml").write_text(yaml.safe_dump({"scale": "paper", "scales": {"paper": {"nodes": nodes}}}))
    cmd = [str(BIN / "snakemake"), "-n", "-p", "results/paper/generator/maetok/sit_l/ema.safetensors",
           "--configfile", "params.yaml", "nodes.yaml", *extra]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)


def jobs(out: str) -> dict[str, SimpleNamespace]:
    """{rule: its resources (dict) and shell command} from a dry run's printout."""
    found = {}
    for block in out.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        res = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
        resources = dict(kv.split("=", 1) for kv in res.split(", "))
        resources = {k: int(v) if v.isdigit() else v for k, v in resources.items()}
        found[rule] = SimpleNamespace(resources=resources, shell=re.search(r"^Shell command: (.*)$", block, re.M)[1])
    return found


def launch(shell: str, subcommand: str) -> str:
    """The launcher's part of a rule's shell command: between the MAETOK_TAGS prefix and the subcommand."""
    return shell.split("' ", 1)[1].split(f" {subcommand} ")[0]


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    """The dry run with one node per tokenizer job and two per generator job."""
    r = dry_run(tmp_path_factory.mktemp("dry"), {"tokenizer": 1, "generator": 2})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return jobs(r.stdout)


def test_one_node_is_torchrun_standalone(paper_jobs):
    for rule, sub in (("train_tokenizer", "train-tokenizer"), ("finetune_decoder", "finetune-decoder")):
        job = paper_jobs[rule]
        assert launch(job.shell, sub) == "torchrun --standalone --nproc_per_node=8 -m maetok"
        assert (job.resources["gpu"], job.resources["nodes"]) == (8, 1)
        assert not {"mpi", "tasks"} & set(job.resources)   # the plugin wraps the shell in `srun -n1`


def test_two_nodes_launch_one_torchrun_per_node(paper_jobs):
    job = paper_jobs["train_generator"]
    bash, script, *args = launch(job.shell, "train-generator").split()
    assert (bash, Path(script).relative_to(Path(script).parents[2])) == ("bash", SCRIPT.relative_to(REPO))
    # nodes, processes per node, CPUs per node (the rule's cpus_per_task), GPUs per node
    assert args == ["2", "8", "32", "8", "-m", "maetok"]
    assert {k: job.resources[k] for k in ("gpu", "nodes", "tasks", "tasks_per_gpu", "mpi", "cpus_per_task")} == {
        "gpu": 16, "nodes": 2, "tasks": 2, "tasks_per_gpu": 0, "mpi": "srun", "cpus_per_task": 32}


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')")
def test_slurm_plugin_submits_one_task_per_node(paper_jobs):
    """What the installed Slurm executor plugin makes of these resources: sbatch with one task per
    node and the GPUs of both nodes; the job's shell run as is (the script's srun spans the nodes),
    while a one-node job stays wrapped in the plugin's one-node srun."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm_jobstep import get_node_setting

    class Resources(dict):
        __getattr__ = dict.__getitem__

    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "c", "account": "", "partition": "",
              "workdir": "/w"}
    two = SimpleNamespace(resources=Resources(paper_jobs["train_generator"].resources), threads=8)
    sbatch = get_submit_command(two, params) + set_gres_string(two)
    assert {"--nodes=2", "--ntasks=2", "--cpus-per-task=32", "--gpus=16"} <= set(sbatch.split())
    assert "--ntasks-per-gpu" not in sbatch
    assert "mpi" in two.resources   # the jobstep plugin's test for "run the shell without srun"
    one = SimpleNamespace(resources=Resources(paper_jobs["train_tokenizer"].resources), threads=8)
    assert {"--nodes=1", "--gpus=8"} <= set((get_submit_command(one, params) + set_gres_string(one)).split())
    assert get_node_setting(one) == "--nodes=1"


def test_nodes_set_outside_params_yaml_is_refused(tmp_path):
    """--set-resources nodes=2 alone would leave the job without its tasks and per-node GPUs."""
    r = dry_run(tmp_path, {"tokenizer": 1, "generator": 1}, "--set-resources", "train_generator:nodes=2")
    assert r.returncode != 0
    assert "scales.paper.nodes" in r.stdout + r.stderr


def test_nodes_must_be_positive(repo):
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["scales"]["paper"]["nodes"]["generator"] = 0
    with pytest.raises(C.ConfigError, match=r"scales\.paper\.nodes\.generator: must be > 0"):
        C.load_params(raw)


def test_a_process_without_a_gpu_on_its_node_names_the_fix(monkeypatch):
    """Global rank 11 of 16 with LOCAL_RANK 3 on a node where only 2 GPUs are visible (more processes
    started on a node than it has GPUs): CUDA's invalid device ordinal becomes an error saying what to fix."""
    def set_device(device):
        raise torch.AcceleratorError(f"CUDA error: invalid device ordinal ({device})")

    monkeypatch.setenv("RANK", "11")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(train_utils.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(train_utils.dist, "get_rank", lambda: 11)
    monkeypatch.setattr(train_utils.dist, "get_world_size", lambda: 16)
    with pytest.raises(RuntimeError, match=r"rank 11 \(LOCAL_RANK 3\) finds 2 GPUs on its node.*--nproc_per_node"):
        train_utils.setup_distributed()


def test_script_outside_slurm_names_the_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    r = subprocess.run(["bash", str(SCRIPT), "2", "1", "1", "0", "-m", "maetok", "train-tokenizer"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "Slurm job" in r.stderr and "nodes to 1" in r.stderr


# --------------------------------------------------------------------------- 2 nodes x 2 = 1 node x 4
def free_port() -> int:
    """A free port the script's rendezvous will use (it takes 20000 + SLURM_JOB_ID % 10000)."""
    for port in range(20000 + os.getpid() % 9000, 30000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


def run_probe(launch_cmd: list[str], args: list[str], root: Path, env: dict, timeout: int = 420) -> dict[int, dict]:
    """ddp_probe.py (real draws) under `launch_cmd`; each rank's record."""
    probe_dir = root / "probe"
    probe_dir.mkdir(parents=True)
    env = {**env, "OMP_NUM_THREADS": "1", "PROBE_DIR": str(probe_dir), "PROBE_WATCH": str(root)}
    r = subprocess.run([*launch_cmd, str(PROBE), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in probe_dir.glob("rank*.json")}


@pytest.mark.slow
def test_two_nodes_of_two_train_what_one_node_of_four_does(tmp_path, tiny_data):
    cfg = tok_cfg()
    config_json = json.dumps({"tokenizer": C.to_dict(cfg), "data": C.to_dict(DATA)})

    def args(root: Path) -> list[str]:
        return ["train-tokenizer", "--config-json", config_json, "--seed", "0", "--scale", "tiny",
                "--data", str(tiny_data),
                "--out", str(root / "stage1.safetensors"), "--ckpt-dir", str(root / "ckpt")]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PROBE_"))}
    one_root = tmp_path / "one"
    one = run_probe([str(TORCHRUN), "--standalone", "--nproc_per_node=4"], args(one_root), one_root, env)

    fake_bin = tmp_path / "slurm_bin"
    fake_bin.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)
    srun_log = tmp_path / "srun.log"
    env2 = {**env, "PATH": f"{fake_bin}:{BIN}:{env['PATH']}", "SRUN_LOG": str(srun_log),
            "SLURM_JOB_ID": str(free_port() - 20000)}
    two_root = tmp_path / "two"
    two = run_probe(["bash", str(SCRIPT), "2", "2", "1", "0"], args(two_root), two_root, env2)

    # one srun step: a task on each of the 2 nodes, no GPU option on CPU nodes
    step = srun_log.read_text().split()
    assert step[:4] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=1"]
    assert not any(a.startswith("--gpus") for a in step)
    # one world of 4 (not two of 2): global ranks 0-3 on the two nodes
    assert sorted(two) == sorted(one) == [0, 1, 2, 3]
    assert {r["world"] for r in two.values()} == {4}
    # each rank's seed (seed * world_size + rank) and data shard follow its global rank, not its
    # LOCAL_RANK (0, 1 on both nodes): the same draws and batches as rank r of the 1-node run
    ratios = [two[r]["mask_ratios"] for r in range(4)]
    assert len({json.dumps(x) for x in ratios}) == 4
    for r in range(4):
        assert two[r]["mask_ratios"] == one[r]["mask_ratios"]
        assert two[r]["indices"] == one[r]["indices"]
    for r in (1, 2, 3):
        assert_only_rank0_writes({0: two[0], 1: two[r]}, two_root / "stage1.safetensors")
    assert_close(one_root / "stage1.safetensors", two_root / "stage1.safetensors", atol=1e-5)
