#!/usr/bin/env bash
# Build one arm of the tiny study (docs/tiny_study.md) in a fresh copy of this repository, so that its
# results/tiny does not overwrite the default run's:
#
#   workflow/study/run_arm.sh ARM DEST [SEED]      e.g.  workflow/study/run_arm.sh light_mm ../arm-light
#
# ARM is an overlay in workflow/study/ (ARM.yaml) or `default` (the params.yaml recipe, e.g. with SEED 1).
# The copy reuses this checkout's prepared data and stand-in networks (results/tiny/data, aux_models: build
# them first, e.g. with Table 1), so that every arm is measured with the same evaluator and teachers.
# ROWS (default "ae ae_mm maetok") are the Table 1a rows to build; then tabulate with
#   python workflow/scripts/tiny_study.py --arm baseline:0=results/tiny --arm ARM:SEED=DEST/results/tiny
set -euo pipefail
arm=${1:?usage: run_arm.sh ARM DEST [SEED]}
dest=${2:?usage: run_arm.sh ARM DEST [SEED]}
seed=${3:-0}
rows=${ROWS:-ae ae_mm maetok}
src=$(git rev-parse --show-toplevel)
for d in data aux_models; do
  [[ -d $src/results/tiny/$d ]] || { echo "run_arm.sh: $src/results/tiny/$d is missing; build it first:" \
    "snakemake --profile profiles/laptop tables/table1.csv" >&2; exit 1; }
done
overlays=()
if [[ $arm != default ]]; then
  [[ -f $src/workflow/study/$arm.yaml ]] || { echo "run_arm.sh: no overlay workflow/study/$arm.yaml" >&2; exit 1; }
  overlays=("$src/workflow/study/$arm.yaml")
fi
git clone -q "$src" "$dest"
mkdir -p "$dest/results/tiny"
cp -a "$src/results/tiny/data" "$src/results/tiny/aux_models" "$dest/results/tiny/"   # mtimes kept: not rebuilt
R=results/tiny
targets=()
for tok in $rows; do
  targets+=("$R/tokenizer/$tok/recon.json" "$R/generator/$tok/sit_l/nocfg.json"
            "$R/analysis/$tok/probe.json" "$R/analysis/$tok/gmm.json")
  for s in 200 400; do targets+=("$R/generator/$tok/sit_l/step${s}_nocfg.json"); done
done
cd "$dest"
# the environment is this checkout's; PYTHONPATH makes the copy's code the one imported (the venv
# holds an editable install of $src)
PYTHONPATH="$dest" "$src/.venv/bin/snakemake" --profile profiles/laptop --cores "${CORES:-all}" \
  --configfile params.yaml "${overlays[@]}" --config seed="$seed" -- "${targets[@]}"
