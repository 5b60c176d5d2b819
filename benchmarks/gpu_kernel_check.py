"""One-shot GPU check of the fused Kernel-Soft-Argmax kernel: build, check, benchmark.

Run from the repository root on a machine with a CUDA GPU, nvcc, CMake >= 3.18 (on PATH or the
`cmake` PyPI package), torch and pybind11 (no internet,
pytest optional):

    bash benchmarks/gpu_kernel_check.sh          # or: python benchmarks/gpu_kernel_check.py

Sections (each prints a header, catches its own failure and goes on):
  1. environment   torch, CUDA, device, nvcc, cmake
  2. build         SD4MATCH_CUDA=1 SD4MATCH_CUDA_ARCH=${SD4MATCH_CUDA_ARCH:-90} setup.py build_ext --inplace
  3. checks        the CUDA kernel against the torch reference: known answers, borders and corners,
                   A and B of different sizes, N=0/1, batch>1, dense, non-contiguous inputs, fp32 and
                   fp16 (tensor cores and the FP32_MATH path), 48x48 C=1280 and 96x96 C=640, the
                   wrapper with a torch workspace, a side stream, determinism, CUDA vs CPU kernel
  4. pytest        tests/kernels -k "cuda and not emulated" (if pytest is installed)
  5. benchmark     benchmarks/bench_kernel.py --device cuda --dtype fp16 --batch 8, then fp32 dense 48x48
  6. summary       one line per section and check
The build log goes to $OUT (if set) or the gitignored build/: gpu_kernel_check_build.log.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "kernels"))
sys.path.insert(0, str(ROOT))
LOG_DIR = Path(os.environ.get("OUT") or ROOT / "build")  # never a tracked place
#: SD4MATCH_CHECK_DRY=1 rehearses the checks on the CPU module (no GPU needed): it tests this script.
DRY_RUN = os.environ.get("SD4MATCH_CHECK_DRY") == "1"
RESULTS: list[tuple[str, str, str]] = []  # (section, name, outcome)


def header(title: str) -> None:
    print(f"\n{'=' * 24} {title} {'=' * max(4, 70 - len(title))}", flush=True)


def record(section: str, name: str, ok: bool | None, detail: str = "") -> None:
    outcome = "PASS" if ok else ("SKIP" if ok is None else "FAIL")
    RESULTS.append((section, name, outcome))
    print(f"[{outcome}] {section}: {name}" + (f"  ({detail})" if detail else ""), flush=True)


def run_section(section: str, fn) -> None:
    header(section)
    start = time.time()
    try:
        fn()
    except (Exception, SystemExit) as exc:  # a section never stops the script
        traceback.print_exc()
        record(section, "section aborted", False, f"{type(exc).__name__}: {exc}")
    print(f"({section}: {time.time() - start:.1f} s)", flush=True)


# ---------------------------------------------------------------------------------- sections


def environment() -> None:
    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torch CUDA {torch.version.cuda}")
    print(f"CUDA available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"device 0: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB")
    for tool, default in (("nvcc", "/usr/local/cuda/bin/nvcc"), ("cmake", "cmake")):
        try:
            cmd = [shutil.which(tool) or default, "--version"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
            print(out.splitlines()[-1 if tool == "nvcc" else 0] if out else f"{tool}: no output")
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"{tool}: {exc}")
    for mod in ("pybind11", "numpy", "pytest", "PIL"):
        try:
            m = importlib.import_module(mod)
            print(f"{mod} {getattr(m, '__version__', '?')}")
        except ImportError:
            print(f"{mod}: not installed")
    record("environment", "CUDA device", torch.cuda.is_available())


def build() -> None:
    env = dict(os.environ, SD4MATCH_CUDA="1", SD4MATCH_CUDA_ARCH=os.environ.get("SD4MATCH_CUDA_ARCH", "90"))
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    print(f"SD4MATCH_CUDA=1 SD4MATCH_CUDA_ARCH={env['SD4MATCH_CUDA_ARCH']} {' '.join(cmd)}", flush=True)
    log = LOG_DIR / "gpu_kernel_check_build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    log.write_text(result.stdout + "\n" + result.stderr)
    tail = (result.stdout + result.stderr).strip().splitlines()[-25:]
    if result.returncode != 0:
        print("\n".join(tail))
    built = sorted(p.name for p in (ROOT / "sd4match_sdk").glob("_kernels*.so"))
    print(f"built in {time.time() - start:.0f} s: {built}; log: {log}")
    record("build", "setup.py build_ext --inplace (CPU + CUDA)", result.returncode == 0, f"exit {result.returncode}")


STATE: dict = {}


def imports() -> None:
    import bench_kernel  # the light import of the SDK's matching modules

    STATE["kernel"] = bench_kernel.kernel
    STATE["bench"] = bench_kernel
    try:
        STATE["cuda"] = importlib.import_module("sd4match_sdk._kernels_cuda")
        record("import", "sd4match_sdk._kernels_cuda", True, f"emulated={STATE['cuda'].EMULATED}")
        ok, reason = STATE["cuda"].check_device(0)
        record("import", "check_device(0): driver and kernel image", ok, reason)
    except ImportError as exc:
        record("import", "sd4match_sdk._kernels_cuda", False, str(exc))
    try:
        STATE["cpu"] = importlib.import_module("sd4match_sdk._kernels")
        record("import", "sd4match_sdk._kernels", True)
    except ImportError as exc:
        record("import", "sd4match_sdk._kernels", False, str(exc))


def checks() -> None:
    import torch

    import ksa_cases as kc

    dry = DRY_RUN  # rehearsal without a GPU: the CPU module stands in for the CUDA one
    module = STATE.get("cpu") if dry else STATE.get("cuda")
    if module is None or not (dry or torch.cuda.is_available()):
        record("checks", "all", None, "no CUDA module or device")
        return
    dev = torch.device("cpu" if dry else "cuda")

    def run(source, target, points, sigma=7.0, beta=0.04, flags=0, module=module):
        pts = None if points is None else points.to(dev)
        if dry:
            return kc.call_module(module, source, target, pts, 0, sigma=sigma, beta=beta)
        stream = torch.cuda.current_stream().cuda_stream
        coords, scores = kc.call_module(module, source.to(dev), target.to(dev), pts, stream, 0, 0, flags,
                                        sigma=sigma, beta=beta)
        torch.cuda.synchronize()
        return coords.cpu(), scores.cpu()

    def compare(name, source, target, points, tol, dense=False, flags=0, sigma=7.0, beta=0.04, exact=False):
        try:
            coords, scores = run(source, target, None if dense else points, sigma, beta, flags)
            if exact:
                ref = kc.reference64(source.float(), target.float(), points, sigma, beta)
            else:
                ref = kc.reference(source, target, points, sigma, beta)
            mask = kc.decisive(source.float(), target.float(), points)
            err = (coords - ref[0]).abs().amax(-1)[mask].max().item() if mask.any() else 0.0
            kc.assert_close_to_reference(coords, scores, ref[0], ref[1], mask, tol)
            record("checks", name, True, f"max |d| {err:.2e} cells, tol {tol}")
        except Exception as exc:
            record("checks", name, False, f"{type(exc).__name__}: {str(exc)[:300]}")

    # Known answer (by hand): cosines 1, 0, -1 along a 1x3 target, sigma 1.5, beta 0.5.
    try:
        import math

        target = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).reshape(1, 2, 1, 3)
        source = torch.tensor([3.0, 0.0]).reshape(1, 2, 1, 1).expand(1, 2, 2, 2).contiguous()
        logits = [1.0 / 0.5, 0.0, -math.exp(-4 / 4.5) / 0.5]
        e = [math.exp(v - logits[0]) for v in logits]
        want = sum(p * j for j, p in enumerate(e)) / sum(e)
        for dtype in (torch.float32, torch.float16):
            coords, scores = run(source.to(dtype), target.to(dtype), torch.tensor([[[0.5, 0.5]]]), 1.5, 0.5)
            ok = abs(coords[0, 0, 0].item() - want) < 1e-4 and abs(scores[0, 0].item() - 1 / sum(e)) < 1e-4
            record("checks", f"known answer {dtype}", ok, f"x {coords[0, 0, 0].item():.6f} want {want:.6f}")
    except Exception as exc:
        record("checks", "known answer", False, repr(exc)[:300])

    for dtype, tol in ((torch.float32, kc.FP32_TOL), (torch.float16, kc.FP16_TOL)):
        tag = "fp32" if dtype == torch.float32 else "fp16"
        flag_list = (0,) if dtype == torch.float32 else (0, 1)
        for flags in flag_list:
            ftag = tag + ("/fp32-math" if flags else "")
            for kind, b, c, hw0, hw1, n in [
                ("random", 2, 24, (9, 11), (7, 13), 40),
                ("smooth", 2, 48, (20, 17), (23, 19), 150),
                ("smooth", 1, 40, (12, 12), (12, 12), 33),
                ("random", 3, 8, (5, 4), (1, 6), 1),
            ]:
                maps = kc.random_maps if kind == "random" else kc.smooth_maps
                s, t = maps(b, c, hw0, hw1, seed=n)
                compare(f"sparse {ftag} {kind} B{b} C{c} {hw0}->{hw1} N{n}", s.to(dtype), t.to(dtype),
                        kc.query_points(b, n, hw0, seed=n), tol, flags=flags)
            for kind, b, c, hw0, hw1 in [("random", 2, 16, (6, 7), (8, 5)), ("smooth", 1, 32, (14, 13), (12, 15))]:
                maps = kc.random_maps if kind == "random" else kc.smooth_maps
                s, t = maps(b, c, hw0, hw1, seed=7)
                compare(f"dense {ftag} {kind} B{b} C{c} {hw0}->{hw1}", s.to(dtype), t.to(dtype),
                        kc.dense_points(b, hw0), tol, dense=True, flags=flags)
            s, t = kc.smooth_maps(2, 1280, (48, 48), (48, 48), seed=3)
            compare(f"sparse {ftag} 48x48 C=1280 covered queries", s.to(dtype), t.to(dtype),
                    kc.covered_points(2, 40, (48, 48), seed=3), tol, flags=flags)
            compare(f"dense {ftag} 48x48 C=1280 B2 (vs float64)", s.to(dtype), t.to(dtype), kc.dense_points(2, (48, 48)),
                    tol, dense=True, flags=flags, exact=True)
            s, t = kc.smooth_maps(2, 640, (96, 96), (96, 96), seed=4)
            compare(f"sparse {ftag} 96x96 C=640 covered queries (vs float64)", s.to(dtype), t.to(dtype),
                    kc.covered_points(2, 20, (96, 96), seed=4), tol, flags=flags, exact=True)

    base0, base1 = kc.smooth_maps(2, 64, (11, 13), (9, 12), seed=11)
    s = base0[:, ::2].contiguous(memory_format=torch.channels_last)
    t = base1[:, 1::2].transpose(2, 3)
    pts = kc.query_points(2, 30, (11, 13), seed=2).transpose(1, 2).contiguous().transpose(1, 2)
    compare("non-contiguous fp32 sparse", s, t, pts, kc.FP32_TOL)
    compare("non-contiguous fp16 dense", s.half(), t.half(), kc.dense_points(2, (11, 13)), kc.FP16_TOL, dense=True)
    for sigma, beta in ((2.5, 0.1), (30.0, 0.01)):
        s, t = kc.smooth_maps(2, 16, (10, 9), (11, 8), seed=5)
        compare(f"sigma {sigma} beta {beta}", s, t, kc.query_points(2, 25, (10, 9), seed=5), kc.FP32_TOL,
                sigma=sigma, beta=beta)

    try:  # N = 0 and an empty batch
        s, t = kc.random_maps(2, 8, (4, 5), (3, 3), seed=0)
        c0, _ = run(s, t, torch.zeros(2, 0, 2))
        c1, _ = run(s[:0], t[:0], torch.zeros(0, 3, 2))
        record("checks", "N=0 and B=0", c0.shape == (2, 0, 2) and c1.shape == (0, 3, 2))
    except Exception as exc:
        record("checks", "N=0 and B=0", False, repr(exc)[:300])

    kernel = STATE["kernel"]
    try:  # the SDK wrapper (torch workspace, current stream) equals the module call; determinism
        s, t = kc.smooth_maps(2, 1280, (48, 48), (48, 48), seed=8)
        s, t = (s, t) if dry else (s.half().to(dev), t.half().to(dev))
        a = kernel.fused_kernel_soft_argmax(s, t)
        b = kernel.fused_kernel_soft_argmax(s, t)
        c = run(s, t, None)
        same = torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[0].cpu(), c[0])
        record("checks", "wrapper == module, deterministic (dense fp16 48x48)", same)
        if dry:
            return
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            s2, t2 = s * 1.0, t * 1.0  # produced on the side stream
            d = kernel.fused_kernel_soft_argmax(s2, t2)
        side.synchronize()
        record("checks", "side stream", torch.equal(d[0], a[0]) and torch.equal(d[1], a[1]))
    except Exception as exc:
        record("checks", "wrapper / stream", False, repr(exc)[:300])

    cpu = STATE.get("cpu")
    if cpu is not None and not dry:
        try:  # CUDA fp32 vs CPU kernel on random maps (both within ~3e-5 of float64)
            s, t = kc.random_maps(1, 1280, (48, 48), (48, 48), seed=12)
            pts = kc.query_points(1, 200, (48, 48), seed=12)
            g = run(s, t, pts)
            h = kc.call_module(cpu, s, t, pts, 0)
            mask = kc.decisive(s, t, pts)
            err = (g[0] - h[0]).abs().amax(-1)[mask].max().item()
            record("checks", "CUDA fp32 vs CPU kernel, random 48x48 C=1280", err < 1e-4, f"max |d| {err:.2e}")
        except Exception as exc:
            record("checks", "CUDA vs CPU kernel", False, repr(exc)[:300])


def pytest_section() -> None:
    try:
        import pytest  # noqa: F401
    except ImportError:
        record("pytest", "tests/kernels", None, "pytest not installed")
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    probe = subprocess.run([sys.executable, "-c", "import sd4match_sdk"], cwd=ROOT, env=env, capture_output=True, text=True)
    if probe.returncode != 0:  # e.g. pillow missing: the test modules cannot import the SDK
        reason = (probe.stderr.strip().splitlines() or ["?"])[-1]
        record("pytest", "tests/kernels", None, f"`import sd4match_sdk` fails here ({reason}); section 3 ran the cases")
        return
    cmd = [sys.executable, "-m", "pytest", "tests/kernels", "-q", "-k", "cuda and not emulated", "-p", "no:cacheprovider",
           "--continue-on-collection-errors"]
    print(" ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    print("\n".join((result.stdout + result.stderr).strip().splitlines()[-30:]))
    record("pytest", "tests/kernels -k 'cuda and not emulated'", result.returncode == 0, f"exit {result.returncode}")


def benchmark() -> None:
    bench = STATE.get("bench")
    if bench is None or STATE.get("cuda") is None:
        record("benchmark", "all", None, "no CUDA module")
        return
    for argv in (["--device", "cuda", "--dtype", "fp16", "--batch", "8"],
                 ["--device", "cuda", "--dtype", "fp32", "--batch", "8", "--only", "dense  48"]):
        print("\npython benchmarks/bench_kernel.py " + " ".join(argv), flush=True)
        try:
            bench.main(argv)
            record("benchmark", " ".join(argv), True)
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            record("benchmark", " ".join(argv), False, repr(exc)[:300])


def main() -> None:
    start = time.time()
    run_section("1. environment", environment)
    if os.environ.get("SD4MATCH_SKIP_BUILD") != "1":
        run_section("2. build", build)
    run_section("2b. import", imports)
    run_section("3. checks (CUDA vs torch reference)", checks)
    run_section("4. pytest", pytest_section)
    run_section("5. benchmark", benchmark)
    header("6. summary")
    for outcome in ("FAIL", "SKIP"):
        for section, name, o in RESULTS:
            if o == outcome:
                print(f"{o}: {section}: {name}")
    counts = {o: sum(1 for r in RESULTS if r[2] == o) for o in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in {time.time() - start:.0f} s")
    sys.exit(1 if counts["FAIL"] else 0)


if __name__ == "__main__":
    main()
