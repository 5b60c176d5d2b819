#!/usr/bin/env bash
# Train one paper setting, then evaluate its best prompt on the test split (docs/design.md §9 settings:
# t=50, ensemble 8, Kernel-Soft-Argmax, PCK@0.05/0.1/0.15, mean over pairs), on CUDA when available.
#
#   training/launch.sh single spair data/SPair-71k
#   training/launch.sh cpm pfpascal data/pf-pascal
#   NPROC=4 training/launch.sh cpm spair data/SPair-71k      # 4 GPUs of this machine (torchrun)
#
# Rerunning the same line after a kill resumes training from runs/<prompt>_<dataset>/state.pt, also
# with another NPROC. Extra sd4match-train arguments go after the dataset root, e.g.
# --set micro_batch_size=9. Several machines: docs/distributed.md.
set -euo pipefail
prompt=${1:?prompt kind: single|class|cpm}
dataset=${2:?dataset: spair|pfpascal}
root=${3:?dataset directory}
shift 3
out=runs/${prompt}_${dataset}
here=$(cd "$(dirname "$0")" && pwd)
nproc=${NPROC:-1}
if [ "$nproc" -gt 1 ]; then
    train=(torchrun --standalone --nproc-per-node "$nproc" -m sd4match_sdk.training)
    evaluate=(torchrun --standalone --nproc-per-node "$nproc" -m sd4match_sdk.evaluation)
else
    train=(sd4match-train)
    evaluate=(sd4match-eval)
fi

"${train[@]}" --config "$here/configs/${prompt}_${dataset}.toml" --root "$root" --out "$out" "$@"
"${evaluate[@]}" --dataset "$dataset" --root "$root" --prompt "$out/best.safetensors" \
    --split test --timestep 50 --ensemble 8 --alpha 0.05 0.1 0.15 --device auto \
    --out "$out/test_results.json"
