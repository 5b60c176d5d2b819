"""The demo: the whole matching path on shipped photos, offline with a tiny random-weight model
(``sd4match demo``), or with real SD 2.1 weights and a prompt (``--model D --prompt official:single_spair``)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import ConfigError

__all__ = ["demo_images", "DEMO_POINTS", "DOWNLOAD_COMMANDS", "REAL_WEIGHTS_COMMAND", "TINY_CAPTION", "run_demo"]

#: Query points on the demo source cat, as fractions of its width and height.
DEMO_POINTS = np.array(
    [[0.38, 0.30], [0.62, 0.30], [0.50, 0.45], [0.42, 0.62], [0.58, 0.62], [0.50, 0.80]], dtype=np.float32
)
#: Printed on the picture of the offline demo, which would otherwise look like a broken matcher.
TINY_CAPTION = "random weights: lines show the pipeline runs, not what SD4Match finds"
#: What fetches the real weights and the authors' prompts.
DOWNLOAD_COMMANDS = ("sd4match download sd21 --dir ./stable-diffusion-2-1", "sd4match download prompts")
#: The same picture with them.
REAL_WEIGHTS_COMMAND = "sd4match demo --model ./stable-diffusion-2-1 --prompt official:single_spair"

Log = Callable[[str], None]


def demo_images() -> tuple[Path, Path]:
    """Paths of the shipped demo pair (a cat photo pair from DIFT; see ATTRIBUTION.md)."""
    root = resources.files("sd4match_sdk") / "assets" / "demo"
    return Path(str(root / "dift_cat_src.png")), Path(str(root / "dift_cat_trg.png"))


def _step(log: Log, number: int, text: str, started: list[float]) -> None:
    """``[n/4] text`` with the time the previous step took."""
    now = time.perf_counter()
    took = f" ({now - started[0]:.1f} s so far)" if number > 1 else ""
    log(f"[{number}/4] {text}{took}")


def run_demo(
    out: str | Path = "sd4match_demo.png",
    ensemble: int = 8,
    seed: int = 0,
    model: str | None = None,
    prompt: str | None = None,
    device: str = "auto",
    log: Log | None = None,
) -> dict:
    """Match the demo pair and draw the matches to ``out``.

    Args:
        out: the picture (``.png``/``.jpg``).
        ensemble: noise draws averaged per image.
        seed: seed of the noise.
        model: real SD 2.1 weights (a diffusers directory or hub id); ``None`` builds a tiny
            SD-2.1-shaped model with random weights, offline.
        prompt: a prompt for ``model`` (``official:single_spair``, a file, a text).
        device: ``auto``, ``cpu``, ``cuda``.
        log: receives one line per step (``print`` in the command; silent when ``None``).

    Returns:
        ``{"out": path, "query": [...], "points": [...], "scores": [...], "caption": ...}``.
    """
    from .images import load_image
    from .matcher import Matcher
    from .testing import build_tiny_sd
    from .viz import draw_matches, save_image

    log = log or (lambda line: None)
    if prompt is not None and model is None:
        raise ConfigError("--prompt needs --model (real SD 2.1 weights): the tiny offline model's text encoder "
                          "is 32 wide, learned prompts are 1024 wide")  # fmt: skip
    started = [time.perf_counter()]
    # 1. The demo pair and its query points
    source, target = demo_images()
    rgb0, rgb1 = load_image(source), load_image(target)
    query = DEMO_POINTS * np.array([rgb0.shape[1], rgb0.shape[0]], dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="sd4match-demo-") as tmp:
        # 2. The model: a tiny random one (offline), or the real weights
        if model is None:
            _step(log, 1, "building a tiny SD-2.1-shaped model with random weights (no download)", started)
            model = str(build_tiny_sd(Path(tmp) / "tiny-sd21"))
            caption = TINY_CAPTION
        else:
            _step(log, 1, f"using {model}", started)
            caption = f"SD4Match: {Path(model).name}, prompt {prompt or '(empty)'}, E={ensemble}, seed {seed}"
        _step(log, 2, "loading it (VAE, UNet, text encoder)", started)
        matcher = Matcher.from_pretrained(model, prompt=prompt, ensemble=ensemble, device=device)
        # 3. Match
        _step(log, 3, f"extracting features of both photos ({ensemble} noise draws each) and matching", started)
        result = matcher.match(rgb0, rgb1, query, category="cat", seed=seed)  # both photos show cats (Class prompts)
    # 4. Draw, the caption under the photos
    _step(log, 4, "drawing the matches", started)
    path = save_image(out, draw_matches(rgb0, rgb1, result.query, result.points, caption=caption))
    return {"out": str(path), "caption": caption, **result.to_dict()}
