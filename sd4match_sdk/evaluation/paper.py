"""The paper's published PCK, in percent: the one place these numbers live in code.

Table 2 (SPair-71k test, PCK@0.1 per category, threshold = target box) and Table 3 (each prompt
tuned on one dataset, evaluated on three) of Li et al., CVPR 2024 (arXiv 2310.17569), as
transcribed in docs/design.md §12.2 and §12.3; ``tests/evaluation/test_paper.py`` checks these
values against those tables. :func:`paper_values` picks what a run is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TABLE2", "TABLE2_CATEGORIES", "TABLE3", "PaperValues", "paper_values"]

#: Table 2's columns: the sorted SPair-71k categories (docs/design.md §12.2).
TABLE2_CATEGORIES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
)  # fmt: skip

#: Table 2, SD4Match rows: the 18 categories, then "all" (the mean over pairs, docs/design.md §9.3).
TABLE2: dict[str, tuple[float, ...]] = {
    "single": (72.1, 66.5, 82.3, 62.5, 57.6, 76.0, 73.3, 81.5, 62.0, 85.0, 71.9, 76.1, 68.5, 76.5, 68.9, 58.0, 89.3, 83.1,
               72.6),
    "class": (75.1, 66.6, 88.1, 71.4, 57.8, 86.6, 74.6, 84.2, 63.0, 83.8, 71.5, 77.6, 73.5, 87.2, 63.3, 60.0, 92.0, 89.8,
              75.5),
    "cpm": (75.3, 67.4, 85.7, 64.7, 62.9, 86.6, 76.5, 82.6, 64.8, 86.7, 73.0, 78.9, 70.9, 78.3, 66.8, 64.8, 91.5, 86.6,
            75.5),
}  # fmt: skip

#: Table 3: ``(prompt kind, tuned on) -> {evaluated on: {alpha: PCK}}`` (docs/design.md §12.3).
#: Class prompts are absent: they exist only for their training dataset's categories (paper §4.3).
TABLE3: dict[tuple[str, str], dict[str, dict[float, float]]] = {
    ("single", "pfpascal"): {"pfpascal": {0.05: 81.3, 0.1: 92.4, 0.15: 96.6},
                             "pfwillow": {0.05: 50.7, 0.1: 77.8, 0.15: 89.5}, "spair": {0.05: 30.5, 0.1: 44.4}},
    ("cpm", "pfpascal"): {"pfpascal": {0.05: 84.4, 0.1: 95.2, 0.15: 97.5},
                          "pfwillow": {0.05: 52.1, 0.1: 80.4, 0.15: 91.2}, "spair": {0.05: 27.2, 0.1: 40.9}},
    ("single", "spair"): {"pfpascal": {0.05: 71.8, 0.1: 85.5, 0.15: 90.4},
                          "pfwillow": {0.05: 55.5, 0.1: 81.3, 0.15: 91.2}, "spair": {0.05: 56.5, 0.1: 72.6}},
    ("cpm", "spair"): {"pfpascal": {0.05: 73.3, 0.1: 87.0, 0.15: 91.5},
                       "pfwillow": {0.05: 56.7, 0.1: 80.9, 0.15: 91.6}, "spair": {0.05: 59.5, 0.1: 75.5}},
}  # fmt: skip

_DATASET_NAMES = {"spair": "SPair-71k", "pfpascal": "PF-Pascal", "pfwillow": "PF-Willow"}


@dataclass(frozen=True)
class PaperValues:
    """What the paper reports for one prompt on one benchmark, in percent.

    Attributes:
        label: e.g. ``"SD4Match-Single tuned on SPair-71k, evaluated on SPair-71k"``.
        source: the tables and sections the values come from.
        overall: ``{alpha: PCK}`` ("all", the mean over pairs).
        per_category: ``{category: PCK}`` at ``category_alpha`` (Table 2 only; else empty).
        category_alpha: the alpha of ``per_category`` (0.1), or ``None``.
    """

    label: str
    source: str
    overall: dict[float, float]
    per_category: dict[str, float] = field(default_factory=dict)
    category_alpha: float | None = None


def paper_values(kind: str, trained_on: str, evaluated_on: str) -> PaperValues | None:
    """The paper's values for a ``kind`` prompt (single, class, cpm) tuned on ``trained_on`` and
    evaluated on ``evaluated_on`` (spair, pfpascal, pfwillow); ``None`` when the paper has none
    (text prompts, Class prompts outside SPair-71k, datasets it did not tune on)."""
    kind, trained_on, evaluated_on = kind.lower(), trained_on.lower(), evaluated_on.lower()
    overall = dict(TABLE3.get((kind, trained_on), {}).get(evaluated_on, {}))
    per_category: dict[str, float] = {}
    tables = ["Table 3 (docs/design.md §12.3)"] if overall else []
    if kind in TABLE2 and trained_on == evaluated_on == "spair":
        *categories, everything = TABLE2[kind]
        per_category = dict(zip(TABLE2_CATEGORIES, categories))
        overall.setdefault(0.1, everything)
        tables.insert(0, "Table 2 (docs/design.md §12.2)")
    if not overall:
        return None
    name = {"single": "Single", "class": "Class", "cpm": "CPM"}[kind]
    label = f"SD4Match-{name} tuned on {_DATASET_NAMES[trained_on]}, evaluated on {_DATASET_NAMES[evaluated_on]}"
    source = "Li et al., CVPR 2024 (arXiv 2310.17569), " + " and ".join(tables)
    return PaperValues(label, source, overall, per_category, 0.1 if per_category else None)
