#!/usr/bin/env bash
# Train one paper setting, then evaluate its best prompt on the test split (docs/design.md §9 settings:
# t=50, ensemble 8, Kernel-Soft-Argmax, PCK@0.05/0.1/0.15, mean over pairs).
#
#   training/launch.sh single spair data/SPair-71k
#   training/launch.sh cpm pfpascal data/pf-pascal
#
# Rerunning the same line after a kill resumes training from runs/<prompt>_<dataset>/state.pt.
# Extra sd4match-train arguments go after the dataset root, e.g. --set micro_batch_size=9.
set -euo pipefail
prompt=${1:?prompt kind: single|class|cpm}
dataset=${2:?dataset: spair|pfpascal}
root=${3:?dataset directory}
shift 3
out=runs/${prompt}_${dataset}
here=$(cd "$(dirname "$0")" && pwd)

sd4match-train --config "$here/configs/${prompt}_${dataset}.toml" --root "$root" --out "$out" "$@"
sd4match-eval --dataset "$dataset" --root "$root" --prompt "$out/best.safetensors" \
    --split test --timestep 50 --ensemble 8 --alpha 0.05 0.1 0.15 --device auto \
    --out "$out/test_results.json"
