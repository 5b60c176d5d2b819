"""Our PCK beside the paper's (``sd4match-eval --compare-paper``, ``sd4match compare RESULTS.json``).

The paper's row is chosen from the prompt's kind (single, class, cpm) and the dataset it was tuned
on (an official prompt's name, our prompt file's ``dataset`` metadata, or ``--trained-on``), and
the benchmark evaluated (:func:`~.paper.paper_values`). Everything is printed in percent, as the
paper; the JSON results store fractions (``pck_unit``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from .paper import PaperValues, paper_values
from .report import CATEGORY_ABBREVIATIONS

__all__ = ["PaperComparison", "compare_with_paper", "format_comparison"]


@dataclass(frozen=True)
class PaperComparison:
    """Measured and published PCK, in percent.

    Attributes:
        paper: the paper's values.
        overall: ``{alpha: (ours, paper)}`` for the alphas both have.
        per_category: ``{category: (ours, paper)}`` at ``paper.category_alpha`` (Table 2).
        num_pairs: pairs we evaluated (a subset gives only an indication).
    """

    paper: PaperValues
    overall: dict[float, tuple[float, float]]
    per_category: dict[str, tuple[float, float]]
    num_pairs: int


def _trained_on(settings: dict, trained_on: str | None) -> str:
    found = trained_on or settings.get("prompt_trained_on") or ""
    if not found:
        raise ConfigError(
            f"cannot tell which dataset the prompt {settings.get('prompt') or '(empty)'!r} was tuned on (the paper's "
            "rows depend on it): pass --trained-on spair or --trained-on pfpascal"
        )
    return str(found)


def compare_with_paper(results: dict, trained_on: str | None = None) -> PaperComparison:
    """Pair the PCK of an evaluation (``EvalResult.to_dict()``, or its JSON file) with the paper's.

    Args:
        results: the evaluation's results (``settings``, ``pck``).
        trained_on: the dataset the prompt was tuned on, when its settings do not say.

    Raises:
        ConfigError: the training dataset is unknown, or the paper reports nothing for this
        prompt kind and benchmark.
    """
    settings = results.get("settings", {})
    kind, dataset = str(settings.get("prompt_kind", "")), str(settings.get("dataset", ""))
    tuned = _trained_on(settings, trained_on)
    paper = paper_values(kind, tuned, dataset)
    if paper is None:
        raise ConfigError(
            f"the paper reports no PCK for a {kind or 'unknown'} prompt tuned on {tuned} and evaluated on {dataset} "
            "(Table 2: SPair-71k prompts on SPair-71k; Table 3: Single and CPM prompts tuned on SPair-71k or "
            "PF-Pascal; Class prompts only on their own dataset, docs/design.md §12)"
        )
    pck = {float(a): v for a, v in results.get("pck", {}).items()}
    overall = {a: (100 * pck[a]["all"], value) for a, value in paper.overall.items() if a in pck}
    per_category = {}
    if paper.category_alpha is not None and paper.category_alpha in pck:
        ours = pck[paper.category_alpha]["per_category"]
        per_category = {c: (100 * ours[c], value) for c, value in paper.per_category.items() if c in ours}
    if not overall:
        raise ConfigError(f"the results hold none of the paper's alphas ({', '.join(f'{a:g}' for a in paper.overall)})")
    return PaperComparison(paper, overall, per_category, int(results.get("num_pairs", 0)))


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def format_comparison(comparison: PaperComparison) -> str:
    """Rows ``ours``, ``paper``, ``diff`` (ours - paper), in percent: overall per alpha, then per category."""
    c = comparison
    lines = [f"Beside the paper: {c.paper.label}; {c.paper.source}. PCK in percent; diff = ours - paper."]
    if c.num_pairs:
        lines[0] += f" Ours over {c.num_pairs} pairs."
    tables = [("all", {f"PCK@{a:g}": v for a, v in c.overall.items()})]
    if c.per_category:
        cats = {CATEGORY_ABBREVIATIONS.get(k, k): v for k, v in c.per_category.items()}
        tables.append((f"per category, PCK@{c.paper.category_alpha:g}", {**cats, "All": c.overall[0.1]}))
    for title, columns in tables:
        width = max(7, *(len(h) + 1 for h in columns))
        lines.append(f"{title}:")
        lines.append(" " * 8 + "".join(h.rjust(width) for h in columns))
        for label, pick in (("ours", lambda v: _cell(v[0])), ("paper", lambda v: _cell(v[1])),
                            ("diff", lambda v: f"{v[0] - v[1]:+.1f}")):  # fmt: skip
            lines.append(label.ljust(8) + "".join(pick(v).rjust(width) for v in columns.values()))
    return "\n".join(lines)
