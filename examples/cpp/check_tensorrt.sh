#!/usr/bin/env bash
# GPU check of the C++ example's TensorRT runtime (docs/cpp.md, "TensorRT"), for a machine with a
# CUDA GPU, the CUDA toolkit, TensorRT 10 *with its C++ headers* (NvInfer.h; the PyPI wheels ship
# only libraries) and the Python `tensorrt` package. It builds examples/cpp with
# -DSD4MATCH_TENSORRT=ON, exports the tiny model as a TensorRT engine (256 px, E=2), writes the noise
# of seed 0, and compares the C++ matches (--runtime tensorrt and onnxruntime) with the Python
# Matcher's (engine_runtime="tensorrt"). Prints PASS/FAIL lines; exits 0 with SKIP when TensorRT's
# headers are absent. About 2-3 minutes (plan building dominates).
#
#   TENSORRT_ROOT=/opt/TensorRT-10.x PYTHON=python bash examples/cpp/check_tensorrt.sh [WORKDIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${1:-$ROOT/build/cpp-trt-check}"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"

header=""
for dir in ${TENSORRT_ROOT:+"$TENSORRT_ROOT/include"} /usr/include/x86_64-linux-gnu /usr/include /usr/local/include; do
  if [ -f "$dir/NvInfer.h" ]; then header="$dir/NvInfer.h"; break; fi
done
if [ -z "$header" ]; then
  echo "SKIP: NvInfer.h not found (set TENSORRT_ROOT to a TensorRT 10 install with include/ and lib/)"
  exit 0
fi
echo "TensorRT header: $header"
mkdir -p "$WORK"
PYTHON="$PYTHON" bash examples/cpp/fetch_deps.sh "$WORK/deps" > "$WORK/fetch.log"
cmake -S examples/cpp -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DONNXRUNTIME_ROOT="$WORK/deps" \
  -DSD4MATCH_TENSORRT=ON ${TENSORRT_ROOT:+-DTENSORRT_ROOT="$TENSORRT_ROOT"} > "$WORK/configure.log"
cmake --build "$WORK/build" -j > "$WORK/build.log"
echo "built $WORK/build/sd4match_match"

PYTHONPATH="$ROOT" "$PYTHON" - "$WORK" <<'PY'
import json, subprocess, sys
from pathlib import Path
import numpy as np
from sd4match_sdk import Matcher
from sd4match_sdk.config import FeatureConfig
from sd4match_sdk.export import ExportConfig, export_engine
from sd4match_sdk.noise import save_pair_noise
from sd4match_sdk.testing import build_tiny_sd

work = Path(sys.argv[1])
demo = Path("sd4match_sdk/assets/demo")
source, target = demo / "dift_cat_src.png", demo / "dift_cat_trg.png"
points = [[100.0, 120.0], [200.5, 80.25], [400.0, 300.0], [0.0, 0.0]]
engine = work / "engine_trt"
if not (engine / "manifest.json").is_file():
    model = build_tiny_sd(work / "tiny-sd21", v4_text_encoder_keys=True)
    export_engine(ExportConfig(model=str(model), out=str(engine), prompt=None, engine="trt", max_batch=4,
                               feature=FeatureConfig(image_size=256, timestep=50, ensemble=2), overwrite=True))
matcher = Matcher.from_pretrained(str(engine), device="cuda", engine_runtime="tensorrt")
expected = matcher.match(source, target, points, seed=0)
save_pair_noise(work / "noise", *matcher.draw_pair_noise(seed=0))
failed = False
for runtime in ("tensorrt", "onnxruntime"):
    cmd = [str(work / "build" / "sd4match_match"), "--engine", str(engine), "--source", str(source),
           "--target", str(target), "--points", ";".join(f"{x},{y}" for x, y in points),
           "--noise-dir", str(work / "noise"), "--runtime", runtime]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"FAIL C++ --runtime {runtime}: status {result.returncode}: {result.stderr.strip()}")
        failed = True
        continue
    got = json.loads(result.stdout)
    diff = float(np.abs(np.asarray(got["points"]) - expected.points).max())
    ok = got["runtime"] == runtime and diff <= 0.05
    failed |= not ok
    print(f"{'PASS' if ok else 'FAIL'} C++ --runtime {runtime} vs Python TensorRT: max |d| = {diff:.5f} px (<= 0.05)")
sys.exit(1 if failed else 0)
PY
