"""A bar chart of our PCK beside the paper's (``--plot FILE.png``), drawn with OpenCV.

OpenCV is already a dependency (the match pictures); matplotlib is not, so the chart is drawn
directly: one pair of bars (ours, paper) per category and "All" for Table 2 comparisons, per
alpha for Table 3 ones, the value above each bar, a 0-100 % axis with grid lines.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..viz import save_image
from .compare import PaperComparison
from .report import CATEGORY_ABBREVIATIONS

__all__ = ["plot_comparison"]

_OURS, _PAPER = (44, 110, 196), (200, 120, 40)  # RGB
_INK, _GRID = (30, 30, 30), (225, 225, 225)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _groups(comparison: PaperComparison) -> list[tuple[str, float, float]]:
    """``(label, ours, paper)`` per bar pair."""
    if comparison.per_category:
        groups = [(CATEGORY_ABBREVIATIONS.get(c, c), o, p) for c, (o, p) in comparison.per_category.items()]
        ours, paper = comparison.overall[comparison.paper.category_alpha]  # type: ignore[index]
        return groups + [("All", ours, paper)]
    return [(f"@{a:g}", o, p) for a, (o, p) in comparison.overall.items()]


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.4, centre: bool = True) -> None:
    (w, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
    cv2.putText(canvas, text, (x - w // 2 if centre else x, y), _FONT, scale, _INK, 1, cv2.LINE_AA)


def _axes(canvas: np.ndarray, left: int, top: int, bottom: int, right: int) -> None:
    """Grid lines and labels every 20 %."""
    for value in range(0, 101, 20):
        y = bottom - round((bottom - top) * value / 100)
        cv2.line(canvas, (left, y), (right, y), _GRID if value else _INK, 1)
        _text(canvas, str(value), left - 22, y + 4, centre=False)


def plot_comparison(comparison: PaperComparison, path: str | os.PathLike, group_width: int = 56) -> Path:
    """Draw ``comparison`` as grouped bars and write it (PNG or JPEG, by suffix).

    Returns:
        the written path.
    """
    groups = _groups(comparison)
    left, top, bottom = 48, 70, 400
    width = left + group_width * len(groups) + 20
    canvas = np.full((460, max(width, 520), 3), 255, np.uint8)
    _axes(canvas, left, top, bottom, canvas.shape[1] - 20)
    bar = (group_width - 12) // 2
    for i, (label, ours, paper) in enumerate(groups):
        x = left + i * group_width + 6
        for j, (value, colour) in enumerate(((ours, _OURS), (paper, _PAPER))):
            x0 = x + j * bar
            if not np.isfinite(value):
                continue
            y = bottom - round((bottom - top) * min(max(value, 0.0), 100.0) / 100)
            cv2.rectangle(canvas, (x0, y), (x0 + bar - 1, bottom), colour, -1)
            _text(canvas, f"{value:.0f}", x0 + bar // 2, y - 4, 0.33)
        _text(canvas, label, x + bar, bottom + 18)
    alpha = comparison.paper.category_alpha or ""
    title = f"PCK{'@' + format(alpha, 'g') if alpha else ''} (%): ours vs the paper"
    _text(canvas, title, 12, 24, 0.55, centre=False)
    _text(canvas, comparison.paper.label, 12, 46, 0.4, centre=False)
    for k, (name, colour) in enumerate((("ours", _OURS), ("paper", _PAPER))):
        x = canvas.shape[1] - 150 + k * 70
        cv2.rectangle(canvas, (x, 14), (x + 14, 28), colour, -1)
        _text(canvas, name, x + 20, 26, centre=False)
    _text(canvas, comparison.paper.source, 12, 446, 0.33, centre=False)
    return save_image(path, canvas)
