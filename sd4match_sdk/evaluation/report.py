"""PCK tables shaped like the paper's Table 2 (one column per category, then "All") and JSON files."""

from __future__ import annotations

import os
from pathlib import Path

from .. import atomic
from ..ops.pck import PCKSummary

__all__ = ["CATEGORY_ABBREVIATIONS", "format_table", "write_json"]

#: The paper's column names for the PASCAL categories.
CATEGORY_ABBREVIATIONS = {
    "aeroplane": "aero",
    "bicycle": "bike",
    "motorbike": "motor",
    "pottedplant": "plant",
    "tvmonitor": "tv",
    "diningtable": "table",
}


def format_table(summary: PCKSummary, title: str = "", row_label: str = "PCK@{alpha:g}") -> str:
    """A fixed-width table: rows are alphas, columns the categories (sorted) then ``All``.

    Values are percentages with one decimal, as in the paper. ``All`` is the mean over pairs.
    """
    names = summary.categories
    headers = [CATEGORY_ABBREVIATIONS.get(c, c) for c in names] + ["All"]
    width = max(6, *(len(h) + 1 for h in headers))
    labels = [row_label.format(alpha=a) for a in summary.alphas]
    label_width = max(len("alpha"), *(len(s) for s in labels)) + 2
    lines = []
    if title:
        lines.append(title)
    lines.append(" " * label_width + "".join(h.rjust(width) for h in headers))
    for a, label in zip(summary.alphas, labels):
        cells = [100 * summary.per_category[a][c] for c in names] + [100 * summary.overall[a]]
        lines.append(label.ljust(label_width) + "".join(f"{v:.1f}".rjust(width) for v in cells))
    lines.append("pairs".ljust(label_width) + "".join(str(summary.counts[c]).rjust(width) for c in names)
                 + str(summary.num_pairs).rjust(width))  # fmt: skip
    return "\n".join(lines)


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, atomically (:func:`sd4match_sdk.atomic.write_json`)."""
    return atomic.write_json(path, payload)
