"""End-to-end matching: pairs/s of an official-equivalent path and of the SDK, side by side, same pairs and noise.

Rows (each in its own process, so its peak memory is its own; every row builds the same weights):

* ``official``: plain diffusers as the authors' test script runs it: the whole
  ``UNet2DConditionModel`` (no truncation) with ``up_blocks[1]`` read by a forward hook; the
  prompt through the CLIP text encoder, the VAE encoding and the UNet under
  ``torch.autocast(float16)`` on CUDA (float32 on the CPU); the E noise maps as one batch per
  image; features once per image, pairs one at a time; diffusers' default SDPA attention (the
  stand-in for xformers: same math). Its "batch 8" column repeats batch 1 (it has no batching).
* ``reference``: the float32 eager SDK; every row's deviation is measured against its batch-1
  matches (on the CPU the ``sdk`` row is this reference).
* ``sdk``: the SDK's defaults (CUDA: float16 UNet, text encoder and VAE; CPU: float32).
* ``sdk-compiled``: ``compile=True`` (docs/design.md §13.21).
* ``sdk-bf16`` (``--bf16``): bfloat16 UNet and VAE, an option with its deviation; not in the headline.
* ``engine-onnxruntime``, ``engine-tensorrt``: an engine exported from the same weights, where the
  runtime (and on CUDA its CUDA provider) is importable; skipped with the reason otherwise.

Every row matches the same P pairs of 2P distinct images (crops of the demo photos) with the
same seeds, one at a time (``match``, batch 1) and ``--batch`` at a time (``match_batch``).
Printed per row: pairs/s and ms per pair at both batch sizes, the first calls (compilation),
peak memory, the largest deviation in pixels from the reference, and the achieved TFLOP/s of the
necessary work (VAE encoder + truncated UNet, counted) against a matrix product measured in the
same run (bf16 8192^3 on CUDA, float32 4096^3 on the CPU). A comment line above the table gives
the ceiling this implies: the official row's counted work and achieved rate, and the largest
speed-up the necessary work allows if it ran at the matmul rate. The last line is the headline:
``speed-up sdk/official: X.XXx pairs/s at batch 1, Y.YYx at batch 8 (DEVICE)`` with the best SDK row.
``--time-limit`` shares a number of seconds among the rows: a row gets what is left, a row that
runs out is reported as failed, and the table is printed in any case. A row whose process fails
reports its exception; its stderr's tail is in the JSON.

    python benchmarks/bench_pairs.py --model tiny                          # CPU, tiny SD-2.1-shaped model
    python benchmarks/bench_pairs.py --model sd21 --image-size 384         # CPU, SD 2.1 architecture
    python benchmarks/bench_pairs.py --model sd21 --device cuda --json out.json
    python benchmarks/bench_pairs.py --model sd21 --device cuda --prompt-kind cpm
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import counted_tflop, device_name, machine, matmul_dtype, matmul_tflops, sync  # noqa: E402

ROWS = ("official", "reference", "sdk", "sdk-compiled", "sdk-bf16", "engine-onnxruntime", "engine-tensorrt")
#: Rows the headline may pick (the bf16 option changes the numbers more than the others).
HEADLINE = ("sdk", "sdk-compiled", "engine-onnxruntime", "engine-tensorrt")
REPORT_SECONDS = 5  # kept back from --time-limit for the table
MIN_ROW_SECONDS = 10  # a row is not started with less left: building the model alone takes longer


# ---------------------------------------------------------------------- inputs shared by every row


def bench_pairs(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``count`` pairs of 2 * count distinct images (random crops and flips of the demo photos,
    300-1100 px a side) with 20 query points each."""
    from sd4match_sdk.demo import demo_images
    from sd4match_sdk.images import load_image

    assets = Path(__file__).resolve().parents[1] / "sd4match_sdk" / "assets" / "demo"
    photos = [load_image(p) for p in sorted(assets.glob("*.[pj][np]*g"))] or [np.asarray(i) for i in demo_images()]
    rng = np.random.default_rng(seed)
    images = []
    for i in range(2 * count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = photo[y : y + ch, x : x + cw]
        images.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    pairs = []
    for i in range(count):
        src, trg = images[2 * i], images[2 * i + 1]
        points = rng.uniform(0, 1, (20, 2)) * [src.shape[1] - 1, src.shape[0] - 1]
        pairs.append((src, trg, points.astype(np.float32)))
    return pairs


def pair_seed(index: int) -> int:
    return 1000 + index


# ---------------------------------------------------------------------- models


def build_parts(args: argparse.Namespace, device: torch.device):
    """SD parts (float32), the prompt and DINOv2 for CPM: the same weights in every process."""
    from sd4match_sdk.models.cpm import ConditionalPromptModule, CPMConfig
    from sd4match_sdk.models.loading import load_dino, load_sd_components
    from sd4match_sdk.prompts import PromptKind, PromptWeights
    from sd4match_sdk.testing import build_sd21_random

    components = load_sd_components(args.tiny_dir) if args.model == "tiny" else build_sd21_random(device=device)
    dino = load_dino(args.dino_dir) if args.prompt_kind == "cpm" else None
    width = components.text_encoder.config.hidden_size
    g = torch.Generator().manual_seed(7)
    if args.prompt_kind == "single":
        prompt = PromptWeights(PromptKind.SINGLE, token_embeds={"bench": torch.randn((1, 77, width), generator=g)})
    else:
        torch.manual_seed(7)
        dino_dim = dino[0].config.hidden_size
        prompt = PromptWeights(PromptKind.CPM, cpm_state=ConditionalPromptModule(CPMConfig(dino_dim=dino_dim, text_dim=width)).state_dict())
    return components, prompt, dino


def write_dino(path: Path, model: str) -> Path:
    """DINOv2 for the CPM rows: the tiny test model, or a DINOv2-base-shaped one (random weights),
    both with the dinov2-base processor geometry, written once so every process loads the same."""
    from transformers import Dinov2Config, Dinov2Model

    from sd4match_sdk.testing import build_tiny_dino

    build_tiny_dino(path)
    if model == "sd21":
        torch.manual_seed(3)
        config = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14, image_size=518)
        Dinov2Model(config).save_pretrained(path)
    return path


class OfficialPath:
    """The authors' test-time extraction written with plain diffusers calls (see the module docstring)."""

    def __init__(self, components, prompt, dino, feature, device: torch.device) -> None:
        from sd4match_sdk.prompts import PromptContexts

        for part in (components.unet, components.vae, components.text_encoder):
            part.to(device)
        self.parts, self.feature, self.device = components, feature, device
        self.contexts = PromptContexts(prompt, components.tokenizer, components.text_encoder)
        self.dino = (dino[0].to(device), dino[1]) if dino else None
        self.captured: dict[str, torch.Tensor] = {}
        components.unet.up_blocks[1].register_forward_hook(lambda m, i, o: self.captured.__setitem__("f", o))

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda" else nullcontext()

    def _context(self, source: np.ndarray, target: np.ndarray) -> torch.Tensor:
        from sd4match_sdk.models.dino import dino_patch_tokens, dino_pixels
        from sd4match_sdk.models.text import encode_token_embeddings

        if self.dino is None:  # the official extractor encodes the prompt on every call
            (embeds,) = self.contexts.weights.token_embeds.values()
            return encode_token_embeddings(self.parts.text_encoder, embeds.to(self.device))
        tokens = dino_patch_tokens(self.dino[0], dino_pixels(self.dino[1], [source, target]))
        return self.contexts.pair(tokens[:1], tokens[1:])

    def _features(self, image: np.ndarray, noise, context: torch.Tensor) -> torch.Tensor:
        from sd4match_sdk.images import sd_pixels

        parts, e, t = self.parts, self.feature.ensemble, self.feature.timestep
        pixels = sd_pixels(image, self.feature.image_size).to(self.device)
        posterior = parts.vae.encode(pixels).latent_dist
        latents = (posterior.mean + posterior.std * noise.eps_vae.to(self.device)) * parts.vae.config.scaling_factor
        timesteps = torch.full((e,), t, device=self.device, dtype=torch.long)
        noisy = parts.scheduler.add_noise(latents.repeat(e, 1, 1, 1), noise.noise.to(self.device), timesteps)
        parts.unet(noisy, timesteps, encoder_hidden_states=context.repeat(e, 1, 1))
        return self.captured["f"].float().mean(dim=0, keepdim=True)

    @torch.no_grad()
    def match(self, source: np.ndarray, target: np.ndarray, points: np.ndarray, seed: int) -> np.ndarray:
        from sd4match_sdk.noise import draw_pair_noise, make_generator
        from sd4match_sdk.ops.geometry import frame_to_grid, frame_to_pixels, grid_to_frame, pixels_to_frame
        from sd4match_sdk.ops.matching import match_points

        shape = (4, self.feature.image_size // 8, self.feature.image_size // 8)
        noise_src, noise_trg = draw_pair_noise(make_generator(seed), self.feature.ensemble, shape)
        with self.autocast():
            context = self._context(source, target)
            f0, f1 = self._features(source, noise_src, context), self._features(target, noise_trg, context)
        s, grid = self.feature.image_size, tuple(f0.shape[-2:])
        size0, size1 = (source.shape[1], source.shape[0]), (target.shape[1], target.shape[0])
        q = frame_to_grid(pixels_to_frame(torch.from_numpy(points), size0, s), s, grid)
        coords, _ = match_points(f0, f1, q[None].to(self.device))
        return frame_to_pixels(grid_to_frame(coords[0].float().cpu(), s, grid), size1, s).numpy()


def sdk_matcher(row: str, components, prompt, dino, feature, device: torch.device, args: argparse.Namespace):
    """The Matcher of an SDK row, on the already built parts."""
    from sd4match_sdk import Matcher
    from sd4match_sdk.features import TorchFeatureBackend
    from sd4match_sdk.features.precision import Precision, resolve_precision

    if row.startswith("engine-"):
        return Matcher.from_pretrained(_export(row, components, prompt, args, device), device=device)
    precision = {
        "reference": Precision(torch.float32, torch.float32),
        "sdk-bf16": Precision(torch.bfloat16, torch.bfloat16),
    }.get(row, resolve_precision(device))
    backend = TorchFeatureBackend(
        components, prompt, feature, device, dino, precision, compile=row == "sdk-compiled", memory_budget=args.memory_budget
    )
    return Matcher(backend)


def _export(row: str, components, prompt, args: argparse.Namespace, device: torch.device) -> str:
    """Export an engine from the row's parts into a temporary directory (fp16 on CUDA)."""
    from sd4match_sdk.config import FeatureConfig
    from sd4match_sdk.export import ExportConfig, export_engine
    from sd4match_sdk.prompts import save_prompt

    out = Path(tempfile.mkdtemp(prefix="bench-pairs-engine-"))
    prompt_file = save_prompt(out / "prompt.safetensors", prompt)
    feature = FeatureConfig(args.image_size, args.timestep, args.ensemble)
    config = ExportConfig(
        model=args.model, out=str(out / "engine"), prompt=str(prompt_file), engine="trt" if row == "engine-tensorrt" else "onnx",
        dtype="fp16" if device.type == "cuda" else "fp32", dino=args.dino_dir, feature=feature, max_batch=2 * args.batch,
    )  # fmt: skip
    components.unet.to("cpu"), components.vae.to("cpu"), components.text_encoder.to("cpu")
    export_engine(config, log=lambda *a, **k: None, components=components)
    return config.out


def _peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, float, object]:
    """Median wall time and median process CPU time (all threads) of ``fn`` over ``repeats`` runs
    (synchronised), and the first run's result. On a shared CPU the CPU time is the steadier figure."""
    walls, cpus, first = [], [], None
    for k in range(repeats):
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        first = out if k == 0 else first
    return float(np.median(walls)), float(np.median(cpus)), first


def run_row(args: argparse.Namespace) -> dict:
    """One row in this process: build, warm up (compile), time batch 1 and batch B, keep the matches."""
    from sd4match_sdk.config import FeatureConfig

    device = torch.device(args.device)
    feature = FeatureConfig(args.image_size, args.timestep, args.ensemble)
    pairs = bench_pairs(args.pairs)
    components, prompt, dino = build_parts(args, device)
    row = args.child
    result: dict = {"row": row, "machine": machine(device)}
    counted = row in ("official", reference_row(args))  # rows whose work is counted (the ceiling line)
    if row == reference_row(args):
        result["matmul_tflops"] = matmul_tflops(device)
    if row == "official":
        path = OfficialPath(components, prompt, dino, feature, device)
        one = lambda i: path.match(*pairs[i], seed=pair_seed(i))  # noqa: E731
        batch = None
    else:
        matcher = sdk_matcher(row, components, prompt, dino, feature, device, args)
        one = lambda i: matcher.match(*pairs[i], seed=pair_seed(i)).points  # noqa: E731

        def batch(start: int) -> list[np.ndarray]:
            chunk = range(start, min(start + args.batch, len(pairs)))
            generators = [torch.Generator().manual_seed(pair_seed(i)) for i in chunk]
            return [r.points for r in matcher.match_batch([pairs[i] for i in chunk], generators=generators)]

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # 1. first calls: compilation of both batch shapes, allocator warm-up; CUDA graphs (sdk-compiled on
    #    CUDA) run a shape's first call eagerly and record on its second, so those take two
    start = time.perf_counter()
    for _ in range(2 if row == "sdk-compiled" and device.type == "cuda" else 1):
        one(0)
        if batch is not None:
            batch(0)
    sync(device)
    result["first_calls_s"] = time.perf_counter() - start
    # 2. batch 1 (match), then batch B (match_batch); the first timed pass gives the matches
    result["b1_s"], result["b1_cpu_s"], result["points_b1"] = _timed(lambda: [one(i) for i in range(len(pairs))], device, args.repeats)
    if batch is not None:
        starts = range(0, len(pairs), args.batch)
        result["b8_s"], result["b8_cpu_s"], chunks = _timed(lambda: [batch(s) for s in starts], device, args.repeats)
        result["points_b8"] = [p for chunk in chunks for p in chunk]
    result["peak_gib"] = _peak_memory(device)
    if counted:
        result["tflop_per_pair"] = counted_tflop(lambda: one(0))  # reference: the necessary work; official: its own
    result = {k: ([np.asarray(p).tolist() for p in v] if k.startswith("points") else v) for k, v in result.items()}
    return result


# ---------------------------------------------------------------------- the parent: rows side by side


def reference_row(args: argparse.Namespace) -> str:
    """The float32 eager row every deviation is measured against."""
    return "reference" if args.device.startswith("cuda") else "sdk"


def ceiling(results: list[dict], args: argparse.Namespace) -> list[str]:
    """The compute-bound ceiling of the speed-up, from the same run: the matmul rate, the counted work
    of the reference and official rows, and the official row's achieved rate (docs/performance.md)."""
    by_row = {r["row"]: r for r in results if "b1_s" in r}
    ref, official = by_row.get(reference_row(args)), by_row.get("official")
    if not ref or "matmul_tflops" not in ref:
        return []
    dtype = str(matmul_dtype(torch.device(args.device))).removeprefix("torch.")
    peak, necessary = ref["matmul_tflops"], ref["tflop_per_pair"]
    lines = [f"# {dtype} matmul: {peak:.2f} TFLOP/s; necessary work per pair: {necessary:.3g} TFLOP (counted)"]
    if official and "tflop_per_pair" in official:
        rate = official["tflop_per_pair"] * args.pairs / official["b1_s"]
        lines.append(
            f"# official work per pair: {official['tflop_per_pair']:.3g} TFLOP (work ratio {official['tflop_per_pair'] / necessary:.2f}x), "
            f"run at {rate:.2f} TFLOP/s ({100 * rate / peak:.0f}% of the matmul rate); at the matmul rate the necessary "
            f"work allows at most {peak / necessary / (args.pairs / official['b1_s']):.2f}x the official row"
        )
    return lines


def skip_reason(row: str, args: argparse.Namespace) -> str | None:
    """Why a row cannot run here (``None``: it runs)."""
    cuda = args.device.startswith("cuda")
    if row == "reference" and not cuda:
        return "on the CPU the sdk row is the float32 eager reference"
    if row == "sdk-bf16" and not args.bf16:
        return "pass --bf16"
    if row == "engine-onnxruntime":
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed"
        if cuda and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "this onnxruntime has no CUDAExecutionProvider (CPU-only wheel; install onnxruntime-gpu)"
    if row == "engine-tensorrt":
        from sd4match_sdk.errors import BackendUnavailableError
        from sd4match_sdk.runtimes import import_tensorrt

        try:
            import_tensorrt()
        except BackendUnavailableError as err:
            return str(err).split(";")[0]
        if not cuda:
            return "TensorRT needs --device cuda"
    return None


def spawn(row: str, args: argparse.Namespace, timeout: float, limit: str) -> dict:
    """Run one row in a child process for at most ``timeout`` seconds (``limit`` names the option that
    set it); its last stdout line is the row's JSON."""
    cmd = [sys.executable, __file__, "--child", row, "--tiny-dir", args.tiny_dir, "--dino-dir", args.dino_dir]
    for name in ("model", "device", "image_size", "ensemble", "timestep", "pairs", "batch", "repeats", "prompt_kind"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.memory_budget:
        cmd += ["--memory-budget", str(args.memory_budget)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"row": row, "error": f"timed out after {timeout:.0f} s ({limit})"}
    if proc.returncode != 0:
        return {"row": row, "error": child_error(proc.stderr) or f"exit {proc.returncode}", "stderr_tail": proc.stderr[-4000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_error(stderr: str) -> str:
    """The exception a child died of, on one line: from its last ``Name: ...`` line (some messages span
    several lines, or start on the next one) to the end of stderr, at most 300 characters."""
    lines = [line.strip() for line in stderr.strip().splitlines()]
    starts = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit):", line)]
    return " ".join(line for line in lines[starts[-1] if starts else -1:] if line)[:300] if lines else ""


def deviation(result: dict, reference: dict) -> float:
    """Largest distance in pixels between a row's matches (both batch sizes) and the reference's batch-1 matches."""
    expected = [np.asarray(p) for p in reference["points_b1"]]
    worst = 0.0
    for key in ("points_b1", "points_b8"):
        for got, want in zip(result.get(key, []), expected):
            worst = max(worst, float(np.linalg.norm(np.asarray(got) - want, axis=-1).max()))
    return worst


def matching_backend(device: torch.device) -> str:
    """What the SDK rows' ``auto`` matcher runs on ``device``: the fused kernel when a build of it
    can run there, else torch (a GPU machine without the CUDA module built matches with torch)."""
    from sd4match_sdk import kernels

    if kernels.kernel_supports(device):
        return f"the fused Kernel-Soft-Argmax kernel (sd4match_sdk.{'_kernels_cuda' if device.type == 'cuda' else '_kernels'})"
    return "torch (no fused kernel built for this device)"


def report(results: list[dict], args: argparse.Namespace, device: torch.device) -> list[str]:
    """The table, one line per row, and the headline last."""
    done = [r for r in results if "b1_s" in r]
    ref = next((r for r in done if r["row"] == reference_row(args)), None)
    tflop = ref.get("tflop_per_pair") if ref else None
    lines = [
        f"# end-to-end matching, {args.model} model, {args.image_size} px, E={args.ensemble}, t={args.timestep}, "
        f"{args.prompt_kind} prompt, {args.pairs} pairs of distinct images, 20 points each, batch {args.batch}",
        f"# machine: {done[0]['machine'] if done else machine(device)}",
        "# deviation: largest distance (px) from the float32 eager SDK's batch-1 matches on the same draws",
        f"# matching (SDK rows): {matching_backend(device)}",
    ]
    if not args.device.startswith("cuda"):
        lines.append("# cpu s/pair: process CPU time (all threads) per pair, steadier than wall time on a shared machine")
    lines += ceiling(results, args)
    cpu = not args.device.startswith("cuda")
    bn = f"b{args.batch}"  # the match_batch columns, at --batch pairs per call
    extra = f" {'TFLOP/s ' + bn:>10}" if tflop else ""
    extra += f" {'cpu s/pair b1':>13} {bn:>6}" if cpu else ""
    lines.append(f"{'row':<20} {'pairs/s b1':>10} {'ms/pair b1':>10} {'pairs/s ' + bn:>10} {'ms/pair ' + bn:>10} {'first s':>8} {'peak GiB':>8} {'dev px':>8}" + extra)
    for r in results:
        if "b1_s" not in r:
            lines.append(f"{r['row']:<20} {'skipped' if 'skipped' in r else 'failed'}: {r.get('skipped') or r.get('error')}")
            continue
        b1 = args.pairs / r["b1_s"]
        b8 = args.pairs / r["b8_s"] if "b8_s" in r else b1
        r.update(pairs_per_s_b1=b1, pairs_per_s_b8=b8, deviation_px=deviation(r, ref) if ref else float("nan"))
        line = f"{r['row']:<20} {b1:>10.3f} {1e3 / b1:>10.1f} {b8:>10.3f} {1e3 / b8:>10.1f} {r['first_calls_s']:>8.1f} {r['peak_gib']:>8.2f} {r['deviation_px']:>8.4f}"
        if tflop:  # the necessary work's rate, whatever work the row does
            line += f" {b8 * tflop:>10.2f}"
        if cpu:
            line += f" {r['b1_cpu_s'] / args.pairs:>13.1f} {r.get('b8_cpu_s', r['b1_cpu_s']) / args.pairs:>6.1f}"
        lines.append(line)
    official = next((r for r in done if r["row"] == "official"), None)
    sdk = [r for r in done if r["row"] in HEADLINE]
    if official and sdk:
        best1, best8 = max(r["pairs_per_s_b1"] for r in sdk), max(r["pairs_per_s_b8"] for r in sdk)
        lines.append(
            f"speed-up sdk/official: {best1 / official['pairs_per_s_b1']:.2f}x pairs/s at batch 1, "
            f"{best8 / official['pairs_per_s_b1']:.2f}x at batch {args.batch} ({device_name(device)})"
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "sd21"], default="tiny", help="tiny SD-2.1-shaped model, or the SD 2.1 architecture with random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=768)
    parser.add_argument("--ensemble", type=int, default=8)
    parser.add_argument("--timestep", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=8, help="pairs of distinct images (default 8)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per match_batch call (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the pairs per batch size; the median is reported")
    parser.add_argument("--prompt-kind", choices=["single", "cpm"], default="single")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--bf16", action="store_true", help="add the sdk-bf16 row (bfloat16 UNet and VAE)")
    parser.add_argument("--memory-budget", type=int, default=None, help="bytes per device batch (default: the SDK's)")
    parser.add_argument("--row-timeout", type=int, default=3600, help="seconds per row process")
    parser.add_argument("--time-limit", type=int, default=None,
                        help="seconds for all rows together: a row gets what is left, and the table is still printed")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--tiny-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dino-dir", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(run_row(args)))
        return
    deadline = time.monotonic() + args.time_limit - REPORT_SECONDS if args.time_limit else float("inf")
    from sd4match_sdk.testing import build_tiny_sd

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench-pairs-"))
    args.tiny_dir = str(build_tiny_sd(work / "tiny")) if args.model == "tiny" else ""
    args.dino_dir = str(write_dino(work / "dino", args.model)) if args.prompt_kind == "cpm" else ""
    results = []
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        reason, left = skip_reason(row, args), deadline - time.monotonic()
        if reason:
            result = {"row": row, "skipped": reason}
        elif left < MIN_ROW_SECONDS:
            result = {"row": row, "error": f"not started: {max(left, 0):.0f} s left of --time-limit {args.time_limit}"}
        else:
            result = spawn(row, args, *((left, "--time-limit") if left < args.row_timeout else (args.row_timeout, "--row-timeout")))
        status = "skipped" if reason else "failed" if "error" in result else "done"
        print(f"  {row}: {status} ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)
        results.append(result)
        if args.json:  # after every row: a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    lines = report(results, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "report": lines}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
