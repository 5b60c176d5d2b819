"""Write the noise that ``Matcher.match(..., seed=SEED)`` draws on an engine, for the C++ example.

    python examples/cpp/write_noise.py --engine ENGINE_DIR --seed 0 --out noise/
    build/cpp/sd4match_match --engine ENGINE_DIR --noise-dir noise/ --source A.png --target B.png --points "120,80"

gives the matches of ``Matcher.from_pretrained(ENGINE_DIR).match(A, B, [[120, 80]], seed=0)``.
The ensemble size and latent shape come from the engine's manifest; the files are
``sd4match_sdk.noise.NOISE_FILES`` (float32 .npy, C order). See docs/cpp.md.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engine", required=True, help="engine directory (its manifest gives ensemble and latent shape)"
    )
    parser.add_argument("--seed", required=True, type=int, help="the seed of the Python match to reproduce")
    parser.add_argument("--out", required=True, help="directory to write the four .npy files to")
    args = parser.parse_args(argv)

    from sd4match_sdk.errors import SD4MatchError
    from sd4match_sdk.engine.directory import read_manifest
    from sd4match_sdk.noise import draw_pair_noise, make_generator, save_pair_noise

    try:
        manifest = read_manifest(args.engine)
        source, target = draw_pair_noise(make_generator(args.seed), manifest.ensemble, tuple(manifest.latent_shape))
        for path in save_pair_noise(args.out, source, target):
            print(path)
    except SD4MatchError as err:
        print(f"write_noise.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
