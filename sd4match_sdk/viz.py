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


def _label(canvas: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """A point's number beside it, outlined so it reads on any background."""
    x, y = at[0] + 6, at[1] - 6
    for thickness, ink in ((3, (0, 0, 0)), (1, colour)):
        cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ink, thickness, cv2.LINE_AA)


def _caption_band(width: int, caption: str) -> np.ndarray:
    """White rows holding ``caption`` (BGR), wrapped to ``width``."""
    words, lines = caption.split(), [""]
    for word in words:
        trial = f"{lines[-1]} {word}".strip()
        if cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] > width - 16 and lines[-1]:
            lines.append(word)
        else:
            lines[-1] = trial
    band = np.full((10 + 22 * len(lines), width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (8, 24 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return band


def draw_matches(
    source: np.ndarray,
    target: np.ndarray,
    query: np.ndarray,
    points: np.ndarray,
    height: int = 480,
    gap: int = 16,
    labels: bool = True,
    caption: str | None = None,
) -> np.ndarray:
    """Both images side by side at a common height, a gap between them, a coloured line per match.

    Args:
        source, target: ``(H, W, 3)`` uint8 RGB images.
        query: ``(N, 2)`` points in ``source`` pixels.
        points: ``(N, 2)`` their matches in ``target`` pixels.
        height: height of the images in pixels.
        gap: white columns between the two images.
        labels: number each query and its match (1, 2, ...).
        caption: text printed under the images (the picture grows by its band).

    Returns:
        ``(height [+ caption band], W', 3)`` uint8 RGB picture.
    """
    scales = [height / img.shape[0] for img in (source, target)]
    left, right = (
        cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=cv2.INTER_AREA)
        for img, s in zip((source, target), scales)
    )
    spacer = np.full((height, gap, 3), 255, np.uint8)
    canvas = cv2.cvtColor(np.concatenate([left, spacer, right], axis=1), cv2.COLOR_RGB2BGR)
    offset = left.shape[1] + gap
    radius = max(3, height // 120)
    for i, ((x0, y0), (x1, y1), colour) in enumerate(zip(query, points, _colours(len(query)))):
        p0 = (round(float(x0) * scales[0]), round(float(y0) * scales[0]))
        p1 = (round(float(x1) * scales[1]) + offset, round(float(y1) * scales[1]))
        cv2.line(canvas, p0, p1, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, radius, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, p1, radius, colour, -1, cv2.LINE_AA)
        if labels:
            _label(canvas, str(i + 1), p0, colour)
            _label(canvas, str(i + 1), p1, colour)
    if caption:
        canvas = np.concatenate([canvas, _caption_band(canvas.shape[1], caption)], axis=0)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def save_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image; the format follows the suffix (``.png``, ``.jpg``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"could not write {str(path)!r}; use a .png or .jpg path in a writable folder")
    return path
