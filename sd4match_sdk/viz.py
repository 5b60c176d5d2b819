"""Drawing matches side by side with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError

__all__ = ["draw_matches", "save_image"]


def _colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct BGR colours (evenly spaced hues)."""
    hsv = np.stack([np.linspace(0, 179, max(n, 1), endpoint=False), np.full(max(n, 1), 220), np.full(max(n, 1), 255)], -1)
    bgr = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(c) for c in row) for row in bgr]


def draw_matches(
    source: np.ndarray, target: np.ndarray, query: np.ndarray, points: np.ndarray, height: int = 480
) -> np.ndarray:
    """Both images side by side at a common height, with a coloured line per match.

    Args:
        source, target: ``(H, W, 3)`` uint8 RGB images.
        query: ``(N, 2)`` points in ``source`` pixels.
        points: ``(N, 2)`` their matches in ``target`` pixels.
        height: output height in pixels.

    Returns:
        ``(height, W', 3)`` uint8 RGB picture.
    """
    scales = [height / img.shape[0] for img in (source, target)]
    left, right = (
        cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=cv2.INTER_AREA)
        for img, s in zip((source, target), scales)
    )
    canvas = cv2.cvtColor(np.concatenate([left, right], axis=1), cv2.COLOR_RGB2BGR)
    offset = left.shape[1]
    radius = max(3, height // 120)
    for (x0, y0), (x1, y1), colour in zip(query, points, _colours(len(query))):
        p0 = (round(float(x0) * scales[0]), round(float(y0) * scales[0]))
        p1 = (round(float(x1) * scales[1]) + offset, round(float(y1) * scales[1]))
        cv2.line(canvas, p0, p1, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, radius, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, p1, radius, colour, -1, cv2.LINE_AA)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def save_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image; the format follows the suffix (``.png``, ``.jpg``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"could not write {str(path)!r}; use a .png or .jpg path in a writable folder")
    return path
