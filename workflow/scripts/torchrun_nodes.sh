#!/usr/bin/env bash
# A training job on several nodes of a Slurm job (workflow/rules/common.smk: launcher, for
# params.yaml scales.<scale>.nodes > 1): srun starts one task on each node, each task a torchrun
# for its node's processes, and the torchruns meet in a c10d rendezvous on the step's first node.
#   torchrun_nodes.sh NODES PROCS_PER_NODE CPUS_PER_NODE GPUS_PER_NODE TORCHRUN_ARGS...
# `torchrun_nodes.sh 2 8 32 8 -m maetok train-generator ...`: 16 processes; RANK 0-15 picks the
# seed and data shard, LOCAL_RANK 0-7 the GPU of its node (maetok/train/utils.py).
set -euo pipefail
if [ "${1:-}" = --node ]; then  # one node's task, started by the srun below
  procs=$2; shift 2
  head=$(scontrol show hostnames "$SLURM_STEP_NODELIST" | head -n 1)
  # a port per job (below Linux's ephemeral range): two jobs sharing a first node never meet
  exec torchrun --nnodes="$SLURM_STEP_NUM_NODES" --nproc_per_node="$procs" --rdzv_backend=c10d \
    --rdzv_endpoint="$head:$((20000 + SLURM_JOB_ID % 10000))" --rdzv_id="$SLURM_JOB_ID" "$@"
fi
nodes=$1 procs=$2 cpus=$3 gpus=$4; shift 4
if [ -z "${SLURM_JOB_ID:-}" ] || ! command -v srun >/dev/null; then
  echo "$0: a job on $nodes nodes runs in a Slurm job (snakemake --profile slurm); to train without" \
    "Slurm, set params.yaml scales.<scale>.nodes to 1" >&2
  exit 2
fi
gpu_opts=()
if [ "$gpus" -gt 0 ]; then gpu_opts=(--gpus-per-node="$gpus"); fi
# --mem=0: the step gets all of the job's memory on each node; a failed node stops the others
exec srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 --cpus-per-task="$cpus" --mem=0 \
  "${gpu_opts[@]}" --kill-on-bad-exit=1 bash "$0" --node "$procs" "$@"
